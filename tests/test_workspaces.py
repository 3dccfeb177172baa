"""Kasm Workspaces (workspaces: true): the settings, the install script as a process (a planted release over HTTPS, the
secret in moto, Kasm's installer and Docker stand-ins), the rendered user data through `cloud-init schema`, the real
Nginx proxying to a TLS upstream with websockets, and the host's resources under mocks."""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import json
import os
import shlex
import shutil
import socketserver
import ssl
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml

from components.constants import FORGE_HOST_TAG
from components.host import decode_user_data
from components.ops_host import TOOLS_DIR
from components.services import images, workspaces
from components.services.catalog import probe_urls, service_specs
from components.services.monitoring import NODE_EXPORTER_PORT
from components.services.proxy import ProxyRoute
from components.settings import ConfigError, parse
from components.templates import FILES_DIR
from components.workspaces_host import (
    BACKUP_METRICS_FILE,
    KASM_DB_CONTAINER,
    KASM_DB_NAME,
    KASM_DB_USER,
    UPGRADE_SCRIPT,
    WorkspacesHostArgs,
    install_argv,
    kasm_backup_argv,
    kasm_backup_units,
    node_exporter_argv,
    render_user_data,
)
from policy.forgestack_rules import ACCEPTED_RISKS, evaluate
from rehearsal.engine import ProgramRun, policy_view, run_program, stack_config
from tests.fake_forge import make_pki
from tests.nginx_support import https_request, read_answer, running_nginx, status_of, tls_connection
from tests.servers import QUICK_SHUTDOWN, free_port, moto_s3_server
from tests.shims import install_shim
from tests.test_monitoring import prometheus_files

SCRIPT = FILES_DIR / "kasm-install.sh"
SHA = "ab" * 32
WORKSPACES = {"forgestack:workspaces": "true", "forgestack:workspacesReleaseSha256": SHA}
# In the order of workspaces.CREDENTIALS (admin, user, database, Redis): the script must read exactly those keys.
PASSWORDS = dict(zip(workspaces.CREDENTIALS, ("AdminPw1", "UserPw2", "DbPw3", "RedisPw4"), strict=True))
# Kasm's installer prints the logins at its end; the stand-in does too, so the test sees where that output goes.
FAKE_INSTALLER = """#!/bin/bash
printf '%s\\n' "$@" > "$KASM_RECORD"
echo "Kasm UI Login Credentials: admin@kasm.local ${7:-} user@kasm.local ${9:-}"
"""
FAKE_UPGRADER = """#!/bin/bash
printf '%s\\n' "$@" > "$KASM_UPGRADE_RECORD"
echo "upgrade: $*" >> "$KASM_EVENTS"
"""


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(("overrides", "stack", "message"), [
    ({"forgestack:workspaces": "true"}, "dev", "forgestack:workspacesReleaseSha256: got ''; expected the SHA-256 of "
                                               "kasm_release_1.18.0.09f70a.tar.gz"),
    ({**WORKSPACES, "forgestack:workspacesInstanceType": "t3.large"}, "dev",
     "forgestack:workspacesInstanceType: got 't3.large'; expected at least 9632 MiB of memory for 2 session(s)"),
    ({**WORKSPACES, "forgestack:topology": "ha", "forgestack:ssoOrganization": ""}, "prod",
     "forgestack:workspaces: got True; expected false here: the workspaces host is built for topology single on AWS"),
    (WORKSPACES, "local", "forgestack:workspaces: got True; expected false here"),
    ({**WORKSPACES, "forgestack:workspacesReleaseSha256": "AB" * 32}, "dev", "forgestack:workspacesReleaseSha256"),
    ({**WORKSPACES, "forgestack:workspacesRelease": "latest"}, "dev", "forgestack:workspacesRelease"),
    ({**WORKSPACES, "forgestack:workspacesSessions": "0"}, "dev", "forgestack:workspacesSessions"),
])
def test_bad_workspaces_settings_are_refused_naming_the_key(overrides: dict[str, str], stack: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(stack_config(stack, overrides), stack=stack)


def test_the_host_is_sized_and_addressed_from_the_settings() -> None:
    settings = parse(stack_config("dev", {**WORKSPACES, "forgestack:workspacesSessions": "4",
                                          "forgestack:workspacesInstanceType": "m7i.xlarge"}), stack="dev")
    assert workspaces.private_ip(settings.vpc_cidr) == "10.20.0.20"  # dev's VPC 10.20.0.0/16, public subnet 10.20.0.0/24
    assert workspaces.swap_mib(settings.workspaces_sessions) == 4096
    assert workspaces.release_url("1.18.0.09f70a") == "https://kasm-static-content.s3.amazonaws.com/kasm_release_1.18.0.09f70a.tar.gz"


# ------------------------------------------------------------------ the install script, run


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def release_server(tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """A release tarball (kasm_release/install.sh = a stand-in that records its arguments) served over HTTPS by a test
    CA; yields (its URL, the CA file, its SHA-256)."""
    site = tmp_path / "site"
    (site / "kasm_release").mkdir(parents=True)
    installer = site / "kasm_release" / "install.sh"
    installer.write_text(FAKE_INSTALLER)
    upgrader = site / "kasm_release" / "upgrade.sh"
    upgrader.write_text(FAKE_UPGRADER)
    tarball = site / "kasm_release_1.18.0.09f70a.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(installer, arcname="kasm_release/install.sh")
        archive.add(upgrader, arcname="kasm_release/upgrade.sh")
    pki = make_pki(tmp_path / "pki")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.certificate, pki.key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Files(*a, directory=str(site)))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True)
    thread.start()
    try:
        yield (f"https://localhost:{server.server_address[1]}/{tarball.name}", pki.ca,
               hashlib.sha256(tarball.read_bytes()).hexdigest())
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def aws_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


