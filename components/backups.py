"""Backups: the S3 bucket that holds database dumps and data archives."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from components.kms import rotating_key

NONCURRENT_VERSION_DAYS: Final = 7  # an overwritten or deleted backup object can be recovered for a week
ABORT_MULTIPART_DAYS: Final = 1
ARCHIVE_STORAGE_CLASS: Final = "GLACIER_IR"  # instant retrieval: the restore script reads it directly


@dataclass(frozen=True)
class BackupsArgs:
    retention_days: int
    archive_after_days: int = 0  # 0: no transition
    protect: bool = False


def tls_only_policy(bucket_arn: str) -> str:
    """Deny every request that does not use TLS (AWS FSBP S3.5)."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }],
    })


def lifecycle_rules(args: BackupsArgs) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    """Retention is enforced here, never by the backup script deleting objects."""
    transitions = (
        [aws.s3.BucketLifecycleConfigurationRuleTransitionArgs(days=args.archive_after_days, storage_class=ARCHIVE_STORAGE_CLASS)]
        if args.archive_after_days else []
    )
    return [
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="expire-backups", status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
            expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=args.retention_days),
            noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                noncurrent_days=NONCURRENT_VERSION_DAYS
            ),
            transitions=transitions,
        ),
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="abort-incomplete-uploads", status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
            abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                days_after_initiation=ABORT_MULTIPART_DAYS
            ),
        ),
    ]


class Backups(pulumi.ComponentResource):
    """A private, versioned, KMS-encrypted, TLS-only bucket with lifecycle retention."""

    bucket: aws.s3.Bucket
    key: aws.kms.Key

    def __init__(self, name: str, args: BackupsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:Backups", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)

        self.key = rotating_key(f"{name}-key", "forgestack backups bucket", self, args.protect)
        # Unprotected (dev) buckets are emptied on destroy; a protected one cannot be destroyed at all.
        self.bucket = aws.s3.Bucket(f"{name}-bucket", force_destroy=not args.protect, opts=stateful)
        bucket_id = self.bucket.id

        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access", bucket=bucket_id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=bucket_id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"), opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket_id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=bucket_id,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="aws:kms", kms_master_key_id=self.key.arn,
                ),
                bucket_key_enabled=True,  # one KMS call per object instead of per request: cheaper
            )],
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-tls-only", bucket=bucket_id, policy=self.bucket.arn.apply(tls_only_policy),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle", bucket=bucket_id, rules=lifecycle_rules(args),
            # Noncurrent-version rules need versioning switched on first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )

        self.register_outputs({"bucketName": self.bucket.bucket, "bucketArn": self.bucket.arn, "keyArn": self.key.arn})
