"""Monitoring of topology ha, on the ops host: Prometheus scrapes every Gitea task (found through the Cloud Map name
each running task is registered under) and Grafana shows Gitea's metrics next to CloudWatch's metrics of the managed
services, drawn exactly as the alarms watch them (the same specs).

Both run as containers of the single host's pinned images, on the host's network but listening on its loopback only:
operators reach Grafana through an SSM port forward (port_forward_command), nothing reaches the ops host from the
network. Their credentials (Gitea's metrics token, Grafana's admin password) are fetched from the stack's secret at
each start into files only the container's user can read. Paging stays with the CloudWatch alarms: they watch from
outside this host, which the tasks do not depend on."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any, Final

from components.host import ssm_session_command
from components.host_files import HostFile
from components.services import dashboards, gitea, images, monitoring

PROMETHEUS_UNIT: Final = "forgestack-prometheus"  # the unit and its container
GRAFANA_UNIT: Final = "forgestack-grafana"
UNITS: Final = (PROMETHEUS_UNIT, GRAFANA_UNIT)
LOOPBACK: Final = "127.0.0.1"
PROMETHEUS_RETENTION: Final = "15d"
PROMETHEUS_MEMORY: Final = "384m"  # two to a few Gitea tasks: a few thousand series
GRAFANA_MEMORY: Final = "320m"
GITEA_JOB: Final = gitea.NAME  # the single host's job name too (its spec's name; the Gitea dashboard's up{job="gitea"})
DISCOVERY_REFRESH: Final = "30s"
MANAGED_BOARD: Final = "managed-services"
# Paths below the monitoring directory (the bundle): what each container mounts read-only.
PROMETHEUS_FILE: Final = "/prometheus.yml"
GRAFANA_PROVISIONING_DIR: Final = "/grafana/provisioning"
GRAFANA_DASHBOARDS_DIR: Final = "/grafana/dashboards"


@dataclass(frozen=True)
class OpsMonitoring:
    stack: str
    region: str
    domain: str
    gitea_discovery_name: str  # cluster.gitea_discovery_name(): one A record per running task
    credentials_secret_arn: str
    panels: tuple[dashboards.CloudWatchPanel, ...]  # one per alarm (alarms.grafana_panels)
    directory: str  # where the bundle is unpacked
    credential_tool: tuple[str, ...]  # argv prefix of host_tools/credential_file.py on the ops host


def prometheus_config(monitoring_args: OpsMonitoring) -> str:
    gitea_job: dict[str, Any] = {
        "job_name": GITEA_JOB,
        "metrics_path": gitea.METRICS_PATH,
        "authorization": {"type": "Bearer", "credentials_file": monitoring.bearer_file(gitea.METRICS_CREDENTIAL)},
        "dns_sd_configs": [
            {"names": [monitoring_args.gitea_discovery_name], "type": "A", "port": gitea.HTTP_PORT, "refresh_interval": DISCOVERY_REFRESH}
        ],
    }
    itself = {"job_name": monitoring.PROMETHEUS, "static_configs": [{"targets": [f"{LOOPBACK}:{monitoring.PROMETHEUS_PORT}"]}]}
    return json.dumps(
        {
            "global": {
                "scrape_interval": monitoring.SCRAPE_INTERVAL,
                "external_labels": {"stack": monitoring_args.stack, "forge": monitoring_args.domain},
            },
            "scrape_configs": [gitea_job, itself],
        },
        indent=2,
    )


def monitoring_files(monitoring_args: OpsMonitoring) -> tuple[HostFile, ...]:
    """The configuration, paths relative to the monitoring directory; nothing secret (the credentials come at start)."""
    boards = {
        GITEA_JOB: dashboards.dashboard(GITEA_JOB, "Gitea tasks", dashboards.GITEA_APP),
        MANAGED_BOARD: dashboards.cloudwatch_dashboard(MANAGED_BOARD, "Managed services", list(monitoring_args.panels)),
    }
    return (
        HostFile(PROMETHEUS_FILE, prometheus_config(monitoring_args)),
        HostFile(
            f"{GRAFANA_PROVISIONING_DIR}/datasources/forgestack.yaml",
            monitoring.grafana_datasources(
                None, prometheus_url=f"http://{LOOPBACK}:{monitoring.PROMETHEUS_PORT}", cloudwatch_region=monitoring_args.region
            ),
        ),
        HostFile(f"{GRAFANA_PROVISIONING_DIR}/dashboards/forgestack.yaml", monitoring.grafana_dashboard_provider()),
        *(HostFile(f"{GRAFANA_DASHBOARDS_DIR}/{name}.json", json.dumps(board)) for name, board in sorted(boards.items())),
    )


@dataclass(frozen=True)
class ContainerUnit:
    """A long-running container as a systemd service that fetches its one credential into a file before each start."""

    name: str  # the unit and the container
    description: str
    uid: int  # the image's user: owns the credential file
    credential: str  # key in the credentials secret
    credential_path: str  # where the container reads it
    memory: str
    run_options: tuple[str, ...]  # docker run options besides the common ones
    image: str
    command: tuple[str, ...] = ()

    def docker_run(self) -> list[str]:
        return [
            "/usr/bin/docker", "run", "--rm", "--name", self.name, "--network", "host", "--user", f"{self.uid}:{self.uid}",
            "--memory", self.memory, "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--volume", f"/run/{self.name}/{self.credential}:{self.credential_path}:ro",
            *self.run_options, self.image, *self.command,
        ]  # fmt: skip


def service_unit(unit: ContainerUnit, monitoring_args: OpsMonitoring) -> str:
    fetch = [*monitoring_args.credential_tool, "--secret", monitoring_args.credentials_secret_arn, "--key", unit.credential,
             "--output", f"/run/{unit.name}/{unit.credential}", "--owner", str(unit.uid)]  # fmt: skip
    return f"""[Unit]
