"""ZonalNetwork (topology ha): a VPC across zones with public subnets (load balancers, NAT) and private subnets (tasks,
database, cache, file system), NAT egress, flow logs, and VPC endpoints that keep the tasks' AWS traffic off NAT."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final, Literal

import pulumi
import pulumi_aws as aws

from components.cache import PORT as CACHE_PORT
from components.constants import HTTP_PORT, HTTPS_PORT
from components.database import PORT as DATABASE_PORT
from components.filesystem import NFS_PORT
from components.network import ANYWHERE, flow_logs
from components.settings import ConfigError

# Interface endpoints the Gitea tasks and ECS need: image pulls from ECR, secrets, logs, ECS Exec (SSM).
INTERFACE_ENDPOINTS: Final = ("ecr.api", "ecr.dkr", "secretsmanager", "logs", "ssm", "ssmmessages", "ec2messages")
SUBNET_SLOTS: Final = 8  # the VPC is cut in eight: public subnets from the first slot, private ones from the fifth


@dataclass(frozen=True)
class TierRule:
    """Traffic one tier's security group lets in: a port from a network or from another tier's group."""

    tier: str
    port: int
    source: str  # a CIDR, or the name of the tier the traffic comes from
    description: str

    @property
    def from_tier(self) -> bool:
        return "/" not in self.source


def tier_rules(public_ssh_port: int, web_port: int, ssh_port: int) -> tuple[TierRule, ...]:
    """Who talks to whom in ha: the Internet to the load balancers, the load balancers to the tasks, the tasks to the
    database, cache and file system. Nothing else reaches anything (the data tiers have no egress at all)."""
    return (
        TierRule("web-lb", HTTP_PORT, ANYWHERE, "HTTP from anywhere (redirected to HTTPS)"),
        TierRule("web-lb", HTTPS_PORT, ANYWHERE, "HTTPS from anywhere"),
        TierRule("ssh-lb", public_ssh_port, ANYWHERE, "git over SSH from anywhere"),
        TierRule("tasks", web_port, "web-lb", "Gitea's HTTP from the application load balancer"),
        TierRule("tasks", ssh_port, "ssh-lb", "Gitea's SSH from the network load balancer"),
        TierRule("database", DATABASE_PORT, "tasks", "PostgreSQL from the Gitea tasks"),
        TierRule("cache", CACHE_PORT, "tasks", "Valkey from the Gitea tasks"),
        TierRule("file-system", NFS_PORT, "tasks", "NFS from the Gitea tasks"),
        TierRule("database", DATABASE_PORT, "ops", "PostgreSQL from the ops host (restore, migration)"),
        TierRule("file-system", NFS_PORT, "ops", "NFS from the ops host (restore, migration)"),
        TierRule("tasks", web_port, "ops", "Gitea's /metrics from the ops host's Prometheus"),
    )


# Egress per tier: the load balancers only to the tasks' ports; the tasks anywhere (webhooks, mail, images); the ops host
# to the database and file system it restores into, and HTTPS (AWS APIs, package and image downloads); none else.
TIER_EGRESS: Final = {
    "web-lb": ("tasks",), "ssh-lb": ("tasks",), "tasks": (ANYWHERE,), "ops": ("database", "file-system", "tasks"),
    "runner": (ANYWHERE,),  # CI jobs fetch from anywhere; the runner host reaches no data tier and nothing reaches it
}  # fmt: skip
HTTPS_ONLY_EGRESS: Final = ("ops",)  # tiers whose way out is HTTPS alone


@dataclass(frozen=True)
class ZonalNetworkArgs:
    vpc_cidr: str
    region: str
    tier_rules: tuple[TierRule, ...] = ()
    zones: int = 2
    nat_gateways: Literal["one", "per-zone"] = "per-zone"
    flow_log_retention_days: int = 14
    protect: bool = False


def zonal_subnet_cidrs(vpc_cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """(public, private) subnet ranges, one of each per zone: the VPC in eight equal parts (at most /28 each, AWS's
    smallest subnet); public take the first parts, private the parts from the fifth, so up to four zones fit."""
    network = ipaddress.IPv4Network(vpc_cidr)
    parts = list(network.subnets(new_prefix=min(network.prefixlen + 3, 28)))
    if zones > SUBNET_SLOTS // 2:
        raise ValueError(f"at most {SUBNET_SLOTS // 2} zones fit the subnet plan, got {zones}")
    return [str(part) for part in parts[:zones]], [str(part) for part in parts[SUBNET_SLOTS // 2 : SUBNET_SLOTS // 2 + zones]]


def chosen_zones(available: list[str], count: int) -> list[str]:
    """The region's first `count` available zones."""
    if len(available) < count:
        raise ConfigError(f"forgestack:haZones: got {count}; expected at most the {len(available)} zones this region offers now")
    return available[:count]


