"""One moment for database and files: with --gitea-container the backup pauses Gitea while it hard-links the data
directories and dumps the database, then uploads from that staged moment.

The stand-in for Gitea is a writer that commits row N to a real PostgreSQL and then writes file refs/N, over and
over; a `docker` shim on PATH pauses it the way the cgroup freezer would (between two of its requests). A backup is
consistent when the rows in its dump are exactly the files in its archive.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.host_tools import backup as backup_script
from components.host_tools import restore as restore_script
from tests.backup_support import s3_of
from tests.servers import PostgresServer
from tests.shims import install_shim

DOCKER_SHIM = """#!/bin/sh
# docker, as far as backup.py and restore.py use it for the Gitea container: inspect, pause, unpause.
state="$FAKE_GITEA_STATE"
echo "$*" >> "$state/docker.log"
case "$1" in
  inspect)
    case "$3" in
      '{{.Config.Image}}') cat "$state/image" ;;
      '{{.State.Running}}') echo true ;;
    esac ;;
  pause)
    touch "$state/pause.request"
    i=0; while [ ! -e "$state/pause.ack" ]; do sleep 0.01; i=$((i+1)); [ $i -gt 1000 ] && exit 1; done ;;
  unpause)
    rm -f "$state/pause.request" "$state/pause.ack" ;;
  *) echo "docker shim: unexpected $*" >&2; exit 1 ;;
