"""The generated Nginx configuration, checked by the real `nginx -t` with test certificates."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from components.services.catalog import probe_urls, service_specs
from components.services.proxy import RATE_LIMIT_ZONES, ProxyRoute, proxy_routes, render_nginx_conf
from components.settings import parse
from rehearsal.engine import stack_config
from tests.nginx_support import https_flood, https_request, running_nginx, status_of
from tests.servers import QUICK_SHUTDOWN

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _routes(stack: str) -> list[ProxyRoute]:
    settings = parse(stack_config(stack), stack=stack)
    return proxy_routes(settings, service_specs(settings))


def test_one_server_block_per_route() -> None:
    routes = [ProxyRoute("git.example.com", "gitea:3000"), ProxyRoute("grafana.example.com", "grafana:3000")]
    conf = render_nginx_conf(routes)
    assert conf.count("server_name git.example.com;") == 1
    assert conf.count("server_name grafana.example.com;") == 1
    assert conf.count("listen 443 ssl http2;") == 2


def test_duplicate_hostnames_are_refused() -> None:
    with pytest.raises(ValueError, match="same hostname"):
        render_nginx_conf([ProxyRoute("git.example.com", "a:1"), ProxyRoute("git.example.com", "b:2")])


def test_gitea_block_has_the_documented_settings() -> None:
    conf = render_nginx_conf(_routes("dev"))
    block = conf[conf.index("server_name git.dev.forge.example.com;"):]
    for directive in (
        "client_max_body_size 512m;", "ssl_protocols TLSv1.2 TLSv1.3;", "proxy_set_header Host $host;",
        "proxy_set_header X-Real-IP $remote_addr;", "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;", "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;", "Strict-Transport-Security", "X-Content-Type-Options",
        "set $upstream gitea:3000;", "proxy_pass http://$upstream;",
    ):
        assert directive in block, directive


def test_http_redirects_except_the_acme_challenge() -> None:
    conf = render_nginx_conf(_routes("dev"))
    http_block = conf[conf.index("listen 80 default_server;"):conf.index("listen 443 ssl default_server;")]
    assert "location /.well-known/acme-challenge/" in http_block
    assert "return 301 https://$host$request_uri;" in http_block
    assert not re.search(r"proxy_pass", http_block)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tls_dir = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", "/CN=forgestack-test", "-keyout", str(tls_dir / "privkey.pem"), "-out", str(tls_dir / "fullchain.pem")],
        check=True, capture_output=True,
    )
    return tls_dir


def _nginx_test(tmp_path: Path, conf: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "forgestack.conf").write_text(conf)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {tmp_path}/forgestack.conf;\n}}\n"
    )
    return subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True, check=False)


@pytest.mark.validator
@pytest.mark.skipif(shutil.which("nginx") is None and not Path(NGINX).exists(), reason="Debian nginx-light not installed")
@pytest.mark.parametrize("stack", ["dev", "prod", "local"])
def test_nginx_accepts_the_generated_configuration(tmp_path: Path, certificate: Path, stack: str) -> None:
    conf = render_nginx_conf(_routes(stack), tls_dir=str(certificate), acme_webroot=str(tmp_path / "acme"))
    result = _nginx_test(tmp_path, conf)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.mark.validator
@pytest.mark.skipif(shutil.which("nginx") is None and not Path(NGINX).exists(), reason="Debian nginx-light not installed")
def test_nginx_rejects_a_broken_configuration(tmp_path: Path, certificate: Path) -> None:
    conf = render_nginx_conf(_routes("dev"), tls_dir=str(certificate)).replace("proxy_http_version 1.1;", "proxy_http_version;")
    assert _nginx_test(tmp_path, conf).returncode != 0


# ------------------------------------------------------------ the public surface, attacked through the real Nginx


class Backend:
    """Stands in for every service behind the proxy: answers 200 "backend" to anything, counting requests. With
    `open_paths`, like a service behind a login: 200 on those paths, a 302 to its login page everywhere else."""

    def __init__(self, open_paths: frozenset[str] | None = None) -> None:
        self.requests: list[str] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                """Quiet: the tests read the status codes."""

            def _answer(self) -> None:
                backend.requests.append(f"{self.command} {self.path}")
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if open_paths is not None and self.path not in open_paths:
                    self.send_response(302)
                    self.send_header("Location", "/login")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.write(b"backend")

            do_GET = do_POST = _answer  # noqa: N815 (http.server's method names)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_port}"


@pytest.fixture
def backend() -> Iterator[Backend]:
    fake = Backend()
    yield fake
    fake.server.shutdown()


def route_of(routes: list[ProxyRoute], subdomain: str) -> ProxyRoute:
    return next(route for route in routes if route.hostname.startswith(f"{subdomain}."))


def routes_to(backend: Backend, stack: str, **overrides: str) -> list[ProxyRoute]:
    """The stack's rendered routes, every upstream replaced by the fake backend."""
    settings = parse(stack_config(stack, overrides), stack=stack)
    return [replace(route, upstream=backend.address) for route in proxy_routes(settings, service_specs(settings))]


