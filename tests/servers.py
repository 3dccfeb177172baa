"""Real servers the script tests run against: a throwaway PostgreSQL cluster and S3 on moto's HTTP server."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTGRES_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
DATABASE = "gitea"
USER = "gitea"
PASSWORD = "pg-test-password"


# serve_forever() looks for shutdown() every poll_interval: its default half second made every test server's stop
# wait that long.
QUICK_SHUTDOWN = {"poll_interval": 0.02}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: each probe is held until all are found (two free_port() calls can return one port)."""
    with ExitStack() as probes:
        ports = []
        for _ in range(count):
            probe = probes.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def postgres_tool(name: str) -> str:
    for directory in POSTGRES_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found:
        return found
    message = f"PostgreSQL server tool {name} not found (Debian package postgresql)"
    if os.environ.get("CI"):
        pytest.fail(message)  # CI installs it: a missing server is a broken set-up, never a silent skip
    pytest.skip(message)


@dataclass(frozen=True)
class PostgresServer:
    port: int
    url: str  # with the password
    url_without_password: str
    admin_url: str  # superuser over the unix socket

    def psql(self, sql: str, url: str | None = None) -> str:
        result = subprocess.run(
            [postgres_tool("psql"), "--no-psqlrc", "--tuples-only", "--no-align", "--set=ON_ERROR_STOP=1", f"--dbname={url or self.url}",
             "--command", sql],
            capture_output=True, text=True, check=True,
        )
        return result.stdout.strip()


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """initdb + pg_ctl in a temporary directory; run as `postgres` when we are root (the server refuses root).
    The directory sits directly in /tmp: pytest's own temporary tree is private to root, out of the server's reach."""
    initdb, pg_ctl = postgres_tool("initdb"), postgres_tool("pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="forgestack-pg-"))
    data = base / "cluster"
    prefix: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        base.chmod(0o700)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "server.log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        admin_url = f"postgresql://postgres@/postgres?host={base}&port={port}"
        server = PostgresServer(
            port=port,
            url=f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}",
            url_without_password=f"postgresql://{USER}@127.0.0.1:{port}/{DATABASE}",
            admin_url=admin_url,
        )
        server.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'", admin_url)
        server.psql(f"CREATE DATABASE {DATABASE} OWNER {USER}", admin_url)
        yield server
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """moto's S3 over HTTP on loopback: scripts run as real subprocesses talk to it through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
