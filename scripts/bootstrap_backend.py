#!/usr/bin/env python3
"""Create the Pulumi state backend once per AWS account: an S3 state bucket and KMS keys for Pulumi secrets.

    python scripts/bootstrap_backend.py --bucket acme-forgestack-state --region eu-west-1

Idempotent: every step first reads what exists and changes only what differs, so a second run
reports "unchanged" for everything. The bucket gets versioning (state history), KMS default
encryption with a bucket key (the --key-alias key), all four public access blocks,
BucketOwnerEnforced, a TLS-only policy and a lifecycle rule (old state versions expire after
--keep-versions-days, incomplete uploads after a day). Each stack gets its own secrets key,
<key-alias>-<stack>, so a role that may decrypt dev's secrets cannot decrypt prod's
(scripts/ci_roles.py grants them per stack). Keys rotate yearly. Finally it prints the
`pulumi login` and `--secrets-provider` lines to use. It never deletes anything.
Exit codes: 0 done, 1 AWS refused a step, 2 bad usage (or the bucket belongs to someone else).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import boto3
import botocore.exceptions

DEFAULT_KEY_ALIAS = "alias/forgestack-pulumi"
DEFAULT_KEEP_VERSIONS_DAYS = 90
DEFAULT_STACKS = ("dev", "staging", "prod")
_STACK_NAME = re.compile(r"[a-z][a-z0-9-]{0,19}")


def parse_stacks(text: str) -> list[str]:
    """`dev,prod` -> ["dev", "prod"]; UsageError unless distinct, lowercase stack names."""
    stacks = [stack.strip() for stack in text.split(",")]
    if not all(_STACK_NAME.fullmatch(stack) for stack in stacks) or len(set(stacks)) != len(stacks):
        raise UsageError(f"--stacks {text!r}: expected distinct stack names such as dev,prod")
    return stacks


def secrets_key_alias(key_alias: str, stack: str) -> str:
    """The alias of a stack's own Pulumi secrets key."""
    return f"{key_alias}-{stack}"
_BUCKET_NAME = re.compile(r"^(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class UsageError(Exception):
    """The operator asked for something this script will not do (exit 2)."""


def say(step: str, outcome: str) -> None:
    print(f"bootstrap: {step}: {outcome}", file=sys.stderr, flush=True)


def tls_only_policy(bucket: str) -> dict[str, Any]:
    arn = f"arn:aws:s3:::{bucket}"
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }]}


def lifecycle_rules(keep_versions_days: int) -> list[dict[str, Any]]:
    return [
        {"ID": "expire-old-state-versions", "Status": "Enabled", "Filter": {"Prefix": ""},
         "NoncurrentVersionExpiration": {"NoncurrentDays": keep_versions_days}},
        {"ID": "abort-incomplete-uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
    ]


def error_code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def ensure_key(kms: Any, alias: str) -> tuple[str, bool]:
    """(key ARN, created?) for the alias; creates a rotating symmetric key when the alias does not exist."""
    try:
        metadata = kms.describe_key(KeyId=alias)["KeyMetadata"]
    except botocore.exceptions.ClientError as error:
        if error_code(error) != "NotFoundException":
            raise
        metadata = kms.create_key(Description=f"forgestack Pulumi backend ({alias})", KeyUsage="ENCRYPT_DECRYPT",
                                  KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]
        kms.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
        kms.enable_key_rotation(KeyId=metadata["KeyId"])
        say(f"KMS key {alias}", "created (rotation on)")
        return str(metadata["Arn"]), True
    if not kms.get_key_rotation_status(KeyId=metadata["KeyId"])["KeyRotationEnabled"]:
        kms.enable_key_rotation(KeyId=metadata["KeyId"])
        say(f"KMS key {alias}", "rotation turned on")
        return str(metadata["Arn"]), True
    say(f"KMS key {alias}", "unchanged")
    return str(metadata["Arn"]), False


def ensure_bucket(s3: Any, bucket: str, region: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account_id())
        say(f"bucket {bucket}", "unchanged (exists, owned by this account)")
        return False
    except botocore.exceptions.ClientError as error:
        if error_code(error) in ("403", "AccessDenied"):
            raise UsageError(f"bucket {bucket} exists but belongs to another account; choose another --bucket") from error
        if error_code(error) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    request: dict[str, Any] = {"Bucket": bucket, "ObjectOwnership": "BucketOwnerEnforced"}
    if region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**request)
    say(f"bucket {bucket}", "created")
    return True


def _current(call: Any, missing_codes: tuple[str, ...], **kwargs: Any) -> Any:
    try:
        return call(**kwargs)
    except botocore.exceptions.ClientError as error:
        if error_code(error) in missing_codes:
            return None
        raise


