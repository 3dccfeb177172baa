"""Customer-managed KMS keys, one shape for every key forgestack creates."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from components.constants import TOPIC_PUBLISHERS


def key_policy(account_id: str, logs_region: str | None = None, alarms: bool = False) -> str:
    """The account root administers the key; IAM policies (scoped to this key's ARN) grant its use.
    With logs_region, CloudWatch Logs of that region may use it for this account's log groups (a service
    principal cannot be granted through IAM: the key policy must name it)."""
    statements: list[dict[str, object]] = [{
        "Sid": "AccountAdministersKeyThroughIam",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
        "Action": "kms:*",
        "Resource": "*",
    }]
    if logs_region:
        statements.append({
            "Sid": "CloudWatchLogsEncryptsThisAccountsGroups",
            "Effect": "Allow",
            "Principal": {"Service": f"logs.{logs_region}.amazonaws.com"},
            "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            "Resource": "*",
            "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:{logs_region}:{account_id}:log-group:*"}},
        })
    if alarms:
        # CloudWatch (alarms) and AWS Budgets publish to an encrypted SNS topic only if they may use the topic's key.
        statements.append({
            "Sid": "AlarmsAndBudgetsPublishToTheEncryptedTopic",
            "Effect": "Allow",
            "Principal": {"Service": list(TOPIC_PUBLISHERS)},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        })
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def rotating_key(resource_name: str, description: str, parent: pulumi.Resource, protect: bool,
                 logs_region: str | None = None, alarms: bool = False, region: str | None = None) -> aws.kms.Key:
    """A symmetric key with yearly rotation and a 30-day deletion window."""
    caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=parent))
    return aws.kms.Key(
        resource_name, description=description, enable_key_rotation=True, deletion_window_in_days=30,
        policy=caller.account_id.apply(lambda account: key_policy(account, logs_region, alarms)),
        region=region,  # None: the provider's region
        opts=pulumi.ResourceOptions(parent=parent, protect=protect),
    )
