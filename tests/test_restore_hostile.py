"""Backups turned against the forge: planted manifests and archives, a full disk, files that change under tar.

Whoever can write to the bucket (the host's role can) can rewrite a manifest or an archive and its checksum,
and repoint `latest`. Every case here runs the real restore.py (a subprocess against moto's S3 server, GNU tar,
zstd, a real PostgreSQL) on such a planted backup and checks that it is refused with one clear line while the
database, the live directories and everything beside them stay exactly as they were.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from components.host_tools import backup as backup_script
from components.host_tools import restore as restore_script
from rehearsal.engine import REPO
from tests.backup_support import (
    SNAPSHOT_SQL,
    backup,
    damage_the_database,
    one_error_line,
    run_script,
    s3_of,
    tree_digest,
)
from tests.servers import PASSWORD, PostgresServer, postgres_tool
from tests.shims import install_shim

BACKUP_ID_FORM = "20261124T030000Z"


@pytest.fixture
def world(tmp_path: Path, data_dir: Path) -> Path:
    """Something beside the restore target that a hostile manifest would like to replace."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("must survive")
    return tmp_path


def manifest_key(backup_id: str) -> str:
    return f"forgestack/{backup_id}/manifest.json"


def get_manifest(env: dict[str, str], bucket: str, backup_id: str) -> dict[str, Any]:
    return json.loads(s3_of(env).get_object(Bucket=bucket, Key=manifest_key(backup_id))["Body"].read())


def put_manifest(env: dict[str, str], bucket: str, backup_id: str, manifest: Any) -> None:
    s3_of(env).put_object(Bucket=bucket, Key=manifest_key(backup_id), Body=json.dumps(manifest).encode())


def restore(env: dict[str, str], bucket: str, postgres: PostgresServer, target: Path, *extra: str,
            preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(REPO / "components" / "host_tools" / "restore.py"), "--bucket", bucket, "--postgres-url", postgres.url,
            "--path-target", str(target), *extra]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=300, preexec_fn=preexec_fn)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def files_part(manifest: dict[str, Any]) -> dict[str, Any]:
    return next(part for part in manifest["parts"] if part["kind"] == "directory")


def set_field(field: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    def plant(manifest: dict[str, Any], world: Path) -> None:
        files_part(manifest)[field] = value(world) if callable(value) else value
    return plant


def drop_field(field: str) -> Callable[[dict[str, Any], Path], None]:
    def plant(manifest: dict[str, Any], world: Path) -> None:
        del files_part(manifest)[field]
    return plant


def whole(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any], Path], None]:
    def plant(manifest: dict[str, Any], world: Path) -> None:
        change(manifest)
    return plant


def duplicate_target(manifest: dict[str, Any], world: Path) -> None:
    copy = {**files_part(manifest), "name": "files-copy.tar.zst"}
    copy["key"] = copy["key"].replace("files-gitea.tar.zst", "files-copy.tar.zst")
    manifest["parts"].append(copy)


PLANTED_MANIFESTS = {
    "absolute restore_as": (set_field("restore_as", lambda world: str(world / "victim")), "restores as"),
    "restore_as climbing out": (set_field("restore_as", "../victim"), "restores as"),
    "nested restore_as": (set_field("restore_as", "gitea/../../victim"), "restores as"),
    "restore_as into a subdirectory": (set_field("restore_as", "git/hooks"), "restores as"),
    "empty restore_as": (set_field("restore_as", ""), "restores as"),
    "restore_as .": (set_field("restore_as", "."), "restores as"),
    "hidden restore_as": (set_field("restore_as", ".ssh"), "restores as"),
    "restore_as with a newline": (set_field("restore_as", "gitea\n"), "restores as"),
    "missing restore_as": (drop_field("restore_as"), "restores as"),
    "part name climbing out": (set_field("name", "../../victim/keep.txt"), "expected one plain file name"),
    "key outside the backup's prefix": (set_field("key", "elsewhere/secrets.tar.zst"), "under the backup's own prefix"),
    "unknown kind": (set_field("kind", "shell"), "expected one of postgres, directory"),
    "size as a string": (set_field("size", "1024"), "expected a byte count"),
    "negative size": (set_field("size", -1), "expected a byte count"),
    "missing sha256": (drop_field("sha256"), "expected 64 hex digits"),
    "parts not a list": (whole(lambda manifest: manifest.update(parts={"a": 1})), "lists no parts"),
    "no parts key": (whole(lambda manifest: manifest.pop("parts")), "lists no parts"),
    "a part that is a string": (whole(lambda manifest: manifest["parts"].append("x")), "is not an object"),
    "another backup's id": (whole(lambda manifest: manifest.update(backup_id="19990101T000000Z")), "must name its own backup"),
    "two parts restoring as one": (duplicate_target, "two parts restore as gitea"),
}


