"""A stand-in forge for scripts/smoke.py: Gitea's API as it answers (tokens, keys, repositories, runners, health),
real git behind it (git http-backend over HTTPS, Debian's sshd with a forced command over SSH) and Grafana's health,
all on loopback with a test CA's certificate. What it cannot be is Gitea itself; what the smoke test sends (paths,
scopes, auth headers, git's protocols) is answered the way Gitea answers it, and anything else is a 404."""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.servers import QUICK_SHUTDOWN, free_port

SSHD = "/usr/sbin/sshd"
GIT_HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
ADMIN = "forgeadmin"
PASSWORD = "correct horse battery staple 42"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    ca: Path
    certificate: Path
    key: Path


def make_pki(directory: Path, names: tuple[str, ...] = ("localhost",), days: int = 90, self_signed: bool = False) -> Pki:
    """A test CA and a server certificate for `names` valid `days` days (or one self-signed certificate)."""
    directory.mkdir(parents=True, exist_ok=True)
    san = ",".join(f"DNS:{name}" for name in names) + ",IP:127.0.0.1"
    key, certificate = directory / "server.key", directory / "server.pem"
    if self_signed:
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
                "-out", str(certificate), "-days", str(days), "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}")
        return Pki(certificate, certificate, key)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(ca_key),
            "-out", str(ca), "-days", "365", "-subj", "/CN=forgestack test CA")
    csr = directory / "server.csr"
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", f"/CN={names[0]}")
    extensions = directory / "server.ext"
    extensions.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(certificate),
            "-days", str(days), "-extfile", str(extensions))
    return Pki(ca, certificate, key)


@dataclass
class ForgeState:
    root: Path  # repositories: <root>/<owner>/<name>.git
    authorized_keys: Path
    forced_command: Path
    health: str = "pass"
    runners: list[dict[str, Any]] = field(default_factory=lambda: [{"id": 1, "name": "forge-runner", "status": "online"}])
    grafana_database: str = "ok"
    # Single sign-on: the admin's OAuth2 applications (Gitea's list shape) and the client id Grafana sends.
    oauth_apps: list[dict[str, Any]] = field(default_factory=list)
    grafana_client_id: str = ""
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"sha1", "scopes"}
    keys: dict[int, str] = field(default_factory=dict)
    next_key: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write_authorized_keys(self) -> None:
        lines = [f'command="{self.forced_command}",restrict {key}' for key in self.keys.values()]
        self.authorized_keys.write_text("".join(line + "\n" for line in lines))

    def create_repo(self, owner: str, name: str) -> None:
        bare = self.root / owner / f"{name}.git"
        subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(bare)], check=True)
        seed = self.root / f".seed-{name}"
        subprocess.run(["git", "init", "--quiet", "-b", "main", str(seed)], check=True)
        (seed / "README.md").write_text(f"# {name}\n")
        identity = ["-c", "user.name=Gitea", "-c", "user.email=gitea@forge.invalid"]
        subprocess.run(["git", "-C", str(seed), "add", "README.md"], check=True)
        subprocess.run(["git", *identity, "-C", str(seed), "commit", "--quiet", "-m", "Initial commit"], check=True)
        subprocess.run(["git", "-C", str(seed), "push", "--quiet", str(bare), "main"], check=True, capture_output=True)
        shutil.rmtree(seed)


