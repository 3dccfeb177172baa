"""The way from a single host to topology ha (README, Migrating a single host to ha): a single-host backup restores
into an RDS-like PostgreSQL as Gitea's own non-superuser role, onto an EFS-like directory, and Gitea's object stores
move into the objects bucket under the keys Gitea reads. Real PostgreSQL servers, S3 and Secrets Manager on moto,
the scripts run as files the way the runbook runs them."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from components import filesystem
from components.host_tools import move_objects
from components.services import postgres as gitea_database
from tests.backup_support import (
    REGION,
    SNAPSHOT_SQL,
    backup,
    docker_run_shim,
    make_rds_like,
    run_database_role_script,
    run_script,
    s3_of,
    tree_digest,
)
from tests.servers import PostgresServer, postgres_server

ATTACHMENT_UUID = "8f3c1a52-1d0e-4b7c-9a66-2f1f0c5d7e11"
SMALL_LFS_OID = hashlib.sha256(b"small lfs object").hexdigest()
LARGE_LFS_OID = hashlib.sha256(b"large lfs object").hexdigest()
LARGE_LFS_BYTES = 20 * 2**20  # above the single-request limit: uploaded in parts
GITEA_PASSWORD = "gitea-role-password"
POSTGRES_IMAGE = "postgres:18.1-bookworm"  # the stack's postgresPassword: Gitea's role in RDS has the single host's password


def attachment_path(uuid_text: str) -> str:
    """Gitea's relative path of an attachment (models/repo/attachment.go: first char / second char / uuid)."""
    return f"{uuid_text[0]}/{uuid_text[1]}/{uuid_text}"


def lfs_path(oid: str) -> str:
    """Gitea's relative path of an LFS object (modules/lfs/pointer.go: oid[0:2]/oid[2:4]/oid[4:])."""
    return f"{oid[0:2]}/{oid[2:4]}/{oid[4:]}"


def write(path: Path, content: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)


@pytest.fixture
def single_host_data(tmp_path: Path) -> Path:
    """A single host's Gitea /data in the official image's layout, with one file in several object stores."""
    root = tmp_path / "single-host" / "gitea"
    write(root / "git/repositories/alice/site.git/HEAD", b"ref: refs/heads/main\n")
    write(root / "git/repositories/alice/site.git/objects/pack/pack-1.pack", os.urandom(200_000))
    write(root / "ssh/ssh_host_ed25519_key", b"-----BEGIN OPENSSH PRIVATE KEY-----\nplanted\n", 0o600)
    write(root / "gitea/conf/app.ini", b"[server]\nDOMAIN = git.example.com\n", 0o640)
    write(root / "git/lfs" / lfs_path(SMALL_LFS_OID), b"small lfs object")
    write(root / "git/lfs" / lfs_path(LARGE_LFS_OID), os.urandom(LARGE_LFS_BYTES))
    write(root / "gitea/attachments" / attachment_path(ATTACHMENT_UUID), b"%PDF-1.7 an attachment")
    write(root / "gitea/avatars/5d41402abc4b2a76b9719d911017c592", b"\x89PNG avatar")
    write(root / "gitea/packages/ab/cd/abcdef0123", b"a package blob")
    write(root / "gitea/actions_log/alice/site/1a/26.log.zst", b"a job's log")
    return root


@pytest.fixture
def single_host_database(seeded: PostgresServer) -> Iterator[PostgresServer]:
    """The single host's database with the records that name object-store files, as Gitea's tables do."""
    # the test's own constants, no input:
    records = (
        "CREATE TABLE attachment (id serial PRIMARY KEY, uuid text NOT NULL);"  # noqa: S608
        f"INSERT INTO attachment (uuid) VALUES ('{ATTACHMENT_UUID}');"
        "CREATE TABLE lfs_meta_object (id serial PRIMARY KEY, oid text NOT NULL, size bigint NOT NULL);"
        f"INSERT INTO lfs_meta_object (oid, size) VALUES ('{SMALL_LFS_OID}', 16), ('{LARGE_LFS_OID}', {LARGE_LFS_BYTES});"
    )
    seeded.psql(records)
    yield seeded
    seeded.psql("DROP TABLE attachment; DROP TABLE lfs_meta_object")