Description={unit.description}
Wants=network-online.target
After=network-online.target docker.service
Requires=docker.service

[Service]
RuntimeDirectory={unit.name}
RuntimeDirectoryMode=0700
ExecStartPre={shlex.join(fetch)}
ExecStartPre=-/usr/bin/docker rm --force {unit.name}
ExecStart={shlex.join(unit.docker_run())}
ExecStop=/usr/bin/docker stop {unit.name}
Restart=always
RestartSec=30

[Install]
WantedBy=multi-user.target
"""


def container_units(monitoring_args: OpsMonitoring) -> tuple[ContainerUnit, ...]:
    directory = monitoring_args.directory
    prometheus = ContainerUnit(
        name=PROMETHEUS_UNIT,
        description="forgestack Prometheus: scrapes every Gitea task (Cloud Map), loopback only",
        uid=monitoring.NOBODY,
        credential=gitea.METRICS_CREDENTIAL,
        credential_path=monitoring.bearer_file(gitea.METRICS_CREDENTIAL),
        memory=PROMETHEUS_MEMORY,
        run_options=(
            "--read-only",  # it writes its data volume only
            "--volume", f"{directory}{PROMETHEUS_FILE}:{monitoring.PROMETHEUS_CONFIG}:ro",
            "--volume", f"{PROMETHEUS_UNIT}:{monitoring.PROMETHEUS_DATA}",
        ),
        image=images.locked(images.PROMETHEUS),
        command=(
            f"--config.file={monitoring.PROMETHEUS_CONFIG}", f"--storage.tsdb.path={monitoring.PROMETHEUS_DATA}",
            f"--storage.tsdb.retention.time={PROMETHEUS_RETENTION}", f"--web.listen-address={LOOPBACK}:{monitoring.PROMETHEUS_PORT}",
        ),
    )  # fmt: skip
    env = {**monitoring.grafana_env("localhost", monitoring.PRIVATE_GRAFANA_URL, monitoring.GRAFANA_PASSWORD_FILE),
           "GF_SERVER_HTTP_ADDR": LOOPBACK}
    grafana = ContainerUnit(
        name=GRAFANA_UNIT,
        description="forgestack Grafana: Gitea's and the managed services' metrics, loopback only (SSM port forward)",
        uid=monitoring.GRAFANA_UID,
        credential=monitoring.GRAFANA_PASSWORD_CREDENTIAL,
        credential_path=monitoring.GRAFANA_PASSWORD_FILE,
        memory=GRAFANA_MEMORY,
        run_options=(
            *(option for name, value in sorted(env.items()) for option in ("--env", f"{name}={value}")),
            "--volume", f"{directory}{GRAFANA_PROVISIONING_DIR}:{monitoring.GRAFANA_PROVISIONING}:ro",
            "--volume", f"{directory}{GRAFANA_DASHBOARDS_DIR}:{monitoring.GRAFANA_DASHBOARDS}:ro",
            "--volume", f"{GRAFANA_UNIT}:{monitoring.GRAFANA_DATA}",
        ),
        image=images.locked(images.GRAFANA),
    )  # fmt: skip
    return prometheus, grafana


def units(monitoring_args: OpsMonitoring) -> dict[str, str]:
    """Unit file name -> text."""
    return {f"{unit.name}.service": service_unit(unit, monitoring_args) for unit in container_units(monitoring_args)}


def port_forward_command(region: str, instance_id: str) -> str:
    """What an operator runs to open Grafana at http://localhost:3000/ (the Session Manager plugin does the rest)."""
    parameters = json.dumps({"portNumber": [str(monitoring.GRAFANA_PORT)], "localPortNumber": [str(monitoring.GRAFANA_PORT)]})
    return ssm_session_command(region, instance_id, "--document-name", "AWS-StartPortForwardingSession", "--parameters", parameters)

