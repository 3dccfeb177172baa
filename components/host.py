"""Host: the EC2 instance that runs the containers, its data volume, Elastic IP and IAM role."""

from __future__ import annotations

import base64
import gzip
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import pulumi
import pulumi_aws as aws

from components import templates
from components.alarms import HEARTBEAT_NAMESPACE
from components.backup_job import backup_writer_statements
from components.constants import (
    CANONICAL_OWNER_ID,
    DATA_DEVICE_NAME,
    DATA_MOUNT,
    FORGE_HOST_TAG,
    HOST_USER,
    SNAPSHOT_TAG_KEY,
    UBUNTU_RELEASE,
)
from components.host_tools.backup import DEFAULT_PREFIX as BACKUP_PREFIX
from components.kms import rotating_key
from components.network import service_assume_role_policy

# Docker Engine from Docker's apt repository, where old versions stay available (Ubuntu's own
# archive keeps only the newest, so a pin there breaks). One version string for all three packages.
DOCKER_ENGINE_VERSION: Final = "5:29.7.2-1~ubuntu.24.04~noble"
CONTAINERD_VERSION: Final = "2.3.4-1~ubuntu.24.04~noble"
DOCKER_PACKAGES: Final = (
    ("docker-ce", DOCKER_ENGINE_VERSION), ("docker-ce-cli", DOCKER_ENGINE_VERSION), ("containerd.io", CONTAINERD_VERSION),
)
# What the backup job needs beyond the image: boto3 for S3 and zstd for the archives. Ubuntu's own packages
# are not pinned to a version: the image already carries newer builds from noble-updates than the release
# pocket's, apt refuses the downgrade, and cloud-init then installs nothing at all (Docker included). The
# release (noble, from the AMI filter) is their pin; security updates arrive through unattended-upgrades.
BACKUP_TOOL_PACKAGES: Final = ("python3-boto3", "zstd")
DOCKER_APT_KEY_FINGERPRINT: Final = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
# Containers log through json-file with rotation, so a chatty container cannot fill the disk.
DOCKER_DAEMON_CONFIG: Final = {
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "5"},
    "live-restore": True,  # containers keep running while dockerd restarts (package upgrades)
}
# IMDSv2 only, one hop: the host's processes (backup timer) reach the instance role; containers on
# Docker's bridge network (one hop further) do not.
METADATA_HOP_LIMIT: Final = 1


def ssm_session_command(region: str, instance_id: str, *options: str) -> str:
    """The AWS CLI line that opens an SSM session on an instance (options: a document and its parameters)."""
    return shlex.join(["aws", "ssm", "start-session", "--region", region, "--target", instance_id, *options])


@dataclass(frozen=True)
class HostArgs:
    instance_type: str
    architecture: Literal["x86_64", "arm64"]
    root_volume_gb: int
    data_volume_gb: int
    subnet_id: pulumi.Input[str]
    availability_zone: pulumi.Input[str]
    security_group_ids: Sequence[pulumi.Input[str]]
    backup_bucket_arn: pulumi.Input[str]
    backup_key_arn: pulumi.Input[str]
    snapshot_tag: str  # value of SNAPSHOT_TAG_KEY: Data Lifecycle Manager snapshots the volume carrying it
    ssh_public_key: str = ""
    protect: bool = False
    # The stack's own KMS key for both volumes (CKV_AWS_189); False keeps EBS's default aws/ebs key.
    customer_managed_key: bool = True
    data_volume_snapshot_id: str = ""  # create the data volume from this snapshot (restore, zone move, key move)
    # ACME DNS-01 (an allow-listed web): the hosted zone and the names certbot may put _acme-challenge TXT records for.
    acme_dns_zone_id: pulumi.Input[str] | None = None
    acme_dns_names: tuple[str, ...] = ()


def ami_name_pattern(architecture: Literal["x86_64", "arm64"]) -> str:
    deb_architecture = "amd64" if architecture == "x86_64" else "arm64"
    return f"ubuntu/images/hvm-ssd-gp3/ubuntu-{UBUNTU_RELEASE}-24.04-{deb_architecture}-server-*"


def ubuntu_ami(architecture: Literal["x86_64", "arm64"], parent: pulumi.Resource) -> pulumi.Output[aws.ec2.GetAmiResult]:
    """The newest Ubuntu 24.04 image of Canonical's for the architecture."""
    return aws.ec2.get_ami_output(
        most_recent=True, owners=[CANONICAL_OWNER_ID],
        filters=[
            aws.ec2.GetAmiFilterArgs(name="name", values=[ami_name_pattern(architecture)]),
            aws.ec2.GetAmiFilterArgs(name="architecture", values=[architecture]),
            aws.ec2.GetAmiFilterArgs(name="virtualization-type", values=["hvm"]),
        ],
        opts=pulumi.InvokeOutputOptions(parent=parent),
    )


