"""DNS: an A record per service hostname at the Elastic IP, and a CAA record for Let's Encrypt only."""

from __future__ import annotations

import pytest

from components.dns import Dns, DnsArgs
from rehearsal.engine import REPO, ProgramRun, run_program, stack_config


def test_gitea_hostname_points_at_the_elastic_ip(aws_run: ProgramRun) -> None:
    records = {r.inputs["name"]: r for r in aws_run.of_type("aws:route53/record:Record") if r.inputs["type"] == "A"}
    domain = aws_run.outputs["giteaUrl"].removeprefix("https://git.").rstrip("/")
    assert f"git.{domain}" in records
    for record in records.values():
        assert record.inputs["records"] == [aws_run.outputs["hostPublicIp"]]
        assert record.inputs["zoneId"] == "Z0123456789ABCDEFGHIJ"  # from the get_zone lookup


def test_caa_allows_only_lets_encrypt_on_each_hostname(dev_run: ProgramRun) -> None:
    records = dev_run.of_type("aws:route53/record:Record")
    caa = {r.inputs["name"]: r.inputs["records"] for r in records if r.inputs["type"] == "CAA"}
    assert set(caa) == {r.inputs["name"] for r in records if r.inputs["type"] == "A"} == set(dev_run.outputs["hostnames"])
    for values in caa.values():
        assert '0 issuewild ";"' in values
        assert [r for r in values if " issue " in r] == ['0 issue "letsencrypt.org"']


def test_no_record_at_the_apex_when_the_domain_is_the_zone() -> None:
    """The operator's zone may already hold an apex CAA (its mail, its website): ours would collide with it."""
    config = stack_config("dev", stack_file=REPO / "tests" / "stacks" / "minimal-aws.yaml")
    run = run_program("dev", config)
    assert config["forgestack:domain"] == config["forgestack:hostedZone"]
    names = {r.inputs["name"] for r in run.of_type("aws:route53/record:Record")}
    assert config["forgestack:domain"] not in names


def test_hostnames_outside_the_domain_are_refused() -> None:
    with pytest.raises(ValueError, match=r"outside forge\.example\.com"):
        Dns("dns", DnsArgs("example.com", "forge.example.com", ("git.other.org",), "203.0.113.1", "a@example.com"))
