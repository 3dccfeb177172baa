#!/usr/bin/env python3
"""Record that a commit passed a stack's smoke test, and check it before promoting the commit to the next stack.

    python scripts/promotion.py record --backend-url "$PULUMI_BACKEND_URL" --stack staging --commit "$GITHUB_SHA"
    python scripts/promotion.py check --backend-url "$PULUMI_BACKEND_URL" --stack prod --commit "$GITHUB_SHA"

The chain is dev -> staging -> prod: a stack takes only a commit its predecessor deployed and smoke-tested. Records
live in the state bucket under promotions/<stack>/<commit>.json, written by the deploy workflow right after the smoke
test passed. Each stack's deploy role may write only its own records (scripts/ci_roles.py denies the others'), so a
record cannot come from a pull request or from another stack's job.

Exit codes: 0 recorded, or the commit may be promoted; 1 no record (or AWS refused); 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
from datetime import UTC, datetime
from typing import Any, Final

import boto3
import botocore.exceptions

PROMOTED_FROM: Final = {"staging": "dev", "prod": "staging"}  # stack -> the stack its commits must have passed
RECORD_PREFIX: Final = "promotions"
_COMMIT = re.compile(r"[0-9a-f]{40}")


class UsageError(Exception):
    """Exit 2: the arguments cannot work."""


def say(line: str) -> None:
    print(f"promotion: {line}", file=sys.stderr, flush=True)


def record_key(stack: str, commit: str) -> str:
    return f"{RECORD_PREFIX}/{stack}/{commit}.json"


def state_bucket(backend_url: str) -> tuple[str, str | None]:
    """The bucket and region of a DIY S3 backend URL (s3://bucket?region=eu-west-1&awssdk=v2)."""
    parts = urllib.parse.urlsplit(backend_url)
    if parts.scheme != "s3" or not parts.netloc:
        raise UsageError(f"--backend-url {backend_url!r} is not an s3:// state backend URL")
    region = urllib.parse.parse_qs(parts.query).get("region", [None])[0]
    return parts.netloc, region


def record(s3: Any, bucket: str, stack: str, commit: str, run_url: str, now: datetime) -> str:
    key = record_key(stack, commit)
    body = {"commit": commit, "stack": stack, "smoke": "passed", "recorded_at": now.isoformat(), "run_url": run_url}
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode(), ContentType="application/json")
    return key


def check(s3: Any, bucket: str, stack: str, commit: str) -> str:
    """A line saying why the commit may go to `stack`; raises LookupError saying why not."""
    source = PROMOTED_FROM.get(stack)
    if source is None:
        return f"{stack} takes any commit (first in the chain)"
    key = record_key(source, commit)
    try:
        document = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except botocore.exceptions.ClientError as error:
        if error.response["Error"].get("Code") in ("NoSuchKey", "404"):
            raise LookupError(f"commit {commit[:12]} has not passed {source}'s smoke test (no s3://{bucket}/{key}): "
                              f"deploy it to {source} first") from error
        raise
    except json.JSONDecodeError as error:
        raise LookupError(f"s3://{bucket}/{key} is not a promotion record") from error
    if not isinstance(document, dict) or document.get("commit") != commit or document.get("smoke") != "passed":
        raise LookupError(f"s3://{bucket}/{key} does not record a passed smoke test of {commit[:12]}")
    return (f"commit {commit[:12]} passed {source}'s smoke test at {document.get('recorded_at', '?')}"
            f" ({document.get('run_url') or 'no run URL'})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["record", "check"])
    parser.add_argument("--backend-url", required=True, help="the Pulumi state backend (s3://bucket?region=...)")
    parser.add_argument("--stack", required=True, help="record: the stack that passed; check: the stack to deploy to")
    parser.add_argument("--commit", required=True, help="the full 40-character commit SHA")
    parser.add_argument("--run-url", default="", help="record: the workflow run that deployed and tested it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not _COMMIT.fullmatch(args.commit):
            raise UsageError(f"--commit {args.commit!r} is not a full 40-character lowercase SHA")
        bucket, region = state_bucket(args.backend_url)
        s3 = boto3.client("s3", region_name=region)
        if args.action == "record":
            key = record(s3, bucket, args.stack, args.commit, args.run_url, datetime.now(UTC))
            say(f"recorded: {args.stack} deployed and smoke-tested {args.commit[:12]} (s3://{bucket}/{key})")
        else:
            say(check(s3, bucket, args.stack, args.commit))
    except UsageError as error:
        say(str(error))
        return 2
    except LookupError as error:
        say(f"refused: {error}")
        return 1
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        say(f"AWS refused: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
