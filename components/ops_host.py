"""OpsHost (topology ha): a small Amazon Linux 2023 instance in a private subnet where admins run the forge's tools
against the managed services: restore a backup into RDS and onto EFS, move Gitea's objects into S3 (the migration from
a single host), look at the file system.

No public address and no inbound port: reached through SSM Session Manager. The file system's root is mounted with the
EFS mount helper (TLS, IAM), the PostgreSQL client tools come from the stack's own PostgreSQL image, and the tools' Python
packages are pinned with their hashes (files/ops-requirements.txt). Amazon Linux 2023, unlike the single host's Ubuntu,
because the EFS mount helper is packaged there and nowhere else.

The role reads the backups (never writes or erases them), reads the credentials secret (Gitea's database password,
for the restore), and reads and writes Gitea's objects bucket."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import pulumi
import pulumi_aws as aws

from components import templates
from components.backup_job import REPO_HOST_TOOLS
from components.filesystem import ADMIN_ACTION, CLIENT_ACTIONS
from components.host import SSM_AGENT_STATEMENTS, encode_user_data
from components.host_files import HostFile, pack
from components.kms import rotating_key
from components.network import service_assume_role_policy
from policy.forgestack_rules import BACKUP_ERASURE_ACTIONS

OPS_USER: Final = "ec2-user"  # Amazon Linux's login user
MOUNT_POINT: Final = "/mnt/forge-files"  # the file system's root; Gitea's /data is MOUNT_POINT + filesystem.ROOT_DIRECTORY
VENV: Final = "/opt/forgestack/venv"
TOOLS_DIR: Final = "/opt/forgestack/host_tools"
TOOLS: Final = ("backup.py", "restore.py", "move_objects.py")  # restore.py imports backup.py as its library
REQUIREMENTS_PATH: Final = "/opt/forgestack/requirements.txt"
REQUIREMENTS_FILE: Final = "ops-requirements.txt"
# Amazon Linux 2023 packages (the release's versions: the repository is locked to the image). python3-botocore: the mount
# helper's IAM and mount-target lookups need it and do not declare it.
PACKAGES: Final = ("amazon-efs-utils", "python3-botocore", "python3.11", "python3.11-pip", "docker", "zstd", "tar")
ROOT_VOLUME_GB: Final = 30  # the OS, Docker's PostgreSQL image, and a downloaded backup in /var/tmp during a restore
# IMDSv2, one hop: the tools on the host reach the role; containers (the PostgreSQL tools) do not.
METADATA_HOP_LIMIT: Final = 1


def ami_parameter(architecture: Literal["x86_64", "arm64"]) -> str:
    """AWS's public SSM parameter naming the newest Amazon Linux 2023 image for the architecture."""
    return f"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{architecture}"


@dataclass(frozen=True)
class OpsHostArgs:
    stack: str
    instance_type: str
    architecture: Literal["x86_64", "arm64"]
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    file_system_id: pulumi.Input[str]
    file_system_arn: pulumi.Input[str]
    backup_bucket_arn: pulumi.Input[str]
    backup_key_arn: pulumi.Input[str]
    credentials_secret_arn: pulumi.Input[str]
    credentials_key_arn: pulumi.Input[str]
    objects_policy: pulumi.Input[str]  # ObjectStorage.access_policy: what Gitea's tasks may do with their objects
    postgres_image: str
    ssh_public_key: str = ""
    protect: bool = False
    mount_targets: Sequence[pulumi.Resource] = ()  # the mount at first boot needs them


def tools_bundle() -> tuple[str, str]:
    """(base64 of a tar.gz of the ops tools, its sha256): the same bytes for the same files (host_files.pack)."""
    files = tuple(HostFile(f"/{name}", (REPO_HOST_TOOLS / name).read_text(), 0o755) for name in TOOLS)  # relative to TOOLS_DIR
    packed = pack(files)
    return base64.b64encode(packed).decode(), hashlib.sha256(packed).hexdigest()


def tools_script(tools_dir: str = TOOLS_DIR) -> list[str]:
    """Shell lines that install the tools into tools_dir: unpacked into a fresh directory, checked against the bundle's
    sha256, then swapped in, so a failed run leaves the previous tools in place."""
    bundle, digest = tools_bundle()
    staging = f"{tools_dir}.new"
    return [
        "set -eu",
        f"rm -rf {staging} && mkdir -p {staging}",
        f"printf '%s' '{bundle}' | base64 -d > {staging}.tar.gz",
        f"echo '{digest}  {staging}.tar.gz' | sha256sum -c --quiet",
        f"tar -xzf {staging}.tar.gz -C {staging} --no-same-owner && rm {staging}.tar.gz",
        f"rm -rf {tools_dir}.old && if [ -d {tools_dir} ]; then mv {tools_dir} {tools_dir}.old; fi",
        f"mv {staging} {tools_dir} && rm -rf {tools_dir}.old",
        f"echo 'forgestack ops tools installed ({digest[:12]})'",
    ]


def tools_document() -> str:
    """The SSM Command document the ops host runs (through an association) to install the tools."""
    return json.dumps(
        {
            "schemaVersion": "2.2",
            "description": "Install forgestack's admin tools (restore, backup, move_objects) on the ops host",
            "mainSteps": [{"action": "aws:runShellScript", "name": "installTools", "inputs": {"runCommand": tools_script()}}],
        }
    )


