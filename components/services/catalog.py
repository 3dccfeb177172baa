"""Which services a stack runs, derived from settings, and the facts derived from them (hostnames)."""

from __future__ import annotations

from components.services.gitea import gitea_spec
from components.services.postgres import postgres_spec
from components.services.proxy import certbot_spec, proxy_routes, proxy_spec
from components.services.spec import ServiceSpec
from components.settings import Settings

OS_RESERVED_MB = 1024  # kernel, Docker, SSM agent, page cache headroom
FIXED_MEMORY_MB = {"proxy": 128, "certbot": 256}
SHARE_OF_REST = {"postgres": 0.30, "gitea": 0.40}  # the remainder is kept free for monitoring and CI


def memory_plan(settings: Settings) -> dict[str, int]:
    """Memory limit per container in MiB, sized from the instance type."""
    available = settings.instance_memory_mib - OS_RESERVED_MB - sum(FIXED_MEMORY_MB.values())
    plan = {name: max(256, int(available * share)) for name, share in SHARE_OF_REST.items()}
    return {**plan, **FIXED_MEMORY_MB}


def service_specs(settings: Settings) -> tuple[ServiceSpec, ...]:
    memory = memory_plan(settings)
    backends = [postgres_spec(settings, memory["postgres"]), gitea_spec(settings, memory["gitea"])]
    specs = [*backends, proxy_spec(settings, backends, memory["proxy"])]
    if settings.is_aws:  # the local stack keeps its self-signed certificate: no public DNS to validate
        specs.append(certbot_spec(settings, routed_hostnames(settings, backends), memory["certbot"]))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate service names: {names}")
    return tuple(specs)


def routed_hostnames(settings: Settings, specs: tuple[ServiceSpec, ...] | list[ServiceSpec]) -> tuple[str, ...]:
    """Every public hostname: DNS records, the certificate and the Nginx server blocks all use this."""
    return tuple(route.hostname for route in proxy_routes(settings, specs))
