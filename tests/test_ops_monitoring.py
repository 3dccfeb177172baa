"""Monitoring of topology ha on the ops host: Prometheus finds every Gitea task under the Cloud Map name ECS registers
them under (rehearsed against moto's Cloud Map and ECS), Grafana draws exactly what the CloudWatch alarms watch (compared
with the alarms read back from moto), the rendered Prometheus configuration passes promtool, and the credential tool
writes a file only its reader can read (against moto's Secrets Manager)."""

from __future__ import annotations

import base64
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from components import ops_host, ops_monitoring
from components.host_tools import credential_file
from components.services import gitea, monitoring
from rehearsal.emulated import EmulatedAccount
from rehearsal.engine import ProgramRun


def installed_bundle(run: ProgramRun, account: EmulatedAccount, target: str) -> dict[str, str]:
    """The files the ops host's SSM document installs into target: decoded from the document stored in the account."""
    document = account.client("ssm").get_document(Name=run.one("aws:ssm/document:Document", "ops-tools").outputs["name"])
    commands = json.loads(document["Content"])["mainSteps"][0]["inputs"]["runCommand"]
    (line,) = [line for line in commands if line.endswith(f"> {target}.new.tar.gz")]
    encoded = line.split("'")[3]  # printf '%s' '<base64>' | base64 -d > ...
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(encoded)), mode="r:gz") as archive:
        return {
            "/" + member.name: archive.extractfile(member).read().decode()  # type: ignore[union-attr]
            for member in archive.getmembers()
            if member.isfile()
        }


