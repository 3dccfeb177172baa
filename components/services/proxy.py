"""Nginx, the only container publishing 80 and 443, and certbot keeping its certificate current."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from components.constants import HTTP_PORT, HTTPS_PORT
from components.services import images, workspaces
from components.services.spec import (
    CHOWN_AND_SWITCH_USER,
    ConfigFile,
    Healthcheck,
    PublishedPort,
    RateLimit,
    SecretFile,
    ServiceSpec,
    Volume,
)
from components.settings import DEFAULT_PROXY_MAX_BODY_SIZE, Settings
from components.templates import read, render

NAME = "proxy"
CERTBOT_NAME = "certbot"
ACME_WEBROOT = "/var/www/acme"
LETSENCRYPT_DIR = "/etc/letsencrypt"
TLS_DIR = "/etc/nginx/tls"
BOOTSTRAP_TLS_DIR = "/etc/nginx/bootstrap-tls"
# Per-client request limits (Nginx limit_req zones keyed by the client address): name -> (rate, burst).
# Bursts are served at once (nodelay); beyond them the client gets 429 until the rate lets it in again.
RATE_LIMIT_ZONES = {
    "login": ("10r/m", 10),  # password guessing: 10 tries at once, then one every 6 s
    "api": ("20r/s", 100),  # the API and the runner's polling (CI clones come from the host's own address)
    "git": ("10r/s", 50),  # git over HTTP: a fetch is two requests, a CI burst many
}
CONNECTIONS_PER_CLIENT = 64  # open connections per client address, git and browsers together
INTERNAL_PATHS = ("/metrics",)  # scraped inside the Docker network, never served on a public hostname
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
    max_body_size: str = DEFAULT_PROXY_MAX_BODY_SIZE
    allow: tuple[str, ...] = ()  # when set, only these client networks (admin UIs limited to adminCidrs)
    limits: tuple[RateLimit, ...] = ()
    health_path: str = "/"  # answers 2xx without a login: what the probes ask
    # A service outside the Docker network that speaks only HTTPS (Kasm Workspaces on its host in the VPC): upstream is
    # an address:port, reached over TLS, with long-lived streams (sessions are websockets for hours) and large headers.
    remote_tls: bool = False


def proxy_routes(settings: Settings, specs: Sequence[ServiceSpec]) -> list[ProxyRoute]:
    routes = []
    if workspaces.enabled(settings):
        routes.append(ProxyRoute(settings.hostname(workspaces.SUBDOMAIN), workspaces.upstream(settings),
                                 max_body_size=settings.proxy_max_body_size, limits=(workspaces.LOGIN_LIMIT,),
                                 health_path=workspaces.HEALTH_PATH, remote_tls=True))
    for spec in specs:
        if not spec.route:
            continue
        limited_to_admins = spec.route.admin_ui and settings.is_aws and settings.admin_ui_access == "admin-cidrs"
        routes.append(ProxyRoute(
            settings.hostname(spec.route.subdomain), f"{spec.name}:{spec.route.port}", spec.route.paths,
            spec.route.max_body_size or settings.proxy_max_body_size,
            allow=settings.admin_cidrs if limited_to_admins else (), limits=spec.route.limits, health_path=spec.route.health_path,
        ))
    return routes


def render_nginx_conf(routes: Sequence[ProxyRoute], tls_dir: str = TLS_DIR, acme_webroot: str = ACME_WEBROOT,
                      http_port: int = HTTP_PORT, https_port: int = HTTPS_PORT) -> str:
    hostnames = [route.hostname for route in routes]
    if len(set(hostnames)) != len(hostnames):
        raise ValueError(f"two services route the same hostname: {hostnames}")
    unknown = {limit.zone for route in routes for limit in route.limits} - set(RATE_LIMIT_ZONES)
    if unknown:
        raise ValueError(f"rate limits name unknown zones {sorted(unknown)}; expected one of {sorted(RATE_LIMIT_ZONES)}")
    zones = {name: {"rate": rate, "burst": burst} for name, (rate, burst) in RATE_LIMIT_ZONES.items()}
    return render(
        "nginx-forgestack.conf.j2", routes=routes, tls_dir=tls_dir, acme_webroot=acme_webroot,
        http_port=http_port, https_port=https_port, zones=zones, connections_per_client=CONNECTIONS_PER_CLIENT,
        internal_paths=INTERNAL_PATHS,
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
        # The root master binds 80/443, owns its temp directories to nginx, runs workers as nginx and signals them.
        capabilities=(*CHOWN_AND_SWITCH_USER, "NET_BIND_SERVICE", "KILL"),
    )


def certbot_spec(settings: Settings, hostnames: Sequence[str], memory_mb: int) -> ServiceSpec:
    """HTTP-01 through the webroot Nginx serves; DNS-01 through Route 53 when an allow-list keeps Let's Encrypt off
    port 80. DNS-01 runs on the host's network: the plugin signs its Route 53 calls with the instance role, which IMDSv2's
    hop limit of 1 keeps from bridged containers."""
    env = {"CERT_DOMAINS": ",".join(hostnames), "ACME_EMAIL": settings.acme_email,
           "ACME_STAGING": "true" if settings.acme_staging else "false", "ACME_CHALLENGE": settings.acme_challenge}
    webroot = ServiceSpec(
        name=CERTBOT_NAME,
        image=images.CERTBOT,
        memory_mb=memory_mb,
        env=env,
        config_files=(ConfigFile(CERTBOT_SCRIPT, read("certbot-loop.sh"), executable=True),),
        volumes=(Volume("letsencrypt", LETSENCRYPT_DIR), Volume("acme-webroot", ACME_WEBROOT)),
        entrypoint=("/bin/sh",),  # the image's entrypoint is `certbot`; the loop script drives it
        command=(CERTBOT_SCRIPT,),
        depends_on=(NAME,),  # the webroot must be served before the first challenge
    )
    if settings.acme_challenge == "http-01":
        return webroot
    return replace(webroot, image=images.CERTBOT_DNS_ROUTE53, env={**env, "AWS_DEFAULT_REGION": settings.region},
                   volumes=(Volume("letsencrypt", LETSENCRYPT_DIR),), depends_on=(), host_network=True, networks=())
