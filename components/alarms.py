"""Alarms from outside the host: CloudWatch and Route 53 watch it, and SNS mails the operator without its help.

Every alert Prometheus raises comes from the host it watches; when the host, Docker or the monitoring stack dies,
those alerts die with it. These do not:
- EC2 status checks: a failed system check recovers the instance onto other hardware, a failed instance check
  reboots it.
- A Route 53 HTTPS health check of Gitea's health path, from Route 53's checkers around the world. Its metric
  exists only in us-east-1, so that alarm (and the topic it notifies, and that topic's key) live there.
- A heartbeat: the host puts one datapoint a minute while Docker answers and Alertmanager holds the always-firing
  Watchdog alert (so Prometheus evaluates rules and reaches Alertmanager); missing data counts as breaching.
Each alarm notifies its region's KMS-encrypted topic on ALARM and on OK.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from components import budget
from components.backup_job import max_backup_age_seconds
from components.constants import TOPIC_PUBLISHERS
from components.host_tools.heartbeat import DIMENSION as HEARTBEAT_DIMENSION
from components.kms import rotating_key
from components.services.dashboards import CloudWatchPanel

ROUTE53_METRICS_REGION: Final = "us-east-1"  # Route 53 publishes health-check metrics only here
HEARTBEAT_NAMESPACE: Final = "forgestack"
HEARTBEAT_METRIC: Final = "Heartbeat"
HEARTBEAT_MISSING_MINUTES: Final = 5  # a reboot takes 1-3 minutes; five silent minutes is an outage
BACKUP_METRIC: Final = "BackupSucceeded"  # topology ha: one datapoint per successful backup of the ops host; silence alarms
RESTORE_DRILL_METRIC: Final = "RestoreDrillSucceeded"  # topology ha: one datapoint per passed restore drill of the ops host
RESTORE_DRILL_MISSING_DAYS: Final = 7  # CloudWatch looks back 7 days at most; the ops host drills twice a week
HEALTH_CHECK_INTERVAL_SECONDS: Final = 30
HEALTH_CHECK_FAILURES: Final = 3  # consecutive failed checks before a checker calls it unhealthy
STATUS_CHECK_MINUTES: Final = 2


@dataclass(frozen=True)
class MetricAlarmSpec:
    """One CloudWatch alarm on an AWS service metric, notifying the stack's topic."""

    name: str
    description: str
    namespace: str
    metric: str
    dimensions: Mapping[str, pulumi.Input[str]]
    statistic: str
    threshold: float
    comparison: str
    periods: int = 5  # consecutive periods
    missing: str = "notBreaching"
    period: int = 60  # seconds


