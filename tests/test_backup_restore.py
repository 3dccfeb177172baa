"""scripts/backup.py and scripts/restore.py against a real PostgreSQL server and S3 on moto."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from rehearsal.engine import REPO
from scripts import backup as backup_script
from tests.servers import PASSWORD, PostgresServer, moto_s3_server, postgres_server, postgres_tool

REGION = "eu-west-1"
SCHEMA = """
CREATE TABLE repository (id serial PRIMARY KEY, name text NOT NULL UNIQUE, size bigint, avatar bytea);
CREATE SEQUENCE ticket_number START 1000 INCREMENT 7;
INSERT INTO repository (name, size, avatar) SELECT 'repo-' || n, n * 1024, decode(md5(n::text), 'hex') FROM generate_series(1, 500) n;
SELECT nextval('ticket_number') FROM generate_series(1, 3);
"""
SNAPSHOT_SQL = ("SELECT string_agg(id || ':' || name || ':' || size || ':' || encode(avatar, 'hex'), ',' ORDER BY id) FROM repository;"
                "SELECT last_value || '/' || is_called FROM repository_id_seq;"
                "SELECT last_value || '/' || is_called FROM ticket_number;")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(s3_endpoint: str) -> dict[str, str]:
    """Environment for the scripts as subprocesses: the standard AWS variables pointing at moto."""
    return {**os.environ, "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}


@pytest.fixture
def bucket(aws_env: dict[str, str]) -> str:
    name = f"forge-backups-{uuid.uuid4().hex[:12]}"
    s3_of(aws_env).create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


@pytest.fixture
def seeded(postgres: PostgresServer) -> PostgresServer:
    postgres.psql("DROP TABLE IF EXISTS repository; DROP SEQUENCE IF EXISTS ticket_number;" + SCHEMA)
    return postgres


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A small Gitea-like data directory: nested files, binary content, an empty directory, modes and a symlink."""
    root = tmp_path / "live" / "gitea"
    (root / "git/repositories/alice/site.git/objects").mkdir(parents=True)
    (root / "git/repositories/alice/site.git/HEAD").write_text("ref: refs/heads/main\n")
    (root / "git/repositories/alice/site.git/objects/pack.bin").write_bytes(os.urandom(300_000))
    (root / "gitea/conf").mkdir(parents=True)
    (root / "gitea/conf/app.ini").write_text("[server]\nDOMAIN = git.example.com\n")
    (root / "gitea/conf/app.ini").chmod(0o640)
    (root / "lfs").mkdir()
    (root / "git/current").symlink_to("repositories")
    return root


