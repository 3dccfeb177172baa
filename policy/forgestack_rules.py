"""forgestack's guardrails as plain functions over (resource type, properties).

The same functions run in three places: inside the pulumi-policy pack (`pulumi preview --policy-pack
policy`), offline in the tests, and in scripts/rehearse.py, which fails on a mandatory violation.
Properties are the engine's camelCase inputs. Each rule names the Checkov / AWS Foundational
Security Best Practices (FSBP) / CIS Docker control it mirrors. Accepted risks are listed, with
their reason, in ACCEPTED_RISKS: they are reported, not failed.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import gzip
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Enforcement = Literal["mandatory", "advisory"]
Props = dict[str, Any]

WORLD = ("0.0.0.0/0", "::/0")
ALL_INTERFACES = (None, "", "0.0.0.0", "::")  # noqa: S104 (what the rule looks for, not a binding)
ADMIN_PORTS = (22, 3389)
DATABASE_PORTS = (5432, 3306, 6379, 27017, 9200)
# ELB TLS policies that offer TLS 1.2 and 1.3 only (CKV_AWS_103).
MODERN_TLS_POLICIES = ("ELBSecurityPolicy-TLS13-1-2", "ELBSecurityPolicy-TLS13-1-3", "ELBSecurityPolicy-FS-1-2")
PUBLIC_CONTAINER_PORTS = (80, 443, 2222)
# Capabilities a container may add back after dropping ALL (each addition is still an accepted risk with its
# reason). Never: SYS_ADMIN, SYS_PTRACE, SYS_MODULE, NET_ADMIN, DAC_READ_SEARCH (open_by_handle_at escapes), ...
ADDABLE_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "NET_BIND_SERVICE", "SYS_CHROOT", "AUDIT_WRITE",
                        "KILL")
BROAD_MANAGED_POLICIES = ("AdministratorAccess", "PowerUserAccess", "IAMFullAccess", "AmazonS3FullAccess",
                          "SecretsManagerReadWrite", "AmazonEC2FullAccess", "AWSKeyManagementServicePowerUser")
DATA_SERVICES = ("s3", "secretsmanager", "kms", "ssm", "dynamodb", "rds")
# An exact version: a numeric tag (1.27.3, 18.4-trixie), v-prefixed (v1.29.7), MinIO's release stamp or a digest.
PINNED_IMAGE = re.compile(r"^[a-z0-9./-]+((:\d+[A-Za-z0-9._-]*|:v\d+[A-Za-z0-9._-]*|:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ)"
                          r"(@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64})$")  # an exact tag, its digest, or both
SECRET_IN_TEXT = re.compile(
    # a private key, an AWS access key, an environment-style NAME=value (upper case, as env files and
    # shell exports write it; not NAME_FILE=/path, the file a secret is read from) or a YAML-style
    # name: "value", where the value looks like a credential
    r"(-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}"
    r"|\b[A-Z0-9_]*(PASSWORD|PASSWD|SECRET|TOKEN)[A-Z0-9_]*(?:(?<!_FILE)=|(?<=_FILE)=(?!/))[\"']?[^\s\"'$]{12,}"
    r"|(?i:\b\w*(password|passwd|secret|token)\w*:\s*[\"'][^\s\"']{12,}[\"']))",
)
# What would let a principal erase a backup or shorten how long it is kept (components/host.py denies all of it to the host).
BACKUP_ERASURE_ACTIONS = (
    "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectRetention", "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention", "s3:PutBucketObjectLockConfiguration", "s3:PutLifecycleConfiguration",
    "s3:PutBucketVersioning", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy", "s3:DeleteBucket",
)
BACKUPS_TAG = ("forgestack:purpose", "backups")  # components/backups.py tags the backups bucket with it
SECRET_ENV_NAME = re.compile(r"PASSW|SECRET|TOKEN|API_?KEY", re.IGNORECASE)
# Names that only look like secrets: where a secret is read from (NAME_FILE, Gitea's NAME__FILE) and an OAuth2 client's
# token endpoint (GF_AUTH_GENERIC_OAUTH_TOKEN_URL), a public URL.
NOT_SECRET_ENV_SUFFIXES = ("_FILE", "_TOKEN_URL")


def secret_env_name(key: str) -> bool:
    """Whether an environment variable's name says it holds a secret value (which belongs in a file instead)."""
    return bool(SECRET_ENV_NAME.search(key)) and not key.upper().endswith(NOT_SECRET_ENV_SUFFIXES)


@dataclass(frozen=True)
class Resource:
    """What a rule sees of one resource: the same fields in the pack and offline."""

    type: str
    name: str
    props: Props
    urn: str = ""
    dependencies: tuple[str, ...] = ()  # URNs this resource depends on


@dataclass(frozen=True)
class Rule:
    name: str
    description: str  # starts with the control ids it mirrors
    enforcement: Enforcement
    types: tuple[str, ...]  # resource types checked; empty for a stack rule
    check: Callable[[Resource], list[str]] | None = None  # one resource -> violation messages
    check_stack: Callable[[list[Resource]], list[tuple[str, str]]] | None = None  # -> (resource name, message)


@dataclass(frozen=True)
class Violation:
    rule: str
    enforcement: Enforcement
    resource: str
    message: str
    accepted: str = ""  # the reason, when this is an accepted risk


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.enforcement == "mandatory" and not v.accepted]

    @property
    def advisory(self) -> list[Violation]:
        return [v for v in self.violations if v.enforcement == "advisory" and not v.accepted]

    @property
    def accepted(self) -> list[Violation]:
        return [v for v in self.violations if v.accepted]


