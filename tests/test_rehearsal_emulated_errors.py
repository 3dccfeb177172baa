"""The emulated rehearsal refuses what it cannot emulate and what the account lacks (own module: each test
needs its own fresh account, not the shared one of test_rehearsal_emulated.py)."""

from __future__ import annotations

import pulumi
import pytest

from rehearsal.emulated import MotoMocks, UnemulatedTypeError, emulated_account, rehearse, stack_region
from rehearsal.engine import run_program, stack_config


def test_an_aws_type_without_emulation_stops_the_rehearsal() -> None:
    config = stack_config("dev")
    with emulated_account(stack_region(config), config["forgestack:hostedZone"]) as account:
        mocks = MotoMocks(account)
        del mocks.handlers["aws:ec2/eip:Eip"]
        with pytest.raises(UnemulatedTypeError, match=r"aws:ec2/eip:Eip \(host-eip\) has no emulation"):
            run_program("dev", config, mocks)


def test_a_missing_hosted_zone_is_reported() -> None:
    config = stack_config("dev")
    missing_zone = pytest.raises(pulumi.RunError, match=r"no hosted zone forge\.example\.com")
    with emulated_account(stack_region(config), None) as account, missing_zone:
        rehearse("dev", config, account)


def test_aws_managed_policies_are_attachable_exactly_when_aws_has_them() -> None:
    """Loaded one by one on first use (managed_policies_on_demand): an existing one attaches, under its own path too; a
    name AWS does not have, or a real name under the wrong path, is refused as it would be with all of them loaded."""
    import botocore.exceptions

    with emulated_account("eu-west-1", None) as account:
        iam = account.client("iam")
        iam.create_role(RoleName="probe", AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}')
        for arn in ("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
                    "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"):  # fmt: skip
            iam.attach_role_policy(RoleName="probe", PolicyArn=arn)
        attached = {p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName="probe")["AttachedPolicies"]}
        assert len(attached) == 2
        assert iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")["Policy"]["PolicyName"] == "ReadOnlyAccess"
        for arn in ("arn:aws:iam::aws:policy/NoSuchPolicyAnywhere", "arn:aws:iam::aws:policy/AmazonECSTaskExecutionRolePolicy"):
            with pytest.raises(botocore.exceptions.ClientError, match="NoSuchEntity"):
                iam.attach_role_policy(RoleName="probe", PolicyArn=arn)
