#!/usr/bin/env python3
"""Check a deployed forge end to end, as its users reach it.

    python scripts/smoke.py --stack dev                       # outputs from `pulumi stack output`, password from AWS
    python scripts/smoke.py --stack local --admin-password-file <(docker exec forgestack-gitea cat /run/secrets/gitea_admin_password)
    python scripts/smoke.py --outputs outputs.json --admin-password-file pw --summary "$GITHUB_STEP_SUMMARY"

Checks, in order (a check whose prerequisite failed is reported as blocked):

  tls          the certificate of giteaUrl: chains to a trusted root, names the host, valid for --min-cert-days more
               (stacks on Let's Encrypt's staging CA or the local self-signed certificate: the presented certificate
               is pinned for the rest of the run and only its name and dates are checked, which the line says)
  healthz      Gitea's /api/healthz answers "pass" (retried for up to --wait seconds: run right after a deploy)
  api-token    the admin user gets a short-lived scoped token, and the API answers with it as that user
  canary-repo  the private repository <admin>/forgestack-smoke exists (created on the first run)
  git-https    a clone over HTTPS, a commit and a push (the commit is this run's)
  git-ssh      a clone over SSH with a throwaway key registered for the run, which sees the commit pushed over HTTPS
  runner       ci actions: a Gitea runner is online (ci drone or none: skipped)
  grafana      Grafana's /api/health reports its database ok (a private Grafana is skipped: reach it by port forward)
  sso          single sign-on: every client in ssoClients is an OAuth2 application of the admin in Gitea with exactly its
               redirect URI, and a public Grafana sends the browser to Gitea's authorize URL with that client's id
               (skipped when the stack has no ssoClients)
  backup       the last backup in the backup bucket finished within backupIntervalHours plus an hour (the local stack
               has no backup timer: skipped)

The token and the SSH key are deleted at the end, whatever failed; the canary repository stays (one file, rewritten
by each run). Nothing secret is printed: the password and the token never appear in the output.

Exit codes: 0 every check passed or was skipped, 1 a check failed or was blocked, 2 bad usage or the stack's outputs
or the admin password could not be read.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.constants import GITEA_HEALTH_PATH as HEALTH_PATH
from components.constants import PRIVATE_GRAFANA_URL
from components.host_tools.backup import DEFAULT_PREFIX, latest_key

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CANARY_REPO: Final = "forgestack-smoke"
CANARY_FILE: Final = "last-smoke.txt"
TOKEN_SCOPES: Final = ("write:repository", "write:user", "read:admin")
RUNNER_ONLINE: Final = frozenset({"online", "idle", "active"})  # Gitea reports online; Forgejo idle or active
BACKUP_GRACE: Final = timedelta(hours=1)  # a backup runs for minutes; an hour over its interval means one was missed
HTTP_TIMEOUT_SECONDS: Final = 20
GIT_TIMEOUT_SECONDS: Final = 120


class SmokeUsageError(Exception):
    """The run cannot start: outputs or the admin password unreadable (exit 2)."""


class CheckError(Exception):
    """One check's failure, said in one line."""


def say(line: str) -> None:
    print(f"smoke: {line}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Target:
    """What the checks need from the stack's outputs."""

    gitea_url: str  # https://git.<domain>/ (a trailing slash)
    git_ssh_url: str  # ssh://git@git.<domain>[:port]/
    admin_user: str
    tls_publicly_trusted: bool
    ci: str  # actions, drone or none
    grafana_url: str | None
    sso_clients: dict[str, str]  # OAuth2 application name in Gitea -> its redirect URI
    backup_bucket: str | None
    backup_interval_hours: int | None
    credentials_secret_arn: str | None

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.gitea_url).hostname or ""

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.gitea_url).port or 443


