"""Gitea: configured entirely through GITEA__section__KEY environment; secrets through __FILE."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.constants import ADMIN_SSH_PORT, DOCKER_SUBNET, GITEA_HEALTH_PATH, SECRETS_DIR
from components.services import images, mail, postgres, valkey
from components.services.spec import (
    CHOWN_AND_SWITCH_USER,
    ConfigFile,
    Healthcheck,
    MetricsEndpoint,
    PublishedPort,
    RateLimit,
    Route,
    SecretFile,
    ServiceSpec,
    Volume,
)
from components.settings import Settings
from components.templates import read

NAME = "gitea"
HTTP_PORT = 3000
CONTAINER_SSH_PORT = 22
SUBDOMAIN = "git"
# topology ha: git over SSH has its own name (the network load balancer), as the web name is the application load balancer's.
SSH_SUBDOMAIN_HA = "git-ssh"
HEALTH_PATH = GITEA_HEALTH_PATH
METRICS_PATH = "/metrics"
METRICS_CREDENTIAL = "metricsToken"  # the credentials key of the bearer token Prometheus sends
GIT_UID = 1000  # the image's `git` user
ADMIN_BOOTSTRAP_SCRIPT = "/usr/local/bin/forgestack-bootstrap-admin"
ADMIN_PASSWORD_FILE = f"{SECRETS_DIR}/gitea_admin_password"
GITEA_PIDS_LIMIT = 2048  # every git operation is a process (and hooks, and ssh sessions)

# Where guessing or floods land; the zones' rates are in proxy.RATE_LIMIT_ZONES.
GITEA_RATE_LIMITS = (
    RateLimit("~ ^/user/(login|sign_up|forgot_password|two_factor|webauthn)", "login"),
    RateLimit("~ ^/[^/]+/[^/]+/(info/refs|git-upload-pack|git-receive-pack)$", "git"),
    RateLimit("^~ /api/", "api"),
)

REGISTRATION = {
    "closed": {"DISABLE_REGISTRATION": "true"},
    "approval": {"DISABLE_REGISTRATION": "false", "REGISTER_MANUAL_CONFIRM": "true"},
    "open": {"DISABLE_REGISTRATION": "false", "REGISTER_MANUAL_CONFIRM": "false"},
}


def public_url(settings: Settings) -> str:
    """Gitea's address for browsers and for anything outside the Docker network (no trailing slash)."""
    return f"https://{settings.hostname(SUBDOMAIN)}"


def mailer(settings: Settings) -> dict[str, str]:
    """Gitea's [mailer] on the stack's relay (SES or Mailpit); the SMTP user and password are files."""
    relay = mail.relay(settings)
    values = {"ENABLED": "true", "PROTOCOL": "smtp+starttls" if relay.starttls else "smtp", "SMTP_ADDR": relay.host,
              "SMTP_PORT": str(relay.port), "FROM": f"Forgestack <{mail.sender(settings, 'gitea')}>"}
    if relay.authenticated:
        values.update({"USER__FILE": mail.SMTP_USERNAME_FILE, "PASSWD__FILE": mail.SMTP_PASSWORD_FILE})
    return values


@dataclass(frozen=True)
class GiteaEndpoints:
    """Where Gitea finds what it shares: the one fact the single host and the ha topology differ in."""

    database_address: str  # host:port
    database_ssl_mode: str  # disable on the host's private Docker network; require to RDS
    cache_address: str  # host:port of Valkey
    cache_tls: bool
    trusted_proxies: str  # the networks the reverse proxy (Nginx, the load balancer) connects from
    webhook_hosts: str  # [webhook] ALLOWED_HOST_LIST
    storage: dict[str, str] = field(default_factory=dict)  # [storage]; empty: files below /data
    # Several instances cannot share a file index: the issue indexer lives in the database then, the code indexer is off.
    indexer: dict[str, str] = field(default_factory=dict)


