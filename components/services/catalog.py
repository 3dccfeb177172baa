"""Which services a stack runs, derived from settings, and the facts derived from them (hostnames)."""

from __future__ import annotations

from collections.abc import Sequence

from components.services import backup_store, ci, logs, mail, monitoring, portainer, proxy, relay, sso, valkey, workspaces
from components.services.gitea import gitea_spec
from components.services.postgres import postgres_spec
from components.services.proxy import certbot_spec, proxy_routes, proxy_spec
from components.services.spec import ConfigFile, ServiceSpec
from components.settings import ConfigError, Settings, full_key

OS_RESERVED_MB = 1024  # kernel, Docker, SSM agent, page cache headroom
MIN_SHARE_MB = 256
# Small services get a fixed limit (MiB); the big ones share what is left of the instance.
FIXED_MEMORY_MB = {
    proxy.NAME: 128, proxy.CERTBOT_NAME: 192,
    monitoring.NODE_EXPORTER: 64, monitoring.CADVISOR: 160, monitoring.POSTGRES_EXPORTER: 64, monitoring.BLACKBOX: 48,
    monitoring.ALERTMANAGER: 96, monitoring.GRAFANA: 256, logs.ALLOY: 160,
    valkey.NAME: 128, relay.NAME: 64, mail.MAILPIT: 64, backup_store.NAME: 256, portainer.NAME: 128, ci.RUNNER: 256, ci.DRONE: 192,
    ci.DRONE_RUNNER: 128,
}
# Relative shares of what is left after the OS, the fixed limits and one CI job's memory.
SHARE_OF_REST = {"postgres": 0.30, "gitea": 0.35, monitoring.PROMETHEUS: 0.15, logs.LOKI: 0.10}
MONITORING_SERVICES = {monitoring.NODE_EXPORTER, monitoring.CADVISOR, monitoring.POSTGRES_EXPORTER, monitoring.BLACKBOX,
                       monitoring.ALERTMANAGER, monitoring.GRAFANA, monitoring.PROMETHEUS}
LOGGING_SERVICES = {logs.LOKI, logs.ALLOY}
AWS_ONLY_SERVICES = {proxy.CERTBOT_NAME, monitoring.BLACKBOX}  # the local stack has no public names to certify or probe
LOCAL_ONLY_SERVICES = {mail.MAILPIT, backup_store.NAME}  # AWS stacks send real mail through SES and back up to S3
CI_SERVICES: dict[str, set[str]] = {"actions": {ci.RUNNER}, "drone": {ci.DRONE, ci.DRONE_RUNNER}, "none": set()}
ALL_CI_SERVICES = set().union(*CI_SERVICES.values())
JOB_SHARE = 0.10  # what the shares leave free is for CI job containers (capped per job by the runner)
MIN_JOB_MB = 512


def enabled(settings: Settings, name: str) -> bool:
    if name in MONITORING_SERVICES and not settings.monitoring:
        return False
    if name in LOGGING_SERVICES and not settings.logging:
        return False
    if name in ALL_CI_SERVICES and name not in CI_SERVICES[settings.ci]:
        return False
    if name == portainer.NAME and not settings.portainer:
        return False
    if name in LOCAL_ONLY_SERVICES and settings.is_aws:
        return False
    return not (name in AWS_ONLY_SERVICES and not settings.is_aws)


def _fixed_memory(settings: Settings) -> dict[str, int]:
    return {name: mb for name, mb in FIXED_MEMORY_MB.items() if enabled(settings, name)}


def _shared_memory_mb(settings: Settings) -> int:
    """What the instance has left for the big services (and CI jobs) after the OS and the fixed limits."""
    return settings.instance_memory_mib - OS_RESERVED_MB - sum(_fixed_memory(settings).values())


def ci_enabled(settings: Settings) -> bool:
    return bool(CI_SERVICES[settings.ci])


def ci_job_memory_mb(settings: Settings) -> int:
    """What one CI job may use: a tenth of what the big services share, never less than MIN_JOB_MB."""
    return max(MIN_JOB_MB, int(_shared_memory_mb(settings) * JOB_SHARE))


def _water_fill(budget: int, shares: dict[str, float]) -> dict[str, int]:
    """Split budget in proportion to shares, but never below MIN_SHARE_MB: services whose share falls below the
    floor get the floor, and the others split what is left (so the floors never push the total over the budget)."""
    floored: dict[str, int] = {}
    while True:
        rest = budget - sum(floored.values())
        open_shares = {name: share for name, share in shares.items() if name not in floored}
        total = sum(open_shares.values())
        below = {name for name, share in open_shares.items() if rest * share / total < MIN_SHARE_MB} if total else set()
        if not below:
            return {**floored, **{name: int(rest * share / total) for name, share in open_shares.items()}}
        floored.update({name: MIN_SHARE_MB for name in below})


