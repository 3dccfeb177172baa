"""The weekly restore drill (components/host_tools/drill.py) run as the host runs it: a real PostgreSQL backed up
and restored into an empty scratch database, real bare git repositories fsck'd after the restore, moto's S3 server,
and the result in node-exporter's textfile format. The scratch container's docker calls go to a shim that records them.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.backup_job import DRILL_CALENDAR, drill_service_unit, drill_timer_unit
from components.host_tools import drill
from tests.backup_support import backup, run_script, s3_of
from tests.servers import USER, PostgresServer
from tests.shims import install_shim

GITEA_SCHEMA = """
DROP TABLE IF EXISTS "user", repository;
CREATE TABLE "user" (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE repository (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO "user" (name) VALUES ('forge-admin'), ('alice');
INSERT INTO repository (name) SELECT 'repo-' || n FROM generate_series(1, 3) n;
"""


def git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, check=True, capture_output=True)


def gitea_data(root: Path, repositories: int = 3) -> Path:
    """A Gitea data directory with real bare repositories under git/repositories/<owner>/<name>.git."""
    data = root / "gitea"
    work = root / "work"
    git("init", "--quiet", "--initial-branch=main", str(work))
    (work / "README").write_text("hello\n")
    git("add", "README", cwd=work)
    git("commit", "--quiet", "-m", "first", cwd=work)
    for number in range(repositories):
        bare = data / "git" / "repositories" / "team" / f"repo-{number}.git"
        git("clone", "--quiet", "--bare", str(work), str(bare))
    return data


def scratch_database(postgres: PostgresServer) -> str:
    name = f"drill_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE DATABASE {name} OWNER {USER}", postgres.admin_url)
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def forge(postgres: PostgresServer, aws_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    postgres.psql(GITEA_SCHEMA)
    bucket = f"drill-{uuid.uuid4().hex[:8]}"
    s3_of(aws_env).create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    work_root = tmp_path / "srv"
    work_root.mkdir()
    yield {"bucket": bucket, "data": gitea_data(tmp_path), "work_root": work_root, "metrics": tmp_path / "drill.prom"}


def _drill(forge: dict[str, Any], postgres: PostgresServer, aws_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_script("drill.py", ["--bucket", forge["bucket"], "--scratch-postgres-url", scratch_database(postgres),
                                   "--work-root", str(forge["work_root"]), "--metrics-file", str(forge["metrics"])], aws_env)


def _metrics(path: Path) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in path.read_text().splitlines() if line and not line.startswith("#")}


def test_a_drill_restores_the_latest_backup_and_checks_it(forge: dict[str, Any], postgres: PostgresServer,
                                                          aws_env: dict[str, str]) -> None:
    backup_id = backup(aws_env, forge["bucket"], postgres, forge["data"])
    result = _drill(forge, postgres, aws_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == backup_id
    assert "git fsck 3/3" in result.stderr and "rows: user 2, repository 3" in result.stderr
    metrics = _metrics(forge["metrics"])
    assert metrics[drill.METRIC_RESULT] == "1" and metrics[drill.METRIC_REPOSITORIES] == "3"
    assert metrics['forgestack_restore_drill_rows{table="user"}'] == "2"
    assert float(metrics[drill.METRIC_LAST_SUCCESS]) > 0 and float(metrics[drill.METRIC_DURATION]) > 0
    assert list(forge["work_root"].iterdir()) == []  # the scratch directory is gone
    assert postgres.psql('SELECT count(*) FROM "user"') == "2"  # the live database was never the target


def test_a_broken_repository_fails_the_drill_and_keeps_the_last_success(forge: dict[str, Any], postgres: PostgresServer,
                                                                         aws_env: dict[str, str]) -> None:
    backup(aws_env, forge["bucket"], postgres, forge["data"])
    assert _drill(forge, postgres, aws_env).returncode == 0
    good = _metrics(forge["metrics"])[drill.METRIC_LAST_SUCCESS]
    # A repository whose branch points at an object that does not exist: archived faithfully, caught by fsck.
    broken = forge["data"] / "git" / "repositories" / "team" / "repo-1.git"
    (broken / "refs" / "heads" / "main").write_text("0" * 39 + "1\n")
    (broken / "packed-refs").unlink(missing_ok=True)
    backup(aws_env, forge["bucket"], postgres, forge["data"])
    result = run_script("drill.py", ["--bucket", forge["bucket"], "--scratch-postgres-url", scratch_database(postgres),
                                     "--work-root", str(forge["work_root"]), "--metrics-file", str(forge["metrics"]),
                                     "--sample", "3"], aws_env)
    assert result.returncode == 1
    assert "drill: failed: git fsck of repo-1.git failed" in result.stderr.splitlines()[-1]
    metrics = _metrics(forge["metrics"])
    assert metrics[drill.METRIC_RESULT] == "0" and metrics[drill.METRIC_LAST_SUCCESS] == good
    assert list(forge["work_root"].iterdir()) == []


def test_a_dump_without_users_fails_the_drill(forge: dict[str, Any], postgres: PostgresServer, aws_env: dict[str, str]) -> None:
    postgres.psql('DELETE FROM "user"')
    backup(aws_env, forge["bucket"], postgres, forge["data"])
    result = _drill(forge, postgres, aws_env)
    assert result.returncode == 1
    assert "has no user (Gitea always has its admin)" in result.stderr.splitlines()[-1]
    assert _metrics(forge["metrics"])[drill.METRIC_RESULT] == "0"


def test_no_backup_at_all_fails_the_drill_in_one_line(forge: dict[str, Any], postgres: PostgresServer,
                                                      aws_env: dict[str, str]) -> None:
    result = _drill(forge, postgres, aws_env)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("drill: failed: the backup did not verify")


DOCKER_SHIM = """#!/bin/sh
echo "$*" >> "$DOCKER_LOG"
case "$1" in
  inspect) echo "postgres:18.4-trixie" ;;
  run) echo 0123abcd ;;
  exec) exit 0 ;;
  rm) exit 0 ;;
