"""Pinned images of the services whose version is not a stack setting. Change a tag here, nowhere else."""

from typing import Final

NGINX: Final = "nginx:1.28.3-alpine"
CERTBOT: Final = "certbot/certbot:v5.7.0"


def gitea(version: str) -> str:
    return f"gitea/gitea:{version}"


def postgres(version: str) -> str:
    return f"postgres:{version}"
