"""The real Nginx (Debian's nginx-light) running the rendered forgestack configuration, and a raw TLS client.

Tests put their own upstreams (a fake backend, the relay) in the routes; everything else in the server
blocks is exactly what components/services/proxy.py renders for the host."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from components.services.proxy import ProxyRoute, render_nginx_conf
from tests.servers import free_ports

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def require_nginx() -> None:
    if not Path(NGINX).exists():
        if os.environ.get("CI"):
            pytest.fail("nginx not found (Debian package nginx-light; .ci/run installs it)")
        pytest.skip("Debian nginx-light not installed")


@contextmanager
def running_nginx(work: Path, routes: Sequence[ProxyRoute]) -> Iterator[int]:
    """Nginx with the rendered configuration for these routes and a self-signed certificate; yields its HTTPS port."""
    require_nginx()
    tls = work / "tls"
    tls.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                    "-subj", "/CN=forgestack-test", "-keyout", str(tls / "privkey.pem"), "-out", str(tls / "fullchain.pem")],
                   check=True, capture_output=True)
    # free_port() only finds a port free a moment ago: another test (an xdist worker's server) can take it before Nginx
    # binds. A start that fails on an address in use is tried again on new ports; any other failure is reported.
    for attempt in range(3):
        http_port, https_port = free_ports(2)
        (work / "forgestack.conf").write_text(render_nginx_conf(routes, tls_dir=str(tls), acme_webroot=str(work),
                                                                http_port=http_port, https_port=https_port))
        temp = "".join(f"  {kind}_temp_path {work}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (work / "nginx.conf").write_text(
            f"user root;\npid {work}/nginx.pid;\nerror_log {work}/error.log;\nevents {{}}\n"
            f"http {{\n  access_log off;\n{temp}  include {work}/forgestack.conf;\n}}\n"
        )
        stderr = (work / "stderr.log").open("w")
        process = subprocess.Popen([NGINX, "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        stderr.close()
        if _started(process, https_port, work / "nginx.pid"):
            break
        process.kill()
        process.wait()
        output = "".join(path.read_text() for path in (work / "stderr.log", work / "error.log") if path.exists())
        if "Address already in use" not in output or attempt == 2:
            raise AssertionError(f"nginx did not start: {output}")
    try:
        yield https_port
    finally:
        process.send_signal(signal.SIGTERM)  # a fast stop: SIGQUIT's graceful one waits up to a second on idle connections
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _started(process: subprocess.Popen[bytes], port: int, pid_file: Path) -> bool:
    """True once this Nginx has bound its ports (it writes its pid file only after that) and answers on `port`; False
    when it exited or did not within 10 s. Listening alone could be whoever else holds the port: Nginx keeps retrying a
    taken port for seconds before it gives up."""
    deadline = time.monotonic() + 10
    while not (_pid_written(pid_file, process.pid) and _listening(port)):
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _pid_written(pid_file: Path, pid: int) -> bool:
    try:
        return pid_file.read_text().strip() == str(pid)
    except OSError:
        return False


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def tls_connection(port: int, hostname: str) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=hostname)


def read_answer(connection: socket.socket) -> bytes:
    """One HTTP/1.1 response: the head, then as many body bytes as its Content-Length says."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = connection.recv(65536)
        if not chunk:
            break
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            while len(body) < int(line.split(b":")[1]):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                body += chunk
    return head + b"\r\n\r\n" + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def https_request(port: int, hostname: str, method: str, path: str, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> bytes:
    head = "".join(f"{key}: {value}\r\n" for key, value in (headers or {}).items())
    with tls_connection(port, hostname) as connection:
        connection.sendall(f"{method} {path} HTTP/1.1\r\nHost: {hostname}\r\nConnection: close\r\n{head}"
                           f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        return read_answer(connection)


def https_flood(port: int, hostname: str, method: str, path: str, count: int, connections: int = 8) -> list[int]:
    """`count` requests as fast as possible: several keep-alive connections in parallel, so that a rate limit is
    tested against the requests' real arrival rate, not against how fast one client can shake hands."""
    statuses: list[int] = []
    lock = threading.Lock()

    def client(share: int) -> None:
        connection = tls_connection(port, hostname)
        try:
            for _ in range(share):
                connection.sendall(f"{method} {path} HTTP/1.1\r\nHost: {hostname}\r\nContent-Length: 0\r\n\r\n".encode())
                answer = read_answer(connection)
                with lock:
                    statuses.append(status_of(answer))
                if b"\r\nConnection: close" in answer.split(b"\r\n\r\n", 1)[0]:
                    connection.close()
                    connection = tls_connection(port, hostname)
        finally:
            connection.close()

    shares = [count // connections + (1 if i < count % connections else 0) for i in range(connections)]
    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses
