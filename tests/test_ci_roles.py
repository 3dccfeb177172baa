"""scripts/ci_roles.py against moto: the GitHub OIDC roles, their exact trust, and (with moto enforcing IAM) what each
role can and cannot read: a pull request's role never reaches prod's state or secrets."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from rehearsal.emulated import managed_policies_on_demand
from scripts import bootstrap_backend, ci_roles

REGION = "eu-west-1"
BUCKET = "acme-forgestack-state"
REPO = "acme/forgestack"
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@pytest.fixture
def managed_policies() -> Iterator[None]:
    """AWS's managed policies (PowerUserAccess, ReadOnlyAccess) from moto's own data, each loaded when first attached:
    moto's MOTO_IAM_LOAD_MANAGED_POLICIES loads all 1,300 into every account, two seconds a test."""
    with managed_policies_on_demand():
        yield


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials for moto, no endpoint override."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def account(managed_policies: None, moto_account: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert bootstrap_backend.main(["--bucket", BUCKET, "--region", REGION]) == 0
    capsys.readouterr()
    return moto_account


def roles() -> dict[str, dict[str, Any]]:
    iam = boto3.client("iam", region_name=REGION)
    found = {}
    for role in iam.list_roles()["Roles"]:
        name = role["RoleName"]
        found[name] = {
            "trust": role["AssumeRolePolicyDocument"],
            "policy": iam.get_role_policy(RoleName=name, PolicyName="forgestack")["PolicyDocument"],
            "managed": sorted(p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]),
        }
    return found


