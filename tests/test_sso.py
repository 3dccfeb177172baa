"""Single sign-on through Gitea: the client script run as a process (BusyBox's sh, sed and grep, as in Gitea's Alpine
image, with the real curl) against a stand-in for Gitea's API; Grafana's role mapping evaluated by a JMESPath engine;
the deploy wiring under mocks."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jmespath
import pytest

from components.services import gitea, monitoring, portainer, sso
from components.settings import ConfigError, parse
from components.templates import FILES_DIR
from rehearsal.engine import ProgramRun, Registered, has_secret, run_program, stack_config
from tests.fake_gitea_api import FakeGitea, fake_gitea
from tests.servers import QUICK_SHUTDOWN
from tests.shims import install_shim

SCRIPT = FILES_DIR / sso.CLIENT_SCRIPT_FILE
ADMIN = "forgeadmin"
PASSWORD = 'pa"ss\\word-with-quote-and-backslash'  # curl's config syntax must quote both
ORGANIZATION = "forgestack"
REDIRECT = "https://grafana.dev.forge.example.com/login/generic_oauth"
BUSYBOX_TOOLS = ("sh", "sed", "grep", "head", "cat")


@pytest.fixture
def alpine_path(tmp_path: Path) -> Path:
    """A PATH with BusyBox's applets (Alpine's userland) and curl behind a shim that records every argument list."""
    busybox, curl = shutil.which("busybox"), shutil.which("curl")
    assert busybox and curl, "busybox and curl are installed by .ci/run"
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in BUSYBOX_TOOLS:
        (tools / tool).symlink_to(busybox)
    install_shim(tools, "curl", f'#!{busybox} sh\nprintf "%s\\n" "$*" >> "{tmp_path}/curl-argv.log"\nexec {curl} "$@"\n')
    return tools


@pytest.fixture
def api() -> Iterator[FakeGitea]:
    with fake_gitea(ADMIN, PASSWORD) as server:
        yield server


def run_script(tools: Path, api_url: str, password_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools / "sh"), str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=60,
        env={"PATH": str(tools), "GITEA_API": api_url, "ADMIN_PASSWORD_FILE": str(password_file)},
    )


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "gitea_admin_password"
    path.write_text(PASSWORD + "\n")
    return path


def test_first_run_creates_the_organization_and_the_application(alpine_path: Path, api: FakeGitea, password_file: Path) -> None:
    result = run_script(alpine_path, api.url, password_file, ADMIN, ORGANIZATION, "grafana", REDIRECT)
    assert result.returncode == 0, result.stderr
    client_id, client_secret = result.stdout.splitlines()
    (application,) = api.applications
    assert (application.client_id, application.secret) == (client_id, client_secret)
    assert application.redirect_uris == [REDIRECT] and application.confidential_client
    assert application.skip_secondary_authorization  # a first-party client: no consent screen
    assert api.organizations == {ORGANIZATION: ADMIN}  # the admin owns it, so is in its Owners team
    assert "organization forgestack created" in result.stderr and "application grafana created" in result.stderr


def test_a_second_run_keeps_the_client_and_regenerates_its_secret(alpine_path: Path, api: FakeGitea, password_file: Path) -> None:
    first = run_script(alpine_path, api.url, password_file, ADMIN, ORGANIZATION, "grafana", REDIRECT)
    moved = "http://localhost:3000/login/generic_oauth"  # adminUiAccess turned private
    second = run_script(alpine_path, api.url, password_file, ADMIN, ORGANIZATION, "grafana", moved)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    first_id, first_secret = first.stdout.splitlines()
    second_id, second_secret = second.stdout.splitlines()
    assert second_id == first_id and second_secret != first_secret
    (application,) = api.applications  # no duplicate
    assert application.secret == second_secret and application.redirect_uris == [moved]
    assert [r for r in api.requests if r[0] == "POST"] == [("POST", "/api/v1/orgs"), ("POST", "/api/v1/user/applications/oauth2")]


def test_an_application_beyond_the_first_page_is_found(alpine_path: Path, api: FakeGitea, password_file: Path) -> None:
    for number in range(60):
        api.add_application(f"tool-{number}", f"https://tool-{number}.example.com/callback")
    grafana_app = api.add_application("grafana", REDIRECT)
    for number in range(60, 65):  # on the same page, after it
        api.add_application(f"tool-{number}", f"https://tool-{number}.example.com/callback")
    api.organizations[ORGANIZATION] = ADMIN
    result = run_script(alpine_path, api.url, password_file, ADMIN, ORGANIZATION, "grafana", REDIRECT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [grafana_app.client_id, grafana_app.secret]
    assert len(api.applications) == 66
    assert ("PATCH", f"/api/v1/user/applications/oauth2/{grafana_app.id}") in api.requests


def test_a_name_that_contains_another_does_not_match(alpine_path: Path, api: FakeGitea, password_file: Path) -> None:
    other = api.add_application("grafana-old", REDIRECT)
    result = run_script(alpine_path, api.url, password_file, ADMIN, ORGANIZATION, "grafana", REDIRECT)
    assert result.returncode == 0, result.stderr
    assert len(api.applications) == 2 and result.stdout.splitlines()[0] != other.client_id


def test_the_password_never_appears_in_an_argument_list(alpine_path: Path, api: FakeGitea, password_file: Path) -> None:
    result = run_script(alpine_path, api.url, password_file, ADMIN, ORGANIZATION, "grafana", REDIRECT)
    assert result.returncode == 0, result.stderr
    argv_log = (alpine_path.parent / "curl-argv.log").read_text()
    assert argv_log.count("\n") >= 4  # organization check, creation, listing, application
    assert "word-with-quote" not in argv_log and "--config -" in argv_log


def test_a_wrong_password_stops_with_one_clear_line_and_creates_nothing(
    alpine_path: Path, api: FakeGitea, tmp_path: Path,
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    result = run_script(alpine_path, api.url, wrong, ADMIN, ORGANIZATION, "grafana", REDIRECT)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == "Gitea answered 401 for organization forgestack: check forgeadmin's password"
    assert api.organizations == {} and api.applications == []


@pytest.mark.parametrize(("args", "message"), [
    ((ADMIN, "forge stack", "grafana", REDIRECT), "not a Gitea name: 'forge stack'"),
    ((ADMIN, ORGANIZATION, 'graf"ana', REDIRECT), "not a Gitea name"),
    ((ADMIN, ORGANIZATION, "grafana", "http://grafana.example.com/login/generic_oauth"), "not a redirect URI"),
    ((ADMIN, ORGANIZATION, "grafana", 'https://grafana.example.com/"x'), "no quotes, backslashes or spaces"),
    ((ADMIN, ORGANIZATION, "grafana"), "usage:"),
])
def test_bad_arguments_are_refused_before_any_request(
    alpine_path: Path, api: FakeGitea, password_file: Path, args: tuple[str, ...], message: str,
) -> None:
    result = run_script(alpine_path, api.url, password_file, *args)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""
    assert api.requests == []


# ------------------------------------------------------------------ Grafana's role mapping


@pytest.mark.parametrize(("groups", "role"), [
    (["forgestack", "forgestack:owners"], "Admin"),
    (["forgestack", "forgestack:operators"], "Viewer"),
    (["forgestack"], "Viewer"),
    (["other-org", "other-org:owners"], ""),  # not a member: strict mode refuses the login
    (["forgestack-old", "forgestack-old:owners"], ""),  # a name that starts like it is another organization
    ([], ""),
    (None, ""),  # Gitea's answer for a user in no organization at all
])
def test_grafana_roles_follow_the_gitea_organization(groups: list[str] | None, role: str) -> None:
    path = monitoring.grafana_role_attribute_path("forgestack")
    claims = {"sub": "7", "preferred_username": "ana", "email": "ana@example.com", "groups": groups}
    assert jmespath.search(path, claims) == role


def test_grafana_reads_its_oauth_client_from_files_and_talks_to_gitea_inside() -> None:
    settings = parse(stack_config("dev"), stack="dev")
    env = monitoring.grafana_spec(settings, 256, None).env
    assert env["GF_AUTH_GENERIC_OAUTH_CLIENT_ID__FILE"] == monitoring.GRAFANA_OAUTH_CLIENT_ID_FILE
    assert env["GF_AUTH_GENERIC_OAUTH_CLIENT_SECRET__FILE"] == monitoring.GRAFANA_OAUTH_CLIENT_SECRET_FILE
    assert "GF_AUTH_GENERIC_OAUTH_CLIENT_SECRET" not in env and "GF_AUTH_GENERIC_OAUTH_CLIENT_ID" not in env
    # The browser goes to Gitea's public name (its ROOT_URL); Grafana's server calls reach Gitea on the Docker network.
    root_url = gitea.gitea_env(settings, gitea.single_host_endpoints())["GITEA__server__ROOT_URL"]
    assert env["GF_AUTH_GENERIC_OAUTH_AUTH_URL"] == f"{root_url}login/oauth/authorize"
    assert env["GF_AUTH_GENERIC_OAUTH_TOKEN_URL"] == f"http://{gitea.NAME}:{gitea.HTTP_PORT}/login/oauth/access_token"
    assert env["GF_AUTH_GENERIC_OAUTH_API_URL"] == f"http://{gitea.NAME}:{gitea.HTTP_PORT}/login/oauth/userinfo"
    assert "groups" in env["GF_AUTH_GENERIC_OAUTH_SCOPES"].split() and env["GF_AUTH_GENERIC_OAUTH_ROLE_ATTRIBUTE_STRICT"] == "true"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"  # the login form still creates nobody


def test_the_organization_setting_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"forgestack:ssoOrganization: got 'Forge Stack'; expected a Gitea organization"):
        parse(stack_config("dev", {"forgestack:ssoOrganization": "Forge Stack"}), stack="dev")
    with pytest.raises(ConfigError, match=r"forgestack:ssoOrganization: got 'forgestack'; expected empty with topology ha"):
        parse(stack_config("prod", {"forgestack:topology": "ha"}), stack="prod")


# ------------------------------------------------------------------ the deploy wiring under mocks


def _containers(run: ProgramRun) -> dict[str, Registered]:
    return {c.inputs["name"].removeprefix("forgestack-"): c for c in run.of_type("docker:index/container:Container")}


def _uploads(container: Registered) -> dict[str, str]:
    return {u["file"]: u["content"] for u in container.inputs.get("uploads") or []}


def _grafana_host(run: ProgramRun) -> str:
    env = dict(entry.split("=", 1) for entry in _containers(run)["grafana"].inputs["envs"])
    return env["GF_SERVER_ROOT_URL"]


@pytest.mark.parametrize("stack", ["dev", "prod", "local"])
def test_grafana_gets_a_client_gitea_registers_after_its_admin_exists(
    stack: str, dev_run: ProgramRun, prod_run: ProgramRun, local_run: ProgramRun,
) -> None:
    run = {"dev": dev_run, "prod": prod_run, "local": local_run}[stack]
    client_command = run.one("command:local:Command", name="services-grafanaOauthClientId")
    create = client_command.inputs["create"]
    # The redirect URI is Grafana's own root URL (public name, or localhost when the admin UIs are private).
    assert f"forgestack-sso-client forgeadmin forgestack grafana {_grafana_host(run)}login/generic_oauth" in create
    assert {"forgestack-gitea"} <= set(create.split())  # run in the Gitea container, against Gitea's own port
    assert f"GITEA_API=http://127.0.0.1:{gitea.HTTP_PORT}/api/v1" in create
    admin = run.one("command:local:Command", name="services-gitea-admin")
    gitea_container = next(c for c in run.of_type("docker:index/container:Container") if c.name == "services-gitea")
    assert {admin.urn, gitea_container.urn} <= set(client_command.depends_on)
    assert client_command.inputs["logging"] == "none"  # never printed to the deploy log
    client_id, client_secret = client_command.outputs["stdout"].split()
    grafana = _containers(run)["grafana"]
    files = _uploads(grafana)
    assert (files[monitoring.GRAFANA_OAUTH_CLIENT_ID_FILE], files[monitoring.GRAFANA_OAUTH_CLIENT_SECRET_FILE]) == (
        client_id, client_secret)
    assert grafana.raw_inputs is not None and has_secret(grafana.raw_inputs["uploads"])
    assert not [entry for entry in grafana.inputs["envs"] if client_secret in entry or client_id in entry]
    assert sso.CLIENT_SCRIPT in _uploads(_containers(run)["gitea"])


def test_without_an_organization_nothing_of_single_sign_on_is_deployed() -> None:
    run = run_program("dev", stack_config("dev", {"forgestack:ssoOrganization": ""}))
    assert not [c for c in run.of_type("command:local:Command") if "sso-client" in c.inputs["create"]]
    assert sso.CLIENT_SCRIPT not in _uploads(_containers(run)["gitea"])
    grafana_env = " ".join(_containers(run)["grafana"].inputs["envs"])
    assert "GENERIC_OAUTH" not in grafana_env


# ------------------------------------------------------------------ Portainer CE (OAuth set through its API)

PORTAINER_SCRIPT = FILES_DIR / portainer.OAUTH_SCRIPT_FILE
PORTAINER_PASSWORD = 'port"ainer\\pw'  # quotes and backslashes must survive the JSON body
JWT = "eyJhbGciOiJIUzI1NiJ9.e30.signature"


@dataclass
class FakePortainer:
    """Portainer's API as the script uses it: /api/auth, then /api/settings with the token."""

    settings: dict[str, Any] = field(default_factory=lambda: {"AuthenticationMethod": 1, "OAuthSettings": {}})
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    ignore_updates: bool = False
    url: str = ""


