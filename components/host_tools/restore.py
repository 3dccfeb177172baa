#!/usr/bin/env python3
"""Restore a forgestack backup made by backup.py: verify everything first, then restore.

    python components/host_tools/restore.py --bucket B --postgres-container forgestack-postgres --path-target /srv/forgestack
    python components/host_tools/restore.py --bucket B --backup-id 20261124T030000Z --postgres-url postgresql://gitea@127.0.0.1/gitea
    python components/host_tools/restore.py --bucket B --postgres-url 'postgresql://gitea@<rds>/gitea?sslmode=require' \
        --postgres-image postgres:18.1-bookworm --credentials-secret <credentialsSecretArn>

Order of work, so that a bad or hostile backup never touches anything:
  1. read the manifest of the backup (`latest` by default) and check its shape: the backup id's format,
     known part kinds, part keys under the backup's own prefix, each directory restored under one plain
     name (never absolute, never `..`, never nested);
  2. check there is room in --work-dir, download every part there and check its size and sha256
     against the manifest, then check that the dump is readable (pg_restore --list) and read every
     archive member by member: device files, fifos, absolute or `..` names are refused, and the
     unpacked size must fit in the target's free space;
  3. extract every directory into a staging directory beside its target (set-uid and set-gid bits are
     dropped), and only when all of them succeeded restore the database in one transaction
     (pg_restore --clean --single-transaction); any failure so far removes the staging directories and
     leaves database and files as they were;
  4. swap each staging directory in; the directory it replaces is kept as <name>.pre-restore-<backup-id>,
     never deleted.
Afterwards run `gitea admin regenerate hooks` in the Gitea container (see README, Restore).

Exit codes: 0 restored, 1 restore failed (database and files as they were), 2 bad usage,
3 refused before anything was touched (backup missing, malformed or failing verification, no room).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import botocore.exceptions

if __package__:  # imported (the tests, the program's constants)
    from . import backup as common
else:  # run as a file, beside backup.py: in the repository or under /usr/local/lib/forgestack/host_tools on the host
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import backup as common  # type: ignore[no-redef]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = common.EXIT_OK, common.EXIT_FAILED, common.EXIT_USAGE
EXIT_UNVERIFIED = 3
DOWNLOAD_CHUNK = 1024 * 1024
PART_KINDS = ("postgres", "directory")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
BLOCK = 4096  # what a file or directory costs on disk at least; the unpacked-size estimate rounds up to it


class VerificationError(Exception):
    """The backup cannot be trusted: nothing may be touched."""


def log(message: str) -> None:
    print(f"restore: {message}", file=sys.stderr, flush=True)


def get_json(s3: Any, bucket: str, key: str, what: str) -> dict[str, Any]:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise VerificationError(f"{what} s3://{bucket}/{key} does not exist") from error
        raise
    try:
        document = json.loads(body)
    except ValueError as error:
        raise VerificationError(f"{what} s3://{bucket}/{key} is not valid JSON") from error
    if not isinstance(document, dict):
        raise VerificationError(f"{what} s3://{bucket}/{key} is not a JSON object")
    return document


def check_backup_id(value: object, what: str) -> str:
    """A backup id is joined into S3 keys and local paths: only backup.py's own format is accepted."""
    if not isinstance(value, str) or not common.BACKUP_ID.fullmatch(value):
        raise VerificationError(f"{what} {value!r} is not a backup id; expected the form 20261124T030000Z")
    return value