@pytest.mark.parametrize("case", PLANTED_MANIFESTS)
def test_a_planted_manifest_is_refused_and_nothing_changes(aws_env: dict[str, str], bucket: str, backup_id: str,
                                                            seeded: PostgresServer, data_dir: Path, world: Path, case: str) -> None:
    plant, expected = PLANTED_MANIFESTS[case]
    manifest = get_manifest(aws_env, bucket, backup_id)
    plant(manifest, world)
    put_manifest(aws_env, bucket, backup_id, manifest)
    damage_the_database(seeded)
    rows_now, files_now = seeded.psql(SNAPSHOT_SQL), tree_digest(world)

    result = restore(aws_env, bucket, seeded, data_dir.parent)

    assert result.returncode == restore_script.EXIT_UNVERIFIED, result.stderr
    line = one_error_line(result)
    assert line.startswith(f"restore: refused, nothing was touched: manifest of {backup_id}"), line
    assert expected in line, line
    assert seeded.psql(SNAPSHOT_SQL) == rows_now
    assert tree_digest(world) == files_now  # the target, the victim beside it, and no staging left anywhere


@pytest.mark.parametrize("pointed", ["../../victim", "20261124T030000Z/../../x", 20261124, None])
def test_a_planted_latest_pointer_is_refused(aws_env: dict[str, str], bucket: str, backup_id: str, seeded: PostgresServer,
                                            data_dir: Path, world: Path, pointed: Any) -> None:
    s3_of(aws_env).put_object(Bucket=bucket, Key="forgestack/latest", Body=json.dumps({"backup_id": pointed}).encode())
    files_now = tree_digest(world)
    result = restore(aws_env, bucket, seeded, data_dir.parent)
    assert result.returncode == restore_script.EXIT_UNVERIFIED, result.stderr
    assert "is not a backup id; expected the form 20261124T030000Z" in one_error_line(result)
    assert tree_digest(world) == files_now


def test_a_backup_id_argument_outside_the_format_is_bad_usage(aws_env: dict[str, str], bucket: str, seeded: PostgresServer,
                                                              data_dir: Path) -> None:
    result = restore(aws_env, bucket, seeded, data_dir.parent, "--backup-id", "../20261124T030000Z")
    assert result.returncode == restore_script.EXIT_USAGE
    assert result.stderr.strip() == ("restore: --backup-id '../20261124T030000Z': expected latest or an id such as "
                                     f"{BACKUP_ID_FORM}")


# ------------------------------------------------------------ planted archives


