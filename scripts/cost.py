#!/usr/bin/env python3
"""Monthly on-demand cost of a stack, computed from the resources its program creates (no AWS account, no Pulumi CLI).

    python scripts/cost.py --stack prod
    python scripts/cost.py --stack prod --set topology=ha --json
    python scripts/cost.py --stack dev --data-gb 50 --egress-gb 300

The program runs under Pulumi mocks with the stack file's config; each AWS resource it registers is priced from
scripts/cost_prices.json (one file: its source and date inside) for the region the resource lives in. What a
resource costs depends on use (stored data, traffic, logs) is priced from the stated assumptions below, printed with
the result; change them with the flags. Types that cost nothing by themselves are listed as free with the reason;
a type or size that has no price is listed as unpriced and makes the exit code 1, never a silent zero.

Exit codes: 0 every resource priced, 1 some resource could not be priced (listed), 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

if __name__ == "__main__":
    gc.disable()  # a short process that rehearses and exits: see scripts/rehearse.py (a fifth of the run, for a few MB)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi

from components import budget
from components.alarms import HEARTBEAT_NAMESPACE
from components.backups import ARCHIVE_STORAGE_CLASS
from components.settings import ConfigError, Settings, parse
from rehearsal.engine import HA_OVERRIDES, REPO, ProgramRun, Registered, run_program, stack_config, topology_overrides
from scripts.rehearse import add_set_option, set_overrides

PRICES_FILE: Final = Path(__file__).resolve().parent / "cost_prices.json"
EXIT_OK, EXIT_UNPRICED, EXIT_USAGE = 0, 1, 2
LOG_BUCKET_GB: Final = 1.0  # access and load balancer logs: small next to the data
DEFAULT_DATA_GB: Final = 20.0  # a small team's forge: database, repositories and objects (--data-gb)
# Types that cost nothing by themselves (what they make cost is priced where it is: a flow log's data in its log group).
FREE: Final = {
    "aws:ec2/vpc:Vpc": "no charge for a VPC",
    "aws:ec2/subnet:Subnet": "no charge",
    "aws:ec2/routeTable:RouteTable": "no charge",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "no charge",
    "aws:ec2/internetGateway:InternetGateway": "no charge (data out is priced as egress)",
    "aws:ec2/securityGroup:SecurityGroup": "no charge",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": "no charge",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "no charge",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "no charge",
    "aws:ec2/flowLog:FlowLog": "its records are priced in the log group",
    "aws:ec2/volumeAttachment:VolumeAttachment": "no charge",
    "aws:iam/role:Role": "no charge for IAM",
    "aws:iam/rolePolicy:RolePolicy": "no charge for IAM",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": "no charge for IAM",
    "aws:iam/instanceProfile:InstanceProfile": "no charge for IAM",
    "aws:iam/user:User": "no charge for IAM",
    "aws:iam/group:Group": "no charge for IAM",
    "aws:iam/groupPolicy:GroupPolicy": "no charge for IAM",
    "aws:iam/userGroupMembership:UserGroupMembership": "no charge for IAM",
    "aws:iam/accessKey:AccessKey": "no charge for IAM",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": "part of its bucket",
    "aws:s3/bucketLogging:BucketLogging": "the logs are priced in the log bucket",
    "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration": "part of its bucket",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": "part of its bucket",
    "aws:s3/bucketPolicy:BucketPolicy": "part of its bucket",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "part of its bucket",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": "part of its bucket (KMS keys priced)",
    "aws:s3/bucketVersioning:BucketVersioning": "part of its bucket",
    "aws:secretsmanager/secretVersion:SecretVersion": "part of its secret",
    "aws:ses/domainDkim:DomainDkim": "part of the SES identity",
    "aws:ses/mailFrom:MailFrom": "part of the SES identity",
    "aws:sns/topic:Topic": "alert mail stays inside SNS's free 1,000 email notifications a month",
    "aws:sns/topicPolicy:TopicPolicy": "part of its topic",
    "aws:sns/topicSubscription:TopicSubscription": "part of its topic",
    "aws:route53/record:Record": "records are free; queries to alias records of AWS resources too",
    "aws:dlm/lifecyclePolicy:LifecyclePolicy": "no charge for DLM (its snapshots are priced on the data volume)",
    "aws:ssm/document:Document": "no charge for SSM documents",
    "aws:ssm/association:Association": "no charge for State Manager on EC2",
    "aws:acm/certificate:Certificate": "public ACM certificates are free",
    "aws:acm/certificateValidation:CertificateValidation": "no charge",
    "aws:lb/listener:Listener": "part of its load balancer",
    "aws:lb/targetGroup:TargetGroup": "part of its load balancer",
    "aws:ecs/cluster:Cluster": "no charge for a cluster (Container Insights is metric usage, not estimated)",
    "aws:ecs/taskDefinition:TaskDefinition": "priced with the service that runs it",
    "aws:rds/subnetGroup:SubnetGroup": "no charge",
    "aws:rds/parameterGroup:ParameterGroup": "no charge",
    "aws:elasticache/subnetGroup:SubnetGroup": "no charge",
    "aws:elasticache/parameterGroup:ParameterGroup": "no charge",
    "aws:efs/accessPoint:AccessPoint": "no charge",
    "aws:efs/mountTarget:MountTarget": "no charge",
    "aws:efs/fileSystemPolicy:FileSystemPolicy": "no charge",
    "aws:wafv2/webAclAssociation:WebAclAssociation": "part of the web ACL",
    "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration": "its records are priced in the log group",
    "aws:servicediscovery/service:Service": "its registered tasks are priced with the ECS service",
    "aws:budgets/budget:Budget": "budgets that only notify (no actions) are free",
}


@dataclass(frozen=True)
class Assumptions:
    """What use costs: stated with every estimate, changed with the flags."""

    data_gb: float  # Gitea's data: database, repositories, objects
    backup_ratio: float = 0.5  # one compressed backup / data
    daily_change: float = 0.02  # share of the data volume's blocks that change a day (incremental snapshots)
    egress_gb: float = 100.0  # data out to the Internet a month (clones, pages, images)
    log_gb: float = 5.0  # CloudWatch Logs ingested a month (flow logs, tasks, WAF), split across the log groups
    nat_gb: float = 50.0  # through the NAT gateways a month (ha: images, packages, webhooks)
    requests_million: float = 5.0  # web requests a month (WAF)
    load_balancer_capacity_units: float = 1.0  # LCUs (ALB) / NLCUs (NLB) used on average
    emails_thousand: float = 1.0  # mail sent a month through SES
    ha_objects_share: float = 0.3  # topology ha: share of the data in the objects bucket (LFS, attachments, packages)
    ha_files_share: float = 0.6  # topology ha: share on EFS (repositories)

    @property
    def backup_gb(self) -> float:
        return self.data_gb * self.backup_ratio


@dataclass
class Line:
    resource: str  # type name
    name: str
    region: str
    monthly: float  # USD
    detail: str


@dataclass
class Estimate:
    stack: str
    topology: str
    lines: list[Line] = field(default_factory=list)
    free: list[Line] = field(default_factory=list)
    unpriced: list[Line] = field(default_factory=list)

    @property
    def total(self) -> float:
        return round(sum(line.monthly for line in self.lines), 2)

    def by_region(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for line in self.lines:
            totals[line.region] = round(totals.get(line.region, 0.0) + line.monthly, 2)
        return dict(sorted(totals.items()))


class UnpricedError(Exception):
    """No price for this resource's kind or size in its region."""


