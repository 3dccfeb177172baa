"""The stack's monthly AWS Budgets budget: its tagged costs against an amount, mail at 80 % spent and at 100 %
forecast. The amount is a setting, or the stack's estimate (scripts/cost.py, kept in files/cost_estimates.json by
`python scripts/cost.py --write-estimates`) plus a margin."""

from __future__ import annotations

import json
import math
from typing import Final

from components import templates
from components.constants import COST_ALLOCATION_TAG

ESTIMATES_FILE: Final = "cost_estimates.json"
MARGIN: Final = 0.25  # above the estimate before the budget warns: use varies, the estimate's assumptions are round
ROUND_TO_USD: Final = 10
ACTUAL_PERCENT: Final = 80  # mail when this much of the amount is spent
FORECAST_PERCENT: Final = 100  # mail when AWS forecasts the month above the amount


def estimates() -> dict[str, dict[str, float]]:
    """stack -> topology -> estimated USD a month, as scripts/cost.py last wrote them."""
    document = json.loads(templates.read(ESTIMATES_FILE))
    return {stack: {topology: float(amount) for topology, amount in by_topology.items()}
            for stack, by_topology in document["stacks"].items()}  # fmt: skip


def estimate(stack: str, topology: str) -> float | None:
    return estimates().get(stack, {}).get(topology)


def amount_from_estimate(estimated: float) -> int:
    """The estimate plus MARGIN, rounded up to ROUND_TO_USD."""
    return int(math.ceil(estimated * (1 + MARGIN) / ROUND_TO_USD) * ROUND_TO_USD)


def cost_filter(stack: str) -> str:
    """Budgets' filter value for the stack's cost-allocation tag (the provider's default tag on every resource)."""
    return f"user:{COST_ALLOCATION_TAG}${stack}"
