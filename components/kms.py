"""Customer-managed KMS keys, one shape for every key forgestack creates."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws


def key_policy(account_id: str) -> str:
    """The account root administers the key; IAM policies (scoped to this key's ARN) grant its use."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AccountAdministersKeyThroughIam",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }],
    })


def rotating_key(resource_name: str, description: str, parent: pulumi.Resource, protect: bool) -> aws.kms.Key:
    """A symmetric key with yearly rotation and a 30-day deletion window."""
    caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=parent))
    return aws.kms.Key(
        resource_name, description=description, enable_key_rotation=True, deletion_window_in_days=30,
        policy=caller.account_id.apply(key_policy), opts=pulumi.ResourceOptions(parent=parent, protect=protect),
    )
