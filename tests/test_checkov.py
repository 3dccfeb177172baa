"""Checkov 3.3.30 (its own venv, tools/checkov) over each AWS stack's rehearsed resources as a Terraform plan.

The plan document is the bridge: pulumi-aws is the Terraform provider underneath, so each resource is written with
its Terraform type and arguments, and references are recovered so Checkov's graph checks (CKV2_*) see which bucket
logs where. A planted weakness shows the bridge carries what the checks read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from policy.forgestack_rules import CHECKOV_ACCEPTED
from rehearsal.engine import HA_OVERRIDES, ProgramRun, run_program, stack_config
from rehearsal.terraform_plan import UnmappedTypeError, plan_document, snake_case, terraform_values
from scripts.checkov_scan import CHECKOV, scan, scan_all
from tests.readme_support import accepted_table


def _checkov_installed() -> None:
    if not CHECKOV.exists():
        message = "Checkov not installed in tools/checkov/.venv (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_each_aws_stack_fails_only_the_accepted_checks_and_every_acceptance_is_still_needed(
        dev_run: ProgramRun, staging_run: ProgramRun, prod_run: ProgramRun, tmp_path: Path) -> None:
    """Every stack, ha included, in one Checkov run (scan_all) along with a weakened dev: CKV_AWS_18 (access logging),
    CKV_AWS_158 (flow logs on a CMK) and CKV_AWS_189 (volume on a CMK) failed before the review; with volumeKey
    aws-managed the volume check must fail again, so the plan carries the argument it reads."""
    _checkov_installed()
    ha_run = run_program("prod", stack_config("prod", HA_OVERRIDES))
    weak_run = run_program("dev", {**stack_config("dev"), "forgestack:volumeKey": "aws-managed"})
    runs = {"dev": dev_run, "staging": staging_run, "prod": prod_run, "prod-ha": ha_run, "dev-weak": weak_run}
    for label in runs:
        (tmp_path / label).mkdir()
    results = scan_all({tmp_path / label / "plan.json": run for label, run in runs.items()})
    by_label = {label: results[tmp_path / label / "plan.json"] for label in runs}

    reported: set[tuple[str, str]] = set()
    for label in ("dev", "staging", "prod", "prod-ha"):
        result = by_label[label]
        assert result.passed > 150, label  # the scan saw the stack, not an empty document
        assert [(f.check_id, f.resource, f.title) for f in result.unaccepted()] == [], label
        reported |= {(f.check_id, f.resource) for f in result.failed}
    assert set(CHECKOV_ACCEPTED) - reported == set(), "accepted findings no stack reports any more: remove them"

    weak = {(f.check_id, f.resource) for f in by_label["dev-weak"].failed}
    assert ("CKV_AWS_189", "host-data") in weak and ("CKV_AWS_189", "host-data") not in reported
    assert not {("CKV_AWS_18", "backups-bucket"), ("CKV_AWS_158", "network-flow-logs")} & weak


def test_one_stack_is_scanned_alone_as_the_script_does(dev_run: ProgramRun, tmp_path: Path) -> None:
    _checkov_installed()
    result = scan(dev_run, tmp_path / "plan.json")
    assert result.passed > 150 and result.unaccepted() == []


def test_secret_inputs_never_reach_the_plan_document(prod_run: ProgramRun) -> None:
    document = json.dumps(plan_document(prod_run), default=str)
    version = prod_run.one("aws:secretsmanager/secretVersion:SecretVersion")
    assert isinstance(version.inputs["secretString"], str) and len(version.inputs["secretString"]) > 20
    assert version.inputs["secretString"] not in document
    (secret_version,) = [r for r in plan_document(prod_run)["planned_values"]["root_module"]["resources"]
                         if r["type"] == "aws_secretsmanager_secret_version"]
    assert secret_version["values"]["secret_string"] == "[secret]"


def test_references_are_recovered_from_ids() -> None:
    run = run_program("dev", stack_config("dev"))
    document = plan_document(run)
    (logging,) = [r for r in document["configuration"]["root_module"]["resources"] if r["type"] == "aws_s3_bucket_logging"]
    assert "aws_s3_bucket.backups_bucket" in logging["expressions"]["bucket"]["references"]
    assert "aws_s3_bucket.backups_access_logs" in logging["expressions"]["target_bucket"]["references"]


def test_arguments_are_terraform_names_and_maps_keep_their_keys() -> None:
    assert snake_case("kmsKeyId") == "kms_key_id"
    assert snake_case("userDataBase64") == "user_data_base64"
    converted = terraform_values({"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}],
                                  "tags": {"forgestack:role": "data", "Name": "x"}, "rootBlockDevice": {"kmsKeyId": "k"},
                                  "port": 80.0, "threshold": 0.5})
    # Nested blocks are lists (as in `terraform show -json`), maps stay maps, whole numbers are integers (the mocks
    # deliver floats: port 80.0 would not equal Checkov's "80").
    assert converted == {"rule": [{"apply_server_side_encryption_by_default": [{"sse_algorithm": "aws:kms"}]}],
                         "tags": {"forgestack:role": "data", "Name": "x"}, "root_block_device": [{"kms_key_id": "k"}],
                         "port": 80, "threshold": 0.5}


def test_a_type_without_a_terraform_name_is_an_error_not_a_gap(dev_run: ProgramRun) -> None:
    odd = dev_run.resources[0].__class__(type="aws:new/thing:Thing", name="x", inputs={}, id="x", outputs={}, custom=True)
    with pytest.raises(UnmappedTypeError, match="aws:new/thing:Thing"):
        plan_document(ProgramRun([*dev_run.resources, odd], {}, set()))


def test_the_readme_lists_exactly_the_accepted_checkov_findings() -> None:
    assert accepted_table("| check | resource | why it is accepted |") == CHECKOV_ACCEPTED
