"""scripts/refresh_prices.py against botocore's Stubber for the Price List API (the requests checked against the
pricing service's model, exactly as they would be sent; the responses shaped like the API's price list documents)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from rehearsal.engine import REPO
from scripts import refresh_prices

REGION = "eu-west-1"


def document() -> dict[str, Any]:
    return {
        "source": "test", "date": "2026-01-01", "hours_per_month": 730,
        "regions": {REGION: {
            "ec2_hour": {"t3.large": 0.1}, "rds_postgres_hour": {"db.t4g.medium": 0.1},
            "elasticache_valkey_hour": {"cache.t4g.small": 0.1}, "ebs_gp3_gb_month": 0.1, "s3_standard_gb_month": 0.023,
        }},
    }  # fmt: skip


def product(unit: str, usd: str, reserved: str = "0.05") -> str:
    """One price list entry: its on-demand term in `unit`, and a reserved term the refresh must ignore."""
    return json.dumps({
        "product": {"sku": "SKU1", "attributes": {"regionCode": REGION}},
        "terms": {
            "OnDemand": {"SKU1.JRTCKXETXF": {"priceDimensions": {"SKU1.JRTCKXETXF.6YS6EN2CT7": {
                "unit": unit, "beginRange": "0", "endRange": "Inf", "pricePerUnit": {"USD": usd}}}}},
            "Reserved": {"SKU1.X": {"priceDimensions": {"SKU1.X.Y": {"unit": unit, "beginRange": "0", "pricePerUnit": {"USD": reserved}}}}},
        },
    })  # fmt: skip


def expect(stubber: Stubber, key: str, size: str, price_list: list[str]) -> None:
    query = refresh_prices.QUERIES[key]
    stubber.add_response(
        "get_products",
        {"FormatVersion": "aws_v1", "PriceList": price_list},
        {"ServiceCode": query.service, "Filters": refresh_prices.filters(query, REGION, size), "FormatVersion": "aws_v1",
         "MaxResults": 100},
    )


def run(tmp_path: Path, responses: list[tuple[str, str, list[str]]], *args: str) -> tuple[int, Path, Stubber]:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(document()))
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    for key, size, price_list in responses:
        expect(stubber, key, size, price_list)
    with stubber:
        code = refresh_prices.main(["--file", str(path), *args], client=client)
    return code, path, stubber


ALL_FOUND = [
    ("ec2_hour", "t3.large", [product("Hrs", "0.0912000000")]),
    ("rds_postgres_hour", "db.t4g.medium", [product("Hrs", "0.0720000000")]),
    ("elasticache_valkey_hour", "cache.t4g.small", [product("Hrs", "0.0288000000")]),
    ("ebs_gp3_gb_month", "", [product("GB-Mo", "0.0880000000")]),
]


def test_each_queried_price_is_the_apis_on_demand_price_and_the_rest_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, path, stubber = run(tmp_path, ALL_FOUND)
    assert code == refresh_prices.EXIT_OK
    stubber.assert_no_pending_responses()  # exactly these requests, in the pricing model's shape
    table = json.loads(path.read_text())["regions"][REGION]
    assert (table["ec2_hour"], table["rds_postgres_hour"], table["elasticache_valkey_hour"], table["ebs_gp3_gb_month"]) == (
        {"t3.large": 0.0912}, {"db.t4g.medium": 0.072}, {"cache.t4g.small": 0.0288}, 0.088,
    )  # fmt: skip
    assert table["s3_standard_gb_month"] == 0.023  # not an API query: kept as entered
    written = json.loads(path.read_text())
    assert written["date"] == "2026-01-01" and len(written["price_list_api"]["prices"]) == 4
    assert "4 changed, 0 unchanged, 0 kept, 1 entered by hand" in capsys.readouterr().out


@pytest.mark.parametrize(("price_list", "reason"), [
    ([], "no on-demand price found"),
    ([product("Hrs", "0.0912"), product("Hrs", "0.1824")], "2 different prices (0.0912, 0.1824): the query is ambiguous"),
    ([product("Hrs", "0.0000000000")], "no on-demand price found"),
])  # fmt: skip
def test_no_single_price_keeps_the_files_value_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], price_list: list[str], reason: str
) -> None:
    responses = [("ec2_hour", "t3.large", price_list), *ALL_FOUND[1:]]
    code, path, _ = run(tmp_path, responses)
    assert code == refresh_prices.EXIT_KEPT
    assert json.loads(path.read_text())["regions"][REGION]["ec2_hour"] == {"t3.large": 0.1}
    assert f"KEPT {REGION} ec2_hour[t3.large]: {reason}; kept 0.1" in capsys.readouterr().out


def test_a_dry_run_writes_nothing_and_a_refusal_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, path, _ = run(tmp_path, ALL_FOUND, "--dry-run")
    assert code == refresh_prices.EXIT_OK and json.loads(path.read_text()) == document()
    path.write_text(json.dumps(document()))
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stubber:
        stubber.add_client_error("get_products", "AccessDeniedException", "not allowed pricing:GetProducts")
        assert refresh_prices.main(["--file", str(path)], client=client) == refresh_prices.EXIT_KEPT
    assert json.loads(path.read_text()) == document()
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "AccessDeniedException" in error and "nothing written" in error


def test_the_repositorys_prices_file_is_one_the_script_reads_and_has_help() -> None:
    prices = json.loads(refresh_prices.PRICES_FILE.read_text())
    assert set(refresh_prices.QUERIES) <= set(prices["regions"]["eu-west-1"])
    script = REPO / "scripts" / "refresh_prices.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "--dry-run" in result.stdout


def test_an_unreadable_answer_writes_nothing_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, path, _ = run(tmp_path, [("ec2_hour", "t3.large", ["{not json"])])
    assert code == refresh_prices.EXIT_KEPT and json.loads(path.read_text()) == document()
    assert "answered something unreadable" in capsys.readouterr().err
