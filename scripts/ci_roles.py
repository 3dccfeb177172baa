#!/usr/bin/env python3
"""Create the GitHub Actions identities of forgestack once per AWS account: the OIDC provider and one role
per workflow purpose, each trusted by exactly one kind of run of one repository.

    python scripts/ci_roles.py --github-repo acme/forgestack --bucket acme-forgestack-state --region eu-west-1

Run it after scripts/bootstrap_backend.py (it needs the state bucket and the per-stack secrets keys).

  forgestack-preview-dev   trusted by pull requests (sub repo:R:pull_request): reads dev's state, decrypts
                           dev's secrets, looks up AMIs, zones and hosted zones. Nothing of prod, ever.
  forgestack-drift-<s>     trusted only by jobs in the GitHub environment `drift` (the nightly drift check): reads
                           everything of stack s that a refresh reads (ReadOnlyAccess, its state, its secrets key,
                           its credentials secret) and reaches its host like a deploy (the Docker resources refresh
                           through it); writes nothing but its lock. Denied the other stacks' state and keys.
  forgestack-deploy-<s>    trusted only by jobs in the GitHub environment of stack s (sub
                           repo:R:environment:dev or repo:R:environment:production): writes s's state,
                           its secrets key, manages its resources (PowerUserAccess plus the IAM the
                           program needs), reaches its host through EC2 Instance Connect and Session
                           Manager. Explicit denies keep it off every other stack's state, secrets key
                           and tagged resources.

A pull request's job therefore cannot obtain prod credentials: no role it can assume may read prod's
state or decrypt prod's secrets, whatever the workflow files on its branch say. Protect the
`production` environment (deployment branches: main; required reviewers) in the repository settings.

Idempotent: a second run reports "unchanged". It never deletes anything. Prints the repository variables
the workflows read. Exit codes: 0 done, 1 AWS refused a step, 2 bad usage or a missing prerequisite.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

# Run as a file (python scripts/ci_roles.py) from the repository.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rehearsal.engine import REVIEW_STACK_PREFIX
from scripts.bootstrap_backend import DEFAULT_KEY_ALIAS, DEFAULT_STACKS, UsageError, error_code, parse_stacks, secrets_key_alias
from scripts.promotion import RECORD_PREFIX

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
OIDC_AUDIENCE = "sts.amazonaws.com"
# IAM no longer checks this for GitHub's provider (it trusts its own CA list), but the API still wants one.
GITHUB_OIDC_THUMBPRINT = "6938fd4d98bab03faadb97b34396831e3780aea1"
PROJECT = "forgestack"
ENVIRONMENTS = {"dev": "dev", "staging": "staging", "prod": "production"}  # the GitHub environment that may deploy each stack
POWER_USER = "arn:aws:iam::aws:policy/PowerUserAccess"
READ_ONLY = "arn:aws:iam::aws:policy/ReadOnlyAccess"
DRIFT_ENVIRONMENT = "drift"  # the GitHub environment of the nightly drift check (deployment branch main)
# Review stacks (scripts/review_stack.py) are named review-<pr>; one role and one secrets key ("review") serve them all,
# in an AWS account of their own. Deploys run in `review` (required reviewers), the sweeper in `review-sweep` (main).
REVIEW = "review"
REVIEW_STACKS = f"{REVIEW_STACK_PREFIX}*"
REVIEW_ENVIRONMENTS = ("review", "review-sweep")
HOST_USER = "ubuntu"  # the host's login user (components/host.py), for EC2 Instance Connect
SESSION_PREFIX = "forgestack-"  # role-session-name of the workflows (pulumi-setup action)
MAX_SESSION_SECONDS = 3 * 3600  # the longest deploy job (90 min) with room
_REPO = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")


def say(step: str, outcome: str) -> None:
    print(f"ci-roles: {step}: {outcome}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- policies (pure)


def role_name(purpose: str, stack: str) -> str:
    return f"{PROJECT}-{purpose}-{stack}"


def subject(repo: str, purpose: str, stack: str) -> str:
    """The OIDC `sub` claim a run must present: pull requests for previews, the stack's environment for deploys."""
    if purpose == "preview":
        return f"repo:{repo}:pull_request"
    if purpose == "drift":
        return f"repo:{repo}:environment:{DRIFT_ENVIRONMENT}"
    return f"repo:{repo}:environment:{ENVIRONMENTS.get(stack, stack)}"