class Prices:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self.hours = float(document["hours_per_month"])

    def __call__(self, region: str, key: str, size: str | None = None) -> float:
        table = self.document["regions"].get(region)
        if table is None:
            raise UnpricedError(f"no prices for region {region} in {PRICES_FILE.name}")
        value = table.get(key)
        if size is not None:
            value = (value or {}).get(size)
        if value is None:
            raise UnpricedError(f"no price {key}{f'[{size}]' if size else ''} for {region} in {PRICES_FILE.name}")
        return float(value)


def load_prices(path: Path = PRICES_FILE) -> Prices:
    return Prices(json.loads(path.read_text()))


Pricer = Callable[[Registered, "Context"], list[tuple[float, str]]]


@dataclass(frozen=True)
class Context:
    run: ProgramRun
    settings: Settings
    assume: Assumptions
    price: Prices
    region: str  # the resource's

    @property
    def hours(self) -> float:
        return self.price.hours


def _region(resource: Registered, stack_region: str) -> str:
    return str(resource.inputs.get("region") or stack_region)


def _gb_month(ctx: Context, key: str, gb: float, what: str, unit: str = "$/GB-month") -> tuple[float, str]:
    rate = ctx.price(ctx.region, key)
    return gb * rate, f"{what}: {gb:g} GB x {rate} {unit}"