def memory_plan(settings: Settings) -> dict[str, int]:
    """Memory limit per enabled container in MiB, sized from the instance type: the OS keeps OS_RESERVED_MB, small
    services get fixed limits, one CI job's memory stays free when CI is on, and the big services share the rest
    (never less than MIN_SHARE_MB each). Too small an instance is a config error naming the size it needs."""
    fixed = _fixed_memory(settings)
    available = _shared_memory_mb(settings)
    job_reserve = ci_job_memory_mb(settings) if ci_enabled(settings) else 0
    shares = {name: share for name, share in SHARE_OF_REST.items() if enabled(settings, name)}
    floors = MIN_SHARE_MB * len(shares)
    budget = available - job_reserve
    if budget < floors:
        needed = settings.instance_memory_mib - budget + floors
        raise ConfigError(
            f"{full_key('instanceType')}: got {settings.instance_type!r} ({settings.instance_memory_mib} MiB); expected at least "
            f"{needed} MiB for the enabled services and a CI job, e.g. t3.large, or turn off monitoring, logging or portainer")
    return {**_water_fill(budget, shares), **fixed}


def service_specs(settings: Settings) -> tuple[ServiceSpec, ...]:
    """Every container of the stack, dependencies before dependants."""
    memory = memory_plan(settings)
    tools: tuple[ConfigFile, ...] = (sso.client_script_file(),) if sso_clients(settings) else ()
    if portainer_signs_on(settings):
        tools += (portainer.oauth_script_file(),)
    gitea = gitea_spec(settings, memory["gitea"], tools=tools)
    specs = [postgres_spec(settings, memory["postgres"]), valkey.valkey_spec(memory[valkey.NAME])]
    if enabled(settings, mail.MAILPIT):
        specs.append(mail.mailpit_spec(memory[mail.MAILPIT]))
    if enabled(settings, backup_store.NAME):
        specs.append(backup_store.minio_spec(memory[backup_store.NAME]))
    specs.append(gitea)
    if enabled(settings, ci.RUNNER):
        specs.append(ci.runner_spec(settings, memory[ci.RUNNER], ci_job_memory_mb(settings)))
    if enabled(settings, ci.DRONE):
        specs += [ci.drone_server_spec(settings, memory[ci.DRONE]), ci.drone_runner_spec(settings, memory[ci.DRONE_RUNNER])]
    specs.append(relay.relay_spec(settings, memory[relay.NAME]))
    if enabled(settings, portainer.NAME):
        specs.append(portainer.portainer_spec(settings, memory[portainer.NAME]))
    if settings.logging:
        specs += [logs.loki_spec(settings, memory[logs.LOKI]), logs.alloy_spec(settings, memory[logs.ALLOY])]
    if settings.monitoring:
        grafana = monitoring.grafana_spec(settings, memory[monitoring.GRAFANA], logs.loki_url() if settings.logging else None)
        exporters = [monitoring.node_exporter_spec(settings, memory[monitoring.NODE_EXPORTER]),
                     monitoring.cadvisor_spec(memory[monitoring.CADVISOR]),
                     monitoring.postgres_exporter_spec(memory[monitoring.POSTGRES_EXPORTER])]
        probed: tuple[str, ...] = ()
        if enabled(settings, monitoring.BLACKBOX):
            exporters.append(monitoring.blackbox_spec(settings, memory[monitoring.BLACKBOX]))
            probed = probe_urls(settings, [*specs, grafana])
        alertmanager = monitoring.alertmanager_spec(settings, memory[monitoring.ALERTMANAGER])
        prometheus = monitoring.prometheus_spec(settings, [*specs, *exporters, alertmanager, grafana], probed,
                                                memory[monitoring.PROMETHEUS])
        specs += [alertmanager, *exporters, prometheus, grafana]
    routed = [spec for spec in specs if spec.route]
    specs.append(proxy_spec(settings, routed, memory[proxy.NAME]))
    if enabled(settings, proxy.CERTBOT_NAME):
        specs.append(certbot_spec(settings, routed_hostnames(settings, routed), memory[proxy.CERTBOT_NAME]))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate service names: {names}")
    return tuple(specs)


def portainer_signs_on(settings: Settings) -> bool:
    return sso.enabled(settings) and enabled(settings, portainer.NAME)


def sso_clients(settings: Settings) -> tuple[sso.OAuthClient, ...]:
    """The web UIs that sign in through Gitea (README, Single sign-on)."""
    if not sso.enabled(settings):
        return ()
    clients = []
    if enabled(settings, monitoring.GRAFANA):
        clients.append(monitoring.grafana_oauth_client(settings))
    if enabled(settings, ci.DRONE) and ci.drone_client_registered_by_deploy(settings):
        clients.append(ci.drone_oauth_client(settings))
    if portainer_signs_on(settings):
        clients.append(portainer.oauth_client(settings))
    if workspaces.enabled(settings):
        clients.append(workspaces.oauth_client(settings))
    return tuple(clients)


def probe_urls(settings: Settings, specs: Sequence[ServiceSpec]) -> tuple[str, ...]:
    """What the HTTPS probes ask: each public hostname's health path. Routes limited to adminCidrs are left out (the
    host's own address is not an admin network, so the probe would get 403); their containers' health still alerts."""
    return tuple(f"https://{route.hostname}{route.health_path}" for route in proxy_routes(settings, specs) if not route.allow)


def routed_hostnames(settings: Settings, specs: Sequence[ServiceSpec]) -> tuple[str, ...]:
    """Every public hostname: DNS records, the certificate, the Nginx server blocks and the probes all use this."""
    return tuple(route.hostname for route in proxy_routes(settings, specs))
