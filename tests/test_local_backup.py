"""The local stack's backups: MinIO in the stack, and scripts/local_backup.py running the host's own backup.py and
restore.py against it. Here moto's S3 server stands in for MinIO (the same S3 API), a real PostgreSQL for the
database container, and a `docker` shim answers for the containers and the Gitea volume.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.services import backup_store
from rehearsal.engine import REPO, ProgramRun
from tests.backup_support import s3_of, tree_digest
from tests.servers import DATABASE, PASSWORD, USER, PostgresServer
from tests.shims import install_shim

DOCKER_SHIM = """#!/bin/sh
echo "$*" >> "$FAKE_DOCKER_LOG"
case "$1" in
  volume) echo "$FAKE_GITEA_VOLUME" ;;
  inspect)
    case "$3" in '{{.Config.Image}}') echo gitea/gitea:1.27.3 ;; '{{.State.Running}}') echo true ;; esac ;;
  pause|unpause|stop|start) ;;
  exec)
    shift
    [ "$1" = "-i" ] && shift
    [ "$1" = "--user" ] && shift 2
    container="$1"; shift
    case "$container" in
      forgestack-minio) echo "minio-s3cret-password" ;;
      forgestack-postgres)  # the container's local socket, played by the test server
        POSTGRES_USER="$FAKE_PG_USER" POSTGRES_DB="$FAKE_PG_DB" PGHOST=127.0.0.1 PGPORT="$FAKE_PG_PORT" \\
        PGPASSWORD="$FAKE_PG_PASSWORD" exec "$@" ;;
      forgestack-gitea) ;;  # gitea admin regenerate hooks
    esac ;;
  *) echo "docker shim: unexpected $*" >&2; exit 1 ;;
esac
exit 0
"""


@dataclass
class LocalStack:
    env: dict[str, str]
    volume: Path
    log: Path
    endpoint: str


@pytest.fixture
def local_stack(postgres: PostgresServer, aws_env: dict[str, str], tmp_path: Path) -> LocalStack:
    postgres.psql("DROP TABLE IF EXISTS notes; CREATE TABLE notes (id serial PRIMARY KEY, body text);"
                  "INSERT INTO notes (body) SELECT 'note ' || n FROM generate_series(1, 50) n;")
    volume = tmp_path / "volumes" / "forgestack-gitea" / "_data"
    (volume / "git" / "repositories" / "team").mkdir(parents=True)
    (volume / "git" / "repositories" / "team" / "HEAD").write_text("ref: refs/heads/main\n")
    (volume / "gitea" / "conf").mkdir(parents=True)
    (volume / "gitea" / "conf" / "app.ini").write_text("[server]\nROOT_URL = https://git.forge.localhost/\n")
    shim = install_shim(tmp_path / "bin", "docker", DOCKER_SHIM)
    env = {**aws_env, "PATH": f"{shim.parent}:{os.environ['PATH']}", "FAKE_DOCKER_LOG": str(tmp_path / "docker.log"),
           "FAKE_GITEA_VOLUME": str(volume), "FAKE_PG_USER": USER, "FAKE_PG_DB": DATABASE, "FAKE_PG_PORT": str(postgres.port),
           "FAKE_PG_PASSWORD": PASSWORD}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        env.pop(key)  # the script must bring its own: MinIO's user and password
    return LocalStack(env, volume, tmp_path / "docker.log", aws_env["AWS_ENDPOINT_URL"])


def _run(local_stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "local_backup.py"), *args, "--endpoint", local_stack.endpoint],
                            capture_output=True, text=True, env=local_stack.env, check=False, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_the_local_stack_backs_up_to_minio_and_restores_from_it(local_stack: LocalStack, postgres: PostgresServer,
                                                                aws_env: dict[str, str]) -> None:
    volume = local_stack.volume
    before = tree_digest(volume)
    backed_up = _run(local_stack, "backup")
    assert backed_up.returncode == 0, backed_up.stderr
    assert "creating bucket forgestack-backups (versioned)" in backed_up.stderr
    assert "minio-s3cret-password" not in backed_up.stderr + backed_up.stdout
    s3 = s3_of(aws_env)
    assert s3.get_bucket_versioning(Bucket=backup_store.BUCKET)["Status"] == "Enabled"
    # Damage both, then restore.
    postgres.psql("DELETE FROM notes WHERE id > 10")
    (volume / "gitea" / "conf" / "app.ini").write_text("broken")
    restored = _run(local_stack, "restore")
    assert restored.returncode == 0, restored.stderr
    assert postgres.psql("SELECT count(*) FROM notes") == "50"
    assert tree_digest(volume) == before
    calls = local_stack.log.read_text().splitlines()
    assert calls.index("stop forgestack-gitea") < calls.index("start forgestack-gitea")
    assert "exec --user git forgestack-gitea gitea admin regenerate hooks" in calls
    assert "pause forgestack-gitea" in calls  # the backup held one moment, as on AWS


def test_an_unreachable_volume_is_one_line(local_stack: LocalStack) -> None:
    local_stack.env["FAKE_GITEA_VOLUME"] = f"/nonexistent/{uuid.uuid4().hex}"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "local_backup.py"), "backup", "--endpoint", local_stack.endpoint],
                            capture_output=True, text=True, env=local_stack.env, check=False, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("local-backup: Gitea's volume is at /nonexistent/")


def test_minio_runs_only_on_the_local_stack_on_loopback_with_its_password_as_a_file(local_run: ProgramRun,
                                                                                     dev_run: ProgramRun) -> None:
    containers = {c.inputs["name"]: c for c in local_run.of_type("docker:index/container:Container")}
    minio = containers["forgestack-minio"]
    assert [(p["internal"], p["external"], p["ip"]) for p in minio.inputs["ports"]] == [(9000, 9000, "127.0.0.1")]
    assert f"MINIO_ROOT_PASSWORD_FILE={backup_store.PASSWORD_FILE}" in minio.inputs["envs"]
    assert backup_store.PASSWORD_FILE in {upload["file"] for upload in minio.inputs["uploads"]}
    assert not [c for c in dev_run.of_type("docker:index/container:Container") if c.inputs["name"] == "forgestack-minio"]