esac
exit 0
"""


class Writer(threading.Thread):
    """Gitea's stand-in: row N in the database, then refs/N on disk, until stopped; it honours a pause request
    between two writes (acknowledged, as the freezer's pause returns only once frozen)."""

    def __init__(self, postgres: PostgresServer, data: Path, state: Path) -> None:
        super().__init__(daemon=True)
        self.postgres, self.data, self.state = postgres, data, state
        self.stop = threading.Event()
        self.written = 0

    def run(self) -> None:
        while not self.stop.is_set():
            if (self.state / "pause.request").exists():
                (self.state / "pause.ack").touch()
                time.sleep(0.005)
                continue
            self.written += 1
            self.postgres.psql(f"INSERT INTO commits (n) VALUES ({int(self.written)})")  # noqa: S608 (a counter)
            (self.data / "refs" / str(self.written)).write_text("x")


@pytest.fixture
def gitea_world(postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    postgres.psql("DROP TABLE IF EXISTS commits; CREATE TABLE commits (n integer PRIMARY KEY)")
    state, shims, data = tmp_path / "state", tmp_path / "bin", tmp_path / "srv" / "gitea"
    for directory in (state, data / "refs"):
        directory.mkdir(parents=True)
    (state / "image").write_text("gitea/gitea:1.27.3\n")
    install_shim(shims, "docker", DOCKER_SHIM)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GITEA_STATE", str(state))
    writer = Writer(postgres, data, state)
    writer.start()
    while writer.written < 20:  # the forge is busy before the backup starts
        time.sleep(0.01)
    yield {"data": data, "state": state, "writer": writer}
    writer.stop.set()
    writer.join(timeout=10)


def _moment(s3: Any, bucket: str, manifest: dict[str, Any], work: Path) -> tuple[set[int], set[int]]:
    """(rows in the backup's dump, files in the backup's archive)."""
    parts = {part["kind"]: part for part in manifest["parts"]}
    dump, archive = work / "dump", work / "files.tar.zst"
    dump.write_bytes(s3.get_object(Bucket=bucket, Key=parts["postgres"]["key"])["Body"].read())
    archive.write_bytes(s3.get_object(Bucket=bucket, Key=parts["directory"]["key"])["Body"].read())
    sql = subprocess.run(["pg_restore", "--data-only", "--table=commits", "--file=-", str(dump)], capture_output=True, text=True,
                         check=True).stdout
    copied = sql.split("FROM stdin;\n", 1)[1].split("\\.", 1)[0]
    rows = {int(line) for line in copied.split()}
    listing = subprocess.run(["tar", "--zstd", "--list", "--file", str(archive)], capture_output=True, text=True, check=True).stdout
    files = {int(match) for match in re.findall(r"^\./refs/(\d+)$", listing, re.MULTILINE)}
    return rows, files


def test_a_paused_backup_holds_the_same_moment_in_database_and_files(gitea_world: dict[str, Any], postgres: PostgresServer,
                                                                      aws_env: dict[str, str], tmp_path: Path) -> None:
    s3 = s3_of(aws_env)
    s3.create_bucket(Bucket="consistent", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    database = backup_script.database_from_args(postgres.url, None, None)
    manifest = backup_script.run_backup(s3, "consistent", "forgestack", database, [gitea_world["data"]],
                                        gitea_container="forgestack-gitea")
    rows, files = _moment(s3, "consistent", manifest, tmp_path)
    assert len(rows) >= 20 and rows == files
    assert manifest["consistency"]["method"] == "paused" and manifest["consistency"]["paused_seconds"] < 10
    assert manifest["tools"]["gitea"] == "1.27.3"
    log = (gitea_world["state"] / "docker.log").read_text().splitlines()
    assert [line.split()[0] for line in log if line.split()[0] in ("pause", "unpause")] == ["pause", "unpause"]
    assert not list(gitea_world["data"].parent.glob(".forgestack-backup-*"))  # the staging directory is gone
    assert gitea_world["writer"].written > max(rows)  # the forge went on writing after the pause


def test_without_the_pause_database_and_files_drift_apart(gitea_world: dict[str, Any], postgres: PostgresServer,
                                                          aws_env: dict[str, str], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the same busy forge, backed up without --gitea-container, gives an archive with files whose rows
    the dump does not have (the dump comes first, the archive later). So that a loaded machine cannot hide the drift,
    the backup waits after the dump until the forge has written a few more commits, as a busy forge would."""
    s3 = s3_of(aws_env)
    s3.create_bucket(Bucket="drifting", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    database = backup_script.database_from_args(postgres.url, None, None)
    writer = gitea_world["writer"]
    upload = backup_script.upload_stream

    def upload_then_let_the_forge_write(*args: Any, **kwargs: Any) -> tuple[int, str]:
        result = upload(*args, **kwargs)
        if args[4] == backup_script.DATABASE_PART:  # the label: the dump is complete
            seen, deadline = writer.written, time.monotonic() + 60
            while writer.written < seen + 3 and time.monotonic() < deadline:
                time.sleep(0.01)
        return result

    monkeypatch.setattr(backup_script, "upload_stream", upload_then_let_the_forge_write)
    manifest = backup_script.run_backup(s3, "drifting", "forgestack", database, [gitea_world["data"]])
    rows, files = _moment(s3, "drifting", manifest, tmp_path)
    assert files - rows, "the writer was too slow to show the drift"
    assert manifest["consistency"] == {"method": "none"}


def test_a_pause_that_would_run_too_long_is_ended_and_the_backup_abandoned(gitea_world: dict[str, Any], postgres: PostgresServer,
                                                                          aws_env: dict[str, str]) -> None:
    s3 = s3_of(aws_env)
    s3.create_bucket(Bucket="bounded", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    database = backup_script.database_from_args(postgres.url, None, None)
    with pytest.raises(backup_script.BackupError, match="would have stayed paused longer than 0 s; it was unpaused"):
        backup_script.run_backup(s3, "bounded", "forgestack", database, [gitea_world["data"]], gitea_container="forgestack-gitea",
                                 max_pause_seconds=0.001)
    assert not (gitea_world["state"] / "pause.request").exists()  # running again
    assert s3.list_objects_v2(Bucket="bounded").get("KeyCount", 0) == 0  # nothing published
    assert not list(gitea_world["data"].parent.glob(".forgestack-backup-*"))


@pytest.mark.parametrize(("backup_release", "running", "refused"), [
    ("1.27.3", "1.27.3", ""), ("1.27.3", "1.28.0", ""), ("1.28.0", "1.27.3", "comes from Gitea 1.28.0, newer than the running 1.27.3"),
    ("1.27.10", "1.27.9", "newer than the running 1.27.9"), ("1.27.3", "", "cannot tell the running Gitea's release"),
])
def test_restore_refuses_a_backup_from_a_newer_gitea(backup_release: str, running: str, refused: str) -> None:
    manifest = {"tools": {"gitea": backup_release}}
    if refused:
        with pytest.raises(restore_script.VerificationError, match=re.escape(refused)):
            restore_script.check_gitea_release(manifest, running, "20261130T030000Z")
    else:
        restore_script.check_gitea_release(manifest, running, "20261130T030000Z")


def test_the_restore_script_compares_with_the_stopped_containers_image(gitea_world: dict[str, Any], postgres: PostgresServer,
                                                                        aws_env: dict[str, str], tmp_path: Path) -> None:
    """End to end as the operator runs it: a backup from Gitea 1.27.3, the container's image rolled back to 1.26.5: exit 3
    with nothing touched."""
    s3 = s3_of(aws_env)
    s3.create_bucket(Bucket="versions", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    database = backup_script.database_from_args(postgres.url, None, None)
    backup_script.run_backup(s3, "versions", "forgestack", database, [gitea_world["data"]], gitea_container="forgestack-gitea")
    (gitea_world["state"] / "image").write_text("gitea/gitea:1.26.5\n")
    target = tmp_path / "target"
    target.mkdir()
    env = {**aws_env, "PATH": os.environ["PATH"], "FAKE_GITEA_STATE": str(gitea_world["state"])}
    result = subprocess.run(["python3", str(Path(restore_script.__file__)), "--bucket", "versions", "--path-target", str(target),
                             "--work-dir", str(tmp_path), "--gitea-container", "forgestack-gitea"],
                            capture_output=True, text=True, env=env, check=False, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "comes from Gitea 1.27.3, newer than the running 1.26.5" in result.stderr.splitlines()[-1]
    assert list(target.iterdir()) == []