def render_user_data(data_volume_id: str, architecture: Literal["x86_64", "arm64"], ssh_public_key: str = "") -> str:
    """cloud-init user data: Docker Engine and the data volume mounted at DATA_MOUNT; nothing else, and no secret.
    cloud-init applies it once, at the instance's first boot: what may change later ships with
    components/host_files.py over the deploy's command path."""
    packages: list[tuple[str, str]] = list(DOCKER_PACKAGES)  # (name, version); version "" installs the release's
    packages += [(package, "") for package in BACKUP_TOOL_PACKAGES]
    return templates.render(
        "cloud-init.yaml.j2",
        deb_architecture="amd64" if architecture == "x86_64" else "arm64",
        docker_apt_key_fingerprint=DOCKER_APT_KEY_FINGERPRINT,
        packages=packages,
        ssh_public_key=ssh_public_key,
        docker_daemon_json=json.dumps(DOCKER_DAEMON_CONFIG, indent=2),
        mount_script=templates.read("mount-data-volume.sh"),
        data_volume_id=data_volume_id,
        data_mount=DATA_MOUNT,
        host_user=HOST_USER,
    )


def encode_user_data(text: str) -> str:
    """gzip + base64: the backup scripts make the plain text larger than EC2's 16 KiB limit; cloud-init
    unpacks gzip itself. mtime=0 keeps the bytes stable, so an unchanged text never shows as a diff."""
    return base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()


def decode_user_data(encoded: str) -> str:
    return gzip.decompress(base64.b64decode(encoded)).decode()


# What the SSM agent needs for Session Manager (and Run Command), instead of AmazonSSMManagedInstanceCore,
# whose ssm:GetParameter(s) on "*" would let the host read every Parameter Store value in the account.
# These actions take no resource (ssmmessages, ec2messages) or only an instance ARN (UpdateInstanceInformation).
SSM_AGENT_STATEMENTS: Final = (
    {"Sid": "SsmAgentRegistration", "Effect": "Allow", "Action": "ssm:UpdateInstanceInformation",
     "Resource": "arn:aws:ec2:*:*:instance/*"},
    {"Sid": "SessionManagerChannels", "Effect": "Allow", "Resource": "*",
     "Action": ["ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel",
                "ssmmessages:OpenDataChannel"]},
    {"Sid": "RunCommandMessages", "Effect": "Allow", "Resource": "*",
     "Action": ["ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage", "ec2messages:FailMessage",
                "ec2messages:GetEndpoint", "ec2messages:GetMessages", "ec2messages:SendReply"]},
)


def ssm_association_statements(document_arn: str) -> list[dict[str, Any]]:
    """What the SSM agent needs besides SSM_AGENT_STATEMENTS to run a State Manager association of one document (the
    association actions of AmazonSSMManagedInstanceCore): find its associations, read that document, report status."""
    region, account = document_arn.split(":")[3:5]
    return [
        # These take the instance (and the association or document) as their resource: no "*".
        {"Sid": "StateManagerAssociations", "Effect": "Allow",
         "Action": ["ssm:ListInstanceAssociations", "ssm:DescribeAssociation", "ssm:UpdateInstanceAssociationStatus",
                    "ssm:PutComplianceItems"],
         "Resource": [f"arn:aws:ec2:{region}:{account}:instance/*", f"arn:aws:ssm:{region}:{account}:association/*",
                      document_arn]},
        {"Sid": "ReadTheToolsDocument", "Effect": "Allow", "Action": ["ssm:GetDocument", "ssm:DescribeDocument"],
         "Resource": document_arn},
    ]


def acme_dns_statements(zone_id: str, names: Sequence[str]) -> list[dict[str, Any]]:
    """What certbot's Route 53 plugin needs for DNS-01, and no more: TXT records named _acme-challenge.<name> for the
    stack's own names in one zone (IAM's record-set condition keys), the change's status, and the zone lookup."""
    return [
        {"Sid": "AcmeChallengeRecords", "Effect": "Allow", "Action": "route53:ChangeResourceRecordSets",
         "Resource": f"arn:aws:route53:::hostedzone/{zone_id}",
         "Condition": {"ForAllValues:StringEquals": {
             "route53:ChangeResourceRecordSetsRecordTypes": ["TXT"],
             "route53:ChangeResourceRecordSetsNormalizedRecordNames": sorted(f"_acme-challenge.{n.lower()}" for n in names)}}},
        {"Sid": "AcmeChallengeStatus", "Effect": "Allow", "Action": "route53:GetChange", "Resource": "arn:aws:route53:::change/*"},
        # ListHostedZones takes no resource: the plugin finds the zone of each name with it.
        {"Sid": "AcmeZoneLookup", "Effect": "Allow", "Action": "route53:ListHostedZones", "Resource": "*"},
    ]


