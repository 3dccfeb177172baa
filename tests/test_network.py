"""Network: VPC, subnet in a looked-up zone, routing, flow logs and exactly the intended inbound rules."""

from __future__ import annotations

import json

from components.network import host_ingress_rules, public_subnet_cidr
from rehearsal.engine import ProgramRun, run_program, stack_config


def test_public_subnet_is_the_first_slash_24() -> None:
    assert public_subnet_cidr("10.20.0.0/16") == "10.20.0.0/24"
    assert public_subnet_cidr("192.168.7.0/24") == "192.168.7.0/24"


def test_no_admin_ssh_rule_without_admin_networks() -> None:
    rules = host_ingress_rules((), git_ssh_port=22)
    assert set(rules) == {"web", "git-ssh"}
    assert sorted(rule.port for group in rules.values() for rule in group) == [22, 80, 443]


def test_admin_ssh_only_from_admin_networks() -> None:
    rules = host_ingress_rules(("203.0.113.7/32", "198.51.100.0/24"))
    assert [(rule.port, rule.cidr) for rule in rules["admin-ssh"]] == [(22, "203.0.113.7/32"), (22, "198.51.100.0/24")]


def _ingress(run: ProgramRun) -> list[tuple[int, str]]:
    return sorted(
        (int(rule.inputs["fromPort"]), rule.inputs["cidrIpv4"])
        for rule in run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    )


def test_stack_inbound_rules_are_exactly_web_and_git(aws_run: ProgramRun) -> None:
    # No admin networks in either stack file: git over SSH takes 22 (the host's sshd is on loopback, for SSM).
    assert _ingress(aws_run) == [(22, "0.0.0.0/0"), (80, "0.0.0.0/0"), (443, "0.0.0.0/0")]


def test_admin_networks_add_port_22_only_for_them_and_git_moves_to_2222() -> None:
    run = run_program("dev", stack_config("dev", {"forgestack:adminCidrs": ["203.0.113.7/32"]}))
    assert _ingress(run) == [(22, "203.0.113.7/32"), (80, "0.0.0.0/0"), (443, "0.0.0.0/0"), (2222, "0.0.0.0/0")]
    assert all(cidr != "0.0.0.0/0" for port, cidr in _ingress(run) if port == 22)
    assert len(run.of_type("aws:ec2/securityGroup:SecurityGroup")) == 4  # web, git-ssh, admin-ssh, outbound


def test_every_rule_has_a_description_and_its_port_range_is_one_port(aws_run: ProgramRun) -> None:
    rules = aws_run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    rules += aws_run.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    assert rules
    for rule in rules:
        assert rule.inputs.get("description"), rule.name
        if rule.inputs["ipProtocol"] == "tcp":
            assert rule.inputs["fromPort"] == rule.inputs["toPort"]


def test_vpc_subnet_and_route(dev_run: ProgramRun) -> None:
    vpc = dev_run.one("aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == "10.20.0.0/16"
    assert vpc.inputs["enableDnsHostnames"] is True
    subnet = dev_run.one("aws:ec2/subnet:Subnet")
    assert subnet.inputs["vpcId"] == vpc.id
    assert subnet.inputs["availabilityZone"] == "eu-west-1a"  # from get_availability_zones
    assert subnet.inputs.get("mapPublicIpOnLaunch") is False
    route_table = dev_run.one("aws:ec2/routeTable:RouteTable")
    gateway = dev_run.one("aws:ec2/internetGateway:InternetGateway")
    assert route_table.inputs["routes"] == [{"cidrBlock": "0.0.0.0/0", "gatewayId": gateway.id}]
    association = dev_run.one("aws:ec2/routeTableAssociation:RouteTableAssociation")
    assert (association.inputs["subnetId"], association.inputs["routeTableId"]) == (subnet.id, route_table.id)


def test_default_security_group_is_emptied(dev_run: ProgramRun) -> None:
    default_group = dev_run.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert not default_group.inputs.get("ingress") and not default_group.inputs.get("egress")


def test_flow_logs_capture_all_traffic_with_per_env_retention(dev_run: ProgramRun, prod_run: ProgramRun) -> None:
    for run, days in ((dev_run, 14), (prod_run, 365)):
        log_group = run.one("aws:cloudwatch/logGroup:LogGroup")
        assert log_group.inputs["retentionInDays"] == days
        flow_log = run.one("aws:ec2/flowLog:FlowLog")
        assert flow_log.inputs["trafficType"] == "ALL"
        assert flow_log.inputs["vpcId"] == run.one("aws:ec2/vpc:Vpc").id
        assert flow_log.inputs["logDestination"] == log_group.outputs["arn"]


def test_flow_logs_are_encrypted_with_a_key_cloudwatch_logs_may_use(aws_run: ProgramRun) -> None:
    key = aws_run.one("aws:kms/key:Key", "network-flow-logs-key")
    assert aws_run.one("aws:cloudwatch/logGroup:LogGroup").inputs["kmsKeyId"] == key.outputs["arn"]
    assert key.inputs["enableKeyRotation"] is True
    statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    logs = statements["CloudWatchLogsEncryptsThisAccountsGroups"]
    assert logs["Principal"] == {"Service": "logs.eu-west-1.amazonaws.com"}
    assert logs["Condition"] == {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:eu-west-1:123456789012:log-group:*"}}
    assert not [a for a in logs["Action"] if a in ("kms:*", "kms:CreateGrant", "kms:PutKeyPolicy")]


def test_flow_log_role_writes_only_its_log_group(dev_run: ProgramRun) -> None:
    log_group_arn = dev_run.one("aws:cloudwatch/logGroup:LogGroup").outputs["arn"]
    policy = json.loads(dev_run.one("aws:iam/rolePolicy:RolePolicy", "network-flow-logs-policy").inputs["policy"])
    (statement,) = policy["Statement"]
    assert statement["Resource"] == [log_group_arn, f"{log_group_arn}:*"]
    assert all(not action.endswith("*") for action in statement["Action"])
