"""components/host_tools/backup.py and restore.py against a real PostgreSQL server and S3 on moto."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from components.host_tools import backup as backup_script
from tests.backup_support import (
    REGION,
    SNAPSHOT_SQL,
    backup,
    damage_the_database,
    docker_run_shim,
    one_error_line,
    run_script,
    s3_of,
    tree_digest,
)
from tests.servers import PASSWORD, PostgresServer, postgres_tool
from tests.shims import install_shim


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
def test_a_damaged_part_is_refused_and_nothing_is_touched(aws_env: dict[str, str], bucket: str, backup_id: str,
                                                         seeded: PostgresServer, data_dir: Path, damage: str, expected: str,
                                                         part: str) -> None:
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
    broken = backup_script.Database(conninfo=f"postgresql://nobody@127.0.0.1:{1}/none")
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


@pytest.mark.parametrize(("given", "without", "password"), [
    ("postgresql://gitea:s3cret@db:5432/gitea", "postgresql://gitea@db:5432/gitea", "s3cret"),
    ("postgresql://gitea:p%40ss%3Aw@db/gitea?sslmode=require", "postgresql://gitea@db/gitea?sslmode=require", "p@ss:w"),
    ("postgresql://gitea@db/gitea?password=s3cret&sslmode=require", "postgresql://gitea@db/gitea?sslmode=require", "s3cret"),
    ("postgres://db/gitea", "postgres://db/gitea", None),
    ("host=db user=gitea password=s3cret dbname=gitea", "host='db' user='gitea' dbname='gitea'", "s3cret"),
    ("host=db password = 'it''s \\'quoted\\' ' dbname=gitea", None, None),
    ("host = db  password='two words' port=5432", "host='db' port='5432'", "two words"),
    ("host=db password=back\\\\slash", "host='db'", "back\\slash"),
    ("host=db password='it\\'s' user=gitea", "host='db' user='gitea'", "it's"),
])
def test_the_password_is_split_off_every_connection_string_form(given: str, without: str | None, password: str | None) -> None:
    if without is None:  # an unquoted value right after a closing quote: libpq itself would refuse it, so do we
        with pytest.raises(backup_script.BackupError):
            backup_script.split_password(given)
        return
    assert backup_script.split_password(given) == (without, password)


def test_container_mode_runs_the_tools_inside_the_postgres_container() -> None:
    database = backup_script.Database(container="forgestack-postgres")
    argv = database.command("pg_dump", "--format=custom")
    assert argv[:4] == ["docker", "exec", "-i", "forgestack-postgres"]
    assert argv[-1] == 'pg_dump --format=custom -U "$POSTGRES_USER" -d "$POSTGRES_DB"'


# ------------------------------------------------------------ --postgres-container, with `docker exec` played by a shim


def postgres_container_shim(bin_dir: Path, seeded: PostgresServer, container: str, user: str, database: str) -> dict[str, str]:
    """A `docker` on PATH that runs `docker exec [-i] CONTAINER cmd...` here, with the environment a PostgreSQL image gives
    its processes (POSTGRES_USER, POSTGRES_DB as given) and a server to talk to. The scripts' own command lines (sh -c with
    "$POSTGRES_USER", pg_dump/pg_restore over stdin and stdout) run unchanged."""
    server_bin = str(Path(postgres_tool("pg_dump")).parent)
    install_shim(bin_dir, "docker", f"""#!/bin/sh
[ "$1" = exec ] || {{ echo "shim: only docker exec" >&2; exit 2; }}
shift
[ "$1" = -i ] && shift
[ "$1" = {container} ] || {{ echo "shim: no container $1" >&2; exit 1; }}
shift
export POSTGRES_USER={user} POSTGRES_DB={database} PGHOST=127.0.0.1 PGPORT={seeded.port} PGPASSWORD='{PASSWORD}'
PATH="{server_bin}:$PATH" exec "$@"
""")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.fixture
def docker_shim(tmp_path: Path, seeded: PostgresServer) -> dict[str, str]:
    """The forge's PostgreSQL container, as the official image sets it up."""
    return postgres_container_shim(tmp_path / "bin", seeded, "forgestack-postgres", "gitea", "gitea")


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


@pytest.fixture
def kasm_db_shim(tmp_path: Path, seeded: PostgresServer) -> dict[str, str]:
    """`docker exec kasm_db ...`, but the image's variables name no usable user or database (Kasm's kasm_db is not known
    to set them): only --postgres-user and --postgres-database can make the tools connect."""
    return postgres_container_shim(tmp_path / "kasm-bin", seeded, "kasm_db", "no_such_role", "no_such_db")


