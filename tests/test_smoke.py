"""scripts/smoke.py run as a process against a fake forge (tests/fake_forge.py): real TLS with a test CA, real git over
HTTPS (git http-backend) and SSH (Debian's sshd), Gitea's API answers, and moto's S3 for the backup pointer."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from components.host_tools.backup import DEFAULT_PREFIX, latest_key
from components.services.monitoring import PRIVATE_GRAFANA_URL
from scripts.smoke import CANARY_FILE, CANARY_REPO, CHECKS
from tests.backup_support import s3_of
from tests.fake_forge import ADMIN, PASSWORD, Forge, fake_forge, make_pki

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "scripts" / "smoke.py"


@pytest.fixture(scope="module")
def forge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forge]:
    with fake_forge(tmp_path_factory.mktemp("forge")) as running:
        yield running


@pytest.fixture(autouse=True)
def healthy(forge: Forge) -> None:
    """Each test starts from a healthy forge (one runner online, Grafana ok)."""
    forge.state.health = "pass"
    forge.state.runners = [{"id": 1, "name": "forge-runner", "status": "online"}]
    forge.state.grafana_database = "ok"
    forge.register_grafana()


def put_pointer(env: dict[str, str], bucket: str, finished: datetime) -> None:
    pointer = {"backup_id": "b1", "manifest": f"{DEFAULT_PREFIX}/b1/manifest.json", "finished_at": finished.isoformat()}
    s3_of(env).put_object(Bucket=bucket, Key=latest_key(DEFAULT_PREFIX), Body=json.dumps(pointer).encode())


def smoke(tmp_path: Path, env: dict[str, str] | None, outputs: dict[str, Any], *extra: str, password: str = PASSWORD,
          ca: Path | None = None) -> subprocess.CompletedProcess[str]:
    outputs_file, password_file = tmp_path / "outputs.json", tmp_path / "password"
    outputs_file.write_text(json.dumps(outputs))
    password_file.write_text(password + "\n")
    argv = [sys.executable, str(SMOKE), "--outputs", str(outputs_file), "--admin-password-file", str(password_file),
            "--wait", "0", *extra]
    if ca is not None:
        argv += ["--ca-file", str(ca)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


def lines(run: subprocess.CompletedProcess[str], status: str) -> dict[str, str]:
    """check name -> detail of the lines with this status."""
    found = {}
    for line in run.stderr.splitlines():
        prefix = f"smoke: [{status}] "
        if line.startswith(prefix):
            name, _, detail = line[len(prefix):].partition(": ")
            found[name] = detail
    return found


def canary_log(forge: Forge) -> list[str]:
    bare = forge.state.root / ADMIN / f"{CANARY_REPO}.git"
    return subprocess.run(["git", "--git-dir", str(bare), "log", "--format=%s", "main"], capture_output=True, text=True,
                          check=True).stdout.split("\n")


def test_a_healthy_forge_passes_every_check_and_keeps_no_token_or_key(forge: Forge, tmp_path: Path, aws_env: dict[str, str],
                                                                      bucket: str) -> None:
    put_pointer(aws_env, bucket, datetime.now(UTC) - timedelta(hours=2))
    outputs = forge.outputs(backupBucketName=bucket, backupIntervalHours=24)
    summary = tmp_path / "summary.md"

    first = smoke(tmp_path, aws_env, outputs, "--summary", str(summary), ca=forge.pki.ca)

    assert first.returncode == 0, first.stderr
    passed = lines(first, "PASS")
    assert list(passed) == ["tls", "healthz", "api-token", "canary-repo", "git-https", "git-ssh", "runner", "grafana", "sso",
                            "backup"]
    assert passed["sso"] == "1 client(s) registered in Gitea: grafana; Grafana sends the browser to Gitea with that client"
    assert "chains to the CA in ca.pem" in passed["tls"]
    assert passed["canary-repo"] == f"{ADMIN}/{CANARY_REPO} created (private)"
    assert "the commit pushed over HTTPS" in passed["git-ssh"]
    assert passed["runner"] == "1 of 1 runner(s) online: forge-runner"
    assert passed["backup"] == "the last backup finished 2.0 h ago"
    assert forge.state.tokens == {} and forge.state.keys == {}  # the run's token and SSH key are gone
    assert forge.state.authorized_keys.read_text() == ""
    assert "| git-ssh | ✅ pass |" in summary.read_text()
    # The run's commit is on the forge, with the run's id in the canary file.
    subject = canary_log(forge)[0]
    shown = subprocess.run(["git", "--git-dir", str(forge.state.root / ADMIN / f"{CANARY_REPO}.git"), "show", f"main:{CANARY_FILE}"],
                           capture_output=True, text=True, check=True).stdout
    assert re.fullmatch(r"smoke \d{8}T\d{6}Z-\d+", subject) and shown == subject.removeprefix("smoke ") + "\n"
    # The scopes asked for are the ones declared, and the secrets never show.
    assert PASSWORD not in first.stderr + first.stdout and "Traceback" not in first.stderr

    second = smoke(tmp_path, aws_env, outputs, ca=forge.pki.ca)
    assert second.returncode == 0, second.stderr
    assert lines(second, "PASS")["canary-repo"] == f"{ADMIN}/{CANARY_REPO} exists"
    log = canary_log(forge)
    assert len([subject for subject in log if subject.startswith("smoke ")]) >= 2 and "Initial commit" in log
    assert forge.state.tokens == {} and forge.state.keys == {}


def test_no_token_or_password_appears_even_when_git_fails(forge: Forge, tmp_path: Path) -> None:
    """A push refused mid-run: the failure line is git's, the token that was in git's environment is not in it, and the
    clean-up still deletes the token."""
    bare = forge.state.root / ADMIN / f"{CANARY_REPO}.git"
    if not bare.exists():
        forge.state.create_repo(ADMIN, CANARY_REPO)
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'refused by policy' >&2\nexit 1\n")
    hook.chmod(0o755)
    try:
        run = smoke(tmp_path, None, forge.outputs(), ca=forge.pki.ca)
    finally:
        hook.unlink()
    assert run.returncode == 1
    assert lines(run, "FAIL")["git-https"].startswith("push over HTTPS failed")
    assert lines(run, "BLOCKED")["git-ssh"] == "needs git-https"
    assert forge.state.tokens == {} and forge.state.keys == {}
    assert PASSWORD not in run.stderr and "Traceback" not in run.stderr


def test_a_stale_backup_fails_and_names_its_age(forge: Forge, tmp_path: Path, aws_env: dict[str, str], bucket: str) -> None:
    put_pointer(aws_env, bucket, datetime.now(UTC) - timedelta(hours=2, minutes=30))
    run = smoke(tmp_path, aws_env, forge.outputs(backupBucketName=bucket, backupIntervalHours=1), ca=forge.pki.ca)
    assert run.returncode == 1
    assert lines(run, "FAIL")["backup"].startswith("the last backup finished 2.5 h ago")
    assert "at most 2 h expected" in lines(run, "FAIL")["backup"]


def test_a_bucket_without_a_backup_fails_in_one_line(forge: Forge, tmp_path: Path, aws_env: dict[str, str], bucket: str) -> None:
    run = smoke(tmp_path, aws_env, forge.outputs(backupBucketName=bucket, backupIntervalHours=24), ca=forge.pki.ca)
    assert run.returncode == 1
    assert lines(run, "FAIL")["backup"] == f"cannot read s3://{bucket}/{latest_key(DEFAULT_PREFIX)}: NoSuchKey"


def test_an_offline_runner_fails(forge: Forge, tmp_path: Path) -> None:
    forge.state.runners = [{"id": 1, "name": "forge-runner", "status": "offline"}]
    run = smoke(tmp_path, None, forge.outputs(), ca=forge.pki.ca)
    assert run.returncode == 1
    assert lines(run, "FAIL") == {"runner": "no runner online (forge-runner: offline)"}


def test_what_the_stack_does_not_run_is_skipped_not_failed(forge: Forge, tmp_path: Path) -> None:
    forge.state.runners = []
    run = smoke(tmp_path, None, forge.outputs(ci="drone", grafanaUrl=PRIVATE_GRAFANA_URL), ca=forge.pki.ca)
    assert run.returncode == 0, run.stderr
    assert set(lines(run, "SKIP")) == {"runner", "grafana", "backup"}


def test_a_skipped_check_is_reported_and_does_not_fail_the_run(forge: Forge, tmp_path: Path, aws_env: dict[str, str],
                                                                bucket: str) -> None:
    """A review stack is smoke-tested before its first backup exists: --skip backup, said as such."""
    run = smoke(tmp_path, aws_env, forge.outputs(backupBucketName=bucket, backupIntervalHours=24), "--skip", "backup",
                ca=forge.pki.ca)
    assert run.returncode == 0, run.stderr
    assert lines(run, "SKIP") == {"backup": "skipped by --skip"}
    refused = smoke(tmp_path, None, forge.outputs(), "--skip", "tls", ca=forge.pki.ca)
    assert refused.returncode == 2 and "invalid choice: 'tls'" in refused.stderr


def test_single_sign_on_is_checked_in_gitea_and_at_grafanas_sign_in(forge: Forge, tmp_path: Path) -> None:
    private = smoke(tmp_path, None, forge.outputs(grafanaUrl=PRIVATE_GRAFANA_URL), ca=forge.pki.ca)
    assert lines(private, "PASS")["sso"] == "1 client(s) registered in Gitea: grafana"  # no redirect to follow by port forward

    forge.state.grafana_client_id = "a-client-gitea-does-not-know"
    stale = smoke(tmp_path, None, forge.outputs(), ca=forge.pki.ca)
    assert stale.returncode == 1
    assert lines(stale, "FAIL") == {"sso": "Grafana's sign-in names another client id or redirect URI than Gitea's application 'grafana'"}

    forge.register_grafana()
    forge.state.oauth_apps[1]["redirect_uris"] = ["https://old.example.com/login/generic_oauth"]
    moved = smoke(tmp_path, None, forge.outputs(), ca=forge.pki.ca)
    assert lines(moved, "FAIL")["sso"].startswith("OAuth2 application 'grafana' redirects to ['https://old.example.com/")

    forge.state.oauth_apps = []
    missing = smoke(tmp_path, None, forge.outputs(), ca=forge.pki.ca)
    assert lines(missing, "FAIL")["sso"].startswith("no OAuth2 application 'grafana' of forgeadmin in Gitea")

    off = smoke(tmp_path, None, forge.outputs(ssoClients=None), ca=forge.pki.ca)
    assert off.returncode == 0 and lines(off, "SKIP")["sso"] == "no single sign-on clients (ssoOrganization empty)"


def test_a_grafana_without_its_database_fails(forge: Forge, tmp_path: Path) -> None:
    forge.state.grafana_database = "failing"
    run = smoke(tmp_path, None, forge.outputs(), ca=forge.pki.ca)
    assert run.returncode == 1
    assert lines(run, "FAIL") == {"grafana": "Grafana's /api/health reports database 'failing', expected 'ok'"}


def test_a_wrong_password_fails_the_token_and_blocks_what_needs_it(forge: Forge, tmp_path: Path) -> None:
    run = smoke(tmp_path, None, forge.outputs(), password="not the password", ca=forge.pki.ca)
    assert run.returncode == 1
    assert lines(run, "FAIL")["api-token"] == "POST /api/v1/users/forgeadmin/tokens answered HTTP 401, expected 201"
    assert lines(run, "BLOCKED") == {"canary-repo": "needs api-token", "git-https": "needs canary-repo",
                                     "git-ssh": "needs git-https", "runner": "needs api-token", "sso": "needs api-token"}
    assert "not the password" not in run.stderr and "Traceback" not in run.stderr


def test_an_unhealthy_gitea_fails_after_the_wait(forge: Forge, tmp_path: Path) -> None:
    forge.state.health = "fail"
    run = smoke(tmp_path, None, forge.outputs(), ca=forge.pki.ca)
    assert run.returncode == 1
    assert lines(run, "FAIL")["healthz"] == "GET /api/healthz answered HTTP 503, expected 200"


@pytest.mark.parametrize("days, names, problem", [
    (5, ("localhost",), "expires in 5.0 days (at least 14 wanted"),
    (90, ("forge.example.com",), "does not verify: Hostname mismatch"),
])
def test_a_certificate_about_to_expire_or_for_another_name_fails(tmp_path: Path, days: int, names: tuple[str, ...],
                                                                  problem: str) -> None:
    # The smoke test asks for "localhost", which the second certificate does not name.
    pki = make_pki(tmp_path / "pki", names=names, days=days)
    with fake_forge(tmp_path / "forge", pki) as forge:
        run = smoke(tmp_path, None, forge.outputs(), ca=pki.ca)
    assert run.returncode == 1
    assert problem in lines(run, "FAIL")["tls"]
    assert set(lines(run, "BLOCKED")) == {"healthz", "api-token", "canary-repo", "git-https", "git-ssh", "runner", "grafana",
                                          "sso"}


def test_a_certificate_from_an_unknown_ca_fails_where_a_public_one_is_expected(forge: Forge, tmp_path: Path) -> None:
    run = smoke(tmp_path, None, forge.outputs(tlsPubliclyTrusted=True))  # the system's roots: the test CA is not one
    assert run.returncode == 1
    assert "does not verify: unable to get local issuer certificate" in lines(run, "FAIL")["tls"]


@pytest.mark.parametrize("self_signed", [True, False], ids=["self-signed (local)", "unknown CA (Let's Encrypt staging)"])
def test_a_stack_without_a_public_ca_pins_what_it_is_shown_and_still_works_end_to_end(tmp_path: Path, self_signed: bool) -> None:
    pki = make_pki(tmp_path / "pki", self_signed=self_signed)
    with fake_forge(tmp_path / "forge", pki) as forge:
        forge.register_grafana()
        run = smoke(tmp_path, None, forge.outputs(tlsPubliclyTrusted=False))
    assert run.returncode == 0, run.stderr
    passed = lines(run, "PASS")
    assert "pinned, chain not checked" in passed["tls"]
    assert {"git-https", "git-ssh", "grafana", "sso"} <= set(passed)


def test_a_pinned_certificate_about_to_expire_still_fails(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", self_signed=True, days=3)
    with fake_forge(tmp_path / "forge", pki) as forge:
        run = smoke(tmp_path, None, forge.outputs(tlsPubliclyTrusted=False))
    assert run.returncode == 1
    assert "expires in 3.0 days" in lines(run, "FAIL")["tls"]


def test_unreadable_inputs_exit_2_in_one_line(tmp_path: Path) -> None:
    missing = subprocess.run([sys.executable, str(SMOKE), "--outputs", str(tmp_path / "none.json"), "--admin-password-file",
                              str(tmp_path / "pw")], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "cannot read stack outputs" in missing.stderr
    (tmp_path / "outputs.json").write_text(json.dumps({"giteaUrl": "https://git.example.com/"}))
    partial = subprocess.run([sys.executable, str(SMOKE), "--outputs", str(tmp_path / "outputs.json")], capture_output=True,
                             text=True, check=False)
    assert partial.returncode == 2
    assert partial.stderr.strip() == ("smoke: the stack outputs lack gitSshUrl, giteaAdminUser: is this a forgestack stack "
                                      "that was deployed?")
    (tmp_path / "outputs.json").write_text(json.dumps({"giteaUrl": "https://git.example.com/", "gitSshUrl": "ssh://git@x/",
                                                       "giteaAdminUser": "admin"}))
    local = subprocess.run([sys.executable, str(SMOKE), "--outputs", str(tmp_path / "outputs.json")], capture_output=True,
                           text=True, check=False)
    assert local.returncode == 2 and "pass --admin-password-file" in local.stderr


def test_help_names_every_check_and_the_exit_codes() -> None:
    shown = subprocess.run([sys.executable, str(SMOKE), "--help"], capture_output=True, text=True, check=True).stdout
    assert all(f"\n  {name} " in shown for name, _, _ in CHECKS)
    assert "Exit codes: 0 every check passed or was skipped, 1 a check failed or was blocked, 2 bad usage" in " ".join(shown.split())