# (rule, resource name) -> why the risk is accepted
ACCEPTED_RISKS: dict[tuple[str, str], str] = {
    ("ec2-no-public-ip", "host-eip"): "the host serves the forge itself; only 80, 443 and git SSH (22 or 2222) are open to the world",
    ("ec2-no-public-ip", "workspaces-instance"): "only with workspaces: its way out (Kasm's release and images; the single "
                                                 "topology's VPC has no NAT); its security group admits Kasm's port from "
                                                 "the forge host alone",
    ("sg-no-admin-port-from-world", "network-git-ssh-in-0"): "git over SSH on 22 (gitSshPort) is Gitea's own sshd in its "
                                                             "container, keys only, git commands only; the host's sshd "
                                                             "listens on loopback only (SSM), and 22 is refused with adminCidrs",
    ("container-not-privileged", "services-certbot"): "only with allowedCidrs (staging): certbot answers ACME DNS-01 "
                                                      "through Route 53 with the instance role, which IMDSv2's hop limit of 1 "
                                                      "keeps from bridged containers; it publishes nothing, runs with every "
                                                      "capability dropped and no-new-privileges, and the role may only write "
                                                      "_acme-challenge TXT records of the stack's names",
    ("container-no-docker-socket", "services-cadvisor"): "cAdvisor names containers through the Docker API; read-only mount, "
                                                         "no published port, reachable only by Prometheus",
    ("container-no-docker-socket", "services-runner"): "the Gitea Runner starts CI jobs as containers on the host's engine; "
                                                       "the jobs never get the socket (docker_host -) and run unprivileged, "
                                                       "capped, with no-new-privileges",
    ("container-no-docker-socket", "services-drone-runner"): "the Drone runner starts pipeline steps as containers on the host's "
                                                             "engine; run trusted repositories only",
    ("container-no-docker-socket", "services-portainer"): "Portainer manages the Docker engine by design; an opt-in switch "
                                                          "(forgestack:portainer), on in dev, off in prod",
    ("s3-access-logging", "backups-replica"): "the replica in the second region is written only by S3 replication (its own "
                                              "role) and read only in a disaster; a second access-log bucket there buys little",
    ("s3-access-logging", "objects-replica"): "topology ha: the copy of Gitea's objects in the second region is written "
                                              "only by S3 replication and read only in a disaster, like the backups' replica",
    ("sg-no-admin-port-from-world", "network-ssh-lb-in-22"): "topology ha: git over SSH reaches Gitea's own sshd in its tasks "
                                                            "through the network load balancer (keys only, git commands only); "
                                                            "no host sshd exists",
    ("s3-kms-encryption", "edge-access-logs-encryption"): "load balancers deliver access logs only to buckets encrypted with "
                                                           "S3-managed keys (SSE-S3), never SSE-KMS",
    ("s3-kms-encryption", "backups-access-logs-encryption"): "S3 delivers server access logs only to buckets encrypted "
                                                              "with S3-managed keys (SSE-S3), never SSE-KMS",
    ("container-capabilities-dropped", "services-postgres"): "the image's root entrypoint owns the cluster directory to postgres "
                                                             "and drops to it with gosu: CHOWN, DAC_OVERRIDE, FOWNER, SETGID, SETUID",
    ("container-capabilities-dropped", "services-valkey"): "the image's root entrypoint owns /data to valkey and drops to it: "
                                                           "CHOWN, DAC_OVERRIDE, FOWNER, SETGID, SETUID",
    ("container-capabilities-dropped", "services-gitea"): "s6 (root) prepares /data for git and runs Gitea as git and sshd on "
                                                          "port 22: the ownership set, NET_BIND_SERVICE, SYS_CHROOT and AUDIT_WRITE "
                                                          "for sshd, KILL to stop its git-owned children",
    ("container-capabilities-dropped", "services-proxy"): "the Nginx master (root) binds 80/443, owns its temp directories to "
                                                          "nginx and runs and signals its nginx workers: the ownership set, "
                                                          "NET_BIND_SERVICE, KILL",
    ("container-capabilities-dropped", "services-alloy"): "reads every container's log and the journal's group-owned files "
                                                          "through read-only mounts: DAC_OVERRIDE",
    ("container-capabilities-dropped", "services-cadvisor"): "reads cgroup and /var/lib/docker files of other owners through "
                                                             "read-only mounts: DAC_OVERRIDE",
}

