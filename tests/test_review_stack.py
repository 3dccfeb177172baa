"""Review stacks (scripts/review_stack.py): the file it writes runs the real program small and tagged to expire, the
number of stacks is bounded, and the sweeper destroys exactly the closed, expired and abandoned ones. Pulumi is a
recording stand-in with a backend's stack list; the program itself runs under mocks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.constants import EXPIRES_AT_TAG
from components.settings import EXPIRES_AT_FORMAT
from rehearsal.engine import STACKS, run_program, stack_config
from scripts import review_stack
from scripts.review_stack import MAX_REVIEW_STACKS, REVIEW_BUDGET_USD, PulumiError

ZONE = "review.forge.example.com"
SECRETS = "awskms://alias/forgestack-pulumi-review?region=eu-west-1"
NOW = datetime.now(UTC)


class FakePulumi:
    """`pulumi stack ls/output/init/destroy/rm` over an in-memory backend; every call recorded."""

    def __init__(self, stacks: dict[str, dict[str, Any]], fail_destroy: bool = False) -> None:
        self.stacks = stacks  # full name -> {"outputs": {...}, "lastUpdate": ..., "updateInProgress": ...}
        self.calls: list[list[str]] = []
        self.fail_destroy = fail_destroy

    def __call__(self, args: Sequence[str]) -> str:
        self.calls.append(list(args))
        if list(args[:3]) == ["stack", "ls", "--json"]:
            return json.dumps([{"name": name, "lastUpdate": info.get("lastUpdate"), "updateInProgress": info.get("updateInProgress", False),
                                "resourceCount": 120} for name, info in self.stacks.items()])
        if list(args[:3]) == ["stack", "output", "--json"]:
            info = next(info for name, info in self.stacks.items() if name.endswith(args[4]))
            if info.get("outputs") is None:
                raise PulumiError("pulumi stack output failed: no outputs")
            return json.dumps(info["outputs"])
        if args[0] == "destroy" and self.fail_destroy:
            raise PulumiError(f"pulumi destroy --stack {args[2]} failed: error: the stack is locked")
        if list(args[:2]) == ["stack", "init"]:
            self.stacks[args[2]] = {"outputs": {}}
        return ""


def _iso(moment: datetime) -> str:
    return moment.strftime(EXPIRES_AT_FORMAT)


def test_the_review_config_runs_the_real_program_small_tagged_and_budgeted(tmp_path: Path) -> None:
    pulumi = FakePulumi({"organization/forgestack/dev": {}})
    before = datetime.now(UTC).replace(microsecond=0)
    assert review_stack.main(["config", "--pr", "42", "--hosted-zone", ZONE, "--hours", "24", "--secrets-provider", SECRETS],
                             pulumi, tmp_path) == 0
    after = datetime.now(UTC)
    assert pulumi.calls[-1] == ["stack", "init", "review-42", "--secrets-provider", SECRETS]
    path = tmp_path / "Pulumi.review-42.yaml"
    config = yaml.safe_load(path.read_text())["config"]
    expires = datetime.strptime(config["forgestack:expiresAt"], EXPIRES_AT_FORMAT).replace(tzinfo=UTC)
    assert before + timedelta(hours=24) <= expires <= after + timedelta(hours=24)
    run = run_program("review-42", stack_config("review-42", stack_file=path))
    assert run.outputs["giteaUrl"] == f"https://git.pr-42.{ZONE}/" and run.outputs["expiresAt"] == config["forgestack:expiresAt"]
    provider = run.one("pulumi:providers:aws", "aws").inputs
    # Provider-level default tags: on every AWS resource of the stack.
    assert json.loads(provider["defaultTags"])["tags"] == {"project": "forgestack", "stack": "review-42", "managed-by": "pulumi",
                                                           EXPIRES_AT_TAG: config["forgestack:expiresAt"]}
    assert run.one("aws:ec2/instance:Instance").inputs["instanceType"] == "t3.medium"
    containers = {r.name for r in run.of_type("docker:index/container:Container")}
    assert not {"services-prometheus", "services-loki", "services-portainer", "services-runner"} & containers
    budget = run.one("aws:budgets/budget:Budget").inputs
    assert float(budget["limitAmount"]) == REVIEW_BUDGET_USD
    assert "review-42" not in STACKS  # generated files never join the committed stacks


def test_the_number_of_review_stacks_is_bounded_and_a_pr_keeps_its_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = FakePulumi({f"organization/forgestack/review-{n}": {} for n in range(1, MAX_REVIEW_STACKS + 1)})
    assert review_stack.main(["config", "--pr", "99", "--hosted-zone", ZONE, "--secrets-provider", SECRETS], full, tmp_path) == 2
    assert "3 review stacks exist already (review-1, review-2, review-3), at most 3" in capsys.readouterr().err
    assert not (tmp_path / "Pulumi.review-99.yaml").exists() and ["stack", "init"] not in [c[:2] for c in full.calls]
    # An existing review stack is updated in place: a new file, no second init.
    assert review_stack.main(["config", "--pr", "2", "--hosted-zone", ZONE, "--secrets-provider", SECRETS], full, tmp_path) == 0
    assert (tmp_path / "Pulumi.review-2.yaml").exists() and ["stack", "init"] not in [c[:2] for c in full.calls]
    assert review_stack.main(["config", "--pr", "5", "--hosted-zone", ZONE, "--hours", "500", "--secrets-provider", SECRETS],
                             FakePulumi({}), tmp_path) == 2
    assert capsys.readouterr().err.strip().endswith("--hours 500: expected 1 to 168")


def test_the_sweeper_destroys_exactly_the_closed_expired_and_abandoned_stacks(tmp_path: Path) -> None:
    stacks: dict[str, dict[str, Any]] = {
        "organization/forgestack/dev": {"outputs": {}},                                               # never a review stack
        "organization/forgestack/review-1": {"outputs": {"expiresAt": _iso(NOW + timedelta(hours=5))}},  # PR closed
        "organization/forgestack/review-2": {"outputs": {"expiresAt": _iso(NOW - timedelta(minutes=1))}},  # expired
        "organization/forgestack/review-3": {"outputs": {"expiresAt": _iso(NOW + timedelta(hours=5))}},  # stays
        "organization/forgestack/review-4": {"outputs": None, "lastUpdate": _iso(NOW - timedelta(hours=200))},  # abandoned
        "organization/forgestack/review-5": {"outputs": None, "lastUpdate": _iso(NOW - timedelta(hours=1))},  # first deploy
        "organization/forgestack/review-6": {"outputs": {}, "updateInProgress": True},                # closed, but deploying
        "organization/forgestack/review-8": {"outputs": None},                                         # just created
    }
    pulumi = FakePulumi(stacks)
    assert review_stack.main(["sweep", "--hosted-zone", ZONE, "--open-prs", "2,3,4,5,8"], pulumi, tmp_path) == 0
    changes = [call for call in pulumi.calls if call[0] == "destroy" or call[:2] == ["stack", "rm"]]
    assert changes == [
        ["destroy", "--stack", "review-1", "--yes", "--skip-preview"], ["stack", "rm", "review-1", "--yes"],
        ["destroy", "--stack", "review-2", "--yes", "--skip-preview"], ["stack", "rm", "review-2", "--yes"],
        ["destroy", "--stack", "review-4", "--yes", "--skip-preview"], ["stack", "rm", "review-4", "--yes"],
    ]
    assert sorted(path.name for path in tmp_path.glob("Pulumi.*.yaml")) == [
        "Pulumi.review-1.yaml", "Pulumi.review-2.yaml", "Pulumi.review-4.yaml"]  # each destroy had its stack file


def test_a_failed_destroy_stops_with_one_line_and_removes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pulumi = FakePulumi({"review-7": {"outputs": {"expiresAt": _iso(NOW - timedelta(hours=1))}}}, fail_destroy=True)
    assert review_stack.main(["sweep", "--hosted-zone", ZONE, "--open-prs", "7"], pulumi, tmp_path) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "review-stack: pulumi destroy --stack review-7 failed: error: the stack is locked")
    assert ["stack", "rm", "review-7", "--yes"] not in pulumi.calls


def test_bad_usage_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert review_stack.main(["sweep", "--hosted-zone", ZONE, "--open-prs", "12,x"], FakePulumi({}), tmp_path) == 2
    assert "expected comma-separated pull request numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        review_stack.main(["--help"])
    assert exited.value.code == 0 and "MAX_REVIEW_STACKS" in capsys.readouterr().out
