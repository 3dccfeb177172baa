"""DNS: an A record per service hostname at the Elastic IP, and a CAA record for Let's Encrypt only."""

from __future__ import annotations

import pytest

from components.dns import Dns, DnsArgs
from rehearsal.engine import ProgramRun


def test_gitea_hostname_points_at_the_elastic_ip(aws_run: ProgramRun) -> None:
    records = {r.inputs["name"]: r for r in aws_run.of_type("aws:route53/record:Record") if r.inputs["type"] == "A"}
    domain = aws_run.outputs["giteaUrl"].removeprefix("https://git.").rstrip("/")
    assert f"git.{domain}" in records
    for record in records.values():
        assert record.inputs["records"] == [aws_run.outputs["hostPublicIp"]]
        assert record.inputs["zoneId"] == "Z0123456789ABCDEFGHIJ"  # from the get_zone lookup


def test_caa_allows_only_lets_encrypt(dev_run: ProgramRun) -> None:
    (caa,) = [r for r in dev_run.of_type("aws:route53/record:Record") if r.inputs["type"] == "CAA"]
    assert caa.inputs["name"] == "dev.forge.example.com"
    assert '0 issue "letsencrypt.org"' in caa.inputs["records"]
    assert '0 issuewild ";"' in caa.inputs["records"]
    assert [r for r in caa.inputs["records"] if " issue " in r] == ['0 issue "letsencrypt.org"']


def test_hostnames_outside_the_domain_are_refused() -> None:
    with pytest.raises(ValueError, match=r"outside forge\.example\.com"):
        Dns("dns", DnsArgs("example.com", "forge.example.com", ("git.other.org",), "203.0.113.1", "a@example.com"))
