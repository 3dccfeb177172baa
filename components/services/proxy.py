"""Nginx, the only container publishing 80 and 443, and certbot keeping its certificate current."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from components.constants import HTTP_PORT, HTTPS_PORT
from components.services import images
from components.services.spec import ConfigFile, Healthcheck, PublishedPort, SecretFile, ServiceSpec, Volume
from components.settings import Settings
from components.templates import read, render

NAME = "proxy"
CERTBOT_NAME = "certbot"
ACME_WEBROOT = "/var/www/acme"
LETSENCRYPT_DIR = "/etc/letsencrypt"
TLS_DIR = "/etc/nginx/tls"
BOOTSTRAP_TLS_DIR = "/etc/nginx/bootstrap-tls"
CLIENT_MAX_BODY_SIZE = "512M"
START_SCRIPT = "/usr/local/bin/forgestack-proxy-start"
CERTBOT_SCRIPT = "/usr/local/bin/forgestack-certbot"
# Credentials keys of the self-signed bootstrap certificate the deploy step generates.
BOOTSTRAP_CERT = "bootstrapTlsCertificate"
BOOTSTRAP_KEY = "bootstrapTlsKey"


@dataclass(frozen=True)
class ProxyRoute:
    hostname: str
    upstream: str  # container:port inside the Docker network
    paths: tuple[str, ...] = ()  # only these exact paths, buffered; every path when empty
    max_body_size: str = CLIENT_MAX_BODY_SIZE


def proxy_routes(settings: Settings, specs: Sequence[ServiceSpec]) -> list[ProxyRoute]:
    return [
        ProxyRoute(settings.hostname(spec.route.subdomain), f"{spec.name}:{spec.route.port}", spec.route.paths,
                   spec.route.max_body_size or CLIENT_MAX_BODY_SIZE)
        for spec in specs if spec.route
    ]


def render_nginx_conf(routes: Sequence[ProxyRoute], tls_dir: str = TLS_DIR, acme_webroot: str = ACME_WEBROOT,
                      http_port: int = HTTP_PORT, https_port: int = HTTPS_PORT) -> str:
    hostnames = [route.hostname for route in routes]
    if len(set(hostnames)) != len(hostnames):
        raise ValueError(f"two services route the same hostname: {hostnames}")
    return render(
        "nginx-forgestack.conf.j2", routes=routes, tls_dir=tls_dir, acme_webroot=acme_webroot,
        http_port=http_port, https_port=https_port,
    )


def proxy_spec(settings: Settings, routed: Sequence[ServiceSpec], memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=NAME,
        image=images.NGINX,
        memory_mb=memory_mb,
        config_files=(
            ConfigFile("/etc/nginx/conf.d/default.conf", render_nginx_conf(proxy_routes(settings, routed))),
            ConfigFile(START_SCRIPT, read("proxy-start.sh"), executable=True),
        ),
        secret_files=(
            SecretFile(BOOTSTRAP_CERT, f"{BOOTSTRAP_TLS_DIR}/fullchain.pem"),
            SecretFile(BOOTSTRAP_KEY, f"{BOOTSTRAP_TLS_DIR}/privkey.pem"),
        ),
        volumes=(Volume("letsencrypt", LETSENCRYPT_DIR, read_only=True), Volume("acme-webroot", ACME_WEBROOT, read_only=True)),
        ports=(PublishedPort(HTTP_PORT, HTTP_PORT), PublishedPort(HTTPS_PORT, HTTPS_PORT)),
        healthcheck=Healthcheck(("CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{HTTP_PORT}/healthz"),
                                interval="15s", start_period="10s"),
        command=("/bin/sh", START_SCRIPT),
    )


def certbot_spec(settings: Settings, hostnames: Sequence[str], memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=CERTBOT_NAME,
        image=images.CERTBOT,
        memory_mb=memory_mb,
        env={"CERT_DOMAINS": ",".join(hostnames), "ACME_EMAIL": settings.acme_email,
             "ACME_STAGING": "true" if settings.acme_staging else "false"},
        config_files=(ConfigFile(CERTBOT_SCRIPT, read("certbot-loop.sh"), executable=True),),
        volumes=(Volume("letsencrypt", LETSENCRYPT_DIR), Volume("acme-webroot", ACME_WEBROOT)),
        entrypoint=("/bin/sh",),  # the image's entrypoint is `certbot`; the loop script drives it
        command=(CERTBOT_SCRIPT,),
        depends_on=(NAME,),  # the webroot must be served before the first challenge
    )
