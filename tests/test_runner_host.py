"""The runner host (topology ha, ci actions): the Gitea Runner on an instance of its own, rehearsed against moto; one
registration token shared with Gitea through Secrets Manager; user data, unit and token fetch checked by cloud-init,
systemd and sh."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components import cluster, runner_host
from components.host import decode_user_data
from components.services import ci
from rehearsal.emulated import EmulatedAccount
from rehearsal.engine import HA_OVERRIDES, ProgramRun, run_program, stack_config
from tests.shims import install_shim

HA = HA_OVERRIDES
SERVICE = runner_host.RunnerService(
    stack="prod", region="eu-west-1", token_secret_arn="arn:aws:secretsmanager:eu-west-1:123456789012:secret:runner-token-AbCdEf",
    instance_url="https://git.forge.example.com/",
)  # fmt: skip


def test_the_runner_host_is_private_and_reaches_the_internet_but_no_data_tier(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = ha_rehearsal
    ec2 = account.client("ec2")
    (reservation,) = ec2.describe_instances(InstanceIds=[run.outputs["runnerInstanceId"]])["Reservations"]
    (instance,) = reservation["Instances"]
    assert "PublicIpAddress" not in instance and instance["InstanceType"] == "t4g.medium"
    assert instance["MetadataOptions"]["HttpTokens"] == "required" and instance["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    (ops,) = ec2.describe_instances(InstanceIds=[run.outputs["opsInstanceId"]])["Reservations"][0]["Instances"]
    assert instance["Placement"]["AvailabilityZone"] != ops["Placement"]["AvailabilityZone"]
    (group,) = [g for g in ec2.describe_security_groups(GroupIds=[s["GroupId"] for s in instance["SecurityGroups"]])["SecurityGroups"]]
    assert group["IpPermissions"] == []  # nothing reaches it
    assert [(rule["IpProtocol"], rule["IpRanges"]) for rule in group["IpPermissionsEgress"]] == [
        ("-1", [{"CidrIp": "0.0.0.0/0", "Description": "all outbound (webhooks, mail, images, AWS APIs)"}])
    ]
    data_tiers = [
        g
        for g in ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [run.outputs["vpcId"]]}])["SecurityGroups"]
        if g["Description"].removeprefix("forgestack ha: ") in ("database", "cache", "file-system")
    ]
    sources = {pair["GroupId"] for g in data_tiers for rule in g["IpPermissions"] for pair in rule["UserIdGroupPairs"]}
    assert group["GroupId"] not in sources


def test_the_runner_role_reads_the_token_and_nothing_else_of_the_stack(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, _ = ha_rehearsal
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "runner-policy").inputs["policy"])
    token = run.one("aws:secretsmanager/secret:Secret", "runner-token-secret").outputs["arn"]
    reads = [statement for statement in policy["Statement"] if "secretsmanager:GetSecretValue" in json.dumps(statement["Action"])]
    assert [statement["Resource"] for statement in reads] == [token]
    assert run.outputs["credentialsSecretArn"] not in json.dumps(policy)
    assert not [s for s in policy["Statement"] if "s3:" in json.dumps(s["Action"]) or "elasticfilesystem" in json.dumps(s["Action"])]


def test_gitea_and_the_runner_share_one_token_that_appears_in_no_definition(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = ha_rehearsal
    token_arn = run.one("aws:secretsmanager/secret:Secret", "runner-token-secret").outputs["arn"]
    definition = run.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    containers = {c["name"]: c for c in json.loads(definition)}
    variable = cluster.secret_variable(cluster.RUNNER_TOKEN_SECRET_FILE)
    assert {"name": variable, "valueFrom": token_arn} in containers[cluster.SECRETS_CONTAINER]["secrets"]
    assert f"> {ci.RUNNER_TOKEN_FILE}" in containers[cluster.SECRETS_CONTAINER]["command"][0]
    environment = {e["name"]: e["value"] for e in containers[cluster.GITEA_CONTAINER]["environment"]}
    assert environment["GITEA_RUNNER_REGISTRATION_TOKEN_FILE"] == ci.RUNNER_TOKEN_FILE
    execution = run.one("aws:iam/rolePolicy:RolePolicy", "cluster-execution-secrets").inputs["policy"]
    assert token_arn in execution
    value = account.client("secretsmanager").get_secret_value(SecretId=token_arn)["SecretString"]
    assert len(value) == runner_host.TOKEN_LENGTH and value.isalnum()
    user_data = decode_user_data(run.one("aws:ec2/instance:Instance", "runner-instance").inputs["userDataBase64"])
    assert value not in user_data and value not in definition and token_arn in user_data


def test_the_runner_is_configured_as_on_the_single_host(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, _ = ha_rehearsal
    user_data = yaml.safe_load(decode_user_data(run.one("aws:ec2/instance:Instance", "runner-instance").inputs["userDataBase64"]))
    files = {entry["path"]: entry["content"] for entry in user_data["write_files"]}
    config = ci.runner_config(runner_host.job_memory_mb(4096), untrusted_certificate=False)  # t4g.medium: 4 GiB
    assert files[runner_host.CONFIG_PATH] == config
    assert yaml.safe_load(config)["container"]["docker_host"] == "-"  # jobs never get the Docker socket
    assert runner_host.job_memory_mb(4096) == (4096 - runner_host.HOST_RESERVED_MIB) // ci.RUNNER_CAPACITY


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="Debian package cloud-init not installed (.ci/run installs it)")
def test_cloud_init_accepts_the_runner_user_data(tmp_path: Path) -> None:
    user_data = tmp_path / "user-data.yaml"
    user_data.write_text(runner_host.render_user_data(SERVICE, 1536))
    result = subprocess.run(["cloud-init", "schema", "-c", str(user_data)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (.ci/run installs systemd)")
def test_systemd_accepts_the_runner_unit(tmp_path: Path) -> None:
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    for executable in ("/bin/sh", "/usr/bin/docker"):
        install_shim(tmp_path / Path(executable).parent.relative_to("/"), Path(executable).name, "#!/bin/sh\n")
    unit = tmp_path / "etc/systemd/system" / f"{runner_host.UNIT}.service"
    unit.parent.mkdir(parents=True)
    # Amazon Linux's docker package brings this unit; a stand-in here.
    (unit.parent / "docker.service").write_text("[Service]\nExecStart=/usr/bin/docker\n")
    unit.write_text(runner_host.service_unit(SERVICE))
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={tmp_path}", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--volume /var/run/docker.sock:/var/run/docker.sock" in unit.read_text()  # the runner's, never a job's


def test_the_token_is_fetched_into_a_file_only_root_reads_and_into_no_command_line(tmp_path: Path) -> None:
    calls = tmp_path / "aws-calls"
    install_shim(
        tmp_path / "bin", "aws", f'#!/bin/sh\necho "$*" >> {calls}\nprintf "%s\\n" Zq4VbN0mXw8Lr2Tc6Yd1Zq4VbN0mXw8Lr2Tc6Yd1abcdefgh\n'
    )
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    result = subprocess.run(["sh", "-c", SERVICE.fetch_token(str(tmp_path))], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    token = tmp_path / "token"
    assert token.read_text().strip().startswith("Zq4VbN0m") and token.stat().st_mode & 0o777 == 0o600
    assert calls.read_text().split() == [
        "secretsmanager",
        "get-secret-value",
        "--region",
        "eu-west-1",
        "--secret-id",
        SERVICE.token_secret_arn,
        "--query",
        "SecretString",
        "--output",
        "text",
    ]


def test_without_actions_there_is_no_runner_and_no_token() -> None:
    run = run_program("prod", stack_config("prod", {**HA, "forgestack:ci": "none"}))
    assert [r.name for r in run.of_type("aws:secretsmanager/secret:Secret")] == ["credentials-secret"]
    assert "runnerInstanceId" not in run.outputs
    definition = run.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    assert "GITEA_RUNNER_REGISTRATION_TOKEN_FILE" not in definition
