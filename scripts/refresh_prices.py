#!/usr/bin/env python3
"""Refresh scripts/cost_prices.json from the AWS Price List API (needs AWS credentials allowed pricing:GetProducts).

    python scripts/refresh_prices.py              # every region in the file; writes the file
    python scripts/refresh_prices.py --dry-run    # prints what would change, writes nothing

Each price below is queried for each region of the file (on-demand terms, the unit it is billed in): EC2 instance
hours (Linux, shared tenancy, no pre-installed software), RDS for PostgreSQL instance hours (Single-AZ; Multi-AZ is
two of them in scripts/cost.py), ElastiCache for Valkey node hours, and gp3 storage. A query that finds no price, or
two different ones, keeps the file's value and is reported, never guessed. The other prices of the file are kept as
entered (counted as such). The file records which prices came from the API, and when (price_list_api).

Exit codes: 0 every queried price found, 1 some kept (listed) or the API refused, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import boto3
import botocore.exceptions

PRICES_FILE: Final = Path(__file__).resolve().parent / "cost_prices.json"
PRICING_REGION: Final = "us-east-1"  # the Price List API's endpoint
EXIT_OK, EXIT_KEPT, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Query:
    service: str
    attributes: Mapping[str, str]
    unit: str  # the price dimension's unit: Hrs, GB-Mo
    size_attribute: str = ""  # set for a table of sizes (instance types): the size goes in this attribute


QUERIES: Final = {
    "ec2_hour": Query("AmazonEC2", {"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"},
                      "Hrs", "instanceType"),
    "rds_postgres_hour": Query("AmazonRDS", {"databaseEngine": "PostgreSQL", "deploymentOption": "Single-AZ"}, "Hrs", "instanceType"),
    "elasticache_valkey_hour": Query("AmazonElastiCache", {"cacheEngine": "Valkey"}, "Hrs", "instanceType"),
    "ebs_gp3_gb_month": Query("AmazonEC2", {"productFamily": "Storage", "volumeApiName": "gp3"}, "GB-Mo"),
}  # fmt: skip


class NoPriceError(Exception):
    """No single on-demand price for a query."""


def filters(query: Query, region: str, size: str = "") -> list[dict[str, str]]:
    terms = {"regionCode": region, **query.attributes, **({query.size_attribute: size} if size else {})}
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in terms.items()]


def products(client: Any, service: str, request_filters: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
    token = ""
    while True:
        page = client.get_products(ServiceCode=service, Filters=request_filters, FormatVersion="aws_v1", MaxResults=100,
                                   **({"NextToken": token} if token else {}))  # fmt: skip
        for item in page.get("PriceList", []):
            yield json.loads(item)
        token = page.get("NextToken", "")
        if not token:
            return


def on_demand_prices(product: Mapping[str, Any], unit: str) -> set[float]:
    """The product's on-demand USD prices in `unit`, first tier only (beginRange 0), zero prices left out."""
    found = set()
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            if dimension.get("unit") == unit and str(dimension.get("beginRange", "0")) == "0":
                usd = float(dimension["pricePerUnit"]["USD"])
                if usd > 0:
                    found.add(usd)
    return found


def price(client: Any, query: Query, region: str, size: str = "") -> float:
    found: set[float] = set()
    for product in products(client, query.service, filters(query, region, size)):
        found |= on_demand_prices(product, query.unit)
    if not found:
        raise NoPriceError("no on-demand price found")
    if len(found) > 1:
        raise NoPriceError(f"{len(found)} different prices ({', '.join(map(str, sorted(found)))}): the query is ambiguous")
    return found.pop()


@dataclass
class Outcome:
    changed: list[str]
    unchanged: list[str]
    kept: list[str]  # queried without a single price: the file's value stays
    by_hand: list[str]  # not queried at all


def refresh(document: dict[str, Any], client: Any, log: Any = print) -> Outcome:
    """Update document's queried prices in place; report every price's fate."""
    outcome = Outcome([], [], [], [])
    for region, table in document["regions"].items():
        for key, value in table.items():
            query = QUERIES.get(key)
            if query is None:
                outcome.by_hand.append(f"{region} {key}")
                continue
            sizes = list(value) if query.size_attribute else [""]
            for size in sizes:
                label = f"{region} {key}" + (f"[{size}]" if size else "")
                old = value[size] if size else value
                try:
                    new = round(price(client, query, region, size), 6)
                except NoPriceError as error:
                    outcome.kept.append(f"{label}: {error}; kept {old}")
                    continue
                if size:
                    value[size] = new
                else:
                    table[key] = new
                (outcome.changed if new != old else outcome.unchanged).append(f"{label}: {old} -> {new}")
                log(f"refresh-prices: {label}: {new}", file=sys.stderr)
    return outcome


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Exit codes: 0 every queried price found, 1 some kept (listed) or the API refused, 2 bad usage.",
    )
    parser.add_argument("--file", type=Path, default=PRICES_FILE, help="the prices file (default: scripts/cost_prices.json)")
    parser.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, client: Any = None) -> int:
    args = parse_args(argv)
    try:
        document = json.loads(args.file.read_text())
        document["regions"].items()
    except (OSError, ValueError, KeyError, AttributeError) as error:
        print(f"refresh-prices: {args.file}: not a prices file: {error}", file=sys.stderr)
        return EXIT_USAGE
    pricing = client or boto3.client("pricing", region_name=PRICING_REGION)
    try:
        outcome = refresh(document, pricing)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        print(f"refresh-prices: the Price List API refused: {error}; nothing written", file=sys.stderr)
        return EXIT_KEPT
    except (ValueError, KeyError, TypeError) as error:  # an answer not shaped like a price list
        print(f"refresh-prices: the Price List API answered something unreadable ({error!r}); nothing written", file=sys.stderr)
        return EXIT_KEPT
    for line in outcome.changed:
        print(f"changed {line}")
    for line in outcome.kept:
        print(f"KEPT {line}")
    print(f"{len(outcome.changed)} changed, {len(outcome.unchanged)} unchanged, {len(outcome.kept)} kept, "
          f"{len(outcome.by_hand)} entered by hand (not in the API queries)")  # fmt: skip
    if not args.dry_run:
        # "date" stays the date of the prices entered by hand; these are the API's, as of today.
        document["price_list_api"] = {"date": datetime.now(UTC).date().isoformat(),
                                      "prices": sorted(line.split(":")[0] for line in outcome.changed + outcome.unchanged)}
        args.file.write_text(json.dumps(document, indent=2) + "\n")
        print(f"refresh-prices: wrote {args.file}", file=sys.stderr)
    return EXIT_KEPT if outcome.kept else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
