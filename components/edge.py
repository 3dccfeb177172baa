"""Edge (topology ha): what the Internet reaches. An Application Load Balancer for the web (HTTPS with an ACM
certificate validated through Route 53, HTTP redirected, AWS WAF in front), a Network Load Balancer for git over SSH,
their access logs, and the Route 53 alias records of both names."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from components.backups import abort_incomplete_uploads_rule, bucket_controls, deny_insecure_transport, expire_rule, s3_managed_encryption
from components.constants import HTTP_PORT, HTTPS_PORT
from components.dns import RECORD_TTL, caa_records
from components.kms import rotating_key

TLS_POLICY: Final = "ELBSecurityPolicy-TLS13-1-2-2021-06"
AMAZON_CA_DOMAIN: Final = "amazon.com"  # ACM issues the load balancer's certificate
IDLE_TIMEOUT_SECONDS: Final = 300  # a large clone or push over HTTPS can be quiet for minutes
DEREGISTRATION_DELAY_SECONDS: Final = 30
ACCESS_LOG_PREFIX: Final = "web"
RATE_LIMIT_PER_5_MINUTES: Final = 2000  # requests from one address; above it the address is blocked until it slows down
LOG_DELIVERY_SERVICE: Final = "logdelivery.elasticloadbalancing.amazonaws.com"
OBJECTS_LOG_PREFIX: Final = "objects/"  # the object bucket's S3 server access logs, in the same log bucket
S3_LOG_DELIVERY_SERVICE: Final = "logging.s3.amazonaws.com"
# AWS's managed rule groups; a rule that breaks git or LFS is only counted (a push body is far above 8 KB).
MANAGED_RULE_GROUPS: Final = {
    "AWSManagedRulesCommonRuleSet": ("SizeRestrictions_BODY",),
    "AWSManagedRulesKnownBadInputsRuleSet": (),
    "AWSManagedRulesAmazonIpReputationList": (),
}


@dataclass(frozen=True)
class EdgeArgs:
    stack: str
    region: str
    zone_id: pulumi.Input[str]
    web_hostname: str
    ssh_hostname: str
    acme_email: str
    vpc_id: pulumi.Input[str]
    public_subnet_ids: Sequence[pulumi.Input[str]]
    web_security_group_id: pulumi.Input[str]
    ssh_security_group_id: pulumi.Input[str]
    web_port: int  # the tasks' HTTP port
    ssh_port: int  # the tasks' SSH port
    public_ssh_port: int  # what clients connect to
    health_path: str
    objects_bucket_arn: pulumi.Input[str]  # its server access logs come here too
    log_retention_days: int  # load balancer access logs and WAF logs (the stack's flowLogRetentionDays)
    protect: bool = False


def access_log_policy(bucket_arn: str, account_id: str, elb_account_arn: str, objects_bucket_arn: str) -> str:
    """TLS only; the load balancer's log delivery (the region's ELB account, or the service in newer regions) writes
    under this account's prefix, and S3 the object bucket's server access logs under theirs; nothing else."""
    target = f"{bucket_arn}/{ACCESS_LOG_PREFIX}/AWSLogs/{account_id}/*"
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                deny_insecure_transport(bucket_arn),
                {
                    "Sid": "LoadBalancerLogDelivery",
                    "Effect": "Allow",
                    "Principal": {"AWS": elb_account_arn},
                    "Action": "s3:PutObject",
                    "Resource": target,
                },
                {
                    "Sid": "LoadBalancerLogDeliveryService",
                    "Effect": "Allow",
                    "Principal": {"Service": LOG_DELIVERY_SERVICE},
                    "Action": "s3:PutObject",
                    "Resource": target,
                },
                {
                    "Sid": "ObjectBucketServerAccessLogs",
                    "Effect": "Allow",
                    "Principal": {"Service": S3_LOG_DELIVERY_SERVICE},
                    "Action": "s3:PutObject",
                    "Resource": f"{bucket_arn}/{OBJECTS_LOG_PREFIX}*",
                    "Condition": {"ArnLike": {"aws:SourceArn": objects_bucket_arn}, "StringEquals": {"aws:SourceAccount": account_id}},
                },
            ],
        }
    )


def visibility(metric: str) -> aws.wafv2.WebAclVisibilityConfigArgs:
    return aws.wafv2.WebAclVisibilityConfigArgs(cloudwatch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True)


def rule_visibility(metric: str) -> aws.wafv2.WebAclRuleVisibilityConfigArgs:
    return aws.wafv2.WebAclRuleVisibilityConfigArgs(cloudwatch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True)


def waf_rules(stack: str) -> list[aws.wafv2.WebAclRuleArgs]:
    rules = []
    for priority, (group, counted) in enumerate(MANAGED_RULE_GROUPS.items()):
        rules.append(
            aws.wafv2.WebAclRuleArgs(
                name=group,
                priority=priority,
                override_action=aws.wafv2.WebAclRuleOverrideActionArgs(none=aws.wafv2.WebAclRuleOverrideActionNoneArgs()),
                statement=aws.wafv2.WebAclRuleStatementArgs(
                    managed_rule_group_statement=aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementArgs(
                        vendor_name="AWS",
                        name=group,
                        rule_action_overrides=[
                            aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementRuleActionOverrideArgs(
                                name=rule,
                                action_to_use=aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementRuleActionOverrideActionToUseArgs(
                                    count=aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementRuleActionOverrideActionToUseCountArgs()
                                ),
                            )
                            for rule in counted
                        ],
                    )
                ),
                visibility_config=rule_visibility(f"forgestack-{stack}-{group}"),
            )
        )
    rules.append(
        aws.wafv2.WebAclRuleArgs(
            name="rate-limit-per-address",
            priority=len(rules),
            action=aws.wafv2.WebAclRuleActionArgs(block=aws.wafv2.WebAclRuleActionBlockArgs()),
            statement=aws.wafv2.WebAclRuleStatementArgs(
                rate_based_statement=aws.wafv2.WebAclRuleStatementRateBasedStatementArgs(
                    limit=RATE_LIMIT_PER_5_MINUTES, aggregate_key_type="IP", evaluation_window_sec=300
                )
            ),
            visibility_config=rule_visibility(f"forgestack-{stack}-rate-limit"),
        )
    )
    return rules


class Edge(pulumi.ComponentResource):
    web: aws.lb.LoadBalancer
    ssh: aws.lb.LoadBalancer
    web_targets: aws.lb.TargetGroup
    ssh_targets: aws.lb.TargetGroup
    firewall: aws.wafv2.WebAcl

    def __init__(self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:Edge", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)

        # The web name's certificate, issued by ACM once the validation record answers.
        certificate = aws.acm.Certificate(
            f"{name}-certificate",
            domain_name=args.web_hostname,
            validation_method="DNS",
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        option = certificate.domain_validation_options[0]
        validation_record = aws.route53.Record(
            f"{name}-certificate-validation",
            zone_id=args.zone_id,
            name=option.resource_record_name,
            type=option.resource_record_type,
            records=[option.resource_record_value],
            ttl=RECORD_TTL,
            allow_overwrite=True,
            opts=child,
        )
        validated = aws.acm.CertificateValidation(
            f"{name}-certificate-issued", certificate_arn=certificate.arn, validation_record_fqdns=[validation_record.fqdn], opts=child
        )

        # Access logs (SSE-S3: load balancers deliver to no KMS-encrypted bucket).
        self.logs = aws.s3.Bucket(f"{name}-access-logs", force_destroy=not args.protect, opts=stateful)
        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        elb_account = aws.elb.get_service_account_output(opts=pulumi.InvokeOutputOptions(parent=self))
        log_controls = bucket_controls(
            self,
            f"{name}-access-logs",
            self.logs,
            s3_managed_encryption(),
            pulumi.Output.all(self.logs.arn, caller.account_id, elb_account.arn, args.objects_bucket_arn).apply(
                lambda values: access_log_policy(*values)
            ),
            [expire_rule("expire-access-logs", args.log_retention_days), abort_incomplete_uploads_rule()],
        )

        self.log_controls = log_controls  # the object bucket's access logging waits for them too
        self.web = aws.lb.LoadBalancer(
            f"{name}-web",
            load_balancer_type="application",
            internal=False,
            security_groups=[args.web_security_group_id],
            subnets=args.public_subnet_ids,
            drop_invalid_header_fields=True,
            desync_mitigation_mode="strictest",
            idle_timeout=IDLE_TIMEOUT_SECONDS,
            enable_deletion_protection=args.protect,
            enable_http2=True,
            access_logs=aws.lb.LoadBalancerAccessLogsArgs(bucket=self.logs.bucket, prefix=ACCESS_LOG_PREFIX, enabled=True),
            opts=pulumi.ResourceOptions(parent=self, depends_on=log_controls),
        )
        self.web_targets = aws.lb.TargetGroup(
            f"{name}-web-targets",
            port=args.web_port,
            protocol="HTTP",
            target_type="ip",
            vpc_id=args.vpc_id,
            deregistration_delay=DEREGISTRATION_DELAY_SECONDS,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                path=args.health_path, matcher="200", interval=15, healthy_threshold=2, unhealthy_threshold=3, timeout=5
            ),
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=self.web.arn,
            port=HTTPS_PORT,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=validated.certificate_arn,
            default_actions=[aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=self.web_targets.arn)],
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-http",
            load_balancer_arn=self.web.arn,
            port=HTTP_PORT,
            protocol="HTTP",
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(
                    type="redirect",
                    redirect=aws.lb.ListenerDefaultActionRedirectArgs(protocol="HTTPS", port=str(HTTPS_PORT), status_code="HTTP_301"),
                )
            ],
            opts=child,
        )

        self.firewall = aws.wafv2.WebAcl(
            f"{name}-firewall",
            scope="REGIONAL",
            description=f"forgestack {args.stack}: managed rules and a per-address rate limit",
            default_action=aws.wafv2.WebAclDefaultActionArgs(allow=aws.wafv2.WebAclDefaultActionAllowArgs()),
            rules=waf_rules(args.stack),
            visibility_config=visibility(f"forgestack-{args.stack}-web"),
            opts=child,
        )
        aws.wafv2.WebAclAssociation(f"{name}-firewall-web", resource_arn=self.web.arn, web_acl_arn=self.firewall.arn, opts=child)
        # WAF logs to a group whose name WAF requires to start with aws-waf-logs-; the Authorization header is redacted.
        waf_log_key = rotating_key(
            f"{name}-firewall-logs-key", f"forgestack {args.stack} WAF logs", self, args.protect, logs_region=args.region
        )
        waf_logs = aws.cloudwatch.LogGroup(
            f"{name}-firewall-logs",
            name=f"aws-waf-logs-forgestack-{args.stack}",
            retention_in_days=args.log_retention_days,
            kms_key_id=waf_log_key.arn,
            opts=child,
        )
        aws.wafv2.WebAclLoggingConfiguration(
            f"{name}-firewall-logging",
            resource_arn=self.firewall.arn,
            log_destination_configs=[waf_logs.arn],
            redacted_fields=[
                aws.wafv2.WebAclLoggingConfigurationRedactedFieldArgs(
                    single_header=aws.wafv2.WebAclLoggingConfigurationRedactedFieldSingleHeaderArgs(name="authorization")
                )
            ],
            opts=child,
        )

        self.ssh = aws.lb.LoadBalancer(
            f"{name}-ssh",
            load_balancer_type="network",
            internal=False,
            security_groups=[args.ssh_security_group_id],
            subnets=args.public_subnet_ids,
            enable_cross_zone_load_balancing=True,
            enable_deletion_protection=args.protect,
            opts=child,
        )
        self.ssh_targets = aws.lb.TargetGroup(
            f"{name}-ssh-targets",
            port=args.ssh_port,
            protocol="TCP",
            target_type="ip",
            vpc_id=args.vpc_id,
            deregistration_delay=DEREGISTRATION_DELAY_SECONDS,
            health_check=aws.lb.TargetGroupHealthCheckArgs(protocol="TCP", interval=30, healthy_threshold=2, unhealthy_threshold=2),
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-git-ssh",
            load_balancer_arn=self.ssh.arn,
            port=args.public_ssh_port,
            protocol="TCP",
            default_actions=[aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=self.ssh_targets.arn)],
            opts=child,
        )

        # Names: aliases to the load balancers; only Amazon may issue certificates for them.
        for label, hostname, balancer in (("web", args.web_hostname, self.web), ("ssh", args.ssh_hostname, self.ssh)):
            aws.route53.Record(
                f"{name}-{label}-alias",
                zone_id=args.zone_id,
                name=hostname,
                type="A",
                allow_overwrite=True,
                aliases=[aws.route53.RecordAliasArgs(name=balancer.dns_name, zone_id=balancer.zone_id, evaluate_target_health=True)],
                opts=child,
            )
            aws.route53.Record(
                f"{name}-{label}-caa",
                zone_id=args.zone_id,
                name=hostname,
                type="CAA",
                ttl=RECORD_TTL,
                records=caa_records(args.acme_email, AMAZON_CA_DOMAIN),
                allow_overwrite=True,
                opts=child,
            )
        self.register_outputs({"webDnsName": self.web.dns_name, "sshDnsName": self.ssh.dns_name, "firewallArn": self.firewall.arn})