# Checkov's findings (tests/test_checkov.py runs Checkov over each AWS stack's rehearsed plan) that stand, with the
# reason: (check id, Pulumi resource name). Every other failed check fails the tests, and so does an entry here
# that Checkov reports on no stack.
CHECKOV_ACCEPTED: dict[tuple[str, str], str] = {
    ("CKV_AWS_273", "mail-smtp-user"): "SES's SMTP interface signs in with an IAM user's access key only (no role, no SSO); "
                                       "the user's one permission is sending as the stack's identity",
    ("CKV_AWS_24", "network-git-ssh-in-0"): "git over SSH on 22 is Gitea's own sshd in its container (keys only, git "
                                            "commands only); the host's sshd listens on loopback only, for SSM",
    ("CKV_AWS_260", "network-web-in-0"): "port 80 is open to the world for Let's Encrypt's HTTP-01 challenge and the "
                                         "redirect to HTTPS; Nginx serves nothing else on it",
    ("CKV2_AWS_62", "backups-bucket"): "nothing consumes bucket events: backup age is watched by the BackupTooOld alert and "
                                       "the host's heartbeat",
    ("CKV2_AWS_62", "backups-access-logs"): "an access-log bucket: S3 writes to it, nothing reacts to it",
    ("CKV2_AWS_57", "credentials-secret"): "the generated credentials are live in running services (database, Gitea, "
                                           "Grafana); rotation is a deploy with a changed secret, not a Lambda",
    ("CKV_AWS_144", "backups-bucket"): "stacks without backupReplicaRegion (dev) keep one region; prod replicates to a "
                                       "second one",
    ("CKV_AWS_18", "backups-replica"): "written only by S3 replication (its own role), read only in a disaster; a second "
                                       "access-log bucket in the replica region buys little",
    ("CKV2_AWS_62", "backups-replica"): "nothing consumes the replica's events; replication metrics show its lag",
    ("CKV_AWS_18", "objects-replica"): "written only by S3 replication (its own role), read only in a disaster; a second "
                                       "access-log bucket in the replica region buys little",
    ("CKV2_AWS_62", "objects-replica"): "nothing consumes the replica's events; replication metrics show its lag",
    ("CKV2_AWS_57", "runner-token-secret"): "the runner registration token is Gitea's global token, read at its start; "
                                            "rotating it is a deploy with a new value (Gitea and the runner host restart)",
    ("CKV_AWS_144", "backups-access-logs"): "access logs are evidence for the stack's region; not replicated",
    ("CKV_AWS_145", "backups-access-logs"): "S3 delivers server access logs only to buckets encrypted with S3-managed keys "
                                            "(SSE-S3), never SSE-KMS",
    ("CKV_AWS_338", "network-flow-logs"): "dev keeps flow logs flowLogRetentionDays (14) on purpose, for cost; prod keeps 365",
    # topology ha
    ("CKV_AWS_336", "cluster-gitea"): "Gitea's image starts s6 as root, which writes /run, /etc/s6 and the app.ini under "
                                      "the root file system, and Fargate has no tmpfs; the two init containers are read-only",
    ("CKV_AWS_332", "cluster-service"): "the Fargate platform version is pinned (1.4.0, the current one) like every version "
                                        "here; LATEST would move under a running service",
    ("CKV2_AWS_62", "edge-access-logs"): "a log bucket: the load balancers and S3 write to it, nothing reacts to it",
    ("CKV2_AWS_62", "objects-bucket"): "Gitea reads and writes its objects itself; nothing consumes bucket events",
    ("CKV_AWS_144", "edge-access-logs"): "access logs are evidence for the stack's region; not replicated",
    ("CKV_AWS_145", "edge-access-logs"): "load balancers deliver access logs only to buckets encrypted with S3-managed keys "
                                         "(SSE-S3), never SSE-KMS",
    ("CKV_AWS_91", "edge-ssh"): "a network load balancer logs only TLS listeners; git over SSH is a TCP listener",
    ("CKV2_AWS_76", "edge-web"): "AWSManagedRulesKnownBadInputsRuleSet (with the Log4j rules) is attached; the check also "
                                 "asks for AnonymousIpList, whose hosting-provider list would block CI systems and mirrors "
                                 "that clone from cloud addresses",
    ("CKV_AWS_24", "network-ssh-lb-in-22"): "git over SSH on 22 reaches Gitea's own sshd in its tasks through the network "
                                            "load balancer (keys only, git commands only); no host sshd exists",
    ("CKV_AWS_24", "network-tasks-in-22-from-ssh-lb"): "the source is the network load balancer's security group, not "
                                                        "0.0.0.0/0 (the check reads the port alone)",
    ("CKV_AWS_260", "network-web-lb-in-80"): "port 80 on the application load balancer answers only with a redirect to HTTPS",
}


# ------------------------------------------------------------------ helpers


def _as_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _statements(document: Any) -> list[dict[str, Any]]:
    parsed = _as_json(document)
    if not isinstance(parsed, dict):
        return []
    statements = parsed.get("Statement", [])
    return [s for s in (statements if isinstance(statements, list) else [statements]) if isinstance(s, dict)]