def check_manifest(manifest: dict[str, Any], prefix: str, backup_id: str) -> list[dict[str, Any]]:
    """The manifest's parts, after checking every field the restore uses; VerificationError names the first bad one."""
    where = f"manifest of {backup_id}"
    if manifest.get("format_version") != common.FORMAT_VERSION:
        raise VerificationError(f"{where} has format {manifest.get('format_version')!r}, expected {common.FORMAT_VERSION}")
    if manifest.get("backup_id") != backup_id:
        raise VerificationError(f"{where} names backup {manifest.get('backup_id')!r}; a manifest must name its own backup")
    parts = manifest.get("parts")
    if not isinstance(parts, list) or not parts:
        raise VerificationError(f"{where} lists no parts (expected a non-empty list)")
    names: set[str] = set()
    targets: set[str] = set()
    for index, part in enumerate(parts):
        if not isinstance(part, dict):
            raise VerificationError(f"{where}: part {index} is not an object")
        name = part.get("name")
        if not isinstance(name, str) or not common.PLAIN_NAME.fullmatch(name):
            raise VerificationError(f"{where}: part {index} has name {name!r}; expected one plain file name")
        if name in names:
            raise VerificationError(f"{where}: part {name} is listed twice")
        names.add(name)
        if part.get("kind") not in PART_KINDS:
            raise VerificationError(f"{where}: part {name} has kind {part.get('kind')!r}; expected one of {', '.join(PART_KINDS)}")
        expected_key = common.backup_key(prefix, backup_id, name)
        if part.get("key") != expected_key:
            raise VerificationError(f"{where}: part {name} has key {part.get('key')!r}; expected {expected_key!r}, "
                                    "under the backup's own prefix")
        size = part.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise VerificationError(f"{where}: part {name} has size {size!r}; expected a byte count")
        if not isinstance(part.get("sha256"), str) or not SHA256_HEX.fullmatch(part["sha256"]):
            raise VerificationError(f"{where}: part {name} has sha256 {part.get('sha256')!r}; expected 64 hex digits")
        if part["kind"] == "directory":
            restore_as = part.get("restore_as")
            if not isinstance(restore_as, str) or not common.PLAIN_NAME.fullmatch(restore_as):
                raise VerificationError(f"{where}: part {name} restores as {restore_as!r}; expected one plain directory "
                                        "name below the target (not absolute, not .., not nested, not hidden)")
            if restore_as in targets:
                raise VerificationError(f"{where}: two parts restore as {restore_as}")
            targets.add(restore_as)
    return parts


def read_manifest(s3: Any, bucket: str, prefix: str, backup_id: str) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """(backup id, checked parts, the whole manifest) of the requested backup or of the one `latest` points to."""
    if backup_id == "latest":
        pointer = get_json(s3, bucket, common.latest_key(prefix), "the latest pointer")
        backup_id = check_backup_id(pointer.get("backup_id"), "the latest pointer names")
        log(f"latest is {backup_id}")
    manifest = get_json(s3, bucket, common.backup_key(prefix, backup_id, common.MANIFEST_NAME), f"manifest of {backup_id}")
    return backup_id, check_manifest(manifest, prefix, backup_id), manifest


def release_tuple(release: str) -> tuple[int, int, int]:
    major, minor, patch = (int(number) for number in release.split("."))
    return major, minor, patch


def check_gitea_release(manifest: dict[str, Any], running: str, backup_id: str) -> None:
    """Gitea migrates its database forward only: a database from a newer Gitea is not one the running Gitea can use.
    running is the running container's release ("" when its image tag names none)."""
    tools = manifest.get("tools")
    recorded = tools.get("gitea", "") if isinstance(tools, dict) else ""
    if not recorded:
        log(f"backup {backup_id} does not record its Gitea release (made before releases were recorded); not compared")
        return
    if not isinstance(recorded, str) or not common.RELEASE.fullmatch(recorded):
        raise VerificationError(f"manifest of {backup_id} records Gitea release {recorded!r}; expected the form 1.27.3")
    if not running:
        raise VerificationError(f"cannot tell the running Gitea's release (its image tag names none) to compare with the "
                                f"backup's {recorded}; restore without --gitea-container only if you know it is not older")
    if release_tuple(recorded) > release_tuple(running):
        raise VerificationError(f"backup {backup_id} comes from Gitea {recorded}, newer than the running {running}: its database "
                                f"may hold migrations {running} cannot read; set giteaVersion to {recorded} first, or pick an "
                                "older backup with --backup-id")
    log(f"backup {backup_id} comes from Gitea {recorded}; running {running}")