def nat_index(zone_index: int, nat_gateways: Literal["one", "per-zone"]) -> int:
    """Which NAT gateway a zone's private subnet leaves through."""
    return zone_index if nat_gateways == "per-zone" else 0


class ZonalNetwork(pulumi.ComponentResource):
    """VPC, a public and a private subnet per zone, Internet and NAT gateways, flow logs and VPC endpoints."""

    vpc: aws.ec2.Vpc
    public_subnets: list[aws.ec2.Subnet]
    private_subnets: list[aws.ec2.Subnet]

    def __init__(self, name: str, args: ZonalNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:ZonalNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        public_cidrs, private_cidrs = zonal_subnet_cidrs(args.vpc_cidr, args.zones)
        available = aws.get_availability_zones_output(state="available", opts=pulumi.InvokeOutputOptions(parent=self))
        zones = available.names.apply(lambda names: chosen_zones(names, args.zones))
        self.zones: pulumi.Output[list[str]] = zones

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"{name}-vpc"},
            opts=child,
        )
        # The default security group allows all traffic between its members: strip it (CKV2_AWS_12).
        aws.ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=self.vpc.id, opts=child)
        self.flow_log_key, self.flow_log_group, self.flow_log = flow_logs(
            name, self, self.vpc.id, args.region, args.flow_log_retention_days, args.protect
        )

        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, opts=child)
        public_routes = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block=ANYWHERE, gateway_id=gateway.id)],
            opts=child,
        )
        self.public_subnets, self.private_subnets, private_tables = [], [], []
        nat_gateways: list[aws.ec2.NatGateway] = []

        def subnet(tier: str, index: int, cidr: str) -> aws.ec2.Subnet:
            return aws.ec2.Subnet(
                f"{name}-{tier}-{index}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone=zones.apply(lambda names: names[index]),
                map_public_ip_on_launch=False,  # nothing gets a public address but the NAT gateways' and the load balancers'
                tags={"Name": f"{name}-{tier}-{index}"},
                opts=child,
            )

        for index in range(args.zones):
            public = subnet("public", index, public_cidrs[index])
            aws.ec2.RouteTableAssociation(f"{name}-public-rta-{index}", subnet_id=public.id, route_table_id=public_routes.id, opts=child)
            self.public_subnets.append(public)
            if nat_index(index, args.nat_gateways) == index:  # zone 0 always has one; the others with per-zone
                address = aws.ec2.Eip(f"{name}-nat-ip-{index}", domain="vpc", opts=child)
                nat_gateways.append(
                    aws.ec2.NatGateway(
                        f"{name}-nat-{index}",
                        allocation_id=address.id,
                        subnet_id=public.id,
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
                    )
                )
            private = subnet("private", index, private_cidrs[index])
            nat = nat_gateways[nat_index(index, args.nat_gateways)]
            table = aws.ec2.RouteTable(
                f"{name}-private-rt-{index}",
                vpc_id=self.vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block=ANYWHERE, nat_gateway_id=nat.id)],
                opts=child,
            )
            aws.ec2.RouteTableAssociation(f"{name}-private-rta-{index}", subnet_id=private.id, route_table_id=table.id, opts=child)
            self.private_subnets.append(private)
            private_tables.append(table)

        # S3 through a gateway endpoint (free); the rest through interface endpoints in every private subnet.
        aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint",
            vpc_id=self.vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[table.id for table in private_tables],
            opts=child,
        )
        self.endpoint_group = aws.ec2.SecurityGroup(
            f"{name}-endpoints", vpc_id=self.vpc.id, description="forgestack VPC endpoints: HTTPS from the VPC", opts=child
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-endpoints-in",
            security_group_id=self.endpoint_group.id,
            ip_protocol="tcp",
            from_port=HTTPS_PORT,
            to_port=HTTPS_PORT,
            cidr_ipv4=args.vpc_cidr,
            description="HTTPS to the AWS APIs from inside the VPC",
            opts=child,
        )
        for service in INTERFACE_ENDPOINTS:
            aws.ec2.VpcEndpoint(
                f"{name}-{service.replace('.', '-')}-endpoint",
                vpc_id=self.vpc.id,
                service_name=f"com.amazonaws.{args.region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[subnet.id for subnet in self.private_subnets],
                security_group_ids=[self.endpoint_group.id],
                opts=child,
            )

        self.tier_groups = self._tiers(name, args)

        self.register_outputs(
            {
                "vpcId": self.vpc.id,
                "publicSubnetIds": [subnet.id for subnet in self.public_subnets],
                "privateSubnetIds": [subnet.id for subnet in self.private_subnets],
                "zones": zones,
            }
        )

    def _tiers(self, name: str, args: ZonalNetworkArgs) -> dict[str, aws.ec2.SecurityGroup]:
        child = pulumi.ResourceOptions(parent=self)
        # Every tier named by a rule, also one that only sends (the ops host receives nothing) or only has egress (runner).
        tiers = list(dict.fromkeys([rule.tier for rule in args.tier_rules]
                                   + [rule.source for rule in args.tier_rules if rule.from_tier] + list(TIER_EGRESS)))
        groups = {
            tier: aws.ec2.SecurityGroup(f"{name}-{tier}", vpc_id=self.vpc.id, description=f"forgestack ha: {tier}", opts=child)
            for tier in tiers
        }
        for rule in args.tier_rules:
            source = {"referenced_security_group_id": groups[rule.source].id} if rule.from_tier else {"cidr_ipv4": rule.source}
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-{rule.tier}-in-{rule.port}" + (f"-from-{rule.source}" if rule.from_tier else ""),
                security_group_id=groups[rule.tier].id,
                ip_protocol="tcp",
                from_port=rule.port,
                to_port=rule.port,
                description=rule.description,
                opts=child,
                **source,
            )
            # The other side of a tier-to-tier rule: the source tier may send exactly that, where it has limited egress.
            if rule.from_tier and rule.tier in TIER_EGRESS.get(rule.source, ()):
                aws.vpc.SecurityGroupEgressRule(
                    f"{name}-{rule.source}-out-{rule.port}",
                    security_group_id=groups[rule.source].id,
                    ip_protocol="tcp",
                    from_port=rule.port,
                    to_port=rule.port,
                    referenced_security_group_id=groups[rule.tier].id,
                    description=f"to the {rule.tier} on {rule.port}",
                    opts=child,
                )
        for tier in HTTPS_ONLY_EGRESS:
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-{tier}-out-https",
                security_group_id=groups[tier].id,
                ip_protocol="tcp",
                from_port=HTTPS_PORT,
                to_port=HTTPS_PORT,
                cidr_ipv4=ANYWHERE,
                description="HTTPS out (AWS APIs through the endpoints and NAT, packages, images)",
                opts=child,
            )
        for tier, destinations in TIER_EGRESS.items():
            if ANYWHERE in destinations:
                aws.vpc.SecurityGroupEgressRule(
                    f"{name}-{tier}-out-all",
                    security_group_id=groups[tier].id,
                    ip_protocol="-1",
                    cidr_ipv4=ANYWHERE,
                    description="all outbound (webhooks, mail, images, AWS APIs)",
                    opts=child,
                )
        return groups

    @property
    def private_subnet_ids(self) -> list[pulumi.Output[str]]:
        return [subnet.id for subnet in self.private_subnets]

    @property
    def public_subnet_ids(self) -> list[pulumi.Output[str]]:
        return [subnet.id for subnet in self.public_subnets]