@pytest.fixture
def fake_portainer() -> Iterator[FakePortainer]:
    state = FakePortainer()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length)) if length else {}

        def _authorized(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {JWT}"

        def do_POST(self) -> None:
            body = self._body()
            state.requests.append(("POST", self.path, body))
            if self.path != "/api/auth":
                return self._answer(404, {"message": "not found"})
            if body != {"username": "admin", "password": PORTAINER_PASSWORD}:
                return self._answer(422, {"message": "Invalid credentials", "details": "Unauthorized"})
            return self._answer(200, {"jwt": JWT})

        def do_PUT(self) -> None:
            body = self._body()
            state.requests.append(("PUT", self.path, body))
            if self.path != "/api/settings" or not self._authorized():
                return self._answer(401, {"message": "Unauthorized"})
            if not state.ignore_updates:
                state.settings.update(body)
            return self._answer(200, {**state.settings, **body})

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path, {}))
            if self.path != "/api/settings" or not self._authorized():
                return self._answer(401, {"message": "Unauthorized"})
            return self._answer(200, state.settings)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/api"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def portainer_settings() -> dict[str, Any]:
    return portainer.oauth_settings(parse(stack_config("dev"), "dev"))


def run_portainer_script(tools: Path, api_url: str, stdin: str, settings_json: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools / "sh"), str(PORTAINER_SCRIPT), api_url, settings_json or json.dumps(portainer_settings())],
        input=stdin, capture_output=True, text=True, check=False, timeout=60, env={"PATH": str(tools)},
    )