def tar_zst(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """An archive as tar | zstd would write it, but with whatever members an attacker likes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for info, content in members:
            archive.addfile(info, io.BytesIO(content) if content is not None else None)
    return subprocess.run(["zstd", "-q", "-c"], input=buffer.getvalue(), capture_output=True, check=True).stdout


def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, content: bytes | None = None,
           linkname: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid, info.gid = kind, mode, linkname, 1000, 1000
    if kind == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3  # /dev/null's numbers; any device would do
    if content is not None:
        info.size = len(content)
    return info, content


def plant_archive(env: dict[str, str], bucket: str, backup_id: str, archive: bytes) -> None:
    """Replace the backup's directory part and fix its size and checksum in the manifest, as an attacker would."""
    manifest = get_manifest(env, bucket, backup_id)
    part = files_part(manifest)
    s3_of(env).put_object(Bucket=bucket, Key=part["key"], Body=archive)
    part["size"], part["sha256"] = len(archive), hashlib.sha256(archive).hexdigest()
    put_manifest(env, bucket, backup_id, manifest)


BASE_MEMBERS = [member(".", tarfile.DIRTYPE, 0o755), member("./gitea", tarfile.DIRTYPE, 0o755),
                member("./gitea/app.ini", content=b"[server]\n")]

PLANTED_MEMBERS = {
    "a character device": (member("./git/null", tarfile.CHRTYPE, 0o666), "is a device file or fifo"),
    "a fifo": (member("./git/pipe", tarfile.FIFOTYPE), "is a device file or fifo"),
    "an absolute name": (member("/etc/cron.d/planted", content=b"* * * * * root id\n"), "points outside the directory"),
    "a name climbing out": (member("./../../victim/keep.txt", content=b"replaced"), "points outside the directory"),
    "a hard link out": (member("./passwd", tarfile.LNKTYPE, linkname="../../etc/passwd"), "is a hard link to"),
    "an absolute hard link": (member("./shadow", tarfile.LNKTYPE, linkname="/etc/shadow"), "is a hard link to"),
}


@pytest.mark.parametrize("case", PLANTED_MEMBERS)
def test_an_archive_with_a_planted_member_is_refused(aws_env: dict[str, str], bucket: str, backup_id: str, seeded: PostgresServer,
                                                    data_dir: Path, world: Path, case: str) -> None:
    planted, expected = PLANTED_MEMBERS[case]
    plant_archive(aws_env, bucket, backup_id, tar_zst([*BASE_MEMBERS, planted]))
    damage_the_database(seeded)
    rows_now, files_now = seeded.psql(SNAPSHOT_SQL), tree_digest(world)

    result = restore(aws_env, bucket, seeded, data_dir.parent)

    assert result.returncode == restore_script.EXIT_UNVERIFIED, result.stderr
    line = one_error_line(result)
    assert line.startswith("restore: refused, nothing was touched: part files-gitea.tar.zst holds"), line
    assert expected in line, line
    assert seeded.psql(SNAPSHOT_SQL) == rows_now
    assert tree_digest(world) == files_now


def test_setuid_and_setgid_bits_are_dropped(aws_env: dict[str, str], bucket: str, backup_id: str, seeded: PostgresServer,
                                           data_dir: Path) -> None:
    plant_archive(aws_env, bucket, backup_id, tar_zst([
        *BASE_MEMBERS,
        member("./gitea/root-shell", mode=0o4755, content=b"#!/bin/sh\nexec sh\n"),
        member("./gitea/group-tool", mode=0o2711, content=b"#!/bin/sh\n"),
        member("./gitea/script", mode=0o750, content=b"#!/bin/sh\n"),
    ]))
    result = restore(aws_env, bucket, seeded, data_dir.parent)
    assert result.returncode == 0, result.stderr
    modes = {name: stat.S_IMODE((data_dir / "gitea" / name).stat().st_mode) for name in ("root-shell", "group-tool", "script")}
    assert modes == {"root-shell": 0o755, "group-tool": 0o711, "script": 0o750}


def test_a_fifo_that_slips_past_the_inspection_fails_the_restore(tmp_path: Path) -> None:
    staging = tmp_path / ".gitea.restoring-x"
    (staging / "deep").mkdir(parents=True)
    os.mkfifo(staging / "deep" / "pipe")
    with pytest.raises(backup_script.BackupError, match="unpacked a device file or fifo: deep/pipe"):
        restore_script.make_harmless({"name": "files-gitea.tar.zst"}, staging)


def test_an_earlier_restores_kept_directory_is_never_overwritten(aws_env: dict[str, str], bucket: str, backup_id: str,
                                                                 seeded: PostgresServer, data_dir: Path, world: Path) -> None:
    kept = data_dir.parent / f"gitea.pre-restore-{backup_id}"
    kept.mkdir()
    (kept / "old.txt").write_text("from the first restore")
    files_now = tree_digest(world)
    result = restore(aws_env, bucket, seeded, data_dir.parent)
    assert result.returncode == restore_script.EXIT_UNVERIFIED
    assert f"{kept} exists from an earlier restore" in one_error_line(result)
    assert tree_digest(world) == files_now


# ------------------------------------------------------------ a full disk in the middle of the restore


def test_a_full_disk_during_extraction_leaves_database_and_files_as_they_were(
        aws_env: dict[str, str], bucket: str, seeded: PostgresServer, data_dir: Path, world: Path) -> None:
    # 48 MiB of zeros pack into a few KiB: downloading fits, unpacking does not.
    (data_dir / "lfs" / "zeros.bin").write_bytes(bytes(48 * 2**20))
    backup(aws_env, bucket, seeded, data_dir)
    damage_the_database(seeded)
    (data_dir / "lfs" / "zeros.bin").unlink()
    (data_dir / "gitea/conf/app.ini").write_text("changed after the backup")
    rows_now, files_now = seeded.psql(SNAPSHOT_SQL), tree_digest(world)

    def small_disk() -> None:  # what a full disk looks like to tar: no file may grow past 16 MiB
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 2**20, 16 * 2**20))

    result = restore(aws_env, bucket, seeded, data_dir.parent, preexec_fn=small_disk)

    assert result.returncode == restore_script.EXIT_FAILED, result.stderr
    line = one_error_line(result)
    assert line.startswith("restore: failed: extracting files-gitea.tar.zst failed"), line
    assert line.endswith("nothing was changed, the database and the live directories are as they were"), line
    assert seeded.psql(SNAPSHOT_SQL) == rows_now  # the database was never touched
    assert tree_digest(world) == files_now  # live files as they were, the staging directory removed


