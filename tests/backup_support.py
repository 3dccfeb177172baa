"""Backup and restore helpers shared by the tests of components/host_tools/backup.py and restore.py: a real PostgreSQL,
moto's S3 server, and the scripts run as the operator runs them (subprocesses with the standard AWS variables)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3

from components import cluster
from rehearsal.engine import REPO
from tests.servers import DATABASE, USER, PostgresServer, postgres_tool
from tests.shims import install_shim

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


def s3_of(env: dict[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


HOST_TOOLS = REPO / "components" / "host_tools"


def run_script(name: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A host tool run as a file, as the host runs it."""
    result = subprocess.run([sys.executable, str(HOST_TOOLS / name), *args], capture_output=True, text=True, env=env,
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


def unpack_bundle(stdin: str, root: Path) -> dict[str, str]:
    """Unpack a host-files bundle with the same pipe the host runs (minus sudo, into root); path on the host -> text."""
    subprocess.run(["sh", "-c", f"base64 -d | tar -xzf - -C {root} --no-same-owner"], input=stdin, text=True, check=True)
    return {"/" + str(path.relative_to(root)): path.read_text() for path in sorted(root.rglob("*")) if path.is_file()}


def docker_run_shim(bin_dir: Path, image: str, password: str) -> dict[str, str]:
    """A `docker` on PATH that plays `docker run --rm -i --network N --env PGPASSWORD IMAGE tool args...` (restore.py's
    --postgres-image) with this machine's client tools; it refuses any other shape, another image, a password on the
    command line, and a connection from a run without network. Returns the PATH to run the scripts with."""
    server_bin = str(Path(postgres_tool("pg_dump")).parent)
    install_shim(bin_dir, "docker", f"""#!/bin/sh
[ "$1 $2 $3 $4" = "run --rm -i --network" ] || {{ echo "shim: unexpected docker $*" >&2; exit 2; }}
network=$5
[ "$6 $7 $8" = "--env PGPASSWORD {image}" ] || {{ echo "shim: unexpected docker $*" >&2; exit 2; }}
shift 8
case "$*" in *{password}*) echo "shim: a password on the command line" >&2; exit 3;; esac
if [ "$network" = none ]; then case "$*" in *--dbname*) echo "shim: no network here" >&2; exit 4;; esac; fi
PATH="{server_bin}:$PATH" exec "$@"
""")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


RDS_MASTER, RDS_MASTER_PASSWORD = "master", "master-password"


def make_rds_like(server: PostgresServer) -> None:
    """Set the server up as the ha stack's RDS is: Gitea's database owned by a master role without superuser, and no
    Gitea role yet (the task's database-role container makes it: run_database_role_script)."""
    admin = server.admin_url
    server.psql(f"DROP DATABASE {DATABASE}", admin)
    server.psql(f"DROP ROLE {USER}", admin)
    server.psql(f"CREATE ROLE {RDS_MASTER} LOGIN CREATEROLE PASSWORD '{RDS_MASTER_PASSWORD}'", admin)
    server.psql(f"CREATE DATABASE {DATABASE} OWNER {RDS_MASTER}", admin)


def run_database_role_script(server: PostgresServer, gitea_password: str) -> None:
    """The task's database-role container's script, as the master, with its environment."""
    env = {"PATH": os.environ["PATH"], "PGHOST": "127.0.0.1", "PGPORT": str(server.port), "PGDATABASE": DATABASE,
           "PGUSER": RDS_MASTER, "PGPASSWORD": RDS_MASTER_PASSWORD, "GITEA_DATABASE_PASSWORD": gitea_password}
    result = subprocess.run(["sh", "-c", cluster.database_role_script()], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------ the fixtures' makings (conftest.py), also at module scope


def scripts_env(s3_endpoint: str) -> dict[str, str]:
    """Environment for the scripts as subprocesses: the standard AWS variables pointing at moto, and the PostgreSQL
    client tools of the test server's version first on PATH (Debian's /usr/bin ones are a Perl wrapper choosing that
    same version, 30 ms a call)."""
    path = f"{Path(postgres_tool('pg_dump')).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}


def new_bucket(env: dict[str, str]) -> str:
    name = f"forge-backups-{uuid.uuid4().hex[:12]}"
    s3_of(env).create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


def seed(postgres: PostgresServer) -> PostgresServer:
    postgres.psql("DROP TABLE IF EXISTS repository; DROP SEQUENCE IF EXISTS ticket_number;" + SCHEMA)
    return postgres


def make_data_dir(tmp_path: Path) -> Path:
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
