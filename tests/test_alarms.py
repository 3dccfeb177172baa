"""Alarms from outside the host: created in the emulated account pointing at the real instance and health check,
notifying KMS-encrypted topics that mail the operator; and the heartbeat, run as the host runs it."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from components.alarms import HEARTBEAT_METRIC, HEARTBEAT_NAMESPACE, ROUTE53_METRICS_REGION, topic_policy
from components.host_files import HEARTBEAT_SCRIPT, HEARTBEAT_UNIT, Heartbeat, host_bundle
from components.services import gitea, monitoring
from components.settings import parse
from rehearsal.emulated import EmulatedAccount, emulated_account, rehearse, stack_region
from rehearsal.engine import ProgramRun, stack_config
from tests.backup_support import REGION, run_script, unpack_bundle

Rehearsal = tuple[ProgramRun, EmulatedAccount]


PAGER = "https://events.pager.example.com/sns/t0k3n"


@pytest.fixture(scope="module")
def rehearsed() -> Iterator[Rehearsal]:
    config = stack_config("prod", {"forgestack:alarmHttpsEndpoints": json.dumps([PAGER])})
    with emulated_account(stack_region(config), config["forgestack:hostedZone"]) as account:
        yield rehearse("prod", config, account), account


def alarms_by_metric(account: EmulatedAccount, region: str) -> dict[str, dict[str, Any]]:
    return {a["MetricName"]: a for a in account.client("cloudwatch", region).describe_alarms()["MetricAlarms"]}


def test_status_checks_recover_and_reboot_the_real_instance(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    alarms = alarms_by_metric(account, account.region)
    topic = run.outputs["alarmTopicArns"][account.region]
    for metric, action in (("StatusCheckFailed_System", "recover"), ("StatusCheckFailed_Instance", "reboot")):
        alarm = alarms[metric]
        assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": run.outputs["instanceId"]}]
        assert alarm["AlarmActions"] == [f"arn:aws:automate:{account.region}:ec2:{action}", topic]
        assert alarm["OKActions"] == [topic]


def test_route53_checks_giteas_health_path_and_alarms_in_us_east_1(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    (check,) = account.client("route53").list_health_checks()["HealthChecks"]
    config = check["HealthCheckConfig"]
    assert (config["Type"], config["FullyQualifiedDomainName"], config["ResourcePath"], config["Port"]) == (
        "HTTPS", run.outputs["giteaUrl"].split("/")[2], gitea.HEALTH_PATH, 443)
    alarm = alarms_by_metric(account, ROUTE53_METRICS_REGION)["HealthCheckStatus"]  # the only region with the metric
    assert alarm["Dimensions"] == [{"Name": "HealthCheckId", "Value": check["Id"]}]
    assert alarm["Namespace"] == "AWS/Route53" and alarm["TreatMissingData"] == "breaching"
    east_topic = run.outputs["alarmTopicArns"][ROUTE53_METRICS_REGION]
    assert east_topic.split(":")[3] == ROUTE53_METRICS_REGION
    assert alarm["AlarmActions"] == alarm["OKActions"] == [east_topic]


def test_a_silent_host_breaches_the_heartbeat_alarm(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    alarm = alarms_by_metric(account, account.region)[HEARTBEAT_METRIC]
    assert (alarm["Namespace"], alarm["TreatMissingData"], alarm["Period"]) == (HEARTBEAT_NAMESPACE, "breaching", 60)
    assert alarm["Dimensions"] == [{"Name": "Stack", "Value": "prod"}]
    assert alarm["AlarmActions"] == alarm["OKActions"] == [run.outputs["alarmTopicArns"][account.region]]


def test_every_topic_is_encrypted_and_mails_the_operator(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    email = stack_config("prod")["forgestack:alertEmailTo"]
    assert "t0k3n" not in json.dumps(run.outputs)
    for region, arn in run.outputs["alarmTopicArns"].items():
        sns = account.client("sns", region)
        attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
        key = account.client("kms", region).describe_key(KeyId=attributes["KmsMasterKeyId"])["KeyMetadata"]
        assert key["Arn"].split(":")[3] == region  # a key of the topic's own region
        policy = json.loads(account.client("kms", region).get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"])
        assert any(s["Principal"] == {"Service": ["cloudwatch.amazonaws.com", "budgets.amazonaws.com"]} for s in policy["Statement"])
        subscriptions = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
        assert sorted((s["Protocol"], s["Endpoint"]) for s in subscriptions) == [("email", email), ("https", PAGER)]
        assert json.loads(attributes["Policy"]) == json.loads(topic_policy(arn))


def test_the_host_may_put_only_heartbeat_metrics(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    role = account.client("iam").list_role_policies(RoleName=run.one("aws:iam/role:Role", "host-role").id)["PolicyNames"][0]
    document = account.client("iam").get_role_policy(RoleName=run.one("aws:iam/role:Role", "host-role").id, PolicyName=role)
    (statement,) = [s for s in document["PolicyDocument"]["Statement"] if s["Action"] == "cloudwatch:PutMetricData"]
    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": HEARTBEAT_NAMESPACE}}


# ------------------------------------------------------------------ the heartbeat as the host runs it

WATCHDOG_FIRING = json.dumps([{"labels": {"alertname": "Watchdog", "severity": "none"}, "status": {"state": "active"}}])


def fake_docker(directory: Path, info_exit: int, alerts: str) -> dict[str, str]:
    """A `docker` on PATH: `info` exits info_exit; `exec ... wget` prints alerts (Alertmanager's answer)."""
    directory.mkdir(exist_ok=True)
    (directory / "alerts.json").write_text(alerts)
    script = directory / "docker"
    script.write_text(f'#!/bin/sh\ncase "$1" in\n  info) exit {info_exit} ;;\n  exec) cat {directory}/alerts.json ;;\nesac\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{directory}:{os.environ['PATH']}"}


def heartbeat_args(stack: str) -> list[str]:
    return ["--stack", stack, "--namespace", HEARTBEAT_NAMESPACE, "--metric", HEARTBEAT_METRIC,
            "--alertmanager-container", "forgestack-alertmanager", "--watchdog", monitoring.WATCHDOG]


def datapoint_count(env: dict[str, str], stack: str) -> int:
    """Datapoints moto's CloudWatch holds for this stack's heartbeat (the server is shared by the module's tests,
    so every test uses a stack name of its own)."""
    cloudwatch = boto3.client("cloudwatch", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=REGION,
                              aws_access_key_id="testing", aws_secret_access_key="testing")
    now = datetime.now(UTC)
    answer = cloudwatch.get_metric_statistics(
        Namespace=HEARTBEAT_NAMESPACE, MetricName=HEARTBEAT_METRIC, Dimensions=[{"Name": "Stack", "Value": stack}],
        StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=5), Period=3600, Statistics=["SampleCount"])
    return int(sum(point["SampleCount"] for point in answer["Datapoints"]))


def test_a_healthy_host_sends_its_heartbeat(tmp_path: Path, aws_env: dict[str, str]) -> None:
    env = {**aws_env, **fake_docker(tmp_path / "bin", 0, WATCHDOG_FIRING)}
    stack = f"healthy-{tmp_path.name}"
    for _ in range(2):
        result = run_script("heartbeat.py", heartbeat_args(stack), env)
        assert result.returncode == 0, result.stderr
    assert datapoint_count(env, stack) == 2  # one datapoint per run, under the dimension the alarm watches


@pytest.mark.parametrize(("info_exit", "alerts", "reason"), [
    (1, WATCHDOG_FIRING, "Docker does not answer"),
    (0, "[]", "no active Watchdog alert"),
    (0, "<html>502</html>", "not JSON"),
])
def test_a_broken_host_sends_nothing_and_says_why(tmp_path: Path, aws_env: dict[str, str], info_exit: int, alerts: str,
                                                  reason: str) -> None:
    env = {**aws_env, **fake_docker(tmp_path / "bin", info_exit, alerts)}
    stack = f"broken-{tmp_path.name}"
    result = run_script("heartbeat.py", heartbeat_args(stack), env)
    assert result.returncode == 1
    assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert datapoint_count(env, stack) == 0


def test_a_watchdog_check_without_its_alert_name_is_a_usage_error(aws_env: dict[str, str]) -> None:
    result = run_script("heartbeat.py", heartbeat_args("x")[:-2], aws_env)
    assert result.returncode == 2 and "needs --watchdog" in result.stderr


def test_the_heartbeat_ships_with_a_minutely_timer(tmp_path: Path) -> None:
    beat = Heartbeat("prod", REGION, HEARTBEAT_NAMESPACE, HEARTBEAT_METRIC, "forgestack-alertmanager", monitoring.WATCHDOG)
    bundle = host_bundle(None, beat)
    files = unpack_bundle(bundle.stdin, tmp_path)
    assert f"{HEARTBEAT_UNIT}.timer" in bundle.timers
    assert "OnCalendar=minutely" in files[f"/etc/systemd/system/{HEARTBEAT_UNIT}.timer"]
    assert "--alertmanager-container forgestack-alertmanager --watchdog Watchdog" in files[f"/etc/systemd/system/{HEARTBEAT_UNIT}.service"]
    assert files[HEARTBEAT_SCRIPT] == (Path(__file__).resolve().parent.parent / "components/host_tools/heartbeat.py").read_text()


def test_the_watchdog_always_fires_and_reaches_nobody() -> None:
    settings = parse(stack_config("prod"), stack="prod")
    watchdog = next(a for a in monitoring.alerts(settings, probes=True) if a.name == monitoring.WATCHDOG)
    assert watchdog.expr == "vector(1)" and watchdog.duration == "0m"
    routes = yaml.safe_load(monitoring.alertmanager_config(settings))["route"]["routes"]
    assert routes[0] == {"matchers": [f'alertname="{monitoring.WATCHDOG}"'], "receiver": "nobody"}  # first match wins
