"""Whole-program invariants for the AWS stacks, run from each stack file's config."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from components.host import decode_user_data
from rehearsal.engine import REPO, ProgramRun

COMPONENT_TYPES = {"forgestack:aws:Network", "forgestack:core:Credentials", "forgestack:aws:Backups",
                   "forgestack:aws:Host", "forgestack:aws:Dns"}
STATEFUL = {"aws:s3/bucket:Bucket", "aws:kms/key:Key", "aws:secretsmanager/secret:Secret", "aws:ebs/volume:Volume"}
REQUIRED_OUTPUTS = {"giteaUrl", "hostPublicIp", "backupBucketName", "credentialsSecretArn", "instanceId", "vpcId"}


def test_required_outputs_exist(aws_run: ProgramRun) -> None:
    assert set(aws_run.outputs) >= REQUIRED_OUTPUTS
    assert all(aws_run.outputs[name] for name in REQUIRED_OUTPUTS)


def test_every_component_exists_once(aws_run: ProgramRun) -> None:
    for type_ in COMPONENT_TYPES:
        aws_run.one(type_)


def test_every_resource_has_a_component_parent(aws_run: ProgramRun) -> None:
    components = {r.urn for r in aws_run.resources if not r.custom}
    orphans = [r.name for r in aws_run.resources if r.custom and r.type.startswith(("aws:", "random:"))
               and r.parent not in components]
    assert orphans == []


def test_logical_names_carry_their_component_prefix(aws_run: ProgramRun) -> None:
    components = {r.urn: r.name for r in aws_run.resources if not r.custom}
    for resource in aws_run.resources:
        if resource.parent in components:
            assert resource.name.startswith(components[resource.parent] + "-"), resource.name


def test_aws_resources_use_the_tagging_provider(aws_run: ProgramRun) -> None:
    provider = aws_run.one("pulumi:providers:aws", "aws")
    default_tags = provider.inputs["defaultTags"]
    tags = (json.loads(default_tags) if isinstance(default_tags, str) else default_tags)["tags"]  # providers get JSON
    stack = "prod" if "prod" in provider.urn else "dev"
    assert tags == {"project": "forgestack", "stack": stack, "managed-by": "pulumi"}
    for resource in aws_run.resources:
        if resource.custom and resource.type.startswith("aws:"):
            assert resource.provider.startswith(provider.urn + "::"), resource.name


def test_prod_protects_every_stateful_resource(prod_run: ProgramRun) -> None:
    stateful = [r for r in prod_run.resources if r.type in STATEFUL]
    # three buckets (backups, access logs, the replica), seven keys (two for the alarm topics, one for the volumes, one for
    # the replica region), the secret, the data volume
    assert len(stateful) == 12
    assert [r.name for r in stateful if not r.protect] == []


def test_dev_protects_nothing(dev_run: ProgramRun) -> None:
    assert [r.name for r in dev_run.resources if r.protect] == []


def test_prod_host_is_arm64_and_termination_protected(prod_run: ProgramRun, dev_run: ProgramRun) -> None:
    assert prod_run.one("aws:ec2/instance:Instance").inputs["instanceType"] == "m7g.large"
    assert "arch=arm64" in decode_user_data(prod_run.one("aws:ec2/instance:Instance").inputs["userDataBase64"])
    assert prod_run.one("aws:ec2/instance:Instance").inputs["disableApiTermination"] is True
    assert dev_run.one("aws:ec2/instance:Instance").inputs["disableApiTermination"] is False


@pytest.mark.parametrize(("stack", "stack_file"), [("dev", "minimal-aws.yaml"), ("local", "minimal-local.yaml")])
def test_a_stack_file_with_only_the_required_keys_rehearses_clean(stack: str, stack_file: str) -> None:
    """The shipped defaults deploy: no instance type, no switch, nothing but the required keys."""
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "rehearse.py"), "--stack", stack,
                             "--stack-file", str(REPO / "tests" / "stacks" / stack_file)],
                            capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("; 0 problems"), result.stdout[-500:]