esac
exit 0
"""


def test_the_scratch_postgres_runs_the_live_image_without_network_and_is_always_removed(tmp_path: Path,
                                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    shim = install_shim(tmp_path / "bin", "docker", DOCKER_SHIM)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_LOG", str(tmp_path / "docker.log"))
    image = drill.image_of("forgestack-postgres")
    with pytest.raises(RuntimeError, match="checks failed"), drill.scratch_container(image, tmp_path / "pg") as db:
        assert db.container == drill.SCRATCH_CONTAINER
        raise RuntimeError("checks failed")
    calls = (tmp_path / "docker.log").read_text().splitlines()
    run = next(call for call in calls if call.startswith("run "))
    assert "--network none" in run and run.endswith(" postgres:18.4-trixie")
    assert "--security-opt no-new-privileges --cap-drop ALL" in run and "--pids-limit 256" in run and "--memory 512m" in run
    assert "POSTGRES_HOST_AUTH_METHOD=trust" in run and f"{tmp_path / 'pg'}:/var/lib/postgresql" in run
    assert calls[-1] == f"rm --force --volumes {drill.SCRATCH_CONTAINER}"  # removed even though the checks failed


def test_with_a_named_image_the_drill_runs_it_without_asking_a_live_container(tmp_path: Path, aws_env: dict[str, str]) -> None:
    """The ops host (topology ha) has no PostgreSQL container to copy: --postgres-image names the image."""
    shim = install_shim(tmp_path / "bin", "docker", DOCKER_SHIM)
    env = {**aws_env, "PATH": f"{shim.parent}:{os.environ['PATH']}", "DOCKER_LOG": str(tmp_path / "docker.log")}
    work_root = tmp_path / "work"
    work_root.mkdir()
    result = run_script("drill.py", ["--bucket", "no-such-bucket", "--postgres-image", "postgres:18.4", "--work-root", str(work_root)],
                        env)
    assert result.returncode == 1  # no backup to restore in this bucket
    calls = (tmp_path / "docker.log").read_text().splitlines()
    assert not [call for call in calls if call.startswith("inspect")]
    assert next(call for call in calls if call.startswith("run ")).endswith(" postgres:18.4")
    assert calls[-1] == f"rm --force --volumes {drill.SCRATCH_CONTAINER}" and list(work_root.iterdir()) == []


def test_the_drill_runs_weekly_on_the_host_with_its_metrics_file() -> None:
    from components.backup_job import BackupJob

    job = BackupJob(bucket="b", region="eu-west-1", interval_hours=24, postgres_container="forgestack-postgres",
                    paths=("/srv/forgestack/gitea",))
    unit = drill_service_unit(job)
    assert "--postgres-container forgestack-postgres --work-root /srv/forgestack --metrics-file" in unit
    assert f"OnCalendar={DRILL_CALENDAR}" in drill_timer_unit() and "Persistent=true" in drill_timer_unit()