def _hourly(ctx: Context, rate: float, what: str, count: float = 1) -> tuple[float, str]:
    return count * rate * ctx.hours, f"{what}: {count:g} x {rate} $/h x {ctx.hours:g} h"


def ec2_instance(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    kind = resource.inputs["instanceType"]
    root = resource.inputs.get("rootBlockDevice") or {}
    lines = [
        _hourly(ctx, ctx.price(ctx.region, "ec2_hour", kind), f"{kind} on demand"),
        _gb_month(ctx, "ebs_gp3_gb_month", float(root.get("volumeSize", 8)), "root volume gp3"),
    ]
    if resource.inputs.get("associatePublicIpAddress"):  # an address of its own (the workspaces host's way out)
        lines.append(_hourly(ctx, ctx.price(ctx.region, "public_ipv4_hour"), "public IPv4 address"))
    return lines


def ebs_volume(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    size = float(resource.inputs["size"])
    lines = [_gb_month(ctx, f"ebs_{resource.inputs.get('type', 'gp3')}_gb_month", size, f"{resource.inputs.get('type', 'gp3')} volume")]
    # Its daily snapshots (DLM): the first holds the used blocks, each further one the blocks changed that day.
    for policy in ctx.run.of_type("aws:dlm/lifecyclePolicy:LifecyclePolicy"):
        for schedule in policy.inputs["policyDetails"]["schedules"]:
            kept = float(schedule["retainRule"].get("interval") or schedule["retainRule"].get("count") or 1)
            used = min(ctx.assume.data_gb, size)
            stored = used * (1 + ctx.assume.daily_change * (kept - 1))
            lines.append(_gb_month(ctx, "ebs_snapshot_gb_month", round(stored, 2), f"snapshots kept {kept:g} days"))
            for copy in schedule.get("crossRegionCopyRules") or []:
                target = Context(ctx.run, ctx.settings, ctx.assume, ctx.price, copy["target"])
                amount, detail = _gb_month(target, "ebs_snapshot_gb_month", round(stored, 2), f"snapshot copies in {copy['target']}")
                transfer = used * ctx.assume.daily_change * 30 * ctx.price(ctx.region, "inter_region_gb")
                lines.append((amount + transfer, f"{detail} + {used * ctx.assume.daily_change * 30:g} GB copied a month"))
    return lines


def elastic_ip(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    return [_hourly(ctx, ctx.price(ctx.region, "public_ipv4_hour"), "public IPv4 address")]


def nat_gateway(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    gateways = len(ctx.run.of_type("aws:ec2/natGateway:NatGateway"))
    hourly = _hourly(ctx, ctx.price(ctx.region, "nat_gateway_hour"), "NAT gateway")
    processed = _gb_month(ctx, "nat_gateway_gb", ctx.assume.nat_gb / gateways, "processed", "$/GB")
    return [(hourly[0] + processed[0], f"{hourly[1]}; {processed[1]}")]


def load_balancer(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    kind = "alb" if resource.inputs["loadBalancerType"] == "application" else "nlb"
    units = ctx.assume.load_balancer_capacity_units
    return [
        _hourly(ctx, ctx.price(ctx.region, f"{kind}_hour"), f"{kind.upper()}"),
        _hourly(ctx, ctx.price(ctx.region, f"{kind}_lcu_hour"), "capacity units", units),
    ]


def rds_instance(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    kind = resource.inputs["instanceClass"]
    copies = 2 if resource.inputs.get("multiAz") else 1
    storage = float(resource.inputs["allocatedStorage"])
    hourly = _hourly(ctx, ctx.price(ctx.region, "rds_postgres_hour", kind), f"{kind} PostgreSQL", copies)
    stored = _gb_month(ctx, "rds_gp3_gb_month", storage * copies, f"gp3 storage ({copies} copies)")
    return [hourly, stored]  # automated backups up to the allocated storage are free; Performance Insights 7 days too


def replication_group(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    nodes = float(resource.inputs["numCacheClusters"])
    kind = resource.inputs["nodeType"]
    return [_hourly(ctx, ctx.price(ctx.region, "elasticache_valkey_hour", kind), f"{kind} Valkey node", nodes)]


def file_system(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    stored = round(ctx.assume.data_gb * ctx.assume.ha_files_share, 2)
    return [_gb_month(ctx, "efs_standard_gb_month", stored, "EFS Standard")]


def efs_backup(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    if resource.inputs["backupPolicy"]["status"] != "ENABLED":
        return []
    stored = round(ctx.assume.data_gb * ctx.assume.ha_files_share, 2)
    return [_gb_month(ctx, "efs_backup_gb_month", stored, "AWS Backup of the file system (warm)")]


def ecs_service(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    (definition,) = ctx.run.of_type("aws:ecs/taskDefinition:TaskDefinition")
    tasks = float(resource.inputs["desiredCount"])
    vcpu, memory = float(definition.inputs["cpu"]) / 1024, float(definition.inputs["memory"]) / 1024
    cpu_line = _hourly(ctx, ctx.price(ctx.region, "fargate_arm_vcpu_hour"), f"Fargate ARM vCPU ({tasks:g} tasks x {vcpu:g})", tasks * vcpu)
    memory_line = _hourly(ctx, ctx.price(ctx.region, "fargate_arm_gb_hour"), f"Fargate GB ({tasks:g} tasks x {memory:g})", tasks * memory)
    registry = _hourly(ctx, ctx.price(ctx.region, "cloud_map_instance_month") / ctx.hours, "Cloud Map registered tasks", tasks)
    return [cpu_line, memory_line, registry] if "serviceRegistries" in resource.inputs else [cpu_line, memory_line]


def dns_namespace(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    return [(ctx.price(ctx.region, "cloud_map_namespace_month"), "private hosted zone of the namespace")]


def vpc_endpoint(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    if resource.inputs["vpcEndpointType"] == "Gateway":
        return [(0.0, "gateway endpoint: no charge")]
    zones = len(resource.inputs.get("subnetIds") or [])
    return [_hourly(ctx, ctx.price(ctx.region, "vpc_interface_endpoint_hour"), "interface endpoint per zone", zones)]


def metric_alarm(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    lines = [(ctx.price(ctx.region, "cloudwatch_alarm_month"), "standard-resolution alarm")]
    if resource.inputs.get("namespace") == HEARTBEAT_NAMESPACE:  # the stack's own metric: a custom metric
        lines.append((ctx.price(ctx.region, "cloudwatch_custom_metric_month"), f"custom metric {resource.inputs['metricName']}"))
    return lines


def dashboard(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    return [(ctx.price(ctx.region, "cloudwatch_dashboard_month"), "dashboard (the account's first three are free)")]


def log_group(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    groups = len(ctx.run.of_type("aws:cloudwatch/logGroup:LogGroup"))
    ingested = ctx.assume.log_gb / groups
    months_kept = min(float(resource.inputs.get("retentionInDays") or 3650) / 30, 12)  # steady state within a year
    ingest = ingested * ctx.price(ctx.region, "cloudwatch_logs_ingest_gb")
    stored = _gb_month(ctx, "cloudwatch_logs_store_gb_month", round(ingested * months_kept * 0.15, 3), "stored (compressed ~0.15)")
    return [(ingest, f"ingested {ingested:g} GB a month"), stored]


def health_check(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    kind = resource.inputs["type"]
    features = sum([kind.startswith("HTTPS"), kind.endswith("STR_MATCH"), float(resource.inputs.get("requestInterval", 30)) == 10,
                    bool(resource.inputs.get("measureLatency"))])  # fmt: skip
    base = ctx.price(ctx.region, "route53_health_check_month")
    feature = ctx.price(ctx.region, "route53_health_check_feature_month")
    return [(base + features * feature, f"health check {base} $ + {features} optional feature(s) x {feature} $")]


def secret(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    return [(ctx.price(ctx.region, "secrets_manager_secret_month"), "secret")]


def kms_key(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    return [(ctx.price(ctx.region, "kms_key_month"), "customer managed key (requests within the free 20,000 a month)")]


def web_acl(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    rules = len(resource.inputs.get("rules") or [])
    acl, rule, requests = (ctx.price(ctx.region, key) for key in ("waf_web_acl_month", "waf_rule_month", "waf_million_requests"))
    return [(acl + rules * rule + ctx.assume.requests_million * requests,
             f"web ACL {acl} $ + {rules} rules x {rule} $ + {ctx.assume.requests_million:g} M requests x {requests} $")]  # fmt: skip


def ses_identity(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    rate = ctx.price(ctx.region, "ses_thousand_emails")
    return [(ctx.assume.emails_thousand * rate, f"{ctx.assume.emails_thousand:g} thousand mails x {rate} $")]


def retained_backups(settings: Settings) -> tuple[float, float]:
    """(backups in the standard class, backups archived) kept at any time: every backup is kept backupRetentionDays,
    moved to the archive class after backupArchiveAfterDays when set."""
    per_day = 24 / settings.backup_interval_hours
    standard_days = settings.backup_archive_after_days or settings.backup_retention_days
    return per_day * standard_days, per_day * (settings.backup_retention_days - standard_days)


def bucket(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    name = resource.name
    if name.startswith("backups") and not name.endswith("access-logs"):
        standard, archived = retained_backups(ctx.settings)
        lines = [_gb_month(ctx, "s3_standard_gb_month", round(standard * ctx.assume.backup_gb, 1),
                           f"{standard:g} backups of {ctx.assume.backup_gb:g} GB")]  # fmt: skip
        if archived:
            lines.append(_gb_month(ctx, f"s3_{ARCHIVE_STORAGE_CLASS.lower()}_gb_month", round(archived * ctx.assume.backup_gb, 1),
                                   f"{archived:g} backups archived ({ARCHIVE_STORAGE_CLASS})"))  # fmt: skip
        return lines
    if name.startswith("objects") and not name.endswith("access-logs"):
        return [_gb_month(ctx, "s3_standard_gb_month", round(ctx.assume.data_gb * ctx.assume.ha_objects_share, 2), "Gitea's objects")]
    return [_gb_month(ctx, "s3_standard_gb_month", LOG_BUCKET_GB, "logs")]


def replication(resource: Registered, ctx: Context) -> list[tuple[float, str]]:
    """Cross-region transfer of what is written in a month (the replica's storage is priced on the replica bucket)."""
    if resource.name.startswith("backups"):
        written = 30 * 24 / ctx.settings.backup_interval_hours * ctx.assume.backup_gb
    else:
        written = ctx.assume.data_gb * ctx.assume.ha_objects_share * 0.1  # a tenth of the objects new each month
    rate = ctx.price(ctx.region, "inter_region_gb")
    return [(written * rate, f"{written:g} GB replicated a month x {rate} $/GB")]


CATEGORIES: Final = ("compute", "data", "network", "backups", "operations")
CATEGORY: Final = {
    "aws:ec2/instance:Instance": "compute", "aws:ecs/service:Service": "compute",
    "aws:ebs/volume:Volume": "data", "aws:rds/instance:Instance": "data", "aws:efs/fileSystem:FileSystem": "data",
    "aws:elasticache/replicationGroup:ReplicationGroup": "data",
    "aws:ec2/eip:Eip": "network", "aws:ec2/natGateway:NatGateway": "network", "aws:ec2/vpcEndpoint:VpcEndpoint": "network",
    "aws:lb/loadBalancer:LoadBalancer": "network", "aws:wafv2/webAcl:WebAcl": "network", "data transfer": "network",
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": "network",
    "aws:efs/backupPolicy:BackupPolicy": "backups", "aws:s3/bucketReplicationConfig:BucketReplicationConfig": "backups",
}  # fmt: skip


def category(line: Line) -> str:
    """What a line pays for, for the README's table: snapshots and backup buckets are backups, object storage is
    data, the rest of the small items (alarms, logs, keys, secrets, mail) is operations."""
    if line.detail.startswith("snapshot") or "backups" in line.detail:
        return "backups"
    if line.resource == "aws:s3/bucket:Bucket":
        return "data" if line.detail.startswith("Gitea's objects") else "operations"
    return CATEGORY.get(line.resource, "operations")


PRICERS: Final[dict[str, Pricer]] = {
    "aws:ec2/instance:Instance": ec2_instance,
    "aws:ebs/volume:Volume": ebs_volume,
    "aws:ec2/eip:Eip": elastic_ip,
    "aws:ec2/natGateway:NatGateway": nat_gateway,
    "aws:ec2/vpcEndpoint:VpcEndpoint": vpc_endpoint,
    "aws:lb/loadBalancer:LoadBalancer": load_balancer,
    "aws:rds/instance:Instance": rds_instance,
    "aws:elasticache/replicationGroup:ReplicationGroup": replication_group,
    "aws:efs/fileSystem:FileSystem": file_system,
    "aws:efs/backupPolicy:BackupPolicy": efs_backup,
    "aws:ecs/service:Service": ecs_service,
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": dns_namespace,
    "aws:cloudwatch/metricAlarm:MetricAlarm": metric_alarm,
    "aws:cloudwatch/dashboard:Dashboard": dashboard,
    "aws:cloudwatch/logGroup:LogGroup": log_group,
    "aws:route53/healthCheck:HealthCheck": health_check,
    "aws:secretsmanager/secret:Secret": secret,
    "aws:kms/key:Key": kms_key,
    "aws:wafv2/webAcl:WebAcl": web_acl,
    "aws:ses/domainIdentity:DomainIdentity": ses_identity,
    "aws:s3/bucket:Bucket": bucket,
    "aws:s3/bucketReplicationConfig:BucketReplicationConfig": replication,
}


def estimate(stack: str, run: ProgramRun, settings: Settings, assume: Assumptions, price: Prices) -> Estimate:
    result = Estimate(stack, settings.topology)
    for resource in run.resources:
        if not resource.custom or not resource.type.startswith("aws:"):
            continue  # components, providers, Docker, random values: no AWS bill
        region = _region(resource, settings.region)
        if resource.type in FREE:
            result.free.append(Line(resource.type, resource.name, region, 0.0, FREE[resource.type]))
            continue
        pricer = PRICERS.get(resource.type)
        if pricer is None:
            result.unpriced.append(Line(resource.type, resource.name, region, 0.0, "no price known for this type"))
            continue
        try:
            for amount, detail in pricer(resource, Context(run, settings, assume, price, region)):
                result.lines.append(Line(resource.type, resource.name, region, round(amount, 4), detail))
        except UnpricedError as error:
            result.unpriced.append(Line(resource.type, resource.name, region, 0.0, str(error)))
    try:
        rate = price(settings.region, "internet_egress_gb")
    except UnpricedError as error:
        result.unpriced.append(Line("data transfer", "internet-egress", settings.region, 0.0, str(error)))
        return result
    result.lines.append(Line("data transfer", "internet-egress", settings.region, round(assume.egress_gb * rate, 4),
                             f"{assume.egress_gb:g} GB out a month x {rate} $/GB"))
    return result


def default_assumptions(settings: Settings) -> Assumptions:
    return Assumptions(data_gb=min(DEFAULT_DATA_GB, settings.data_volume_gb))


def render(result: Estimate, assume: Assumptions, price: Prices) -> str:
    out = [f"forgestack cost estimate: stack {result.stack} (topology {result.topology}), USD a month, on demand, "
           f"prices of {price.document['date']} ({PRICES_FILE.name})"]  # fmt: skip
    for line in sorted(result.lines, key=lambda line: (line.region, -line.monthly)):
        out.append(f"  {line.monthly:10.2f}  {line.region:13} {line.name:34} {line.detail}")
    out.append(f"  {result.total:10.2f}  total  ({', '.join(f'{region} {amount:.2f}' for region, amount in result.by_region().items())})")
    out.append("assumptions: " + ", ".join(f"{key}={value:g}" for key, value in asdict(assume).items()))
    out.append(f"free: {len(result.free)} resources (VPC parts, IAM, bucket settings, records, ...)")
    for line in result.unpriced:
        out.append(f"UNPRICED {line.resource} {line.name} ({line.region}): {line.detail}")
    return "\n".join(out)


BUDGET_KEY: Final = "forgestack:budgetMonthlyUsd"
ESTIMATES_PATH: Final = REPO / "components" / "files" / budget.ESTIMATES_FILE
ESTIMATE_STACKS: Final = (("dev", "single"), ("dev", "ha"), ("staging", "single"), ("prod", "single"), ("prod", "ha"))


def estimates_document(results: Sequence[Estimate], price: Prices) -> str:
    """components/files/cost_estimates.json: what the budgets default to (budget.amount_from_estimate)."""
    stacks: dict[str, dict[str, float]] = {}
    for result in results:
        stacks.setdefault(result.stack, {})[result.topology] = result.total
    return json.dumps({"written_by": "python scripts/cost.py --write-estimates (default assumptions)",
                       "prices_date": price.document["date"], "stacks": stacks}, indent=2) + "\n"  # fmt: skip


README_STACKS: Final[tuple[tuple[str, dict[str, str]], ...]] = (
    ("dev", {}), ("staging", {}), ("prod", {}), ("prod", HA_OVERRIDES))


def readme_table(results: Sequence[Estimate]) -> str:
    """The README's cost table: one row per stack, the total and what it goes to."""
    rows = ["| stack | topology | USD a month | " + " | ".join(CATEGORIES) + " |", "|---|---|---:|" + "---:|" * len(CATEGORIES)]
    for result in results:
        parts = {name: 0.0 for name in CATEGORIES}
        for line in result.lines:
            parts[category(line)] += line.monthly
        amounts = " | ".join(f"{parts[name]:.0f}" for name in CATEGORIES)
        rows.append(f"| {result.stack} | {result.topology} | {result.total:.0f} | {amounts} |")
    return "\n".join(rows)


def stack_label(result: Estimate) -> str:
    return f"{result.stack} ({result.topology})"


def totals(results: Sequence[Estimate]) -> dict[str, float]:
    """What the pull request comment compares: the README's stacks, each its total."""
    return {stack_label(result): result.total for result in results}


def compare(base: Mapping[str, float], head: Mapping[str, float]) -> str:
    """Markdown: each stack's monthly cost on the pull request and the change from the base branch."""
    rows = ["| stack | USD a month | change from the base branch |", "|---|---:|---:|"]
    for label, amount in head.items():
        before = base.get(label)
        change = "new" if before is None else f"{amount - before:+.2f}" + (f" ({(amount - before) / before:+.1%})" if before else "")
        rows.append(f"| {label} | {amount:.2f} | {change} |")
    for label in base.keys() - head.keys():
        rows.append(f"| {label} | gone | {-base[label]:+.2f} |")
    return "\n".join(rows)


def as_json(result: Estimate, assume: Assumptions, price: Prices) -> str:
    return json.dumps(
        {
            "stack": result.stack, "topology": result.topology, "currency": "USD", "period": "month",
            "prices": {"file": PRICES_FILE.name, "date": price.document["date"], "source": price.document["source"]},
            "total": result.total, "by_region": result.by_region(), "assumptions": asdict(assume),
            "lines": [asdict(line) for line in result.lines], "free": [asdict(line) for line in result.free],
            "unpriced": [asdict(line) for line in result.unpriced],
        },
        indent=2,
    )  # fmt: skip


def compute(stack: str, overrides: Mapping[str, str], flags: Mapping[str, float | None]) -> tuple[Estimate, Assumptions, Prices]:
    # The budget's amount changes no cost, and its default comes from this very estimate: a placeholder breaks the
    # circle for a stack that has no estimate yet.
    config = {BUDGET_KEY: "1", **stack_config(stack, dict(overrides))}
    settings = parse(config, stack=stack)
    if not settings.is_aws:
        raise ConfigError(f"stack {stack} runs on the local Docker engine: no AWS bill to estimate")
    assume = default_assumptions(settings)
    changes = {key: value for key, value in flags.items() if value is not None}
    assume = Assumptions(**{**asdict(assume), **changes})
    price = load_prices()
    return estimate(stack, run_program(stack, config), settings, assume, price), assume, price


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Exit codes: 0 every resource priced, 1 some resource could not be priced (listed), 2 bad configuration or usage.",
    )
    parser.add_argument("--stack", choices=["dev", "prod"], help="the AWS stack to price")
    parser.add_argument("--readme-table", action="store_true", help="print the README's table: dev, prod, prod with topology ha")
    parser.add_argument("--totals", action="store_true", help="print {stack (topology): total} of the README's stacks as JSON")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BASE", "HEAD"),
                        help="two --totals files: print the pull request's Markdown table of costs and changes")
    parser.add_argument("--write-estimates", action="store_true",
                        help=f"write components/files/{budget.ESTIMATES_FILE} (the budgets' default) for dev and prod, single and ha")
    add_set_option(parser)
    parser.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    for name, help_text in (
        ("data-gb", f"Gitea's data in GB (default {DEFAULT_DATA_GB:g}, at most the data volume)"),
        ("egress-gb", "data out to the Internet a month (default 100)"),
        ("log-gb", "CloudWatch Logs ingested a month (default 5)"),
        ("nat-gb", "data through the NAT gateways a month, topology ha (default 50)"),
        ("requests-million", "web requests a month in millions, WAF (default 5)"),
    ):
        parser.add_argument(f"--{name}", type=float, help=help_text)
    return parser.parse_args(argv), parser


def main(argv: Sequence[str] | None = None) -> int:
    args, parser = parse_args(argv)
    if bool(args.stack) + args.readme_table + args.write_estimates + args.totals + bool(args.compare) != 1:
        parser.error("give one of --stack, --readme-table, --totals, --compare or --write-estimates")
    if args.compare:
        try:
            base, head = (json.loads(path.read_text()) if path.stat().st_size else {} for path in args.compare)
        except (OSError, ValueError) as error:
            print(f"cost: --compare: {error}", file=sys.stderr)
            return EXIT_USAGE
        print(compare(base, head))
        return EXIT_OK
    overrides = set_overrides(parser, args.set)
    flags = {"data_gb": args.data_gb, "egress_gb": args.egress_gb, "log_gb": args.log_gb, "nat_gb": args.nat_gb,
             "requests_million": args.requests_million}  # fmt: skip
    if any(value is not None and value < 0 for value in flags.values()):
        print("cost: amounts must be zero or more", file=sys.stderr)
        return EXIT_USAGE
    if args.write_estimates:
        written = []
        for stack, topology in ESTIMATE_STACKS:
            print(f"cost: running __main__.py for stack {stack} (topology {topology}) under mocks", file=sys.stderr)
            result, _, price = compute(stack, topology_overrides(topology), flags)
            written.append(result)
        ESTIMATES_PATH.write_text(estimates_document(written, price))
        print(f"cost: wrote {ESTIMATES_PATH.relative_to(REPO)}", file=sys.stderr)
        return EXIT_UNPRICED if any(result.unpriced for result in written) else EXIT_OK
    if args.readme_table or args.totals:
        results = []
        for stack, stack_overrides in README_STACKS:
            print(f"cost: running __main__.py for stack {stack} {json.dumps(stack_overrides)} under mocks", file=sys.stderr)
            results.append(compute(stack, stack_overrides, flags)[0])
        print(json.dumps(totals(results), indent=2) if args.totals else readme_table(results))
        return EXIT_UNPRICED if any(result.unpriced for result in results) else EXIT_OK
    print(f"cost: running __main__.py for stack {args.stack} under mocks", file=sys.stderr)
    try:
        result, assume, price = compute(args.stack, overrides, flags)
    except ConfigError as error:
        print(f"cost: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError, KeyError, pulumi.RunError) as error:
        print(f"cost: {args.stack}: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE
    print(as_json(result, assume, price) if args.json else render(result, assume, price))
    return EXIT_UNPRICED if result.unpriced else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