def single_host_endpoints() -> GiteaEndpoints:
    """Everything on the host's private Docker network, beside Gitea."""
    return GiteaEndpoints(
        database_address=f"{postgres.NAME}:{postgres.PORT}", database_ssl_mode="disable",
        cache_address=f"{valkey.NAME}:{valkey.PORT}", cache_tls=False,
        # Gitea 1.27 no longer trusts every proxy: trust exactly the Docker network Nginx sits on.
        trusted_proxies=DOCKER_SUBNET,
        # Webhooks may reach the Internet and this host's own services (the relay, a CI) on the Docker network.
        webhook_hosts=f"external,{DOCKER_SUBNET}",
    )


def ha_endpoints(database_address: str, cache_address: str, bucket: str, region: str, vpc_cidr: str) -> GiteaEndpoints:
    """topology ha: RDS over TLS, ElastiCache over TLS, objects in S3 with the task role's credentials (Gitea's S3 client
    finds them through the ECS credentials endpoint when no keys are configured), the issue index in the database."""
    return GiteaEndpoints(
        database_address=database_address, database_ssl_mode="require",
        cache_address=cache_address, cache_tls=True,
        trusted_proxies=vpc_cidr,  # the load balancer's nodes have addresses of the VPC's public subnets
        webhook_hosts="external",  # nothing of the forge's own is reached by webhook in ha
        storage={"STORAGE_TYPE": "minio", "MINIO_ENDPOINT": f"s3.{region}.amazonaws.com", "MINIO_BUCKET": bucket,
                 "MINIO_LOCATION": region, "MINIO_USE_SSL": "true"},
        indexer={"ISSUE_INDEXER_TYPE": "db", "REPO_INDEXER_ENABLED": "false"},
    )


def ssh_hostname(settings: Settings) -> str:
    return settings.hostname(SSH_SUBDOMAIN_HA if settings.topology == "ha" else SUBDOMAIN)


def ssh_clone_base(settings: Settings) -> str:
    """Where git over SSH is reached: ssh://git@git.<domain>/ on port 22, with the port otherwise."""
    port = "" if settings.git_ssh_port == ADMIN_SSH_PORT else f":{settings.git_ssh_port}"
    return f"ssh://git@{ssh_hostname(settings)}{port}/"


def gitea_env(settings: Settings, endpoints: GiteaEndpoints) -> dict[str, str]:
    hostname = settings.hostname(SUBDOMAIN)
    settings_by_section: dict[str, dict[str, str]] = {
        "database": {
            "DB_TYPE": "postgres", "HOST": endpoints.database_address, "NAME": postgres.DATABASE,
            # Gitea's own role everywhere (on RDS, not the master user).
            "USER": postgres.USER, "PASSWD__FILE": postgres.PASSWORD_FILE, "SSL_MODE": endpoints.database_ssl_mode,
        },
        "server": {
            "DOMAIN": hostname, "ROOT_URL": f"https://{hostname}/", "PROTOCOL": "http", "HTTP_PORT": str(HTTP_PORT),
            "SSH_DOMAIN": ssh_hostname(settings), "SSH_PORT": str(settings.git_ssh_port), "SSH_LISTEN_PORT": str(CONTAINER_SSH_PORT),
            "LFS_START_SERVER": "true", "OFFLINE_MODE": "true",
        },
        "security": {
            "INSTALL_LOCK": "true",
            "SECRET_KEY__FILE": f"{SECRETS_DIR}/gitea_secret_key",
            "INTERNAL_TOKEN__FILE": f"{SECRETS_DIR}/gitea_internal_token",
            "REVERSE_PROXY_TRUSTED_PROXIES": endpoints.trusted_proxies,
        },
        # New accounts confirm their address whenever others may register; everyone gets notification mail.
        "service": {**REGISTRATION[settings.gitea_registration], "ENABLE_NOTIFY_MAIL": "true",
                    "REGISTER_EMAIL_CONFIRM": "false" if settings.gitea_registration == "closed" else "true"},
        "mailer": mailer(settings),
        # Valkey for cache, sessions and queues; each connection string (with the password) is a secret file.
        "cache": {"ADAPTER": "redis", "HOST__FILE": valkey_file("cache")},
        "session": {"PROVIDER": "redis", "PROVIDER_CONFIG__FILE": valkey_file("session"), "COOKIE_SECURE": "true"},
        "queue": {"TYPE": "redis", "CONN_STR__FILE": valkey_file("queue")},
        "webhook": {"ALLOWED_HOST_LIST": endpoints.webhook_hosts},
        "actions": {"ENABLED": "true" if settings.ci == "actions" else "false"},
        "metrics": {"ENABLED": "true", "TOKEN__FILE": f"{SECRETS_DIR}/gitea_metrics_token"},
        "log": {"LEVEL": "Info"},
        "storage": endpoints.storage,
        "indexer": endpoints.indexer,
    }
    env = {"USER_UID": str(GIT_UID), "USER_GID": str(GIT_UID)}
    for section, values in settings_by_section.items():  # an empty section keeps Gitea's defaults
        env.update({f"GITEA__{section}__{key}": value for key, value in values.items()})
    return env


