"""Pinned images of the services whose version is not a stack setting. Change a tag here, nowhere else.

Each image is pulled as tag@digest when components/files/image_digests.json knows the tag's digest (written by
scripts/image_digests.py --refresh from the registries, kept current by Renovate): the tag says what it is, the digest
makes it immutable. An image the lock does not know is pulled by its tag alone."""

import json
import re
from functools import cache
from pathlib import Path
from typing import Final

DIGESTS_FILE: Final = Path(__file__).resolve().parent.parent / "files" / "image_digests.json"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # what a registry names a manifest by


@cache
def digests() -> dict[str, str]:
    """image:tag -> sha256:... from the lock; a malformed entry is an error, never silently skipped."""
    document = json.loads(DIGESTS_FILE.read_text())
    found = dict(document["digests"])
    wrong = [image for image, digest in found.items() if "@" in image or not DIGEST.fullmatch(str(digest))]
    if wrong:
        raise ValueError(f"{DIGESTS_FILE.name}: not image:tag -> sha256:<64 hex> for {wrong}")
    return found


def locked(image: str) -> str:
    """The reference to pull: image:tag@sha256:... when the lock knows it, else image:tag."""
    digest = digests().get(image)
    return f"{image}@{digest}" if digest else image

NGINX: Final = "nginx:1.28.3-alpine"
CERTBOT: Final = "certbot/certbot:v5.7.0"
CERTBOT_DNS_ROUTE53: Final = "certbot/dns-route53:v5.7.0"  # the same certbot with its Route 53 plugin (ACME DNS-01)


def gitea(version: str) -> str:
    return f"gitea/gitea:{version}"


def postgres(version: str) -> str:
    return f"postgres:{version}"

# Observability (issue 7). Prometheus 3.5 is its long-term-support line.
PROMETHEUS: Final = "prom/prometheus:v3.5.0"
ALERTMANAGER: Final = "prom/alertmanager:v0.28.1"
GRAFANA: Final = "grafana/grafana:12.1.1"
NODE_EXPORTER: Final = "prom/node-exporter:v1.9.1"
# v0.54+ reads Docker 29's containerd image store (older ones see no containers); published on ghcr.io since.
CADVISOR: Final = "ghcr.io/google/cadvisor:v0.56.2"
POSTGRES_EXPORTER: Final = "prometheuscommunity/postgres-exporter:v0.17.1"
BLACKBOX_EXPORTER: Final = "prom/blackbox-exporter:v0.27.0"
LOKI: Final = "grafana/loki:3.5.3"
ALLOY: Final = "grafana/alloy:v1.10.0"

# The rest of the DevOps stack (issue 8).
VALKEY: Final = "valkey/valkey:8.1.4-alpine"
GITEA_RUNNER: Final = "gitea/runner:1.0.6"  # "Gitea Runner", formerly act_runner
DRONE_SERVER: Final = "drone/drone:2.26.0"
DRONE_RUNNER: Final = "drone/drone-runner-docker:1.8.4"
PORTAINER: Final = "portainer/portainer-ce:2.33.6"  # 2.33.5+ negotiates Docker 29's minimum API version (1.44)
MAILPIT: Final = "axllent/mailpit:v1.29.7"  # the local stack's mail catcher (SMTP in, web UI)
# The local stack's backup store. MinIO published no community images after this release: it is the last one there is.
MINIO: Final = "minio/minio:RELEASE.2025-09-07T16-13-09Z"
PYTHON: Final = "python:3.13.9-alpine3.22"  # runs the webhook relay, whose code is uploaded (no private registry)
# What CI jobs run in: the runner's job label maps to this image.
CI_JOB_IMAGE: Final = "node:22.21.1-bookworm"