def target_from_outputs(outputs: Mapping[str, Any]) -> Target:
    missing = [key for key in ("giteaUrl", "gitSshUrl", "giteaAdminUser") if not outputs.get(key)]
    if missing:
        raise SmokeUsageError(f"the stack outputs lack {', '.join(missing)}: is this a forgestack stack that was deployed?")
    gitea_url = str(outputs["giteaUrl"])
    if not gitea_url.startswith("https://"):
        raise SmokeUsageError(f"giteaUrl {gitea_url!r} is not an https:// URL")
    interval = outputs.get("backupIntervalHours")
    return Target(
        gitea_url=gitea_url.rstrip("/") + "/",
        git_ssh_url=str(outputs["gitSshUrl"]).rstrip("/") + "/",
        admin_user=str(outputs["giteaAdminUser"]),
        # An older stack without the output: assume a public CA (the strict check).
        tls_publicly_trusted=bool(outputs.get("tlsPubliclyTrusted", True)),
        ci=str(outputs.get("ci", "actions")),
        grafana_url=str(outputs["grafanaUrl"]) if outputs.get("grafanaUrl") else None,
        sso_clients={str(name): str(uri) for name, uri in (outputs.get("ssoClients") or {}).items()},
        backup_bucket=str(outputs["backupBucketName"]) if outputs.get("backupBucketName") else None,
        backup_interval_hours=int(interval) if interval is not None else None,
        credentials_secret_arn=str(outputs["credentialsSecretArn"]) if outputs.get("credentialsSecretArn") else None,
    )


def read_outputs(stack: str | None, outputs_file: Path | None) -> dict[str, Any]:
    if outputs_file is not None:
        try:
            document = json.loads(outputs_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise SmokeUsageError(f"cannot read stack outputs from {outputs_file}: {error}") from error
    else:
        if shutil.which("pulumi") is None:
            raise SmokeUsageError("the pulumi CLI is not on PATH: install it or pass --outputs FILE (pulumi stack output --json)")
        run = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", str(stack)], capture_output=True, text=True,
                             check=False)
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no message"])[-1]
            raise SmokeUsageError(f"pulumi stack output --stack {stack} failed: {last}")
        try:
            document = json.loads(run.stdout)
        except json.JSONDecodeError as error:
            raise SmokeUsageError(f"pulumi stack output --stack {stack} printed no JSON: {error}") from error
    if not isinstance(document, dict):
        raise SmokeUsageError("the stack outputs are not a JSON object")
    return document


def read_admin_password(password_file: Path | None, target: Target) -> str:
    if password_file is not None:
        try:
            password = password_file.read_text().strip()
        except OSError as error:
            raise SmokeUsageError(f"cannot read the admin password from {password_file}: {error.strerror}") from error
        if not password:
            raise SmokeUsageError(f"{password_file} is empty: expected the Gitea admin password")
        return password
    if target.credentials_secret_arn is None:
        raise SmokeUsageError("no credentialsSecretArn output (the local stack): pass --admin-password-file")
    import botocore.exceptions

    from scripts.credentials import read_secret

    try:
        credentials = read_secret(target.credentials_secret_arn)
    except (ValueError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise SmokeUsageError(f"cannot read the admin password from {target.credentials_secret_arn}: {error}") from error
    if "giteaAdminPassword" not in credentials:
        raise SmokeUsageError("the credentials secret has no giteaAdminPassword")
    return credentials["giteaAdminPassword"]


# ---------------------------------------------------------------- TLS and HTTP


def fetch_certificate(host: str, port: int, context: ssl.SSLContext) -> dict[str, Any]:
    """The peer certificate as the context verified it (chain, name, dates), parsed."""
    with socket.create_connection((host, port), timeout=HTTP_TIMEOUT_SECONDS) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        parsed = tls.getpeercert()
    if not parsed:
        raise CheckError(f"{host}:{port} presented no certificate")
    return dict(parsed)


def presented_certificate(host: str, port: int) -> bytes:
    """The certificate the server presents, unverified: only to pin it (staging CA, self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=HTTP_TIMEOUT_SECONDS) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise CheckError(f"{host}:{port} presented no certificate")
    return der


def pinned_context(certificate_pem: Path) -> ssl.SSLContext:
    """Trusts exactly one certificate, even one that is not a CA (partial chain), and still checks name and dates."""
    context = ssl.create_default_context(cafile=str(certificate_pem))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def days_left(certificate: Mapping[str, Any], now: datetime) -> float:
    not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(str(certificate["notAfter"])), tz=UTC)
    return (not_after - now).total_seconds() / 86400


@dataclass
class Api:
    """Gitea's API over one TLS context; the token, once issued, is sent in a header and never logged."""

    base_url: str
    context: ssl.SSLContext
    token: str | None = None

    def call(self, method: str, path: str, body: Any = None, basic: tuple[str, str] | None = None,
             expect: tuple[int, ...] = (200,)) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if basic is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        elif self.token is not None:
            headers["Authorization"] = f"token {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        url = urllib.parse.urljoin(self.base_url, path.lstrip("/"))  # base_url is https (target_from_outputs checks)
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS, context=self.context) as response:  # noqa: S310 (https only)
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise CheckError(f"{method} {path}: {reason}") from error
        if status not in expect:
            raise CheckError(f"{method} {path} answered HTTP {status}, expected {' or '.join(map(str, expect))}")
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")