def test_first_run_creates_the_provider_and_a_role_per_purpose_and_stack(account: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ci_roles.main(["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in out] == ["AWS_PREVIEW_ROLE_ARN", "AWS_DEPLOY_DEV_ROLE_ARN", "AWS_DRIFT_DEV_ROLE_ARN",
                                                 "AWS_DEPLOY_STAGING_ROLE_ARN", "AWS_DRIFT_STAGING_ROLE_ARN",
                                                 "AWS_DEPLOY_PROD_ROLE_ARN", "AWS_DRIFT_PROD_ROLE_ARN"]
    created = roles()
    assert set(created) == {"forgestack-preview-dev", *(f"forgestack-{purpose}-{stack}" for purpose in ("deploy", "drift")
                                                         for stack in ("dev", "staging", "prod"))}
    assert created["forgestack-drift-prod"]["managed"] == [ci_roles.READ_ONLY]
    assert created["forgestack-preview-dev"]["managed"] == []
    assert created["forgestack-deploy-prod"]["managed"] == [ci_roles.POWER_USER]
    providers = boto3.client("iam", region_name=REGION).list_open_id_connect_providers()["OpenIDConnectProviderList"]
    assert [p["Arn"].rsplit("/", 1)[-1] for p in providers] == ["token.actions.githubusercontent.com"]


def test_second_run_changes_nothing(account: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ci_roles.main(["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION]) == 0
    before = roles()
    capsys.readouterr()
    assert ci_roles.main(["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION]) == 0
    assert roles() == before
    progress = capsys.readouterr().err.splitlines()
    assert len(progress) == 8 and all(line.endswith(": unchanged") for line in progress), progress


def test_a_drifted_trust_policy_is_put_back(account: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ci_roles.main(["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION]) == 0
    iam = boto3.client("iam", region_name=REGION)
    wide = roles()["forgestack-deploy-prod"]["trust"]
    wide["Statement"][0]["Condition"] = {"StringLike": {"token.actions.githubusercontent.com:sub": "repo:acme/*"}}
    iam.update_assume_role_policy(RoleName="forgestack-deploy-prod", PolicyDocument=json.dumps(wide))
    capsys.readouterr()
    assert ci_roles.main(["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION]) == 0
    assert "ci-roles: role forgestack-deploy-prod: trust policy" in capsys.readouterr().err
    assert "StringLike" not in json.dumps(roles()["forgestack-deploy-prod"]["trust"])


def _may_assume(trust: dict[str, Any], claims: dict[str, str]) -> bool:
    """IAM's evaluation of these trust policies: every StringEquals key must equal the token's claim."""
    for statement in trust["Statement"]:
        conditions = statement.get("Condition", {})
        assert set(conditions) == {"StringEquals"}, "only exact matches: no StringLike, no wildcard"
        if all(claims.get(key) in ([value] if isinstance(value, str) else value)
               for key, value in conditions["StringEquals"].items()):
            return True
    return False


@pytest.mark.parametrize(("sub", "assumable"), [
    ("repo:acme/forgestack:pull_request", {"forgestack-preview-dev"}),
    ("repo:acme/forgestack:environment:dev", {"forgestack-deploy-dev"}),
    ("repo:acme/forgestack:environment:staging", {"forgestack-deploy-staging"}),
    ("repo:acme/forgestack:environment:production", {"forgestack-deploy-prod"}),
    ("repo:acme/forgestack:environment:drift", {"forgestack-drift-dev", "forgestack-drift-staging", "forgestack-drift-prod"}),
    ("repo:acme/forgestack:ref:refs/heads/main", set()),  # a job must name its environment to deploy
    ("repo:acme/forgestack:environment:prod", set()),
    ("repo:evil/forgestack:environment:production", set()),  # a fork or another repository
    ("repo:acme/forgestack-fork:pull_request", set()),
])
def test_each_kind_of_run_can_assume_exactly_its_role(account: str, capsys: pytest.CaptureFixture[str], sub: str,
                                                      assumable: set[str]) -> None:
    assert ci_roles.main(["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION]) == 0
    claims = {"token.actions.githubusercontent.com:sub": sub, "token.actions.githubusercontent.com:aud": "sts.amazonaws.com"}
    assert {name for name, role in roles().items() if _may_assume(role["trust"], claims)} == assumable


@pytest.mark.parametrize(("args", "expected"), [
    (["--github-repo", "acme", "--bucket", BUCKET, "--region", REGION], "expected owner/name"),
    (["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION, "--stacks", "dev,dev"], "expected distinct stack names"),
])
def test_bad_usage_is_one_line(account: str, capsys: pytest.CaptureFixture[str], args: list[str], expected: str) -> None:
    assert ci_roles.main(args) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and expected in error


def test_review_stacks_get_one_role_in_an_account_of_their_own(managed_policies: None, moto_account: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert bootstrap_backend.main(["--bucket", BUCKET, "--region", REGION, "--stacks", "review"]) == 0
    capsys.readouterr()
    mixed = ["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION, "--stacks", "dev,review"]
    assert ci_roles.main(mixed) == 2 and "an AWS account of their own" in capsys.readouterr().err
    assert ci_roles.main(["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION, "--stacks", "review"]) == 0
    assert [line.split()[3] for line in capsys.readouterr().out.splitlines()] == ["AWS_DEPLOY_REVIEW_ROLE_ARN"]
    created = roles()
    assert set(created) == {"forgestack-deploy-review"}
    role = created["forgestack-deploy-review"]
    for sub, assumable in (("repo:acme/forgestack:environment:review", True), ("repo:acme/forgestack:environment:review-sweep", True),
                           ("repo:acme/forgestack:pull_request", False), ("repo:acme/forgestack:environment:dev", False)):
        claims = {"token.actions.githubusercontent.com:sub": sub, "token.actions.githubusercontent.com:aud": "sts.amazonaws.com"}
        assert _may_assume(role["trust"], claims) == assumable, sub
    statements = {statement["Sid"]: statement for statement in role["policy"]["Statement"]}
    assert f"arn:aws:s3:::{BUCKET}/.pulumi/stacks/forgestack/review-*.json*" in statements["WriteOwnState"]["Resource"]
    assert statements["PushEphemeralKey"]["Condition"] == {"StringLike": {"ec2:osuser": "ubuntu", "aws:ResourceTag/stack": "review-*"}}


def test_missing_backend_keys_are_a_clear_prerequisite(moto_account: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ci_roles.main(["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION]) == 2
    assert "run scripts/bootstrap_backend.py first" in capsys.readouterr().err


# ------------------------------------------------------------ what each role can do, with moto enforcing IAM


STATE = {stack: f".pulumi/stacks/forgestack/{stack}.json" for stack in ("dev", "staging", "prod")}
COMMIT = "0123456789abcdef0123456789abcdef01234567"
RECORD = {stack: f"promotions/{stack}/{COMMIT}.json" for stack in ("dev", "staging", "prod")}
LOCK = ".pulumi/locks/organization/forgestack/{stack}/0b5e7a3c.json"  # pkg/backend/diy stackLockDir


def in_enforced_account(checks: Callable[[dict[str, Any]], None]) -> None:
    """An emulated account where every request is checked against IAM: an admin user sets everything up (the first
    three calls, before enforcement starts, create it), then each role is assumed and handed to the checks."""
    world: dict[str, Any] = {}

    def inside() -> None:
        iam = boto3.client("iam", region_name=REGION)
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(ADMIN_POLICY))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        admin = boto3.Session(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], region_name=REGION)
        kms, s3 = admin.client("kms"), admin.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for stack in STATE:
            s3.put_object(Bucket=BUCKET, Key=STATE[stack], Body=f'{{"stack": "{stack}"}}'.encode())
            s3.put_object(Bucket=BUCKET, Key=RECORD[stack], Body=b'{"smoke": "passed"}')
        keys = {}
        for alias in ("alias/forgestack-pulumi", *(f"alias/forgestack-pulumi-{stack}" for stack in STATE)):
            keys[alias] = kms.create_key()["KeyMetadata"]["Arn"]
            kms.create_alias(AliasName=alias, TargetKeyId=keys[alias])
        ci_roles.run(REPO, BUCKET, REGION, "alias/forgestack-pulumi", list(STATE), admin)
        admin_arn = admin.client("iam").get_user(UserName="admin")["User"]["Arn"]
        for name in ("forgestack-preview-dev", *(f"forgestack-{purpose}-{stack}" for purpose in ("deploy", "drift") for stack in STATE)):
            # moto 5 treats a Deny whose condition does not match as a deny (the README notes the same for bucket
            # policies): the conditional denies (other stacks' tagged resources) are checked on the document below.
            policy = json.loads(json.dumps(admin.client("iam").get_role_policy(RoleName=name, PolicyName="forgestack")["PolicyDocument"]))
            policy["Statement"] = [s for s in policy["Statement"] if not (s["Effect"] == "Deny" and "Condition" in s)]
            admin.client("iam").put_role_policy(RoleName=name, PolicyName="forgestack", PolicyDocument=json.dumps(policy))
            # moto cannot take GitHub's unsigned web-identity call with enforcement on, so the admin stands in for the
            # workflow (the trust policies are checked above); the permissions under test are the role's own.
            admin.client("iam").update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"AWS": admin_arn}, "Action": "sts:AssumeRole"}]}))
            arn = admin.client("iam").get_role(RoleName=name)["Role"]["Arn"]
            credentials = admin.client("sts").assume_role(RoleArn=arn, RoleSessionName="forgestack-123")["Credentials"]
            world[name] = boto3.Session(aws_access_key_id=credentials["AccessKeyId"], region_name=REGION,
                                        aws_secret_access_key=credentials["SecretAccessKey"],
                                        aws_session_token=credentials["SessionToken"])
        checks(world)

    set_initial_no_auth_action_count(3)(mock_aws(inside))()


def allowed(call: Any) -> bool:
    try:
        call()
    except botocore.exceptions.ClientError as error:
        assert error.response["Error"]["Code"] in ("AccessDenied", "403", "AccessDeniedException"), error
        return False
    return True


def can(session: Any) -> dict[str, bool]:
    s3 = session.client("s3")
    return {
        "read dev state": allowed(lambda: s3.get_object(Bucket=BUCKET, Key=STATE["dev"])),
        "read prod state": allowed(lambda: s3.get_object(Bucket=BUCKET, Key=STATE["prod"])),
        "write dev state": allowed(lambda: s3.put_object(Bucket=BUCKET, Key=STATE["dev"], Body=b"{}")),
        "write prod state": allowed(lambda: s3.put_object(Bucket=BUCKET, Key=STATE["prod"], Body=b"{}")),
        "lock dev": allowed(lambda: s3.put_object(Bucket=BUCKET, Key=LOCK.format(stack="dev"), Body=b"{}")),
    }


def test_the_pull_request_role_reaches_dev_only_and_writes_nothing_but_its_lock(managed_policies: None, aws_env: None) -> None:
    def checks(world: dict[str, Any]) -> None:
        session = world["forgestack-preview-dev"]
        assert can(session) == {"read dev state": True, "read prod state": False, "write dev state": False,
                                "write prod state": False, "lock dev": True}
    in_enforced_account(checks)


def test_the_drift_roles_read_their_own_stack_only_and_write_nothing_but_their_lock(managed_policies: None, aws_env: None) -> None:
    """ReadOnlyAccess would read every state file; the fences keep each drift role on its own stack."""
    def checks(world: dict[str, Any]) -> None:
        assert can(world["forgestack-drift-dev"]) == {"read dev state": True, "read prod state": False, "write dev state": False,
                                                      "write prod state": False, "lock dev": True}
        prod = can(world["forgestack-drift-prod"])
        assert prod["read prod state"] and not prod["read dev state"] and not prod["write prod state"]
        s3 = world["forgestack-drift-staging"].client("s3")
        assert not allowed(lambda: s3.put_object(Bucket=BUCKET, Key=RECORD["staging"], Body=b"{}"))
    in_enforced_account(checks)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_deploy_role_reaches_its_own_stack_only(managed_policies: None, aws_env: None, stack: str) -> None:
    other = "prod" if stack == "dev" else "dev"

    def checks(world: dict[str, Any]) -> None:
        session = world[f"forgestack-deploy-{stack}"]
        s3 = session.client("s3")
        assert allowed(lambda: s3.get_object(Bucket=BUCKET, Key=STATE[stack]))
        assert allowed(lambda: s3.put_object(Bucket=BUCKET, Key=STATE[stack], Body=b"{}"))
        # PowerUserAccess would allow it; the explicit deny wins.
        assert not allowed(lambda: s3.get_object(Bucket=BUCKET, Key=STATE[other]))
        assert not allowed(lambda: s3.put_object(Bucket=BUCKET, Key=STATE[other], Body=b"{}"))
    in_enforced_account(checks)


def test_each_deploy_role_records_only_its_own_promotions_and_reads_its_predecessors(managed_policies: None, aws_env: None) -> None:
    """scripts/promotion.py's records: staging's deploy job writes staging's, prod's reads them and cannot forge them."""
    def checks(world: dict[str, Any]) -> None:
        for stack in ("dev", "staging", "prod"):
            s3 = world[f"forgestack-deploy-{stack}"].client("s3")
            writable = {other for other in RECORD
                        if allowed(lambda c=s3, o=other: c.put_object(Bucket=BUCKET, Key=RECORD[o], Body=b"{}"))}
            assert writable == {stack}, stack
        prod = world["forgestack-deploy-prod"].client("s3")
        assert allowed(lambda: prod.get_object(Bucket=BUCKET, Key=RECORD["staging"]))
        assert not allowed(lambda: prod.delete_object(Bucket=BUCKET, Key=RECORD["staging"]))
        preview = world["forgestack-preview-dev"].client("s3")
        assert not any(allowed(lambda o=other: preview.put_object(Bucket=BUCKET, Key=RECORD[o], Body=b"{}")) for other in RECORD)
    in_enforced_account(checks)


def _document_allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    """IAM's evaluation for unconditional statements: an explicit deny wins, else some allow must match."""
    def matches(statement: dict[str, Any]) -> bool:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        return any(fnmatch.fnmatchcase(action, a) for a in actions) and any(fnmatch.fnmatchcase(resource, r) for r in resources)
    plain = [s for s in policy["Statement"] if "Condition" not in s]
    return not any(matches(s) for s in plain if s["Effect"] == "Deny") and any(matches(s) for s in plain if s["Effect"] == "Allow")


def test_deploy_roles_manage_only_their_own_stacks_mail_user(account: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The stack's SMTP sender (components/mail.py) is IAM, which PowerUserAccess leaves out. moto authorizes IAM calls
    # against "*" only (no resource), so the user and group names are checked on the document.
    assert ci_roles.main(["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION]) == 0
    account_id = boto3.client("sts", region_name=REGION).get_caller_identity()["Account"]
    for stack, other in (("dev", "prod"), ("prod", "dev")):
        policy = roles()[f"forgestack-deploy-{stack}"]["policy"]
        for action in ("iam:CreateUser", "iam:CreateAccessKey", "iam:DeleteUser"):
            assert _document_allows(policy, action, f"arn:aws:iam::{account_id}:user/forgestack-{stack}-smtp")
            assert not _document_allows(policy, action, f"arn:aws:iam::{account_id}:user/forgestack-{other}-smtp")
            assert not _document_allows(policy, action, f"arn:aws:iam::{account_id}:user/admin")
        for action in ("iam:CreateGroup", "iam:PutGroupPolicy", "iam:AddUserToGroup"):
            assert _document_allows(policy, action, f"arn:aws:iam::{account_id}:group/forgestack-{stack}-smtp-senders")
            assert not _document_allows(policy, action, f"arn:aws:iam::{account_id}:group/forgestack-{other}-smtp-senders")
        assert not _document_allows(policy, "iam:PutUserPolicy", f"arn:aws:iam::{account_id}:user/forgestack-{stack}-smtp")
        (passing,) = [s for s in policy["Statement"] if s["Sid"] == "PassProgramRoles"]
        assert set(passing["Condition"]["StringEquals"]["iam:PassedToService"]) == {
            "ec2.amazonaws.com", "dlm.amazonaws.com", "vpc-flow-logs.amazonaws.com", "s3.amazonaws.com"}  # the program's services
        assert not _document_allows(policy, "iam:AttachGroupPolicy", f"arn:aws:iam::{account_id}:group/forgestack-{stack}-smtp-senders")


# moto checks KMS permissions only against "*", not per key, so which key a role may use is checked on the documents.


def _kms_grants(policy: dict[str, Any]) -> dict[str, set[str]]:
    grants: dict[str, set[str]] = {"Allow": set(), "Deny": set()}
    for statement in policy["Statement"]:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        if any(action.startswith("kms:") for action in actions):
            grants[statement["Effect"]] |= {r for r in resources if ":key/" in r}
    return grants


def test_each_role_may_use_only_its_own_stacks_secrets_key(account: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ci_roles.main(["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION]) == 0
    kms = boto3.client("kms", region_name=REGION)
    key = {alias: kms.describe_key(KeyId=f"alias/forgestack-pulumi{alias}")["KeyMetadata"]["Arn"]
           for alias in ("", "-dev", "-staging", "-prod")}
    policies = {name: role["policy"] for name, role in roles().items()}
    assert _kms_grants(policies["forgestack-preview-dev"]) == {"Allow": {key[""], key["-dev"]}, "Deny": set()}
    assert _kms_grants(policies["forgestack-deploy-dev"]) == {"Allow": {key[""], key["-dev"]}, "Deny": {key["-staging"], key["-prod"]}}
    assert _kms_grants(policies["forgestack-deploy-staging"]) == {"Allow": {key[""], key["-staging"]},
                                                                  "Deny": {key["-dev"], key["-prod"]}}
    assert _kms_grants(policies["forgestack-deploy-prod"]) == {"Allow": {key[""], key["-prod"]}, "Deny": {key["-dev"], key["-staging"]}}
    # The state bucket's own key only through S3, never for decrypting anything else.
    bucket_key = [s for s in policies["forgestack-preview-dev"]["Statement"] if s["Resource"] == key[""]]
    assert [s["Condition"] for s in bucket_key] == [{"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}]


def test_deploy_roles_are_fenced_off_the_other_stacks_tagged_resources(account: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ci_roles.main(["--github-repo", REPO, "--bucket", BUCKET, "--region", REGION]) == 0
    stacks = ("dev", "prod", "staging")
    for stack in stacks:
        policy = roles()[f"forgestack-deploy-{stack}"]["policy"]
        fence = [s for s in policy["Statement"] if s["Effect"] == "Deny" and s["Action"] == "*"]
        assert fence == [{"Sid": f"NoResourcesOf{other.capitalize()}", "Effect": "Deny", "Action": "*", "Resource": "*",
                          "Condition": {"StringEquals": {"aws:ResourceTag/stack": other}}}
                         for other in sorted(stacks) if other != stack]
        host_access = {s["Sid"]: s for s in policy["Statement"] if s["Sid"] in ("PushEphemeralKey", "SshThroughSessionManager")}
        assert host_access["PushEphemeralKey"]["Condition"] == {"StringEquals": {"ec2:osuser": "ubuntu", "aws:ResourceTag/stack": stack}}
        assert "arn:aws:ssm:*::document/AWS-StartSSHSession" in host_access["SshThroughSessionManager"]["Resource"]
