"""Single sign-on: Gitea is the identity provider (OAuth2 / OpenID Connect) of the forge's other web UIs.

At deploy time a script in the Gitea container (files/gitea-sso-client.sh) makes sure the sign-on organization and one
OAuth2 application per client exist and prints the client id and a fresh secret; the deploy keeps both as Pulumi
secrets and hands them to the client as files. Who may sign in, and as what, follows Gitea's organization: members of
its Owners team administer, other members view, everyone else is refused. The clients' own local admin accounts stay
as break-glass logins (README, Single sign-on).
"""

from __future__ import annotations

from dataclasses import dataclass

from components.services import gitea
from components.services.spec import ConfigFile
from components.settings import Settings
from components.templates import read

CLIENT_SCRIPT = "/usr/local/bin/forgestack-sso-client"
CLIENT_SCRIPT_FILE = "gitea-sso-client.sh"
OWNERS_TEAM = "owners"  # every Gitea organization has it (its lower-case name is what the groups claim carries)
# OpenID Connect plus Gitea's `groups` claim: the organizations ("org") and teams ("org:team") of the user.
SCOPES = ("openid", "profile", "email", "groups")
USERNAME_CLAIM = "preferred_username"  # the Gitea user name, which every client takes as its own user name
GROUPS_CLAIM = "groups"
AUTHORIZE_PATH = "/login/oauth/authorize"  # Gitea's OAuth2 endpoints
TOKEN_PATH = "/login/oauth/access_token"  # noqa: S105 (a URL path)
USERINFO_PATH = "/login/oauth/userinfo"
# Token and user-info requests go from the client's container straight to Gitea on the Docker network: no hairpin
# through the public address, no trust in a staging certificate. Only the browser uses the public name.
INTERNAL_GITEA_URL = f"http://{gitea.NAME}:{gitea.HTTP_PORT}"


@dataclass(frozen=True)
class OAuthClient:
    """One web UI that signs in through Gitea."""

    application: str  # the OAuth2 application's name in Gitea (unique per admin user)
    redirect_uri: str  # where Gitea sends the browser back; must match what the client sends exactly
    client_id_credential: str  # credentials keys of the deploy-time secrets
    client_secret_credential: str


@dataclass(frozen=True)
class Endpoints:
    """Gitea's OAuth2 endpoints as each side reaches them."""

    authorize: str  # the browser
    token: str  # the client's server
    userinfo: str  # the client's server


def endpoints(settings: Settings, server_side_public: bool = False) -> Endpoints:
    """The browser always uses Gitea's public name. A client's server uses the Docker network, except a client on
    another host (Kasm: server_side_public) which can only reach the public name."""
    server = gitea.public_url(settings) if server_side_public else INTERNAL_GITEA_URL
    return Endpoints(authorize=f"{gitea.public_url(settings)}{AUTHORIZE_PATH}", token=f"{server}{TOKEN_PATH}",
                     userinfo=f"{server}{USERINFO_PATH}")


def enabled(settings: Settings) -> bool:
    return bool(settings.sso_organization)


def owners_group(organization: str) -> str:
    return f"{organization}:{OWNERS_TEAM}"


def client_script_file() -> ConfigFile:
    """The script that registers clients, uploaded into the Gitea container."""
    return ConfigFile(CLIENT_SCRIPT, read(CLIENT_SCRIPT_FILE), executable=True)


def client_command(settings: Settings, client: OAuthClient, gitea_container: str) -> list[str]:
    """docker exec that prints the client's id and a fresh secret, one per line (the admin's password stays a file)."""
    return ["docker", "exec", "--user", "git", "--env", f"GITEA_API=http://127.0.0.1:{gitea.HTTP_PORT}/api/v1", gitea_container,
            CLIENT_SCRIPT, settings.gitea_admin_user, settings.sso_organization, client.application, client.redirect_uri]