def trust_policy(provider_arn: str, repo: str, purpose: str, stack: str) -> dict[str, Any]:
    # The review stacks' role: the reviewed deploys of pull requests and the sweeper on main, two exact subjects.
    subjects: str | list[str] = subject(repo, purpose, stack)
    if stack == REVIEW_STACKS:
        subjects = [f"repo:{repo}:environment:{environment}" for environment in REVIEW_ENVIRONMENTS]
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Federated": provider_arn}, "Action": "sts:AssumeRoleWithWebIdentity",
        # StringEquals, never StringLike: exact subjects, no wildcard a fork or branch could match.
        "Condition": {"StringEquals": {f"{GITHUB_OIDC_HOST}:aud": OIDC_AUDIENCE, f"{GITHUB_OIDC_HOST}:sub": subjects}},
    }]}


# The DIY backend's project-scoped layout: .pulumi/{stacks,history,backups}/<project>/<stack>..., and locks under the
# stack's fully qualified name, organization/<project>/<stack> (pkg/backend/diy: stackLockDir).
LOCK_SCOPE = f"organization/{PROJECT}"


def state_paths(bucket: str, stack: str) -> list[str]:
    """The DIY backend's objects of one stack, and (last) its locks."""
    root = f"arn:aws:s3:::{bucket}/.pulumi"
    return [f"{root}/stacks/{PROJECT}/{stack}.json*", f"{root}/history/{PROJECT}/{stack}/*",
            f"{root}/backups/{PROJECT}/{stack}/*", f"{root}/locks/{LOCK_SCOPE}/{stack}/*"]


def state_statements(bucket: str, bucket_key_arn: str, stack: str, write: bool) -> list[dict[str, Any]]:
    prefixes = [f".pulumi/{kind}/{PROJECT}/{stack}{suffix}" for kind, suffix in (("stacks", ".json*"), ("history", "/*"),
                                                                                  ("backups", "/*"))]
    return [
        {"Sid": "ListOwnState", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": [".pulumi/", ".pulumi/meta.yaml", *prefixes, f".pulumi/stacks/{PROJECT}/",
                                                    f".pulumi/locks/{LOCK_SCOPE}/{stack}/*"]}}},
        {"Sid": "ReadBackendMeta", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": [f"arn:aws:s3:::{bucket}/.pulumi/meta.yaml", f"arn:aws:s3:::{bucket}/.pulumi/Pulumi.yaml"]},
        {"Sid": "ReadOwnState", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"],
         "Resource": state_paths(bucket, stack)},
        # Every run takes the stack's lock; only deploys write the state itself.
        {"Sid": "WriteOwnState" if write else "TakeOwnLock", "Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"],
         "Resource": state_paths(bucket, stack) if write else state_paths(bucket, stack)[-1:]},
        # The bucket's default encryption key, only through S3 (the per-stack secrets keys are separate).
        {"Sid": "StateBucketKeyThroughS3", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
         "Resource": bucket_key_arn, "Condition": {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}},
    ]


def preview_policy(bucket: str, bucket_key_arn: str, stack: str, secrets_key_arn: str) -> dict[str, Any]:
    """Reads one stack's state and secrets and does the program's lookups. `pulumi preview` neither refreshes nor runs
    commands, and the Docker provider's daemon check is off, so nothing reaches the host."""
    return {"Version": "2012-10-17", "Statement": [
        *state_statements(bucket, bucket_key_arn, stack, write=False),
        {"Sid": "DecryptOwnSecrets", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": secrets_key_arn},
        {"Sid": "ProgramLookups", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:DescribeImages", "ec2:DescribeAvailabilityZones", "route53:ListHostedZones",
                    "route53:ListHostedZonesByName", "route53:GetHostedZone"]},
    ]}


