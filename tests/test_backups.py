"""Backups bucket: private, versioned, KMS-encrypted, TLS-only, with lifecycle retention per environment, and its
access logged to a second bucket with the same controls."""

from __future__ import annotations

import json

from rehearsal.engine import ProgramRun

BUCKET = "backups-bucket"
LOGS = "backups-access-logs"
CHILD_NAMES = {BUCKET: "backups", LOGS: "backups-access-logs"}  # the controls are named after their bucket


def _bucket_child(run: ProgramRun, type_: str, bucket: str = BUCKET) -> dict:
    suffix = {"aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "public-access",
              "aws:s3/bucketOwnershipControls:BucketOwnershipControls": "ownership",
              "aws:s3/bucketVersioning:BucketVersioning": "versioning",
              "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": "encryption",
              "aws:s3/bucketPolicy:BucketPolicy": "tls-only",
              "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": "lifecycle"}[type_]
    resource = run.one(type_, f"{CHILD_NAMES[bucket]}-{suffix}")
    assert resource.inputs["bucket"] == run.one("aws:s3/bucket:Bucket", bucket).id
    return resource.inputs


def test_all_four_public_access_blocks(aws_run: ProgramRun) -> None:
    for bucket in (BUCKET, LOGS):
        block = _bucket_child(aws_run, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", bucket)
        for setting in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
            assert block[setting] is True, (bucket, setting)


def test_owner_enforced_and_versioned(aws_run: ProgramRun) -> None:
    for bucket in (BUCKET, LOGS):
        ownership = _bucket_child(aws_run, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", bucket)
        assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"
        versioning = _bucket_child(aws_run, "aws:s3/bucketVersioning:BucketVersioning", bucket)
        assert versioning["versioningConfiguration"]["status"] == "Enabled"


def test_sse_kms_with_bucket_key_and_a_rotating_key(aws_run: ProgramRun) -> None:
    encryption = _bucket_child(aws_run, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    (rule,) = encryption["rules"]
    key = aws_run.one("aws:kms/key:Key", "backups-key")
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key.outputs["arn"]}
    assert rule["bucketKeyEnabled"] is True
    assert key.inputs["enableKeyRotation"] is True


def test_policy_denies_requests_without_tls(aws_run: ProgramRun) -> None:
    for bucket in (BUCKET, LOGS):
        bucket_arn = aws_run.one("aws:s3/bucket:Bucket", bucket).outputs["arn"]
        policy = json.loads(_bucket_child(aws_run, "aws:s3/bucketPolicy:BucketPolicy", bucket)["policy"])
        statement = policy["Statement"][0]
        assert statement["Effect"] == "Deny" and statement["Principal"] == {"AWS": "*"} and statement["Action"] == "s3:*"
        assert statement["Resource"] == [bucket_arn, f"{bucket_arn}/*"]
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_access_to_the_backups_is_logged_to_the_log_bucket_only_by_s3(aws_run: ProgramRun) -> None:
    logging = aws_run.one("aws:s3/bucketLogging:BucketLogging").inputs
    backups, logs = aws_run.one("aws:s3/bucket:Bucket", BUCKET), aws_run.one("aws:s3/bucket:Bucket", LOGS)
    assert (logging["bucket"], logging["targetBucket"], logging["targetPrefix"]) == (backups.id, logs.id, "backups/")
    (_, delivery) = json.loads(_bucket_child(aws_run, "aws:s3/bucketPolicy:BucketPolicy", LOGS)["policy"])["Statement"]
    assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"} and delivery["Action"] == "s3:PutObject"
    assert delivery["Resource"] == f"{logs.outputs['arn']}/backups/*"
    assert delivery["Condition"] == {"ArnLike": {"aws:SourceArn": backups.outputs["arn"]},
                                     "StringEquals": {"aws:SourceAccount": "123456789012"}}
    # S3 delivers access logs only to SSE-S3 buckets (an accepted risk in the policy pack)
    (rule,) = _bucket_child(aws_run, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                            LOGS)["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    lifecycle = {r["id"]: r for r in _bucket_child(aws_run, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
                                                   LOGS)["rules"]}
    backups_days = {r["id"]: r for r in _bucket_child(aws_run, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
                    ["rules"]}["expire-backups"]["expiration"]["days"]
    assert lifecycle["expire-access-logs"]["expiration"]["days"] == backups_days
    assert lifecycle["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 1


def _rules(run: ProgramRun) -> dict[str, dict]:
    lifecycle = _bucket_child(run, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    return {rule["id"]: rule for rule in lifecycle["rules"]}


def test_lifecycle_expires_after_retention_and_aborts_uploads(dev_run: ProgramRun, prod_run: ProgramRun) -> None:
    for run, days in ((dev_run, 7), (prod_run, 90)):
        rules = _rules(run)
        assert rules["expire-backups"]["expiration"]["days"] == days
        # never before the Object Lock retention ends (the retention equals backupRetentionDays)
        assert rules["expire-backups"]["noncurrentVersionExpiration"]["noncurrentDays"] == days
        assert rules["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 1
        assert all(rule["status"] == "Enabled" for rule in rules.values())


def test_only_prod_archives_older_backups(dev_run: ProgramRun, prod_run: ProgramRun) -> None:
    assert not _rules(dev_run)["expire-backups"].get("transitions")
    assert _rules(prod_run)["expire-backups"]["transitions"] == [{"days": 30, "storageClass": "GLACIER_IR"}]


def test_dev_bucket_goes_with_destroy_prod_bucket_is_protected(dev_run: ProgramRun, prod_run: ProgramRun) -> None:
    for bucket in (BUCKET, LOGS):
        dev_bucket, prod_bucket = dev_run.one("aws:s3/bucket:Bucket", bucket), prod_run.one("aws:s3/bucket:Bucket", bucket)
        assert dev_bucket.inputs["forceDestroy"] is True and not dev_bucket.protect
        assert prod_bucket.inputs["forceDestroy"] is False and prod_bucket.protect
    assert prod_run.one("aws:kms/key:Key", "backups-key").protect