@pytest.fixture
def rds_like() -> Iterator[PostgresServer]:
    """A PostgreSQL set up the way the ha stack's RDS is: a master without superuser owns the database, and Gitea's role
    is made by the task's database-role init container (the same SQL)."""
    with postgres_server() as server:
        make_rds_like(server)
        run_database_role_script(server, GITEA_PASSWORD)
        yield server


@pytest.fixture
def objects_bucket(aws_env: dict[str, str]) -> str:
    name = f"forge-objects-{uuid.uuid4().hex[:12]}"
    s3_of(aws_env).create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


def credentials_secret(aws_env: dict[str, str]) -> str:
    """The stack's credentials secret: the restore reads Gitea's database password from it, as on the host."""
    secrets = boto3.client(
        "secretsmanager",
        endpoint_url=aws_env["AWS_ENDPOINT_URL"],
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    document = json.dumps({"postgresPassword": GITEA_PASSWORD})
    return str(secrets.create_secret(Name=f"forge-{uuid.uuid4().hex[:8]}", SecretString=document)["ARN"])


def store_files(data: Path) -> int:
    return sum(1 for _, directory in move_objects.OBJECT_STORES for path in (data / directory).rglob("*") if path.is_file())


def object_bytes(aws_env: dict[str, str], bucket: str, key: str) -> bytes:
    return bytes(s3_of(aws_env).get_object(Bucket=bucket, Key=key)["Body"].read())


def test_a_single_host_backup_becomes_an_ha_forge(
    aws_env: dict[str, str],
    bucket: str,
    objects_bucket: str,
    single_host_database: PostgresServer,
    single_host_data: Path,
    rds_like: PostgresServer,
    tmp_path: Path,
) -> None:
    rows_before = single_host_database.psql(SNAPSHOT_SQL)
    repositories_before = tree_digest(single_host_data / "git/repositories")
    large_before = (single_host_data / "git/lfs" / lfs_path(LARGE_LFS_OID)).read_bytes()
    backup_id = backup(aws_env, bucket, single_host_database, single_host_data)

    # Runbook step 3: the database into RDS, as Gitea's role, its password read from the stack's secret.
    gitea_url = f"postgresql://{gitea_database.USER}@127.0.0.1:{rds_like.port}/{gitea_database.DATABASE}"
    # The ops host has no PostgreSQL client: the tools come from the stack's PostgreSQL image (docker run, played here).
    with_image = {**aws_env, **docker_run_shim(tmp_path / "bin", POSTGRES_IMAGE, GITEA_PASSWORD)}
    restored_database = run_script(
        "restore.py",
        [
            "--bucket",
            bucket,
            "--backup-id",
            backup_id,
            "--postgres-url",
            gitea_url,
            "--postgres-image",
            POSTGRES_IMAGE,
            "--credentials-secret",
            credentials_secret(aws_env),
        ],
        with_image,
    )
    assert restored_database.returncode == 0, restored_database.stderr
    as_gitea = f"postgresql://{gitea_database.USER}:{GITEA_PASSWORD}@127.0.0.1:{rds_like.port}/{gitea_database.DATABASE}"
    assert rds_like.psql(SNAPSHOT_SQL, as_gitea) == rows_before
    # Gitea owns what it migrates later (its schema upgrades ALTER these tables), and may write.
    assert rds_like.psql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'", as_gitea) == gitea_database.USER
    rds_like.psql("INSERT INTO repository (name) VALUES ('pushed-after-the-move')", as_gitea)

    # Runbook step 4: the files onto EFS; the access point's root directory is the part's name (/gitea).
    file_system = tmp_path / "efs"
    file_system.mkdir()
    restored_files = run_script("restore.py", ["--bucket", bucket, "--backup-id", backup_id, "--path-target", str(file_system)], aws_env)
    assert restored_files.returncode == 0, restored_files.stderr
    data = file_system / filesystem.ROOT_DIRECTORY.lstrip("/")  # the part restores as "gitea": the access point's root
    assert tree_digest(data / "git/repositories") == repositories_before
    assert (data / "ssh/ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600  # the host keys clients know stay

    # Runbook step 5: the object stores into the bucket, then off EFS.
    stored_files = store_files(data)
    moved = run_script("move_objects.py", ["--data", str(data), "--bucket", objects_bucket, "--remove-local"], aws_env)
    assert moved.returncode == 0, moved.stderr
    assert f"uploaded {stored_files}," in moved.stderr
    # Every record in the database finds its file where Gitea's S3 storage looks for it.
    for uuid_text in rds_like.psql("SELECT uuid FROM attachment", as_gitea).splitlines():
        assert object_bytes(aws_env, objects_bucket, "attachments/" + attachment_path(uuid_text)) == b"%PDF-1.7 an attachment"
    for record in rds_like.psql("SELECT oid || ' ' || size FROM lfs_meta_object", as_gitea).splitlines():
        oid, size = record.split()
        content = object_bytes(aws_env, objects_bucket, "lfs/" + lfs_path(oid))
        assert len(content) == int(size)
    assert object_bytes(aws_env, objects_bucket, "lfs/" + lfs_path(LARGE_LFS_OID)) == large_before
    assert object_bytes(aws_env, objects_bucket, "avatars/5d41402abc4b2a76b9719d911017c592") == b"\x89PNG avatar"
    assert object_bytes(aws_env, objects_bucket, "actions_log/alice/site/1a/26.log.zst") == b"a job's log"
    for _, directory in move_objects.OBJECT_STORES:
        assert not (data / directory).exists()
    assert tree_digest(data / "git/repositories") == repositories_before  # the repositories stay on EFS


def test_a_second_run_resumes_and_a_different_object_is_never_overwritten(
    aws_env: dict[str, str], objects_bucket: str, single_host_data: Path
) -> None:
    first = run_script("move_objects.py", ["--data", str(single_host_data), "--bucket", objects_bucket], aws_env)
    assert first.returncode == 0, first.stderr
    again = run_script("move_objects.py", ["--data", str(single_host_data), "--bucket", objects_bucket], aws_env)
    assert again.returncode == 0, again.stderr
    assert f"uploaded 0, skipped {store_files(single_host_data)}," in again.stderr

    # An object someone else wrote under the same key: reported, kept, and nothing local is removed.
    key = "attachments/" + attachment_path(ATTACHMENT_UUID)
    s3_of(aws_env).put_object(Bucket=objects_bucket, Key=key, Body=b"written by the running ha Gitea")
    conflicted = run_script("move_objects.py", ["--data", str(single_host_data), "--bucket", objects_bucket, "--remove-local"], aws_env)
    assert conflicted.returncode == move_objects.EXIT_FAILED
    assert "1 conflict(s)" in conflicted.stderr.splitlines()[-1]
    assert object_bytes(aws_env, objects_bucket, key) == b"written by the running ha Gitea"
    assert (single_host_data / "gitea/attachments" / attachment_path(ATTACHMENT_UUID)).is_file()


def test_a_planted_link_in_a_store_is_refused_before_any_upload(
    aws_env: dict[str, str], objects_bucket: str, single_host_data: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside-secret"
    outside.write_text("not Gitea's")
    (single_host_data / "gitea/avatars/planted").symlink_to(outside)
    result = run_script("move_objects.py", ["--data", str(single_host_data), "--bucket", objects_bucket], aws_env)
    assert result.returncode == move_objects.EXIT_REFUSED
    assert "symbolic link" in result.stderr.splitlines()[-1]
    assert "Contents" not in s3_of(aws_env).list_objects_v2(Bucket=objects_bucket)


def test_a_directory_that_is_not_giteas_is_refused_and_usage_errors_are_one_line(
    aws_env: dict[str, str], objects_bucket: str, tmp_path: Path
) -> None:
    result = run_script("move_objects.py", ["--data", str(tmp_path), "--bucket", objects_bucket], aws_env)
    assert result.returncode == move_objects.EXIT_REFUSED
    assert "not a Gitea data directory" in result.stderr.splitlines()[-1]
    missing = run_script("move_objects.py", ["--data", str(tmp_path / "absent"), "--bucket", objects_bucket], aws_env)
    assert missing.returncode == move_objects.EXIT_USAGE and len(missing.stderr.splitlines()) == 1
    assert run_script("move_objects.py", ["--help"], aws_env).returncode == 0
