"""A private Amazon Linux 2023 instance: the shape the ha topology's ops host and runner host share.

No public address (reached with SSM Session Manager), IMDSv2 with one hop (its containers never reach the role),
detailed monitoring, an encrypted gp3 root volume on a key of its own, and an instance role whose policies exist
before the instance boots (its first boot uses them: the EFS mount, the runner's token, the SSM agent). A newer
image never replaces it by itself; a changed user data does (it keeps nothing of its own)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pulumi
import pulumi_aws as aws

from components.host import METADATA_HOP_LIMIT
from components.kms import rotating_key
from components.network import service_assume_role_policy


def ami_parameter(architecture: Literal["x86_64", "arm64"]) -> str:
    """AWS's public SSM parameter naming the newest Amazon Linux 2023 image for the architecture."""
    return f"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{architecture}"


@dataclass(frozen=True)
class PrivateInstanceArgs:
    stack: str
    purpose: str  # "ops", "runner": the instance's Name tag and its key's description
    instance_type: str
    architecture: Literal["x86_64", "arm64"]
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    volume_gb: int
    user_data_base64: pulumi.Input[str]
    policies: Sequence[tuple[str, pulumi.Input[str]]]  # (name suffix, policy document) of the instance role
    protect: bool = False
    depends_on: Sequence[pulumi.Resource] = field(default_factory=tuple)  # what its first boot needs besides its role


def private_instance(parent: pulumi.Resource, name: str, args: PrivateInstanceArgs) -> tuple[aws.ec2.Instance, aws.iam.Role]:
    """The instance and its role, children of `parent`, named `<name>-instance`, `<name>-role`, `<name>-<suffix>`..."""
    child = pulumi.ResourceOptions(parent=parent)
    image = aws.ssm.get_parameter_output(name=ami_parameter(args.architecture), opts=pulumi.InvokeOutputOptions(parent=parent))
    role = aws.iam.Role(f"{name}-role", assume_role_policy=service_assume_role_policy("ec2.amazonaws.com"), opts=child)
    policies = [aws.iam.RolePolicy(f"{name}-{suffix}", role=role.id, policy=document, opts=child) for suffix, document in args.policies]
    profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, opts=child)
    volume_key = rotating_key(f"{name}-volume-key", f"forgestack {args.stack} {args.purpose} host volume", parent, args.protect)
    instance = aws.ec2.Instance(
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
            volume_type="gp3", volume_size=args.volume_gb, encrypted=True, delete_on_termination=True, kms_key_id=volume_key.arn
        ),
        user_data_base64=args.user_data_base64,
        user_data_replace_on_change=True,
        tags={"Name": f"forgestack-{args.stack}-{args.purpose}"},
        opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["ami"], depends_on=[*policies, *args.depends_on]),
    )
    return instance, role
