"""ObjectStorage (topology ha): the S3 bucket Gitea keeps LFS objects, attachments, avatars, packages and Actions
artifacts in, reached with the tasks' role (no static keys). Same controls as every forgestack bucket, and copied to
the stack's second region where it has one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from components.backups import (
    PURPOSE_TAG,
    Replication,
    abort_incomplete_uploads_rule,
    bucket_controls,
    kms_encryption,
    replicate,
    tls_only_policy,
)
from components.kms import rotating_key

OBJECTS_PURPOSE: Final = "gitea-objects"
NONCURRENT_DAYS: Final = 30  # an overwritten or deleted object can be brought back for a month


@dataclass(frozen=True)
class ObjectStorageArgs:
    stack: str
    protect: bool = False
    replica_region: str = ""  # a second region the objects are copied to (the stack's backupReplicaRegion); "" for none


def lifecycle_rules() -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    """Current objects stay as long as Gitea keeps them; replaced or deleted versions go after NONCURRENT_DAYS."""
    return [
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="expire-old-versions",
            status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
            noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                noncurrent_days=NONCURRENT_DAYS
            ),
        ),
        abort_incomplete_uploads_rule(),
    ]


def object_access_policy(bucket_arn: str, key_arn: str) -> str:
    """What Gitea's tasks may do with their objects: list, read, write, delete, in this bucket only, with its key."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "ListTheBucket", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": bucket_arn},
                {
                    "Sid": "ReadAndWriteObjects",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                    "Resource": f"{bucket_arn}/*",
                },
                {"Sid": "UseTheBucketKey", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": key_arn},
            ],
        }
    )


class ObjectStorage(pulumi.ComponentResource):
    bucket: aws.s3.Bucket
    key: aws.kms.Key

    def __init__(self, name: str, args: ObjectStorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:ObjectStorage", name, None, opts)
        self.key = rotating_key(f"{name}-key", f"forgestack {args.stack} Gitea objects", self, args.protect)
        self.bucket = aws.s3.Bucket(
            f"{name}-bucket",
            force_destroy=not args.protect,
            tags={PURPOSE_TAG: OBJECTS_PURPOSE},
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        controls = bucket_controls(
            self, name, self.bucket, kms_encryption(self.key), self.bucket.arn.apply(tls_only_policy), lifecycle_rules()
        )
        # Gitea's objects are not in the backups: where the stack keeps a second region, they are copied there, deletes
        # included (a delete marker; the versions before it stay NONCURRENT_DAYS on both sides).
        self.replica: aws.s3.Bucket | None = None
        if args.replica_region:
            self.replica, _ = replicate(
                self,
                name,
                Replication(
                    source=self.bucket,
                    source_key=self.key,
                    region=args.replica_region,
                    purpose=OBJECTS_PURPOSE,
                    lifecycle=lifecycle_rules(),
                    protect=args.protect,
                    rule_id="every-object",
                    replicate_deletes=True,
                ),
                controls,
            )
        self.access_policy: pulumi.Output[str] = pulumi.Output.all(self.bucket.arn, self.key.arn).apply(
            lambda arns: object_access_policy(*arns)
        )
        self.register_outputs({"bucketName": self.bucket.bucket, "replicaBucketName": self.replica.bucket if self.replica else None})

    def log_access_to(self, name: str, target_bucket: pulumi.Input[str], prefix: str, ready: list[pulumi.Resource]) -> None:
        """S3 server access logs of the bucket (CKV_AWS_18), into a log bucket whose policy lets S3 write under `prefix`."""
        aws.s3.BucketLogging(
            f"{name}-access-logging",
            bucket=self.bucket.id,
            target_bucket=target_bucket,
            target_prefix=prefix,
            opts=pulumi.ResourceOptions(parent=self, depends_on=ready),
        )
