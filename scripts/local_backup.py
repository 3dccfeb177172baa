#!/usr/bin/env python3
"""Back up and restore the local stack with the host's own scripts, against its MinIO instead of S3.

    python scripts/local_backup.py backup                        # database + Gitea's data, one moment, to MinIO
    python scripts/local_backup.py restore                       # the latest backup (stops and starts Gitea)
    python scripts/local_backup.py restore --backup-id 20261130T101500Z

The same components/host_tools/backup.py and restore.py the AWS host runs, pointed at the local stack's MinIO
(127.0.0.1:9000, bucket forgestack-backups, made on first use with versioning) with its generated password, read
from the MinIO container's secret file and handed over in the environment (never on a command line). Gitea's data is
the Docker volume forgestack-gitea: this machine must be able to read the volume's directory (Linux: run with sudo;
Docker Desktop keeps volumes inside its VM, where this cannot reach them).
Exit codes: those of backup.py and restore.py (0 ok, 1 failed with nothing changed, 2 usage, 3 restore refused).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
import botocore.exceptions

from components.constants import CONTAINER_PREFIX
from components.services import backup_store, gitea, postgres

REPO = Path(__file__).resolve().parent.parent
HOST_TOOLS = REPO / "components" / "host_tools"
DEFAULT_ENDPOINT = f"http://127.0.0.1:{backup_store.PORT}"
GITEA_VOLUME = f"{CONTAINER_PREFIX}{gitea.NAME}"  # the named volume of Gitea's /data on the local stack
GITEA = f"{CONTAINER_PREFIX}{gitea.NAME}"
POSTGRES = f"{CONTAINER_PREFIX}{postgres.NAME}"
MINIO = f"{CONTAINER_PREFIX}{backup_store.NAME}"


class LocalBackupError(Exception):
    """A prerequisite is missing; the message fits one line."""


def docker_text(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise LocalBackupError(f"docker {' '.join(args[:2])} failed: {reason} (is the local stack up? pulumi up --stack local)")
    return result.stdout.strip()


def store_environment(endpoint: str) -> dict[str, str]:
    """The standard AWS variables for MinIO; the password goes into this environment only."""
    password = docker_text("exec", MINIO, "cat", backup_store.PASSWORD_FILE)
    return {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": backup_store.ROOT_USER,
            "AWS_SECRET_ACCESS_KEY": password, "AWS_DEFAULT_REGION": backup_store.REGION, "AWS_REGION": backup_store.REGION}


def ensure_bucket(env: dict[str, str]) -> None:
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    try:
        s3.head_bucket(Bucket=backup_store.BUCKET)
        return
    except botocore.exceptions.ClientError as error:
        if error.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
            raise
    print(f"local-backup: creating bucket {backup_store.BUCKET} (versioned)", file=sys.stderr)
    s3.create_bucket(Bucket=backup_store.BUCKET)
    s3.put_bucket_versioning(Bucket=backup_store.BUCKET, VersioningConfiguration={"Status": "Enabled"})


def gitea_volume_dir() -> Path:
    mountpoint = Path(docker_text("volume", "inspect", "--format", "{{.Mountpoint}}", GITEA_VOLUME))
    if not (mountpoint.is_dir() and os.access(mountpoint, os.R_OK | os.X_OK)):
        raise LocalBackupError(f"Gitea's volume is at {mountpoint}, which this user cannot read: on Linux run with sudo; "
                               "Docker Desktop keeps volumes inside its VM, out of this script's reach")
    return mountpoint


def script(name: str, args: list[str], env: dict[str, str]) -> int:
    return subprocess.run([sys.executable, str(HOST_TOOLS / name), *args], env=env, check=False).returncode


def backup(endpoint: str) -> int:
    env = store_environment(endpoint)
    ensure_bucket(env)
    return script("backup.py", ["--bucket", backup_store.BUCKET, "--postgres-container", POSTGRES, "--path", str(gitea_volume_dir()),
                                "--gitea-container", GITEA], env)


def restore(endpoint: str, backup_id: str) -> int:
    env = store_environment(endpoint)
    volume = gitea_volume_dir()
    print(f"local-backup: stopping {GITEA} for the restore", file=sys.stderr)
    docker_text("stop", GITEA)
    try:
        with tempfile.TemporaryDirectory(prefix="forgestack-local-restore-") as work:
            code = script("restore.py", ["--bucket", backup_store.BUCKET, "--backup-id", backup_id, "--postgres-container", POSTGRES,
                                         "--path-target", str(volume.parent), "--work-dir", work, "--gitea-container", GITEA], env)
    finally:
        print(f"local-backup: starting {GITEA}", file=sys.stderr)
        docker_text("start", GITEA)
    if code == 0:
        docker_text("exec", "--user", "git", GITEA, "gitea", "admin", "regenerate", "hooks")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("action", choices=["backup", "restore"])
    parser.add_argument("--backup-id", default="latest", help="restore: a backup id, or latest (default)")
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"the backup store's S3 endpoint (default {DEFAULT_ENDPOINT})")
    args = parser.parse_args(argv)
    try:
        return backup(args.endpoint) if args.action == "backup" else restore(args.endpoint, args.backup_id)
    except (LocalBackupError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        print(f"local-backup: {' '.join(str(error).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
