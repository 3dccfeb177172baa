#!/usr/bin/env python3
"""Restore a forgestack backup made by backup.py: verify everything first, then restore.

    python scripts/restore.py --bucket B --postgres-container forgestack-postgres --path-target /srv/forgestack
    python scripts/restore.py --bucket B --backup-id 20261124T030000Z --postgres-url postgresql://gitea@127.0.0.1/gitea

Order of work, so that a bad backup never touches anything:
  1. read the manifest of the backup (`latest` by default);
  2. download every part into --work-dir and check its size and sha256 against the manifest,
     then check that the dump and the archives are readable (pg_restore --list, tar --list);
  3. only then restore the database, in one transaction (pg_restore --clean --single-transaction),
     and extract each directory next to the target and swap it in; the directory it replaces is
     kept as <name>.pre-restore-<backup-id>, never deleted.
Afterwards run `gitea admin regenerate hooks` in the Gitea container (see README, Restore).

Exit codes: 0 restored, 1 restore failed, 2 bad usage, 3 backup missing or failed verification
(nothing was touched).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import botocore.exceptions

# Run as a file (python scripts/restore.py), in the repository or under /usr/local/lib/forgestack on the host.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts import backup as common

EXIT_OK, EXIT_FAILED, EXIT_USAGE = common.EXIT_OK, common.EXIT_FAILED, common.EXIT_USAGE
EXIT_UNVERIFIED = 3
DOWNLOAD_CHUNK = 1024 * 1024


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


def read_manifest(s3: Any, bucket: str, prefix: str, backup_id: str) -> dict[str, Any]:
    if backup_id == "latest":
        pointer = get_json(s3, bucket, common.latest_key(prefix), "the latest pointer")
        backup_id = str(pointer.get("backup_id", ""))
        log(f"latest is {backup_id}")
    manifest = get_json(s3, bucket, common.backup_key(prefix, backup_id, common.MANIFEST_NAME), f"manifest of {backup_id}")
    if manifest.get("format_version") != common.FORMAT_VERSION:
        raise VerificationError(f"manifest of {backup_id} has format {manifest.get('format_version')!r}, "
                                f"expected {common.FORMAT_VERSION}")
    if not manifest.get("parts"):
        raise VerificationError(f"manifest of {backup_id} lists no parts")
    return manifest


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
    """A second line of defence after the checksum: the tools that restore must be able to read the part."""
    if part["kind"] == "postgres":
        if database and database.container:  # the container's pg_restore reads its own server's dump format
            argv = ["docker", "exec", "-i", database.container, "pg_restore", "--list"]
        else:
            argv = ["pg_restore", "--list", str(path)]
    else:
        argv = ["tar", "--list", f"--use-compress-program={common.ZSTD.split()[0]} -d", f"--file={path}"]
    with path.open("rb") as stdin:
        result = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise VerificationError(f"part {part['name']} is not readable: {reason[0]}")


def restore_database(database: common.Database, dump: Path) -> None:
    # One transaction: a failure rolls back to the database as it was.
    argv = database.command("pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction", "--exit-on-error")
    if not database.container:
        argv.append(str(dump))
    log(f"restoring the database ({database.describe()})")
    with dump.open("rb") as stdin:
        result = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=database.environment(), check=False)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise common.BackupError(f"pg_restore failed, the database was rolled back: {reason[0]}")


def restore_directory(part: dict[str, Any], archive: Path, target_root: Path, backup_id: str) -> Path:
    """Extract beside the target, then swap: the old directory is renamed, never deleted."""
    name = part["restore_as"]
    final = target_root / name
    staging = target_root / f".{name}.restoring-{backup_id}"
    if staging.exists():
        shutil.rmtree(staging)  # our own leftover from an interrupted restore, never the live data
    staging.mkdir(parents=True)
    log(f"extracting {part['name']} into {staging}")
    result = subprocess.run(
        ["tar", "--extract", "--numeric-owner", f"--use-compress-program={common.ZSTD.split()[0]} -d",
         f"--file={archive}", "--directory", str(staging)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
    )
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise common.BackupError(f"extracting {part['name']} failed (the live directory is untouched): {reason[0]}")
    if final.exists():
        kept = target_root / f"{name}.pre-restore-{backup_id}"
        final.rename(kept)
        log(f"kept the previous {final} as {kept}")
    staging.rename(final)
    return final


def run_restore(
    s3: Any, bucket: str, prefix: str, backup_id: str, database: common.Database | None, target_root: Path | None, work_dir: Path,
) -> str:
    manifest = read_manifest(s3, bucket, prefix, backup_id)
    backup_id = manifest["backup_id"]
    parts = manifest["parts"]
    wanted = [p for p in parts if (p["kind"] == "postgres" and database) or (p["kind"] == "directory" and target_root)]
    if database and not any(p["kind"] == "postgres" for p in parts):
        raise VerificationError(f"backup {backup_id} holds no database dump")
    if target_root and not any(p["kind"] == "directory" for p in parts):
        raise VerificationError(f"backup {backup_id} holds no directories")
    with tempfile.TemporaryDirectory(prefix=f"forgestack-restore-{backup_id}-", dir=work_dir) as scratch:
        downloaded = {p["name"]: download_and_verify(s3, bucket, p, Path(scratch)) for p in wanted}
        for part in wanted:
            check_readable(part, downloaded[part["name"]], database)
        log(f"backup {backup_id} verified: {len(wanted)} part(s); restoring")
        for part in wanted:
            if part["kind"] == "postgres" and database:
                restore_database(database, downloaded[part["name"]])
            elif target_root:
                restore_directory(part, downloaded[part["name"]], target_root, backup_id)
    return str(backup_id)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     epilog="Exit codes: 0 restored, 1 failed, 2 bad usage, 3 backup missing or unverified.")
    parser.add_argument("--bucket", required=True, help="backupBucketName stack output")
    parser.add_argument("--prefix", default=common.DEFAULT_PREFIX, help=f"key prefix in the bucket (default {common.DEFAULT_PREFIX})")
    parser.add_argument("--backup-id", default="latest", help="a backup id printed by backup.py, or latest (default)")
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--postgres-url", help="libpq URL of the database to restore into")
    database.add_argument("--postgres-container", help="run pg_restore inside this PostgreSQL container (docker exec)")
    parser.add_argument("--credentials-secret", help="credentialsSecretArn: read the database password from it when the URL has none")
    parser.add_argument("--path-target", type=Path, help="directory that receives each archived directory (e.g. /srv/forgestack)")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where parts are downloaded and verified (needs room for the whole backup)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.postgres_url or args.postgres_container or args.path_target):
        print("restore: nothing to restore into: give --postgres-url, --postgres-container and/or --path-target", file=sys.stderr)
        return EXIT_USAGE
    if args.path_target and not args.path_target.is_dir():
        print(f"restore: --path-target {args.path_target} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    if not args.work_dir.is_dir():
        print(f"restore: --work-dir {args.work_dir} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        database = common.database_from_args(args.postgres_url, args.postgres_container, args.credentials_secret)
        backup_id = run_restore(common.s3_client(), args.bucket, args.prefix, args.backup_id, database, args.path_target, args.work_dir)
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
