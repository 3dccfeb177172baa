"""An architecture diagram (Mermaid) derived from a rehearsal's resources: components as boxes, the
resources that matter to an operator inside them, and the dependencies Pulumi recorded between them."""

from __future__ import annotations

import re

from rehearsal.engine import ProgramRun, Registered

# Types shown (short label); everything else (rules, attachments, bucket settings, images) is detail.
SHOWN = {
    "aws:ec2/vpc:Vpc": "VPC", "aws:ec2/subnet:Subnet": "subnet", "aws:ec2/internetGateway:InternetGateway": "internet gateway",
    "aws:ec2/securityGroup:SecurityGroup": "security group", "aws:ec2/flowLog:FlowLog": "flow log",
    "aws:cloudwatch/logGroup:LogGroup": "log group", "aws:ec2/instance:Instance": "EC2 instance",
    "aws:ebs/volume:Volume": "EBS volume", "aws:ec2/eip:Eip": "Elastic IP", "aws:s3/bucket:Bucket": "S3 bucket",
    "aws:kms/key:Key": "KMS key", "aws:secretsmanager/secret:Secret": "secret", "aws:iam/role:Role": "IAM role",
    "aws:route53/record:Record": "DNS record", "aws:dlm/lifecyclePolicy:LifecyclePolicy": "snapshot policy",
    "docker:index/network:Network": "Docker network", "docker:index/container:Container": "container",
    # topology ha
    "aws:ec2/natGateway:NatGateway": "NAT gateway", "aws:rds/instance:Instance": "RDS PostgreSQL (Multi-AZ)",
    "aws:elasticache/replicationGroup:ReplicationGroup": "ElastiCache Valkey", "aws:efs/fileSystem:FileSystem": "EFS file system",
    "aws:ecs/service:Service": "ECS service (Fargate)", "aws:ecs/taskDefinition:TaskDefinition": "task definition",
    "aws:lb/loadBalancer:LoadBalancer": "load balancer", "aws:wafv2/webAcl:WebAcl": "WAF web ACL",
    "aws:acm/certificate:Certificate": "ACM certificate", "aws:ssm/document:Document": "SSM document (admin tools)",
}


def _node_id(resource: Registered) -> str:
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", resource.name)


def _label(resource: Registered) -> str:
    name = resource.inputs.get("name") if resource.type == "docker:index/container:Container" else resource.name
    return f'"{SHOWN[resource.type]}<br/>{name}"'


def _dependencies(resource: Registered, by_urn: dict[str, Registered]) -> list[str]:
    """Its own dependencies plus its provider's (the Docker provider depends on the host it connects to)."""
    provider = by_urn.get(resource.provider.rsplit("::", 1)[0]) if resource.provider else None
    return [*resource.depends_on, *(provider.depends_on if provider else [])]


def _through_the_host(resource: Registered, dependency: Registered) -> bool:
    """Every container reaches AWS only through the Docker connection to the host: draw that once, from the network."""
    return resource.type == "docker:index/container:Container" and dependency.type.startswith("aws:")


def mermaid(run: ProgramRun) -> str:
    by_urn = {r.urn: r for r in run.resources}
    shown = [r for r in run.resources if r.type in SHOWN]
    shown_urns = {r.urn for r in shown}
    lines = ["flowchart LR"]
    groups: dict[str, list[Registered]] = {}
    for resource in shown:
        groups.setdefault(resource.parent, []).append(resource)
    # Sorted: registration order varies from run to run (resources register concurrently).
    for parent_urn, members in sorted(groups.items(), key=lambda item: item[0]):
        members = sorted(members, key=lambda r: (SHOWN[r.type], r.name))
        parent = by_urn.get(parent_urn)
        if parent is not None and parent.type.startswith("forgestack:"):
            lines.append(f'  subgraph {_node_id(parent)}["{parent.type.split(":")[-1]} ({parent.name})"]')
            lines += [f"    {_node_id(r)}[{_label(r)}]" for r in members]
            lines.append("  end")
        else:
            lines += [f"  {_node_id(r)}[{_label(r)}]" for r in members]
    edges = sorted({(_node_id(r), _node_id(by_urn[d])) for r in shown for d in _dependencies(r, by_urn)
                    if d in shown_urns and d != r.urn and not _through_the_host(r, by_urn[d])})
    lines += [f"  {source} --> {target}" for source, target in edges]
    return "\n".join(lines) + "\n"
