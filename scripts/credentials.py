#!/usr/bin/env python3
"""Read one forgestack credential from the stack's Secrets Manager secret.

    python scripts/credentials.py --secret-arn "$(pulumi stack output credentialsSecretArn)" --key giteaAdminPassword
    python scripts/credentials.py --secret-arn ARN --list

Prints the value alone on stdout (pipe it to a password manager, not to a terminal log), or the
key names with --list. The region comes from the ARN; credentials from the standard AWS
environment (AWS_PROFILE, AWS_ENDPOINT_URL, ...). Exit codes: 0 ok, 1 AWS or secret error, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys

import boto3
import botocore.exceptions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--secret-arn", required=True, help="credentialsSecretArn stack output")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--key", help="credential to print, e.g. giteaAdminPassword")
    what.add_argument("--list", action="store_true", help="print the credential names, not their values")
    return parser.parse_args(argv)


def read_secret(secret_arn: str) -> dict[str, str]:
    parts = secret_arn.split(":")
    if len(parts) < 7 or parts[2] != "secretsmanager":
        raise ValueError(f"not a Secrets Manager ARN: {secret_arn!r}")
    client = boto3.client("secretsmanager", region_name=parts[3])
    document = json.loads(client.get_secret_value(SecretId=secret_arn)["SecretString"])
    if not isinstance(document, dict):
        raise ValueError("the secret does not hold a JSON object")
    return {str(key): str(value) for key, value in document.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        credentials = read_secret(args.secret_arn)
    except (ValueError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        print(f"credentials: cannot read {args.secret_arn}: {error}", file=sys.stderr)
        return 1
    if args.list:
        print("\n".join(sorted(credentials)))
        return 0
    if args.key not in credentials:
        print(f"credentials: no key {args.key!r} in the secret; expected one of: {', '.join(sorted(credentials))}", file=sys.stderr)
        return 1
    print(credentials[args.key])
    return 0


if __name__ == "__main__":
    sys.exit(main())
