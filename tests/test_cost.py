"""scripts/cost.py: every AWS type the dev, prod and ha stacks create is priced or named free, the arithmetic on a
known stack (dev) is pinned by hand from the price file, an unknown type or size is listed and fails the run instead
of costing nothing, and the README's cost table is the script's current output."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from rehearsal.engine import HA_OVERRIDES, REPO
from scripts import cost

HA = HA_OVERRIDES
NO_FLAGS: dict[str, float | None] = {}


@pytest.fixture(scope="module")
def estimates() -> dict[str, tuple[cost.Estimate, cost.Assumptions, cost.Prices]]:
    return {
        "dev": cost.compute("dev", {}, NO_FLAGS),
        "staging": cost.compute("staging", {}, NO_FLAGS),
        "prod": cost.compute("prod", {}, NO_FLAGS),
        "prod-ha": cost.compute("prod", HA, NO_FLAGS),
    }


def test_every_resource_of_dev_staging_prod_and_ha_is_priced_or_named_free(estimates: dict[str, Any]) -> None:
    for label, (result, _, _) in estimates.items():
        assert result.unpriced == [], label
        assert result.total > 0 and result.free, label
        priced_types = {line.resource for line in result.lines} | {line.resource for line in result.free}
        assert {"aws:kms/key:Key", "aws:cloudwatch/metricAlarm:MetricAlarm"} <= priced_types, label
    ha_types = {line.resource for line in estimates["prod-ha"][0].lines}
    assert {"aws:rds/instance:Instance", "aws:elasticache/replicationGroup:ReplicationGroup", "aws:ecs/service:Service",
            "aws:lb/loadBalancer:LoadBalancer", "aws:ec2/natGateway:NatGateway", "aws:wafv2/webAcl:WebAcl"} <= ha_types  # fmt: skip


def test_the_dev_stack_costs_what_the_price_file_says_line_by_line(estimates: dict[str, Any]) -> None:
    result, assume, price = estimates["dev"]
    rates = price.document["regions"]["eu-west-1"]
    lines = {(line.name, line.detail.split(":")[0]): line.monthly for line in result.lines}
    assert assume.data_gb == 20  # default: 20 GB, the dev data volume's size
    # t3.large all month; its 20 GB gp3 root; the 20 GB gp3 data volume; one public IPv4 address.
    assert lines[("host-instance", "t3.large on demand")] == pytest.approx(0.0912 * 730)
    assert lines[("host-instance", "root volume gp3")] == pytest.approx(20 * 0.088)
    assert lines[("host-data", "gp3 volume")] == pytest.approx(20 * rates["ebs_gp3_gb_month"])
    assert lines[("host-eip", "public IPv4 address")] == pytest.approx(0.005 * 730)
    # Snapshots kept 7 days: 20 GB once, then 2 % a day for the other 6.
    assert lines[("host-data", "snapshots kept 7 days")] == pytest.approx(20 * (1 + 0.02 * 6) * 0.05)
    # dev backs up daily and keeps 7 days: 7 backups of 10 GB (half of 20 GB compressed), none archived.
    assert lines[("backups-bucket", "7 backups of 10 GB")] == pytest.approx(70 * 0.023)
    assert not [line for line in result.lines if "archived" in line.detail]
    # Three alarms in eu-west-1 (one on the stack's own heartbeat metric: a custom metric), one in us-east-1; six keys.
    alarms = [line for line in result.lines if line.resource == "aws:cloudwatch/metricAlarm:MetricAlarm"]
    assert sum(line.monthly for line in alarms) == pytest.approx(4 * 0.10 + 0.30)
    assert len([line for line in result.lines if line.resource == "aws:kms/key:Key"]) == 6
    assert result.total == pytest.approx(round(sum(line.monthly for line in result.lines), 2))
    assert sum(result.by_region().values()) == pytest.approx(result.total, abs=0.02)


def test_the_workspaces_host_is_priced_next_to_the_rest() -> None:
    """workspaces: the instance, its root volume, its public address, its key and its secret, each line its own."""
    result, _, _ = cost.compute("dev", {"forgestack:workspaces": "true", "forgestack:workspacesReleaseSha256": "ab" * 32}, NO_FLAGS)
    lines = {(line.name, line.detail.split(":")[0]): line.monthly for line in result.lines if line.name.startswith("workspaces-")}
    assert lines == {
        ("workspaces-instance", "t3.xlarge on demand"): pytest.approx(0.1824 * 730),
        ("workspaces-instance", "root volume gp3"): pytest.approx(100 * 0.088),
        ("workspaces-instance", "public IPv4 address"): pytest.approx(0.005 * 730),
        ("workspaces-key", "customer managed key (requests within the free 20,000 a month)"): pytest.approx(1.0),
        ("workspaces-secret", "secret"): pytest.approx(0.40),
    }
    assert result.unpriced == []


def test_ha_costs_more_than_single_where_the_topology_says(estimates: dict[str, Any]) -> None:
    single, ha = estimates["prod"][0], estimates["prod-ha"][0]
    assert ha.total > single.total
    database = [line for line in ha.lines if line.name == "database-postgres"]
    # Multi-AZ: two db.t4g.medium instances and two copies of 50 GB of gp3.
    assert sum(line.monthly for line in database) == pytest.approx(2 * 0.072 * 730 + 2 * 50 * 0.127)
    service = [line for line in ha.lines if line.name == "cluster-service"]
    assert sum(line.monthly for line in service) == pytest.approx(2 * (0.03238 + 2 * 0.00356) * 730 + 2 * 0.10)


def test_an_unknown_type_or_size_is_listed_and_fails_never_costs_nothing(
    estimates: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, assume, price = estimates["dev"]
    monkeypatch.delitem(cost.PRICERS, "aws:rds/instance:Instance")
    ha, _, _ = cost.compute("prod", HA, NO_FLAGS)
    assert [(line.name, line.detail) for line in ha.unpriced] == [("database-postgres", "no price known for this type")]
    assert cost.main(["--stack", "prod", "--set", "topology=ha"]) == cost.EXIT_UNPRICED
    assert "UNPRICED aws:rds/instance:Instance database-postgres" in capsys.readouterr().out
    # A size the price file does not have.
    document = json.loads(json.dumps(price.document))
    del document["regions"]["eu-west-1"]["ec2_hour"]["t3.large"]
    dev, _, _ = cost.compute("dev", {}, NO_FLAGS)
    missing = cost.estimate("dev", _run("dev"), _settings("dev"), assume, cost.Prices(document))
    assert [line.detail for line in missing.unpriced] == ["no price ec2_hour[t3.large] for eu-west-1 in cost_prices.json"]
    assert missing.total < dev.total


def _run(stack: str) -> Any:
    from rehearsal.engine import run_program, stack_config

    return run_program(stack, stack_config(stack))


def _settings(stack: str) -> Any:
    from components.settings import parse
    from rehearsal.engine import stack_config

    return parse(stack_config(stack), stack=stack)


def test_the_assumptions_change_the_use_based_lines_only(estimates: dict[str, Any]) -> None:
    base, assume, price = estimates["dev"]
    more_data = cost.estimate("dev", _run("dev"), _settings("dev"), replace(assume, data_gb=40, egress_gb=200), price)
    changed = {line.name for line in more_data.lines}
    by_name = {(line.name, line.detail.split(":")[0]): line.monthly for line in base.lines}
    for line in more_data.lines:
        key = (line.name, line.detail.split(":")[0])
        if line.resource == "aws:ec2/instance:Instance":
            assert line.monthly == by_name[key]  # the instance does not care about data
    assert more_data.total > base.total and "internet-egress" in changed


def test_the_json_document_adds_up_and_names_its_prices() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "cost.py"), "--stack", "dev", "--json", "--egress-gb", "0"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["total"] == pytest.approx(sum(line["monthly"] for line in document["lines"]), abs=0.01)
    assert document["prices"]["date"] and document["assumptions"]["egress_gb"] == 0
    assert {line["region"] for line in document["lines"]} == {"eu-west-1", "us-east-1"}


@pytest.mark.parametrize("argv", [["--stack", "local"], ["--stack", "dev", "--set", "nonsense"], ["--stack", "dev", "--data-gb", "-1"], []])
def test_bad_usage_exits_2_with_one_line(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "cost.py"), *argv], capture_output=True, text=True, check=False)
    assert result.returncode == cost.EXIT_USAGE and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(("cost:", "usage:", "cost.py: error"))


def test_the_readme_cost_table_is_the_scripts_current_output(estimates: dict[str, Any]) -> None:
    table = cost.readme_table([estimates[label][0] for label in ("dev", "staging", "prod", "prod-ha")])
    assert [(stack, overrides) for stack, overrides in cost.README_STACKS] == [
        ("dev", {}), ("staging", {}), ("prod", {}), ("prod", HA)]  # the rows the script writes are the ones compared
    assert table in (REPO / "README.md").read_text(), "regenerate with: python scripts/cost.py --readme-table"


def test_the_pull_request_table_shows_each_stacks_cost_and_its_change(tmp_path: Any) -> None:
    base = {"dev (single)": 100.0, "prod (single)": 700.0, "prod (old)": 50.0}
    head = {"dev (single)": 100.0, "prod (single)": 770.0, "prod (ha)": 1200.0}
    rows = cost.compare(base, head).splitlines()[2:]
    assert rows == [
        "| dev (single) | 100.00 | +0.00 (+0.0%) |",
        "| prod (single) | 770.00 | +70.00 (+10.0%) |",
        "| prod (ha) | 1200.00 | new |",
        "| prod (old) | gone | -50.00 |",
    ]
    (tmp_path / "base.json").write_text("")  # the base branch could not price itself
    (tmp_path / "head.json").write_text(json.dumps(head))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "cost.py"), "--compare", str(tmp_path / "base.json"),
                             str(tmp_path / "head.json")], capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0 and result.stdout.count("| new |") == 3


def test_a_region_without_prices_is_listed_as_unpriced_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert cost.main(["--stack", "dev", "--set", "aws:region=ap-south-1"]) == cost.EXIT_UNPRICED
    out = capsys.readouterr().out
    assert "UNPRICED data transfer internet-egress (ap-south-1): no prices for region ap-south-1" in out
    assert "UNPRICED aws:ec2/instance:Instance host-instance (ap-south-1)" in out
