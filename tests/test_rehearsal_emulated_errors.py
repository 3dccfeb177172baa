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
