"""Backups bucket: private, versioned, KMS-encrypted, TLS-only, with lifecycle retention per environment."""

from __future__ import annotations

import json

from rehearsal.engine import ProgramRun


def _bucket_child(run: ProgramRun, type_: str) -> dict:
    resource = run.one(type_)
    assert resource.inputs["bucket"] == run.one("aws:s3/bucket:Bucket").id
    return resource.inputs


def test_all_four_public_access_blocks(aws_run: ProgramRun) -> None:
    block = _bucket_child(aws_run, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    for setting in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert block[setting] is True, setting


def test_owner_enforced_and_versioned(aws_run: ProgramRun) -> None:
    ownership = _bucket_child(aws_run, "aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    versioning = _bucket_child(aws_run, "aws:s3/bucketVersioning:BucketVersioning")
    assert versioning["versioningConfiguration"]["status"] == "Enabled"


def test_sse_kms_with_bucket_key_and_a_rotating_key(aws_run: ProgramRun) -> None:
    encryption = _bucket_child(aws_run, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    (rule,) = encryption["rules"]
    key = aws_run.one("aws:kms/key:Key", "backups-key")
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key.outputs["arn"]}
    assert rule["bucketKeyEnabled"] is True
    assert key.inputs["enableKeyRotation"] is True


def test_policy_denies_requests_without_tls(aws_run: ProgramRun) -> None:
    bucket_arn = aws_run.one("aws:s3/bucket:Bucket").outputs["arn"]
    policy = json.loads(_bucket_child(aws_run, "aws:s3/bucketPolicy:BucketPolicy")["policy"])
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*" and statement["Action"] == "s3:*"
    assert statement["Resource"] == [bucket_arn, f"{bucket_arn}/*"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def _rules(run: ProgramRun) -> dict[str, dict]:
    lifecycle = _bucket_child(run, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    return {rule["id"]: rule for rule in lifecycle["rules"]}


def test_lifecycle_expires_after_retention_and_aborts_uploads(dev_run: ProgramRun, prod_run: ProgramRun) -> None:
    for run, days in ((dev_run, 7), (prod_run, 90)):
        rules = _rules(run)
        assert rules["expire-backups"]["expiration"]["days"] == days
        assert rules["expire-backups"]["noncurrentVersionExpiration"]["noncurrentDays"] == 7
        assert rules["abort-incomplete-uploads"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 1
        assert all(rule["status"] == "Enabled" for rule in rules.values())


def test_only_prod_archives_older_backups(dev_run: ProgramRun, prod_run: ProgramRun) -> None:
    assert not _rules(dev_run)["expire-backups"].get("transitions")
    assert _rules(prod_run)["expire-backups"]["transitions"] == [{"days": 30, "storageClass": "GLACIER_IR"}]


def test_dev_bucket_goes_with_destroy_prod_bucket_is_protected(dev_run: ProgramRun, prod_run: ProgramRun) -> None:
    dev_bucket, prod_bucket = dev_run.one("aws:s3/bucket:Bucket"), prod_run.one("aws:s3/bucket:Bucket")
    assert dev_bucket.inputs["forceDestroy"] is True and not dev_bucket.protect
    assert prod_bucket.inputs["forceDestroy"] is False and prod_bucket.protect
    assert prod_run.one("aws:kms/key:Key", "backups-key").protect
