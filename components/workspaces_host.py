"""WorkspacesHost (workspaces: true): Kasm Workspaces installed by its official single-server installer on an Ubuntu 24.04
instance of its own in the stack's VPC, reached only through the forge's Nginx.

No port is open to the Internet: its security group admits Kasm's port from the forge host's group alone. It has a public
address for its way out (the single topology's VPC has no NAT; Kasm pulls its images from Docker Hub) and is reached by
people through workspaces.<domain> on the forge's proxy, by operators through SSM. IMDSv2 with one hop (session
containers never reach the role), encrypted root volume on a key of its own. Kasm's four passwords live in a secret only
this host's role may read; the installer reads them at first boot (files/kasm-install.sh), and the user data holds none.
A pinned node-exporter on its private address feeds the forge's Prometheus; backup.py dumps Kasm's database into the
stack's backups bucket under its own prefix on a timer that an SSM association installs (and updates with the tools).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any, Final, Literal

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components import templates
from components.backup_job import (
    BACKUP_DELAY,
    REPO_HOST_TOOLS,
    TIMEOUT_HOURS,
    OneshotUnit,
    backup_writer_statements,
    calendar_timer,
    on_calendar,
    oneshot_service,
)
from components.constants import CONTAINER_PREFIX, HTTPS_PORT, TEXTFILE_COLLECTOR_DIR
from components.host import METADATA_HOP_LIMIT, SSM_AGENT_STATEMENTS, encode_user_data, ssm_association_statements, ubuntu_ami
from components.host_files import HostFile, install_lines
from components.kms import rotating_key
from components.network import service_assume_role_policy
from components.ops_host import TOOLS_DIR, UNITS_DIR
from components.services import images, monitoring, workspaces

INSTALL_SCRIPT: Final = "/usr/local/sbin/forgestack-kasm-install"
# Kasm's own names for its database (kasmtech/ansible's backup_db role dumps `-U kasmapp kasm` in kasm_db).
KASM_DB_CONTAINER: Final = "kasm_db"
KASM_DB_USER: Final = "kasmapp"
KASM_DB_NAME: Final = "kasm"
BACKUP_PREFIX: Final = "workspaces"  # in the stack's backups bucket, beside the forge's own prefix
BACKUP_UNIT: Final = "forgestack-kasm-backup"
BACKUP_METRICS_FILE: Final = f"{TEXTFILE_COLLECTOR_DIR}/forgestack_kasm_backup.prom"
TOOLS: Final = ("backup.py", "restore.py")  # restore.py imports backup.py beside it
UPGRADE_SCRIPT: Final = "kasm-install.sh"  # the first boot's install script, which --upgrade turns into the upgrader
UPGRADE_TIMEOUT_SECONDS: Final = 2 * 3600  # Kasm's upgrade pulls its new service images: minutes, not hours
PACKAGES: Final = ("python3-boto3", "curl")
NODE_EXPORTER_CONTAINER: Final = f"{CONTAINER_PREFIX}{monitoring.NODE_EXPORTER}"
PASSWORD_LENGTH: Final = 32  # letters and digits: Kasm's installer takes them as arguments


@dataclass(frozen=True)
class WorkspacesHostArgs:
    stack: str
    region: str
    instance_type: str
    architecture: Literal["x86_64", "arm64"]
    volume_gb: int
    sessions: int
    release: str
    release_sha256: str
    vpc_id: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    private_ip: str  # workspaces.private_ip(vpc_cidr): the proxy's configuration names it
    forge_host_security_group_id: pulumi.Input[str]  # the only source allowed to Kasm's port
    backup_bucket_name: pulumi.Input[str]
    backup_bucket_arn: pulumi.Input[str]
    backup_key_arn: pulumi.Input[str]
    backup_interval_hours: int
    protect: bool = False


def install_argv(args: WorkspacesHostArgs, secret_arn: str) -> list[str]:
    """The install script's command line in the user data: nothing secret, the secret's ARN only."""
    return [INSTALL_SCRIPT, "--release-url", workspaces.release_url(args.release), "--sha256", args.release_sha256,
            "--secret-arn", secret_arn, "--region", args.region, "--swap-mib", str(workspaces.swap_mib(args.sessions)),
            "--listen-port", str(workspaces.KASM_PORT), "--public-port", str(HTTPS_PORT)]


def node_exporter_argv(private_ip: str) -> list[str]:
    """The host's metrics for the forge's Prometheus, on its private address only; read-only, every capability dropped."""
    return ["docker", "run", "--detach", "--name", NODE_EXPORTER_CONTAINER, "--restart", "unless-stopped",
            "--network", "host", "--pid", "host", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--memory", "64m", "--pids-limit", "64", "--volume", "/:/host:ro,rslave", images.locked(images.NODE_EXPORTER),
            *monitoring.NODE_EXPORTER_FLAGS, f"--collector.textfile.directory=/host{TEXTFILE_COLLECTOR_DIR}",
            f"--web.listen-address={private_ip}:{monitoring.NODE_EXPORTER_PORT}"]


def render_user_data(args: WorkspacesHostArgs, secret_arn: str) -> str:
    return templates.render("workspaces-cloud-init.yaml.j2", packages=PACKAGES,
                            install_script=templates.read("kasm-install.sh"), install_argv=install_argv(args, secret_arn),
                            node_exporter_argv=node_exporter_argv(args.private_ip))


def kasm_backup_argv(bucket: str) -> list[str]:
    """backup.py against Kasm's database container: its own prefix in the stack's backups bucket, its success metric for
    the node-exporter (BackupTooOld then watches it like the forge host's)."""
    return ["/usr/bin/python3", f"{TOOLS_DIR}/backup.py", "--bucket", bucket, "--prefix", BACKUP_PREFIX,
            "--postgres-container", KASM_DB_CONTAINER, "--postgres-user", KASM_DB_USER, "--postgres-database", KASM_DB_NAME,
            "--metrics-file", BACKUP_METRICS_FILE]


def kasm_backup_units(bucket: str, region: str, interval_hours: int) -> dict[str, str]:
    service = oneshot_service(OneshotUnit(
        "forgestack backup of Kasm Workspaces' database to S3", kasm_backup_argv(bucket), region, mount="/",
        timeout_hours=TIMEOUT_HOURS, documentation=f"{TOOLS_DIR}/backup.py", read_write_paths=TEXTFILE_COLLECTOR_DIR,
    ))
    timer = calendar_timer(f"forgestack backup of Kasm's database every {interval_hours} h", on_calendar(interval_hours),
                           BACKUP_DELAY)
    return {f"{BACKUP_UNIT}.service": service, f"{BACKUP_UNIT}.timer": timer}


def upgrade_argv(args: WorkspacesHostArgs, secret_arn: str) -> list[str]:
    """The install script in upgrade mode: the release of the settings, after a backup of Kasm's database (a no-op when
    that release is installed, or before the first boot installed any)."""
    return ["bash", f"{TOOLS_DIR}/{UPGRADE_SCRIPT}", *install_argv(args, secret_arn)[1:], "--upgrade",
            "--backup-unit", f"{BACKUP_UNIT}.service"]


def tools_script(bucket: str, region: str, interval_hours: int, upgrade: list[str]) -> list[str]:
    """Shell lines that install backup.py, restore.py and the install script (checked, swapped in whole) and the
    backup's units, start the timer, then move Kasm to the release of the settings. Run by the SSM association
    whenever the document changes: a new version of the tools, or a new workspacesRelease, reaches the host."""
    files = (*(HostFile(f"/{name}", (REPO_HOST_TOOLS / name).read_text(), 0o755) for name in TOOLS),
             HostFile(f"/{UPGRADE_SCRIPT}", templates.read("kasm-install.sh"), 0o755))
    units = kasm_backup_units(bucket, region, interval_hours)
    return [
        "set -eu",
        *install_lines(files, TOOLS_DIR),
        f"mkdir -p {TEXTFILE_COLLECTOR_DIR}",
        *(f"printf '%s' {shlex.quote(text)} > {UNITS_DIR}/{unit}" for unit, text in units.items()),
        "systemctl daemon-reload",
        f"systemctl enable --now {BACKUP_UNIT}.timer",
        f"echo 'forgestack: Kasm backup tools installed, backup every {interval_hours} h'",
        shlex.join(upgrade),
    ]


def tools_document(bucket: str, region: str, interval_hours: int, upgrade: list[str]) -> str:
    return json.dumps({
        "schemaVersion": "2.2",
        "description": "Install forgestack's backup and restore tools and the backup timer of Kasm's database on the "
                       "workspaces host, then upgrade Kasm to the release of the settings (backup first)",
        "mainSteps": [{"action": "aws:runShellScript", "name": "installTools",
                       "inputs": {"runCommand": tools_script(bucket, region, interval_hours, upgrade),
                                  "timeoutSeconds": UPGRADE_TIMEOUT_SECONDS}}],
    })


def host_policy(secret_arn: str, key_arn: str, bucket_arn: str, backup_key_arn: str, document_arn: str) -> str:
    """The SSM agent's needs and the tools document's association; Kasm's passwords: one secret, decrypted with its key only
    through Secrets Manager; its backups: written and read under its own prefix only (never the forge's, which hold
    Gitea's database), never erased."""
    statements: list[dict[str, Any]] = [
        *SSM_AGENT_STATEMENTS,
        *ssm_association_statements(document_arn),
        *backup_writer_statements(bucket_arn, backup_key_arn, BACKUP_PREFIX, read_everything=False),
        {"Sid": "ReadKasmPasswords", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secret_arn},
        {"Sid": "DecryptKasmPasswords", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn,
         "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{secret_arn.split(':')[3]}.amazonaws.com"}}},
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