def managed_service_alarms(
    stack: str,
    web_balancer: pulumi.Input[str],
    web_targets: pulumi.Input[str],
    database: pulumi.Input[str],
    cache_group: pulumi.Input[str],
    file_system: pulumi.Input[str],
    cluster: pulumi.Input[str],
    service: pulumi.Input[str],
    tasks: int,
    database_storage_gb: int,
) -> tuple[MetricAlarmSpec, ...]:
    """topology ha: what pages an operator when a managed piece degrades (the per-zone parts fail over on their own)."""
    prefix = f"forgestack {stack}:"
    balancer = {"LoadBalancer": web_balancer}
    return (
        MetricAlarmSpec(
            "web-5xx",
            f"{prefix} the load balancer answers 5xx (no healthy Gitea task, or Gitea errors)",
            "AWS/ApplicationELB",
            "HTTPCode_ELB_5XX_Count",
            balancer,
            "Sum",
            10,
            "GreaterThanThreshold",
        ),
        MetricAlarmSpec(
            "gitea-5xx",
            f"{prefix} Gitea answers 5xx",
            "AWS/ApplicationELB",
            "HTTPCode_Target_5XX_Count",
            balancer,
            "Sum",
            10,
            "GreaterThanThreshold",
        ),
        MetricAlarmSpec(
            "unhealthy-tasks",
            f"{prefix} a Gitea task fails the load balancer's health check",
            "AWS/ApplicationELB",
            "UnHealthyHostCount",
            {**balancer, "TargetGroup": web_targets},
            "Maximum",
            0,
            "GreaterThanThreshold",
        ),
        MetricAlarmSpec(
            "too-few-tasks",
            f"{prefix} fewer than {tasks} Gitea tasks run",
            "ECS/ContainerInsights",
            "RunningTaskCount",
            {"ClusterName": cluster, "ServiceName": service},
            "Minimum",
            tasks,
            "LessThanThreshold",
            missing="breaching",
        ),
        MetricAlarmSpec(
            "database-cpu",
            f"{prefix} the database's CPU above 80%",
            "AWS/RDS",
            "CPUUtilization",
            {"DBInstanceIdentifier": database},
            "Average",
            80,
            "GreaterThanThreshold",
            periods=15,
        ),
        MetricAlarmSpec(
            "database-storage",
            f"{prefix} the database has less than 10% of its {database_storage_gb} GiB free",
            "AWS/RDS",
            "FreeStorageSpace",
            {"DBInstanceIdentifier": database},
            "Minimum",
            database_storage_gb * 1024**3 / 10,
            "LessThanThreshold",
        ),
        MetricAlarmSpec(
            "database-memory",
            f"{prefix} the database has less than 256 MiB of memory free",
            "AWS/RDS",
            "FreeableMemory",
            {"DBInstanceIdentifier": database},
            "Minimum",
            256 * 1024**2,
            "LessThanThreshold",
        ),
        MetricAlarmSpec(
            "database-replica-lag",
            f"{prefix} the standby's replication lags over 60 s",
            "AWS/RDS",
            "ReplicaLag",
            {"DBInstanceIdentifier": database},
            "Maximum",
            60,
            "GreaterThanThreshold",
        ),
        MetricAlarmSpec(
            "cache-memory",
            f"{prefix} Valkey memory above 80% (queues refuse writes when full)",
            "AWS/ElastiCache",
            "DatabaseMemoryUsagePercentage",
            {"ReplicationGroupId": cache_group},
            "Maximum",
            80,
            "GreaterThanThreshold",
        ),
        MetricAlarmSpec(
            "cache-cpu",
            f"{prefix} Valkey's engine CPU above 80%",
            "AWS/ElastiCache",
            "EngineCPUUtilization",
            {"ReplicationGroupId": cache_group},
            "Average",
            80,
            "GreaterThanThreshold",
            periods=15,
        ),
        MetricAlarmSpec(
            "file-system-io",
            f"{prefix} the repositories' file system at its I/O limit",
            "AWS/EFS",
            "PercentIOLimit",
            {"FileSystemId": file_system},
            "Maximum",
            95,
            "GreaterThanThreshold",
            periods=15,
        ),
    )


def backup_alarm(stack: str, interval_hours: int) -> MetricAlarmSpec:
    """topology ha: no successful backup for two missed runs plus the longest a run may take (backup_job's bound)."""
    hours = max_backup_age_seconds(interval_hours) // 3600
    return MetricAlarmSpec(
        "backup-too-old", f"forgestack {stack}: no backup succeeded for {hours} h (the ops host's forgestack-backup.timer)",
        HEARTBEAT_NAMESPACE, BACKUP_METRIC, heartbeat_dimensions(stack), "SampleCount", 1, "LessThanThreshold",
        periods=hours, missing="breaching", period=3600,
    )  # fmt: skip


def restore_drill_alarm(stack: str) -> MetricAlarmSpec:
    """topology ha: no restore drill passed for RESTORE_DRILL_MISSING_DAYS (two missed drills)."""
    return MetricAlarmSpec(
        "restore-drill-too-old", f"forgestack {stack}: no restore drill passed for {RESTORE_DRILL_MISSING_DAYS} days "
        "(the ops host's forgestack-restore-drill.timer)", HEARTBEAT_NAMESPACE, RESTORE_DRILL_METRIC, heartbeat_dimensions(stack),
        "SampleCount", 1, "LessThanThreshold", periods=RESTORE_DRILL_MISSING_DAYS, missing="breaching", period=86400,
    )  # fmt: skip


