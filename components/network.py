"""Network: VPC, one public subnet, flow logs and the host's security groups."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.constants import ADMIN_SSH_PORT, GIT_SSH_ALT_PORT, HTTP_PORT, HTTPS_PORT
from components.kms import rotating_key
from components.settings import ConfigError

ANYWHERE = "0.0.0.0/0"


# Route 53's health checkers (the outside-in alarm on Gitea): an AWS-managed prefix list per region.
def health_checkers_prefix_list(region: str) -> str:
    return f"com.amazonaws.{region}.route53-healthchecks"


@dataclass(frozen=True)
class IngressRule:
    """One inbound rule of a host security group: from a network, or from a managed prefix list (by name)."""

    port: int
    cidr: str
    description: str
    prefix_list: str = ""  # when set, the rule's source is this prefix list and cidr is empty


@dataclass(frozen=True)
class NetworkArgs:
    vpc_cidr: str
    region: str  # the flow-log key names CloudWatch Logs of this region
    admin_cidrs: tuple[str, ...] = ()
    flow_log_retention_days: int = 14
    protect: bool = False  # the flow-log key: deleting it makes the logs unreadable
    availability_zone: str = ""  # empty: the region's first available zone
    git_ssh_port: int = GIT_SSH_ALT_PORT
    allowed_cidrs: tuple[str, ...] = ()  # who may reach web and git; empty: the Internet


def public_subnet_cidr(vpc_cidr: str) -> str:
    """The first /24 of the VPC (the whole VPC when it is a /24): room for the host and later growth."""
    network = ipaddress.IPv4Network(vpc_cidr)
    return str(next(network.subnets(new_prefix=max(network.prefixlen, 24))))


def host_ingress_rules(admin_cidrs: tuple[str, ...], git_ssh_port: int = GIT_SSH_ALT_PORT, allowed_cidrs: tuple[str, ...] = (),
                       region: str = "") -> dict[str, tuple[IngressRule, ...]]:
    """Security group name -> inbound rules. Admin SSH exists only when admin networks are given (and git SSH is
    then never on 22: the settings refuse it). With allowed networks, web and git answer only them, and HTTPS also
    Route 53's health checkers (the region's managed prefix list), so the outside-in alarm keeps working.

    The VPC is IPv4-only, so there are no IPv6 rules.
    """
    if allowed_cidrs:
        web = (
            *(IngressRule(HTTP_PORT, cidr, f"HTTP from {cidr} (redirect to HTTPS)") for cidr in allowed_cidrs),
            *(IngressRule(HTTPS_PORT, cidr, f"HTTPS from {cidr}") for cidr in allowed_cidrs),
            IngressRule(HTTPS_PORT, "", "HTTPS from Route 53 health checkers", health_checkers_prefix_list(region)),
        )
        git = tuple(IngressRule(git_ssh_port, cidr, f"git over SSH from {cidr}") for cidr in allowed_cidrs)
    else:
        web = (
            IngressRule(HTTP_PORT, ANYWHERE, "HTTP from anywhere (redirect to HTTPS, ACME challenge)"),
            IngressRule(HTTPS_PORT, ANYWHERE, "HTTPS from anywhere"),
        )
        git = (IngressRule(git_ssh_port, ANYWHERE, "git over SSH from anywhere"),)
    rules: dict[str, tuple[IngressRule, ...]] = {"web": web, "git-ssh": git}
    if admin_cidrs:
        rules["admin-ssh"] = tuple(
            IngressRule(ADMIN_SSH_PORT, cidr, f"administrative SSH from {cidr}") for cidr in admin_cidrs
        )
    return rules


def allow_own_address(network: Network, public_ip: pulumi.Input[str], opts: pulumi.ResourceOptions) -> aws.vpc.SecurityGroupIngressRule:
    """Behind an allow-list, HTTPS from the host's own Elastic IP too: the runner, the probes and Gitea's own webhooks
    reach the forge by its public name, and that traffic returns through the Internet gateway from this address."""
    return aws.vpc.SecurityGroupIngressRule(
        "network-web-in-own-address", security_group_id=network.security_groups["web"].id, ip_protocol="tcp",
        from_port=HTTPS_PORT, to_port=HTTPS_PORT, description="HTTPS from the host's own Elastic IP (hairpin)",
        cidr_ipv4=pulumi.Output.from_input(public_ip).apply(lambda ip: f"{ip}/32"), opts=opts,
    )


def flow_log_policy(log_group_arn: str) -> str:
    """Least privilege for the flow log service: write streams of exactly this log group."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "WriteFlowLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            "Resource": [log_group_arn, f"{log_group_arn}:*"],
        }],
    })


def chosen_zone(available: list[str], wanted: str) -> str:
    """The wanted zone if the region offers it now, or the region's first when none is wanted."""
    if not wanted:
        return available[0]
    if wanted not in available:
        raise ConfigError(f"forgestack:availabilityZone: {wanted!r} is not an available zone of this region; "
                          f"expected one of: {', '.join(available)}")
    return wanted