class WorkspacesHost(pulumi.ComponentResource):
    instance: aws.ec2.Instance
    security_group: aws.ec2.SecurityGroup
    secret: aws.secretsmanager.Secret

    def __init__(self, name: str, args: WorkspacesHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:WorkspacesHost", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg", vpc_id=args.vpc_id, description="forgestack workspaces host: Kasm from the forge's proxy only",
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-from-proxy", security_group_id=self.security_group.id, ip_protocol="tcp",
            from_port=workspaces.KASM_PORT, to_port=workspaces.KASM_PORT,
            referenced_security_group_id=args.forge_host_security_group_id,
            description="Kasm's HTTPS from the forge host's Nginx", opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-metrics-from-prometheus", security_group_id=self.security_group.id, ip_protocol="tcp",
            from_port=monitoring.NODE_EXPORTER_PORT, to_port=monitoring.NODE_EXPORTER_PORT,
            referenced_security_group_id=args.forge_host_security_group_id,
            description="node-exporter for the forge host's Prometheus", opts=child,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-outbound-all", security_group_id=self.security_group.id, ip_protocol="-1", cidr_ipv4="0.0.0.0/0",
            description="all outbound (Kasm's release, Docker Hub images, packages, AWS APIs)", opts=child,
        )

        self.key = rotating_key(f"{name}-key", f"forgestack {args.stack} workspaces host: volume and Kasm's passwords",
                                self, args.protect)
        passwords = {key: random.RandomPassword(f"{name}-{key}", length=PASSWORD_LENGTH, special=False, opts=child)
                     for key in workspaces.CREDENTIALS}
        self.secret = aws.secretsmanager.Secret(
            f"{name}-secret", description="forgestack Kasm Workspaces passwords (JSON)", kms_key_id=self.key.arn,
            recovery_window_in_days=7, opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-secret-version", secret_id=self.secret.id,
            secret_string=pulumi.Output.secret(
                pulumi.Output.json_dumps({key: password.result for key, password in passwords.items()})),  # type: ignore[arg-type]
            opts=child,
        )

        # The backup tools and timer arrive through SSM: the association runs the document once the agent is online, and
        # again whenever the document changes.
        self.tools = aws.ssm.Document(
            f"{name}-tools", document_type="Command", document_format="JSON",
            content=pulumi.Output.all(args.backup_bucket_name, self.secret.arn).apply(
                lambda v: tools_document(v[0], args.region, args.backup_interval_hours, upgrade_argv(args, v[1]))),
            opts=child,
        )
        role = aws.iam.Role(f"{name}-role", assume_role_policy=service_assume_role_policy("ec2.amazonaws.com"), opts=child)
        policy = aws.iam.RolePolicy(
            f"{name}-policy", role=role.id,
            policy=pulumi.Output.all(self.secret.arn, self.key.arn, args.backup_bucket_arn, args.backup_key_arn,
                                     self.tools.arn).apply(lambda v: host_policy(*v)),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, opts=child)

        self.instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=ubuntu_ami(args.architecture, self).id,
            instance_type=args.instance_type,
            subnet_id=args.subnet_id,
            private_ip=args.private_ip,
            associate_public_ip_address=True,  # the way out only: the security group admits nothing from the Internet
            vpc_security_group_ids=[self.security_group.id],
            iam_instance_profile=profile.name,
            monitoring=True,
            ebs_optimized=True,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=METADATA_HOP_LIMIT,
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_type="gp3", volume_size=args.volume_gb, encrypted=True, delete_on_termination=True,
                kms_key_id=self.key.arn,
            ),
            user_data_base64=self.secret.arn.apply(lambda arn: encode_user_data(render_user_data(args, arn))),
            tags={"Name": f"forgestack-{args.stack}-workspaces"},
            # Kasm's data lives on this volume: a newer image or user data must never replace the instance by itself.
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, depends_on=[policy],
                                        ignore_changes=["ami", "userData", "userDataBase64"]),
        )
        aws.ssm.Association(
            f"{name}-tools-install", name=self.tools.name, document_version=self.tools.latest_version,
            targets=[aws.ssm.AssociationTargetArgs(key="InstanceIds", values=[self.instance.id])], opts=child,
        )
        self.register_outputs({"instanceId": self.instance.id, "privateIp": self.instance.private_ip, "toolsDocument": self.tools.name})


def ssm_port_forward(region: str, instance_id: str) -> str:
    """Reach Kasm directly (bypassing the proxy), e.g. to debug: https://localhost:8443/."""
    parameters = json.dumps({"portNumber": [str(workspaces.KASM_PORT)], "localPortNumber": [str(workspaces.KASM_PORT)]})
    return shlex.join(["aws", "ssm", "start-session", "--region", region, "--target", instance_id,
                       "--document-name", "AWS-StartPortForwardingSession", "--parameters", parameters])
