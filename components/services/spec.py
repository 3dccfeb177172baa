"""ServiceSpec: everything the deploy mapping needs to run one container. Pure data, no Pulumi."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from components.constants import DOCKER_NETWORK, DOCKER_NETWORKS
from policy.forgestack_rules import PINNED_IMAGE, secret_env_name

# name:tag with an exact tag (digits, not a floating word like latest/stable/alpine alone).
# Every container starts with all capabilities dropped and no-new-privileges; a service adds back only what
# its image's entrypoint does (the reasons are listed per container in policy ACCEPTED_RISKS).
# Root entrypoints that fix ownership of their data and then switch to the service's own user:
CHOWN_AND_SWITCH_USER = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")
DEFAULT_PIDS_LIMIT = 512  # processes and threads per container: a fork bomb stops there



@dataclass(frozen=True)
class SecretFile:
    """A credential handed to the container as a file (read through the image's `*_FILE` support)."""

    credential: str  # key in the credentials secret, e.g. postgresPassword
    path: str  # where the container reads it
    owner: int = 0  # uid that must read it inside the container
    template: str = "{value}"  # the file's content around the secret, e.g. a connection string ({value} is replaced)


@dataclass(frozen=True)
class ConfigFile:
    """A rendered file uploaded into the container; a change shows in preview and replaces the container."""

    path: str
    content: str
    executable: bool = False
    # Placeholders in content filled at deploy time from credentials (placeholder, credentials key): for a value that
    # exists only once a resource does (the SES SMTP user's access key id) in a file that cannot read it from a file.
    values: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Volume:
    """Persistent data. On AWS a directory on the data volume, on the local stack a Docker volume."""

    name: str  # also the directory name below DATA_MOUNT
    target: str
    read_only: bool = False
    backup: bool = False  # archived by the host's backup job (databases are dumped instead, never copied live)
    owner: int | None = None  # uid that must own the directory (images that do not run as root); None: root


@dataclass(frozen=True)
class HostMount:
    """A path of the host itself, read-only: what the exporters and the log collector observe."""

    source: str
    target: str


@dataclass(frozen=True)
class PublishedPort:
    host: int
    container: int
    loopback: bool = False  # bound to the host's 127.0.0.1 only (reached through SSM port forwarding)
    # Bound to the host's private address only, not all interfaces: the host's own sshd keeps loopback on the same port
    # (git SSH on 22). The Elastic IP delivers to the private address, so the world still reaches it.
    private_address: bool = False


@dataclass(frozen=True)
class Route:
    """Nginx routes https://<subdomain>.<domain>/ to this container's port.

    With `paths`, only those exact paths are routed (everything else is 404 at Nginx) and each request is
    buffered whole at Nginx before it reaches the service, so slow senders never hold the service's workers."""

    subdomain: str
    port: int
    paths: tuple[str, ...] = ()
    max_body_size: str | None = None  # Nginx size syntax (1m); the stack's proxyMaxBodySize when None
    admin_ui: bool = False  # an operators' UI: forgestack:adminUiAccess decides who reaches it
    limits: tuple[RateLimit, ...] = ()  # per-client request rates on the paths that invite guessing or floods
    # A path that answers 2xx without a login while the service works: the HTTPS probes and the Route 53 health
    # check ask it (a login page redirects, so "/" would fail the probe from day one).
    health_path: str = ""

    def __post_init__(self) -> None:
        if not self.health_path.startswith("/"):
            raise ValueError(f"route {self.subdomain}: health_path must be a path answering 2xx without a login, e.g. /healthz")
        if self.paths and self.health_path not in self.paths:
            raise ValueError(f"route {self.subdomain}: health_path {self.health_path} must be one of its routed paths {self.paths}")


@dataclass(frozen=True)
class RateLimit:
    """Requests matching an Nginx location are limited per client address by one of the proxy's zones."""

    location: str  # Nginx location match, e.g. "= /login" or "~ ^/user/(login|sign_up)$"
    zone: str  # a key of proxy.RATE_LIMIT_ZONES


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]  # Docker's CMD form
    interval: str = "30s"
    timeout: str = "5s"
    retries: int = 5
    start_period: str = "30s"


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where Prometheus scrapes this service (inside the Docker network)."""

    port: int
    path: str = "/metrics"
    bearer_credential: str | None = None  # credentials key holding the bearer token


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # container name suffix and DNS name inside the Docker network
    image: str  # repository:exact-tag
    memory_mb: int
    env: Mapping[str, str] = field(default_factory=dict)
    secret_files: tuple[SecretFile, ...] = ()
    config_files: tuple[ConfigFile, ...] = ()
    volumes: tuple[Volume, ...] = ()
    host_mounts: tuple[HostMount, ...] = ()
    ports: tuple[PublishedPort, ...] = ()
    healthcheck: Healthcheck | None = None
    route: Route | None = None
    metrics: MetricsEndpoint | None = None
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()  # only where the image's own entrypoint must be replaced
    depends_on: tuple[str, ...] = ()  # services that must be healthy before this one starts
    user: str = ""  # uid:gid to run as, where the image would otherwise run as root
    shm_size_mb: int | None = None
    capabilities: tuple[str, ...] = ()  # added back after dropping ALL; empty for images that run as a non-root user
    pids_limit: int = DEFAULT_PIDS_LIMIT
    networks: tuple[str, ...] = (DOCKER_NETWORK,)  # Docker networks it joins (keys of DOCKER_NETWORKS), as `name`
    # The host's network namespace instead of Docker networks: for a client that needs the instance role (IMDSv2's hop
    # limit of 1 keeps bridged containers out) and serves nothing. No ports, no route, no Docker networks.
    host_network: bool = False

    def __post_init__(self) -> None:
        if not PINNED_IMAGE.match(self.image):  # the policy pack's rule: exact tags, MinIO's RELEASE stamps, digests
            raise ValueError(f"service {self.name}: image {self.image!r} is not pinned to an exact tag")
        secret_env = [key for key in self.env if secret_env_name(key)]
        if secret_env:
            raise ValueError(f"service {self.name}: {secret_env} look like secrets in plain env; use secret_files")
        if self.host_network:
            if self.networks or self.ports or self.route or self.metrics:
                raise ValueError(f"service {self.name}: on the host's network it joins no Docker network and publishes nothing")
            return
        unknown = [network for network in self.networks if network not in DOCKER_NETWORKS]
        if unknown or not self.networks:
            raise ValueError(f"service {self.name}: networks {list(self.networks)}; expected some of {list(DOCKER_NETWORKS)}")


def image_repository(image: str) -> str:
    return image.rsplit(":", 1)[0]


def image_tag(image: str) -> str:
    return image.rsplit(":", 1)[1]