@pytest.fixture
def portainer_tools(alpine_path: Path) -> Path:
    for tool in ("mktemp", "rm", "printf"):
        if not (alpine_path / tool).exists():
            (alpine_path / tool).symlink_to(shutil.which("busybox") or "busybox")
    return alpine_path


def test_portainer_signs_in_through_gitea_after_the_script(portainer_tools: Path, fake_portainer: FakePortainer, tmp_path: Path) -> None:
    result = run_portainer_script(portainer_tools, fake_portainer.url, portainer.oauth_stdin(PORTAINER_PASSWORD, "cid-1", 'sec"ret\\2'))
    assert result.returncode == 0, result.stderr
    assert fake_portainer.settings["AuthenticationMethod"] == 3
    oauth = fake_portainer.settings["OAuthSettings"]
    assert (oauth["ClientID"], oauth["ClientSecret"]) == ("cid-1", 'sec"ret\\2')
    assert {key: oauth[key] for key in portainer_settings()} == portainer_settings()
    assert oauth["RedirectURI"] == "https://portainer.dev.forge.example.com/" and oauth["UserIdentifier"] == "preferred_username"
    assert oauth["AccessTokenURI"] == "http://gitea:3000/login/oauth/access_token"  # over the Docker network
    assert [(method, path) for method, path, _ in fake_portainer.requests] == [
        ("POST", "/api/auth"), ("PUT", "/api/settings"), ("GET", "/api/settings")]
    # Neither the password, nor the secret, nor Portainer's token is ever an argument or printed.
    argv = (tmp_path / "curl-argv.log").read_text()
    for secret in (PORTAINER_PASSWORD, "sec", JWT):
        assert secret not in argv and secret not in result.stdout + result.stderr
    again = run_portainer_script(portainer_tools, fake_portainer.url, portainer.oauth_stdin(PORTAINER_PASSWORD, "cid-1", "s2"))
    assert again.returncode == 0 and fake_portainer.settings["OAuthSettings"]["ClientSecret"] == "s2"


