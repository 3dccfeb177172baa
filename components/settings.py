"""The one place that reads `pulumi.Config`: typed, validated stack settings.

Every key lives in the `forgestack:` namespace and is declared once, as a field of `Settings`
(alias = the camelCase config key). `Pulumi.yaml` declares the same keys for the CLI; a test
keeps the two in step. Bad input raises `ConfigError` (a `pulumi.RunError`, so the CLI prints
one clean line) before the program registers any resource.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import json
import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

import pulumi
import pydantic
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from components import budget
from components.constants import ADMIN_SSH_PORT, GIT_SSH_ALT_PORT, GIT_SSH_PORTS, PROJECT

NAMESPACE = PROJECT
PLATFORMS = ("aws", "local")
CI_MODES = ("actions", "drone", "none")
SUPPORTED_POSTGRES_MAJORS = (18,)
MIN_GITEA_VERSION = (1, 27, 0)
# CloudWatch Logs accepts only these retention periods.
RELAY_EVENTS = ("push", "release", "ci_failure")
# Backup timer intervals that divide a day evenly, so backups run at the same hours every day.
BACKUP_INTERVALS_HOURS = (1, 2, 3, 4, 6, 8, 12, 24)
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)

_DNS_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
# Every pattern is used with fullmatch: `$` with match() would let a trailing newline through, which surfaces
# later as a broken ROOT_URL, server_name or YAML document.
_DNS_NAME = re.compile(rf"(?=.{{1,253}}\Z)({_DNS_LABEL}\.)+[a-z][a-z0-9-]*[a-z0-9]")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# family letters, generation digit(s), attribute letters, optional -flex, then the size.
_INSTANCE_TYPE = re.compile(
    r"(?P<family>[a-z]+)(?P<generation>\d+)(?P<attributes>[a-z]*)(-flex)?"
    r"\.(?P<size>nano|micro|small|medium|large|\d*xlarge|metal(-\d+xl)?)"
)
_REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d")
_WEEKDAY = r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
# A systemd calendar event of this shape only: weekdays (optional), every date, a time of day (UTC on the host).
_REBOOT_WINDOW = re.compile(rf"({_WEEKDAY}(,{_WEEKDAY})* )?\*-\*-\* ([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?")
_SNAPSHOT_ID = re.compile(r"snap-([0-9a-f]{8}|[0-9a-f]{17})")
_AVAILABILITY_ZONE = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d[a-z]")
_GITEA_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_POSTGRES_VERSION = re.compile(r"(\d+)\.(\d+)")
_HTTP_URL = re.compile(r"https?://[^\s/$.?#][^\s]*")
# Receivers that carry a token in the URL or key: scheme and host are checked, so a typo is a config error, not a
# silent alert path. Teams Workflows URLs live on several Microsoft hosts (logic.azure.com, powerplatform.com).
_HTTPS_URL = re.compile(r"https://(?!-)[a-z0-9.-]+[a-z0-9](:\d{1,5})?/[^\s]*")
_SLACK_WEBHOOK = re.compile(r"https://hooks\.slack\.com/(services|triggers|workflows)/[A-Za-z0-9/_-]+")
_PAGERDUTY_KEY = re.compile(r"[A-Za-z0-9]{32}")
_SES_SMTP_HOST = re.compile(r"email-smtp(-fips)?\.[a-z0-9-]+\.amazonaws\.com:\d{1,5}")
_NGINX_SIZE = re.compile(r"([1-9][0-9]{0,5})([mg])")
_SIZE_MIB = {"m": 1, "g": 1024}
_SSH_PUBLIC_KEY = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) ([A-Za-z0-9+/]+=*)( [\x20-\x7e]*)?")
# Keys published as examples (this repository shipped the first): their private halves are not the operator's, so a
# host installing one is a host nobody can log in to (the deploy would wait ten minutes and fail).
EXAMPLE_SSH_KEY_BLOBS = frozenset({"AAAAC3NzaC1lZDI1NTE5AAAAIL6n3l4ln/yKt/HZWnO/L6yfYalg73rgX+eBOym925m0"})
def ssh_public_key_problem(line: str) -> str:
    """Why `line` is not a usable OpenSSH public key, or "": the base64 must decode and name the same key type
    (a pasted private key, a truncated or hand-edited line fail here, not at the first SSH connection)."""
    match = _SSH_PUBLIC_KEY.fullmatch(line)
    if not match:
        return "not an OpenSSH public key"
    key_type, blob = match.group(1), match.group(3)
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return "its key data is not valid base64"
    name_length = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if name_length != len(key_type) or raw[4:4 + name_length] != key_type.encode():
        return f"its key data is not an {key_type} key (truncated or edited?)"
    if key_type == "ssh-ed25519" and len(raw) != 4 + len(key_type) + 4 + 32:
        return "its key data is not an ssh-ed25519 key (an ed25519 key is 32 bytes)"
    if blob in EXAMPLE_SSH_KEY_BLOBS:
        return "the published example key, whose private half nobody has; use your own (cat ~/.ssh/id_ed25519.pub)"
    return ""


# Unicode categories no config value may hold: control characters (\n, \r, \t, NUL ...), format characters
# (zero-width and bidi overrides), line and paragraph separators. YAML, INI and Nginx read several as line breaks.
_FORBIDDEN_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")
# Keys holding a JSON list: their raw text may be pretty-printed over lines; their items are checked.
_JSON_LIST_ALIASES = ("adminCidrs", "relayTargets", "relayEvents")
DEFAULT_PROXY_MAX_BODY_SIZE = "512m"  # Nginx's client_max_body_size unless forgestack:proxyMaxBodySize says otherwise
# The SSH allow-list is for operators' own networks: together at most this many addresses (a /8).
MAX_ADMIN_ADDRESSES = 2**24
# The web security group holds 2 rules per allowed network plus the Route 53 health checkers' prefix list, which counts
# as 25 of a group's 60 inbound rules.
MAX_ALLOWED_NETWORKS = 15
EXPIRES_AT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # expiresAt: a UTC time, e.g. 2026-12-02T18:00:00Z

# Memory of the burstable sizes, in GiB (AWS instance type documentation).
_BURSTABLE_MEMORY_GIB = {"nano": 0.5, "micro": 1, "small": 2, "medium": 4, "large": 8, "xlarge": 16, "2xlarge": 32}
# GiB of memory per vCPU for the fixed-performance families (compute, general, memory).
_MEMORY_PER_VCPU_GIB = {"c": 2, "m": 4, "r": 8, "x": 16, "z": 8}
MIN_MEMORY_GIB = 2
MIN_RUNNER_MEMORY_GIB = 4  # the runner and two jobs of about 1.5 GiB each
MIN_OPS_MEMORY_GIB = 2  # the ops host: Docker, the PostgreSQL tools' container, a restore's tar and zstd
# Kasm Workspaces' single server: its own services (API, manager, agent, proxy, PostgreSQL, Redis) and each concurrent
# session at Kasm's default workspace memory (Kasm's system requirements and workspace defaults).
KASM_SERVICES_MIB = 4096
KASM_SESSION_MIB = 2768
_KASM_RELEASE = re.compile(r"\d+\.\d+\.\d+(\.[0-9a-f]{6})?")  # as in kasm_release_<release>.tar.gz: 1.18.0.09f70a
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KASM_API_TOKEN = re.compile(r"[A-Za-z0-9]{8,128}")  # Kasm's keys: 12 letters/digits, secrets 32 (developer API docs)

# topology ha: two tasks at least, so one task (or its zone) can be lost while the other serves.
MIN_HA_TASKS = 2
_DATABASE_CLASS = re.compile(r"db\.[a-z]+\d+[a-z]*\.(micro|small|medium|large|\d*xlarge)")
_CACHE_NODE_TYPE = re.compile(r"cache\.[a-z]+\d+[a-z]*\.(micro|small|medium|large|\d*xlarge)")
# Fargate's CPU units -> the memory (MiB) each allows (AWS ECS task size table).
FARGATE_MEMORY_MIB = {
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
}


def fargate_size_allowed(size: str) -> bool:
    """CPU/MEMORY such as 1024/2048, a combination Fargate accepts."""
    match = re.fullmatch(r"(\d+)/(\d+)", size)
    if match is None:
        return False
    return int(match.group(2)) in FARGATE_MEMORY_MIB.get(int(match.group(1)), ())


class ConfigError(pulumi.RunError):
    """A stack configuration value is wrong. The message names the key, the value and what is expected."""


def _key(alias: str, description: str, expected: str, default: Any = ..., secret: bool = False) -> Any:
    """A settings field bound to the config key `forgestack:<alias>`."""
    extra: dict[str, Any] = {"expected": expected, "secret": secret}
    return Field(default, alias=alias, description=description, json_schema_extra=extra)


class Settings(BaseModel):
    """Validated settings of one stack. Field aliases are the config keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    stack: str = Field("dev", exclude=True, description="Pulumi stack name (not a config key).")

    platform: Annotated[
        Literal["aws", "local"],
        _key("platform", "Where the forge runs: `aws` (EC2 host) or `local` (this machine's Docker engine).",
             "one of: aws, local", "aws"),
    ]
    region: Annotated[
        str,
        _key("region", "AWS region of the stack (AWS stacks only), e.g. eu-west-1.",
             "an AWS region name such as eu-west-1", ""),
    ]
    domain: Annotated[
        str,
        _key("domain", "DNS name the forge lives under; Gitea is served at git.<domain>.",
             "a lowercase DNS name such as forge.example.com"),
    ]
    hosted_zone: Annotated[
        str,
        _key("hostedZone", "Route 53 public hosted zone that contains `domain` (AWS stacks only).",
             "a lowercase DNS name equal to `domain` or one of its parents", ""),
    ]
    instance_type: Annotated[
        str,
        _key("instanceType", "EC2 instance type of the host; Graviton types (m7g, t4g, ...) select an arm64 image.",
             f"an EC2 instance type such as t3.large or m7g.large with at least {MIN_MEMORY_GIB} GiB of memory",
             # 8 GiB: the whole stack with one CI job (catalog.memory_plan); t3.medium fits with logging off.
             "t3.large"),
    ]
    vpc_cidr: Annotated[
        str,
        _key("vpcCidr", "IPv4 range of the VPC.",
             "a private IPv4 network (10/8, 172.16/12, 192.168/16) with a prefix from /16 to /24, e.g. 10.20.0.0/16",
             "10.20.0.0/16"),
    ]
    admin_cidrs: Annotated[
        tuple[str, ...],
        _key("adminCidrs", "Networks allowed to reach SSH on port 22; empty means no SSH port at all (use SSM Session Manager).",
             "a JSON list of distinct IPv4 networks such as [\"203.0.113.7/32\"] (host bits zero) covering together "
             "at most 2^24 addresses (a /8), never the Internet", ()),
    ]
    allowed_cidrs: Annotated[
        tuple[str, ...],
        _key("allowedCidrs", "Networks allowed to reach the forge (HTTP/HTTPS and git over SSH); empty means the Internet. "
             "With a list, certificates are issued through Route 53 (ACME DNS-01) and Route 53's health checkers may "
             "still reach HTTPS for the outside-in alarm.",
             f"a JSON list of at most {MAX_ALLOWED_NETWORKS} distinct IPv4 networks such as [\"198.51.100.0/24\"] (host bits "
             f"zero) covering together at most 2^24 addresses, never the Internet (leave it empty for that)", ()),
    ]
    root_volume_gb: Annotated[
        int, _key("rootVolumeGb", "Size of the host's root volume in GiB.", "an integer from 10 to 500 (GiB)", 20)
    ]
    data_volume_gb: Annotated[
        int,
        _key("dataVolumeGb", "Size of the separate data volume (repositories, database) in GiB.",
             "an integer from 10 to 16384 (GiB)", 50),
    ]
    volume_key: Annotated[
        Literal["customer-managed", "aws-managed"],
        _key("volumeKey", "Key that encrypts the host's volumes: the stack's own KMS key (customer-managed) or EBS's "
             "default aws/ebs key. Changing it replaces both volumes: README, Moving volumes to the stack's key.",
             "one of: customer-managed, aws-managed", "customer-managed"),
    ]
    data_volume_snapshot_id: Annotated[
        str,
        _key("dataVolumeSnapshotId", "Create the data volume from this EBS snapshot (restore, another zone, or moving to "
             "the stack's key); empty creates a blank one. Any change, clearing it too, replaces the data volume: keep it.",
             "empty, or an EBS snapshot id such as snap-0123456789abcdef0 (in the stack's region)", ""),
    ]
    availability_zone: Annotated[
        str,
        _key("availabilityZone", "Availability zone of the subnet, host and data volume; empty takes the region's first. "
             "Changing it replaces them: move the data with dataVolumeSnapshotId.",
             "empty, or a zone of the stack's region such as eu-west-1b", ""),
    ]
    backup_retention_days: Annotated[
        int,
        _key("backupRetentionDays", "Days a backup is kept in the S3 bucket before the lifecycle rule expires it.",
             "an integer from 1 to 3650 (days)", 14),
    ]
    backup_lock_mode: Annotated[
        Literal["governance", "compliance"],
        _key("backupLockMode", "S3 Object Lock mode of the backups: each backup is kept backupRetentionDays whatever the host "
             "does. governance: a principal allowed s3:BypassGovernanceRetention (never the host) can still remove one; "
             "compliance: nobody can, not even the account's root user (protected stacks only).",
             "governance, or compliance on a stack with protect: true", "governance"),
    ]
    backup_replica_region: Annotated[
        str,
        _key("backupReplicaRegion", "Second region for the backups: S3 replicates every backup to a locked bucket there (its own "
             "KMS key) and Data Lifecycle Manager copies the daily snapshots there; empty keeps one region.",
             "empty, or an AWS region other than the stack's, such as eu-central-1", ""),
    ]
    backup_archive_after_days: Annotated[
        int,
        _key("backupArchiveAfterDays", "Days after which backups move to the Glacier Instant Retrieval class; 0 keeps them in Standard.",
             "0, or an integer from 30 to 3650 smaller than backupRetentionDays (days)", 0),
    ]
    backup_interval_hours: Annotated[
        int,
        _key("backupIntervalHours", "Hours between scheduled backups of the database and data directories to S3 (the RPO).",
             f"one of: {', '.join(map(str, BACKUP_INTERVALS_HOURS))} (hours; divides a day evenly)", 24),
    ]
    reboot_window: Annotated[
        str,
        _key("rebootWindow", "AWS single host: when (systemd calendar, UTC) the host reboots if an installed security update "
             "asks for it, after a backup; empty never reboots on its own (updates still install daily).",
             "a calendar such as 'Sun *-*-* 03:30' or 'Mon,Thu *-*-* 02:00:00', or empty", "Sun *-*-* 03:30"),
    ]
    snapshot_retention_days: Annotated[
        int,
        _key("snapshotRetentionDays", "Days the daily EBS snapshots of the data volume are kept (Data Lifecycle Manager).",
             "an integer from 1 to 365 (days)", 7),
    ]
    flow_log_retention_days: Annotated[
        int,
        _key("flowLogRetentionDays", "Days VPC flow logs are kept in CloudWatch Logs.",
             f"one of CloudWatch's retention periods: {', '.join(map(str, LOG_RETENTION_DAYS))}", 14),
    ]
    acme_email: Annotated[
        str, _key("acmeEmail", "Contact address given to Let's Encrypt for expiry notices.", "an email address such as ops@example.com")
    ]
    acme_staging: Annotated[
        bool,
        _key("acmeStaging", "Use Let's Encrypt's staging CA (untrusted certificates, generous rate limits).",
             "true or false", True),
    ]
    gitea_version: Annotated[
        str,
        _key("giteaVersion", "Exact Gitea release (image tag gitea/gitea:<version>).",
             f"an exact release {'.'.join(map(str, MIN_GITEA_VERSION))} or newer such as 1.27.3, never latest", "1.27.3"),
    ]
    postgres_version: Annotated[
        str,
        _key("postgresVersion", "Exact PostgreSQL release (image tag postgres:<version>); the major version is pinned.",
             f"an exact release MAJOR.MINOR with major {' or '.join(map(str, SUPPORTED_POSTGRES_MAJORS))}, such as 18.4, never latest",
             "18.4"),
    ]
    protect: Annotated[
        bool,
        _key("protect", "Protect stateful resources (bucket, secret, KMS keys, data volume) from deletion.", "true or false", False),
    ]
    ci: Annotated[
        Literal["actions", "drone", "none"],
        _key("ci", "CI system next to Gitea.", "one of: actions, drone, none", "actions"),
    ]
    monitoring: Annotated[
        bool, _key("monitoring", "Run Prometheus, Alertmanager, Grafana and the exporters.", "true or false", True)
    ]
    logging: Annotated[bool, _key("logging", "Run Loki and Grafana Alloy.", "true or false", True)]
    metrics_retention_days: Annotated[
        int,
        _key("metricsRetentionDays", "Days Prometheus keeps metrics.", "an integer from 1 to 730 (days)", 15),
    ]
    log_retention_days: Annotated[
        int,
        _key("logRetentionDays", "Days Loki keeps logs (enforced by its compactor).", "an integer from 1 to 730 (days)", 7),
    ]
    budget_monthly_usd: Annotated[
        int,
        _key("budgetMonthlyUsd", "AWS: monthly AWS Budgets amount for the stack's tagged costs (mail at 80 % spent and at "
             "100 % forecast); 0 takes the stack's estimate (scripts/cost.py) plus 25 %.",
             "an integer from 0 to 1000000 (USD; 0: from the estimate)", 0),
    ]
    expires_at: Annotated[
        str,
        _key("expiresAt", "AWS: when an ephemeral stack (a review stack) may be destroyed by the sweeper; tagged "
             "expires-at on every resource and exported. Empty for stacks that live.",
             "empty, or a UTC time as YYYY-MM-DDTHH:MM:SSZ such as 2026-12-02T18:00:00Z", ""),
    ]
    alert_email_to: Annotated[
        str,
        _key("alertEmailTo", "Address that receives alerts by email; empty sends no email.",
             "an email address, or empty", ""),
    ]
    alert_smtp_smarthost: Annotated[
        str,
        _key("alertSmtpSmarthost", "Optional override: an SMTP relay of your own for alert mail (default: the stack's SES or Mailpit).",
             "host:port such as email-smtp.eu-west-1.amazonaws.com:587, or empty", ""),
    ]
    alert_smtp_from: Annotated[
        str,
        _key("alertSmtpFrom", "Sender of alert mail (default alerts@mail.<domain>; needed with alertSmtpSmarthost).",
             "an email address, or empty", ""),
    ]
    alert_smtp_username: Annotated[
        str, _key("alertSmtpUsername", "SMTP user name; empty sends without authentication.", "a user name, or empty", "")
    ]
    alert_smtp_password: Annotated[
        str,
        _key("alertSmtpPassword", "SMTP password (set it with `pulumi config set --secret`).",
             "a password set as a Pulumi secret, or empty", "", secret=True),
    ]
    alert_webhook_url: Annotated[
        str,
        _key("alertWebhookUrl",
             "URL that takes Alertmanager's webhook JSON (an alert bridge; not the forgestack relay, "
             "which takes signed Gitea events only); secret.",
             "an http(s) URL set as a Pulumi secret, or empty", "", secret=True),
    ]
    alert_slack_webhook_url: Annotated[
        str,
        _key("alertSlackWebhookUrl", "Slack incoming-webhook URL Alertmanager posts every alert to; a Pulumi secret.",
             "an https://hooks.slack.com/... URL set as a Pulumi secret, or empty", "", secret=True),
    ]
    alert_teams_webhook_url: Annotated[
        str,
        _key("alertTeamsWebhookUrl", "Microsoft Teams Workflows (Power Automate) webhook URL for every alert; a Pulumi secret.",
             "an https URL set as a Pulumi secret, or empty", "", secret=True),
    ]
    alert_pagerduty_routing_key: Annotated[
        str,
        _key("alertPagerdutyRoutingKey", "PagerDuty Events API v2 integration (routing) key: critical alerts page; a Pulumi secret.",
             "the 32-character integration key of a PagerDuty service (Events API v2) set as a Pulumi secret, or empty", "", secret=True),
    ]
    portainer: Annotated[
        bool, _key("portainer", "Run Portainer CE at portainer.<domain> (it holds the Docker socket: keep it off in prod).",
                   "true or false", False)
    ]
    admin_ui_access: Annotated[
        Literal["public", "admin-cidrs", "private"],
        _key("adminUiAccess", "Who reaches the admin UIs (Grafana, Portainer): public, only adminCidrs, or private "
             "(no public name; SSM port forwarding to the host's loopback).",
             "public, admin-cidrs (needs adminCidrs) or private", "private"),
    ]
    git_ssh_port_choice: Annotated[
        int,
        _key("gitSshPort", "Host port of git over SSH. 0 chooses: 22 on AWS stacks without adminCidrs (the host's own sshd "
             "then listens on loopback only, for SSM), else 2222. Changing it changes every clone URL.",
             "0 (automatic), 22 (AWS without adminCidrs) or 2222", 0),
    ]
    proxy_max_body_size: Annotated[
        str, _key("proxyMaxBodySize", "Largest request body Nginx accepts (git pushes over HTTP, LFS objects, uploads).",
                  "an Nginx size from 1m to 100g, such as 512m or 2g", DEFAULT_PROXY_MAX_BODY_SIZE),
    ]
    drone_gitea_client_id: Annotated[
        str,
        _key("droneGiteaClientId", "OAuth2 client id of the Drone application in Gitea (ci: drone); empty with ssoOrganization "
             "set: the deploy registers the application.",
             "the client id Gitea showed when the OAuth2 application was created, or empty", ""),
    ]
    drone_gitea_client_secret: Annotated[
        str,
        _key("droneGiteaClientSecret", "OAuth2 client secret of the Drone application in Gitea (ci: drone); a Pulumi secret.",
             "the client secret set with `pulumi config set --secret`, or empty", "", secret=True),
    ]
    relay_targets: Annotated[
        tuple[str, ...],
        _key("relayTargets", "Chat webhooks (Slack-compatible) the webhook relay forwards to; a Pulumi secret, as they carry tokens.",
             'a JSON list of http(s) URLs such as ["https://chat.example.com/hooks/abc"], set with --secret', (), secret=True),
    ]
    alarm_https_endpoints: Annotated[
        tuple[str, ...],
        _key("alarmHttpsEndpoints",
             "HTTPS endpoints (a pager, an incident tool) subscribed to the CloudWatch alarm topics besides alertEmailTo; "
             "a Pulumi secret.",
             'a JSON list of https URLs such as ["https://events.example.com/sns"], set with --secret', (), secret=True),
    ]
    relay_events: Annotated[
        tuple[str, ...],
        _key("relayEvents", "Which Gitea events the webhook relay forwards.",
             f"a JSON list drawn from {list(RELAY_EVENTS)}", RELAY_EVENTS),
    ]
    gitea_admin_user: Annotated[
        str,
        _key("giteaAdminUser", "Name of the Gitea admin account created on first deploy (password in the credentials secret).",
             "a Gitea user name (lowercase letters, digits, . _ -; 2 to 39 characters; not admin)", "forgeadmin"),
    ]
    gitea_registration: Annotated[
        Literal["closed", "approval", "open"],
        _key("giteaRegistration", "Who may create accounts: closed (admin only), approval (admin confirms), open.",
             "one of: closed, approval, open", "closed"),
    ]
    sso_organization: Annotated[
        str,
        _key("ssoOrganization",
             "Single sign-on through Gitea for Grafana: the Gitea organization (created at deploy time) whose Owners team "
             "signs in as Grafana admins and whose other members as viewers; nobody else gets in. Empty: each UI keeps "
             "only its own login.",
             "a Gitea organization name (lowercase letters, digits, . _ -; up to 39 characters) or empty", ""),
    ]
    ssh_public_key: Annotated[
        str,
        _key("sshPublicKey",
             "Optional: the operator's SSH public key, installed for the host user (else deploys push a key with EC2 Instance Connect).",
             "an OpenSSH public key line (ssh-ed25519, ecdsa-sha2-* or ssh-rsa) or empty", ""),
    ]

    topology: Annotated[
        Literal["single", "ha"],
        _key("topology", "single: the whole forge on one EC2 host. ha: Gitea on ECS Fargate across zones behind a load balancer, "
             "on RDS PostgreSQL (Multi-AZ), ElastiCache Valkey and EFS (AWS stacks only; README, High availability).",
             "one of: single, ha (ha on AWS stacks only)", "single"),
    ]
    ha_zones: Annotated[
        int, _key("haZones", "topology ha: availability zones the network, database, cache and tasks span.", "2 or 3", 2),
    ]
    ha_nat_gateways: Annotated[
        Literal["one", "per-zone"],
        _key("haNatGateways", "topology ha: NAT gateways for the private subnets: one shared (cheaper; its zone's loss cuts "
             "the others' Internet egress) or one per zone (each zone independent).", "one of: one, per-zone", "per-zone"),
    ]
    ha_gitea_tasks: Annotated[
        int, _key("haGiteaTasks", "topology ha: Gitea tasks the ECS service keeps running, spread across zones.",
                  f"an integer from {MIN_HA_TASKS} to 20", MIN_HA_TASKS),
    ]
    ha_task_size: Annotated[
        str,
        _key("haTaskSize", "topology ha: Fargate size of one Gitea task as CPU units/memory MiB.",
             "a Fargate size CPU/MEMORY such as 1024/2048 (CPU 512, 1024, 2048 or 4096 with a memory Fargate allows for it)",
             "1024/2048"),
    ]
    ha_database_class: Annotated[
        str,
        _key("haDatabaseClass", "topology ha: RDS instance class of the PostgreSQL database.",
             "an RDS instance class such as db.t4g.medium or db.m7g.large", "db.t4g.medium"),
    ]
    ha_database_storage_gb: Annotated[
        int,
        _key("haDatabaseStorageGb", "topology ha: allocated gp3 storage of the database in GiB (autoscaling up to 4x).",
             "an integer from 20 to 16384 (GiB)", 50),
    ]
    ha_cache_node_type: Annotated[
        str,
        _key("haCacheNodeType", "topology ha: ElastiCache node type of the Valkey replication group (one primary, one replica "
             "per further zone).", "an ElastiCache node type such as cache.t4g.small or cache.m7g.large", "cache.t4g.small"),
    ]
    ha_ops_instance_type: Annotated[
        str,
        _key("haOpsInstanceType", "topology ha: EC2 instance type of the ops host in a private subnet (admin tools: restore, "
             "migration; Amazon Linux 2023).",
             f"an EC2 instance type such as t4g.small or t3.small with at least {MIN_OPS_MEMORY_GIB} GiB of memory", "t4g.small"),
    ]
    ha_runner_instance_type: Annotated[
        str,
        _key("haRunnerInstanceType", "topology ha with ci actions: EC2 instance type of the runner host in a private subnet "
             "(Gitea Runner, two jobs at a time; Amazon Linux 2023).",
             f"an EC2 instance type such as t4g.medium or t3.medium with at least {MIN_RUNNER_MEMORY_GIB} GiB of memory",
             "t4g.medium"),
    ]
    ha_ops_volume_gb: Annotated[
        int,
        _key("haOpsVolumeGb", "topology ha: the ops host's volume in GiB; a restore drill needs room there for a backup and "
             "its unpacked copy.", "an integer from 30 to 16384 (GiB)", 30),
    ]

    workspaces: Annotated[
        bool, _key("workspaces", "Kasm Workspaces on a host of its own, at workspaces.<domain> through the forge's proxy "
                   "(topology single on AWS; README, Workspaces).", "true or false", False)
    ]
    workspaces_instance_type: Annotated[
        str,
        _key("workspacesInstanceType", "workspaces: EC2 instance type of the workspaces host (Ubuntu 24.04).",
             f"an EC2 instance type such as t3.xlarge or m7i.xlarge with {KASM_SERVICES_MIB} MiB for Kasm plus "
             f"{KASM_SESSION_MIB} MiB per session", "t3.xlarge"),
    ]
    workspaces_sessions: Annotated[
        int, _key("workspacesSessions", "workspaces: concurrent sessions the host is sized for (memory check and swap).",
                  "an integer from 1 to 50", 2),
    ]
    workspaces_volume_gb: Annotated[
        int, _key("workspacesVolumeGb", "workspaces: the workspaces host's encrypted volume in GiB (Kasm's images and "
                  "database).", "an integer from 50 to 16384 (GiB)", 100),
    ]
    workspaces_release: Annotated[
        str, _key("workspacesRelease", "workspaces: the Kasm Workspaces release installed, as in the name of its tarball "
                  "kasm_release_<release>.tar.gz.", "a Kasm release such as 1.18.0.09f70a", "1.18.0.09f70a"),
    ]
    workspaces_release_sha256: Annotated[
        str, _key("workspacesReleaseSha256", "workspaces: the SHA-256 of that release's tarball; the host refuses any "
                  "other download (sha256sum kasm_release_<release>.tar.gz on a copy you trust).",
                  "64 lowercase hexadecimal digits (required with workspaces)", ""),
    ]
    workspaces_api_key: Annotated[
        str, _key("workspacesApiKey", "workspaces: Kasm developer API key (Kasm admin UI, Settings > Developers) the deploy "
                  "registers the forge's workspace images with; empty: not registered.",
                  "the API key Kasm showed (letters and digits), or empty", ""),
    ]
    workspaces_api_key_secret: Annotated[
        str, _key("workspacesApiKeySecret", "workspaces: that API key's secret; a Pulumi secret.",
                  "the API key secret Kasm showed, set with `pulumi config set --secret`, or empty", "", secret=True),
    ]

    # --- field checks (each raises ValueError; load() turns it into a ConfigError) ---

    @field_validator("workspaces_instance_type")
    @classmethod
    def _check_workspaces_instance_type(cls, value: str) -> str:
        if not _INSTANCE_TYPE.fullmatch(value):
            raise ValueError("malformed instance type")
        return value

    @field_validator("workspaces_sessions")
    @classmethod
    def _check_workspaces_sessions(cls, value: int) -> int:
        if not 1 <= value <= 50:
            raise ValueError("out of range")
        return value

    @field_validator("workspaces_volume_gb")
    @classmethod
    def _check_workspaces_volume(cls, value: int) -> int:
        if not 50 <= value <= 16384:
            raise ValueError("out of range")
        return value

    @field_validator("workspaces_release")
    @classmethod
    def _check_workspaces_release(cls, value: str) -> str:
        if not _KASM_RELEASE.fullmatch(value):
            raise ValueError("not a Kasm release")
        return value

    @field_validator("workspaces_release_sha256")
    @classmethod
    def _check_workspaces_sha256(cls, value: str) -> str:
        if value and not _SHA256.fullmatch(value):
            raise ValueError("not a SHA-256 digest")
        return value

    @field_validator("workspaces_api_key")  # not the secret: offline readers of a stack file see it encrypted
    @classmethod
    def _check_kasm_api_key(cls, value: str) -> str:
        if value and not _KASM_API_TOKEN.fullmatch(value):
            raise ValueError("not a Kasm API key")
        return value

    @field_validator("ha_task_size")
    @classmethod
    def _check_task_size(cls, value: str) -> str:
        if not fargate_size_allowed(value):
            raise ValueError("not a Fargate size")
        return value

    @field_validator("ha_database_class")
    @classmethod
    def _check_database_class(cls, value: str) -> str:
        if not _DATABASE_CLASS.fullmatch(value):
            raise ValueError("malformed RDS instance class")
        return value

    @field_validator("ha_cache_node_type")
    @classmethod
    def _check_cache_node_type(cls, value: str) -> str:
        if not _CACHE_NODE_TYPE.fullmatch(value):
            raise ValueError("malformed ElastiCache node type")
        return value

    @field_validator("ha_ops_instance_type")
    @classmethod
    def _check_ops_instance_type(cls, value: str) -> str:
        if not _INSTANCE_TYPE.fullmatch(value):
            raise ValueError("malformed instance type")
        if instance_memory_gib(value) < MIN_OPS_MEMORY_GIB:
            raise ValueError("too little memory")
        return value

    @field_validator("ha_runner_instance_type")
    @classmethod
    def _check_runner_instance_type(cls, value: str) -> str:
        if not _INSTANCE_TYPE.fullmatch(value):
            raise ValueError("malformed instance type")
        if instance_memory_gib(value) < MIN_RUNNER_MEMORY_GIB:
            raise ValueError("too little memory")
        return value

    @field_validator("ha_zones")
    @classmethod
    def _check_ha_zones(cls, value: int) -> int:
        return _within(value, 2, 3)

    @field_validator("ha_gitea_tasks")
    @classmethod
    def _check_ha_tasks(cls, value: int) -> int:
        return _within(value, MIN_HA_TASKS, 20)

    @field_validator("ha_database_storage_gb")
    @classmethod
    def _check_database_storage(cls, value: int) -> int:
        return _within(value, 20, 16384)

    @model_validator(mode="before")
    @classmethod
    def _no_control_characters(cls, data: Any) -> Any:
        """Before any field check (some strip whitespace): no value may hold a control character."""
        if not isinstance(data, dict):
            return data
        for alias, value in data.items():
            if alias in _JSON_LIST_ALIASES or alias not in _fields_by_alias():
                continue  # a JSON list's text may span lines: _parse_json_list checks its items
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                if not isinstance(item, str):
                    continue
                try:
                    _refuse_control_characters(item)
                except _ControlCharacterError as error:
                    shown = "[secret]" if _is_secret(alias) else repr(value)
                    raise _KeyProblemError(alias, shown, f"{_expected(alias)} ({error})", shown_raw=True) from None
        return data

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        if value and not _REGION.fullmatch(value):
            raise ValueError("malformed region")
        return value

    @field_validator("backup_replica_region")
    @classmethod
    def _check_replica_region(cls, value: str) -> str:
        if value and not _REGION.fullmatch(value):
            raise ValueError("malformed region")
        return value

    @field_validator("reboot_window")
    @classmethod
    def _check_reboot_window(cls, value: str) -> str:
        if value and not _REBOOT_WINDOW.fullmatch(value):
            raise ValueError("not a calendar of that shape")
        return value

    @field_validator("data_volume_snapshot_id")
    @classmethod
    def _check_snapshot_id(cls, value: str) -> str:
        if value and not _SNAPSHOT_ID.fullmatch(value):
            raise ValueError("malformed snapshot id")
        return value

    @field_validator("availability_zone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        if value and not _AVAILABILITY_ZONE.fullmatch(value):
            raise ValueError("malformed availability zone")
        return value

    @field_validator("domain", "hosted_zone")
    @classmethod
    def _check_dns_name(cls, value: str, info: ValidationInfo) -> str:
        if info.field_name == "hosted_zone" and value == "":
            return value
        if not _DNS_NAME.fullmatch(value):
            raise ValueError("not a lowercase DNS name")
        return value

    @field_validator("instance_type")
    @classmethod
    def _check_instance_type(cls, value: str) -> str:
        if not _INSTANCE_TYPE.fullmatch(value):
            raise ValueError("malformed instance type")
        if instance_memory_gib(value) < MIN_MEMORY_GIB:
            raise ValueError("too little memory")
        return value

    @field_validator("vpc_cidr")
    @classmethod
    def _check_vpc_cidr(cls, value: str) -> str:
        try:
            network = ipaddress.IPv4Network(value, strict=True)
        except ValueError as error:
            raise ValueError(str(error)) from error
        if not network.is_private or not 16 <= network.prefixlen <= 24:
            raise ValueError("not a private /16../24 network")
        return value

    @field_validator("admin_cidrs", "allowed_cidrs", "relay_targets", "relay_events", "alarm_https_endpoints", mode="before")
    @classmethod
    def _parse_json_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value)  # a JSONDecodeError is a ValueError: reported with the key
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            raise ValueError("not a list of strings")
        for item in value:
            _refuse_control_characters(item)
        return tuple(value)

    @field_validator("relay_targets")
    @classmethod
    def _check_relay_targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(_HTTP_URL.fullmatch(url) for url in value):
            raise ValueError("not http(s) URLs")
        return value

    @field_validator("alarm_https_endpoints")
    @classmethod
    def _check_alarm_endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(_HTTPS_URL.fullmatch(url) for url in value) or len(set(value)) != len(value):
            raise ValueError("not distinct https URLs")
        return value

    @field_validator("relay_events")
    @classmethod
    def _check_relay_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not set(value) <= set(RELAY_EVENTS) or len(set(value)) != len(value):
            raise ValueError("unknown or repeated event")
        return value

    @field_validator("admin_cidrs", "allowed_cidrs")
    @classmethod
    def _check_cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        networks = [ipaddress.IPv4Network(cidr, strict=True) for cidr in value]  # the VPC is IPv4-only
        if len(set(networks)) != len(networks):
            raise ValueError("duplicate network")
        # The union, not each network: 0.0.0.0/1 and 128.0.0.0/1 together are the whole Internet.
        covered = sum(network.num_addresses for network in ipaddress.collapse_addresses(networks))
        if covered > MAX_ADMIN_ADDRESSES:
            raise ValueError(f"together the networks cover {covered} addresses, more than {MAX_ADMIN_ADDRESSES}")
        return value

    @field_validator("root_volume_gb", "data_volume_gb", "backup_retention_days", "backup_archive_after_days",
                     "backup_interval_hours", "snapshot_retention_days", "flow_log_retention_days", "metrics_retention_days",
                     "log_retention_days", "git_ssh_port_choice", "ha_zones", "ha_gitea_tasks", "ha_database_storage_gb",
                     "ha_ops_volume_gb", "budget_monthly_usd", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # Pulumi passes numbers as strings ("20") or, under mocks, floats (20.0); bools are not numbers.
        if isinstance(value, bool):
            raise ValueError("not an integer")
        if isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise ValueError("not an integer")

    @field_validator("git_ssh_port_choice")
    @classmethod
    def _check_git_ssh_port(cls, value: int) -> int:
        if value not in (0, *GIT_SSH_PORTS):
            raise ValueError("not a git SSH port")
        return value

    @field_validator("budget_monthly_usd")
    @classmethod
    def _check_budget(cls, value: int) -> int:
        return _within(value, 0, 1_000_000)

    @field_validator("root_volume_gb")
    @classmethod
    def _check_root_volume(cls, value: int) -> int:
        return _within(value, 10, 500)

    @field_validator("ha_ops_volume_gb")
    @classmethod
    def _check_ops_volume(cls, value: int) -> int:
        return _within(value, 30, 16384)

    @field_validator("data_volume_gb")
    @classmethod
    def _check_data_volume(cls, value: int) -> int:
        return _within(value, 10, 16384)

    @field_validator("backup_retention_days")
    @classmethod
    def _check_retention(cls, value: int) -> int:
        return _within(value, 1, 3650)

    @field_validator("backup_archive_after_days")
    @classmethod
    def _check_archive_after(cls, value: int) -> int:
        # Glacier Instant Retrieval bills at least 30 days, so earlier transitions only cost more.
        return value if value == 0 else _within(value, 30, 3650)

    @field_validator("backup_interval_hours")
    @classmethod
    def _check_backup_interval(cls, value: int) -> int:
        if value not in BACKUP_INTERVALS_HOURS:
            raise ValueError("not an interval that divides a day")
        return value

    @field_validator("snapshot_retention_days")
    @classmethod
    def _check_snapshot_retention(cls, value: int) -> int:
        return _within(value, 1, 365)

    @field_validator("metrics_retention_days", "log_retention_days")
    @classmethod
    def _check_observability_retention(cls, value: int) -> int:
        return _within(value, 1, 730)

    @field_validator("expires_at")
    @classmethod
    def _check_expires_at(cls, value: str) -> str:
        if value and not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", value):
            raise ValueError("not a UTC time YYYY-MM-DDTHH:MM:SSZ")
        if value:
            datetime.strptime(value, EXPIRES_AT_FORMAT)  # a ValueError for 2026-02-30
        return value

    @field_validator("alert_email_to", "alert_smtp_from")
    @classmethod
    def _check_optional_email(cls, value: str) -> str:
        if value and not _EMAIL.fullmatch(value):
            raise ValueError("not an email address")
        return value

    @field_validator("alert_smtp_smarthost")
    @classmethod
    def _check_smarthost(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-z0-9.-]+:\d{1,5}", value):
            raise ValueError("not host:port")
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str) -> str:
        if value and not _HTTP_URL.fullmatch(value):
            raise ValueError("not an http(s) URL")
        return value

    @field_validator("alert_slack_webhook_url")
    @classmethod
    def _check_slack_url(cls, value: str) -> str:
        if value and not _SLACK_WEBHOOK.fullmatch(value):
            raise ValueError("not a Slack incoming-webhook URL")
        return value

    @field_validator("alert_teams_webhook_url")
    @classmethod
    def _check_teams_url(cls, value: str) -> str:
        if value and not _HTTPS_URL.fullmatch(value):
            raise ValueError("not an https URL")
        return value

    @field_validator("alert_pagerduty_routing_key")
    @classmethod
    def _check_pagerduty_key(cls, value: str) -> str:
        if value and not _PAGERDUTY_KEY.fullmatch(value):
            raise ValueError("not a PagerDuty integration key")
        return value

    @field_validator("flow_log_retention_days")
    @classmethod
    def _check_flow_log_retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError("not a CloudWatch retention period")
        return value

    @field_validator("acme_staging", "protect", "monitoring", "logging", "portainer", "workspaces", mode="before")
    @classmethod
    def _boolean(cls, value: Any) -> Any:
        # Only the two spellings Pulumi writes; "yes" or "1" are typos, not booleans.
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError("not a boolean")

    @field_validator("acme_email")
    @classmethod
    def _check_email(cls, value: str) -> str:
        if not _EMAIL.fullmatch(value):
            raise ValueError("not an email address")
        return value

    @field_validator("gitea_version")
    @classmethod
    def _check_gitea_version(cls, value: str) -> str:
        match = _GITEA_VERSION.fullmatch(value)
        if not match or tuple(int(part) for part in match.groups()) < MIN_GITEA_VERSION:
            raise ValueError("not a supported exact Gitea release")
        return value

    @field_validator("postgres_version")
    @classmethod
    def _check_postgres_version(cls, value: str) -> str:
        match = _POSTGRES_VERSION.fullmatch(value)
        if not match or int(match.group(1)) not in SUPPORTED_POSTGRES_MAJORS:
            raise ValueError("not an exact release of a supported major")
        return value

    @field_validator("gitea_admin_user")
    @classmethod
    def _check_admin_user(cls, value: str) -> str:
        # Gitea reserves "admin" (and a few more) as user names.
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,38}", value) or value in ("admin", "api", "assets", "user", "explore"):
            raise ValueError("not a usable Gitea user name")
        return value

    @field_validator("sso_organization")
    @classmethod
    def _check_sso_organization(cls, value: str) -> str:
        # Grafana compares the groups claim case-sensitively; lowercase keeps the organization's name and its claim equal.
        if value and not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,38}", value):
            raise ValueError("not a lowercase Gitea organization name")
        return value

    @field_validator("proxy_max_body_size")
    @classmethod
    def _check_proxy_max_body_size(cls, value: str) -> str:
        match = _NGINX_SIZE.fullmatch(value)
        if not match or not 1 <= int(match.group(1)) * _SIZE_MIB[match.group(2)] <= 100 * 1024:
            raise ValueError("not a size from 1m to 100g")
        return value

    @field_validator("ssh_public_key")
    @classmethod
    def _check_ssh_key(cls, value: str) -> str:
        if value:
            problem = ssh_public_key_problem(value)
            if problem:
                raise _DetailError(problem)
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.platform == "aws":
            if not self.region:
                raise _KeyProblemError("region", self.region, "an AWS region name such as eu-west-1 (required on AWS stacks)")
            if not self.hosted_zone:
                raise _KeyProblemError("hostedZone", self.hosted_zone, "the Route 53 zone containing domain (required on AWS stacks)")
            if self.domain != self.hosted_zone and not self.domain.endswith("." + self.hosted_zone):
                raise _KeyProblemError("hostedZone", self.hosted_zone, f"{self.domain!r} or one of its parent domains")
            if self.backup_replica_region == self.region:
                raise _KeyProblemError("backupReplicaRegion", self.backup_replica_region,
                                       f"empty or a region other than the stack's own ({self.region}): a replica in the same "
                                       "region survives nothing the original does not")
            if self.availability_zone and self.availability_zone[:-1] != self.region:
                raise _KeyProblemError("availabilityZone", self.availability_zone,
                                       f"a zone of the stack's region {self.region}, such as {self.region}b")
        if self.ci == "drone" and bool(self.drone_gitea_client_id) != bool(self.drone_gitea_client_secret):
            raise _KeyProblemError("droneGiteaClientId", self.drone_gitea_client_id,
                                   "both the OAuth2 client id and (as a secret) droneGiteaClientSecret of a Gitea OAuth2 "
                                   "application, or neither (README: CI)")
        if self.ci == "drone" and not self.drone_gitea_client_id and not self.sso_organization:
            raise _KeyProblemError("droneGiteaClientId", self.drone_gitea_client_id,
                                   "the OAuth2 client id and (as a secret) droneGiteaClientSecret of a Gitea OAuth2 application "
                                   "when ci is drone, or ssoOrganization set so that the deploy registers one (README: CI)")
        if self.alert_smtp_smarthost and not self.alert_smtp_from:
            raise _KeyProblemError("alertSmtpFrom", self.alert_smtp_from,
                                   "the sender address for alertSmtpSmarthost (a relay of your own needs its own sender)")
        if _SES_SMTP_HOST.fullmatch(self.alert_smtp_smarthost) and not (self.alert_smtp_username and self.alert_smtp_password):
            raise _KeyProblemError("alertSmtpSmarthost", self.alert_smtp_smarthost,
                                   "empty (alerts then go through the stack's own SES identity and SMTP user), or SES with "
                                   "alertSmtpUsername and alertSmtpPassword: SES refuses mail without SMTP credentials")
        if self.is_aws and self.admin_ui_access == "admin-cidrs" and not self.admin_cidrs:
            raise _KeyProblemError("adminUiAccess", self.admin_ui_access,
                                   "public or private while adminCidrs is empty (admin-cidrs would let nobody in)")
        if self.git_ssh_port_choice == ADMIN_SSH_PORT and not (self.is_aws and not self.admin_cidrs):
            raise _KeyProblemError("gitSshPort", self.git_ssh_port_choice,
                                   "0 or 2222 here: port 22 belongs to the host's own sshd when adminCidrs is set, and to "
                                   "your machine's on the local stack")
        if self.backup_lock_mode == "compliance" and not self.protect:
            raise _KeyProblemError("backupLockMode", self.backup_lock_mode,
                                   "governance on a stack without protect: compliance-locked backups cannot be removed by "
                                   f"anyone for backupRetentionDays ({self.backup_retention_days}), so destroy would fail")
        if self.allowed_cidrs and not (self.is_aws and self.topology == "single"):
            raise _KeyProblemError("allowedCidrs", list(self.allowed_cidrs),
                                   "empty here: the allow-list is built for topology single on AWS (the local stack is "
                                   "loopback only; ha's load balancers would need a WAF IP set, not built yet)")
        if len(self.allowed_cidrs) > MAX_ALLOWED_NETWORKS:
            raise _KeyProblemError("allowedCidrs", list(self.allowed_cidrs),
                                   f"at most {MAX_ALLOWED_NETWORKS} networks (a security group holds 60 inbound rules)")
        if self.topology == "ha" and not self.is_aws:
            raise _KeyProblemError("topology", self.topology, "single on the local stack: ha runs on managed AWS services")
        if self.workspaces and not (self.is_aws and self.topology == "single"):
            raise _KeyProblemError("workspaces", self.workspaces,
                                   "false here: the workspaces host is built for topology single on AWS (the local stack "
                                   "cannot run Kasm's installer, which takes over a whole machine's Docker engine)")
        if self.workspaces and not self.workspaces_release_sha256:
            raise _KeyProblemError("workspacesReleaseSha256", self.workspaces_release_sha256,
                                   f"the SHA-256 of kasm_release_{self.workspaces_release}.tar.gz with workspaces on: the "
                                   "host installs nothing it cannot verify")
        if bool(self.workspaces_api_key) != bool(self.workspaces_api_key_secret):
            raise _KeyProblemError("workspacesApiKey", self.workspaces_api_key,
                                   "both workspacesApiKey and (as a secret) workspacesApiKeySecret of one Kasm API key, or "
                                   "neither (the workspace images are then not registered)")
        if self.workspaces and self.sso_organization and self.gitea_registration == "open":
            raise _KeyProblemError("giteaRegistration", self.gitea_registration,
                                   "closed or approval with workspaces and ssoOrganization: Kasm admits every account Gitea "
                                   "signs in, so open registration would hand its sessions to anyone")
        if self.workspaces_api_key and not self.workspaces:
            raise _KeyProblemError("workspacesApiKey", self.workspaces_api_key,
                                   "empty without workspaces: there is no Kasm to register images in")
        needed = KASM_SERVICES_MIB + self.workspaces_sessions * KASM_SESSION_MIB
        if self.workspaces and instance_memory_gib(self.workspaces_instance_type) * 1024 < needed:
            raise _KeyProblemError("workspacesInstanceType", self.workspaces_instance_type,
                                   f"at least {needed} MiB of memory for {self.workspaces_sessions} session(s) "
                                   f"({KASM_SERVICES_MIB} MiB for Kasm + {KASM_SESSION_MIB} MiB each), or fewer "
                                   "workspacesSessions")
        if self.topology == "ha" and self.sso_organization:
            raise _KeyProblemError("ssoOrganization", self.sso_organization,
                                   "empty with topology ha: single sign-on is built for the single host and the local stack "
                                   "(ha's Grafana on the ops host keeps its own login)")
        if self.topology == "ha" and self.ci == "drone":
            raise _KeyProblemError("ci", self.ci, "actions or none with topology ha: ha runs no Drone server (Gitea Actions "
                                   "works with runners you register)")
        if self.is_aws and not self.budget_monthly_usd and budget.estimate(self.stack, self.topology) is None:
            raise _KeyProblemError("budgetMonthlyUsd", self.budget_monthly_usd,
                                   f"an amount in USD: there is no cost estimate for stack {self.stack} with topology "
                                   f"{self.topology} in components/files/{budget.ESTIMATES_FILE} (python scripts/cost.py "
                                   "--write-estimates adds one once Pulumi.<stack>.yaml exists)")
        if self.backup_archive_after_days and self.backup_archive_after_days >= self.backup_retention_days:
            raise _KeyProblemError("backupArchiveAfterDays", self.backup_archive_after_days,
                              f"0 or fewer days than backupRetentionDays ({self.backup_retention_days})")
        return self

    # --- derived facts (pure) ---

    @property
    def is_aws(self) -> bool:
        return self.platform == "aws"

    @property
    def budget_usd(self) -> int:
        """The budget's amount: the setting, or the estimate plus budget.MARGIN."""
        if self.budget_monthly_usd:
            return self.budget_monthly_usd
        estimated = budget.estimate(self.stack, self.topology)
        return budget.amount_from_estimate(estimated) if estimated is not None else 0

    @property
    def architecture(self) -> Literal["x86_64", "arm64"]:
        return instance_architecture(self.instance_type)

    @property
    def instance_memory_mib(self) -> int:
        return int(instance_memory_gib(self.instance_type) * 1024)

    @property
    def admin_ui_private(self) -> bool:
        """Admin UIs have no public name: reached through SSM port forwarding (the local stack is all loopback anyway)."""
        return self.is_aws and self.admin_ui_access == "private"

    @property
    def git_ssh_port(self) -> int:
        if self.git_ssh_port_choice:
            return self.git_ssh_port_choice
        return ADMIN_SSH_PORT if self.is_aws and not self.admin_cidrs else GIT_SSH_ALT_PORT

    @property
    def acme_challenge(self) -> Literal["http-01", "dns-01"]:
        """Let's Encrypt cannot reach port 80 behind an allow-list: then it checks a TXT record in Route 53 instead."""
        return "dns-01" if self.allowed_cidrs else "http-01"

    @property
    def host_sshd_loopback_only(self) -> bool:
        """Git SSH holds the host's port 22, so the host's sshd listens on loopback only (SSM still reaches it)."""
        return self.git_ssh_port == ADMIN_SSH_PORT

    @property
    def task_cpu(self) -> int:
        return int(self.ha_task_size.split("/")[0])

    @property
    def task_memory_mib(self) -> int:
        return int(self.ha_task_size.split("/")[1])

    def hostname(self, subdomain: str) -> str:
        return f"{subdomain}.{self.domain}"


