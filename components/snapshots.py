"""Snapshots: daily EBS snapshots of the data volume through Data Lifecycle Manager, kept for N days.

They complement the S3 backups: a snapshot restores the whole volume in minutes (a new volume from
the snapshot), the S3 backups survive the loss of the account's EBS and restore single parts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from components.constants import SNAPSHOT_TAG_KEY
from components.network import service_assume_role_policy

DLM_SERVICE_POLICY_ARN: Final = "arn:aws:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole"
SNAPSHOT_TIME_UTC: Final = "02:30"  # before the daily S3 backup at 03:17, outside working hours in Europe


@dataclass(frozen=True)
class SnapshotsArgs:
    snapshot_tag: str  # the data volume carries SNAPSHOT_TAG_KEY=<this>
    retention_days: int
    volume_key_arn: pulumi.Input[str] | None = None  # the volume's customer-managed key, if it has one
    copy_region: str = ""  # a second region that receives a copy of every snapshot ("" for none)
    copy_key_arn: pulumi.Input[str] | None = None  # the key the copies are encrypted with there


def volume_key_policy(*key_arns: str) -> str:
    """Data Lifecycle Manager snapshots a volume on a customer-managed key, and copies snapshots encrypted with one, only
    if its role may use the keys; grants only for AWS resources (EBS), never for a person."""
    keys = list(key_arns)
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "UseTheVolumeKeys", "Effect": "Allow", "Resource": keys,
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]},
        {"Sid": "GrantThemToEbsOnly", "Effect": "Allow", "Action": "kms:CreateGrant", "Resource": keys,
         "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}}},
    ]})


class Snapshots(pulumi.ComponentResource):
    policy: aws.dlm.LifecyclePolicy

    def __init__(self, name: str, args: SnapshotsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:Snapshots", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        role = aws.iam.Role(f"{name}-role", assume_role_policy=service_assume_role_policy("dlm.amazonaws.com"), opts=child)
        attachment = aws.iam.RolePolicyAttachment(f"{name}-service", role=role.name, policy_arn=DLM_SERVICE_POLICY_ARN, opts=child)
        ready: list[pulumi.Resource] = [attachment]
        keys = [key for key in (args.volume_key_arn, args.copy_key_arn) if key is not None]
        if keys:
            ready.append(aws.iam.RolePolicy(f"{name}-volume-key", role=role.id,
                                            policy=pulumi.Output.all(*keys).apply(lambda arns: volume_key_policy(*arns)), opts=child))
        # Each snapshot copied to the second region too, kept as long, on that region's key: a region-wide loss keeps them.
        copies = [aws.dlm.LifecyclePolicyPolicyDetailsScheduleCrossRegionCopyRuleArgs(
            target=args.copy_region, encrypted=True, cmk_arn=args.copy_key_arn, copy_tags=True,
            retain_rule=aws.dlm.LifecyclePolicyPolicyDetailsScheduleCrossRegionCopyRuleRetainRuleArgs(
                interval=args.retention_days, interval_unit="DAYS"),
        )] if args.copy_region else []
        self.policy = aws.dlm.LifecyclePolicy(
            f"{name}-policy",
            description=f"Daily snapshots of the volume tagged {SNAPSHOT_TAG_KEY}={args.snapshot_tag}",
            execution_role_arn=role.arn,
            state="ENABLED",
            policy_details=aws.dlm.LifecyclePolicyPolicyDetailsArgs(
                policy_type="EBS_SNAPSHOT_MANAGEMENT",
                resource_types=["VOLUME"],
                target_tags={SNAPSHOT_TAG_KEY: args.snapshot_tag},
                schedules=[aws.dlm.LifecyclePolicyPolicyDetailsScheduleArgs(
                    name=f"daily, kept {args.retention_days} days",
                    create_rule=aws.dlm.LifecyclePolicyPolicyDetailsScheduleCreateRuleArgs(
                        interval=24, interval_unit="HOURS", times=SNAPSHOT_TIME_UTC,
                    ),
                    retain_rule=aws.dlm.LifecyclePolicyPolicyDetailsScheduleRetainRuleArgs(
                        interval=args.retention_days, interval_unit="DAYS",
                    ),
                    copy_tags=True,
                    tags_to_add={"forgestack:snapshot": "dlm"},
                    cross_region_copy_rules=copies,
                )],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=ready),
        )
        self.register_outputs({"policyArn": self.policy.arn})