def _secret(endpoint: str, document: dict[str, str]) -> str:
    client = boto3.client("secretsmanager", region_name="eu-west-1", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    name = f"kasm-{len(client.list_secrets()['SecretList'])}"
    return str(client.create_secret(Name=name, SecretString=json.dumps(document))["ARN"])


@pytest.fixture
def host(tmp_path: Path, aws_endpoint: str) -> dict[str, object]:
    """The host's stand-ins: docker (records its arguments) and python3 (this interpreter, which has boto3)."""
    tools = tmp_path / "bin"
    install_shim(tools, "docker", f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{tmp_path}/docker.log"\n')
    install_shim(tools, "python3", f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    # systemctl: records what it starts; fails when the test plants systemctl-fails (a backup that does not succeed).
    install_shim(tools, "systemctl", f'#!/bin/sh\necho "systemctl: $*" >> "{tmp_path}/events"\n'
                                     f'[ ! -e "{tmp_path}/systemctl-fails" ]\n')
    env = {"PATH": f"{tools}:{os.environ['PATH']}", "AWS_ENDPOINT_URL": aws_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "KASM_RECORD": str(tmp_path / "installer-args"),
           "KASM_UPGRADE_RECORD": str(tmp_path / "upgrader-args"), "KASM_EVENTS": str(tmp_path / "events")}
    return {"env": env, "state": tmp_path / "state", "work": tmp_path / "work", "dir": tmp_path}


def install(host: dict[str, object], url: str, ca: Path, sha256: str, secret_arn: str,
            *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**host["env"], "CURL_CA_BUNDLE": str(ca)}  # type: ignore[dict-item]
    return subprocess.run(
        ["bash", str(SCRIPT), "--release-url", url, "--sha256", sha256, "--secret-arn", secret_arn, "--region", "eu-west-1",
         "--swap-mib", "3072", "--state-dir", str(host["state"]), "--work-dir", str(host["work"]), *extra],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )


UPGRADE = ("--upgrade", "--backup-unit", "forgestack-kasm-backup.service")
OLDER = "https://kasm-static-content.s3.amazonaws.com/kasm_release_1.17.0.7f020d.tar.gz"


def plant_installed(host: dict[str, object], url: str) -> Path:
    marker = Path(str(host["state"])) / "kasm-installed"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(url + "\n")
    return marker


def test_a_verified_release_is_installed_unattended_with_the_secrets_passwords(
    host: dict[str, object], release_server: tuple[str, Path, str], aws_endpoint: str,
) -> None:
    url, ca, sha256 = release_server
    arn = _secret(aws_endpoint, PASSWORDS)
    result = install(host, url, ca, sha256, arn)
    assert result.returncode == 0, result.stderr
    recorded = (Path(str(host["dir"])) / "installer-args").read_text().split("\n")
    assert recorded[:6] == ["--accept-eula", "--proxy-port", "8443", "--swap-size", "3072", "--admin-password"]
    assert recorded[6:13] == ["AdminPw1", "--user-password", "UserPw2", "--db-password", "DbPw3", "--redis-password", "RedisPw4"]
    # The installer's output (with the logins) goes to a root-only log, never to cloud-init's output.
    log = Path(str(host["state"])) / "kasm-install.log"
    assert "AdminPw1" in log.read_text() and stat.S_IMODE(log.stat().st_mode) == 0o600
    assert not [value for value in PASSWORDS.values() if value in result.stdout + result.stderr]
    # The default zone learns that browsers come through the proxy on 443.
    docker_log = (Path(str(host["dir"])) / "docker.log").read_text()
    assert f"exec {KASM_DB_CONTAINER} psql -U {KASM_DB_USER} -d {KASM_DB_NAME}" in docker_log  # the names the backup uses
    assert "UPDATE zones SET proxy_port = 443, proxy_hostname = '$request_host$' WHERE zone_name = 'default';" in docker_log
    assert (Path(str(host["state"])) / "kasm-installed").read_text().strip() == url
    assert not list(Path(str(host["work"])).iterdir())  # tarball and unpacked release cleaned up
    assert "checking its SHA-256" in result.stderr and "installed; Kasm listens on 8443" in result.stderr

    (Path(str(host["dir"])) / "installer-args").unlink()
    again = install(host, url, ca, sha256, arn)
    assert again.returncode == 0 and "is installed already: nothing to do" in again.stderr
    assert not (Path(str(host["dir"])) / "installer-args").exists()  # the installer did not run twice


def test_a_download_that_does_not_match_the_pinned_sha256_is_refused_and_deleted(
    host: dict[str, object], release_server: tuple[str, Path, str], aws_endpoint: str,
) -> None:
    url, ca, sha256 = release_server
    result = install(host, url, ca, "0" * 64, _secret(aws_endpoint, PASSWORDS))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"kasm-install: kasm_release_1.18.0.09f70a.tar.gz has SHA-256 {sha256}, not the pinned {'0' * 64}: "
        "refused and deleted, nothing installed")
    assert not (Path(str(host["dir"])) / "installer-args").exists()
    assert not list(Path(str(host["work"])).iterdir()) and not (Path(str(host["state"])) / "kasm-installed").exists()


def test_a_secret_without_a_password_stops_before_the_installer(
    host: dict[str, object], release_server: tuple[str, Path, str], aws_endpoint: str,
) -> None:
    url, ca, sha256 = release_server
    incomplete = {key: value for key, value in PASSWORDS.items() if key != "kasmRedisPassword"}
    result = install(host, url, ca, sha256, _secret(aws_endpoint, incomplete))
    assert result.returncode == 1 and "the secret has no kasmRedisPassword" in result.stderr
    assert "Traceback" not in result.stderr and not (Path(str(host["dir"])) / "installer-args").exists()
    missing = install(host, url, ca, sha256, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nope-AbCdEf")
    assert missing.returncode == 1 and "cannot read arn:aws:secretsmanager" in missing.stderr and "Traceback" not in missing.stderr


def test_another_release_already_installed_is_not_overwritten_without_upgrade(
    host: dict[str, object], release_server: tuple[str, Path, str], aws_endpoint: str,
) -> None:
    url, ca, sha256 = release_server
    plant_installed(host, OLDER)
    result = install(host, url, ca, sha256, _secret(aws_endpoint, PASSWORDS))
    assert result.returncode == 1 and "moving to kasm_release_1.18.0.09f70a.tar.gz is an upgrade (--upgrade" in result.stderr
    assert not (Path(str(host["dir"])) / "installer-args").exists()


def test_an_upgrade_backs_up_kasms_database_first_then_runs_kasms_upgrader(
    host: dict[str, object], release_server: tuple[str, Path, str], aws_endpoint: str,
) -> None:
    url, ca, sha256 = release_server
    marker = plant_installed(host, OLDER)
    result = install(host, url, ca, sha256, _secret(aws_endpoint, PASSWORDS), *UPGRADE)
    assert result.returncode == 0, result.stderr
    events = (Path(str(host["dir"])) / "events").read_text().splitlines()
    assert events == ["systemctl: start forgestack-kasm-backup.service", "upgrade: --proxy-port 8443"]  # backup, then upgrade
    assert not (Path(str(host["dir"])) / "installer-args").exists()  # never the installer (it would reset the passwords)
    assert marker.read_text().strip() == url
    assert "UPDATE zones SET proxy_port = 443" in (Path(str(host["dir"])) / "docker.log").read_text()
    assert "upgraded to kasm_release_1.18.0.09f70a.tar.gz" in result.stderr
    assert not list(Path(str(host["work"])).iterdir())
    again = install(host, url, ca, sha256, _secret(aws_endpoint, PASSWORDS), *UPGRADE)
    assert again.returncode == 0 and "is installed already: nothing to do" in again.stderr
    assert len((Path(str(host["dir"])) / "events").read_text().splitlines()) == 2  # no second backup, no second upgrade


def test_a_failed_backup_stops_the_upgrade_before_anything_changes(
    host: dict[str, object], release_server: tuple[str, Path, str], aws_endpoint: str,
) -> None:
    url, ca, sha256 = release_server
    marker = plant_installed(host, OLDER)
    (Path(str(host["dir"])) / "systemctl-fails").touch()
    result = install(host, url, ca, sha256, _secret(aws_endpoint, PASSWORDS), *UPGRADE)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "kasm-install: the backup before the upgrade failed (journalctl -u forgestack-kasm-backup.service): nothing upgraded")
    assert not (Path(str(host["dir"])) / "upgrader-args").exists() and marker.read_text().strip() == OLDER


def test_a_wrong_checksum_stops_an_upgrade_before_the_backup(
    host: dict[str, object], release_server: tuple[str, Path, str], aws_endpoint: str,
) -> None:
    url, ca, _ = release_server
    marker = plant_installed(host, OLDER)
    result = install(host, url, ca, "0" * 64, _secret(aws_endpoint, PASSWORDS), *UPGRADE)
    assert result.returncode == 1 and "refused and deleted" in result.stderr
    assert not (Path(str(host["dir"])) / "events").exists() and marker.read_text().strip() == OLDER


def test_a_downgrade_is_refused(host: dict[str, object], release_server: tuple[str, Path, str], aws_endpoint: str) -> None:
    url, ca, sha256 = release_server
    newer = "https://kasm-static-content.s3.amazonaws.com/kasm_release_1.19.0.abcdef.tar.gz"
    marker = plant_installed(host, newer)
    result = install(host, url, ca, sha256, _secret(aws_endpoint, PASSWORDS), *UPGRADE)
    assert result.returncode == 1 and "is older: Kasm has no downgrade" in result.stderr
    assert not (Path(str(host["dir"])) / "events").exists() and marker.read_text().strip() == newer


def test_an_upgrade_before_the_first_install_leaves_the_install_to_the_first_boot(
    host: dict[str, object], release_server: tuple[str, Path, str], aws_endpoint: str,
) -> None:
    url, ca, sha256 = release_server
    result = install(host, url, ca, sha256, _secret(aws_endpoint, PASSWORDS), *UPGRADE)
    assert result.returncode == 0 and "Kasm is not installed yet" in result.stderr
    assert not (Path(str(host["dir"])) / "events").exists() and not (Path(str(host["dir"])) / "installer-args").exists()


def test_a_second_run_waits_for_the_first(host: dict[str, object], release_server: tuple[str, Path, str], aws_endpoint: str) -> None:
    url, ca, sha256 = release_server
    plant_installed(host, url)
    lock = (Path(str(host["state"])) / "kasm-install.lock").open("a")
    fcntl.flock(lock, fcntl.LOCK_EX)  # the first boot's install, still running
    threading.Timer(1.5, lambda: fcntl.flock(lock, fcntl.LOCK_UN)).start()
    started = time.monotonic()
    result = install(host, url, ca, sha256, _secret(aws_endpoint, PASSWORDS), *UPGRADE)
    assert result.returncode == 0 and time.monotonic() - started >= 1.4
    lock.close()


@pytest.mark.parametrize(("argv", "message"), [
    (["--release-url", "http://example.com/kasm_release_1.18.0.tar.gz", "--sha256", SHA, "--secret-arn", "a", "--region", "r"],
     "--release-url must be an https URL"),
    (["--release-url", "https://example.com/kasm_release_1.18.0.tar.gz", "--sha256", "abc", "--secret-arn", "a", "--region", "r"],
     "--sha256 must be 64 lowercase hex digits"),
    (["--release-url", "https://example.com/kasm_release_1.18.0.tar.gz", "--sha256", SHA], "--secret-arn and --region are required"),
    (["--bogus"], "unknown argument: --bogus"),
    (["--release-url", "https://example.com/kasm_release_1.18.0.tar.gz", "--sha256", SHA, "--secret-arn", "a", "--region", "r",
      "--upgrade"], "--upgrade needs --backup-unit <name>.service"),
])
def test_bad_usage_exits_2_with_one_line(argv: list[str], message: str) -> None:
    result = subprocess.run(["bash", str(SCRIPT), *argv], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and message in result.stderr


def test_help_describes_every_option() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    for option in ("--release-url", "--sha256", "--secret-arn", "--region", "--swap-mib", "--listen-port", "--public-port",
                   "--upgrade", "--backup-unit"):
        assert option in result.stdout


# ------------------------------------------------------------------ user data


@pytest.mark.validator
def test_the_user_data_passes_cloud_init_schema_and_holds_no_secret(tmp_path: Path) -> None:
    settings = parse(stack_config("dev", WORKSPACES), stack="dev")
    args = WorkspacesHostArgs(
        stack="dev", region="eu-west-1", instance_type=settings.workspaces_instance_type, architecture="x86_64",
        volume_gb=100, sessions=2, release=settings.workspaces_release, release_sha256=SHA, vpc_id="vpc-1", subnet_id="subnet-1",
        private_ip=workspaces.private_ip(settings.vpc_cidr), forge_host_security_group_id="sg-1",
        backup_bucket_name="backups-1", backup_bucket_arn="arn:aws:s3:::backups-1", backup_key_arn="arn:aws:kms:eu-west-1:1:key/k",
        backup_interval_hours=24,
    )
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:workspaces-AbCdEf"
    user_data = render_user_data(args, arn)
    path = tmp_path / "user-data.yaml"
    path.write_text(user_data)
    cloud_init = shutil.which("cloud-init")
    assert cloud_init, "cloud-init is installed by .ci/run"
    result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert SCRIPT.read_text().strip().splitlines()[-1].strip() in user_data  # the whole script rides along
    assert json.dumps(install_argv(args, arn)) in user_data
    assert "Password" not in user_data.replace("kasmAdminPassword", "").replace("kasmUserPassword", "").replace(
        "kasmDatabasePassword", "").replace("kasmRedisPassword", "")


# ------------------------------------------------------------------ the proxy, for real


class _KasmStandIn(socketserver.ThreadingTCPServer):
    """Kasm's web server as the proxy meets it: HTTPS only; a websocket upgrade answered 101 and then echoed."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.context = context
        self.heads: list[str] = []
        super().__init__(("127.0.0.1", port), _KasmHandler)


class _KasmHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _KasmStandIn = self.server  # type: ignore[assignment]
        with server.context.wrap_socket(self.request, server_side=True) as connection:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = connection.recv(4096)
                if not chunk:
                    return
                head += chunk
            text = head.decode()
            server.heads.append(text)
            if "upgrade: websocket" in text.lower():
                connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                while data := connection.recv(4096):
                    connection.sendall(b"echo:" + data)
                return
            body = b'{"ok": true}'
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                               + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


@pytest.mark.validator
def test_nginx_proxies_kasm_over_tls_with_websockets(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", names=("10.20.0.20",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.certificate, pki.key)
    port = free_port()
    kasm = _KasmStandIn(port, context)
    threading.Thread(target=kasm.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True).start()
    hostname = "workspaces.dev.forge.example.com"
    route = ProxyRoute(hostname, f"127.0.0.1:{port}", limits=(workspaces.LOGIN_LIMIT,), health_path=workspaces.HEALTH_PATH,
                       remote_tls=True)
    work = tmp_path / "nginx"
    work.mkdir()
    try:
        with running_nginx(work, [route]) as https_port:
            health = https_request(https_port, hostname, "GET", workspaces.HEALTH_PATH)
            assert status_of(health) == 200 and health.endswith(b'{"ok": true}')
            assert f"Host: {hostname}" in kasm.heads[-1] and "X-Forwarded-Proto: https" in kasm.heads[-1]
            with tls_connection(https_port, hostname) as connection:
                connection.sendall(f"GET /desktop/websockify HTTP/1.1\r\nHost: {hostname}\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n\r\n"
                                   .encode())
                assert status_of(read_answer(connection)) == 101
                connection.sendall(b"frame-1")
                assert connection.recv(4096) == b"echo:frame-1"  # the session's stream passes both ways
            big_cookie = "a" * 12000  # Kasm's session cookies outgrow Nginx's default 8k header buffer
            assert status_of(https_request(https_port, hostname, "GET", "/api/__healthcheck",
                                           headers={"Cookie": f"session={big_cookie}"})) == 200
            assert status_of(https_request(https_port, hostname, "GET", "/metrics")) == 404  # internal paths stay closed
    finally:
        kasm.shutdown()
        kasm.server_close()


# ------------------------------------------------------------------ under mocks


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return run_program("dev", stack_config("dev", WORKSPACES))


def test_the_workspaces_host_is_reached_only_through_the_forges_proxy(run: ProgramRun) -> None:
    instance = run.one("aws:ec2/instance:Instance", name="workspaces-instance")
    assert instance.inputs["privateIp"] == "10.20.0.20" and instance.inputs["instanceType"] == "t3.xlarge"
    assert instance.inputs["metadataOptions"]["httpTokens"] == "required"
    assert instance.inputs["metadataOptions"]["httpPutResponseHopLimit"] == 1
    root = instance.inputs["rootBlockDevice"]
    key = run.one("aws:kms/key:Key", name="workspaces-key")
    assert root["encrypted"] is True and root["kmsKeyId"] == key.outputs["arn"] and root["volumeSize"] == 100
    group = run.one("aws:ec2/securityGroup:SecurityGroup", name="workspaces-sg")
    assert instance.inputs["vpcSecurityGroupIds"] == [group.id]
    ingress = [r for r in run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
               if r.inputs["securityGroupId"] == group.id]
    forge_outbound = run.one("aws:ec2/securityGroup:SecurityGroup", name="network-outbound")
    # Nothing from the Internet: Kasm for the forge's Nginx, node-exporter for its Prometheus, both from the forge host only.
    assert sorted((r.inputs["fromPort"], r.inputs.get("referencedSecurityGroupId"), r.inputs.get("cidrIpv4")) for r in ingress) == [
        (workspaces.KASM_PORT, forge_outbound.id, None), (NODE_EXPORTER_PORT, forge_outbound.id, None)]
    proxy = next(c for c in run.of_type("docker:index/container:Container") if c.name == "services-proxy")
    nginx = next(u["content"] for u in proxy.inputs["uploads"] if u["file"] == "/etc/nginx/conf.d/default.conf")
    assert "server_name workspaces.dev.forge.example.com;" in nginx and "set $upstream 10.20.0.20:8443;" in nginx
    assert "proxy_pass https://$upstream;" in nginx
    assert "workspaces.dev.forge.example.com" in run.outputs["hostnames"]  # DNS, certificate and probe follow
    assert run.one("aws:route53/record:Record", name="dns-workspaces-a").inputs["type"] == "A"
    assert run.outputs["workspacesUrl"] == "https://workspaces.dev.forge.example.com/"


def test_only_the_forge_host_carries_the_tag_the_deploys_key_pusher_looks_for(run: ProgramRun) -> None:
    """Otherwise the pusher finds two instances of the stack and pushes to none: every deploy would lose the host."""
    tagged = [r.name for r in run.of_type("aws:ec2/instance:Instance") if (r.inputs.get("tags") or {}).get(FORGE_HOST_TAG[0])]
    assert tagged == ["host-instance"]
    assert run.one("aws:ec2/instance:Instance", name="host-instance").inputs["tags"][FORGE_HOST_TAG[0]] == FORGE_HOST_TAG[1]


def test_kasms_passwords_are_in_a_secret_only_its_host_reads_and_never_in_user_data(run: ProgramRun) -> None:
    secret = run.one("aws:secretsmanager/secret:Secret", name="workspaces-secret")
    version = run.one("aws:secretsmanager/secretVersion:SecretVersion", name="workspaces-secret-version")
    passwords = {r.name.removeprefix("workspaces-"): r.outputs["result"] for r in run.of_type("random:index/randomPassword:RandomPassword")
                 if r.name.startswith("workspaces-")}
    assert set(passwords) == set(workspaces.CREDENTIALS)
    assert json.loads(version.inputs["secretString"]) == passwords
    instance = run.one("aws:ec2/instance:Instance", name="workspaces-instance")
    user_data = decode_user_data(instance.inputs["userDataBase64"])
    assert not [value for value in passwords.values() if value in user_data]
    assert secret.outputs["arn"] in user_data and SHA in user_data
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", name="workspaces-policy").inputs["policy"])
    reads = [s for s in policy["Statement"] if "secretsmanager:GetSecretValue" in str(s["Action"])]
    assert [s["Resource"] for s in reads] == [secret.outputs["arn"]]
    # The forge host's own role never reads Kasm's secret.
    host_policy = run.one("aws:iam/rolePolicy:RolePolicy", name="host-policy").inputs["policy"]
    assert secret.outputs["arn"] not in host_policy


def test_the_policy_pack_passes_with_the_host_address_as_the_only_new_accepted_risk(run: ProgramRun) -> None:
    report = evaluate(policy_view(run))
    assert report.mandatory == [] and report.advisory == []
    assert ("ec2-no-public-ip", "workspaces-instance") in {(v.rule, v.resource) for v in report.accepted}
    assert {(v.rule, v.resource) for v in report.accepted} <= set(ACCEPTED_RISKS)


def test_the_probes_watch_workspaces() -> None:
    settings = parse(stack_config("dev", WORKSPACES), stack="dev")
    assert f"https://workspaces.dev.forge.example.com{workspaces.HEALTH_PATH}" in probe_urls(settings, service_specs(settings))


@pytest.mark.validator
def test_prometheus_scrapes_the_workspaces_host_and_promtool_accepts_it(tmp_path: Path, run: ProgramRun) -> None:
    settings = parse(stack_config("dev", WORKSPACES), stack="dev")
    config_path = prometheus_files(settings, tmp_path)
    result = subprocess.run(["promtool", "check", "config", str(config_path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"]: job for job in yaml.safe_load(config_path.read_text())["scrape_configs"]}
    assert jobs[workspaces.METRICS_JOB]["static_configs"] == [{"targets": [f"10.20.0.20:{NODE_EXPORTER_PORT}"]}]
    # The host runs the pinned node-exporter on exactly that address, read-only and with every capability dropped.
    user_data = decode_user_data(run.one("aws:ec2/instance:Instance", name="workspaces-instance").inputs["userDataBase64"])
    runcmd = yaml.safe_load(user_data)["runcmd"]
    assert runcmd[1] == node_exporter_argv("10.20.0.20")
    assert images.locked(images.NODE_EXPORTER) in runcmd[1] and f"--web.listen-address=10.20.0.20:{NODE_EXPORTER_PORT}" in runcmd[1]
    assert {"--read-only", "ALL", "no-new-privileges"} <= set(runcmd[1])


# ------------------------------------------------------------------ Kasm's database in the backups


def test_kasms_database_is_backed_up_under_its_own_prefix_by_a_timer_the_ssm_association_installs(run: ProgramRun) -> None:
    document = run.one("aws:ssm/document:Document", name="workspaces-tools")
    bucket = run.one("aws:s3/bucket:Bucket", name="backups-bucket")
    script = json.loads(document.inputs["content"])["mainSteps"][0]["inputs"]["runCommand"]
    service = next(line for line in script if "forgestack-kasm-backup.service" in line)
    assert shlex.join(kasm_backup_argv(bucket.outputs["bucket"])) in service.replace("'\\''", "'")
    assert kasm_backup_argv(bucket.outputs["bucket"])[2:] == [
        "--bucket", bucket.outputs["bucket"], "--prefix", "workspaces", "--postgres-container", "kasm_db",
        "--postgres-user", "kasmapp", "--postgres-database", "kasm", "--metrics-file", BACKUP_METRICS_FILE]
    assert script[-3] == "systemctl enable --now forgestack-kasm-backup.timer"
    # The tools are the repository's backup.py and restore.py, checked by their digest before they are swapped in.
    assert any("sha256sum -c --quiet" in line for line in script)
    association = run.one("aws:ssm/association:Association", name="workspaces-tools-install")
    instance = run.one("aws:ec2/instance:Instance", name="workspaces-instance")
    assert association.inputs["targets"] == [{"key": "InstanceIds", "values": [instance.id]}]
    # The metric reaches Prometheus through the workspaces host's node-exporter, where BackupTooOld watches it.
    user_data = decode_user_data(instance.inputs["userDataBase64"])
    assert f"--collector.textfile.directory=/host{Path(BACKUP_METRICS_FILE).parent}" in user_data


def test_the_workspaces_host_reads_and_writes_only_its_own_backups_and_never_erases_one(run: ProgramRun) -> None:
    bucket = run.one("aws:s3/bucket:Bucket", name="backups-bucket").outputs["arn"]
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", name="workspaces-policy").inputs["policy"])
    by_sid = {statement["Sid"]: statement for statement in policy["Statement"]}
    assert by_sid["ReadBackups"]["Resource"] == f"{bucket}/workspaces/*"  # never the forge's, which hold Gitea's database
    assert by_sid["WriteNewBackups"]["Resource"] == f"{bucket}/workspaces/*"
    assert by_sid["ListBackups"]["Condition"] == {"StringLike": {"s3:prefix": ["workspaces/*"]}}
    assert by_sid["NeverEraseBackups"]["Effect"] == "Deny" and "s3:DeleteObjectVersion" in by_sid["NeverEraseBackups"]["Action"]
    document = run.one("aws:ssm/document:Document", name="workspaces-tools")
    assert by_sid["ReadTheToolsDocument"]["Resource"] == document.outputs["arn"]


def test_the_unit_files_pass_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd is installed by .ci/run"
    units = kasm_backup_units("backups-1", "eu-west-1", 4)
    for name, text in units.items():
        (tmp_path / name).write_text(text.replace("/usr/bin/python3", sys.executable))
    (tmp_path / "docker.service").write_text("[Service]\nExecStart=/bin/true\n")  # the service runs after Docker
    assert "OnCalendar=*-*-* 00/4:17:00" in units["forgestack-kasm-backup.timer"]
    verify = [analyze, "verify", "--man=no", *(str(tmp_path / name) for name in (*units, "docker.service"))]
    result = subprocess.run(verify, capture_output=True, text=True, check=False,
                            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"})
    assert result.returncode == 0, result.stderr


def test_a_new_workspaces_release_reaches_the_host_through_the_association_with_a_backup_first(run: ProgramRun) -> None:
    """The instance ignores changes of its user data; the tools document carries the release, so a new one changes the
    document, the association runs it again, and its last step is the install script in upgrade mode."""
    document = run.one("aws:ssm/document:Document", name="workspaces-tools")
    step = json.loads(document.inputs["content"])["mainSteps"][0]["inputs"]
    secret = run.one("aws:secretsmanager/secret:Secret", name="workspaces-secret").outputs["arn"]
    upgrade = shlex.split(step["runCommand"][-1])
    assert upgrade[:2] == ["bash", f"{TOOLS_DIR}/{UPGRADE_SCRIPT}"] and SCRIPT.name == UPGRADE_SCRIPT  # the same script
    assert upgrade[upgrade.index("--release-url") + 1] == workspaces.release_url("1.18.0.09f70a")
    assert upgrade[upgrade.index("--sha256") + 1] == SHA and upgrade[upgrade.index("--secret-arn") + 1] == secret
    assert upgrade[-3:] == ["--upgrade", "--backup-unit", "forgestack-kasm-backup.service"]
    assert step["timeoutSeconds"] >= 3600
    newer = run_program("dev", stack_config("dev", {**WORKSPACES, "forgestack:workspacesRelease": "1.18.1.abcdef"}))
    changed = newer.one("aws:ssm/document:Document", name="workspaces-tools").inputs["content"]
    assert changed != document.inputs["content"] and "kasm_release_1.18.1.abcdef.tar.gz" in changed
    instance = newer.one("aws:ec2/instance:Instance", name="workspaces-instance")
    assert {"userData", "userDataBase64"} <= set(instance.ignore_changes)  # never a replaced host (Kasm's data is on it)