def redirect_location(url: str, context: ssl.SSLContext) -> str:
    """Where a GET of url redirects (the redirect is not followed): a 302/303 and its Location, else a CheckError."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=HTTP_TIMEOUT_SECONDS, context=context)
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = connection.getresponse()
        location = response.getheader("Location") or ""
    except OSError as error:
        raise CheckError(f"GET {parts.path}: {error}") from error
    finally:
        connection.close()
    if response.status not in (302, 303, 307) or not location:
        raise CheckError(f"GET {parts.path} answered HTTP {response.status}, expected a redirect to Gitea")
    return urllib.parse.urljoin(url, location)


# ---------------------------------------------------------------- checks


@dataclass
class Result:
    name: str
    status: str  # pass, fail, skip, blocked
    detail: str


@dataclass
class Run:
    """One smoke run: its inputs, what it made (to clean up) and its results."""

    target: Target
    password: str
    workdir: Path
    ca_file: Path | None
    min_cert_days: int
    wait_seconds: float
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    run_id: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}")
    pinned_pem: Path | None = None
    api: Api | None = None
    token_name: str | None = None
    key_id: int | None = None
    pushed_commit: str | None = None
    results: list[Result] = field(default_factory=list)

    # --- tls
    def check_tls(self) -> str:
        host, port = self.target.host, self.target.port
        trusted = self.ca_file is not None or self.target.tls_publicly_trusted
        if trusted:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            how = "chains to " + (f"the CA in {self.ca_file.name}" if self.ca_file else "a trusted root")
        else:
            self.pinned_pem = self.workdir / "pinned-certificate.pem"
            self.pinned_pem.write_text(ssl.DER_cert_to_PEM_cert(presented_certificate(host, port)))
            context = pinned_context(self.pinned_pem)
            how = "not a public CA (Let's Encrypt staging or self-signed): pinned, chain not checked"
        try:
            certificate = fetch_certificate(host, port, context)
        except ssl.SSLCertVerificationError as error:
            raise CheckError(f"the certificate of {host} does not verify: {error.verify_message}") from error
        except (ssl.SSLError, OSError) as error:
            raise CheckError(f"no TLS connection to {host}:{port}: {error}") from error
        left = days_left(certificate, self.now())
        if left < self.min_cert_days:
            raise CheckError(f"the certificate of {host} expires in {left:.1f} days (at least {self.min_cert_days} wanted: "
                              "is renewal failing?)")
        self.api = Api(self.target.gitea_url, context)
        return f"{host}: {how}; valid for {left:.0f} more days"

    # --- healthz
    def check_healthz(self) -> str:
        api = self._api()
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                _, body = api.call("GET", HEALTH_PATH)
                status = body.get("status") if isinstance(body, dict) else None
                if status == "pass":
                    return f"{HEALTH_PATH} pass"
                problem = f"{HEALTH_PATH} status {status!r}, expected 'pass'"
            except CheckError as error:
                problem = str(error)
            if time.monotonic() >= deadline:
                raise CheckError(problem)
            say(f"healthz: waiting ({problem})")
            time.sleep(5)

    # --- api-token
    def check_api_token(self) -> str:
        api, user = self._api(), self.target.admin_user
        name = f"forgestack-smoke-{self.run_id}"
        _, body = api.call("POST", f"/api/v1/users/{user}/tokens", {"name": name, "scopes": list(TOKEN_SCOPES)},
                           basic=(user, self.password), expect=(201,))
        token = body.get("sha1") if isinstance(body, dict) else None
        if not token:
            raise CheckError("Gitea issued no token (no sha1 in its answer)")
        self.token_name, api.token = name, str(token)
        _, me = api.call("GET", "/api/v1/user")
        login = me.get("login") if isinstance(me, dict) else None
        if login != user:
            raise CheckError(f"the token authenticates as {login!r}, expected {user!r}")
        return f"token {name} ({', '.join(TOKEN_SCOPES)}) authenticates as {user}"

    # --- canary-repo
    def check_canary_repo(self) -> str:
        api, path = self._api(), f"/api/v1/repos/{self.target.admin_user}/{CANARY_REPO}"
        status, _ = api.call("GET", path, expect=(200, 404))
        if status == 200:
            return f"{self.target.admin_user}/{CANARY_REPO} exists"
        api.call("POST", "/api/v1/user/repos", {"name": CANARY_REPO, "private": True, "auto_init": True, "default_branch": "main",
                                                "description": "forgestack smoke test canary: scripts/smoke.py writes here"},
                 expect=(201,))
        return f"{self.target.admin_user}/{CANARY_REPO} created (private)"

    # --- git-https
    def check_git_https(self) -> str:
        clone = self.workdir / "https"
        url = urllib.parse.urljoin(self.target.gitea_url, f"{self.target.admin_user}/{CANARY_REPO}.git")
        env = self._git_https_env()
        self._git(["clone", "--quiet", url, str(clone)], env, "clone over HTTPS")
        (clone / CANARY_FILE).write_text(f"{self.run_id}\n")  # the run's id: always a change to commit
        identity = ["-c", "user.name=forgestack smoke", "-c", f"user.email={self.target.admin_user}@smoke.invalid"]
        self._git(["-C", str(clone), "add", CANARY_FILE], env, "add")
        self._git([*identity, "-C", str(clone), "commit", "--quiet", "-m", f"smoke {self.run_id}"], env, "commit")
        self._git(["-C", str(clone), "push", "--quiet", "origin", "HEAD"], env, "push over HTTPS")
        self.pushed_commit = self._git(["-C", str(clone), "rev-parse", "HEAD"], env, "rev-parse").strip()
        return f"cloned, committed and pushed {self.pushed_commit[:12]} over HTTPS"

    # --- git-ssh
    def check_git_ssh(self) -> str:
        api = self._api()
        key = self.workdir / "smoke_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"forgestack-smoke-{self.run_id}", "-f", str(key)],
                       check=True, capture_output=True)
        _, body = api.call("POST", "/api/v1/user/keys", {"title": f"forgestack-smoke-{self.run_id}",
                                                         "key": key.with_suffix(".pub").read_text().strip()}, expect=(201,))
        self.key_id = int(body["id"]) if isinstance(body, dict) and "id" in body else None
        known_hosts = self.workdir / "known_hosts"
        # The host key is taken on first use for this run only: the check is that git over SSH works, not who the host is
        # (TLS above proved that for the same name).
        ssh = (f"ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new "
               f"-o UserKnownHostsFile={known_hosts} -o ConnectTimeout=20")
        clone = self.workdir / "ssh"
        url = f"{self.target.git_ssh_url}{self.target.admin_user}/{CANARY_REPO}.git"
        self._git(["clone", "--quiet", url, str(clone)], {"GIT_SSH_COMMAND": ssh}, "clone over SSH")
        head = self._git(["-C", str(clone), "rev-parse", "HEAD"], {}, "rev-parse").strip()
        if self.pushed_commit is not None and head != self.pushed_commit:
            raise CheckError(f"the SSH clone is at {head[:12]}, not at {self.pushed_commit[:12]} pushed over HTTPS")
        return f"cloned over SSH at {head[:12]}" + (" (the commit pushed over HTTPS)" if self.pushed_commit else "")

    # --- runner
    def check_runner(self) -> str | None:
        if self.target.ci != "actions":
            return None
        _, body = self._api().call("GET", "/api/v1/admin/actions/runners")
        runners = body.get("runners") if isinstance(body, dict) else None
        if not isinstance(runners, list):
            raise CheckError("the runners API answered without a runners list")
        online = [str(runner.get("name")) for runner in runners if str(runner.get("status", "")).lower() in RUNNER_ONLINE]
        if not online:
            states = ", ".join(f"{runner.get('name')}: {runner.get('status')}" for runner in runners) or "none registered"
            raise CheckError(f"no runner online ({states})")
        return f"{len(online)} of {len(runners)} runner(s) online: {', '.join(online)}"

    # --- grafana
    def check_grafana(self) -> str | None:
        url = self.target.grafana_url
        if url is None or url == PRIVATE_GRAFANA_URL:
            return None
        grafana = Api(url.rstrip("/") + "/", self._context_for(url))
        _, body = grafana.call("GET", "api/health")
        database = body.get("database") if isinstance(body, dict) else None
        if database != "ok":
            raise CheckError(f"Grafana's /api/health reports database {database!r}, expected 'ok'")
        version = body.get("version", "?") if isinstance(body, dict) else "?"
        return f"Grafana {version}: database ok"

    # --- sso
    def check_sso(self) -> str | None:
        clients = self.target.sso_clients
        if not clients:
            return None
        registered: dict[str, dict[str, Any]] = {}
        for page in range(1, 21):  # Gitea lists at most 50 a page
            _, listing = self._api().call("GET", f"api/v1/user/applications/oauth2?page={page}&limit=50")
            if not isinstance(listing, list) or not listing:
                break
            registered.update({str(app.get("name")): app for app in listing if isinstance(app, dict)})
        for name, redirect_uri in sorted(clients.items()):
            app = registered.get(name)
            if app is None:
                raise CheckError(f"no OAuth2 application {name!r} of {self.target.admin_user} in Gitea (was the deploy's client "
                                 "command replaced or the application deleted?)")
            if app.get("redirect_uris") != [redirect_uri]:
                raise CheckError(f"OAuth2 application {name!r} redirects to {app.get('redirect_uris')}, expected [{redirect_uri!r}]")
        detail = f"{len(clients)} client(s) registered in Gitea: {', '.join(sorted(clients))}"
        grafana = self.target.grafana_url
        if "grafana" in clients and grafana and grafana != PRIVATE_GRAFANA_URL:
            location = redirect_location(grafana.rstrip("/") + "/login/generic_oauth", self._context_for(grafana))
            sent = urllib.parse.urlsplit(location)
            query = urllib.parse.parse_qs(sent.query)
            authorize = self.target.gitea_url + "login/oauth/authorize"
            if f"{sent.scheme}://{sent.netloc}{sent.path}" != authorize:
                raise CheckError(f"Grafana sends the browser to {sent.scheme}://{sent.netloc}{sent.path}, expected {authorize}")
            if query.get("client_id") != [registered["grafana"].get("client_id")] or query.get("redirect_uri") != [clients["grafana"]]:
                raise CheckError("Grafana's sign-in names another client id or redirect URI than Gitea's application 'grafana'")
            detail += "; Grafana sends the browser to Gitea with that client"
        return detail

    # --- backup
    def check_backup(self) -> str | None:
        if self.target.backup_bucket is None:
            return None
        import boto3
        import botocore.exceptions

        key = latest_key(DEFAULT_PREFIX)
        try:
            body = boto3.client("s3").get_object(Bucket=self.target.backup_bucket, Key=key)["Body"].read()
            finished = datetime.fromisoformat(json.loads(body)["finished_at"])
        except botocore.exceptions.ClientError as error:
            raise CheckError(f"cannot read s3://{self.target.backup_bucket}/{key}: {error.response['Error'].get('Code')}") from error
        except botocore.exceptions.BotoCoreError as error:
            raise CheckError(f"cannot read s3://{self.target.backup_bucket}/{key}: {error}") from error
        except (ValueError, KeyError, TypeError) as error:
            raise CheckError(f"s3://{self.target.backup_bucket}/{key} is not a backup pointer: {error}") from error
        if finished.tzinfo is None:
            finished = finished.replace(tzinfo=UTC)
        age = self.now() - finished
        allowed = timedelta(hours=self.target.backup_interval_hours or 24) + BACKUP_GRACE
        hours = age.total_seconds() / 3600
        if age > allowed:
            raise CheckError(f"the last backup finished {hours:.1f} h ago (at {finished.isoformat()}); "
                              f"at most {allowed.total_seconds() / 3600:.0f} h expected")
        return f"the last backup finished {hours:.1f} h ago"

    # --- helpers
    def _api(self) -> Api:
        if self.api is None:
            raise CheckError("no verified TLS connection")
        return self.api

    def _context_for(self, url: str) -> ssl.SSLContext:
        """Another name of the same forge: the same trust as Gitea's (pinned or not)."""
        if self.pinned_pem is None:
            return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        host = urllib.parse.urlsplit(url)
        pem = self.workdir / f"pinned-{host.hostname}.pem"
        if not pem.exists():
            pem.write_text(ssl.DER_cert_to_PEM_cert(presented_certificate(host.hostname or "", host.port or 443)))
        return pinned_context(pem)

    def _git_https_env(self) -> dict[str, str]:
        # The token goes in a header through git's environment config: never in a URL, an argument or .git/config.
        env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
               "GIT_CONFIG_VALUE_0": f"Authorization: token {self._api().token}"}
        trust = self.ca_file or self.pinned_pem
        if trust is not None:
            env["GIT_SSL_CAINFO"] = str(trust)
        return env

    def _git(self, args: list[str], env: Mapping[str, str], what: str) -> str:
        run = subprocess.run(["git", *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS, check=False,
                             env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **env})
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no message"])[-1]
            raise CheckError(f"{what} failed: {self._redact(last)}")
        return run.stdout

    def _redact(self, text: str) -> str:
        for secret in (self.password, self.api.token if self.api else None):
            if secret:
                text = text.replace(secret, "***")
        return text

    # --- clean-up
    def clean_up(self) -> None:
        """Deletes the run's SSH key and token, whatever happened before; says what it could not delete."""
        if self.api is None:
            return
        user = self.target.admin_user
        if self.key_id is not None:
            try:
                self.api.call("DELETE", f"/api/v1/user/keys/{self.key_id}", expect=(204, 404))
            except CheckError as error:
                say(f"clean-up: could not delete SSH key {self.key_id}: {error} (delete it in the admin's settings)")
        if self.token_name is not None:
            try:
                self.api.call("DELETE", f"/api/v1/users/{user}/tokens/{self.token_name}", basic=(user, self.password),
                              expect=(204, 404))
            except CheckError as error:
                say(f"clean-up: could not delete token {self.token_name}: {error} (delete it in the admin's settings)")


