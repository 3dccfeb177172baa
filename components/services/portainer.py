"""Portainer CE at portainer.<domain> (or the host's loopback, adminUiAccess private): a web view of the
host's Docker engine. It holds the Docker socket, so it is a switch (forgestack:portainer), on in dev and off
in prod unless enabled."""

from __future__ import annotations

import json

from components.constants import SECRETS_DIR
from components.services import images, sso
from components.services.spec import ConfigFile, HostMount, PublishedPort, RateLimit, Route, SecretFile, ServiceSpec, Volume
from components.settings import Settings
from components.templates import read

NAME = "portainer"
PORT = 9000  # plain HTTP inside the Docker network; TLS ends at the proxy
SUBDOMAIN = "portainer"
PASSWORD_FILE = f"{SECRETS_DIR}/portainer_admin_password"
PASSWORD_CREDENTIAL = "portainerAdminPassword"  # noqa: S105 (the credentials key)
PRIVATE_URL = f"http://localhost:{PORT}/"  # adminUiAccess private: the operator's end of the port forward

# Single sign-on: Portainer CE takes OAuth only through its API, as its admin, so the deploy runs OAUTH_SCRIPT in the
# Gitea container (curl, and Portainer on the same Docker network) with the secrets on its standard input.
OAUTH_SCRIPT = "/usr/local/bin/forgestack-portainer-oauth"
OAUTH_SCRIPT_FILE = "portainer-oauth.sh"
OAUTH_CLIENT_ID_CREDENTIAL = "portainerOauthClientId"
OAUTH_CLIENT_SECRET_CREDENTIAL = "portainerOauthClientSecret"  # noqa: S105 (a credentials key)
INTERNAL_API = f"http://{NAME}:{PORT}/api"


def portainer_spec(settings: Settings, memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=NAME, image=images.PORTAINER, memory_mb=memory_mb,
        secret_files=(SecretFile(PASSWORD_CREDENTIAL, PASSWORD_FILE),),
        volumes=(Volume(NAME, "/data"),),
        host_mounts=(HostMount("/var/run/docker.sock", "/var/run/docker.sock"),),
        command=("--admin-password-file", PASSWORD_FILE, "--http-enabled", "--bind", f":{PORT}", "--tunnel-port", "8000"),
        # Private: no public name; operators forward the host's loopback port (README, Admin UIs).
        route=None if settings.admin_ui_private else Route(
            SUBDOMAIN, PORT, admin_ui=True, limits=(RateLimit("= /api/auth", "login"),), health_path="/api/system/status"),
        ports=(PublishedPort(PORT, PORT, loopback=True),) if settings.admin_ui_private else (),
    )


def url(settings: Settings) -> str:
    """Where browsers reach Portainer; Portainer sends this as its OAuth redirect URI."""
    return PRIVATE_URL if settings.admin_ui_private else f"https://{settings.hostname(SUBDOMAIN)}/"


def oauth_client(settings: Settings) -> sso.OAuthClient:
    return sso.OAuthClient(application=NAME, redirect_uri=url(settings), client_id_credential=OAUTH_CLIENT_ID_CREDENTIAL,
                           client_secret_credential=OAUTH_CLIENT_SECRET_CREDENTIAL)


def oauth_settings(settings: Settings) -> dict[str, object]:
    """Portainer's OAuthSettings without the client's id and secret. The browser authorizes at Gitea's public address;
    Portainer fetches the token and the user from Gitea over the Docker network. CE creates each new user as a standard
    user without access to any environment: the admin grants it (CE maps no teams from claims)."""
    endpoints = sso.endpoints(settings)
    return {
        "AuthorizationURI": endpoints.authorize,
        "AccessTokenURI": endpoints.token,
        "ResourceURI": endpoints.userinfo,
        "RedirectURI": url(settings),
        "UserIdentifier": sso.USERNAME_CLAIM,
        "Scopes": "openid profile email",
        "OAuthAutoCreateUsers": True,
        "DefaultTeamID": 0,
        "SSO": True,  # straight to Gitea; the admin keeps Portainer's own login at /#!/internal-auth (break-glass)
        "LogoutURI": "",
    }


def oauth_script_file() -> ConfigFile:
    return ConfigFile(OAUTH_SCRIPT, read(OAUTH_SCRIPT_FILE), executable=True)


def oauth_command(settings: Settings, gitea_container: str) -> list[str]:
    """docker exec (-i: the secrets arrive on standard input) of the OAuth script in the Gitea container."""
    return ["docker", "exec", "-i", "--user", "git", gitea_container, OAUTH_SCRIPT, INTERNAL_API,
            json.dumps(oauth_settings(settings), sort_keys=True, separators=(",", ":"))]


def oauth_stdin(password: str, client_id: str, client_secret: str) -> str:
    return f"{password}\n{client_id}\n{client_secret}\n"