@dataclass(frozen=True)
class AlarmsArgs:
    stack: str
    region: str
    instance_id: pulumi.Input[str] | None  # the host's status checks and heartbeat; None where no host runs (ha)
    health_fqdn: str  # Gitea's public hostname
    health_path: str  # answers 2xx without a login
    email: str = ""  # subscribed to every topic; the recipient confirms once (SNS sends the link)
    https_endpoints: tuple[str, ...] = ()  # subscribed too; each confirms by visiting the SubscribeURL SNS posts to it
    protect: bool = False
    metric_alarms: tuple[MetricAlarmSpec, ...] = ()
    budget_usd: int = 0  # the monthly budget of the stack's tagged costs; 0: none


def heartbeat_dimensions(stack: str) -> dict[str, str]:
    return {HEARTBEAT_DIMENSION: stack}


class Alarms(pulumi.ComponentResource):
    topics: dict[str, aws.sns.Topic]

    def __init__(self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:Alarms", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.topics = {}
        for region in dict.fromkeys((args.region, ROUTE53_METRICS_REGION)):  # one pair when the stack is in us-east-1
            suffix, where = ("", None) if region == args.region else (f"-{region}", region)  # None: the provider's region
            key = rotating_key(
                f"{name}-key{suffix}",
                f"forgestack {args.stack} alarm notifications ({region})",
                self,
                args.protect,
                alarms=True,
                region=where,
            )
            topic = aws.sns.Topic(f"{name}-topic{suffix}", kms_master_key_id=key.arn, region=where, opts=child)
            aws.sns.TopicPolicy(
                f"{name}-topic-policy{suffix}", arn=topic.arn, policy=topic.arn.apply(topic_policy), region=where, opts=child
            )
            if args.email:
                aws.sns.TopicSubscription(
                    f"{name}-email{suffix}", topic=topic.arn, protocol="email", endpoint=args.email, region=where, opts=child
                )
            for index, endpoint in enumerate(args.https_endpoints):
                aws.sns.TopicSubscription(
                    f"{name}-https-{index}{suffix}",
                    topic=topic.arn,
                    protocol="https",
                    endpoint=pulumi.Output.secret(endpoint),
                    region=where,
                    opts=child,
                )
            self.topics[region] = topic
        here = self.topics[args.region].arn

        self.system_check: aws.cloudwatch.MetricAlarm | None = None
        self.instance_check: aws.cloudwatch.MetricAlarm | None = None
        self.heartbeat_alarm: aws.cloudwatch.MetricAlarm | None = None
        if args.instance_id is not None:
            self._host_alarms(name, args, args.instance_id, here)
        for spec in args.metric_alarms:
            aws.cloudwatch.MetricAlarm(
                f"{name}-{spec.name}",
                alarm_description=spec.description,
                namespace=spec.namespace,
                metric_name=spec.metric,
                dimensions=spec.dimensions,
                statistic=spec.statistic,
                period=spec.period,
                evaluation_periods=spec.periods,
                threshold=spec.threshold,
                comparison_operator=spec.comparison,
                treat_missing_data=spec.missing,
                alarm_actions=[here],
                ok_actions=[here],
                opts=child,
            )
        # One dashboard of exactly what the alarms watch, each with its threshold: the same specs, so the two agree.
        self.dashboard: aws.cloudwatch.Dashboard | None = None
        if args.metric_alarms:
            self.dashboard = aws.cloudwatch.Dashboard(
                f"{name}-dashboard",
                dashboard_name=dashboard_name(args.stack),
                dashboard_body=pulumi.Output.all(*(pulumi.Output.from_input(spec.dimensions) for spec in args.metric_alarms)).apply(
                    lambda dimensions: dashboard_body(args.region, args.metric_alarms, dimensions)
                ),
                opts=child,
            )

        self.budget: aws.budgets.Budget | None = None
        if args.budget_usd:
            self.budget = aws.budgets.Budget(
                f"{name}-budget",
                name=f"forgestack-{args.stack}",
                budget_type="COST",
                limit_amount=str(args.budget_usd),
                limit_unit="USD",
                time_unit="MONTHLY",
                cost_filters=[aws.budgets.BudgetCostFilterArgs(name="TagKeyValue", values=[budget.cost_filter(args.stack)])],
                notifications=[
                    aws.budgets.BudgetNotificationArgs(
                        notification_type=kind,
                        comparison_operator="GREATER_THAN",
                        threshold=percent,
                        threshold_type="PERCENTAGE",
                        subscriber_sns_topic_arns=[here],
                        subscriber_email_addresses=[args.email] if args.email else [],
                    )
                    for kind, percent in (("ACTUAL", budget.ACTUAL_PERCENT), ("FORECASTED", budget.FORECAST_PERCENT))
                ],
                opts=child,
            )

        self.health_check = aws.route53.HealthCheck(
            f"{name}-gitea-health",
            type="HTTPS",
            fqdn=args.health_fqdn,
            port=443,
            resource_path=args.health_path,
            request_interval=HEALTH_CHECK_INTERVAL_SECONDS,
            failure_threshold=HEALTH_CHECK_FAILURES,
            enable_sni=True,
            tags={"Name": f"forgestack-{args.stack}-gitea"},
            opts=child,
        )
        east = self.topics[ROUTE53_METRICS_REGION].arn
        self.health_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-gitea-unreachable",
            alarm_description=f"forgestack {args.stack}: https://{args.health_fqdn}{args.health_path} fails from Route 53's checkers",
            namespace="AWS/Route53",
            metric_name="HealthCheckStatus",
            dimensions={"HealthCheckId": self.health_check.id},
            statistic="Minimum",
            period=60,
            evaluation_periods=2,
            threshold=1,
            comparison_operator="LessThanThreshold",
            treat_missing_data="breaching",
            alarm_actions=[east],
            ok_actions=[east],
            region=None if args.region == ROUTE53_METRICS_REGION else ROUTE53_METRICS_REGION,
            opts=child,
        )
        self.register_outputs({"topicArns": {region: topic.arn for region, topic in self.topics.items()}})

    def _host_alarms(self, name: str, args: AlarmsArgs, instance_id: pulumi.Input[str], here: pulumi.Output[str]) -> None:
        """The host's status checks (EC2 recovers or reboots it) and its heartbeat (a dead-man's switch)."""
        child = pulumi.ResourceOptions(parent=self)
        automate = f"arn:aws:automate:{args.region}:ec2"

        def status_alarm(kind: str, metric: str, action: str, what: str) -> aws.cloudwatch.MetricAlarm:
            return aws.cloudwatch.MetricAlarm(
                f"{name}-{kind}",
                alarm_description=what,
                namespace="AWS/EC2",
                metric_name=metric,
                dimensions={"InstanceId": instance_id},
                statistic="Maximum",
                period=60,
                evaluation_periods=STATUS_CHECK_MINUTES,
                threshold=0,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="missing",
                alarm_actions=[f"{automate}:{action}", here],
                ok_actions=[here],
                opts=child,
            )

        self.system_check = status_alarm(
            "system-check",
            "StatusCheckFailed_System",
            "recover",
            f"forgestack {args.stack}: the host's hardware or AWS network failed; EC2 recovers it",
        )
        self.instance_check = status_alarm(
            "instance-check",
            "StatusCheckFailed_Instance",
            "reboot",
            f"forgestack {args.stack}: the host's operating system stopped answering; EC2 reboots it",
        )
        self.heartbeat_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-heartbeat",
            alarm_description=f"forgestack {args.stack}: no heartbeat from the host for "
            f"{HEARTBEAT_MISSING_MINUTES} minutes (host, Docker, Prometheus or Alertmanager down)",
            namespace=HEARTBEAT_NAMESPACE,
            metric_name=HEARTBEAT_METRIC,
            dimensions=heartbeat_dimensions(args.stack),
            statistic="SampleCount",
            period=60,
            evaluation_periods=HEARTBEAT_MISSING_MINUTES,
            threshold=1,
            comparison_operator="LessThanThreshold",
            treat_missing_data="breaching",
            alarm_actions=[here],
            ok_actions=[here],
            opts=child,
        )


