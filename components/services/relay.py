"""The webhook relay: a small Python service (components/files/webhook_relay.py) in a pinned Python image.

Gitea posts webhooks to it inside the Docker network (http://relay:8080/hooks/gitea); for senders outside
the host Nginx routes https://hooks.<domain>/hooks/gitea (and /healthz, for the probes) to it and nothing else
(metrics stay inside), buffering each delivery whole first. Targets are a secret file; the HMAC key is generated."""

from __future__ import annotations

import json

from components.constants import SECRETS_DIR
from components.services import images
from components.services.spec import ConfigFile, Healthcheck, MetricsEndpoint, Route, SecretFile, ServiceSpec
from components.settings import Settings
from components.templates import read

NAME = "relay"
PORT = 8080
SUBDOMAIN = "hooks"
CODE = "/app/webhook_relay.py"
HOOK_PATH = "/hooks/gitea"
HEALTH_PATH = "/healthz"
SECRET_FILE = f"{SECRETS_DIR}/webhook_secret"
TARGETS_FILE = f"{SECRETS_DIR}/relay_targets"
TARGETS_CREDENTIAL = "relayTargets"  # the operator's secret setting, as JSON
UID = 65534  # runs as nobody
MAX_BODY_BYTES = 1024 * 1024  # Gitea's payloads are a few KiB; the relay and Nginx refuse more
WORKERS = 8  # connections served at once; Nginx buffers outside senders, so these are never held by slow clients
QUEUE_SIZE = 100  # chat messages waiting for delivery


def internal_url() -> str:
    return f"http://{NAME}:{PORT}{HOOK_PATH}"


def targets_value(settings: Settings) -> str:
    return json.dumps(list(settings.relay_targets))


def relay_spec(settings: Settings, memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=NAME, image=images.PYTHON, memory_mb=memory_mb,
        env={"RELAY_SECRET_FILE": SECRET_FILE, "RELAY_TARGETS_FILE": TARGETS_FILE, "RELAY_EVENTS": ",".join(settings.relay_events),
             "RELAY_PORT": str(PORT), "RELAY_MAX_BODY_BYTES": str(MAX_BODY_BYTES), "RELAY_WORKERS": str(WORKERS),
             "RELAY_QUEUE_SIZE": str(QUEUE_SIZE), "PYTHONUNBUFFERED": "1"},
        config_files=(ConfigFile(CODE, read("webhook_relay.py")),),
        secret_files=(SecretFile("webhookSecret", SECRET_FILE, UID), SecretFile(TARGETS_CREDENTIAL, TARGETS_FILE, UID)),
        command=("python", CODE),
        user=f"{UID}:{UID}",
        healthcheck=Healthcheck(("CMD", "python", "-c", f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}{HEALTH_PATH}')"),
                                interval="30s", start_period="10s"),
        route=Route(SUBDOMAIN, PORT, paths=(HOOK_PATH, HEALTH_PATH), max_body_size=f"{MAX_BODY_BYTES // 1024}k", health_path=HEALTH_PATH),
        metrics=MetricsEndpoint(PORT),
    )
