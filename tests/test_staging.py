"""The staging stack: prod's shape behind an allow-list (allowedCidrs) with certificates through ACME DNS-01.

Rehearsed against the emulated account (moto) for what AWS would hold, under mocks for what the containers get, and
the certbot loop run by sh with a stand-in certbot for the challenge it asks for."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.network import health_checkers_prefix_list
from components.services import images
from components.settings import ConfigError, parse
from components.templates import read
from rehearsal.emulated import EmulatedAccount, emulated_account, rehearse, stack_region
from rehearsal.engine import ForgeMocks, ProgramRun, run_program, stack_config
from tests.shims import install_shim

ALLOWED = "198.51.100.0/24"  # Pulumi.staging.yaml's allowedCidrs


@pytest.fixture(scope="module")
def rehearsed_staging() -> Iterator[tuple[ProgramRun, EmulatedAccount]]:
    config = stack_config("staging")
    with emulated_account(stack_region(config), config["forgestack:hostedZone"]) as account:
        yield rehearse("staging", config, account), account


def _groups(run: ProgramRun, account: EmulatedAccount) -> dict[str, list[tuple[int, str]]]:
    """Security group description -> its inbound (port, source) pairs, as the emulated EC2 holds them."""
    ec2 = account.client("ec2")
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [run.outputs["vpcId"]]}])["SecurityGroups"]
    names = {p["PrefixListId"]: p["PrefixListName"] for p in ec2.describe_managed_prefix_lists()["PrefixLists"]}
    return {
        group["Description"]: sorted(
            [(p["FromPort"], r["CidrIp"]) for p in group["IpPermissions"] for r in p["IpRanges"]]
            + [(p["FromPort"], names[r["PrefixListId"]]) for p in group["IpPermissions"] for r in p.get("PrefixListIds", [])])
        for group in groups if group["GroupName"] != "default"
    }


def test_web_and_git_answer_only_the_allowed_networks_and_route53s_health_checkers(
        rehearsed_staging: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = rehearsed_staging
    groups = _groups(run, account)
    checkers = health_checkers_prefix_list("eu-west-1")
    own_address = f"{run.outputs['hostPublicIp']}/32"  # the runner and probes reach the public name from the host itself
    assert groups["forgestack host: web"] == sorted([(80, ALLOWED), (443, ALLOWED), (443, checkers), (443, own_address)])
    assert groups["forgestack host: git-ssh"] == [(22, ALLOWED)]
    assert not any(source == "0.0.0.0/0" for rules in groups.values() for _, source in rules)


def test_the_host_may_write_only_its_own_acme_challenge_records(rehearsed_staging: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = rehearsed_staging
    zone_id = account.client("route53").list_hosted_zones()["HostedZones"][0]["Id"].split("/")[-1]
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "host-policy").inputs["policy"])
    statements = {statement["Sid"]: statement for statement in policy["Statement"]}
    records = statements["AcmeChallengeRecords"]
    assert records["Action"] == "route53:ChangeResourceRecordSets"
    assert records["Resource"] == f"arn:aws:route53:::hostedzone/{zone_id}"
    condition = records["Condition"]["ForAllValues:StringEquals"]
    assert condition["route53:ChangeResourceRecordSetsRecordTypes"] == ["TXT"]
    assert condition["route53:ChangeResourceRecordSetsNormalizedRecordNames"] == sorted(
        f"_acme-challenge.{name}" for name in run.outputs["hostnames"])
    assert statements["AcmeChallengeStatus"]["Resource"] == "arn:aws:route53:::change/*"
    assert statements["AcmeZoneLookup"]["Action"] == "route53:ListHostedZones"  # takes no resource


def test_a_public_stack_keeps_http_01_and_no_route53_rights(dev_run: ProgramRun) -> None:
    policy = json.loads(dev_run.one("aws:iam/rolePolicy:RolePolicy", "host-policy").inputs["policy"])
    assert not [s for s in policy["Statement"] if "route53" in json.dumps(s["Action"])]
    certbot = _container(dev_run, "certbot")
    assert dev_run.one("docker:index/remoteImage:RemoteImage", "services-certbot-image").inputs["name"] == images.CERTBOT
    assert "networkMode" not in certbot and certbot["networksAdvanced"]
    assert "ACME_CHALLENGE=http-01" in certbot["envs"]


def _container(run: ProgramRun, service: str) -> dict[str, Any]:
    return run.one("docker:index/container:Container", f"services-{service}").inputs


def test_staging_certbot_uses_dns_01_on_the_hosts_network_and_publishes_nothing(staging_run: ProgramRun) -> None:
    certbot = _container(staging_run, "certbot")
    image = staging_run.one("docker:index/remoteImage:RemoteImage", "services-certbot-image").inputs["name"]
    assert image == images.CERTBOT_DNS_ROUTE53
    assert certbot["networkMode"] == "host" and not certbot.get("networksAdvanced") and not certbot.get("ports")
    assert {"ACME_CHALLENGE=dns-01", "ACME_STAGING=false", "AWS_DEFAULT_REGION=eu-west-1"} <= set(certbot["envs"])
    assert certbot["capabilities"]["drops"] == ["ALL"] and certbot["securityOpts"] == ["no-new-privileges:true"]
    # The other services stay on Docker's networks.
    assert _container(staging_run, "gitea")["networksAdvanced"]


def test_staging_outputs_say_what_the_smoke_test_expects(staging_run: ProgramRun) -> None:
    assert staging_run.outputs["tlsPubliclyTrusted"] is True  # Let's Encrypt's production CA
    assert staging_run.outputs["backupIntervalHours"] == 4
    assert staging_run.outputs["giteaUrl"] == "https://git.staging.forge.example.com/"


@pytest.mark.parametrize(("overrides", "problem"), [
    ({"forgestack:allowedCidrs": ["0.0.0.0/0"]}, "at most 2^24 addresses, never the Internet"),
    ({"forgestack:allowedCidrs": ["0.0.0.0/1", "128.0.0.0/1"]}, "at most 2^24 addresses, never the Internet"),
    ({"forgestack:allowedCidrs": ["198.51.100.7/24"]}, "(host bits zero)"),
    ({"forgestack:allowedCidrs": [f"198.51.{i}.0/24" for i in range(16)]}, "at most 15 networks"),
    ({"forgestack:allowedCidrs": [ALLOWED], "forgestack:topology": "ha"}, "the allow-list is built for topology single on AWS"),
])
def test_a_bad_allow_list_is_refused_before_any_resource(overrides: dict[str, Any], problem: str) -> None:
    config = stack_config("staging", overrides)
    with pytest.raises(ConfigError, match="allowedCidrs") as raised:
        parse(config, "staging")
    assert problem in str(raised.value)
    mocks = ForgeMocks()
    with pytest.raises(ConfigError, match="allowedCidrs"):
        run_program("staging", config, mocks)
    assert mocks.registered == []  # refused by the settings before the first resource


def test_the_local_stack_refuses_an_allow_list() -> None:
    with pytest.raises(ConfigError, match=r"forgestack:allowedCidrs: got .*topology single on AWS"):
        parse(stack_config("local", {"forgestack:allowedCidrs": [ALLOWED]}), "local")


# ------------------------------------------------------------ the certbot loop asks for the challenge it was given


@pytest.mark.parametrize(("challenge", "expected", "absent"), [
    ("dns-01", ["--dns-route53"], "--webroot"),
    ("http-01", ["--webroot", "--webroot-path", "/var/www/acme"], "--dns-route53"),
])
def test_the_certbot_loop_runs_certbot_with_its_challenge(tmp_path: Path, challenge: str, expected: list[str], absent: str) -> None:
    calls = tmp_path / "calls"
    install_shim(tmp_path / "bin", "certbot", f'printf "%s\\n" "$@" > {calls}\nexit 0\n')
    install_shim(tmp_path / "bin", "sleep", "kill -TERM $PPID\n")  # end the loop after the first round
    script = tmp_path / "certbot-loop.sh"
    script.write_text(read("certbot-loop.sh"))
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CERT_DOMAINS": "git.staging.forge.example.com",
           "ACME_EMAIL": "ops@forge.example.com", "ACME_STAGING": "false", "ACME_CHALLENGE": challenge}
    subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30, check=False)
    arguments = calls.read_text().split("\n")
    assert arguments[:1] == ["certonly"] and all(argument in arguments for argument in expected) and absent not in arguments
    assert "--staging" not in arguments and "git.staging.forge.example.com" in arguments


def test_the_certbot_loop_refuses_an_unknown_challenge(tmp_path: Path) -> None:
    script = tmp_path / "certbot-loop.sh"
    script.write_text(read("certbot-loop.sh"))
    run = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=30, check=False,
                         env={"PATH": os.environ["PATH"], "CERT_DOMAINS": "a", "ACME_EMAIL": "b", "ACME_CHALLENGE": "tls-alpn-01"})
    assert run.returncode == 2 and run.stderr.strip() == "certbot: ACME_CHALLENGE must be http-01 or dns-01, not tls-alpn-01"
