"""Backups: the S3 bucket that holds database dumps and data archives, and the bucket of its access logs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final, Literal

import pulumi
import pulumi_aws as aws

from components.kms import rotating_key
from components.network import service_assume_role_policy

NONCURRENT_VERSION_DAYS: Final = 7  # an overwritten or deleted backup object can be recovered for a week
ABORT_MULTIPART_DAYS: Final = 1
ARCHIVE_STORAGE_CLASS: Final = "GLACIER_IR"  # instant retrieval: the restore script reads it directly
ACCESS_LOG_PREFIX: Final = "backups/"
LOG_DELIVERY_SERVICE: Final = "logging.s3.amazonaws.com"


PURPOSE_TAG: Final = "forgestack:purpose"  # the policy pack finds the backups bucket by it
BACKUPS_PURPOSE: Final = "backups"
LockMode = Literal["GOVERNANCE", "COMPLIANCE"]


@dataclass(frozen=True)
class BackupsArgs:
    retention_days: int
    archive_after_days: int = 0  # 0: no transition
    protect: bool = False
    # Object Lock: every backup object version is kept at least retention_days. GOVERNANCE: only a principal with
    # s3:BypassGovernanceRetention (never the host) can remove one early; COMPLIANCE: nobody, not even the root user.
    lock_mode: LockMode = "GOVERNANCE"
    replica_region: str = ""  # a second region: every backup replicated to a locked bucket there; "" for none


def object_lock_rule(args: BackupsArgs) -> aws.s3.BucketObjectLockConfigurationRuleArgs:
    return aws.s3.BucketObjectLockConfigurationRuleArgs(
        default_retention=aws.s3.BucketObjectLockConfigurationRuleDefaultRetentionArgs(mode=args.lock_mode, days=args.retention_days),
    )


def deny_insecure_transport(bucket_arn: str) -> dict[str, object]:
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        # {"AWS": "*"} is the same as "*" (everyone); the object form is what moto's log-delivery check can read.
        "Principal": {"AWS": "*"},
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def tls_only_policy(bucket_arn: str) -> str:
    """Deny every request that does not use TLS (AWS FSBP S3.5)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [deny_insecure_transport(bucket_arn)]})