def service_assume_role_policy(service: str) -> str:
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    })


def flow_logs(name: str, parent: pulumi.Resource, vpc_id: pulumi.Input[str], region: str, retention_days: int,
              protect: bool) -> tuple[aws.kms.Key, aws.cloudwatch.LogGroup, aws.ec2.FlowLog]:
    """Every connection of the VPC logged to CloudWatch Logs (CKV2_AWS_11), encrypted with its own key (CKV_AWS_158):
    flow logs hold every connection's addresses."""
    child = pulumi.ResourceOptions(parent=parent)
    key = rotating_key(f"{name}-flow-logs-key", "forgestack VPC flow logs", parent, protect=protect, logs_region=region)
    group = aws.cloudwatch.LogGroup(f"{name}-flow-logs", retention_in_days=retention_days, kms_key_id=key.arn, opts=child)
    role = aws.iam.Role(f"{name}-flow-logs-role", assume_role_policy=service_assume_role_policy("vpc-flow-logs.amazonaws.com"),
                        opts=child)
    aws.iam.RolePolicy(f"{name}-flow-logs-policy", role=role.id, policy=group.arn.apply(flow_log_policy), opts=child)
    flow_log = aws.ec2.FlowLog(f"{name}-flow-log", vpc_id=vpc_id, traffic_type="ALL", log_destination_type="cloud-watch-logs",
                               log_destination=group.arn, iam_role_arn=role.arn, opts=child)
    return key, group, flow_log


class Network(pulumi.ComponentResource):
    """A VPC with one public subnet for the host, VPC flow logs and the host's security groups."""

    vpc: aws.ec2.Vpc
    subnet: aws.ec2.Subnet
    security_groups: dict[str, aws.ec2.SecurityGroup]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        zones = aws.get_availability_zones_output(state="available", opts=pulumi.InvokeOutputOptions(parent=self))
        self.availability_zone: pulumi.Output[str] = zones.names.apply(lambda names: chosen_zone(names, args.availability_zone))

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc", cidr_block=args.vpc_cidr, enable_dns_hostnames=True, enable_dns_support=True,
            tags={"Name": f"{name}-vpc"}, opts=child,
        )
        # The default security group allows all traffic between its members: strip it (CKV2_AWS_12).
        aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=self.vpc.id, opts=child)

        self.subnet = aws.ec2.Subnet(
            f"{name}-public", vpc_id=self.vpc.id, cidr_block=public_subnet_cidr(args.vpc_cidr),
            availability_zone=self.availability_zone,
            map_public_ip_on_launch=False,  # the host gets an Elastic IP; nothing else is public
            tags={"Name": f"{name}-public"}, opts=child,
        )
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, opts=child)
        route_table = aws.ec2.RouteTable(
            f"{name}-public-rt", vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block=ANYWHERE, gateway_id=gateway.id)],
            opts=child,
        )
        aws.ec2.RouteTableAssociation(
            f"{name}-public-rta", subnet_id=self.subnet.id, route_table_id=route_table.id, opts=child
        )

        self.flow_log_key, self.flow_log_group, self.flow_log = flow_logs(
            name, self, self.vpc.id, args.region, args.flow_log_retention_days, args.protect)

        self.security_groups = {}
        for group_name, rules in host_ingress_rules(args.admin_cidrs, args.git_ssh_port, args.allowed_cidrs, args.region).items():
            group = aws.ec2.SecurityGroup(
                f"{name}-{group_name}", vpc_id=self.vpc.id,
                description=f"forgestack host: {group_name}", opts=child,
            )
            for index, rule in enumerate(rules):
                prefix_list_id = aws.ec2.get_managed_prefix_list_output(
                    name=rule.prefix_list, opts=pulumi.InvokeOutputOptions(parent=self)).id if rule.prefix_list else None
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-{group_name}-in-{index}", security_group_id=group.id, ip_protocol="tcp",
                    from_port=rule.port, to_port=rule.port, description=rule.description,
                    cidr_ipv4=rule.cidr or None, prefix_list_id=prefix_list_id,
                    opts=child,
                )
            self.security_groups[group_name] = group

        # Outbound: package mirrors, image registries, Let's Encrypt, S3 and Secrets Manager.
        outbound = aws.ec2.SecurityGroup(
            f"{name}-outbound", vpc_id=self.vpc.id, description="forgestack host: outbound", opts=child
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-outbound-all", security_group_id=outbound.id, ip_protocol="-1", cidr_ipv4=ANYWHERE,
            description="all outbound (packages, images, ACME, AWS APIs)", opts=child,
        )
        self.security_groups["outbound"] = outbound

        self.register_outputs({
            "vpcId": self.vpc.id,
            "subnetId": self.subnet.id,
            "availabilityZone": self.availability_zone,
            "securityGroupIds": [group.id for group in self.security_groups.values()],
        })

    @property
    def security_group_ids(self) -> list[pulumi.Output[str]]:
        return [group.id for group in self.security_groups.values()]