def test_a_wrong_admin_password_stops_before_any_setting(portainer_tools: Path, fake_portainer: FakePortainer) -> None:
    result = run_portainer_script(portainer_tools, fake_portainer.url, portainer.oauth_stdin("wrong", "cid", "secret"))
    assert result.returncode == 1 and "Portainer refused the admin's sign-in" in result.stderr and "Invalid credentials" in result.stderr
    assert fake_portainer.settings["AuthenticationMethod"] == 1 and "wrong" not in result.stderr


def test_settings_portainer_did_not_keep_are_an_error(portainer_tools: Path, fake_portainer: FakePortainer) -> None:
    fake_portainer.ignore_updates = True
    result = run_portainer_script(portainer_tools, fake_portainer.url, portainer.oauth_stdin(PORTAINER_PASSWORD, "cid", "secret"))
    assert result.returncode == 1 and "do not have OAuth as the authentication method" in result.stderr


@pytest.mark.parametrize(("stdin", "settings_json", "message"), [
    ("only-a-password\n", None, "expected three lines on standard input"),
    ("", None, "expected three lines on standard input"),
    (portainer.oauth_stdin("pw", "id", "secret"), "[1, 2]", "not a JSON object"),
])
def test_bad_input_to_the_portainer_script_exits_2_before_any_request(
    portainer_tools: Path, fake_portainer: FakePortainer, stdin: str, settings_json: str | None, message: str,
) -> None:
    result = run_portainer_script(portainer_tools, fake_portainer.url, stdin, settings_json)
    assert result.returncode == 2 and message in result.stderr and fake_portainer.requests == []