@pytest.mark.validator
def test_every_probe_url_gets_a_2xx_through_nginx_where_the_root_did_not(tmp_path: Path) -> None:
    """ProbeFailing must not fire on a healthy forge: the probes ask each route's health path, which passes Nginx
    (also on the relay's host, where only exact paths are routed) and answers without a login."""
    settings = parse(stack_config("dev"), stack="dev")
    specs = service_specs(settings)
    health_paths = frozenset(spec.route.health_path for spec in specs if spec.route)
    services = Backend(open_paths=health_paths)
    try:
        routes = [replace(route, upstream=services.address) for route in proxy_routes(settings, specs)]
        urls = probe_urls(settings, specs)
        assert {url.split("/")[2] for url in urls} == {route.hostname for route in routes}  # dev: every public name
        with running_nginx(tmp_path, routes) as port:
            for url in urls:
                hostname, path = url.removeprefix("https://").split("/", 1)
                assert status_of(https_request(port, hostname, "GET", "/" + path)) == 200, url
            roots = {route.hostname: status_of(https_request(port, route.hostname, "GET", "/")) for route in routes}
        assert roots[settings.hostname("grafana")] == 302 and roots[settings.hostname("hooks")] == 404  # what "/" gave
    finally:
        services.server.shutdown()


@pytest.mark.validator
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_internal_endpoints_are_404_on_every_public_hostname(tmp_path: Path, backend: Backend, stack: str) -> None:
    routes = routes_to(backend, stack)
    with running_nginx(tmp_path, routes) as port:
        for route in routes:
            for path in ("/metrics", "/metrics/", "/metrics/x", "/metrics?format=json"):
                assert status_of(https_request(port, route.hostname, "GET", path)) == 404, f"{route.hostname}{path}"
            if not route.paths:  # what is meant to be public still reaches the service
                assert status_of(https_request(port, route.hostname, "GET", "/explore/repos")) == 200, route.hostname
    assert not [request for request in backend.requests if request.split()[1].startswith("/metrics")]


@pytest.mark.validator
def test_a_login_burst_is_throttled_per_client(tmp_path: Path, backend: Backend) -> None:
    routes = routes_to(backend, "dev")
    gitea = route_of(routes, "git")
    _, burst = RATE_LIMIT_ZONES["login"]
    with running_nginx(tmp_path, routes) as port:
        statuses = [status_of(https_request(port, gitea.hostname, "POST", "/user/login", b"user_name=a&password=b"))
                    for _ in range(30)]
        assert statuses[: burst + 1] == [200] * (burst + 1)  # the burst passes at once
        assert statuses.count(429) >= 30 - burst - 2  # then the rate (10 a minute) holds
        # Other zones are separate: browsing and the API still work for the same client.
        assert status_of(https_request(port, gitea.hostname, "GET", "/api/v1/version")) == 200
        assert status_of(https_request(port, gitea.hostname, "GET", "/team/site")) == 200
        grafana = route_of(routes, "grafana")
        grafana_statuses = [status_of(https_request(port, grafana.hostname, "POST", "/login")) for _ in range(burst + 5)]
        assert 429 in grafana_statuses  # Grafana's login has the same limit


@pytest.mark.validator
def test_git_over_http_is_rate_limited_but_a_fetch_passes(tmp_path: Path, backend: Backend) -> None:
    routes = routes_to(backend, "dev")
    gitea = route_of(routes, "git")
    _, burst = RATE_LIMIT_ZONES["git"]
    with running_nginx(tmp_path, routes) as port:
        fetch = [status_of(https_request(port, gitea.hostname, "GET", "/team/site.git/info/refs?service=git-upload-pack")),
                 status_of(https_request(port, gitea.hostname, "POST", "/team/site.git/git-upload-pack", b"0000"))]
        assert fetch == [200, 200]
        started = time.monotonic()
        flood = https_flood(port, gitea.hostname, "GET", "/team/site/info/refs", burst + 60)
        elapsed = time.monotonic() - started
        per_second = int(RATE_LIMIT_ZONES["git"][0].removesuffix("r/s"))
        assert 429 in flood
        # What passed is at most the burst plus what the rate refilled meanwhile.
        assert flood.count(200) <= burst + 1 + per_second * elapsed


@pytest.mark.validator
@pytest.mark.parametrize(("allowed", "expected"), [("203.0.113.0/24", 403), ("127.0.0.0/8", 200)])
def test_admin_uis_limited_to_admin_cidrs(tmp_path: Path, backend: Backend, allowed: str, expected: int) -> None:
    """adminUiAccess admin-cidrs: Grafana and Portainer answer only the listed networks (the test client is 127.0.0.1)."""
    routes = [replace(route, allow=(allowed,)) if route.allow else route
              for route in routes_to(backend, "dev", **{"forgestack:adminUiAccess": "admin-cidrs",
                                                        "forgestack:adminCidrs": '["203.0.113.0/24"]'})]
    admin = [route for route in routes if route.allow]
    assert sorted(route.hostname.split(".")[0] for route in admin) == ["grafana", "portainer"]
    with running_nginx(tmp_path, routes) as port:
        for route in admin:
            assert status_of(https_request(port, route.hostname, "GET", "/")) == expected, route.hostname
        gitea = route_of(routes, "git")
        assert status_of(https_request(port, gitea.hostname, "GET", "/")) == 200  # Gitea stays public


@pytest.mark.validator
def test_the_body_size_limit_follows_the_setting(tmp_path: Path, backend: Backend) -> None:
    routes = routes_to(backend, "dev", **{"forgestack:proxyMaxBodySize": "1m"})
    gitea = route_of(routes, "git")
    with running_nginx(tmp_path, routes) as port:
        assert status_of(https_request(port, gitea.hostname, "POST", "/team/site/upload", b"x" * 1000)) == 200
        assert status_of(https_request(port, gitea.hostname, "POST", "/team/site/upload", b"x" * (2**20 + 1))) == 413