CHECKS: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    # name, Run method, the checks it needs
    ("tls", "check_tls", ()),
    ("healthz", "check_healthz", ("tls",)),
    ("api-token", "check_api_token", ("healthz",)),
    ("canary-repo", "check_canary_repo", ("api-token",)),
    ("git-https", "check_git_https", ("canary-repo",)),
    ("git-ssh", "check_git_ssh", ("git-https",)),
    ("runner", "check_runner", ("api-token",)),
    ("grafana", "check_grafana", ("tls",)),
    ("sso", "check_sso", ("api-token",)),
    ("backup", "check_backup", ()),
)

SKIP_REASONS: Final = {
    "runner": "ci is not actions: no Gitea runner to check",
    "grafana": "no public Grafana (monitoring off, or private: reach it with the port forward the README describes)",
    "sso": "no single sign-on clients (ssoOrganization empty)",
    "backup": "no backup bucket (the local stack has no backup timer)",
}


SKIPPABLE: Final = ("git-ssh", "runner", "grafana", "sso", "backup")  # no other check needs these


def run_checks(run: Run, skip: tuple[str, ...] = ()) -> list[Result]:
    passed: set[str] = set()
    for name, method, needs in CHECKS:
        blocking = [need for need in needs if need not in passed]
        if name in skip:
            result = Result(name, "skip", "skipped by --skip")
        elif blocking:
            result = Result(name, "blocked", f"needs {', '.join(blocking)}")
        else:
            say(f"{name}: checking")
            try:
                detail = getattr(run, method)()
            except CheckError as error:
                result = Result(name, "fail", run._redact(str(error)))
            except (OSError, subprocess.SubprocessError) as error:
                result = Result(name, "fail", run._redact(f"{type(error).__name__}: {error}"))
            else:
                result = Result(name, "skip", SKIP_REASONS[name]) if detail is None else Result(name, "pass", detail)
                passed.add(name)
        say(f"[{result.status.upper()}] {result.name}: {result.detail}")
        run.results.append(result)
    return run.results


