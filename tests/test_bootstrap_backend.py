"""scripts/bootstrap_backend.py against moto: creates the state bucket and key, and a second run changes nothing."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from scripts import bootstrap_backend

REGION = "eu-west-1"
BUCKET = "acme-forgestack-state"


@pytest.fixture
def account(moto_account: str) -> str:
    assert moto_account == REGION
    return moto_account


def state(bucket: str = BUCKET) -> dict[str, Any]:
    """Everything the script manages, as AWS reports it."""
    s3, kms = boto3.client("s3", region_name=REGION), boto3.client("kms", region_name=REGION)
    key = kms.describe_key(KeyId=bootstrap_backend.DEFAULT_KEY_ALIAS)["KeyMetadata"]
    return {
        "versioning": s3.get_bucket_versioning(Bucket=bucket).get("Status"),
        "encryption": s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"],
        "public_access_block": s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
        "ownership": s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"],
        "lifecycle": s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
        "policy": json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]),
        "key": key["Arn"], "rotation": kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"],
        "keys": len(kms.list_keys()["Keys"]), "buckets": [b["Name"] for b in s3.list_buckets()["Buckets"]],
        "aliases": sorted(a["AliasName"] for a in kms.list_aliases()["Aliases"] if a["AliasName"].startswith("alias/forgestack")),
    }


def test_first_run_creates_a_locked_down_backend(account: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert bootstrap_backend.main(["--bucket", BUCKET, "--region", REGION]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"pulumi login 's3://{BUCKET}?region={REGION}&awssdk=v2'",
                   f"pulumi stack init dev --secrets-provider 'awskms://alias/forgestack-pulumi-dev?region={REGION}'",
                   f"pulumi stack init staging --secrets-provider 'awskms://alias/forgestack-pulumi-staging?region={REGION}'",
                   f"pulumi stack init prod --secrets-provider 'awskms://alias/forgestack-pulumi-prod?region={REGION}'"]
    created = state()
    # The bucket's own key, and one secrets key per stack: decrypting dev's secrets never decrypts prod's.
    assert created["aliases"] == ["alias/forgestack-pulumi", "alias/forgestack-pulumi-dev", "alias/forgestack-pulumi-prod",
                                  "alias/forgestack-pulumi-staging"]
    assert created["keys"] == 4
    assert created["versioning"] == "Enabled" and created["rotation"] is True
    assert created["encryption"] == [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": created["key"]},
                                      "BucketKeyEnabled": True}]
    assert all(created["public_access_block"].values()) and created["ownership"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert {r["ID"] for r in created["lifecycle"]} == {"expire-old-state-versions", "abort-incomplete-uploads"}
    assert created["policy"]["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_second_run_changes_nothing(account: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert bootstrap_backend.main(["--bucket", BUCKET, "--region", REGION]) == 0
    before = state()
    capsys.readouterr()
    assert bootstrap_backend.main(["--bucket", BUCKET, "--region", REGION]) == 0
    assert state() == before
    progress = capsys.readouterr().err.splitlines()
    assert progress and all(line.endswith("unchanged") or "unchanged (exists" in line for line in progress), progress


def test_a_drifted_setting_is_repaired_and_only_that(account: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert bootstrap_backend.main(["--bucket", BUCKET, "--region", REGION]) == 0
    boto3.client("s3", region_name=REGION).put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})
    capsys.readouterr()
    assert bootstrap_backend.main(["--bucket", BUCKET, "--region", REGION]) == 0
    assert f"bootstrap: bucket {BUCKET} settings: versioning set" in capsys.readouterr().err
    assert state()["versioning"] == "Enabled"


@pytest.mark.parametrize(("args", "expected"), [
    (["--bucket", "Bad_Bucket", "--region", REGION], "not a valid S3 bucket name"),
    (["--bucket", BUCKET, "--region", REGION, "--key-alias", "alias/aws/s3"], "must start with alias/ and not alias/aws/"),
    (["--bucket", BUCKET, "--region", REGION, "--keep-versions-days", "0"], "at least 1"),
    (["--bucket", BUCKET, "--region", REGION, "--stacks", "dev,Prod"], "expected distinct stack names"),
    (["--bucket", BUCKET, "--region", REGION, "--stacks", "dev,dev"], "expected distinct stack names"),
])
def test_bad_usage_is_one_line_and_touches_nothing(account: str, capsys: pytest.CaptureFixture[str], args: list[str],
                                                  expected: str) -> None:
    assert bootstrap_backend.main(args) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and expected in error
    assert boto3.client("s3", region_name=REGION).list_buckets()["Buckets"] == []