def _listed(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _port_range(props: Props) -> range:
    protocol = str(props.get("ipProtocol", props.get("protocol", "tcp")))
    if protocol in ("-1", "all"):
        return range(0, 65536)
    low = int(float(props.get("fromPort", 0) or 0))
    high = int(float(props.get("toPort", low) or low))
    return range(low, high + 1)


def _ingress_sources(props: Props) -> list[str]:
    return [c for c in (props.get("cidrIpv4"), props.get("cidrIpv6")) if c] + _listed(props.get("cidrBlocks")) + _listed(
        props.get("ipv6CidrBlocks"))


def _ingress_rules(resource: Resource) -> list[Props]:
    """Standalone rules, or the inline `ingress` blocks of a security group."""
    if resource.type == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        return [resource.props]
    return [rule for rule in resource.props.get("ingress") or [] if isinstance(rule, dict)]


def user_data_text(props: Props) -> str:
    """Plain text of the instance's user data, unpacking base64 and gzip as cloud-init would."""
    if props.get("userData"):
        return str(props["userData"])
    encoded = props.get("userDataBase64")
    if not encoded:
        return ""
    try:
        raw = base64.b64decode(str(encoded), validate=True)
    except (binascii.Error, ValueError):
        return str(encoded)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode(errors="replace")


# ------------------------------------------------------------------ per-resource checks


def imdsv2(r: Resource) -> list[str]:
    options = r.props.get("metadataOptions") or {}
    return [] if options.get("httpTokens") == "required" else ["instance metadata must require IMDSv2 tokens (httpTokens=required)"]


def instance_volumes_encrypted(r: Resource) -> list[str]:
    problems = []
    if not (r.props.get("rootBlockDevice") or {}).get("encrypted"):
        problems.append("root volume is not encrypted")
    problems += [f"EBS block device {d.get('deviceName')} is not encrypted" for d in r.props.get("ebsBlockDevices") or []
                 if not d.get("encrypted")]
    return problems


def volume_encrypted(r: Resource) -> list[str]:
    return [] if r.props.get("encrypted") else ["EBS volume is not encrypted"]


def detailed_monitoring(r: Resource) -> list[str]:
    return [] if r.props.get("monitoring") else ["detailed (1-minute) monitoring is off"]


def ebs_optimized(r: Resource) -> list[str]:
    return [] if r.props.get("ebsOptimized") else ["instance is not EBS-optimized"]


def no_secret_in_user_data(r: Resource) -> list[str]:
    match = SECRET_IN_TEXT.search(user_data_text(r.props))
    return [f"user data contains what looks like a secret ({match.group(0)[:12]}...); use Secrets Manager"] if match else []


def no_admin_port_from_world(r: Resource) -> list[str]:
    problems = []
    for rule in _ingress_rules(r):
        ports = _port_range(rule)
        for source in _ingress_sources(rule):
            if source in WORLD:
                problems += [f"port {port} is open to {source}" for port in ADMIN_PORTS if port in ports]
    return problems


def no_database_port(r: Resource) -> list[str]:
    """From networks only: a rule whose source is another security group (the Gitea tasks) names its clients exactly."""
    problems = []
    for rule in _ingress_rules(r):
        if not _ingress_sources(rule):
            continue
        ports = _port_range(rule)
        if len(ports) > 1024:
            continue  # all-ports rules are the next rule's concern
        sources = ", ".join(_ingress_sources(rule))
        problems += [f"database port {port} is reachable from {sources}" for port in DATABASE_PORTS if port in ports]
    return problems


def no_all_traffic_from_world(r: Resource) -> list[str]:
    return [f"all ports open to {source}" for rule in _ingress_rules(r) if len(_port_range(rule)) > 1024
            for source in _ingress_sources(rule) if source in WORLD]


def default_group_closed(r: Resource) -> list[str]:
    return [] if not r.props.get("ingress") and not r.props.get("egress") else ["the default security group must have no rules"]


def public_access_block(r: Resource) -> list[str]:
    keys = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    return [f"{key} is not true" for key in keys if r.props.get(key) is not True]


def bucket_kms_encryption(r: Resource) -> list[str]:
    algorithms = [(rule.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm") for rule in r.props.get("rules") or []]
    return [] if algorithms and all(a in ("aws:kms", "aws:kms:dsse") for a in algorithms) else [
        f"bucket encryption is {algorithms or 'missing'}; expected aws:kms"]


def bucket_versioning(r: Resource) -> list[str]:
    status = (r.props.get("versioningConfiguration") or {}).get("status")
    return [] if status == "Enabled" else [f"versioning is {status!r}; expected Enabled"]


def lifecycle_aborts_multipart(r: Resource) -> list[str]:
    rules = [rule for rule in r.props.get("rules") or [] if rule.get("status") == "Enabled"]
    problems = [] if rules else ["no enabled lifecycle rule"]
    if not any(rule.get("abortIncompleteMultipartUpload") for rule in rules):
        problems.append("no rule aborts incomplete multipart uploads")
    return problems


def tls_only_bucket_policy(r: Resource) -> list[str]:
    for statement in _statements(r.props.get("policy")):
        condition = statement.get("Condition") or {}
        if statement.get("Effect") == "Deny" and str((condition.get("Bool") or {}).get("aws:SecureTransport")).lower() == "false":
            return []
    return ["the bucket policy does not deny requests without TLS (aws:SecureTransport=false)"]


def iam_no_wildcard_action(r: Resource) -> list[str]:
    problems = []
    for statement in _statements(r.props.get("policy")):
        if statement.get("Effect") != "Allow":
            continue
        problems += [f"wildcard action {action!r}" for action in _listed(statement.get("Action")) if action == "*" or action.endswith(":*")]
        if "NotAction" in statement:
            problems.append("Allow with NotAction grants everything else")
    return problems


def iam_no_wildcard_resource_on_data(r: Resource) -> list[str]:
    problems = []
    for statement in _statements(r.props.get("policy")):
        if statement.get("Effect") == "Allow" and "*" in _listed(statement.get("Resource")):
            services = {action.split(":")[0] for action in _listed(statement.get("Action"))}
            problems += [f"{service} actions on every resource ('*')" for service in sorted(services & set(DATA_SERVICES))]
    return problems


def iam_no_broad_managed_policy(r: Resource) -> list[str]:
    arn = str(r.props.get("policyArn", ""))
    return [f"broad managed policy {arn}"] if arn.rsplit("/", 1)[-1] in BROAD_MANAGED_POLICIES else []


def kms_rotation(r: Resource) -> list[str]:
    return [] if r.props.get("enableKeyRotation") else ["key rotation is off"]


def secret_uses_cmk(r: Resource) -> list[str]:
    return [] if r.props.get("kmsKeyId") else ["the secret is encrypted with the AWS-managed key, not a customer key"]


def log_group_cmk(r: Resource) -> list[str]:
    return [] if r.props.get("kmsKeyId") else ["log group not encrypted with a customer-managed key"]


def sns_topic_cmk(r: Resource) -> list[str]:
    return [] if r.props.get("kmsMasterKeyId") else ["SNS topic not encrypted with a KMS key"]


def alarm_notifies(r: Resource) -> list[str]:
    return [] if r.props.get("alarmActions") and r.props.get("okActions") else ["alarm notifies nobody on ALARM and OK"]


def log_group_retention(r: Resource) -> list[str]:
    return [] if r.props.get("retentionInDays") else ["log group keeps logs forever (no retentionInDays)"]


def eip_public(r: Resource) -> list[str]:
    """An Elastic IP on an instance, or an instance launched with a public address of its own."""
    if r.type == "aws:ec2/instance:Instance":
        return ["the instance is launched with a public IP address"] if r.props.get("associatePublicIpAddress") else []
    return ["the instance gets a public IP address"] if r.props.get("instance") else []


def image_pinned(r: Resource) -> list[str]:
    name = str(r.props.get("name", ""))
    return [] if PINNED_IMAGE.match(name) else [f"image {name} is not pinned to an exact tag or digest"]


def container_not_privileged(r: Resource) -> list[str]:
    problems = ["container runs privileged"] if r.props.get("privileged") else []
    added = (r.props.get("capabilities") or {}).get("adds") or []
    problems += [f"capability {cap} added" for cap in added if cap in ("ALL", "SYS_ADMIN")]
    if r.props.get("networkMode") == "host" or r.props.get("pidMode") == "host":
        problems.append("container shares the host's network or PID namespace")
    return problems


def container_no_new_privileges(r: Resource) -> list[str]:
    options = [str(option).replace("=", ":") for option in r.props.get("securityOpts") or []]
    return [] if {"no-new-privileges", "no-new-privileges:true"} & set(options) else ["no-new-privileges is not set"]


def container_capabilities_dropped(r: Resource) -> list[str]:
    capabilities = r.props.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drops") or []):
        return ["Docker's default capabilities are not dropped (drops: ALL)"]
    added = sorted(str(cap).removeprefix("CAP_") for cap in capabilities.get("adds") or [])
    return [f"adds back {', '.join(added)}"] if added else []


def container_capabilities_bounded(r: Resource) -> list[str]:
    added = [str(cap).removeprefix("CAP_") for cap in (r.props.get("capabilities") or {}).get("adds") or []]
    return [f"adds {cap}, which no forgestack container may have" for cap in added if cap not in ADDABLE_CAPABILITIES]


def container_ports(r: Resource) -> list[str]:
    return [f"port {int(float(p['external']))} published on all interfaces" for p in r.props.get("ports") or []
            if p.get("ip") in ALL_INTERFACES and int(float(p.get("external") or 0)) not in PUBLIC_CONTAINER_PORTS]


def container_no_docker_socket(r: Resource) -> list[str]:
    return [f"mounts {v.get('hostPath')}" for v in r.props.get("volumes") or []
            if str(v.get("hostPath") or "") in ("/var/run", "/run", "/var/run/docker.sock", "/run/docker.sock")]


def container_memory_limit(r: Resource) -> list[str]:
    return [] if int(float(r.props.get("memory") or 0)) > 0 else ["no memory limit"]


def container_no_secret_env(r: Resource) -> list[str]:
    problems = []
    for entry in r.props.get("envs") or []:
        key, _, value = str(entry).partition("=")
        if secret_env_name(key) and value:
            problems.append(f"{key} carries a value in the environment; hand secrets over as files")
    return problems


def container_log_rotation(r: Resource) -> list[str]:
    options = r.props.get("logOpts") or {}
    return [] if r.props.get("logDriver") == "json-file" and options.get("max-size") else ["logs are not rotated (json-file max-size)"]


# ------------------------------------------------------------------ stack checks (relations between resources)


def rds_encrypted_private(r: Resource) -> list[str]:
    problems = [] if r.props.get("storageEncrypted") is True and r.props.get("kmsKeyId") else ["storage not encrypted with a KMS key"]
    return problems + (["the database is publicly accessible"] if r.props.get("publiclyAccessible") is not False else [])


def rds_multi_az(r: Resource) -> list[str]:
    return [] if r.props.get("multiAz") is True else ["the database runs in one zone (multiAz is not true)"]


def rds_backups(r: Resource) -> list[str]:
    days = int(float(r.props.get("backupRetentionPeriod") or 0))
    return [] if days >= 7 else [f"automated backups kept {days} days; expected at least 7"]


def efs_encrypted(r: Resource) -> list[str]:
    return [] if r.props.get("encrypted") is True and r.props.get("kmsKeyId") else ["the file system is not encrypted with a KMS key"]


def elasticache_encrypted(r: Resource) -> list[str]:
    checks = {"transitEncryptionEnabled": "TLS in transit", "atRestEncryptionEnabled": "encryption at rest",
              "automaticFailoverEnabled": "automatic failover"}
    problems = [f"no {what}" for key, what in checks.items() if r.props.get(key) is not True]
    return problems + ([] if r.props.get("authToken") else ["no auth token"])


def alb_drops_invalid_headers(r: Resource) -> list[str]:
    if r.props.get("loadBalancerType", "application") != "application":
        return []
    return [] if r.props.get("dropInvalidHeaderFields") is True else ["invalid header fields are passed to the targets"]


def listener_tls(r: Resource) -> list[str]:
    protocol = r.props.get("protocol")
    if protocol == "HTTP":
        actions = r.props.get("defaultActions") or []
        redirects = [a for a in actions if a.get("type") == "redirect" and (a.get("redirect") or {}).get("protocol") == "HTTPS"]
        return [] if redirects and len(redirects) == len(actions) else ["plain HTTP is served instead of redirected to HTTPS"]
    if protocol == "HTTPS":
        policy = str(r.props.get("sslPolicy") or "")
        return [] if policy.startswith(MODERN_TLS_POLICIES) else [f"TLS policy {policy or 'default'} allows old protocols"]
    return []


def web_balancers_behind_waf(resources: list[Resource]) -> list[tuple[str, str]]:
    return [(lb.name, "no WAF web ACL in front of the application load balancer") for lb in resources
            if lb.type == LOAD_BALANCER and lb.props.get("loadBalancerType", "application") == "application"
            and not _dependants(resources, lb, "aws:wafv2/webAclAssociation:WebAclAssociation")]


def _dependants(resources: list[Resource], target: Resource, of_type: str) -> list[Resource]:
    return [r for r in resources if r.type == of_type and target.urn in r.dependencies]


BUCKET_CONTROLS = {
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "a public access block",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": "default encryption",
    "aws:s3/bucketVersioning:BucketVersioning": "versioning",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": "a lifecycle configuration",
    "aws:s3/bucketPolicy:BucketPolicy": "a bucket policy",
}


def buckets_have_controls(resources: list[Resource]) -> list[tuple[str, str]]:
    return [(bucket.name, f"bucket has no {what}") for bucket in resources if bucket.type == "aws:s3/bucket:Bucket"
            for control, what in BUCKET_CONTROLS.items() if not _dependants(resources, bucket, control)]


def buckets_log_access(resources: list[Resource]) -> list[tuple[str, str]]:
    """Every bucket takes part in server access logging: logged to another bucket, or receiving another's logs
    (a log bucket logging itself would log forever). At preview the bucket names are unknown, so the link is the
    BucketLogging resource's dependency on the bucket."""
    logging = "aws:s3/bucketLogging:BucketLogging"
    return [(bucket.name, "bucket access is not logged (server access logging)") for bucket in resources
            if bucket.type == "aws:s3/bucket:Bucket" and not _dependants(resources, bucket, logging)]


def erasure_allowed(document: Any) -> list[str]:
    """Erasure actions an Allow statement grants (wildcards such as s3:* or s3:Delete* included)."""
    granted = []
    for statement in _statements(document):
        if statement.get("Effect") == "Allow":
            for pattern in _listed(statement.get("Action")):
                granted += [a for a in BACKUP_ERASURE_ACTIONS if fnmatch.fnmatchcase(a.lower(), pattern.lower()) and a not in granted]
    return granted


IAM_POLICY_TYPES = ("aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy", "aws:iam/groupPolicy:GroupPolicy",
                    "aws:iam/userPolicy:UserPolicy")


def backups_locked_and_unerasable(resources: list[Resource]) -> list[tuple[str, str]]:
    """The backups bucket (tagged BACKUPS_TAG) has Object Lock with a default retention, and no IAM policy that names
    it (depends on it) allows erasing or shortening its backups."""
    key, value = BACKUPS_TAG
    problems: list[tuple[str, str]] = []
    for bucket in resources:
        if bucket.type != "aws:s3/bucket:Bucket" or (bucket.props.get("tags") or {}).get(key) != value:
            continue
        locks = _dependants(resources, bucket, "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
        retention = [((lock.props.get("rule") or {}).get("defaultRetention") or {}) for lock in locks]
        if not any(r.get("mode") and (r.get("days") or r.get("years")) for r in retention):
            problems.append((bucket.name, "the backups bucket has no Object Lock default retention"))
        for policy in resources:
            if policy.type in IAM_POLICY_TYPES and bucket.urn in policy.dependencies:
                granted = erasure_allowed(_as_json(policy.props.get("policy")))
                if granted:
                    problems.append((policy.name, f"allows {', '.join(granted)} on the backups bucket"))
    return problems


def vpcs_have_flow_logs(resources: list[Resource]) -> list[tuple[str, str]]:
    return [(vpc.name, "VPC has no flow log") for vpc in resources if vpc.type == "aws:ec2/vpc:Vpc"
            and not _dependants(resources, vpc, "aws:ec2/flowLog:FlowLog")]


def vpcs_close_the_default_group(resources: list[Resource]) -> list[tuple[str, str]]:
    return [(vpc.name, "the VPC's default security group is not adopted and emptied") for vpc in resources
            if vpc.type == "aws:ec2/vpc:Vpc" and not _dependants(resources, vpc, "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")]


def containers_have_pids_limits(resources: list[Resource]) -> list[tuple[str, str]]:
    """pulumi-docker cannot set --pids-limit; a command runs `docker update --pids-limit` on every container."""
    updates = " ".join(str(r.props.get("create") or "") for r in resources
                       if r.type == "command:local:Command" and "--pids-limit=" in str(r.props.get("create") or ""))
    return [(r.name, "no process limit (docker update --pids-limit)") for r in resources
            if r.type == CONTAINER and not re.search(rf"(^|[\s'\"]){re.escape(str(r.props.get('name')))}($|[\s'\"])", updates)]


def caa_with_records(resources: list[Resource]) -> list[tuple[str, str]]:
    """Every A record's name has a CAA record at that name or a parent (RFC 8659 climbs towards the root)."""
    records = [r for r in resources if r.type == "aws:route53/record:Record"]
    caa_names = {str(r.props.get("name")).rstrip(".") for r in records if r.props.get("type") == "CAA"}

    def covered(name: str) -> bool:
        labels = name.rstrip(".").split(".")
        return any(".".join(labels[i:]) in caa_names for i in range(len(labels)))

    return [(r.name, f"A record {r.props.get('name')} without a CAA record at or above it") for r in records
            if r.props.get("type") == "A" and not covered(str(r.props.get("name")))]


INSTANCE = "aws:ec2/instance:Instance"
INGRESS = ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "aws:ec2/securityGroup:SecurityGroup")
CONTAINER = "docker:index/container:Container"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
IAM_POLICIES = IAM_POLICY_TYPES

RULES: tuple[Rule, ...] = (
    Rule("ec2-imdsv2-required", "CKV_AWS_79, FSBP EC2.8: instances require IMDSv2", "mandatory", (INSTANCE,), imdsv2),
    Rule("ec2-instance-volumes-encrypted", "CKV_AWS_8, FSBP EC2.3: root and attached block devices encrypted", "mandatory",
         (INSTANCE,), instance_volumes_encrypted),
    Rule("ebs-volume-encrypted", "CKV_AWS_3, FSBP EC2.7: EBS volumes encrypted", "mandatory", ("aws:ebs/volume:Volume",), volume_encrypted),
    Rule("ec2-detailed-monitoring", "CKV_AWS_126: detailed monitoring enabled", "advisory", (INSTANCE,), detailed_monitoring),
    Rule("ec2-ebs-optimized", "CKV_AWS_135: EBS-optimized instance", "advisory", (INSTANCE,), ebs_optimized),
    Rule("ec2-no-secret-in-user-data", "CKV_AWS_46: no secrets in EC2 user data", "mandatory", (INSTANCE,), no_secret_in_user_data),
    Rule("ec2-no-public-ip", "CKV_AWS_88, FSBP EC2.9: instances without a public IPv4 address", "advisory",
         ("aws:ec2/eip:Eip", "aws:ec2/instance:Instance"), eip_public),
    Rule("sg-no-admin-port-from-world", "CKV_AWS_24/25, FSBP EC2.13/EC2.14: no 0.0.0.0/0 to SSH or RDP", "mandatory", INGRESS,
         no_admin_port_from_world),
    Rule("sg-no-database-port", "FSBP EC2.19: no ingress to high-risk database ports", "mandatory", INGRESS, no_database_port),
    Rule("sg-no-all-traffic-from-world", "CKV_AWS_277, FSBP EC2.18: no all-ports ingress from anywhere", "mandatory", INGRESS,
         no_all_traffic_from_world),
    Rule("default-sg-closed", "CKV2_AWS_12, FSBP EC2.2: the default security group has no rules", "mandatory",
         ("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",), default_group_closed),
    Rule("s3-public-access-block", "CKV2_AWS_6, FSBP S3.1/S3.8: all four public access blocks on", "mandatory",
         ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",), public_access_block),
    Rule("s3-kms-encryption", "CKV_AWS_19/145, FSBP S3.4: default encryption with KMS", "mandatory",
         ("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",), bucket_kms_encryption),
    Rule("s3-versioning", "CKV_AWS_21: versioning enabled", "mandatory", ("aws:s3/bucketVersioning:BucketVersioning",), bucket_versioning),
    Rule("s3-lifecycle-aborts-multipart", "CKV2_AWS_61, CKV_AWS_300: lifecycle with abort of incomplete multipart uploads",
         "mandatory", ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",), lifecycle_aborts_multipart),
    Rule("s3-tls-only", "FSBP S3.5: bucket policy denies requests without TLS", "mandatory", ("aws:s3/bucketPolicy:BucketPolicy",),
         tls_only_bucket_policy),
    Rule("s3-access-logging", "CKV_AWS_18, FSBP S3.9: server access logging on every bucket", "mandatory", (),
         check_stack=buckets_log_access),
    Rule("s3-backups-immutable", "FSBP S3.15, CKV_AWS_143: the backups bucket has Object Lock, and no policy may erase or "
         "shorten its backups", "mandatory", (), check_stack=backups_locked_and_unerasable),
    Rule("s3-bucket-controls-present", "CKV2_AWS_6/61, FSBP S3.1/S3.4/S3.5: every bucket has all its controls", "mandatory", (),
         check_stack=buckets_have_controls),
    Rule("iam-no-wildcard-action", "CKV_AWS_62/63/290: no '*' or 'service:*' actions", "mandatory",
         IAM_POLICIES, iam_no_wildcard_action),
    Rule("iam-no-wildcard-resource-on-data", "CKV_AWS_355, CKV_AWS_111: no data-service actions on '*'", "mandatory",
         IAM_POLICIES, iam_no_wildcard_resource_on_data),
    Rule("iam-no-broad-managed-policy", "CKV_AWS_274, trivy AWS-0345: no AdministratorAccess, AmazonS3FullAccess, ...", "mandatory",
         ("aws:iam/rolePolicyAttachment:RolePolicyAttachment",), iam_no_broad_managed_policy),
    Rule("kms-key-rotation", "CKV_AWS_7, FSBP KMS.4: customer keys rotate", "mandatory", ("aws:kms/key:Key",), kms_rotation),
    Rule("secret-customer-key", "CKV_AWS_149: secrets encrypted with a customer-managed key", "mandatory",
         ("aws:secretsmanager/secret:Secret",), secret_uses_cmk),
    Rule("log-group-cmk", "CKV_AWS_158: log groups encrypted with a customer-managed key", "mandatory",
         ("aws:cloudwatch/logGroup:LogGroup",), log_group_cmk),
    Rule("sns-topic-cmk", "CKV_AWS_26, FSBP SNS.1: SNS topics encrypted at rest with KMS", "mandatory",
         ("aws:sns/topic:Topic",), sns_topic_cmk),
    Rule("alarm-has-actions", "FSBP CloudWatch.15: CloudWatch alarms have actions for ALARM (and OK)", "mandatory",
         ("aws:cloudwatch/metricAlarm:MetricAlarm",), alarm_notifies),
    Rule("log-group-retention", "CKV_AWS_66, FSBP CloudWatch.16: log groups have a retention period", "mandatory",
         ("aws:cloudwatch/logGroup:LogGroup",), log_group_retention),
    Rule("vpc-flow-logs", "CKV2_AWS_11, FSBP EC2.6: every VPC has flow logs", "mandatory", (), check_stack=vpcs_have_flow_logs),
    Rule("vpc-default-sg-adopted", "CKV2_AWS_12, FSBP EC2.2: every VPC's default group is managed (and emptied)", "mandatory", (),
         check_stack=vpcs_close_the_default_group),
    Rule("dns-caa-record", "CAA (RFC 8659): a zone with A records names its CA", "advisory", (), check_stack=caa_with_records),
    Rule("rds-encrypted-private", "CKV_AWS_16/17, FSBP RDS.2/RDS.3: database storage encrypted with KMS, not publicly accessible",
         "mandatory", ("aws:rds/instance:Instance",), rds_encrypted_private),
    Rule("rds-multi-az", "FSBP RDS.5: the database has a standby in a second zone", "mandatory", ("aws:rds/instance:Instance",),
         rds_multi_az),
    Rule("rds-backups", "CKV_AWS_133, FSBP RDS.11: automated backups kept at least 7 days", "mandatory", ("aws:rds/instance:Instance",),
         rds_backups),
    Rule("efs-encrypted", "CKV_AWS_42/184, FSBP EFS.1: the file system encrypted with a KMS key", "mandatory",
         ("aws:efs/fileSystem:FileSystem",), efs_encrypted),
    Rule("elasticache-encrypted", "CKV_AWS_29/30/31, FSBP ElastiCache.3/4/5: TLS, auth token, encryption at rest, failover",
         "mandatory", ("aws:elasticache/replicationGroup:ReplicationGroup",), elasticache_encrypted),
    Rule("alb-drops-invalid-headers", "CKV_AWS_131, FSBP ELB.4: the load balancer drops invalid header fields", "mandatory",
         (LOAD_BALANCER,), alb_drops_invalid_headers),
    Rule("lb-listener-tls", "CKV2_AWS_20, CKV_AWS_103, FSBP ELB.1: HTTP redirects to HTTPS; HTTPS offers TLS 1.2+ only", "mandatory",
         ("aws:lb/listener:Listener",), listener_tls),
    Rule("alb-behind-waf", "CKV2_AWS_28, FSBP WAF: every application load balancer has a WAF web ACL", "mandatory", (),
         check_stack=web_balancers_behind_waf),
    Rule("container-image-pinned", "CKV_DOCKER_7, CIS Docker 4.x: images pinned to an exact tag", "mandatory",
         ("docker:index/remoteImage:RemoteImage",), image_pinned),
    Rule("container-not-privileged", "CIS Docker 5.4/5.9/5.15: not privileged, no host network or PID namespace", "mandatory",
         (CONTAINER,), container_not_privileged),
    Rule("container-ports-web-only", "CIS Docker 5.13: only 80/443/2222 published on all interfaces (git on 22: the private "
         "address only)", "mandatory", (CONTAINER,),
         container_ports),
    Rule("container-no-docker-socket", "CIS Docker 5.31: the Docker socket is not mounted", "mandatory", (CONTAINER,),
         container_no_docker_socket),
    Rule("container-memory-limit", "CIS Docker 5.10: a memory limit", "mandatory", (CONTAINER,), container_memory_limit),
    Rule("container-no-new-privileges", "CIS Docker 5.25: no-new-privileges", "mandatory", (CONTAINER,), container_no_new_privileges),
    Rule("container-capabilities-dropped", "CIS Docker 5.3: all capabilities dropped, additions listed with a reason", "mandatory",
         (CONTAINER,), container_capabilities_dropped),
    Rule("container-capabilities-bounded", "CIS Docker 5.3/5.4: no powerful capability added back (SYS_ADMIN, ...)", "mandatory",
         (CONTAINER,), container_capabilities_bounded),
    Rule("container-pids-limit", "CIS Docker 5.28: a process limit per container", "mandatory", (),
         check_stack=containers_have_pids_limits),
    Rule("container-no-secret-env", "CIS Docker 4.10: no secrets in environment variables", "mandatory", (CONTAINER,),
         container_no_secret_env),
    Rule("container-log-rotation", "CIS Docker 2.x: container logs rotated", "advisory", (CONTAINER,), container_log_rotation),
)


def evaluate(resources: Iterable[Resource], rules: Iterable[Rule] = RULES) -> Report:
    """Every rule over every resource it concerns, accepted risks marked."""
    resources = list(resources)
    report = Report()
    for rule in rules:
        found: list[tuple[str, str]] = []
        if rule.check:
            found += [(r.name, message) for r in resources if r.type in rule.types for message in rule.check(r)]
        if rule.check_stack:
            found += rule.check_stack(resources)
        report.violations += [Violation(rule.name, rule.enforcement, name, message, ACCEPTED_RISKS.get((rule.name, name), ""))
                              for name, message in found]
    return report
