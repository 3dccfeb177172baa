"""FileSystem (topology ha): Amazon EFS for Gitea's /data (repositories, SSH host keys), shared by every task.

Encrypted with the stack's key, a mount target in every zone, AWS Backup on, TLS and IAM required of every client,
and one access point that pins Gitea's uid so every task writes as the same user."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from components.kms import rotating_key

NFS_PORT: Final = 2049
ROOT_DIRECTORY: Final = "/gitea"
DIRECTORY_MODE: Final = "0750"
INFREQUENT_ACCESS_AFTER: Final = "AFTER_30_DAYS"
CLIENT_ACTIONS: Final = ("elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite")  # mount, read and write
ADMIN_ACTION: Final = "elasticfilesystem:ClientRootAccess"  # root stays root (chown on restore), not squashed to nobody


@dataclass(frozen=True)
class FileSystemArgs:
    stack: str
    owner_uid: int
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    protect: bool = False


def file_system_policy(file_system_arn: str, access_point_arn: str, client_role_arn: str, admin_role_arn: str) -> str:
    """The tasks' role may mount only through the access point; the ops host's role may mount the root, as root (a restore
    writes the access point's directory and keeps owners); both only over TLS."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyWithoutTls",
                    "Effect": "Deny",
                    "Principal": {"AWS": "*"},
                    "Action": "*",
                    "Resource": file_system_arn,
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
                {
                    "Sid": "TasksMountThroughTheAccessPoint",
                    "Effect": "Allow",
                    "Principal": {"AWS": client_role_arn},
                    "Action": list(CLIENT_ACTIONS),
                    "Resource": file_system_arn,
                    "Condition": {"StringEquals": {"elasticfilesystem:AccessPointArn": access_point_arn}},
                },
                {
                    "Sid": "OpsHostMountsTheRootAsRoot",
                    "Effect": "Allow",
                    "Principal": {"AWS": admin_role_arn},
                    "Action": [*CLIENT_ACTIONS, ADMIN_ACTION],
                    "Resource": file_system_arn,
                },
            ],
        }
    )


class FileSystem(pulumi.ComponentResource):
    file_system: aws.efs.FileSystem
    access_point: aws.efs.AccessPoint

    def __init__(self, name: str, args: FileSystemArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:FileSystem", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.key = rotating_key(f"{name}-key", f"forgestack {args.stack} repositories (EFS)", self, args.protect)
        self.file_system = aws.efs.FileSystem(
            f"{name}-efs",
            encrypted=True,
            kms_key_id=self.key.arn,
            performance_mode="generalPurpose",
            throughput_mode="elastic",
            lifecycle_policies=[aws.efs.FileSystemLifecyclePolicyArgs(transition_to_ia=INFREQUENT_ACCESS_AFTER)],
            tags={"Name": f"forgestack-{args.stack}-gitea"},
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        aws.efs.BackupPolicy(
            f"{name}-backup",
            file_system_id=self.file_system.id,
            backup_policy=aws.efs.BackupPolicyBackupPolicyArgs(status="ENABLED"),
            opts=child,
        )
        self.access_point = aws.efs.AccessPoint(
            f"{name}-gitea",
            file_system_id=self.file_system.id,
            posix_user=aws.efs.AccessPointPosixUserArgs(uid=args.owner_uid, gid=args.owner_uid),
            root_directory=aws.efs.AccessPointRootDirectoryArgs(
                path=ROOT_DIRECTORY,
                creation_info=aws.efs.AccessPointRootDirectoryCreationInfoArgs(
                    owner_uid=args.owner_uid, owner_gid=args.owner_uid, permissions=DIRECTORY_MODE
                ),
            ),
            opts=child,
        )
        self.mount_targets = [
            aws.efs.MountTarget(
                f"{name}-mount-{index}",
                file_system_id=self.file_system.id,
                subnet_id=subnet_id,
                security_groups=[args.security_group_id],
                opts=child,
            )
            for index, subnet_id in enumerate(args.subnet_ids)
        ]
        self.register_outputs({"fileSystemId": self.file_system.id, "accessPointId": self.access_point.id})

    def allow_clients(
        self, name: str, client_role_arn: pulumi.Input[str], admin_role_arn: pulumi.Input[str]
    ) -> aws.efs.FileSystemPolicy:
        """The file system's policy, once the roles of its clients (the tasks) and its admin (the ops host) exist."""
        return aws.efs.FileSystemPolicy(
            f"{name}-policy",
            file_system_id=self.file_system.id,
            policy=pulumi.Output.all(self.file_system.arn, self.access_point.arn, client_role_arn, admin_role_arn).apply(
                lambda values: file_system_policy(*values)
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