def access_log_policy(log_bucket_arn: str, source_bucket_arn: str, account_id: str) -> str:
    """TLS only, and S3's log delivery may write under the prefix, only for the backups bucket of this account."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        deny_insecure_transport(log_bucket_arn),
        {
            "Sid": "S3ServerAccessLogsOfTheBackupsBucket",
            "Effect": "Allow",
            "Principal": {"Service": LOG_DELIVERY_SERVICE},
            "Action": "s3:PutObject",
            "Resource": f"{log_bucket_arn}/{ACCESS_LOG_PREFIX}*",
            "Condition": {"ArnLike": {"aws:SourceArn": source_bucket_arn}, "StringEquals": {"aws:SourceAccount": account_id}},
        },
    ]})


def expire_rule(rule_id: str, days: int, transitions: list[aws.s3.BucketLifecycleConfigurationRuleTransitionArgs] | None = None,
                 noncurrent_days: int = NONCURRENT_VERSION_DAYS) -> aws.s3.BucketLifecycleConfigurationRuleArgs:
    """Objects expire after `days` (a delete marker; the version itself stays); an overwritten or deleted version is
    removed `noncurrent_days` after it stopped being current."""
    return aws.s3.BucketLifecycleConfigurationRuleArgs(
        id=rule_id, status="Enabled",
        filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
        expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=days),
        noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
            noncurrent_days=noncurrent_days
        ),
        transitions=transitions or [],
    )


def abort_incomplete_uploads_rule() -> aws.s3.BucketLifecycleConfigurationRuleArgs:
    return aws.s3.BucketLifecycleConfigurationRuleArgs(
        id="abort-incomplete-uploads", status="Enabled",
        filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
        abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
            days_after_initiation=ABORT_MULTIPART_DAYS
        ),
    )


def access_log_lifecycle_rules(args: BackupsArgs) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    """Access logs are kept as long as the backups they describe."""
    return [expire_rule("expire-access-logs", args.retention_days), abort_incomplete_uploads_rule()]


def lifecycle_rules(args: BackupsArgs) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    """Retention is enforced here, never by the backup script deleting objects."""
    transitions = (
        [aws.s3.BucketLifecycleConfigurationRuleTransitionArgs(days=args.archive_after_days, storage_class=ARCHIVE_STORAGE_CLASS)]
        if args.archive_after_days else []
    )
    # A version that stops being current (the `latest` pointer, an overwritten object) is kept as long as the lock keeps
    # it: lifecycle never tries to remove what Object Lock still protects.
    noncurrent_days = max(NONCURRENT_VERSION_DAYS, args.retention_days)
    return [expire_rule("expire-backups", args.retention_days, transitions, noncurrent_days), abort_incomplete_uploads_rule()]


def replication_policy(source_arn: str, replica_arn: str, source_key_arn: str, replica_key_arn: str,
                       replicate_deletes: bool = False) -> str:
    """What S3 replication needs and nothing more: read versions (with their lock) from the source, write replicas
    (delete markers only where asked), decrypt with the source key through S3, encrypt with the replica key."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadTheSourceConfiguration", "Effect": "Allow", "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
         "Resource": source_arn},
        {"Sid": "ReadSourceVersions", "Effect": "Allow", "Resource": f"{source_arn}/*",
         "Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging",
                    "s3:GetObjectRetention", "s3:GetObjectLegalHold"]},
        {"Sid": "WriteReplicas", "Effect": "Allow",
         "Action": ["s3:ReplicateObject", "s3:ReplicateTags", *(["s3:ReplicateDelete"] if replicate_deletes else [])],
         "Resource": f"{replica_arn}/*"},
        {"Sid": "DecryptTheSource", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": source_key_arn,
         "Condition": {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}},
        {"Sid": "EncryptTheReplica", "Effect": "Allow", "Action": ["kms:Encrypt", "kms:GenerateDataKey"], "Resource": replica_key_arn,
         "Condition": {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}},
    ]})


def kms_encryption(key: aws.kms.Key) -> aws.s3.BucketServerSideEncryptionConfigurationRuleArgs:
    return aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
        apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
            sse_algorithm="aws:kms", kms_master_key_id=key.arn,
        ),
        bucket_key_enabled=True,  # one KMS call per object instead of per request: cheaper
    )


def bucket_controls(
    parent: pulumi.Resource, name: str, bucket: aws.s3.Bucket, encryption: aws.s3.BucketServerSideEncryptionConfigurationRuleArgs,
    policy: pulumi.Input[str], rules: list[aws.s3.BucketLifecycleConfigurationRuleArgs], region: str | None = None,
) -> list[pulumi.Resource]:
    """Every bucket's controls (children of `parent`): public access blocked, owner-enforced, versioned, encrypted, its
    policy, lifecycle. region: the bucket's own region when it is not the provider's (None: the provider's)."""
    child = pulumi.ResourceOptions(parent=parent)
    bucket_id = bucket.id
    public_access = aws.s3.BucketPublicAccessBlock(
        f"{name}-public-access", bucket=bucket_id, region=region, block_public_acls=True, block_public_policy=True,
        ignore_public_acls=True, restrict_public_buckets=True, opts=child,
    )
    ownership = aws.s3.BucketOwnershipControls(
        f"{name}-ownership", bucket=bucket_id, region=region,
        rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"), opts=child,
    )
    versioning = aws.s3.BucketVersioning(
        f"{name}-versioning", bucket=bucket_id, region=region,
        versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
        opts=child,
    )
    encryption_config = aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-encryption", bucket=bucket_id, region=region, rules=[encryption], opts=child,
    )
    bucket_policy = aws.s3.BucketPolicy(
        f"{name}-tls-only", bucket=bucket_id, region=region, policy=policy,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[public_access]),
    )
    lifecycle = aws.s3.BucketLifecycleConfiguration(
        f"{name}-lifecycle", bucket=bucket_id, region=region, rules=rules,
        # Noncurrent-version rules need versioning switched on first.
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[versioning]),
    )
    return [public_access, ownership, versioning, encryption_config, bucket_policy, lifecycle]