def test_prometheus_scrapes_every_gitea_task_under_the_name_ecs_registers_them(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = ha_rehearsal
    discovery = account.client("servicediscovery")
    (namespace,) = discovery.list_namespaces()["Namespaces"]
    assert namespace["Type"] == "DNS_PRIVATE"  # resolvable inside the VPC only
    (registry,) = discovery.list_services()["Services"]
    service = discovery.get_service(Id=registry["Id"])["Service"]
    assert [(record["Type"], record["TTL"]) for record in service["DnsConfig"]["DnsRecords"]] == [("A", 10)]
    assert service["DnsConfig"]["RoutingPolicy"] == "MULTIVALUE"  # every task's address, not one of them
    (ecs_service,) = account.client("ecs").describe_services(cluster=run.outputs["clusterName"], services=[run.outputs["serviceName"]])[
        "services"
    ]
    assert ecs_service["serviceRegistries"] == [{"registryArn": service["Arn"]}]

    config = yaml.safe_load(installed_bundle(run, account, ops_host.MONITORING_DIR)[ops_monitoring.PROMETHEUS_FILE])
    (gitea_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "gitea"]
    assert gitea_job["dns_sd_configs"] == [
        {"names": [f"{service['Name']}.{namespace['Name']}"], "type": "A", "port": gitea.HTTP_PORT, "refresh_interval": "30s"}
    ]
    assert gitea_job["metrics_path"] == gitea.METRICS_PATH
    # The bearer token file is where the Prometheus unit mounts the token it fetched.
    prometheus_unit = next(unit for unit in ops_monitoring.container_units(_monitoring()) if unit.name == ops_monitoring.PROMETHEUS_UNIT)
    assert gitea_job["authorization"]["credentials_file"] == prometheus_unit.credential_path
    assert prometheus_unit.credential == gitea.METRICS_CREDENTIAL


def test_grafana_draws_exactly_what_the_alarms_watch(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = ha_rehearsal
    files = installed_bundle(run, account, ops_host.MONITORING_DIR)
    board = json.loads(files[f"{ops_monitoring.GRAFANA_DASHBOARDS_DIR}/{ops_monitoring.MANAGED_BOARD}.json"])
    drawn = set()
    for panel in board["panels"]:
        (target,) = panel["targets"]
        threshold = panel["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"]
        drawn.add((target["namespace"], target["metricName"], json.dumps(target["dimensions"], sort_keys=True), target["statistic"],
                   int(target["period"]), float(threshold)))  # fmt: skip
        assert target["datasource"] == {"type": "cloudwatch", "uid": "cloudwatch"} and target["region"] == "eu-west-1"
    alarms = account.client("cloudwatch").describe_alarms(AlarmNamePrefix="alarms-")["MetricAlarms"]
    watched = {
        (alarm["Namespace"], alarm["MetricName"], json.dumps({d["Name"]: d["Value"] for d in alarm["Dimensions"]}, sort_keys=True),
         alarm["Statistic"], alarm["Period"], float(alarm["Threshold"]))
        for alarm in alarms
    }  # fmt: skip
    assert len(board["panels"]) == len(alarms) and drawn == watched
    sources = yaml.safe_load(files[f"{ops_monitoring.GRAFANA_PROVISIONING_DIR}/datasources/forgestack.yaml"])["datasources"]
    by_uid = {source["uid"]: source for source in sources}
    assert by_uid["cloudwatch"]["jsonData"] == {"authType": "default", "defaultRegion": "eu-west-1"}  # the instance role
    assert by_uid["prometheus"]["url"] == f"http://127.0.0.1:{monitoring.PROMETHEUS_PORT}"


def test_the_ops_role_may_read_metrics_for_grafana_and_nothing_more_of_cloudwatch(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, _ = ha_rehearsal
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "ops-policy").inputs["policy"])
    actions = {
        action
        for statement in policy["Statement"]
        if statement["Effect"] == "Allow"
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
        if action.startswith("cloudwatch:")
    }
    assert actions == {action for action in ops_host.GRAFANA_CLOUDWATCH_ACTIONS if action.startswith("cloudwatch:")} | {
        "cloudwatch:PutMetricData"  # the backup's success datapoint, kept to its namespace
    }
    assert not [action for action in actions if action.startswith(("cloudwatch:Put", "cloudwatch:Delete", "cloudwatch:Set"))
                if action != "cloudwatch:PutMetricData"]  # fmt: skip


def test_the_monitoring_listens_on_loopback_and_no_credential_is_in_the_document(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = ha_rehearsal
    document = account.client("ssm").get_document(Name=run.one("aws:ssm/document:Document", "ops-tools").outputs["name"])["Content"]
    generated = [r.outputs["result"] for r in run.of_type("random:index/randomPassword:RandomPassword")]
    assert generated and not [value for value in generated if value in document]
    units = {unit.name: unit for unit in ops_monitoring.container_units(_monitoring())}
    prometheus = units[ops_monitoring.PROMETHEUS_UNIT].docker_run()
    assert f"--web.listen-address=127.0.0.1:{monitoring.PROMETHEUS_PORT}" in prometheus
    grafana = units[ops_monitoring.GRAFANA_UNIT].docker_run()
    assert "GF_SERVER_HTTP_ADDR=127.0.0.1" in grafana and f"GF_SECURITY_ADMIN_PASSWORD__FILE={monitoring.GRAFANA_PASSWORD_FILE}" in grafana
    for argv in (prometheus, grafana):
        assert "-p" not in argv and "--publish" not in argv and argv[argv.index("--network") + 1] == "host"
        assert "--cap-drop" in argv and "no-new-privileges" in argv
    # The operator's way in: an SSM port forward to the ops instance, nothing opened in a security group.
    forward = shlex.split(run.outputs["grafanaPortForward"])
    assert forward[:3] == ["aws", "ssm", "start-session"] and run.outputs["opsInstanceId"] in forward
    assert "AWS-StartPortForwardingSession" in forward


def _monitoring(**changes: Any) -> ops_monitoring.OpsMonitoring:
    values: dict[str, Any] = {
        "stack": "prod", "region": "eu-west-1", "domain": "forge.example.com",
        "gitea_discovery_name": "gitea.prod.forgestack.internal",
        "credentials_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:forge-credentials",
        "panels": (), "directory": ops_host.MONITORING_DIR, "credential_tool": ops_host.CREDENTIAL_TOOL,
    }  # fmt: skip
    values.update(changes)
    return ops_monitoring.OpsMonitoring(**values)


def test_promtool_accepts_the_ops_prometheus_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus (.ci/run installs it)"
    token = tmp_path / "metricsToken"
    token.write_text("token")
    config = ops_monitoring.prometheus_config(_monitoring()).replace(monitoring.bearer_file(gitea.METRICS_CREDENTIAL), str(token))
    (tmp_path / "prometheus.yml").write_text(config)
    result = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


SECRET_VALUES = {gitea.METRICS_CREDENTIAL: "metrics-token-value-0123456789", "grafanaAdminPassword": "grafana-password-value"}


@pytest.fixture
def credentials_secret() -> Any:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="eu-west-1")
        # A name of its own: inside the module's rehearsal (one emulated account) moto keeps what earlier tests made.
        yield client.create_secret(Name=f"forge-credentials-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(SECRET_VALUES))["ARN"]


def test_the_credential_file_is_the_secrets_value_readable_by_its_reader_alone(
    credentials_secret: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "metricsToken"
    output.write_text("the previous token")
    owner = 65534 if os.geteuid() == 0 else os.geteuid()
    argv = ["--secret", credentials_secret, "--key", gitea.METRICS_CREDENTIAL, "--output", str(output), "--owner", str(owner)]
    assert credential_file.main(argv) == credential_file.EXIT_OK
    assert output.read_text() == SECRET_VALUES[gitea.METRICS_CREDENTIAL]
    assert (output.stat().st_mode & 0o777, output.stat().st_uid) == (0o400, owner)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metricsToken"]  # no temporary file left
    captured = capsys.readouterr()
    assert SECRET_VALUES[gitea.METRICS_CREDENTIAL] not in captured.out + captured.err


def test_a_missing_key_leaves_the_previous_file_and_says_so_in_one_line(
    credentials_secret: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "metricsToken"
    output.write_text("the previous token")
    argv = ["--secret", credentials_secret, "--key", "noSuchKey", "--output", str(output), "--owner", str(os.geteuid())]
    assert credential_file.main(argv) == credential_file.EXIT_FAILED
    assert output.read_text() == "the previous token"
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "noSuchKey" in error[0] and "Traceback" not in error[0]
    nowhere = str(tmp_path / "nowhere" / "token")
    assert credential_file.main(["--secret", credentials_secret, "--key", "metricsToken", "--output", nowhere, "--owner", "0"]) == 2


def test_the_credential_tool_has_help() -> None:
    result = subprocess.run([sys.executable, credential_file.__file__, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "--owner" in result.stdout