def ensure_bucket_settings(s3: Any, bucket: str, key_arn: str, keep_versions_days: int) -> list[str]:
    """Bring each setting to the wanted value; return the names of those that changed."""
    changed = []
    block = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    current = _current(s3.get_public_access_block, ("NoSuchPublicAccessBlockConfiguration",), Bucket=bucket)
    if not current or current["PublicAccessBlockConfiguration"] != block:
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=block)
        changed.append("public access block")

    ownership = _current(s3.get_bucket_ownership_controls, ("OwnershipControlsNotFoundError",), Bucket=bucket)
    wanted_ownership = [{"ObjectOwnership": "BucketOwnerEnforced"}]
    if not ownership or ownership["OwnershipControls"]["Rules"] != wanted_ownership:
        s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={"Rules": wanted_ownership})
        changed.append("ownership controls")

    if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        changed.append("versioning")

    wanted_rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn},
                   "BucketKeyEnabled": True}
    encryption = _current(s3.get_bucket_encryption, ("ServerSideEncryptionConfigurationNotFoundError",), Bucket=bucket)
    if not encryption or encryption["ServerSideEncryptionConfiguration"]["Rules"] != [wanted_rule]:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [wanted_rule]})
        changed.append("KMS encryption")

    rules = lifecycle_rules(keep_versions_days)
    lifecycle = _current(s3.get_bucket_lifecycle_configuration, ("NoSuchLifecycleConfiguration",), Bucket=bucket)
    if not lifecycle or sorted(lifecycle["Rules"], key=lambda r: r["ID"]) != sorted(rules, key=lambda r: r["ID"]):
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
        changed.append("lifecycle")

    policy = _current(s3.get_bucket_policy, ("NoSuchBucketPolicy",), Bucket=bucket)
    if not policy or json.loads(policy["Policy"]) != tls_only_policy(bucket):
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(tls_only_policy(bucket)))
        changed.append("TLS-only policy")
    return changed


def account_id() -> str:
    return str(boto3.client("sts").get_caller_identity()["Account"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     epilog="Exit codes: 0 done, 1 AWS refused a step, 2 bad usage.")
    parser.add_argument("--bucket", required=True, help="name of the state bucket (globally unique)")
    parser.add_argument("--region", required=True, help="AWS region of the bucket and key, e.g. eu-west-1")
    parser.add_argument("--key-alias", default=DEFAULT_KEY_ALIAS, help=f"alias of the secrets key (default {DEFAULT_KEY_ALIAS})")
    parser.add_argument("--keep-versions-days", type=int, default=DEFAULT_KEEP_VERSIONS_DAYS,
                        help=f"days old state versions are kept (default {DEFAULT_KEEP_VERSIONS_DAYS})")
    parser.add_argument("--stacks", default=",".join(DEFAULT_STACKS),
                        help=f"comma-separated stacks, each with its own secrets key (default {','.join(DEFAULT_STACKS)})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not _BUCKET_NAME.match(args.bucket):
        print(f"bootstrap: --bucket {args.bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, . and -)",
              file=sys.stderr)
        return 2
    if not args.key_alias.startswith("alias/") or args.key_alias.startswith("alias/aws/"):
        print(f"bootstrap: --key-alias {args.key_alias!r} must start with alias/ and not alias/aws/", file=sys.stderr)
        return 2
    if args.keep_versions_days < 1:
        print("bootstrap: --keep-versions-days must be at least 1", file=sys.stderr)
        return 2
    try:
        stacks = parse_stacks(args.stacks)
    except UsageError as error:
        print(f"bootstrap: {error}", file=sys.stderr)
        return 2
    try:
        kms = boto3.client("kms", region_name=args.region)
        key_arn, _ = ensure_key(kms, args.key_alias)
        for stack in stacks:
            ensure_key(kms, secrets_key_alias(args.key_alias, stack))
        s3 = boto3.client("s3", region_name=args.region)
        ensure_bucket(s3, args.bucket, args.region)
        changed = ensure_bucket_settings(s3, args.bucket, key_arn, args.keep_versions_days)
    except UsageError as error:
        print(f"bootstrap: {error}", file=sys.stderr)
        return 2
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        print(f"bootstrap: AWS refused: {error}", file=sys.stderr)
        return 1
    say(f"bucket {args.bucket} settings", ", ".join(changed) + " set" if changed else "unchanged")
    print(f"pulumi login 's3://{args.bucket}?region={args.region}&awssdk=v2'")
    for stack in stacks:
        print(f"pulumi stack init {stack} --secrets-provider 'awskms://{secrets_key_alias(args.key_alias, stack)}?region={args.region}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