class _KeyProblemError(ValueError):
    """A cross-field problem that must still name its own key."""

    def __init__(self, alias: str, value: Any, expected: str, shown_raw: bool = False) -> None:
        super().__init__(f"{full_key(alias)}: got {value if shown_raw else repr(value)}; expected {expected}")


class _ControlCharacterError(ValueError):
    """A value holds a character that config files read as a line break or hide."""


class _DetailError(ValueError):
    """A check whose reason adds to the key's expectation (shown in brackets after it)."""


def _refuse_control_characters(value: str) -> None:
    for character in value:
        if unicodedata.category(character) in _FORBIDDEN_CATEGORIES:
            raise _ControlCharacterError(f"contains the control character U+{ord(character):04X}")


def _within(value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ValueError("out of range")
    return value


def instance_architecture(instance_type: str) -> Literal["x86_64", "arm64"]:
    """Graviton families carry a `g` among their attribute letters (m7g, c7gn, r8gd); a1 is the first Graviton."""
    match = _INSTANCE_TYPE.fullmatch(instance_type)
    if match is None:
        raise ValueError(f"malformed instance type {instance_type!r}")
    if "g" in match.group("attributes") or match.group("family") == "a":
        return "arm64"
    return "x86_64"


def instance_memory_gib(instance_type: str) -> float:
    """Memory of an instance type, from its size (exact for t/c/m/r/x/z families, an estimate of 4 GiB/vCPU otherwise)."""
    match = _INSTANCE_TYPE.fullmatch(instance_type)
    if match is None:
        raise ValueError(f"malformed instance type {instance_type!r}")
    family, size = match.group("family"), match.group("size")
    if family == "t":
        return float(_BURSTABLE_MEMORY_GIB.get(size, 32))
    vcpus = {"nano": 0.25, "micro": 0.5, "small": 1, "medium": 1, "large": 2}.get(size)
    if vcpus is None:
        multiplier = size.removesuffix("xlarge")
        vcpus = 4 * int(multiplier) if multiplier.isdigit() else 4 if size == "xlarge" else 64  # metal
    return float(vcpus * _MEMORY_PER_VCPU_GIB.get(family[0], 4))


# Settings fields that are not `forgestack:` keys: the region belongs to the aws provider (`aws:region`).
_OTHER_NAMESPACE_ALIASES = {"region": "aws:region"}


def _fields_by_alias() -> dict[str, pydantic.fields.FieldInfo]:
    return {field.alias: field for field in Settings.model_fields.values() if field.alias}


def config_keys() -> dict[str, pydantic.fields.FieldInfo]:
    """Config key (alias) -> field, for every key in the `forgestack:` namespace."""
    return {alias: field for alias, field in _fields_by_alias().items() if alias not in _OTHER_NAMESPACE_ALIASES}


def full_key(alias: str) -> str:
    """`forgestack:vpcCidr` for `vpcCidr`; `aws:region` for `region`."""
    return _OTHER_NAMESPACE_ALIASES.get(alias, f"{NAMESPACE}:{alias}")


def _expected(alias: str) -> str:
    extra = _fields_by_alias()[alias].json_schema_extra
    assert isinstance(extra, dict)
    return str(extra["expected"])


def _raw_config() -> dict[str, Any]:
    """Every config value the engine passed to this program, keyed `namespace:key`.

    `pulumi.Config` can only look up keys it is asked for; to reject unknown keys (a typo must not
    be silently ignored) we read the whole map, which the SDK keeps in `runtime.config`.
    """
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    return raw


def parse(raw: dict[str, Any], stack: str = "dev") -> Settings:
    """Validate the `forgestack:` (and `aws:region`) entries of a raw config map. Pure: no Pulumi calls."""
    keys = config_keys()
    values: dict[str, Any] = {}
    problems: list[str] = []
    for full_key, value in sorted(raw.items()):
        namespace, _, key = full_key.partition(":")
        if namespace == "aws" and key == "region":
            values["region"] = value
        elif namespace != NAMESPACE:
            continue
        elif key == "region":
            problems.append(f"{full_key}: set the region as aws:region; expected no {full_key} key")
        elif key not in keys:
            hint = difflib.get_close_matches(key, keys, n=1)
            did_you_mean = f" (did you mean {NAMESPACE}:{hint[0]}?)" if hint else ""
            problems.append(f"{full_key}: unknown key{did_you_mean}; expected one of: {', '.join(sorted(keys))}")
        else:
            values[key] = value
    if problems:
        raise ConfigError("invalid stack configuration: " + " | ".join(problems))
    try:
        return Settings.model_validate({**values, "stack": stack})
    except pydantic.ValidationError as error:
        raise ConfigError("invalid stack configuration: " + " | ".join(_describe(error, values))) from None


def _describe(error: pydantic.ValidationError, values: dict[str, Any]) -> list[str]:
    messages = []
    for problem in error.errors():
        location = [str(part) for part in problem["loc"]]
        if not location:  # a model-level check: its message already names key, value and expectation
            cause = problem.get("ctx", {}).get("error")
            messages.append(str(cause) if cause is not None else problem["msg"])
            continue
        alias = location[0]
        key = full_key(alias)
        if problem["type"] == "missing":
            messages.append(f"{key}: missing; expected {_expected(alias)} (pulumi config set {key} ...)")
        else:
            shown = "[secret]" if _is_secret(alias) else repr(values.get(alias, problem.get("input")))
            cause = problem.get("ctx", {}).get("error")
            why = f" ({cause})" if isinstance(cause, (_ControlCharacterError, _DetailError)) else ""
            messages.append(f"{key}: got {shown}; expected {_expected(alias)}{why}")
    return messages


def _is_secret(alias: str) -> bool:
    extra = _fields_by_alias()[alias].json_schema_extra
    return bool(isinstance(extra, dict) and extra.get("secret"))


def load() -> Settings:
    """Read and validate this stack's configuration. Call once, first thing in `__main__.py`."""
    return parse(_raw_config(), stack=pulumi.get_stack())