DASHBOARD_COLUMNS: Final = 2  # widgets per row (the dashboard grid is 24 units wide)


def dashboard_name(stack: str) -> str:
    return f"forgestack-{stack}"


def dashboard_url(region: str, stack: str) -> str:
    return f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#dashboards:name={dashboard_name(stack)}"


def panel_title(spec: MetricAlarmSpec) -> str:
    return f"{spec.name}: {spec.description.split(': ', 1)[-1]}"


def grafana_panels(region: str, specs: Sequence[MetricAlarmSpec], dimensions: Sequence[Mapping[str, str]]) -> tuple[CloudWatchPanel, ...]:
    """Grafana's view of what the alarms watch (the ops host's Grafana in topology ha): each spec's metric, statistic,
    period and threshold. dimensions: each spec's dimensions with their values resolved."""
    return tuple(
        CloudWatchPanel(panel_title(spec), region, spec.namespace, spec.metric, resolved, spec.statistic, spec.period, spec.threshold)
        for spec, resolved in zip(specs, dimensions, strict=True)
    )


def dashboard_body(region: str, specs: Sequence[MetricAlarmSpec], dimensions: Sequence[Mapping[str, str]]) -> str:
    """A CloudWatch dashboard: one graph per alarm spec (its metric, statistic and period, its threshold as a line).
    dimensions: each spec's dimensions with their values resolved."""
    width = 24 // DASHBOARD_COLUMNS
    widgets = []
    for index, (spec, resolved) in enumerate(zip(specs, dimensions, strict=True)):
        metric: list[str] = [spec.namespace, spec.metric]
        for name, value in resolved.items():
            metric += [name, value]
        widgets.append({
            "type": "metric", "x": (index % DASHBOARD_COLUMNS) * width, "y": (index // DASHBOARD_COLUMNS) * 6, "width": width, "height": 6,
            "properties": {
                "title": panel_title(spec), "region": region, "view": "timeSeries",
                "metrics": [metric], "stat": spec.statistic, "period": spec.period,
                "annotations": {"horizontal": [{"label": f"alarm ({spec.comparison})", "value": spec.threshold}]},
            },
        })  # fmt: skip
    return json.dumps({"widgets": widgets})


def topic_policy(topic_arn: str) -> str:
    """Only CloudWatch alarms and budgets of this account publish; everything else (subscribe, change) is the account's IAM."""
    account = topic_arn.split(":")[4]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AlarmsAndBudgetsOfThisAccount",
                    "Effect": "Allow",
                    "Principal": {"Service": list(TOPIC_PUBLISHERS)},
                    "Action": "sns:Publish",
                    "Resource": topic_arn,
                    "Condition": {"StringEquals": {"aws:SourceAccount": account}},
                },
                # The condition restates the principal: no other account, whatever the principal line says (CKV_AWS_385).
                {
                    "Sid": "AccountOwnsTheTopic",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                    "Action": [
                        "sns:Publish",
                        "sns:Subscribe",
                        "sns:GetTopicAttributes",
                        "sns:SetTopicAttributes",
                        "sns:ListSubscriptionsByTopic",
                    ],
                    "Resource": topic_arn,
                    "Condition": {"StringEquals": {"aws:PrincipalAccount": account}},
                },
                {
                    "Sid": "TlsOnly",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "sns:Publish",
                    "Resource": topic_arn,
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
            ],
        }
    )