def test_a_container_that_names_no_user_is_backed_up_and_restored_with_them_given(
    aws_env: dict[str, str], bucket: str, seeded: PostgresServer, kasm_db_shim: dict[str, str],
) -> None:
    """The workspaces host's backup of Kasm's database (its own prefix in the same bucket)."""
    env = {**aws_env, **kasm_db_shim}
    identity = ["--postgres-container", "kasm_db", "--postgres-user", "gitea", "--postgres-database", "gitea"]
    guessed = run_script("backup.py", ["--bucket", bucket, "--prefix", "workspaces", "--postgres-container", "kasm_db"], env)
    assert guessed.returncode == 1 and "no_such_role" in guessed.stderr  # the image's variables are not trusted blindly
    before = seeded.psql(SNAPSHOT_SQL)
    made = run_script("backup.py", ["--bucket", bucket, "--prefix", "workspaces", *identity], env)
    assert made.returncode == 0, made.stderr
    assert s3_of(aws_env).get_object(Bucket=bucket, Key="workspaces/latest")["ContentLength"] > 0
    damage_the_database(seeded)
    restored = run_script("restore.py", ["--bucket", bucket, "--prefix", "workspaces", *identity], env)
    assert restored.returncode == 0, restored.stderr
    assert seeded.psql(SNAPSHOT_SQL) == before
    misplaced = run_script("restore.py", ["--bucket", bucket, "--postgres-url", "postgresql://x@127.0.0.1/x",
                                          "--postgres-user", "gitea"], env)
    assert misplaced.returncode == 2 and "name the user and database inside --postgres-container" in misplaced.stderr


def test_container_mode_with_a_missing_container_publishes_nothing(aws_env: dict[str, str], bucket: str,
                                                                   docker_shim: dict[str, str]) -> None:
    result = run_script("backup.py", ["--bucket", bucket, "--postgres-container", "forgestack-nope"], {**aws_env, **docker_shim})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("backup: failed, nothing was published:")
    assert "Contents" not in s3_of(aws_env).list_objects_v2(Bucket=bucket)


def test_a_backup_never_writes_into_an_existing_backup(memory_s3: Any, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    data = tmp_path / "gitea"
    data.mkdir()
    (data / "a.txt").write_text("first")
    moment = datetime(2026, 11, 24, 3, 0, 0, tzinfo=UTC)
    first = backup_script.run_backup(memory_s3, "forge", "forgestack", None, [data], clock=lambda: moment)
    stored = memory_s3.get_object(Bucket="forge", Key=first["parts"][0]["key"])["Body"].read()
    (data / "a.txt").write_text("second, in the same second")
    with pytest.raises(backup_script.BackupError, match="backup 20261124T030000Z already exists"):
        backup_script.run_backup(memory_s3, "forge", "forgestack", None, [data], clock=lambda: moment)
    assert memory_s3.get_object(Bucket="forge", Key=first["parts"][0]["key"])["Body"].read() == stored


# ------------------------------------------------------------ --postgres-image, with `docker run` played by a shim

IMAGE = "postgres:18.1-bookworm"


def test_image_mode_runs_the_tools_of_the_servers_image_against_a_url(aws_env: dict[str, str], bucket: str, seeded: PostgresServer,
                                                                     tmp_path: Path) -> None:
    env = {**aws_env, **docker_run_shim(tmp_path / "bin", IMAGE, PASSWORD)}
    before = seeded.psql(SNAPSHOT_SQL)
    made = run_script("backup.py", ["--bucket", bucket, "--postgres-url", seeded.url, "--postgres-image", IMAGE], env)
    assert made.returncode == 0, made.stderr
    backup_id = made.stdout.strip().splitlines()[-1]
    manifest = json.loads(s3_of(aws_env).get_object(Bucket=bucket, Key=f"forgestack/{backup_id}/manifest.json")["Body"].read())
    assert manifest["parts"][0]["source"] == f"{seeded.url_without_password} (tools of {IMAGE})"
    damage_the_database(seeded)
    restored = run_script("restore.py", ["--bucket", bucket, "--postgres-url", seeded.url, "--postgres-image", IMAGE], env)
    assert restored.returncode == 0, restored.stderr
    assert seeded.psql(SNAPSHOT_SQL) == before
    alone = run_script("restore.py", ["--bucket", bucket, "--postgres-image", IMAGE], env)
    assert alone.returncode == 2 and "give the URL too" in alone.stderr
