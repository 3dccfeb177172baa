"""forgestack's Pulumi components: settings, the AWS layer and the Docker-hosted services."""
