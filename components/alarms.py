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
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from components.host_tools.heartbeat import DIMENSION as HEARTBEAT_DIMENSION
from components.kms import rotating_key

ROUTE53_METRICS_REGION: Final = "us-east-1"  # Route 53 publishes health-check metrics only here
HEARTBEAT_NAMESPACE: Final = "forgestack"
HEARTBEAT_METRIC: Final = "Heartbeat"
HEARTBEAT_MISSING_MINUTES: Final = 5  # a reboot takes 1-3 minutes; five silent minutes is an outage
HEALTH_CHECK_INTERVAL_SECONDS: Final = 30
HEALTH_CHECK_FAILURES: Final = 3  # consecutive failed checks before a checker calls it unhealthy
STATUS_CHECK_MINUTES: Final = 2


@dataclass(frozen=True)
class AlarmsArgs:
    stack: str
    region: str
    instance_id: pulumi.Input[str]
    health_fqdn: str  # Gitea's public hostname
    health_path: str  # answers 2xx without a login
    email: str = ""  # subscribed to every topic; the recipient confirms once (SNS sends the link)
    https_endpoints: tuple[str, ...] = ()  # subscribed too; each confirms by visiting the SubscribeURL SNS posts to it
    protect: bool = False


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
            key = rotating_key(f"{name}-key{suffix}", f"forgestack {args.stack} alarm notifications ({region})", self,
                               args.protect, alarms=True, region=where)
            topic = aws.sns.Topic(f"{name}-topic{suffix}", kms_master_key_id=key.arn, region=where, opts=child)
            aws.sns.TopicPolicy(f"{name}-topic-policy{suffix}", arn=topic.arn, policy=topic.arn.apply(topic_policy), region=where,
                                opts=child)
            if args.email:
                aws.sns.TopicSubscription(f"{name}-email{suffix}", topic=topic.arn, protocol="email", endpoint=args.email,
                                          region=where, opts=child)
            for index, endpoint in enumerate(args.https_endpoints):
                aws.sns.TopicSubscription(f"{name}-https-{index}{suffix}", topic=topic.arn, protocol="https",
                                          endpoint=pulumi.Output.secret(endpoint), region=where, opts=child)
            self.topics[region] = topic
        here = self.topics[args.region].arn
        automate = f"arn:aws:automate:{args.region}:ec2"

        def status_alarm(kind: str, metric: str, action: str, what: str) -> aws.cloudwatch.MetricAlarm:
            return aws.cloudwatch.MetricAlarm(
                f"{name}-{kind}", alarm_description=what, namespace="AWS/EC2", metric_name=metric,
                dimensions={"InstanceId": args.instance_id}, statistic="Maximum", period=60,
                evaluation_periods=STATUS_CHECK_MINUTES, threshold=0, comparison_operator="GreaterThanThreshold",
                treat_missing_data="missing", alarm_actions=[f"{automate}:{action}", here], ok_actions=[here], opts=child,
            )

        self.system_check = status_alarm("system-check", "StatusCheckFailed_System", "recover",
                                         f"forgestack {args.stack}: the host's hardware or AWS network failed; EC2 recovers it")
        self.instance_check = status_alarm("instance-check", "StatusCheckFailed_Instance", "reboot",
                                           f"forgestack {args.stack}: the host's operating system stopped answering; EC2 reboots it")

        self.health_check = aws.route53.HealthCheck(
            f"{name}-gitea-health", type="HTTPS", fqdn=args.health_fqdn, port=443, resource_path=args.health_path,
            request_interval=HEALTH_CHECK_INTERVAL_SECONDS, failure_threshold=HEALTH_CHECK_FAILURES, enable_sni=True,
            tags={"Name": f"forgestack-{args.stack}-gitea"}, opts=child,
        )
        east = self.topics[ROUTE53_METRICS_REGION].arn
        self.health_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-gitea-unreachable", alarm_description=f"forgestack {args.stack}: https://{args.health_fqdn}{args.health_path} "
            "fails from Route 53's checkers", namespace="AWS/Route53", metric_name="HealthCheckStatus",
            dimensions={"HealthCheckId": self.health_check.id}, statistic="Minimum", period=60, evaluation_periods=2,
            threshold=1, comparison_operator="LessThanThreshold", treat_missing_data="breaching",
            alarm_actions=[east], ok_actions=[east], region=None if args.region == ROUTE53_METRICS_REGION else ROUTE53_METRICS_REGION,
            opts=child,
        )
        self.heartbeat_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-heartbeat", alarm_description=f"forgestack {args.stack}: no heartbeat from the host for "
            f"{HEARTBEAT_MISSING_MINUTES} minutes (host, Docker, Prometheus or Alertmanager down)",
            namespace=HEARTBEAT_NAMESPACE, metric_name=HEARTBEAT_METRIC, dimensions=heartbeat_dimensions(args.stack),
            statistic="SampleCount", period=60, evaluation_periods=HEARTBEAT_MISSING_MINUTES, threshold=1,
            comparison_operator="LessThanThreshold", treat_missing_data="breaching", alarm_actions=[here], ok_actions=[here], opts=child,
        )
        self.register_outputs({"topicArns": {region: topic.arn for region, topic in self.topics.items()}})


def topic_policy(topic_arn: str) -> str:
    """Only CloudWatch alarms of this account publish; everything else (subscribe, change) is the account's IAM."""
    account = topic_arn.split(":")[4]
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "CloudWatchAlarmsOfThisAccount", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
         "Action": "sns:Publish", "Resource": topic_arn, "Condition": {"StringEquals": {"aws:SourceAccount": account}}},
        # The condition restates the principal: no other account, whatever the principal line says (CKV_AWS_385).
        {"Sid": "AccountOwnsTheTopic", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
         "Action": ["sns:Publish", "sns:Subscribe", "sns:GetTopicAttributes", "sns:SetTopicAttributes", "sns:ListSubscriptionsByTopic"],
         "Resource": topic_arn, "Condition": {"StringEquals": {"aws:PrincipalAccount": account}}},
        {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "sns:Publish", "Resource": topic_arn,
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]})