def deploy_policy(bucket: str, bucket_key_arn: str, stack: str, secrets_key_arn: str, account: str,
                  other_stacks: dict[str, str]) -> dict[str, Any]:
    """What PowerUserAccess leaves out (IAM for the program's roles, host access), and fences around other stacks.
    other_stacks: stack -> its secrets key ARN."""
    statements: list[dict[str, Any]] = [
        *state_statements(bucket, bucket_key_arn, stack, write=True),
        {"Sid": "UseOwnSecretsKey", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
         "Resource": secrets_key_arn},
        # The program's roles (host, snapshots, flow logs, replication): created, given inline policies, passed to their services.
        {"Sid": "ProgramRoles", "Effect": "Allow", "Resource": [f"arn:aws:iam::{account}:role/*",
                                                                 f"arn:aws:iam::{account}:instance-profile/*"],
         "Action": ["iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:TagRole", "iam:UntagRole",
                    "iam:UpdateAssumeRolePolicy", "iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy",
                    "iam:ListRolePolicies", "iam:ListAttachedRolePolicies", "iam:AttachRolePolicy", "iam:DetachRolePolicy",
                    "iam:ListInstanceProfilesForRole", "iam:CreateInstanceProfile", "iam:DeleteInstanceProfile",
                    "iam:GetInstanceProfile", "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
                    "iam:TagInstanceProfile"]},
        # The stack's SES SMTP user and its group (components/mail.py): named forgestack-<stack>-*.
        {"Sid": "ProgramMailUser", "Effect": "Allow",
         "Resource": [f"arn:aws:iam::{account}:user/{PROJECT}-{stack}-*", f"arn:aws:iam::{account}:group/{PROJECT}-{stack}-*"],
         "Action": ["iam:CreateUser", "iam:DeleteUser", "iam:GetUser", "iam:TagUser", "iam:UntagUser", "iam:ListGroupsForUser",
                    "iam:ListUserPolicies", "iam:ListAttachedUserPolicies", "iam:CreateAccessKey", "iam:DeleteAccessKey",
                    "iam:ListAccessKeys", "iam:UpdateAccessKey", "iam:CreateGroup", "iam:DeleteGroup", "iam:GetGroup",
                    "iam:AddUserToGroup", "iam:RemoveUserFromGroup", "iam:PutGroupPolicy", "iam:GetGroupPolicy",
                    "iam:DeleteGroupPolicy", "iam:ListGroupPolicies", "iam:ListAttachedGroupPolicies"]},
        {"Sid": "PassProgramRoles", "Effect": "Allow", "Action": "iam:PassRole", "Resource": f"arn:aws:iam::{account}:role/*",
         "Condition": {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "dlm.amazonaws.com",
                                                                "vpc-flow-logs.amazonaws.com",
                                                                "s3.amazonaws.com"]}}},  # the backups' replication role
        # Only the one managed policy the program attaches (Data Lifecycle Manager's service role).
        {"Sid": "NoOtherManagedPolicy", "Effect": "Deny", "Action": ["iam:AttachRolePolicy"], "Resource": "*",
         "Condition": {"ArnNotEquals": {"iam:PolicyARN": "arn:aws:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole"}}},
        *host_access_statements(stack, account),
    ]
    return {"Version": "2012-10-17", "Statement": statements + fence_statements(bucket, other_stacks)}


def host_access_statements(stack: str, account: str) -> list[dict[str, Any]]:
    """The path to the stack's own host: a 60-second key through EC2 Instance Connect, ssh through Session Manager."""
    instance = f"arn:aws:ec2:*:{account}:instance/*"
    like = "*" in stack  # review-*: every review stack's host; otherwise the one name exactly
    return [
        {"Sid": "PushEphemeralKey", "Effect": "Allow", "Action": "ec2-instance-connect:SendSSHPublicKey", "Resource": instance,
         "Condition": {"StringLike" if like else "StringEquals": {"ec2:osuser": HOST_USER, "aws:ResourceTag/stack": stack}}},
        {"Sid": "SshThroughSessionManager", "Effect": "Allow", "Action": "ssm:StartSession",
         "Resource": [instance, "arn:aws:ssm:*::document/AWS-StartSSHSession"],
         "Condition": {"StringLikeIfExists" if like else "StringEqualsIfExists": {"aws:ResourceTag/stack": stack}}},
        {"Sid": "EndOwnSessions", "Effect": "Allow", "Action": "ssm:TerminateSession",
         "Resource": f"arn:aws:ssm:*:{account}:session/{SESSION_PREFIX}*"},
    ]