# ------------------------------------------------------------ free space, checked before anything starts


@pytest.fixture
def memory_backup(moto_account: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path]:
    s3 = boto3.client("s3", region_name=moto_account)
    s3.create_bucket(Bucket="forge", CreateBucketConfiguration={"LocationConstraint": moto_account})
    data = tmp_path / "live" / "gitea"
    data.mkdir(parents=True)
    (data / "repo.pack").write_bytes(os.urandom(2 * 2**20))
    (data / "zeros.bin").write_bytes(bytes(8 * 2**20))
    backup_script.run_backup(s3, "forge", "forgestack", None, [data])
    monkeypatch.setattr(backup_script, "s3_client", lambda: s3)
    return s3, data


@pytest.mark.parametrize(("full", "expected"), [
    ("work", "no room to download the backup"),
    ("target", "no room to unpack the directories"),
])
def test_no_room_is_refused_before_anything_is_touched(memory_backup: tuple[Any, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                       full: str, expected: str) -> None:
    _, data = memory_backup
    work = tmp_path / "work"
    work.mkdir()
    real_usage = shutil.disk_usage
    # The archive is about 2 MiB, its content about 10 MiB: a disk with 4 MiB free holds the one, not the other.
    crowded = work if full == "work" else data.parent

    def disk_usage(path: Any) -> Any:
        usage = real_usage(path)
        return usage._replace(free=4 * 2**20 if full == "target" else 2**20) if Path(path) == crowded else usage

    monkeypatch.setattr(restore_script.shutil, "disk_usage", disk_usage)
    files_now = tree_digest(tmp_path / "live")
    code = restore_script.main(["--bucket", "forge", "--path-target", str(data.parent), "--work-dir", str(work)])
    assert code == restore_script.EXIT_UNVERIFIED
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("restore: refused, nothing was touched:") and expected in line, line
    assert tree_digest(tmp_path / "live") == files_now
    assert list(work.iterdir()) == []


# ------------------------------------------------------------ backups that must not be published


def busy_directory(tmp_path: Path) -> Path:
    """A data directory holding only the file that changes, so that tar is inside it when the upload starts."""
    data = tmp_path / "busy"
    data.mkdir()
    return data


def an_hour_later() -> datetime:  # a backup id of its own, not the fixture's of the same second
    return datetime.now(UTC) + timedelta(hours=1)


def test_a_file_shrinking_during_the_backup_publishes_nothing(memory_backup: tuple[Any, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    s3, _ = memory_backup
    before = s3.list_objects_v2(Bucket="forge")["Contents"]
    data = busy_directory(tmp_path)
    growing = data / "big.bin"
    growing.write_bytes(os.urandom(64 * 2**20))
    monkeypatch.setattr(backup_script, "PART_SIZE", 2**20)  # upload starts while tar is early in the 64 MiB file

    def shrink_on_first_upload(**_: Any) -> None:
        if growing.stat().st_size > 16 * 2**20:
            os.truncate(growing, 16 * 2**20)  # Gitea rewrote the file: tar reads past its new end

    s3.meta.events.register("before-call.s3.UploadPart", shrink_on_first_upload)
    with pytest.raises(backup_script.BackupError, match=r"tar failed \(exit 1\): tar: ./big.bin: File shrank by \d+ bytes"):
        backup_script.run_backup(s3, "forge", "forgestack", None, [data], clock=an_hour_later)
    assert s3.list_objects_v2(Bucket="forge")["Contents"] == before  # not even the damaged part is left behind
    assert s3.list_multipart_uploads(Bucket="forge").get("Uploads", []) == []


def test_a_file_growing_during_the_backup_is_published_with_the_warning(memory_backup: tuple[Any, Path], tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    s3, _ = memory_backup
    data = busy_directory(tmp_path)
    log = data / "gitea.log"
    log.write_bytes(os.urandom(96 * 2**20))  # far more than the upload reads ahead (5 parts of 5 MiB + buffers)

    def append_on_first_upload(**_: Any) -> None:
        if log.stat().st_size == 96 * 2**20:
            with log.open("ab") as out:
                out.write(b"a new log line\n")  # tar archives the size it saw; the file is whole, only newer

    s3.meta.events.register("before-call.s3.UploadPart", append_on_first_upload)
    monkeypatch.setattr(backup_script, "PART_SIZE", 5 * 2**20)  # S3's smallest part that completes
    manifest = backup_script.run_backup(s3, "forge", "forgestack", None, [data], clock=an_hour_later)
    (part,) = manifest["parts"]
    assert part["warnings"] == ["tar: ./gitea.log: file changed as we read it"]
    pointer = json.loads(s3.get_object(Bucket="forge", Key="forgestack/latest")["Body"].read())
    assert pointer["backup_id"] == manifest["backup_id"]


@pytest.mark.parametrize("path", [".", "/", "gitea/..", ".hidden"])
def test_a_path_without_a_plain_name_is_refused(aws_env: dict[str, str], bucket: str, tmp_path: Path, path: str) -> None:
    (tmp_path / "gitea").mkdir()
    (tmp_path / ".hidden").mkdir()
    result = subprocess.run([sys.executable, str(REPO / "components/host_tools/backup.py"), "--bucket", bucket, "--path", path],
                            capture_output=True, text=True, env=aws_env, cwd=tmp_path, check=False, timeout=60)
    assert result.returncode == backup_script.EXIT_USAGE
    assert result.stderr.count("\n") == 1 and "expected a plain name such as gitea" in result.stderr, result.stderr
    assert "Contents" not in s3_of(aws_env).list_objects_v2(Bucket=bucket)


# ------------------------------------------------------------ database passwords in every connection-string form


@pytest.fixture
def recording_pg_dump(tmp_path: Path) -> dict[str, str]:
    """pg_dump on PATH that writes down its argv and whether it got PGPASSWORD, then runs the real one."""
    bin_dir = tmp_path / "bin"
    real = postgres_tool("pg_dump")
    install_shim(bin_dir, "pg_dump", f'#!/bin/sh\nprintf "%s\\n" "$@" >> {tmp_path}/argv\n'
                                     f'[ -n "$PGPASSWORD" ] && echo has-pgpassword >> {tmp_path}/argv\nexec {real} "$@"\n')
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize("form", ["uri", "uri query", "keywords"])
def test_no_connection_string_form_leaks_the_password(aws_env: dict[str, str], bucket: str, seeded: PostgresServer,
                                                      recording_pg_dump: dict[str, str], tmp_path: Path, form: str) -> None:
    port = seeded.port
    conninfo = {
        "uri": f"postgresql://gitea:{PASSWORD}@127.0.0.1:{port}/gitea",
        "uri query": f"postgresql://gitea@127.0.0.1:{port}/gitea?password={PASSWORD}&connect_timeout=5",
        "keywords": f"host=127.0.0.1 port={port} user=gitea dbname=gitea password='{PASSWORD}'",
    }[form]
    result = run_script("backup.py", ["--bucket", bucket, "--postgres-url", conninfo], {**aws_env, **recording_pg_dump})
    assert result.returncode == 0, result.stderr
    backup_id = result.stdout.strip().splitlines()[-1]
    stored = s3_of(aws_env).get_object(Bucket=bucket, Key=manifest_key(backup_id))["Body"].read().decode()
    recorded = (tmp_path / "argv").read_text()
    assert "has-pgpassword" in recorded  # it travelled in the environment
    for where in (stored, result.stderr, recorded):
        assert PASSWORD not in where