@pytest.mark.parametrize("stack", ["dev", "local"])
def test_portainer_gets_its_client_and_its_settings_with_secrets_only_on_stdin(
    stack: str, dev_run: ProgramRun, local_run: ProgramRun,
) -> None:
    run = {"dev": dev_run, "local": local_run}[stack]
    settings = parse(stack_config(stack), stack)
    configure = run.one("command:local:Command", name="services-portainer-oauth")
    client = run.one("command:local:Command", name="services-portainerOauthClientId")
    assert f"forgestack-sso-client forgeadmin forgestack portainer {portainer.url(settings)}" in client.inputs["create"]
    argv = portainer.oauth_command(settings, "forgestack-gitea")
    parts = shlex.split(configure.inputs["create"])  # as is on the local stack; through ssh (its last argument) on AWS
    assert parts == argv if stack == "local" else shlex.split(parts[-1]) == argv
    assert argv[:3] == ["docker", "exec", "-i"]  # standard input reaches the script
    client_id, client_secret = client.outputs["stdout"].split()
    password = run.one("random:index/randomPassword:RandomPassword", name="credentials-portainerAdminPassword").outputs["result"]
    assert configure.inputs["stdin"] == portainer.oauth_stdin(password, client_id, client_secret)
    assert configure.raw_inputs is not None and has_secret(configure.raw_inputs["stdin"])
    for secret in (password, client_id, client_secret):
        assert secret not in configure.inputs["create"]
    assert portainer.OAUTH_SCRIPT in _uploads(_containers(run)["gitea"])
    assert run.outputs["ssoClients"]["portainer"] == portainer.url(settings)


def test_without_portainer_or_an_organization_portainer_gets_no_client(prod_run: ProgramRun) -> None:
    assert not [c for c in prod_run.of_type("command:local:Command") if "portainer" in c.name]  # prod runs no Portainer
    run = run_program("dev", stack_config("dev", {"forgestack:ssoOrganization": ""}))
    assert not [c for c in run.of_type("command:local:Command") if "portainer" in c.name]
    assert portainer.OAUTH_SCRIPT not in _uploads(_containers(run)["gitea"])