def valkey_file(use: str) -> str:
    return f"{SECRETS_DIR}/valkey_{use}"


def gitea_secret_files(settings: Settings, endpoints: GiteaEndpoints) -> tuple[SecretFile, ...]:
    """Every secret Gitea reads, as files: the same list on the single host (uploaded) and in ha (written at task start)."""
    return (
        SecretFile("postgresPassword", postgres.PASSWORD_FILE, GIT_UID),
        SecretFile("giteaSecretKey", f"{SECRETS_DIR}/gitea_secret_key", GIT_UID),
        SecretFile("giteaInternalToken", f"{SECRETS_DIR}/gitea_internal_token", GIT_UID),
        SecretFile(METRICS_CREDENTIAL, f"{SECRETS_DIR}/gitea_metrics_token", GIT_UID),
        SecretFile("giteaAdminPassword", ADMIN_PASSWORD_FILE, GIT_UID),
        *(SecretFile("valkeyPassword", valkey_file(use), GIT_UID,
                     template=valkey.connection_template(use, endpoints.cache_address, endpoints.cache_tls))
          for use in valkey.DATABASES),
        *((SecretFile(mail.SMTP_USERNAME, mail.SMTP_USERNAME_FILE, GIT_UID),
           SecretFile(mail.SMTP_PASSWORD, mail.SMTP_PASSWORD_FILE, GIT_UID)) if mail.relay(settings).authenticated else ()),
    )


def gitea_spec(settings: Settings, memory_mb: int, tools: tuple[ConfigFile, ...] = ()) -> ServiceSpec:
    """tools: scripts the deploy runs in the container besides the admin bootstrap (single sign-on's client script)."""
    endpoints = single_host_endpoints()
    return ServiceSpec(
        name=NAME,
        image=images.gitea(settings.gitea_version),
        memory_mb=memory_mb,
        env=gitea_env(settings, endpoints),
        secret_files=gitea_secret_files(settings, endpoints),
        config_files=(ConfigFile(ADMIN_BOOTSTRAP_SCRIPT, read("gitea-bootstrap-admin.sh"), executable=True), *tools),
        volumes=(Volume("gitea", "/data", backup=True),),
        ports=(PublishedPort(settings.git_ssh_port, CONTAINER_SSH_PORT, private_address=settings.host_sshd_loopback_only),),
        # s6 (root) sets up /data for git, runs Gitea as git and sshd on 22: sshd binds below 1024, chroots
        # its privilege separation and records logins; s6 signals its git-owned children (KILL).
        capabilities=(*CHOWN_AND_SWITCH_USER, "NET_BIND_SERVICE", "SYS_CHROOT", "AUDIT_WRITE", "KILL"),
        pids_limit=GITEA_PIDS_LIMIT,
        healthcheck=Healthcheck(("CMD", "curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{HTTP_PORT}{HEALTH_PATH}"),
                                start_period="60s"),
        route=Route(SUBDOMAIN, HTTP_PORT, limits=GITEA_RATE_LIMITS, health_path=HEALTH_PATH),
        metrics=MetricsEndpoint(HTTP_PORT, METRICS_PATH, bearer_credential=METRICS_CREDENTIAL),
        depends_on=(postgres.NAME, valkey.NAME),
    )


def admin_bootstrap_command(settings: Settings, container_name: str) -> list[str]:
    """docker exec that creates the admin user once (a no-op when it exists); the password stays in a file."""
    return ["docker", "exec", "--user", "git", container_name, ADMIN_BOOTSTRAP_SCRIPT,
            settings.gitea_admin_user, settings.acme_email]