def summary_markdown(stack: str, results: list[Result]) -> str:
    icons = {"pass": "✅", "fail": "❌", "blocked": "⛔", "skip": "⚪"}
    lines = [f"### Smoke test of `{stack}`", "", "| check | result | detail |", "| --- | --- | --- |"]
    lines += [f"| {r.name} | {icons[r.status]} {r.status} | {r.detail.replace('|', '/')} |" for r in results]
    return "\n".join(lines) + "\n"


@contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="forgestack-smoke-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", help="read the outputs of this stack with `pulumi stack output --json`")
    source.add_argument("--outputs", type=Path, help="a file holding `pulumi stack output --json` (no Pulumi CLI needed)")
    parser.add_argument("--admin-password-file", type=Path,
                        help="the Gitea admin password (default: giteaAdminPassword from the stack's credentials secret)")
    parser.add_argument("--ca-file", type=Path, help="trust this CA bundle instead of the system's (a private CA)")
    parser.add_argument("--min-cert-days", type=int, default=14,
                        help="fail when the certificate expires sooner (default 14; renewals happen 30 days ahead)")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for /api/healthz to pass (default 120)")
    parser.add_argument("--skip", action="append", default=[], choices=SKIPPABLE,
                        help="leave this check out (repeatable), e.g. backup on a stack younger than its first backup")
    parser.add_argument("--summary", type=Path, help="append a Markdown table of the results here ($GITHUB_STEP_SUMMARY)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = args.stack or args.outputs.name
    try:
        target = target_from_outputs(read_outputs(args.stack, args.outputs))
        password = read_admin_password(args.admin_password_file, target)
    except SmokeUsageError as error:
        say(str(error))
        return EXIT_USAGE
    say(f"checking {target.gitea_url} as {target.admin_user}")
    with workdir() as directory:
        run = Run(target, password, directory, args.ca_file, args.min_cert_days, args.wait)
        try:
            results = run_checks(run, tuple(args.skip))
        finally:
            run.clean_up()
    if args.summary is not None:
        with args.summary.open("a") as summary:
            summary.write(summary_markdown(name, results))
    failed = [result.name for result in results if result.status in ("fail", "blocked")]
    say(f"{len(results) - len(failed)} of {len(results)} checks passed or skipped" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
