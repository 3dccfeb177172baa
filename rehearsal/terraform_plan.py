"""A rehearsal's AWS resources as a Terraform plan JSON document, so that Checkov can scan them.

pulumi-aws is bridged from the Terraform AWS provider: each Pulumi type is one Terraform resource type
and its inputs are the Terraform arguments in camelCase. Checkov reads `terraform show -json` plans
(`--framework terraform_plan`): `planned_values` holds each resource's arguments and `configuration`
the references between resources, which its graph checks (CKV2_*) follow. References are recovered by
value: an input that equals another resource's id, ARN or name refers to that resource.

Secret inputs are written as "[secret]": the document may be kept as a CI artifact.
"""

from __future__ import annotations

import re
from typing import Any, Final

from rehearsal.engine import ProgramRun, Registered, has_secret

# Pulumi type token -> Terraform resource type, for every AWS type the stacks create. A type missing here
# is an error, not a silent gap in the scan.
TERRAFORM_TYPES: Final = {
    "aws:budgets/budget:Budget": "aws_budgets_budget",
    "aws:cloudwatch/logGroup:LogGroup": "aws_cloudwatch_log_group",
    "aws:cloudwatch/metricAlarm:MetricAlarm": "aws_cloudwatch_metric_alarm",
    "aws:dlm/lifecyclePolicy:LifecyclePolicy": "aws_dlm_lifecycle_policy",
    "aws:ebs/volume:Volume": "aws_ebs_volume",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": "aws_default_security_group",
    "aws:ec2/eip:Eip": "aws_eip",
    "aws:ec2/flowLog:FlowLog": "aws_flow_log",
    "aws:ec2/instance:Instance": "aws_instance",
    "aws:ec2/internetGateway:InternetGateway": "aws_internet_gateway",
    "aws:ec2/routeTable:RouteTable": "aws_route_table",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "aws_route_table_association",
    "aws:ec2/securityGroup:SecurityGroup": "aws_security_group",
    "aws:ec2/subnet:Subnet": "aws_subnet",
    "aws:ec2/volumeAttachment:VolumeAttachment": "aws_volume_attachment",
    "aws:ec2/vpc:Vpc": "aws_vpc",
    "aws:iam/accessKey:AccessKey": "aws_iam_access_key",
    "aws:iam/group:Group": "aws_iam_group",
    "aws:iam/groupPolicy:GroupPolicy": "aws_iam_group_policy",
    "aws:iam/instanceProfile:InstanceProfile": "aws_iam_instance_profile",
    "aws:iam/role:Role": "aws_iam_role",
    "aws:iam/rolePolicy:RolePolicy": "aws_iam_role_policy",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": "aws_iam_role_policy_attachment",
    "aws:iam/user:User": "aws_iam_user",
    "aws:iam/userGroupMembership:UserGroupMembership": "aws_iam_user_group_membership",
    "aws:iam/userPolicy:UserPolicy": "aws_iam_user_policy",
    "aws:kms/key:Key": "aws_kms_key",
    "aws:route53/healthCheck:HealthCheck": "aws_route53_health_check",
    "aws:route53/record:Record": "aws_route53_record",
    "aws:s3/bucket:Bucket": "aws_s3_bucket",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": "aws_s3_bucket_lifecycle_configuration",
    "aws:s3/bucketLogging:BucketLogging": "aws_s3_bucket_logging",
    "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration": "aws_s3_bucket_object_lock_configuration",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": "aws_s3_bucket_ownership_controls",
    "aws:s3/bucketPolicy:BucketPolicy": "aws_s3_bucket_policy",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "aws_s3_bucket_public_access_block",
    "aws:s3/bucketReplicationConfig:BucketReplicationConfig": "aws_s3_bucket_replication_configuration",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
        "aws_s3_bucket_server_side_encryption_configuration",
    "aws:s3/bucketVersioning:BucketVersioning": "aws_s3_bucket_versioning",
    "aws:secretsmanager/secret:Secret": "aws_secretsmanager_secret",
    "aws:secretsmanager/secretVersion:SecretVersion": "aws_secretsmanager_secret_version",
    "aws:ses/domainDkim:DomainDkim": "aws_ses_domain_dkim",
    "aws:ses/domainIdentity:DomainIdentity": "aws_ses_domain_identity",
    "aws:ses/mailFrom:MailFrom": "aws_ses_domain_mail_from",
    "aws:sns/topic:Topic": "aws_sns_topic",
    "aws:sns/topicPolicy:TopicPolicy": "aws_sns_topic_policy",
    "aws:sns/topicSubscription:TopicSubscription": "aws_sns_topic_subscription",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "aws_vpc_security_group_egress_rule",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "aws_vpc_security_group_ingress_rule",
    # topology ha
    "aws:acm/certificate:Certificate": "aws_acm_certificate",
    "aws:acm/certificateValidation:CertificateValidation": "aws_acm_certificate_validation",
    "aws:ec2/natGateway:NatGateway": "aws_nat_gateway",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "aws_vpc_endpoint",
    "aws:ecs/cluster:Cluster": "aws_ecs_cluster",
    "aws:ecs/service:Service": "aws_ecs_service",
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": "aws_service_discovery_private_dns_namespace",
    "aws:servicediscovery/service:Service": "aws_service_discovery_service",
    "aws:ecs/taskDefinition:TaskDefinition": "aws_ecs_task_definition",
    "aws:efs/accessPoint:AccessPoint": "aws_efs_access_point",
    "aws:efs/backupPolicy:BackupPolicy": "aws_efs_backup_policy",
    "aws:efs/fileSystem:FileSystem": "aws_efs_file_system",
    "aws:efs/fileSystemPolicy:FileSystemPolicy": "aws_efs_file_system_policy",
    "aws:efs/mountTarget:MountTarget": "aws_efs_mount_target",
    "aws:elasticache/parameterGroup:ParameterGroup": "aws_elasticache_parameter_group",
    "aws:elasticache/replicationGroup:ReplicationGroup": "aws_elasticache_replication_group",
    "aws:elasticache/subnetGroup:SubnetGroup": "aws_elasticache_subnet_group",
    "aws:lb/listener:Listener": "aws_lb_listener",
    "aws:lb/loadBalancer:LoadBalancer": "aws_lb",
    "aws:lb/targetGroup:TargetGroup": "aws_lb_target_group",
    "aws:rds/instance:Instance": "aws_db_instance",
    "aws:rds/parameterGroup:ParameterGroup": "aws_db_parameter_group",
    "aws:rds/subnetGroup:SubnetGroup": "aws_db_subnet_group",
    "aws:ssm/association:Association": "aws_ssm_association",
    "aws:ssm/document:Document": "aws_ssm_document",
    "aws:wafv2/webAcl:WebAcl": "aws_wafv2_web_acl",
    "aws:wafv2/webAclAssociation:WebAclAssociation": "aws_wafv2_web_acl_association",
    "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration": "aws_wafv2_web_acl_logging_configuration",
    "aws:cloudwatch/dashboard:Dashboard": "aws_cloudwatch_dashboard",
}
# Repeated blocks: Pulumi names them in the plural, Terraform in the singular.
BLOCK_NAMES: Final = {
    "rules": "rule", "schedules": "schedule", "routes": "route", "ebsBlockDevices": "ebs_block_device",
    "aliases": "alias", "transitions": "transition", "noncurrentVersionTransitions": "noncurrent_version_transition",
    # topology ha
    "parameters": "parameter", "lifecyclePolicies": "lifecycle_policy", "settings": "setting", "volumes": "volume",
    "loadBalancers": "load_balancer", "defaultActions": "default_action",
}
# Arguments whose value is a map of free-form keys (never renamed).
MAP_ARGUMENTS: Final = frozenset({"tags", "targetTags", "tagsToAdd", "dimensions", "crossRegionCopyRules"})
REFERENCE_ATTRIBUTES: Final = ("id", "arn", "bucket", "name")
SECRET_PLACEHOLDER: Final = "[secret]"