class FakeGitea(BaseHTTPRequestHandler):
    state: ForgeState  # set on the subclass each server gets
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: the smoke test's own lines are what the tests read

    # --- plumbing
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json(self, status: int, document: Any = None) -> None:
        raw = json.dumps(document).encode() if document is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _basic_ok(self, user: str) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        return base64.b64decode(header[6:]).decode() == f"{user}:{PASSWORD}" and user == ADMIN

    def _token(self) -> dict[str, Any] | None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("token "):
            return None
        value = header[6:]
        return next((token for token in self.state.tokens.values() if token["sha1"] == value), None)

    def _scoped(self, scope: str) -> bool:
        token = self._token()
        if token is None:
            self._json(401, {"message": "token is required"})
            return False
        # A write scope includes its read scope, as in Gitea.
        if scope not in token["scopes"] and scope.replace("read:", "write:") not in token["scopes"]:
            self._json(403, {"message": f"token does not have at least one of required scope(s): {scope}"})
            return False
        return True

    # --- routes
    def do_GET(self) -> None:
        if self._git():
            return
        path = self.path.split("?")[0]
        if path == "/api/healthz":
            self._json(200 if self.state.health == "pass" else 503, {"status": self.state.health, "description": "Gitea"})
        elif path == "/api/v1/user":
            if self._scoped("read:user"):
                self._json(200, {"login": ADMIN, "is_admin": True})
        elif match := re.fullmatch(r"/api/v1/repos/([^/]+)/([^/]+)", path):
            if self._scoped("read:repository"):
                exists = (self.state.root / match[1] / f"{match[2]}.git").exists()
                self._json(200 if exists else 404, {"full_name": f"{match[1]}/{match[2]}"} if exists else {"message": "not found"})
        elif path == "/api/v1/admin/actions/runners":
            if self._scoped("read:admin"):
                self._json(200, {"runners": self.state.runners, "total_count": len(self.state.runners)})
        elif path == "/grafana/api/health":
            self._json(200, {"database": self.state.grafana_database, "version": "12.3.1"})
        elif path == "/api/v1/user/applications/oauth2":
            if self._scoped("read:user"):
                query = parse_qs(urlsplit(self.path).query)
                page, limit = int(query.get("page", ["1"])[0]), int(query.get("limit", ["30"])[0])
                self._json(200, self.state.oauth_apps[(page - 1) * limit : page * limit])
        elif path == "/grafana/login/generic_oauth":
            # Grafana's generic OAuth: the browser goes to the configured authorize URL with its client id.
            host = self.headers.get("Host", "localhost")
            location = urlencode({"client_id": self.state.grafana_client_id, "redirect_uri": f"https://{host}/grafana/login/generic_oauth",
                               "response_type": "code", "scope": "openid profile email groups", "state": "x"})
            self.send_response(302)
            self.send_header("Location", f"https://{host}/login/oauth/authorize?{location}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._json(404, {"message": "not found"})

    def do_POST(self) -> None:
        if self._git():
            return
        body = json.loads(self._body() or b"{}")
        if match := re.fullmatch(r"/api/v1/users/([^/]+)/tokens", self.path):
            if not self._basic_ok(match[1]):
                self._json(401, {"message": "user does not exist or password is wrong"})
                return
            token = {"sha1": secrets.token_hex(20), "scopes": list(body.get("scopes", []))}
            with self.state.lock:
                self.state.tokens[body["name"]] = token
            self._json(201, {"id": len(self.state.tokens), "name": body["name"], "sha1": token["sha1"]})
        elif self.path == "/api/v1/user/repos":
            if self._scoped("write:repository"):
                assert body.get("private") is True and body.get("auto_init") is True, body
                self.state.create_repo(ADMIN, body["name"])
                self._json(201, {"full_name": f"{ADMIN}/{body['name']}"})
        elif self.path == "/api/v1/user/keys":
            if self._scoped("write:user"):
                with self.state.lock:
                    key_id, self.state.next_key = self.state.next_key, self.state.next_key + 1
                    self.state.keys[key_id] = body["key"]
                    self.state.write_authorized_keys()
                self._json(201, {"id": key_id, "title": body["title"]})
        else:
            self._json(404, {"message": "not found"})

    def do_DELETE(self) -> None:
        if match := re.fullmatch(r"/api/v1/users/([^/]+)/tokens/([^/]+)", self.path):
            if not self._basic_ok(match[1]):
                self._json(401, {"message": "unauthorized"})
                return
            deleted = self.state.tokens.pop(match[2], None)
            self._json(204 if deleted else 404)
        elif match := re.fullmatch(r"/api/v1/user/keys/(\d+)", self.path):
            if self._scoped("write:user"):
                with self.state.lock:
                    found = self.state.keys.pop(int(match[1]), None)
                    self.state.write_authorized_keys()
                self._json(204 if found else 404)
        else:
            self._json(404, {"message": "not found"})

    def _git(self) -> bool:
        """git's smart HTTP through the real git http-backend, for a token with write:repository."""
        path, _, query = self.path.partition("?")
        if not re.fullmatch(r"/[^/]+/[^/]+\.git/(info/refs|git-upload-pack|git-receive-pack)", path):
            return False
        token = self._token()
        if token is None or "write:repository" not in token["scopes"]:
            body = self._body()
            del body
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="Gitea"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return True
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(self.state.root), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_USER": ADMIN,
               "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": self.headers.get("Content-Type", "")}
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        body = self._body()
        env["CONTENT_LENGTH"] = str(len(body))
        output = subprocess.run([GIT_HTTP_BACKEND], input=body, env=env, capture_output=True, check=True).stdout
        head, _, payload = output.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        return True


