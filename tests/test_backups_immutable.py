"""Backups nobody can erase: S3 Object Lock on the backups bucket, and the host's real policy (components/host.py)
evaluated by moto's IAM on every request. The host writes new backups and the `latest` pointer; it cannot delete a
version, bypass governance or change the bucket's lock, lifecycle or versioning; retention and legal holds are checked
on the document (moto's IAM cannot tell them from PutObject).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from components.backups import BackupsArgs, lifecycle_rules
from components.host import host_policy
from components.host_tools import backup as backup_script
from policy.forgestack_rules import BACKUP_ERASURE_ACTIONS, erasure_allowed
from rehearsal.emulated import emulated_account, rehearse
from rehearsal.engine import stack_config

REGION = "eu-west-1"
BUCKET = "forge-backups"
RETENTION_DAYS = 7
ADMIN = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
DENIED = ("AccessDenied", "403")


def refused(call: Callable[[], Any]) -> str:
    """The error code of a refused call ('' when it went through)."""
    try:
        call()
    except botocore.exceptions.ClientError as error:
        return str(error.response["Error"]["Code"])
    return ""


def _put(s3: Any, key: str, body: bytes) -> str:
    return str(s3.put_object(Bucket=BUCKET, Key=key, Body=body, ChecksumAlgorithm="SHA256")["VersionId"])


def test_the_hosts_role_cannot_erase_or_shorten_a_locked_backup(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    seen: dict[str, str] = {}

    def inside() -> None:
        iam = boto3.client("iam", region_name=REGION)
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(ADMIN))
        key = iam.create_access_key(UserName="admin")["AccessKey"]  # from here on every request is checked
        admin = boto3.Session(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], region_name=REGION)
        s3 = admin.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        s3.put_object_lock_configuration(Bucket=BUCKET, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": RETENTION_DAYS}}})
        key_arn = admin.client("kms").create_key()["KeyMetadata"]["Arn"]
        admin_arn = admin.client("iam").get_user(UserName="admin")["User"]["Arn"]
        role = admin.client("iam").create_role(RoleName="host", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": admin_arn}, "Action": "sts:AssumeRole"}]}))["Role"]
        admin.client("iam").put_role_policy(RoleName="host", PolicyName="host",
                                            PolicyDocument=host_policy(f"arn:aws:s3:::{BUCKET}", key_arn))
        credentials = admin.client("sts").assume_role(RoleArn=role["Arn"], RoleSessionName="host")["Credentials"]
        host = boto3.Session(aws_access_key_id=credentials["AccessKeyId"], aws_secret_access_key=credentials["SecretAccessKey"],
                             aws_session_token=credentials["SessionToken"], region_name=REGION).client("s3")

        # What the backup job does: new objects under its prefix, and the pointer again and again.
        first = _put(host, "forgestack/20261130T030000Z/manifest.json", b'{"good": true}')
        pointer_v1 = _put(host, "forgestack/latest", b'{"backup_id": "20261130T030000Z"}')
        pointer_v2 = _put(host, "forgestack/latest", b'{"backup_id": "planted"}')  # an overwrite is a new version
        seen["outside the prefix"] = refused(lambda: _put(host, "elsewhere/x", b"x"))
        key = "forgestack/20261130T030000Z/manifest.json"
        seen["delete"] = refused(lambda: host.delete_object(Bucket=BUCKET, Key=key))
        seen["delete a version"] = refused(lambda: host.delete_object(Bucket=BUCKET, Key=key, VersionId=first))
        seen["delete with bypass"] = refused(lambda: host.delete_object(Bucket=BUCKET, Key=key, VersionId=first,
                                                                       BypassGovernanceRetention=True))
        # DeleteObjects answers 200 and lists each refused key under Errors.
        many = host.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": key, "VersionId": first}]})
        seen["delete many"] = "AccessDenied" if many.get("Errors") and not many.get("Deleted") else ""
        seen["lifecycle"] = refused(lambda: host.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={
            "Rules": [{"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]}))
        seen["lock configuration"] = refused(lambda: host.put_object_lock_configuration(Bucket=BUCKET, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}))
        seen["versioning"] = refused(lambda: host.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"}))
        # The good versions are all still there, each under its retention.
        versions = s3.list_object_versions(Bucket=BUCKET, Prefix="forgestack/")["Versions"]
        seen["versions kept"] = str(sorted(v["VersionId"] for v in versions) == sorted([first, pointer_v1, pointer_v2]))
        seen["retention mode"] = s3.head_object(Bucket=BUCKET, Key=key, VersionId=first).get("ObjectLockMode", "none")
        # The lock holds against the account's own admin too, unless it bypasses governance on purpose.
        seen["admin delete without bypass"] = refused(lambda: s3.delete_object(Bucket=BUCKET, Key=key, VersionId=first))

    set_initial_no_auth_action_count(3)(mock_aws(inside))()
    refusals = {what: code for what, code in seen.items() if what not in ("versions kept", "retention mode")}
    assert {what: code for what, code in refusals.items() if code not in DENIED} == {}
    assert (seen["versions kept"], seen["retention mode"]) == ("True", "GOVERNANCE")


def test_the_rehearsed_backups_bucket_is_locked_for_the_retention_in_the_stacks_mode() -> None:
    config = {**stack_config("prod"), "forgestack:backupLockMode": "compliance"}
    with emulated_account(REGION, config["forgestack:hostedZone"]) as account:
        run = rehearse("prod", config, account)
        bucket = run.outputs["backupBucketName"]
        lock = account.client("s3").get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
        assert (lock["ObjectLockEnabled"], lock["Rule"]["DefaultRetention"]["Mode"], lock["Rule"]["DefaultRetention"]["Days"]) == (
            "Enabled", "COMPLIANCE", 90)
    dev = rehearse_dev_lock()
    assert (dev["ObjectLockEnabled"], dev["Rule"]["DefaultRetention"]["Mode"], dev["Rule"]["DefaultRetention"]["Days"]) == (
        "Enabled", "GOVERNANCE", 7)


def rehearse_dev_lock() -> dict[str, Any]:
    config = stack_config("dev")
    with emulated_account(REGION, config["forgestack:hostedZone"]) as account:
        run = rehearse("dev", config, account)
        return dict(account.client("s3").get_object_lock_configuration(Bucket=run.outputs["backupBucketName"])["ObjectLockConfiguration"])


def test_the_hosts_policy_allows_no_erasure_and_denies_all_of_it() -> None:
    """moto authorizes PutObjectRetention and PutObjectLegalHold as PutObject (its action map has no entry for them),
    so those two are checked on the document: no allow grants any erasure action, an explicit deny names them all."""
    document = json.loads(host_policy(f"arn:aws:s3:::{BUCKET}", "arn:aws:kms:eu-west-1:123456789012:key/k"))
    assert erasure_allowed(document) == []
    (fence,) = [s for s in document["Statement"] if s["Effect"] == "Deny"]
    assert set(fence["Action"]) == set(BACKUP_ERASURE_ACTIONS)
    assert set(fence["Resource"]) == {f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"}
    writes = [s for s in document["Statement"] if "s3:PutObject" in s["Action"]]
    assert [w["Resource"] for w in writes] == [f"arn:aws:s3:::{BUCKET}/{backup_script.DEFAULT_PREFIX}/*"]


@pytest.mark.parametrize("retention", [1, 7, 90, 3650])
def test_lifecycle_never_removes_a_version_before_its_lock_ends(retention: int) -> None:
    for rule in lifecycle_rules(BackupsArgs(retention)):
        expiration: Any = rule.expiration
        noncurrent: Any = rule.noncurrent_version_expiration
        if expiration is not None:
            assert expiration.days >= retention
        if noncurrent is not None:
            # a version can become noncurrent the moment it is written (the next pointer): it must outlive its lock
            assert noncurrent.noncurrent_days >= retention


def test_a_backup_reaches_a_locked_bucket_even_with_a_boto3_that_sends_no_checksum_itself(
        moto_account: str, tmp_path: Path) -> None:
    """Ubuntu 24.04's boto3 (1.34) adds no checksum on its own; S3 refuses uploads to a bucket with default retention
    without one. `request_checksum_calculation=when_required` makes today's boto3 behave the same."""
    old_style = boto3.client("s3", region_name=moto_account, config=botocore.config.Config(request_checksum_calculation="when_required"))
    old_style.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": moto_account})
    old_style.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    old_style.put_object_lock_configuration(Bucket=BUCKET, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    # Without a checksum S3 (and moto) refuse: the check is real.
    missing = refused(lambda: old_style.put_object(Bucket=BUCKET, Key="x", Body=io.BytesIO(b"x")))
    assert missing == "MissingUploadObjectWithObjectLockHeaders"
    data = tmp_path / "gitea"
    (data / "repos").mkdir(parents=True)
    (data / "repos" / "HEAD").write_text("ref: refs/heads/main\n")
    manifest = backup_script.run_backup(old_style, BUCKET, "forgestack", None, [data])
    pointer = json.loads(old_style.get_object(Bucket=BUCKET, Key="forgestack/latest")["Body"].read())
    assert pointer["backup_id"] == manifest["backup_id"]