class UnmappedTypeError(ValueError):
    """A Pulumi AWS type without its Terraform resource type in TERRAFORM_TYPES."""


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def terraform_values(value: Any) -> Any:
    """Pulumi inputs -> Terraform arguments: snake_case names, singular block names, maps kept as they are. A nested
    block that Pulumi gives as one object is a list of one in Terraform's plan (the provider's blocks are lists)."""
    if isinstance(value, list):
        return [terraform_values(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the mocks deliver every number as a float; Terraform's integers are integers (port 80, not 80.0)
    if not isinstance(value, dict):
        return value
    converted: dict[str, Any] = {}
    for key, item in value.items():
        if key.startswith("__"):
            continue
        name = BLOCK_NAMES[key] if key in BLOCK_NAMES and isinstance(item, list) else snake_case(key)
        if key in MAP_ARGUMENTS:
            converted[name] = item
        elif isinstance(item, dict):
            converted[name] = [terraform_values(item)]
        else:
            converted[name] = terraform_values(item)
    return converted


def terraform_address(resource: Registered) -> str:
    """<terraform type>.<Pulumi name with - as _>: unique, since Pulumi names are unique within a stack."""
    return f"{TERRAFORM_TYPES[resource.type]}.{resource.name.replace('-', '_')}"


def aws_resources(run: ProgramRun) -> list[Registered]:
    return [r for r in run.resources if r.custom and r.type.startswith("aws:")]


def _expressions(inputs: dict[str, Any], referents: dict[str, str], address: str) -> dict[str, Any]:
    """The references among `inputs` (also inside nested blocks, as Terraform nests their expressions) to other
    resources, recovered by value."""
    expressions: dict[str, Any] = {}
    for key, value in inputs.items():
        if key.startswith("__") or key in MAP_ARGUMENTS:
            continue
        name = BLOCK_NAMES[key] if key in BLOCK_NAMES and isinstance(value, list) else snake_case(key)
        blocks = [value] if isinstance(value, dict) else value if isinstance(value, list) and value and isinstance(value[0], dict) else None
        if blocks is not None:
            nested = [_expressions(block, referents, address) for block in blocks if isinstance(block, dict)]
            if any(nested):
                expressions[name] = nested
            continue
        targets = [referents[v] for v in (value if isinstance(value, list) else [value])
                   if isinstance(v, str) and v in referents and not referents[v].startswith(address + ".")]
        if targets:
            expressions[name] = {"references": [ref for target in targets for ref in (target, target.rsplit(".", 1)[0])]}
    return expressions


def plan_document(run: ProgramRun) -> dict[str, Any]:
    """The run's AWS resources as `terraform show -json` would print a plan that creates them."""
    aws = aws_resources(run)
    unmapped = sorted({r.type for r in aws if r.type not in TERRAFORM_TYPES})
    if unmapped:
        raise UnmappedTypeError(f"no Terraform resource type known for {', '.join(unmapped)}: add it to TERRAFORM_TYPES")

    # Who is referred to by which value (ids and ARNs are unique in a rehearsal).
    referents: dict[str, str] = {}
    for resource in aws:
        for attribute in REFERENCE_ATTRIBUTES:
            value = resource.id if attribute == "id" else resource.outputs.get(attribute)
            if isinstance(value, str) and len(value) > 6:
                referents.setdefault(value, f"{terraform_address(resource)}.{attribute}")

    planned: list[dict[str, Any]] = []
    configured: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    for resource in aws:
        address = terraform_address(resource)
        raw = resource.raw_inputs or {}
        inputs = {key: SECRET_PLACEHOLDER if has_secret(raw.get(key)) else value for key, value in resource.inputs.items()}
        values = terraform_values(inputs)
        expressions = _expressions(inputs, referents, address)
        common = {"address": address, "mode": "managed", "type": TERRAFORM_TYPES[resource.type], "name": address.split(".", 1)[1]}
        planned.append({**common, "provider_name": "registry.terraform.io/hashicorp/aws", "schema_version": 0, "values": values})
        configured.append({**common, "provider_config_key": "aws", "expressions": expressions})
        changes.append({**common, "change": {"actions": ["create"], "before": None, "after": values}})
    return {
        "format_version": "1.2",
        "terraform_version": "1.9.8",
        "planned_values": {"root_module": {"resources": planned}},
        "resource_changes": changes,
        "configuration": {"root_module": {"resources": configured}},
    }
