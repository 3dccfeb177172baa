"""Valkey's rendered configuration and ACL file against a real server: Debian's redis-server 7.0, which Valkey 8
forked from and whose configuration language it keeps (aclfile, maxmemory-policy, appendonly)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from components.services import valkey
from components.services.spec import ServiceSpec
from tests.servers import free_port

PASSWORD = "valkey-test-password-0123456789"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found (Debian package redis-server; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, ServiceSpec]]:
    spec = valkey.valkey_spec(memory_mb=128)
    work = tmp_path_factory.mktemp("valkey")
    acl = work / "valkey.acl"
    (secret,) = spec.secret_files
    acl.write_text(secret.template.replace("{value}", PASSWORD))
    port = free_port()
    rendered = next(f.content for f in spec.config_files if f.path == valkey.CONFIG_FILE)
    config = work / "valkey.conf"
    # The rendered file as is, with the container's paths moved into the work directory.
    config.write_text(rendered.replace(valkey.ACL_FILE, str(acl)) + f"port {port}\nbind 127.0.0.1\ndir {work}\nsave \"\"\n")
    process = subprocess.Popen([_tool("redis-server"), str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if subprocess.run([_tool("redis-cli"), "-p", str(port), "ping"], capture_output=True, text=True).returncode == 0:
            break
        if process.poll() is not None:
            pytest.fail(f"redis-server refused the rendered configuration:\n{process.stdout.read() if process.stdout else ''}")
        time.sleep(0.2)
    yield port, spec
    process.terminate()
    process.wait(timeout=10)


def cli(*args: str) -> str:
    result = subprocess.run([_tool("redis-cli"), "--no-auth-warning", *args], capture_output=True, text=True, check=False)
    return (result.stdout + result.stderr).strip()


def test_the_healthcheck_sees_a_password_protected_server(server: tuple[int, ServiceSpec]) -> None:
    port, spec = server
    assert spec.healthcheck is not None
    probe = spec.healthcheck.test[1].replace("valkey-cli", f"{_tool('redis-cli')} -p {port}")
    assert subprocess.run(["sh", "-c", probe], check=False).returncode == 0  # answers NOAUTH without the password
    assert "NOAUTH" in cli("-p", str(port), "ping")


@pytest.mark.parametrize("use", sorted(valkey.DATABASES))
def test_gitea_connection_strings_authenticate(server: tuple[int, ServiceSpec], use: str) -> None:
    port, _ = server
    url = valkey.connection_template(use).replace("{value}", PASSWORD).replace(f"@{valkey.NAME}:{valkey.PORT}", f"@127.0.0.1:{port}")
    assert cli("-u", url, "ping") == "PONG"
    assert cli("-u", url, "set", f"forgestack:{use}", "1") == "OK"


def test_a_wrong_password_is_refused(server: tuple[int, ServiceSpec]) -> None:
    port, _ = server
    assert "WRONGPASS" in cli("-u", f"redis://default:wrong@127.0.0.1:{port}/0", "ping")


def test_queues_are_never_evicted(server: tuple[int, ServiceSpec]) -> None:
    port, _ = server
    url = f"redis://default:{PASSWORD}@127.0.0.1:{port}/0"
    assert cli("-u", url, "config", "get", "maxmemory-policy").splitlines() == ["maxmemory-policy", "noeviction"]
    assert cli("-u", url, "config", "get", "appendonly").splitlines() == ["appendonly", "yes"]
    assert cli("-u", url, "config", "get", "maxmemory").splitlines() == ["maxmemory", str(96 * 1024 * 1024)]