@dataclass
class Forge:
    state: ForgeState
    https_port: int
    ssh_port: int
    pki: Pki
    ssh_user: str

    @property
    def grafana_redirect_uri(self) -> str:
        return f"https://localhost:{self.https_port}/grafana/login/generic_oauth"

    def register_grafana(self) -> None:
        """Grafana's application as the deploy's client command leaves it, and Grafana configured with its id."""
        self.state.grafana_client_id = "5f0c6a4e-0000-4000-8000-00000000aaaa"
        self.state.oauth_apps = [
            {"id": 1, "name": "drone", "redirect_uris": ["https://ci.example.com/login"], "client_id": "other", "client_secret": ""},
            {"id": 2, "name": "grafana", "redirect_uris": [self.grafana_redirect_uri], "client_id": self.state.grafana_client_id,
             "client_secret": "", "confidential_client": True},
        ]

    def outputs(self, **changes: Any) -> dict[str, Any]:
        outputs: dict[str, Any] = {
            "giteaUrl": f"https://localhost:{self.https_port}/",
            "gitSshUrl": f"ssh://{self.ssh_user}@localhost:{self.ssh_port}/",
            "giteaAdminUser": ADMIN,
            "tlsPubliclyTrusted": True,
            "ci": "actions",
            "grafanaUrl": f"https://localhost:{self.https_port}/grafana/",
            "ssoClients": {"grafana": self.grafana_redirect_uri},
        }
        outputs.update(changes)
        return {key: value for key, value in outputs.items() if value is not None}


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def _sshd(directory: Path, port: int, state: ForgeState) -> Iterator[str]:
    """Debian's sshd for the current user, keys from the fake's authorized_keys, every login forced into git."""
    if not Path(SSHD).exists():
        message = "Debian's openssh-server is needed for the SSH half of the fake forge (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    user = pwd.getpwuid(os.getuid()).pw_name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / "host_key")], check=True)
    # Gitea's `gitea serv` maps /<owner>/<repo>.git to its repository root; this forced command does the same.
    state.forced_command.write_text(
        "#!/bin/sh\n"
        'set -- $SSH_ORIGINAL_COMMAND\n'
        'case "$1" in git-upload-pack|git-receive-pack) ;; *) echo "forbidden: $1" >&2; exit 1 ;; esac\n'
        'repo=$(printf %s "$2" | tr -d "\'" | sed "s|^/||")\n'
        f'exec "$1" "{state.root}/$repo"\n'
    )
    state.forced_command.chmod(0o755)
    state.write_authorized_keys()
    config = directory / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {directory}/host_key\nPidFile {directory}/sshd.pid\n"
                      f"AuthorizedKeysFile {state.authorized_keys}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                      f"KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nAllowUsers {user}\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)
        yield user
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def fake_forge(directory: Path, pki: Pki | None = None) -> Iterator[Forge]:
    directory.mkdir(parents=True, exist_ok=True)
    pki = pki or make_pki(directory / "pki")
    state = ForgeState(root=directory / "repositories", authorized_keys=directory / "authorized_keys",
                       forced_command=directory / "gitea-serv")
    state.root.mkdir()
    handler = type("Handler", (FakeGitea,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.certificate), str(pki.key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True)
    thread.start()
    ssh_port = free_port()
    try:
        with _sshd(directory, ssh_port, state) as user:
            yield Forge(state, server.server_address[1], ssh_port, pki, user)
    finally:
        server.shutdown()
        server.server_close()