def render_user_data(file_system_id: str, postgres_image: str, ssh_public_key: str = "") -> str:
    """cloud-init user data: packages, the EFS root mounted, the tools' virtualenv, the PostgreSQL image; no secret."""
    return templates.render(
        "ops-cloud-init.yaml.j2",
        packages=PACKAGES,
        ssh_public_key=ssh_public_key,
        requirements_path=REQUIREMENTS_PATH,
        requirements=templates.read(REQUIREMENTS_FILE),
        file_system_id=file_system_id,
        mount_point=MOUNT_POINT,
        host_user=OPS_USER,
        venv=VENV,
        postgres_image=postgres_image,
    )


def ops_policy(
    backup_bucket_arn: str, backup_key_arn: str, credentials_secret_arn: str, credentials_key_arn: str, file_system_arn: str
) -> str:
    """Least privilege for the admin tools: the SSM agent's needs, read the backups (never write or erase them), read the
    credentials, and the file system's root (also granted by the file system's own policy). Gitea's objects bucket is a
    policy of its own (the tasks' statements), so no statement here can touch the backups with an object-store right."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                *SSM_AGENT_STATEMENTS,
                {"Sid": "ListBackups", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": backup_bucket_arn},
                {"Sid": "ReadBackups", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{backup_bucket_arn}/*"},
                {"Sid": "DecryptBackups", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": backup_key_arn},
                {
                    "Sid": "NeverWriteOrEraseBackups",
                    "Effect": "Deny",
                    "Action": ["s3:PutObject", *BACKUP_ERASURE_ACTIONS],
                    "Resource": [backup_bucket_arn, f"{backup_bucket_arn}/*"],
                },
                {
                    "Sid": "ReadCredentials",
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": credentials_secret_arn,
                },
                {"Sid": "DecryptCredentials", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": credentials_key_arn},
                {
                    "Sid": "MountTheFileSystemRoot",
                    "Effect": "Allow",
                    "Action": [*CLIENT_ACTIONS, ADMIN_ACTION, "elasticfilesystem:DescribeMountTargets"],
                    "Resource": file_system_arn,
                },
            ],
        }
    )


class OpsHost(pulumi.ComponentResource):
    instance: aws.ec2.Instance
    role: aws.iam.Role

    def __init__(self, name: str, args: OpsHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:OpsHost", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        image = aws.ssm.get_parameter_output(name=ami_parameter(args.architecture), opts=pulumi.InvokeOutputOptions(parent=self))

        self.role = aws.iam.Role(f"{name}-role", assume_role_policy=service_assume_role_policy("ec2.amazonaws.com"), opts=child)
        aws.iam.RolePolicy(
            f"{name}-policy",
            role=self.role.id,
            policy=pulumi.Output.all(
                args.backup_bucket_arn, args.backup_key_arn, args.credentials_secret_arn, args.credentials_key_arn, args.file_system_arn
            ).apply(lambda values: ops_policy(*values)),
            opts=child,
        )
        # Gitea's objects as the tasks may use them: move_objects.py uploads and verifies there.
        aws.iam.RolePolicy(f"{name}-objects-policy", role=self.role.id, policy=args.objects_policy, opts=child)
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=self.role.name, opts=child)
        self.volume_key = rotating_key(f"{name}-volume-key", f"forgestack {args.stack} ops host volume", self, args.protect)

        self.instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=image.value,
            instance_type=args.instance_type,
            subnet_id=args.subnet_id,
            vpc_security_group_ids=[args.security_group_id],
            associate_public_ip_address=False,
            iam_instance_profile=profile.name,
            monitoring=True,
            ebs_optimized=True,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=METADATA_HOP_LIMIT
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_type="gp3", volume_size=ROOT_VOLUME_GB, encrypted=True, delete_on_termination=True, kms_key_id=self.volume_key.arn
            ),
            user_data_base64=pulumi.Output.from_input(args.file_system_id).apply(
                lambda file_system_id: encode_user_data(render_user_data(file_system_id, args.postgres_image, args.ssh_public_key))
            ),
            # A changed user data replaces the host: it keeps nothing of its own (the data is in RDS, EFS and S3).
            user_data_replace_on_change=True,
            tags={"Name": f"forgestack-{args.stack}-ops"},
            # A newer Amazon Linux image must not replace the host by itself.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["ami"], depends_on=list(args.mount_targets)),
        )
        # The tools arrive through SSM: the association runs the document on the instance once its agent is online, and
        # again whenever the document changes (a new version of the tools).
        self.tools = aws.ssm.Document(
            f"{name}-tools", document_type="Command", document_format="JSON", content=tools_document(), opts=child
        )
        aws.ssm.Association(
            f"{name}-tools-install",
            name=self.tools.name,
            document_version=self.tools.latest_version,
            targets=[aws.ssm.AssociationTargetArgs(key="InstanceIds", values=[self.instance.id])],
            opts=child,
        )
        self.register_outputs({"instanceId": self.instance.id, "roleArn": self.role.arn, "toolsDocument": self.tools.name})