def s3_of(env: dict[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def run_script(name: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True, env=env,
                            check=False, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry below root with its type, mode and content hash (or link target)."""
    entries = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            entries[relative] = f"link->{os.readlink(path)}"
        elif path.is_dir():
            entries[relative] = f"dir {path.stat().st_mode:o}"
        else:
            entries[relative] = f"file {path.stat().st_mode:o} {hashlib.sha256(path.read_bytes()).hexdigest()}"
    return entries


def backup(env: dict[str, str], bucket: str, postgres: PostgresServer, data: Path, *extra: str) -> str:
    result = run_script("backup.py", ["--bucket", bucket, "--postgres-url", postgres.url, "--path", str(data), *extra], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def damage_the_database(postgres: PostgresServer) -> None:
    postgres.psql("INSERT INTO repository (name) VALUES ('written-after-backup'); SELECT nextval('ticket_number');"
                  "DELETE FROM repository WHERE id < 10;")


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if not line.startswith("restore: download")]
    assert lines, "no error message"
    return lines[-1]


def test_round_trip_restores_rows_sequences_and_files(aws_env: dict[str, str], bucket: str, seeded: PostgresServer,
                                                      data_dir: Path, tmp_path: Path) -> None:
    before_rows, before_files = seeded.psql(SNAPSHOT_SQL), tree_digest(data_dir)
    metrics = tmp_path / "textfile" / "forgestack_backup.prom"
    backup_id = backup(aws_env, bucket, seeded, data_dir, "--metrics-file", str(metrics))

    s3 = s3_of(aws_env)
    pointer = json.loads(s3.get_object(Bucket=bucket, Key="forgestack/latest")["Body"].read())
    assert pointer["backup_id"] == backup_id
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=pointer["manifest"])["Body"].read())
    assert [part["name"] for part in manifest["parts"]] == ["postgres.dump", "files-gitea.tar.zst"]
    assert set(manifest["tools"]) >= {"pg_dump", "server", "tar", "zstd"}
    assert "pg-test-password" not in json.dumps(manifest)  # the source URL is redacted
    assert f"{backup_script.METRIC_LAST_SUCCESS} " in metrics.read_text()

    damage_the_database(seeded)
    (data_dir / "gitea/conf/app.ini").write_text("changed after the backup")
    (data_dir / "git/repositories/alice/site.git/HEAD").unlink()
    assert seeded.psql(SNAPSHOT_SQL) != before_rows

    result = run_script("restore.py", ["--bucket", bucket, "--postgres-url", seeded.url, "--path-target", str(data_dir.parent)],
                        aws_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == backup_id
    assert seeded.psql(SNAPSHOT_SQL) == before_rows
    assert seeded.psql("SELECT nextval('ticket_number')") == "1021"  # 1000, 1007, 1014 were taken before the backup
    assert tree_digest(data_dir) == before_files
    kept = data_dir.parent / f"gitea.pre-restore-{backup_id}"
    assert (kept / "gitea/conf/app.ini").read_text() == "changed after the backup"  # replaced, never deleted


def test_password_comes_from_the_credentials_secret(aws_env: dict[str, str], bucket: str, seeded: PostgresServer,
                                                    data_dir: Path) -> None:
    secrets = boto3.client("secretsmanager", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name=REGION,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    arn = secrets.create_secret(Name=f"forge-{uuid.uuid4().hex[:8]}",
                                SecretString=json.dumps({"postgresPassword": "pg-test-password"}))["ARN"]
    without = run_script("backup.py", ["--bucket", bucket, "--postgres-url", seeded.url_without_password], aws_env)
    assert without.returncode == 1
    assert "nothing was published" in without.stderr.splitlines()[-1]
    result = run_script("backup.py", ["--bucket", bucket, "--postgres-url", seeded.url_without_password,
                                      "--credentials-secret", arn, "--path", str(data_dir)], aws_env)
    assert result.returncode == 0, result.stderr
    assert "pg-test-password" not in result.stderr + result.stdout


@pytest.mark.parametrize(("damage", "expected"), [
    ("corrupt", "corrupted"),
    ("truncate", "truncated"),
    ("delete", "missing"),
])
@pytest.mark.parametrize("part", ["postgres.dump", "files-gitea.tar.zst"])
def test_a_damaged_part_is_refused_and_nothing_is_touched(aws_env: dict[str, str], bucket: str, seeded: PostgresServer,
                                                         data_dir: Path, damage: str, expected: str, part: str) -> None:
    backup_id = backup(aws_env, bucket, seeded, data_dir)
    s3 = s3_of(aws_env)
    key = f"forgestack/{backup_id}/{part}"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if damage == "corrupt":
        middle = len(body) // 2
        s3.put_object(Bucket=bucket, Key=key, Body=body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:])
    elif damage == "truncate":
        s3.put_object(Bucket=bucket, Key=key, Body=body[: len(body) - 100])
    else:
        s3.delete_object(Bucket=bucket, Key=key)
    damage_the_database(seeded)
    rows_now, files_now = seeded.psql(SNAPSHOT_SQL), tree_digest(data_dir.parent)

    result = run_script("restore.py", ["--bucket", bucket, "--postgres-url", seeded.url, "--path-target", str(data_dir.parent)],
                        aws_env)
    assert result.returncode == 3
    line = one_error_line(result)
    assert line.startswith("restore: refused, nothing was touched:")
    assert part in line and expected in line
    assert seeded.psql(SNAPSHOT_SQL) == rows_now
    assert tree_digest(data_dir.parent) == files_now


def test_unknown_backup_id_is_refused(aws_env: dict[str, str], bucket: str, seeded: PostgresServer) -> None:
    result = run_script("restore.py", ["--bucket", bucket, "--backup-id", "20200101T000000Z", "--postgres-url", seeded.url], aws_env)
    assert result.returncode == 3
    assert "manifest of 20200101T000000Z" in one_error_line(result) and "does not exist" in one_error_line(result)


def test_usage_errors_exit_2_with_one_line(aws_env: dict[str, str], bucket: str, tmp_path: Path) -> None:
    nothing = run_script("backup.py", ["--bucket", bucket], aws_env)
    assert nothing.returncode == 2
    assert nothing.stderr.strip() == "backup: nothing to back up: give --postgres-url, --postgres-container or --path"
    not_a_dir = run_script("backup.py", ["--bucket", bucket, "--path", str(tmp_path / "absent")], aws_env)
    assert not_a_dir.returncode == 2 and "not a directory" in not_a_dir.stderr
    no_target = run_script("restore.py", ["--bucket", bucket], aws_env)
    assert no_target.returncode == 2 and "nothing to restore into" in no_target.stderr
    for script in ("backup.py", "restore.py"):
        assert run_script(script, ["--help"], aws_env).returncode == 0


# ------------------------------------------------------------ interrupted uploads (in process, moto's in-memory S3)


class ConnectionDropped(botocore.exceptions.ConnectionClosedError):
    """The network going away in the middle of an upload."""


@pytest.fixture
def memory_s3(moto_account: str) -> Any:
    s3 = boto3.client("s3", region_name=moto_account)
    s3.create_bucket(Bucket="forge", CreateBucketConfiguration={"LocationConstraint": moto_account})
    return s3


def drop_connection_after(s3: Any, good_parts: int) -> None:
    sent = {"parts": 0}

    def maybe_fail(**_: Any) -> None:
        sent["parts"] += 1
        if sent["parts"] > good_parts:
            raise ConnectionDropped(endpoint_url="https://s3.eu-west-1.amazonaws.com")

    s3.meta.events.register("before-call.s3.UploadPart", maybe_fail)


def test_interrupted_upload_publishes_nothing(memory_s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "gitea"
    data.mkdir()
    (data / "small.txt").write_text("first backup")
    first = backup_script.run_backup(memory_s3, "forge", "forgestack", None, [data])

    (data / "big.bin").write_bytes(os.urandom(3 * backup_script.PART_SIZE))  # incompressible: several parts
    drop_connection_after(memory_s3, good_parts=1)
    monkeypatch.setattr(backup_script, "s3_client", lambda: memory_s3)
    assert backup_script.main(["--bucket", "forge", "--path", str(data)]) == backup_script.EXIT_FAILED

    pointer = json.loads(memory_s3.get_object(Bucket="forge", Key="forgestack/latest")["Body"].read())
    assert pointer["backup_id"] == first["backup_id"]  # latest still names the complete backup
    assert memory_s3.list_multipart_uploads(Bucket="forge").get("Uploads", []) == []  # the partial upload was aborted
    manifests = [o["Key"] for o in memory_s3.list_objects_v2(Bucket="forge")["Contents"] if o["Key"].endswith("manifest.json")]
    assert manifests == [f"forgestack/{first['backup_id']}/manifest.json"]


def test_a_failing_producer_publishes_nothing(memory_s3: Any, tmp_path: Path) -> None:
    broken = backup_script.Database(url=f"postgresql://nobody@127.0.0.1:{1}/none")
    with pytest.raises(backup_script.BackupError, match="failed"):
        backup_script.run_backup(memory_s3, "forge", "forgestack", broken, [])
    assert "Contents" not in memory_s3.list_objects_v2(Bucket="forge", Prefix="forgestack/")


def test_empty_directory_still_makes_a_restorable_part(memory_s3: Any, tmp_path: Path) -> None:
    empty = tmp_path / "lfs"
    empty.mkdir()
    manifest = backup_script.run_backup(memory_s3, "forge", "", None, [empty])
    (part,) = manifest["parts"]
    assert part["key"] == f"{manifest['backup_id']}/files-lfs.tar.zst" and part["size"] > 0
    stored = memory_s3.get_object(Bucket="forge", Key=part["key"])["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == part["sha256"]


def test_large_stream_is_uploaded_in_parts_with_the_right_checksum(memory_s3: Any) -> None:
    import io

    payload = os.urandom(2 * backup_script.PART_SIZE + 12345)
    size, sha256 = backup_script.upload_stream(memory_s3, "forge", "x/part", io.BytesIO(payload), "part")
    assert (size, sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    head = memory_s3.head_object(Bucket="forge", Key="x/part")
    assert head["ContentLength"] == len(payload) and head["ETag"].endswith('-3"')  # three parts


def test_urls_are_redacted() -> None:
    assert backup_script.redact_url("postgresql://gitea:s3cret@db:5432/gitea") == "postgresql://gitea:***@db:5432/gitea"
    assert backup_script.redact_url("postgresql://gitea@db/gitea") == "postgresql://gitea@db/gitea"


def test_container_mode_runs_the_tools_inside_the_postgres_container() -> None:
    database = backup_script.Database(container="forgestack-postgres")
    argv = database.command("pg_dump", "--format=custom")
    assert argv[:4] == ["docker", "exec", "-i", "forgestack-postgres"]
    assert argv[-1] == 'pg_dump --format=custom -U "$POSTGRES_USER" -d "$POSTGRES_DB"'


# ------------------------------------------------------------ --postgres-container, with `docker exec` played by a shim


@pytest.fixture
def docker_shim(tmp_path: Path, seeded: PostgresServer) -> dict[str, str]:
    """A `docker` on PATH that runs `docker exec [-i] CONTAINER cmd...` here, with the environment the official
    PostgreSQL image gives its processes (POSTGRES_USER, POSTGRES_DB) and a server to talk to. The scripts' own
    command lines (sh -c with "$POSTGRES_USER", pg_dump/pg_restore over stdin and stdout) run unchanged."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    server_bin = str(Path(postgres_tool("pg_dump")).parent)
    shim = bin_dir / "docker"
    shim.write_text(f"""#!/bin/sh
[ "$1" = exec ] || {{ echo "shim: only docker exec" >&2; exit 2; }}
shift
[ "$1" = -i ] && shift
[ "$1" = forgestack-postgres ] || {{ echo "shim: no container $1" >&2; exit 1; }}
shift
export POSTGRES_USER=gitea POSTGRES_DB=gitea PGHOST=127.0.0.1 PGPORT={seeded.port} PGPASSWORD='{PASSWORD}'
PATH="{server_bin}:$PATH" exec "$@"
""")
    shim.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_container_mode_round_trip(aws_env: dict[str, str], bucket: str, seeded: PostgresServer, docker_shim: dict[str, str]) -> None:
    env = {**aws_env, **docker_shim}
    before = seeded.psql(SNAPSHOT_SQL)
    made = run_script("backup.py", ["--bucket", bucket, "--postgres-container", "forgestack-postgres"], env)
    assert made.returncode == 0, made.stderr
    backup_id = made.stdout.strip().splitlines()[-1]
    manifest = json.loads(s3_of(aws_env).get_object(Bucket=bucket, Key=f"forgestack/{backup_id}/manifest.json")["Body"].read())
    assert manifest["parts"][0]["source"] == "container forgestack-postgres"
    assert manifest["tools"]["server"].startswith("postgres (PostgreSQL)")  # asked inside the "container"
    damage_the_database(seeded)
    restored = run_script("restore.py", ["--bucket", bucket, "--postgres-container", "forgestack-postgres"], env)
    assert restored.returncode == 0, restored.stderr
    assert seeded.psql(SNAPSHOT_SQL) == before


def test_container_mode_with_a_missing_container_publishes_nothing(aws_env: dict[str, str], bucket: str,
                                                                   docker_shim: dict[str, str]) -> None:
    result = run_script("backup.py", ["--bucket", bucket, "--postgres-container", "forgestack-nope"], {**aws_env, **docker_shim})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("backup: failed, nothing was published:")
    assert "Contents" not in s3_of(aws_env).list_objects_v2(Bucket=bucket)