def require_room(directory: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise VerificationError(f"{what}: {directory} has {free / 2**20:,.1f} MiB free, "
                                f"{needed / 2**20:,.1f} MiB are needed")


def download_and_verify(s3: Any, bucket: str, part: dict[str, Any], directory: Path) -> Path:
    """Stream one part to disk, hashing as it arrives; raise VerificationError unless size and sha256 match."""
    target = directory / Path(part["name"]).name
    digest = hashlib.sha256()
    progress = common.Progress(f"download {part['name']}")
    try:
        body = s3.get_object(Bucket=bucket, Key=part["key"])["Body"]
        with target.open("wb") as out:
            for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                progress.advance(len(chunk))
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise VerificationError(f"part {part['name']} is missing from s3://{bucket}/{part['key']}") from error
        raise
    if progress.done != part["size"]:
        raise VerificationError(f"part {part['name']} has {progress.done} bytes, the manifest says {part['size']} (truncated?)")
    if digest.hexdigest() != part["sha256"]:
        raise VerificationError(f"part {part['name']} has sha256 {digest.hexdigest()[:16]}..., "
                                f"the manifest says {part['sha256'][:16]}... (corrupted)")
    log(f"{part['name']}: {progress.done / 2**20:,.1f} MiB, sha256 matches")
    return target


def check_readable(part: dict[str, Any], path: Path, database: common.Database | None) -> None:
    """A second line of defence after the checksum: the PostgreSQL that restores must be able to read the dump."""
    if database and database.container:  # the container's pg_restore reads its own server's dump format
        argv = ["docker", "exec", "-i", database.container, "pg_restore", "--list"]
    elif database and database.image:  # the image that will restore it, without any network
        argv = [*database.image_run("none"), "pg_restore", "--list"]
    else:
        argv = ["pg_restore", "--list", str(path)]
    with path.open("rb") as stdin:
        result = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise VerificationError(f"part {part['name']} is not readable: {reason[0]}")


def rounded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why this archive member must not be extracted, or None. The data directories hold only plain files,
    directories and links; anything else in an archive was planted."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        return f"{member.name!r} points outside the directory"
    if member.isdev() or member.isfifo():
        return f"{member.name!r} is a device file or fifo"
    if member.islnk():
        target = PurePosixPath(member.linkname)
        if target.is_absolute() or ".." in target.parts:
            return f"{member.name!r} is a hard link to {member.linkname!r}, outside the directory"
    elif not (member.isreg() or member.isdir() or member.issym()):
        return f"{member.name!r} has an unknown type {member.type!r}"
    return None


def inspect_archive(part: dict[str, Any], archive: Path) -> int:
    """Read the archive member by member (streamed through zstd); refuse planted members; return the unpacked size."""
    zstd = subprocess.Popen([common.ZSTD.split()[0], "-dc", str(archive)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert zstd.stdout is not None
    unpacked = 0
    try:
        with tarfile.open(fileobj=zstd.stdout, mode="r|") as members:
            for member in members:
                reason = unsafe_member(member)
                if reason:
                    raise VerificationError(f"part {part['name']} holds {reason}")
                unpacked += rounded(member.size) if member.isreg() else BLOCK
    except tarfile.TarError as error:
        raise VerificationError(f"part {part['name']} is not a readable archive: {error}") from error
    finally:
        zstd.stdout.close()
        zstd.kill()
        zstd.wait()
    return unpacked


def staging_path(target_root: Path, part: dict[str, Any], backup_id: str) -> Path:
    return target_root / f".{part['restore_as']}.restoring-{backup_id}"


def kept_path(target_root: Path, part: dict[str, Any], backup_id: str) -> Path:
    return target_root / f"{part['restore_as']}.pre-restore-{backup_id}"


def make_harmless(part: dict[str, Any], staging: Path) -> None:
    """After extraction: no device file may have slipped past the inspection, and no file keeps set-uid or set-gid."""
    for directory, subdirectories, files in os.walk(staging):
        for name in subdirectories + files:
            path = Path(directory, name)
            mode = path.lstat().st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                raise common.BackupError(f"part {part['name']} unpacked a device file or fifo: {path.relative_to(staging)}")
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                path.chmod(stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
                log(f"dropped set-uid/set-gid from {path.relative_to(staging)}")


def extract_directory(part: dict[str, Any], archive: Path, staging: Path) -> None:
    """Extract into a fresh staging directory beside the target; the live directory is not touched."""
    if staging.exists():
        shutil.rmtree(staging)  # our own leftover from an interrupted restore (a dot-name only we create)
    staging.mkdir()
    log(f"extracting {part['name']} into {staging}")
    result = subprocess.run(
        ["tar", "--extract", "--numeric-owner", f"--use-compress-program={common.ZSTD.split()[0]} -d",
         f"--file={archive}", "--directory", str(staging)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
    )
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[0] if lines else f"exit {result.returncode}"
        raise common.BackupError(f"extracting {part['name']} failed: {reason}")
    make_harmless(part, staging)


def restore_database(database: common.Database, dump: Path) -> None:
    # One transaction: a failure rolls back to the database as it was.
    argv = database.command("pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction", "--exit-on-error")
    if not database.tools_read_stdin:
        argv.append(str(dump))
    log(f"restoring the database ({database.describe()})")
    with dump.open("rb") as stdin:
        result = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=database.environment(), check=False)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise common.BackupError(f"pg_restore failed, the database was rolled back: {reason[0]}")


def swap_in(part: dict[str, Any], staging: Path, target_root: Path, backup_id: str) -> Path:
    """The old directory is renamed, never deleted."""
    final = target_root / part["restore_as"]
    if final.exists() or final.is_symlink():
        kept = kept_path(target_root, part, backup_id)
        final.rename(kept)
        log(f"kept the previous {final} as {kept}")
    staging.rename(final)
    return final


def run_restore(
    s3: Any, bucket: str, prefix: str, backup_id: str, database: common.Database | None, target_root: Path | None, work_dir: Path,
    gitea_container: str = "",
) -> str:
    backup_id, parts, manifest = read_manifest(s3, bucket, prefix, backup_id)
    if gitea_container:
        check_gitea_release(manifest, common.image_release(gitea_container), backup_id)
    wanted = [p for p in parts if (p["kind"] == "postgres" and database) or (p["kind"] == "directory" and target_root)]
    if database and not any(p["kind"] == "postgres" for p in parts):
        raise VerificationError(f"backup {backup_id} holds no database dump")
    if target_root and not any(p["kind"] == "directory" for p in parts):
        raise VerificationError(f"backup {backup_id} holds no directories")
    directories = [p for p in wanted if p["kind"] == "directory"]
    dump = next((p for p in wanted if p["kind"] == "postgres"), None)
    if target_root:
        for part in directories:
            if kept_path(target_root, part, backup_id).exists():
                raise VerificationError(f"{kept_path(target_root, part, backup_id)} exists from an earlier restore of "
                                        f"{backup_id}; move it away first (it is never overwritten)")
    require_room(work_dir, sum(p["size"] for p in wanted), "no room to download the backup")
    with tempfile.TemporaryDirectory(prefix=f"forgestack-restore-{backup_id}-", dir=work_dir) as scratch:
        downloaded = {p["name"]: download_and_verify(s3, bucket, p, Path(scratch)) for p in wanted}
        if dump:
            check_readable(dump, downloaded[dump["name"]], database)
        unpacked = sum(inspect_archive(p, downloaded[p["name"]]) for p in directories)
        if target_root and directories:
            require_room(target_root, unpacked, "no room to unpack the directories")
        log(f"backup {backup_id} verified: {len(wanted)} part(s); restoring")

        staged: list[tuple[dict[str, Any], Path]] = []
        try:
            for part in directories:
                assert target_root is not None
                staging = staging_path(target_root, part, backup_id)
                staged.append((part, staging))
                extract_directory(part, downloaded[part["name"]], staging)
            if dump and database:
                restore_database(database, downloaded[dump["name"]])
        except BaseException as error:
            for _, staging in staged:
                shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, (common.BackupError, OSError)):
                raise common.BackupError(f"{error}; nothing was changed, the database and the live directories "
                                         "are as they were") from error
            raise
    for part, staging in staged:
        assert target_root is not None
        swap_in(part, staging, target_root, backup_id)
    return backup_id


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     epilog="Exit codes: 0 restored, 1 failed (nothing changed), 2 bad usage, "
                                            "3 refused before anything was touched (missing, malformed, unverified, no room).")
    parser.add_argument("--bucket", required=True, help="backupBucketName stack output")
    parser.add_argument("--prefix", default=common.DEFAULT_PREFIX, help=f"key prefix in the bucket (default {common.DEFAULT_PREFIX})")
    parser.add_argument("--backup-id", default="latest", help="a backup id printed by backup.py, or latest (default)")
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--postgres-url", help="libpq URL of the database to restore into")
    database.add_argument("--postgres-container", help="run pg_restore inside this PostgreSQL container (docker exec)")
    parser.add_argument("--postgres-image", help=common.IMAGE_HELP)
    common.add_container_identity(parser, "pg_restore")
    parser.add_argument("--credentials-secret", help="credentialsSecretArn: read the database password from it when the URL has none")
    parser.add_argument("--path-target", type=Path, help="directory that receives each archived directory (e.g. /srv/forgestack)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where parts are downloaded and verified (needs room for the whole backup)")
    parser.add_argument("--gitea-container", default="",
                        help="refuse a backup made by a newer Gitea than this container's image (it may be stopped)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.postgres_image and not args.postgres_url:
        print("restore: --postgres-image runs the client tools against --postgres-url: give the URL too", file=sys.stderr)
        return EXIT_USAGE
    if (args.postgres_user or args.postgres_database) and not args.postgres_container:
        print("restore: --postgres-user and --postgres-database name the user and database inside --postgres-container",
              file=sys.stderr)
        return EXIT_USAGE
    if not (args.postgres_url or args.postgres_container or args.path_target):
        print("restore: nothing to restore into: give --postgres-url, --postgres-container and/or --path-target", file=sys.stderr)
        return EXIT_USAGE
    if args.path_target and not args.path_target.is_dir():
        print(f"restore: --path-target {args.path_target} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    if not args.work_dir.is_dir():
        print(f"restore: --work-dir {args.work_dir} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    if args.backup_id != "latest" and not common.BACKUP_ID.fullmatch(args.backup_id):
        print(f"restore: --backup-id {args.backup_id!r}: expected latest or an id such as 20261124T030000Z", file=sys.stderr)
        return EXIT_USAGE
    try:
        database = common.database_from_args(args.postgres_url, args.postgres_container, args.credentials_secret,
                                             args.postgres_image, args.postgres_user, args.postgres_database)
        backup_id = run_restore(common.s3_client(), args.bucket, args.prefix, args.backup_id, database, args.path_target, args.work_dir,
                                args.gitea_container)
    except VerificationError as error:
        print(f"restore: refused, nothing was touched: {error}", file=sys.stderr)
        return EXIT_UNVERIFIED
    except KeyboardInterrupt:
        print("restore: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except (common.BackupError, OSError, *common.AWS_ERRORS) as error:
        print(f"restore: failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    log(f"restored {backup_id}")
    print(backup_id)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
