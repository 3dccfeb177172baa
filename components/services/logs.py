"""Logs: Loki (storage, retention by its compactor) and Grafana Alloy (collector). Promtail reached its end of life."""

from __future__ import annotations

from typing import Any

import yaml

from components.services import images
from components.services.spec import ConfigFile, HostMount, MetricsEndpoint, ServiceSpec, Volume
from components.settings import Settings
from components.templates import render

LOKI = "loki"
LOKI_PORT = 3100
LOKI_UID = 10001  # the image's user
LOKI_CONFIG = "/etc/loki/forgestack.yaml"
ALLOY = "alloy"
ALLOY_PORT = 12345
ALLOY_CONFIG = "/etc/alloy/config.alloy"
DOCKER_LOGS_DIR = "/var/lib/docker/containers"
JOURNAL_DIR = "/var/log/journal"


def loki_url() -> str:
    return f"http://{LOKI}:{LOKI_PORT}"


def loki_config(retention_days: int) -> str:
    document: dict[str, Any] = {
        "auth_enabled": False,  # one tenant, reachable only inside the Docker network
        "server": {"http_listen_port": LOKI_PORT, "grpc_listen_port": 9096, "log_level": "warn"},
        "common": {
            "instance_addr": "127.0.0.1", "path_prefix": "/loki", "replication_factor": 1,
            "storage": {"filesystem": {"chunks_directory": "/loki/chunks", "rules_directory": "/loki/rules"}},
            "ring": {"kvstore": {"store": "inmemory"}},
        },
        "schema_config": {"configs": [{"from": "2024-01-01", "store": "tsdb", "object_store": "filesystem", "schema": "v13",
                                       "index": {"prefix": "index_", "period": "24h"}}]},
        # Retention needs all three: the period, the compactor enabled for it, and where delete requests live.
        "limits_config": {"retention_period": f"{retention_days * 24}h", "reject_old_samples": True,
                          "reject_old_samples_max_age": "168h"},
        "compactor": {"working_directory": "/loki/compactor", "compaction_interval": "10m", "retention_enabled": True,
                      "retention_delete_delay": "2h", "delete_request_store": "filesystem"},
        "analytics": {"reporting_enabled": False},
    }
    return yaml.safe_dump(document, sort_keys=False)


def loki_spec(settings: Settings, memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=LOKI, image=images.LOKI, memory_mb=memory_mb,
        config_files=(ConfigFile(LOKI_CONFIG, loki_config(settings.log_retention_days)),),
        volumes=(Volume(LOKI, "/loki", owner=LOKI_UID),),
        command=(f"-config.file={LOKI_CONFIG}",),
        metrics=MetricsEndpoint(LOKI_PORT),
    )


def alloy_config(settings: Settings) -> str:
    return render("config.alloy.j2", docker_logs_dir=DOCKER_LOGS_DIR, journal_dir=JOURNAL_DIR,
                  loki_push_url=f"{loki_url()}/loki/api/v1/push", stack=settings.stack)


def alloy_spec(settings: Settings, memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=ALLOY, image=images.ALLOY, memory_mb=memory_mb,
        config_files=(ConfigFile(ALLOY_CONFIG, alloy_config(settings)),),
        # Read-only: Docker's log files and the journal (plus machine-id, which the journal reader needs).
        host_mounts=(HostMount(DOCKER_LOGS_DIR, DOCKER_LOGS_DIR), HostMount(JOURNAL_DIR, JOURNAL_DIR),
                     HostMount("/etc/machine-id", "/etc/machine-id")),
        volumes=(Volume(ALLOY, "/var/lib/alloy"),),
        command=("run", f"--server.http.listen-addr=0.0.0.0:{ALLOY_PORT}", "--storage.path=/var/lib/alloy/data", ALLOY_CONFIG),
        metrics=MetricsEndpoint(ALLOY_PORT),
        capabilities=("DAC_OVERRIDE",),  # reads the journal's group-owned files and every container's log (mounts are read-only)
        depends_on=(LOKI,),
    )
