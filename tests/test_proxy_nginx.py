"""The generated Nginx configuration, checked by the real `nginx -t` with test certificates."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components.services.catalog import service_specs
from components.services.proxy import ProxyRoute, proxy_routes, render_nginx_conf
from components.settings import parse
from rehearsal.engine import stack_config

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
        "client_max_body_size 512M;", "ssl_protocols TLSv1.2 TLSv1.3;", "proxy_set_header Host $host;",
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
