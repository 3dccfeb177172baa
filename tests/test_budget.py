"""The stack's AWS Budgets budget: rehearsed against moto's Budgets (amount from the estimate plus the margin, the
stack's cost-allocation tag as its filter, mail at 80 % spent and 100 % forecast to the alarm topic and the alert
address), the topic and its key letting Budgets publish, the estimates file the script's current output, and a stack
without an estimate refused before anything is created."""

from __future__ import annotations

import json
import math

import pytest

from components import budget
from components.settings import ConfigError, parse
from rehearsal.emulated import EmulatedAccount
from rehearsal.engine import ACCOUNT_ID, REPO, ForgeMocks, ProgramRun, run_program, stack_config, topology_overrides
from scripts import cost


def test_the_prod_budget_watches_the_stacks_tagged_costs_and_mails_before_the_money_is_gone(
    ha_rehearsal: tuple[ProgramRun, EmulatedAccount],
) -> None:
    run, account = ha_rehearsal
    client = account.client("budgets", region="us-east-1")
    (stored,) = client.describe_budgets(AccountId=ACCOUNT_ID)["Budgets"]
    estimated = budget.estimate("prod", "ha")
    assert estimated is not None
    assert float(stored["BudgetLimit"]["Amount"]) == math.ceil(estimated * 1.25 / 10) * 10
    assert (stored["BudgetType"], stored["TimeUnit"], stored["BudgetLimit"]["Unit"]) == ("COST", "MONTHLY", "USD")
    assert stored["CostFilters"] == {"TagKeyValue": ["user:stack$prod"]}
    # The filter's tag is the provider's default tag on every resource.
    provider = run.one("pulumi:providers:aws", "aws")
    assert json.loads(provider.inputs["defaultTags"])["tags"]["stack"] == "prod"
    notifications = client.describe_notifications_for_budget(AccountId=ACCOUNT_ID, BudgetName=stored["BudgetName"])["Notifications"]
    assert {(n["NotificationType"], n["Threshold"], n["ComparisonOperator"]) for n in notifications} == {
        ("ACTUAL", 80, "GREATER_THAN"), ("FORECASTED", 100, "GREATER_THAN"),
    }  # fmt: skip
    # moto keeps no subscribers to read back: the request, whose topic the emulation checked exists.
    for notification in run.one("aws:budgets/budget:Budget", "alarms-budget").inputs["notifications"]:
        assert notification["subscriberSnsTopicArns"] == [run.outputs["alarmTopicArns"]["eu-west-1"]]
        assert notification["subscriberEmailAddresses"] == ["ops@forge.example.com"]


def test_budgets_may_publish_to_the_encrypted_alarm_topic(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = ha_rehearsal
    topic = run.outputs["alarmTopicArns"]["eu-west-1"]
    attributes = account.client("sns").get_topic_attributes(TopicArn=topic)["Attributes"]
    publish = [s for s in json.loads(attributes["Policy"])["Statement"] if s["Action"] == "sns:Publish" and s["Effect"] == "Allow"
               and "Service" in s["Principal"]]  # fmt: skip
    this_account = {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}}
    assert any("budgets.amazonaws.com" in s["Principal"]["Service"] and s["Condition"] == this_account for s in publish)
    key_id = attributes["KmsMasterKeyId"].rsplit("/", 1)[-1]
    key_policy = json.loads(account.client("kms").get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert any("budgets.amazonaws.com" in s["Principal"].get("Service", []) and "kms:GenerateDataKey*" in s["Action"]
               for s in key_policy["Statement"])  # fmt: skip


def test_a_stack_without_an_estimate_must_name_its_amount_before_anything_is_created() -> None:
    config = stack_config("dev")
    with pytest.raises(ConfigError, match=r"budgetMonthlyUsd: got 0; expected an amount in USD: there is no cost estimate for stack qa"):
        parse(config, stack="qa")
    assert parse({**config, "forgestack:budgetMonthlyUsd": "300"}, stack="qa").budget_usd == 300
    mocks = ForgeMocks()
    with pytest.raises(ConfigError, match="budgetMonthlyUsd"):
        run_program("qa", config, mocks)
    assert [r for r in mocks.registered if r.custom] == []  # refused by the settings before the first resource


def test_the_estimates_file_is_the_scripts_current_output() -> None:
    results, price = [], None
    for stack, topology in cost.ESTIMATE_STACKS:
        result, _, price = cost.compute(stack, topology_overrides(topology), {})
        results.append(result)
    assert price is not None
    assert (REPO / "components" / "files" / budget.ESTIMATES_FILE).read_text() == cost.estimates_document(results, price), (
        "regenerate with: python scripts/cost.py --write-estimates"
    )
    assert budget.amount_from_estimate(744.38) == 940  # 744.38 x 1.25 = 930.5, rounded up to the next 10