def fence_statements(bucket: str, other_stacks: dict[str, str]) -> list[dict[str, Any]]:
    """Explicit denies around the other stacks (managed policies would otherwise reach them)."""
    statements: list[dict[str, Any]] = []
    for other, other_key in sorted(other_stacks.items()):
        statements += [
            {"Sid": f"NoStateOf{other.capitalize()}", "Effect": "Deny", "Action": "s3:*", "Resource": state_paths(bucket, other)},
            {"Sid": f"NoSecretsOf{other.capitalize()}", "Effect": "Deny", "Action": "kms:*", "Resource": other_key},
            # Another stack's promotion records (scripts/promotion.py) are read, never written: only its own deploy
            # job says what it deployed and smoke-tested.
            {"Sid": f"NoPromotionRecordsOf{other.capitalize()}", "Effect": "Deny",
             "Action": ["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"],
             "Resource": f"arn:aws:s3:::{bucket}/{RECORD_PREFIX}/{other}/*"},
            {"Sid": f"NoResourcesOf{other.capitalize()}", "Effect": "Deny", "Action": "*", "Resource": "*",
             "Condition": {"StringEquals": {"aws:ResourceTag/stack": other}}},
        ]
    return statements


def drift_policy(bucket: str, bucket_key_arn: str, stack: str, secrets_key_arn: str, account: str,
                 other_stacks: dict[str, str]) -> dict[str, Any]:
    """What `pulumi preview --refresh` needs beyond ReadOnlyAccess: the stack's state and secrets (read, and its lock),
    the values of its own secrets (ReadOnlyAccess leaves GetSecretValue out), its host (the Docker resources refresh
    over SSH), and the fences around the other stacks."""
    return {"Version": "2012-10-17", "Statement": [
        *state_statements(bucket, bucket_key_arn, stack, write=False),
        {"Sid": "DecryptOwnSecrets", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": secrets_key_arn},
        {"Sid": "ReadOwnCredentials", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
         "Resource": f"arn:aws:secretsmanager:*:{account}:secret:*",
         "Condition": {"StringEquals": {"aws:ResourceTag/stack": stack}}},
        {"Sid": "DecryptOwnCredentials", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": f"arn:aws:kms:*:{account}:key/*",
         "Condition": {"StringEquals": {"aws:ResourceTag/stack": stack}}},
        *host_access_statements(stack, account),
        *fence_statements(bucket, other_stacks),
    ]}


# ---------------------------------------------------------------- AWS (idempotent)


def ensure_oidc_provider(iam: Any, account: str) -> str:
    arn = f"arn:aws:iam::{account}:oidc-provider/{GITHUB_OIDC_HOST}"
    existing = [p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]]
    if arn in existing:
        clients = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)["ClientIDList"]
        if OIDC_AUDIENCE in clients:
            say("GitHub OIDC provider", "unchanged")
        else:
            iam.add_client_id_to_open_id_connect_provider(OpenIDConnectProviderArn=arn, ClientID=OIDC_AUDIENCE)
            say("GitHub OIDC provider", f"audience {OIDC_AUDIENCE} added")
        return arn
    iam.create_open_id_connect_provider(Url=GITHUB_OIDC_URL, ClientIDList=[OIDC_AUDIENCE], ThumbprintList=[GITHUB_OIDC_THUMBPRINT])
    say("GitHub OIDC provider", "created")
    return arn


def _document(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def ensure_role(iam: Any, name: str, trust: dict[str, Any], policy: dict[str, Any], managed: list[str]) -> str:
    changed: list[str] = []
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except botocore.exceptions.ClientError as error:
        if error_code(error) != "NoSuchEntity":
            raise
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust), MaxSessionDuration=MAX_SESSION_SECONDS,
                               Description=f"{PROJECT} GitHub Actions: {name}")["Role"]
        changed.append("created")
    else:
        if _document(role["AssumeRolePolicyDocument"]) != trust:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
            changed.append("trust policy")
    try:
        current = _document(iam.get_role_policy(RoleName=name, PolicyName=PROJECT)["PolicyDocument"])
    except botocore.exceptions.ClientError as error:
        if error_code(error) != "NoSuchEntity":
            raise
        current = None
    if current != policy:
        iam.put_role_policy(RoleName=name, PolicyName=PROJECT, PolicyDocument=json.dumps(policy))
        changed.append("permissions")
    attached = {p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]}
    for arn in managed:
        if arn not in attached:
            iam.attach_role_policy(RoleName=name, PolicyArn=arn)
            changed.append(arn.rsplit("/", 1)[-1])
    say(f"role {name}", ", ".join(changed) if changed else "unchanged")
    return str(role["Arn"])


def key_arn(kms: Any, alias: str) -> str:
    try:
        return str(kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"])
    except botocore.exceptions.ClientError as error:
        if error_code(error) == "NotFoundException":
            raise UsageError(f"KMS key {alias} does not exist: run scripts/bootstrap_backend.py first") from error
        raise


def run(repo: str, bucket: str, region: str, key_alias: str, stacks: list[str], session: Any) -> dict[str, str]:
    """Create or update everything; returns the repository variables to set."""
    account = str(session.client("sts").get_caller_identity()["Account"])
    kms, iam = session.client("kms", region_name=region), session.client("iam")
    if REVIEW in stacks:
        if stacks != [REVIEW]:
            raise UsageError("review stacks run pull requests' code with the right to create IAM roles: give them an AWS "
                             "account of their own and run this there with --stacks review alone")
        bucket_key = key_arn(kms, key_alias)
        provider = ensure_oidc_provider(iam, account)
        role = ensure_role(iam, role_name("deploy", REVIEW), trust_policy(provider, repo, "deploy", REVIEW_STACKS),
                           deploy_policy(bucket, bucket_key, REVIEW_STACKS, key_arn(kms, secrets_key_alias(key_alias, REVIEW)),
                                         account, {}), managed=[POWER_USER])
        return {"AWS_DEPLOY_REVIEW_ROLE_ARN": role}
    bucket_key = key_arn(kms, key_alias)
    secrets_keys = {stack: key_arn(kms, secrets_key_alias(key_alias, stack)) for stack in stacks}
    provider = ensure_oidc_provider(iam, account)
    variables = {}
    preview_stack = stacks[0]
    variables["AWS_PREVIEW_ROLE_ARN"] = ensure_role(
        iam, role_name("preview", preview_stack), trust_policy(provider, repo, "preview", preview_stack),
        preview_policy(bucket, bucket_key, preview_stack, secrets_keys[preview_stack]), managed=[])
    for stack in stacks:
        others = {other: arn for other, arn in secrets_keys.items() if other != stack}
        variables[f"AWS_DEPLOY_{stack.upper()}_ROLE_ARN"] = ensure_role(
            iam, role_name("deploy", stack), trust_policy(provider, repo, "deploy", stack),
            deploy_policy(bucket, bucket_key, stack, secrets_keys[stack], account, others), managed=[POWER_USER])
        variables[f"AWS_DRIFT_{stack.upper()}_ROLE_ARN"] = ensure_role(
            iam, role_name("drift", stack), trust_policy(provider, repo, "drift", stack),
            drift_policy(bucket, bucket_key, stack, secrets_keys[stack], account, others), managed=[READ_ONLY])
    return variables


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     epilog="Exit codes: 0 done, 1 AWS refused a step, 2 bad usage or missing prerequisite.")
    parser.add_argument("--github-repo", required=True, help="owner/name of the repository whose workflows deploy")
    parser.add_argument("--bucket", required=True, help="the state bucket (scripts/bootstrap_backend.py)")
    parser.add_argument("--region", required=True, help="AWS region of the bucket and keys")
    parser.add_argument("--key-alias", default=DEFAULT_KEY_ALIAS, help=f"the backend's key alias (default {DEFAULT_KEY_ALIAS})")
    parser.add_argument("--stacks", default=",".join(DEFAULT_STACKS),
                        help="comma-separated stacks; the first is the one pull requests preview (default dev,prod)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not _REPO.fullmatch(args.github_repo):
        print(f"ci-roles: --github-repo {args.github_repo!r}: expected owner/name", file=sys.stderr)
        return 2
    try:
        stacks = parse_stacks(args.stacks)
        variables = run(args.github_repo, args.bucket, args.region, args.key_alias, stacks, boto3.Session(region_name=args.region))
    except UsageError as error:
        print(f"ci-roles: {error}", file=sys.stderr)
        return 2
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        print(f"ci-roles: AWS refused: {error}", file=sys.stderr)
        return 1
    for name, value in variables.items():
        print(f"gh variable set {name} --body '{value}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