def host_policy(bucket_arn: str, backup_key_arn: str, acme_zone_id: str | None = None, acme_names: Sequence[str] = ()) -> str:
    """Least privilege: the SSM agent's own needs, this bucket and its key; no wildcard action, no delete; with DNS-01,
    the challenge records. No secret: nothing on the host reads the credentials (Pulumi hands each container its files;
    the backup job dumps through `docker exec` inside the PostgreSQL container)."""
    acme = acme_dns_statements(acme_zone_id, acme_names) if acme_zone_id else []
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            *SSM_AGENT_STATEMENTS,
            # Restore reads any backup; the backup job writes new objects (new versions) under its prefix only.
            *backup_writer_statements(bucket_arn, backup_key_arn, BACKUP_PREFIX),
            # The heartbeat (components/alarms.py). PutMetricData takes no resource; the condition keeps it to one namespace.
            {"Sid": "Heartbeat", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
             "Condition": {"StringEquals": {"cloudwatch:namespace": HEARTBEAT_NAMESPACE}}},
            *acme,
        ],
    })


class Host(pulumi.ComponentResource):
    """An Ubuntu 24.04 EC2 instance with Docker, a separate encrypted data volume and an Elastic IP."""

    instance: aws.ec2.Instance
    data_volume: aws.ebs.Volume
    elastic_ip: aws.ec2.Eip
    role: aws.iam.Role
    volume_key: aws.kms.Key | None

    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:Host", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        ami = ubuntu_ami(args.architecture, self)

        self.role = aws.iam.Role(
            f"{name}-role", assume_role_policy=service_assume_role_policy("ec2.amazonaws.com"), opts=child
        )
        self.policy = aws.iam.RolePolicy(
            f"{name}-policy", role=self.role.id,
            policy=pulumi.Output.all(args.backup_bucket_arn, args.backup_key_arn, args.acme_dns_zone_id).apply(
                lambda values: host_policy(values[0], values[1], values[2], args.acme_dns_names)),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=self.role.name, opts=child)

        # EC2 uses the key through grants it creates for the volumes; whoever launches them needs IAM rights on it.
        self.volume_key = (rotating_key(f"{name}-volume-key", "forgestack host volumes and their snapshots", self, args.protect)
                           if args.customer_managed_key else None)
        volume_key_arn = self.volume_key.arn if self.volume_key else None

        # The data volume outlives instance replacement; in prod it is protected from deletion. From a snapshot, EBS
        # re-encrypts the copy with the key given here, so a snapshot on aws/ebs becomes a volume on the stack's key.
        self.data_volume = aws.ebs.Volume(
            f"{name}-data", availability_zone=args.availability_zone, size=args.data_volume_gb, type="gp3",
            encrypted=True, kms_key_id=volume_key_arn, snapshot_id=args.data_volume_snapshot_id or None,
            tags={"Name": f"{name}-data", "forgestack:role": "data", SNAPSHOT_TAG_KEY: args.snapshot_tag},
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )

        self.instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=ami.id,
            instance_type=args.instance_type,
            subnet_id=args.subnet_id,
            vpc_security_group_ids=args.security_group_ids,
            iam_instance_profile=profile.name,
            monitoring=True,  # detailed (1-minute) CloudWatch metrics
            ebs_optimized=True,
            disable_api_termination=args.protect,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=METADATA_HOP_LIMIT,
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_type="gp3", volume_size=args.root_volume_gb, encrypted=True, delete_on_termination=True,
                kms_key_id=volume_key_arn,
            ),
            user_data_base64=self.data_volume.id.apply(
                lambda volume_id: encode_user_data(render_user_data(volume_id, args.architecture, args.ssh_public_key))
            ),
            tags={"Name": f"{name}-instance", FORGE_HOST_TAG[0]: FORGE_HOST_TAG[1]},
            # A newer Ubuntu image must not replace the host; upgrades happen in place. A changed user data would
            # only stop and start the host (cloud-init does not run it again): host files ship over the command path.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["ami", "userData", "userDataBase64"]),
        )
        # Delete before replace: a volume attaches to one instance at a time, so a new host or a new data volume
        # needs the old attachment gone first (the default create-first order fails with VolumeInUse).
        aws.ec2.VolumeAttachment(
            f"{name}-data-attachment", device_name=DATA_DEVICE_NAME, volume_id=self.data_volume.id,
            instance_id=self.instance.id, stop_instance_before_detaching=True,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.elastic_ip = aws.ec2.Eip(f"{name}-eip", domain="vpc", instance=self.instance.id, opts=child)

        self.register_outputs({
            "instanceId": self.instance.id,
            "publicIp": self.elastic_ip.public_ip,
            "dataVolumeId": self.data_volume.id,
            "roleArn": self.role.arn,
        })
