"""Portainer CE at portainer.<domain> (or the host's loopback, adminUiAccess private): a web view of the
host's Docker engine. It holds the Docker socket, so it is a switch (forgestack:portainer), on in dev and off
in prod unless enabled."""

from __future__ import annotations

from components.constants import SECRETS_DIR
from components.services import images
from components.services.spec import HostMount, PublishedPort, RateLimit, Route, SecretFile, ServiceSpec, Volume
from components.settings import Settings

NAME = "portainer"
PORT = 9000  # plain HTTP inside the Docker network; TLS ends at the proxy
SUBDOMAIN = "portainer"
PASSWORD_FILE = f"{SECRETS_DIR}/portainer_admin_password"


def portainer_spec(settings: Settings, memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=NAME, image=images.PORTAINER, memory_mb=memory_mb,
        secret_files=(SecretFile("portainerAdminPassword", PASSWORD_FILE),),
        volumes=(Volume(NAME, "/data"),),
        host_mounts=(HostMount("/var/run/docker.sock", "/var/run/docker.sock"),),
        command=("--admin-password-file", PASSWORD_FILE, "--http-enabled", "--bind", f":{PORT}", "--tunnel-port", "8000"),
        # Private: no public name; operators forward the host's loopback port (README, Admin UIs).
        route=None if settings.admin_ui_private else Route(
            SUBDOMAIN, PORT, admin_ui=True, limits=(RateLimit("= /api/auth", "login"),), health_path="/api/system/status"),
        ports=(PublishedPort(PORT, PORT, loopback=True),) if settings.admin_ui_private else (),
    )
