"""Docker-hosted services: pure spec functions (settings -> ServiceSpec) and one deploy mapping."""