def s3_managed_encryption() -> aws.s3.BucketServerSideEncryptionConfigurationRuleArgs:
    """SSE-S3: the only encryption S3 server access logs and load balancer access logs are delivered into."""
    return aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
        apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
            sse_algorithm="AES256",
        ),
    )


class Backups(pulumi.ComponentResource):
    """A private, versioned, KMS-encrypted, TLS-only bucket with lifecycle retention, whose access is logged to a
    second bucket with the same controls (SSE-S3 there: S3 delivers access logs to no SSE-KMS bucket)."""

    bucket: aws.s3.Bucket
    access_logs: aws.s3.Bucket
    key: aws.kms.Key
    lock: aws.s3.BucketObjectLockConfiguration

    def __init__(self, name: str, args: BackupsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:Backups", name, None, opts)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)

        self.key = rotating_key(f"{name}-key", "forgestack backups bucket", self, args.protect)
        # Unprotected (dev) buckets are emptied on destroy; a protected one cannot be destroyed at all.
        # (A destroy of an unprotected stack empties it with the deploy role's governance bypass; COMPLIANCE locks need
        # a protected stack, see settings.)
        self.bucket = aws.s3.Bucket(f"{name}-bucket", force_destroy=not args.protect, tags={PURPOSE_TAG: BACKUPS_PURPOSE},
                                    opts=stateful)
        main_controls = bucket_controls(self, name, self.bucket, kms_encryption(self.key), self.bucket.arn.apply(tls_only_policy),
                                         lifecycle_rules(args))
        # Object Lock on the versioned bucket (S3 enables it on existing buckets too): a host that can write backups
        # cannot bury them, whatever it overwrites. Once enabled it cannot be switched off.
        self.lock = aws.s3.BucketObjectLockConfiguration(
            f"{name}-lock", bucket=self.bucket.id, object_lock_enabled="Enabled", rule=object_lock_rule(args),
            opts=pulumi.ResourceOptions(parent=self, depends_on=main_controls),
        )

        # Who read or wrote which backup (CKV_AWS_18): S3 server access logs, kept as long as the backups.
        self.access_logs = aws.s3.Bucket(f"{name}-access-logs", force_destroy=not args.protect, opts=stateful)
        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        log_policy = pulumi.Output.all(self.access_logs.arn, self.bucket.arn, caller.account_id).apply(
            lambda values: access_log_policy(*values))
        log_controls = bucket_controls(
            self, f"{name}-access-logs", self.access_logs, s3_managed_encryption(), log_policy, access_log_lifecycle_rules(args),
        )
        aws.s3.BucketLogging(
            f"{name}-access-logging", bucket=self.bucket.id, target_bucket=self.access_logs.id, target_prefix=ACCESS_LOG_PREFIX,
            opts=pulumi.ResourceOptions(parent=self, depends_on=log_controls),
        )

        self.replica: aws.s3.Bucket | None = None
        self.replica_key: aws.kms.Key | None = None
        if args.replica_region:
            self._replicate(name, args, [*main_controls, self.lock])

        self.register_outputs({"bucketName": self.bucket.bucket, "bucketArn": self.bucket.arn, "keyArn": self.key.arn,
                               "accessLogBucketName": self.access_logs.bucket,
                               "replicaBucketName": self.replica.bucket if self.replica else None})

    def _replicate(self, name: str, args: BackupsArgs, source_ready: list[pulumi.Resource]) -> None:
        """A bucket in the replica region with the same controls and lock, its own key, and S3 replication of every new
        object version to it (delete markers are not replicated: a delete here never reaches the replica)."""
        self.replica, self.replica_key = replicate(
            self, name, Replication(
                source=self.bucket, source_key=self.key, region=args.replica_region, purpose=BACKUPS_PURPOSE,
                lifecycle=lifecycle_rules(args), protect=args.protect, lock_rule=object_lock_rule(args),
                rule_id="every-backup", replicate_deletes=False,
            ), source_ready,
        )  # fmt: skip


@dataclass(frozen=True)
class Replication:
    """Where and how a bucket is copied to a second region."""

    source: aws.s3.Bucket
    source_key: aws.kms.Key
    region: str
    purpose: str  # the PURPOSE_TAG of both buckets
    lifecycle: list[aws.s3.BucketLifecycleConfigurationRuleArgs]  # the replica's, usually the source's
    protect: bool
    rule_id: str
    replicate_deletes: bool  # True: the replica mirrors deletes (as delete markers; versions stay until lifecycle)
    lock_rule: aws.s3.BucketObjectLockConfigurationRuleArgs | None = None  # the replica's Object Lock, like the source's


def replicate(parent: pulumi.Resource, name: str, how: Replication,
              source_ready: list[pulumi.Resource]) -> tuple[aws.s3.Bucket, aws.kms.Key]:
    """A bucket in how.region with every bucket's controls (and the lock where given), its own key, and S3 replication
    of every new object version of how.source to it; children of `parent`, named after `name`."""
    region = how.region
    stateful = pulumi.ResourceOptions(parent=parent, protect=how.protect)
    replica_key = rotating_key(f"{name}-replica-key", f"forgestack {how.purpose} replica ({region})", parent, how.protect, region=region)
    replica = aws.s3.Bucket(f"{name}-replica", force_destroy=not how.protect, region=region, tags={PURPOSE_TAG: how.purpose},
                            opts=stateful)
    replica_ready = bucket_controls(parent, f"{name}-replica", replica, kms_encryption(replica_key), replica.arn.apply(tls_only_policy),
                                    how.lifecycle, region=region)
    if how.lock_rule is not None:
        replica_ready.append(aws.s3.BucketObjectLockConfiguration(
            f"{name}-replica-lock", bucket=replica.id, object_lock_enabled="Enabled", rule=how.lock_rule, region=region,
            opts=pulumi.ResourceOptions(parent=parent, depends_on=list(replica_ready)),
        ))
    child = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(f"{name}-replication-role", assume_role_policy=service_assume_role_policy("s3.amazonaws.com"), opts=child)
    policy = aws.iam.RolePolicy(
        f"{name}-replication-policy", role=role.id,
        policy=pulumi.Output.all(how.source.arn, replica.arn, how.source_key.arn, replica_key.arn).apply(
            lambda arns: replication_policy(arns[0], arns[1], arns[2], arns[3], replicate_deletes=how.replicate_deletes)),
        opts=child,
    )
    aws.s3.BucketReplicationConfig(
        f"{name}-replication", bucket=how.source.id, role=role.arn,
        rules=[aws.s3.BucketReplicationConfigRuleArgs(
            id=how.rule_id, status="Enabled", priority=1,
            filter=aws.s3.BucketReplicationConfigRuleFilterArgs(prefix=""),
            delete_marker_replication=aws.s3.BucketReplicationConfigRuleDeleteMarkerReplicationArgs(
                status="Enabled" if how.replicate_deletes else "Disabled"),
            source_selection_criteria=aws.s3.BucketReplicationConfigRuleSourceSelectionCriteriaArgs(
                sse_kms_encrypted_objects=aws.s3.BucketReplicationConfigRuleSourceSelectionCriteriaSseKmsEncryptedObjectsArgs(
                    status="Enabled"),
            ),
            destination=aws.s3.BucketReplicationConfigRuleDestinationArgs(
                bucket=replica.arn,
                encryption_configuration=aws.s3.BucketReplicationConfigRuleDestinationEncryptionConfigurationArgs(
                    replica_kms_key_id=replica_key.arn),
                # CloudWatch replication metrics (bytes and operations pending, latency) per rule.
                metrics=aws.s3.BucketReplicationConfigRuleDestinationMetricsArgs(status="Enabled"),
            ),
        )],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[*source_ready, *replica_ready, policy]),
    )
    return replica, replica_key
