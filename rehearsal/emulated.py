"""Rehearse the program against an emulated AWS account: Pulumi mocks that turn each AWS resource into boto3 calls on moto.

Every AWS resource type the program registers has a handler below that makes the requests the
real provider would make, against moto in this process, and returns the ids and attributes moto
assigns, so dependants receive real emulated ids. A type without a handler stops the rehearsal
with its name: nothing AWS is silently echoed. Data Lifecycle Manager, which moto lacks, is
validated against botocore's service model (Stubber) and reported as validated, not emulated.
Docker, random, tls and command resources go through the plain mocks (ForgeMocks) and the
Docker checks of scripts/rehearse.py.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pulumi
from moto import mock_aws

from components.constants import CANONICAL_OWNER_ID, UBUNTU_RELEASE
from components.private_instance import ami_parameter
from rehearsal.emulated_ha import HaHandlers
from rehearsal.engine import ACCOUNT_ID, ELB_ACCOUNTS, ForgeMocks, ProgramRun, Registered, run_program, unwrap_secrets

FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal", "AWS_SESSION_TOKEN": "rehearsal"}


class UnemulatedTypeError(pulumi.RunError):
    """The program registered an AWS type the rehearsal cannot emulate or validate."""


@dataclass
class EmulatedAccount:
    """The moto account after a rehearsal: clients for assertions, and what was only validated."""

    region: str
    validated_only: list[str] = field(default_factory=list)  # "type name": checked against botocore's model only
    rehearsals: int = 0  # programs run against this account so far: each gets its own range of generated names
    # The engine registers resources from several threads; moto's backends are not thread-safe (a dict changed size
    # during iteration in create_security_group, seen once under load), so calls into moto go one at a time.
    moto_lock: threading.RLock = field(default_factory=threading.RLock)
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, service: str, region: str | None = None) -> Any:
        """One client per service and region (the stack's unless a resource names its own): creating a boto3 client
        costs far more than a call to moto (clients are thread-safe)."""
        where = region or self.region
        with self._lock:
            if (service, where) not in self._clients:
                self._clients[service, where] = boto3.client(service, region_name=where)
            return self._clients[service, where]


def ses_smtp_password_v4(secret_access_key: str, region: str) -> str:
    """SES's SMTP password for an access key (AWS's documented SigV4 derivation, as the provider computes it)."""
    signature = ("AWS4" + secret_access_key).encode()
    for part in ("11111111", region, "ses", "aws4_request", "SendRawEmail"):
        signature = hmac.new(signature, part.encode(), hashlib.sha256).digest()
    return base64.b64encode(bytes([0x04]) + signature).decode()


def _number(value: Any) -> int:
    return int(value)  # mocks deliver numbers as floats (443.0)


def _tags(inputs: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    tags = inputs.get("tags") or {}
    return [{"ResourceType": resource_type, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []


class MotoMocks(HaHandlers, ForgeMocks):
    """ForgeMocks for everything but AWS; AWS resources and invokes go to moto."""

    def __init__(self, account: EmulatedAccount) -> None:
        super().__init__()
        self.account = account
        # A second program in the same account (a stack rebuilt after a loss) must not reuse the first one's names.
        self.counter = account.rehearsals * 1_000_000
        account.rehearsals += 1
        self.handlers: dict[str, Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]]]] = {
            "aws:ec2/vpc:Vpc": self._vpc,
            "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": self._default_security_group,
            "aws:ec2/subnet:Subnet": self._subnet,
            "aws:ec2/internetGateway:InternetGateway": self._internet_gateway,
            "aws:ec2/routeTable:RouteTable": self._route_table,
            "aws:ec2/routeTableAssociation:RouteTableAssociation": self._route_table_association,
            "aws:ec2/securityGroup:SecurityGroup": self._security_group,
            "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": self._ingress_rule,
            "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": self._egress_rule,
            "aws:cloudwatch/logGroup:LogGroup": self._log_group,
            "aws:ec2/flowLog:FlowLog": self._flow_log,
            "aws:iam/role:Role": self._role,
            "aws:iam/rolePolicy:RolePolicy": self._role_policy,
            "aws:iam/rolePolicyAttachment:RolePolicyAttachment": self._role_policy_attachment,
            "aws:iam/instanceProfile:InstanceProfile": self._instance_profile,
            "aws:kms/key:Key": self._kms_key,
            "aws:s3/bucket:Bucket": self._bucket,
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": self._public_access_block,
            "aws:s3/bucketOwnershipControls:BucketOwnershipControls": self._ownership_controls,
            "aws:s3/bucketVersioning:BucketVersioning": self._versioning,
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": self._encryption,
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": self._lifecycle,
            "aws:s3/bucketPolicy:BucketPolicy": self._bucket_policy,
            "aws:s3/bucketLogging:BucketLogging": self._bucket_logging,
            "aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration": self._object_lock,
            "aws:s3/bucketReplicationConfig:BucketReplicationConfig": self._replication,
            "aws:secretsmanager/secret:Secret": self._secret,
            "aws:secretsmanager/secretVersion:SecretVersion": self._secret_version,
            "aws:ebs/volume:Volume": self._volume,
            "aws:ec2/instance:Instance": self._instance,
            "aws:ec2/volumeAttachment:VolumeAttachment": self._volume_attachment,
            "aws:ec2/eip:Eip": self._eip,
            "aws:route53/record:Record": self._record,
            "aws:dlm/lifecyclePolicy:LifecyclePolicy": self._dlm_policy,
            "aws:sns/topic:Topic": self._topic,
            "aws:sns/topicPolicy:TopicPolicy": self._topic_policy,
            "aws:sns/topicSubscription:TopicSubscription": self._topic_subscription,
            "aws:cloudwatch/metricAlarm:MetricAlarm": self._metric_alarm,
            "aws:route53/healthCheck:HealthCheck": self._health_check,
            "aws:budgets/budget:Budget": self._budget,
            "aws:ses/domainIdentity:DomainIdentity": self._ses_identity,
            "aws:ses/domainDkim:DomainDkim": self._ses_dkim,
            "aws:ses/mailFrom:MailFrom": self._ses_mail_from,
            "aws:iam/user:User": self._user,
            "aws:iam/userPolicy:UserPolicy": self._user_policy,
            "aws:iam/group:Group": self._group,
            "aws:iam/groupPolicy:GroupPolicy": self._group_policy,
            "aws:iam/userGroupMembership:UserGroupMembership": self._user_group_membership,
            "aws:iam/accessKey:AccessKey": self._access_key,
            **self.ha_handlers(),
        }

    # ------------------------------------------------------------ Pulumi mock entry points

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if not args.typ.startswith("aws:"):
            return super().new_resource(args)
        handler = self.handlers.get(args.typ)
        if handler is None:
            raise UnemulatedTypeError(f"rehearsal: AWS type {args.typ} ({args.name}) has no emulation; add a handler in "
                                      "rehearsal/emulated.py")
        inputs = unwrap_secrets(args.inputs)
        with self.account.moto_lock:
            resource_id, attributes = handler(args.name, inputs)
        outputs = {**inputs, **attributes}
        self.registered.append(Registered(args.typ, args.name, inputs, resource_id, outputs, bool(args.custom), raw_inputs=args.inputs))
        return resource_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        with self.account.moto_lock:
            return self._call(args)

    def _call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        token, request = args.token, unwrap_secrets(args.args)
        ec2 = self.account.client("ec2")
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            zones = ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": [request.get("state", "available")]}])
            zones_sorted = sorted(zones["AvailabilityZones"], key=lambda z: z["ZoneName"])
            return {"names": [z["ZoneName"] for z in zones_sorted], "zoneIds": [z["ZoneId"] for z in zones_sorted],
                    "id": self.account.region}, []
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            identity = self.account.client("sts").get_caller_identity()
            return {"accountId": identity["Account"], "arn": identity["Arn"], "userId": identity["UserId"]}, []
        if token == "aws:ec2/getAmi:getAmi":
            filters = [{"Name": f["name"], "Values": f["values"]} for f in request.get("filters", [])]
            images = ec2.describe_images(Owners=request.get("owners", []), Filters=filters)["Images"]
            if not images:
                raise pulumi.RunError(f"rehearsal: no image matches {filters} owned by {request.get('owners')}")
            image = max(images, key=lambda i: i["CreationDate"]) if request.get("mostRecent") else images[0]
            return {"id": image["ImageId"], "imageId": image["ImageId"], "name": image["Name"],
                    "architecture": image["Architecture"], "ownerId": image["OwnerId"]}, []
        if token == "aws:ssm/getParameter:getParameter":
            parameter = self.account.client("ssm").get_parameter(Name=request["name"], WithDecryption=bool(request.get("withDecryption")))
            value = parameter["Parameter"]
            for architecture in ("x86_64", "arm64"):
                if request["name"] == ami_parameter(architecture):
                    register_amazon_linux_image(self.account.region, architecture, value["Value"])
            return {"id": value["Name"], "name": value["Name"], "value": value["Value"], "type": value["Type"],
                    "arn": value.get("ARN", ""), "version": value.get("Version", 1), "insecureValue": value["Value"]}, []
        if token == "aws:route53/getZone:getZone":
            name = request["name"].rstrip(".") + "."
            zones = [z for z in self.account.client("route53").list_hosted_zones()["HostedZones"]
                     if z["Name"] == name and z["Config"]["PrivateZone"] == bool(request.get("privateZone"))]
            if not zones:
                raise pulumi.RunError(f"rehearsal: the account has no hosted zone {name}")
            zone_id = zones[0]["Id"].split("/")[-1]
            return {"id": zone_id, "zoneId": zone_id, "name": name.rstrip("."), "arn": f"arn:aws:route53:::hostedzone/{zone_id}"}, []
        if token == "aws:ec2/getManagedPrefixList:getManagedPrefixList":
            return self._managed_prefix_list(ec2, request["name"]), []
        if token == "aws:elb/getServiceAccount:getServiceAccount":
            account = ELB_ACCOUNTS.get(self.account.region)
            if account is None:
                raise UnemulatedTypeError(f"rehearsal: no ELB log-delivery account known for {self.account.region}; add it to ELB_ACCOUNTS")
            return {"id": account, "arn": f"arn:aws:iam::{account}:root"}, []
        raise UnemulatedTypeError(f"rehearsal: invoke {token} has no emulation")

    def _managed_prefix_list(self, ec2: Any, name: str) -> dict[str, Any]:
        """An AWS-managed prefix list by name. moto holds S3's and DynamoDB's but not Route 53's health checkers', which
        AWS publishes in every region: that one is stood in for by a list of the same name, created on first read."""
        found = ec2.describe_managed_prefix_lists(Filters=[{"Name": "prefix-list-name", "Values": [name]}])["PrefixLists"]
        if not found and name == f"com.amazonaws.{self.account.region}.route53-healthchecks":
            found = [ec2.create_managed_prefix_list(PrefixListName=name, MaxEntries=25, AddressFamily="IPv4")["PrefixList"]]
        if not found:
            raise pulumi.RunError(f"rehearsal: no managed prefix list named {name} in {self.account.region}")
        prefix_list = found[0]
        return {"id": prefix_list["PrefixListId"], "name": name, "arn": prefix_list.get("PrefixListArn", ""),
                "maxEntries": prefix_list.get("MaxEntries", 0)}

    # ------------------------------------------------------------ network

    def _vpc(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ec2 = self.account.client("ec2")
        vpc = ec2.create_vpc(CidrBlock=inputs["cidrBlock"], TagSpecifications=_tags(inputs, "vpc"))["Vpc"]
        vpc_id = vpc["VpcId"]
        for attribute in ("enableDnsSupport", "enableDnsHostnames"):
            if attribute in inputs:
                ec2.modify_vpc_attribute(VpcId=vpc_id, **{attribute[0].upper() + attribute[1:]: {"Value": bool(inputs[attribute])}})
        default_group = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                              {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"][0]
        main_table = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                                        {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]
        return vpc_id, {"arn": f"arn:aws:ec2:{self.account.region}:{ACCOUNT_ID}:vpc/{vpc_id}", "ownerId": ACCOUNT_ID,
                        "defaultSecurityGroupId": default_group["GroupId"], "mainRouteTableId": main_table["RouteTableId"]}

    def _default_security_group(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Adopting the default group with no rules removes every rule it has (what the provider does)."""
        ec2 = self.account.client("ec2")
        group = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [inputs["vpcId"]]},
                                                      {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"][0]
        if group["IpPermissions"]:
            ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=group["IpPermissions"])
        if group["IpPermissionsEgress"]:
            ec2.revoke_security_group_egress(GroupId=group["GroupId"], IpPermissions=group["IpPermissionsEgress"])
        return group["GroupId"], {"name": "default", "arn": f"arn:aws:ec2:{self.account.region}:{ACCOUNT_ID}:security-group/"
                                                             f"{group['GroupId']}"}

    def _subnet(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ec2 = self.account.client("ec2")
        subnet = ec2.create_subnet(VpcId=inputs["vpcId"], CidrBlock=inputs["cidrBlock"], AvailabilityZone=inputs["availabilityZone"],
                                   TagSpecifications=_tags(inputs, "subnet"))["Subnet"]
        ec2.modify_subnet_attribute(SubnetId=subnet["SubnetId"], MapPublicIpOnLaunch={"Value": bool(inputs.get("mapPublicIpOnLaunch"))})
        return subnet["SubnetId"], {"arn": subnet.get("SubnetArn", ""), "availabilityZoneId": subnet.get("AvailabilityZoneId", "")}

    def _internet_gateway(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ec2 = self.account.client("ec2")
        gateway_id = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=gateway_id, VpcId=inputs["vpcId"])
        return gateway_id, {"arn": f"arn:aws:ec2:{self.account.region}:{ACCOUNT_ID}:internet-gateway/{gateway_id}"}

    def _route_table(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ec2 = self.account.client("ec2")
        table_id = ec2.create_route_table(VpcId=inputs["vpcId"])["RouteTable"]["RouteTableId"]
        for route in inputs.get("routes", []):
            target = {"NatGatewayId": route["natGatewayId"]} if route.get("natGatewayId") else {"GatewayId": route["gatewayId"]}
            ec2.create_route(RouteTableId=table_id, DestinationCidrBlock=route["cidrBlock"], **target)
        return table_id, {"arn": f"arn:aws:ec2:{self.account.region}:{ACCOUNT_ID}:route-table/{table_id}"}

    def _route_table_association(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        association = self.account.client("ec2").associate_route_table(RouteTableId=inputs["routeTableId"], SubnetId=inputs["subnetId"])
        return association["AssociationId"], {}

    def _security_group(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ec2 = self.account.client("ec2")
        group_name = inputs.get("name") or f"{name}-{self._next()[-7:]}"
        group_id = ec2.create_security_group(GroupName=group_name, Description=inputs.get("description", "Managed by Pulumi"),
                                             VpcId=inputs["vpcId"])["GroupId"]
        # AWS adds an allow-all egress rule to every new group; the provider removes it unless egress is declared.
        default_egress = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]["IpPermissionsEgress"]
        if default_egress and not inputs.get("egress"):
            ec2.revoke_security_group_egress(GroupId=group_id, IpPermissions=default_egress)
        return group_id, {"name": group_name, "arn": f"arn:aws:ec2:{self.account.region}:{ACCOUNT_ID}:security-group/{group_id}"}

    @staticmethod
    def _permission(inputs: dict[str, Any]) -> dict[str, Any]:
        permission: dict[str, Any] = {"IpProtocol": inputs["ipProtocol"]}
        if inputs.get("referencedSecurityGroupId"):
            permission["UserIdGroupPairs"] = [{"GroupId": inputs["referencedSecurityGroupId"],
                                               "Description": inputs.get("description", "")}]
        elif inputs.get("prefixListId"):
            permission["PrefixListIds"] = [{"PrefixListId": inputs["prefixListId"], "Description": inputs.get("description", "")}]
        else:
            permission["IpRanges"] = [{"CidrIp": inputs["cidrIpv4"], "Description": inputs.get("description", "")}]
        if inputs["ipProtocol"] != "-1":
            permission.update(FromPort=_number(inputs["fromPort"]), ToPort=_number(inputs["toPort"]))
        return permission

    def _ingress_rule(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        response = self.account.client("ec2").authorize_security_group_ingress(GroupId=inputs["securityGroupId"],
                                                                               IpPermissions=[self._permission(inputs)])
        rule_id = response["SecurityGroupRules"][0]["SecurityGroupRuleId"]
        return rule_id, {"securityGroupRuleId": rule_id}

    def _egress_rule(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        response = self.account.client("ec2").authorize_security_group_egress(GroupId=inputs["securityGroupId"],
                                                                              IpPermissions=[self._permission(inputs)])
        rule_id = response["SecurityGroupRules"][0]["SecurityGroupRuleId"]
        return rule_id, {"securityGroupRuleId": rule_id}

    def _log_group(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        logs = self.account.client("logs")
        group_name = inputs.get("name") or f"{name}-{self._next()[-7:]}"
        logs.create_log_group(logGroupName=group_name, **({"kmsKeyId": inputs["kmsKeyId"]} if inputs.get("kmsKeyId") else {}))
        if inputs.get("retentionInDays"):
            logs.put_retention_policy(logGroupName=group_name, retentionInDays=_number(inputs["retentionInDays"]))
        arn = logs.describe_log_groups(logGroupNamePrefix=group_name)["logGroups"][0]["arn"].removesuffix(":*")
        return group_name, {"name": group_name, "arn": arn}

    def _flow_log(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        response = self.account.client("ec2").create_flow_logs(
            ResourceIds=[inputs["vpcId"]], ResourceType="VPC", TrafficType=inputs["trafficType"],
            LogDestinationType=inputs["logDestinationType"], LogDestination=inputs["logDestination"],
            DeliverLogsPermissionArn=inputs["iamRoleArn"],
        )
        if response.get("Unsuccessful"):
            raise pulumi.RunError(f"rehearsal: flow log {name} refused: {response['Unsuccessful']}")
        return response["FlowLogIds"][0], {}

    # ------------------------------------------------------------ IAM and KMS

    def _role(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        role_name = inputs.get("name") or f"{name}-{self._next()[-7:]}"
        role = self.account.client("iam").create_role(RoleName=role_name, AssumeRolePolicyDocument=inputs["assumeRolePolicy"])["Role"]
        return role_name, {"name": role_name, "arn": role["Arn"], "uniqueId": role["RoleId"]}

    def _role_policy(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        policy_name = inputs.get("name") or f"{name}-{self._next()[-7:]}"
        self.account.client("iam").put_role_policy(RoleName=inputs["role"], PolicyName=policy_name, PolicyDocument=inputs["policy"])
        return f"{inputs['role']}:{policy_name}", {"name": policy_name}

    def _role_policy_attachment(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.account.client("iam").attach_role_policy(RoleName=inputs["role"], PolicyArn=inputs["policyArn"])
        return f"{inputs['role']}-{self._next()[-8:]}", {}

    def _instance_profile(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        iam = self.account.client("iam")
        profile_name = inputs.get("name") or f"{name}-{self._next()[-7:]}"
        profile = iam.create_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
        iam.add_role_to_instance_profile(InstanceProfileName=profile_name, RoleName=inputs["role"])
        return profile_name, {"name": profile_name, "arn": profile["Arn"]}

    def _kms_key(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kms = self.account.client("kms", inputs.get("region"))
        request: dict[str, Any] = {"Description": inputs.get("description", ""), "KeyUsage": inputs.get("keyUsage", "ENCRYPT_DECRYPT"),
                                   "KeySpec": inputs.get("customerMasterKeySpec", "SYMMETRIC_DEFAULT")}
        if inputs.get("policy"):
            request["Policy"] = inputs["policy"]
        key = kms.create_key(**request)["KeyMetadata"]
        if inputs.get("enableKeyRotation"):
            kms.enable_key_rotation(KeyId=key["KeyId"])
        return key["KeyId"], {"arn": key["Arn"], "keyId": key["KeyId"]}

    # ------------------------------------------------------------ S3

    def _bucket(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        bucket = inputs.get("bucket") or f"{name}-{self._next()[-7:]}"
        region = inputs.get("region") or self.account.region  # a bucket may name its own region (pulumi-aws 7)
        self.account.client("s3", region).create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        return bucket, {"bucket": bucket, "arn": f"arn:aws:s3:::{bucket}", "region": region,
                        "bucketDomainName": f"{bucket}.s3.amazonaws.com"}

    def _replication(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rules = []
        for rule in inputs["rules"]:
            destination = rule["destination"]
            converted: dict[str, Any] = {
                "ID": rule["id"], "Status": rule["status"], "Priority": _number(rule.get("priority", 0)),
                "Filter": {"Prefix": (rule.get("filter") or {}).get("prefix", "")},
                "DeleteMarkerReplication": {"Status": (rule.get("deleteMarkerReplication") or {}).get("status", "Disabled")},
                "Destination": {"Bucket": destination["bucket"]},
            }
            if destination.get("encryptionConfiguration"):
                converted["Destination"]["EncryptionConfiguration"] = {
                    "ReplicaKmsKeyID": destination["encryptionConfiguration"]["replicaKmsKeyId"]}
            if destination.get("metrics"):
                converted["Destination"]["Metrics"] = {"Status": destination["metrics"]["status"]}
            criteria = (rule.get("sourceSelectionCriteria") or {}).get("sseKmsEncryptedObjects")
            if criteria:
                converted["SourceSelectionCriteria"] = {"SseKmsEncryptedObjects": {"Status": criteria["status"]}}
            rules.append(converted)
        self.account.client("s3").put_bucket_replication(
            Bucket=inputs["bucket"], ReplicationConfiguration={"Role": inputs["role"], "Rules": rules})
        return inputs["bucket"], {}

    def _public_access_block(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        keys = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
        self.account.client("s3").put_public_access_block(
            Bucket=inputs["bucket"],
            PublicAccessBlockConfiguration={key[0].upper() + key[1:]: bool(inputs.get(key)) for key in keys},
        )
        return inputs["bucket"], {}

    def _ownership_controls(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.account.client("s3").put_bucket_ownership_controls(
            Bucket=inputs["bucket"], OwnershipControls={"Rules": [{"ObjectOwnership": inputs["rule"]["objectOwnership"]}]})
        return inputs["bucket"], {}

    def _versioning(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.account.client("s3").put_bucket_versioning(
            Bucket=inputs["bucket"], VersioningConfiguration={"Status": inputs["versioningConfiguration"]["status"]})
        return inputs["bucket"], {}

    def _object_lock(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        configuration: dict[str, Any] = {"ObjectLockEnabled": inputs.get("objectLockEnabled", "Enabled")}
        retention = (inputs.get("rule") or {}).get("defaultRetention")
        if retention:
            configuration["Rule"] = {"DefaultRetention": {
                "Mode": retention["mode"],
                **({"Days": _number(retention["days"])} if retention.get("days") else {"Years": _number(retention["years"])}),
            }}
        self.account.client("s3").put_object_lock_configuration(Bucket=inputs["bucket"], ObjectLockConfiguration=configuration)
        return inputs["bucket"], {}

    def _encryption(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rules = []
        for rule in inputs["rules"]:
            default = rule["applyServerSideEncryptionByDefault"]
            applied = {"SSEAlgorithm": default["sseAlgorithm"]}
            if default.get("kmsMasterKeyId"):
                applied["KMSMasterKeyID"] = default["kmsMasterKeyId"]
            rules.append({"ApplyServerSideEncryptionByDefault": applied, "BucketKeyEnabled": bool(rule.get("bucketKeyEnabled"))})
        self.account.client("s3").put_bucket_encryption(Bucket=inputs["bucket"], ServerSideEncryptionConfiguration={"Rules": rules})
        return inputs["bucket"], {}

    def _lifecycle(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rules = []
        for rule in inputs["rules"]:
            converted: dict[str, Any] = {"ID": rule["id"], "Status": rule["status"],
                                         "Filter": {"Prefix": (rule.get("filter") or {}).get("prefix", "")}}
            if rule.get("expiration"):
                converted["Expiration"] = {"Days": _number(rule["expiration"]["days"])}
            if rule.get("noncurrentVersionExpiration"):
                days = _number(rule["noncurrentVersionExpiration"]["noncurrentDays"])
                converted["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
            if rule.get("transitions"):
                converted["Transitions"] = [{"Days": _number(t["days"]), "StorageClass": t["storageClass"]} for t in rule["transitions"]]
            if rule.get("abortIncompleteMultipartUpload"):
                converted["AbortIncompleteMultipartUpload"] = {
                    "DaysAfterInitiation": _number(rule["abortIncompleteMultipartUpload"]["daysAfterInitiation"])}
            rules.append(converted)
        self.account.client("s3").put_bucket_lifecycle_configuration(Bucket=inputs["bucket"], LifecycleConfiguration={"Rules": rules})
        return inputs["bucket"], {}

    def _bucket_logging(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.account.client("s3").put_bucket_logging(Bucket=inputs["bucket"], BucketLoggingStatus={"LoggingEnabled": {
            "TargetBucket": inputs["targetBucket"], "TargetPrefix": inputs.get("targetPrefix", "")}})
        return inputs["bucket"], {}

    def _bucket_policy(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.account.client("s3").put_bucket_policy(Bucket=inputs["bucket"], Policy=inputs["policy"])
        return inputs["bucket"], {}

    # ------------------------------------------------------------ Secrets Manager

    def _secret(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        request = {"Name": inputs.get("name") or f"{name}-{self._next()[-7:]}", "Description": inputs.get("description", "")}
        if inputs.get("kmsKeyId"):
            request["KmsKeyId"] = inputs["kmsKeyId"]
        secret = self.account.client("secretsmanager").create_secret(**request)
        return secret["ARN"], {"arn": secret["ARN"], "name": secret["Name"]}

    def _secret_version(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        version = self.account.client("secretsmanager").put_secret_value(SecretId=inputs["secretId"], SecretString=inputs["secretString"])
        return f"{inputs['secretId']}|{version['VersionId']}", {"versionId": version["VersionId"], "arn": version["ARN"]}

    # ------------------------------------------------------------ the host

    def _volume(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        request: dict[str, Any] = {"AvailabilityZone": inputs["availabilityZone"], "Size": _number(inputs["size"]),
                                   "VolumeType": inputs.get("type", "gp3"), "Encrypted": bool(inputs.get("encrypted")),
                                   "TagSpecifications": _tags(inputs, "volume")}
        if inputs.get("kmsKeyId"):
            request["KmsKeyId"] = inputs["kmsKeyId"]
        if inputs.get("snapshotId"):
            request["SnapshotId"] = inputs["snapshotId"]
        volume = self.account.client("ec2").create_volume(**request)
        return volume["VolumeId"], {"arn": f"arn:aws:ec2:{self.account.region}:{ACCOUNT_ID}:volume/{volume['VolumeId']}"}

    def _instance(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        root = inputs.get("rootBlockDevice") or {}
        metadata = inputs.get("metadataOptions") or {}
        request: dict[str, Any] = {
            "ImageId": inputs["ami"], "InstanceType": inputs["instanceType"], "MinCount": 1, "MaxCount": 1,
            "SubnetId": inputs["subnetId"], "SecurityGroupIds": inputs.get("vpcSecurityGroupIds", []),
            "Monitoring": {"Enabled": bool(inputs.get("monitoring"))}, "EbsOptimized": bool(inputs.get("ebsOptimized")),
            "DisableApiTermination": bool(inputs.get("disableApiTermination")),
            "MetadataOptions": {"HttpEndpoint": metadata.get("httpEndpoint", "enabled"),
                                "HttpTokens": metadata.get("httpTokens", "optional"),
                                "HttpPutResponseHopLimit": _number(metadata.get("httpPutResponseHopLimit", 1))},
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {
                "VolumeSize": _number(root.get("volumeSize", 8)), "VolumeType": root.get("volumeType", "gp2"),
                "Encrypted": bool(root.get("encrypted")), "DeleteOnTermination": bool(root.get("deleteOnTermination", True)),
                **({"KmsKeyId": root["kmsKeyId"]} if root.get("kmsKeyId") else {})}}],
            "TagSpecifications": _tags(inputs, "instance"),
        }
        if inputs.get("iamInstanceProfile"):
            request["IamInstanceProfile"] = {"Name": inputs["iamInstanceProfile"]}
        if inputs.get("userDataBase64"):
            request["UserData"] = base64.b64decode(inputs["userDataBase64"])  # boto3 base64-encodes it again
        elif inputs.get("userData"):
            request["UserData"] = inputs["userData"]
        instance = self.account.client("ec2").run_instances(**request)["Instances"][0]
        interfaces = instance.get("NetworkInterfaces") or [{}]
        return instance["InstanceId"], {
            "arn": f"arn:aws:ec2:{self.account.region}:{ACCOUNT_ID}:instance/{instance['InstanceId']}",
            "privateIp": instance.get("PrivateIpAddress", ""), "primaryNetworkInterfaceId": interfaces[0].get("NetworkInterfaceId", ""),
        }

    def _volume_attachment(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.account.client("ec2").attach_volume(Device=inputs["deviceName"], InstanceId=inputs["instanceId"], VolumeId=inputs["volumeId"])
        return f"vai-{self._next()[-8:]}", {}

    def _eip(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ec2 = self.account.client("ec2")
        address = ec2.allocate_address(Domain=inputs.get("domain", "vpc"))
        outputs = {"publicIp": address["PublicIp"], "allocationId": address["AllocationId"]}
        if inputs.get("instance"):
            association = ec2.associate_address(InstanceId=inputs["instance"], AllocationId=address["AllocationId"])
            outputs["associationId"] = association["AssociationId"]
        return address["AllocationId"], outputs

    # ------------------------------------------------------------ DNS

    def _record(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        record_name = inputs["name"]
        self.account.client("route53").change_resource_record_sets(
            HostedZoneId=inputs["zoneId"],
            # allowOverwrite: the provider UPSERTs (takes the name over from a stack that is gone); else CREATE fails on it
            ChangeBatch={"Changes": [{"Action": "UPSERT" if inputs.get("allowOverwrite") else "CREATE", "ResourceRecordSet": {
                "Name": record_name, "Type": inputs["type"], **self._record_target(inputs)}}]},
        )
        return f"{inputs['zoneId']}_{record_name}_{inputs['type']}", {"fqdn": record_name}

    @staticmethod
    def _record_target(inputs: dict[str, Any]) -> dict[str, Any]:
        """Values with a TTL, or an alias to a load balancer (no TTL)."""
        if inputs.get("aliases"):
            alias = inputs["aliases"][0]
            return {"AliasTarget": {"HostedZoneId": alias["zoneId"], "DNSName": alias["name"],
                                    "EvaluateTargetHealth": bool(alias["evaluateTargetHealth"])}}
        return {"TTL": _number(inputs["ttl"]), "ResourceRecords": [{"Value": value} for value in inputs["records"]]}

    def _health_check(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        config = {"Type": inputs["type"], "FullyQualifiedDomainName": inputs["fqdn"], "Port": _number(inputs["port"]),
                  "ResourcePath": inputs["resourcePath"], "RequestInterval": _number(inputs["requestInterval"]),
                  "FailureThreshold": _number(inputs["failureThreshold"]), "EnableSNI": bool(inputs.get("enableSni"))}
        check = self.account.client("route53").create_health_check(CallerReference=f"{name}-{self._next()}",
                                                                   HealthCheckConfig=config)["HealthCheck"]
        return check["Id"], {"arn": f"arn:aws:route53:::healthcheck/{check['Id']}"}

    def _budget(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        notifications = []
        for notification in inputs["notifications"]:
            topics = notification.get("subscriberSnsTopicArns") or []
            for topic in topics:  # the topic exists (Budgets would refuse an unknown one)
                self.account.client("sns", region=topic.split(":")[3]).get_topic_attributes(TopicArn=topic)
            subscribers = [{"SubscriptionType": "SNS", "Address": topic} for topic in topics]
            emails = notification.get("subscriberEmailAddresses") or []
            subscribers += [{"SubscriptionType": "EMAIL", "Address": address} for address in emails]
            notifications.append({
                "Notification": {"NotificationType": notification["notificationType"],
                                 "ComparisonOperator": notification["comparisonOperator"],
                                 "Threshold": float(notification["threshold"]), "ThresholdType": notification["thresholdType"]},
                "Subscribers": subscribers,
            })  # fmt: skip
        self.account.client("budgets", region="us-east-1").create_budget(
            AccountId=ACCOUNT_ID,
            Budget={
                "BudgetName": inputs["name"], "BudgetType": inputs["budgetType"], "TimeUnit": inputs["timeUnit"],
                "BudgetLimit": {"Amount": inputs["limitAmount"], "Unit": inputs["limitUnit"]},
                "CostFilters": {f["name"]: f["values"] for f in inputs.get("costFilters") or []},
            },
            NotificationsWithSubscribers=notifications,
        )  # fmt: skip
        return f"{ACCOUNT_ID}:{inputs['name']}", {"arn": f"arn:aws:budgets::{ACCOUNT_ID}:budget/{inputs['name']}"}

    # ------------------------------------------------------------ SES and its SMTP user

    def _ses_identity(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        token = self.account.client("ses").verify_domain_identity(Domain=inputs["domain"])["VerificationToken"]
        arn = f"arn:aws:ses:{self.account.region}:{ACCOUNT_ID}:identity/{inputs['domain']}"
        return inputs["domain"], {"arn": arn, "verificationToken": token}

    def _ses_dkim(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        tokens = self.account.client("ses").verify_domain_dkim(Domain=inputs["domain"])["DkimTokens"]
        return inputs["domain"], {"dkimTokens": tokens}

    def _ses_mail_from(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.account.client("ses").set_identity_mail_from_domain(
            Identity=inputs["domain"], MailFromDomain=inputs["mailFromDomain"],
            BehaviorOnMXFailure=inputs.get("behaviorOnMxFailure", "UseDefaultValue"))
        return inputs["domain"], {}

    def _user(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        user = self.account.client("iam").create_user(UserName=inputs["name"])["User"]
        return user["UserName"], {"arn": user["Arn"], "uniqueId": user["UserId"]}

    def _user_policy(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        policy_name = inputs.get("name") or f"{name}-{self._next()[-7:]}"
        self.account.client("iam").put_user_policy(UserName=inputs["user"], PolicyName=policy_name, PolicyDocument=inputs["policy"])
        return f"{inputs['user']}:{policy_name}", {"name": policy_name}

    def _group(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        group = self.account.client("iam").create_group(GroupName=inputs["name"])["Group"]
        return group["GroupName"], {"arn": group["Arn"], "uniqueId": group["GroupId"]}

    def _group_policy(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        policy_name = inputs.get("name") or f"{name}-{self._next()[-7:]}"
        self.account.client("iam").put_group_policy(GroupName=inputs["group"], PolicyName=policy_name, PolicyDocument=inputs["policy"])
        return f"{inputs['group']}:{policy_name}", {"name": policy_name}

    def _user_group_membership(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        for group in inputs["groups"]:
            self.account.client("iam").add_user_to_group(GroupName=group, UserName=inputs["user"])
        return f"{inputs['user']}/{'/'.join(inputs['groups'])}", {}

    def _access_key(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key = self.account.client("iam").create_access_key(UserName=inputs["user"])["AccessKey"]
        # What the provider computes from the secret key (and never the secret itself into the state's outputs here).
        return key["AccessKeyId"], {"secret": key["SecretAccessKey"],
                                    "sesSmtpPasswordV4": ses_smtp_password_v4(key["SecretAccessKey"], self.account.region)}

    # ------------------------------------------------------------ SNS and CloudWatch alarms

    def _topic(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        attributes = {"KmsMasterKeyId": inputs["kmsMasterKeyId"]} if inputs.get("kmsMasterKeyId") else {}
        topic_name = inputs.get("name") or f"{name}-{self._next()[-7:]}"
        arn = self.account.client("sns", inputs.get("region")).create_topic(Name=topic_name, Attributes=attributes)["TopicArn"]
        return arn, {"arn": arn, "name": topic_name}

    def _topic_policy(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.account.client("sns", inputs.get("region")).set_topic_attributes(
            TopicArn=inputs["arn"], AttributeName="Policy", AttributeValue=inputs["policy"])
        return inputs["arn"], {}

    def _topic_subscription(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        arn = self.account.client("sns", inputs.get("region")).subscribe(
            TopicArn=inputs["topic"], Protocol=inputs["protocol"], Endpoint=inputs["endpoint"])["SubscriptionArn"]
        return arn, {"arn": arn}

    def _metric_alarm(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        cloudwatch = self.account.client("cloudwatch", inputs.get("region"))
        alarm_name = inputs.get("name") or f"{name}-{self._next()[-7:]}"
        cloudwatch.put_metric_alarm(
            AlarmName=alarm_name, AlarmDescription=inputs.get("alarmDescription", ""), Namespace=inputs["namespace"],
            MetricName=inputs["metricName"], Dimensions=[{"Name": k, "Value": v} for k, v in inputs.get("dimensions", {}).items()],
            Statistic=inputs["statistic"], Period=_number(inputs["period"]), EvaluationPeriods=_number(inputs["evaluationPeriods"]),
            Threshold=float(inputs["threshold"]), ComparisonOperator=inputs["comparisonOperator"],
            TreatMissingData=inputs.get("treatMissingData", "missing"), AlarmActions=inputs.get("alarmActions", []),
            OKActions=inputs.get("okActions", []), ActionsEnabled=True,
        )
        arn = cloudwatch.describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"][0]["AlarmArn"]
        return alarm_name, {"arn": arn, "name": alarm_name}

    # ------------------------------------------------------------ validated only (moto has no DLM)

    def _dlm_policy(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.account.client("iam").get_role(RoleName=inputs["executionRoleArn"].split("/")[-1])  # the role must exist
        details = inputs["policyDetails"]
        schedules = []
        for schedule in details["schedules"]:
            create, retain = schedule["createRule"], schedule["retainRule"]
            create_rule: dict[str, Any] = {"Interval": _number(create["interval"]), "IntervalUnit": create["intervalUnit"]}
            if create.get("times"):
                create_rule["Times"] = [create["times"]] if isinstance(create["times"], str) else list(create["times"])
            retain_rule: dict[str, Any] = {}
            if retain.get("count"):
                retain_rule["Count"] = _number(retain["count"])
            if retain.get("interval"):
                retain_rule.update(Interval=_number(retain["interval"]), IntervalUnit=retain["intervalUnit"])
            copies = [{"Target": copy["target"], "Encrypted": bool(copy["encrypted"]), "CopyTags": bool(copy.get("copyTags")),
                       **({"CmkArn": copy["cmkArn"]} if copy.get("cmkArn") else {}),
                       "RetainRule": {"Interval": _number(copy["retainRule"]["interval"]),
                                      "IntervalUnit": copy["retainRule"]["intervalUnit"]}}
                      for copy in schedule.get("crossRegionCopyRules") or []]
            schedules.append({"Name": schedule["name"], "CopyTags": bool(schedule.get("copyTags")), "CreateRule": create_rule,
                              "RetainRule": retain_rule,
                              "TagsToAdd": [{"Key": k, "Value": v} for k, v in (schedule.get("tagsToAdd") or {}).items()],
                              **({"CrossRegionCopyRules": copies} if copies else {})})
        request = {
            "ExecutionRoleArn": inputs["executionRoleArn"], "Description": inputs["description"], "State": inputs.get("state", "ENABLED"),
            "PolicyDetails": {"PolicyType": details.get("policyType", "EBS_SNAPSHOT_MANAGEMENT"), "ResourceTypes": details["resourceTypes"],
                              "TargetTags": [{"Key": k, "Value": v} for k, v in details["targetTags"].items()], "Schedules": schedules},
        }
        policy_id = f"policy-{self._next()}"
        # raises ParamValidationError on a request AWS would refuse
        self._validated("dlm", "create_lifecycle_policy", request, {"PolicyId": policy_id},
                        f"aws:dlm/lifecyclePolicy:LifecyclePolicy {name}")
        return policy_id, {"arn": f"arn:aws:dlm:{self.account.region}:{ACCOUNT_ID}:policy/{policy_id}"}


def register_ubuntu_images(region: str) -> None:
    """Canonical's Ubuntu 24.04 images, as the AMI lookup expects to find them (moto's images are older)."""
    import_ec2_with_lazy_offerings()
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.amis import Ami

    backend = ec2_backends[ACCOUNT_ID][region]
    for index, (deb_architecture, architecture) in enumerate((("amd64", "x86_64"), ("arm64", "arm64"))):
        for serial, day in (("20261001", 1), ("20261101", 2)):
            ami_id = f"ami-0{index}{day}{'0' * 13}"[:21]
            backend.amis[ami_id] = Ami(
                backend, ami_id=ami_id, owner_id=CANONICAL_OWNER_ID, public=True, architecture=architecture,
                name=f"ubuntu/images/hvm-ssd-gp3/ubuntu-{UBUNTU_RELEASE}-24.04-{deb_architecture}-server-{serial}",
                virtualization_type="hvm", root_device_type="ebs", root_device_name="/dev/sda1",
                creation_date=datetime(2026, 10, day, tzinfo=UTC), region_name=region,
            )


AMAZON_OWNER_ID = "137112412989"  # the account that publishes Amazon Linux images


def register_amazon_linux_image(region: str, architecture: str, ami_id: str) -> None:
    """The Amazon Linux 2023 image AWS's public SSM parameter names (moto serves the parameter; with its default images
    off, the image itself must be registered for an instance to launch from it). Registered when the program reads the
    parameter: loading moto's parameters costs a stack that never asks for them a third of a second."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.amis import Ami

    backend = ec2_backends[ACCOUNT_ID][region]
    if ami_id not in backend.amis:
        backend.amis[ami_id] = Ami(
            backend, ami_id=ami_id, owner_id=AMAZON_OWNER_ID, public=True, architecture=architecture,
            name=f"al2023-ami-2023.9.20261101.0-kernel-6.12-{architecture}", virtualization_type="hvm", root_device_type="ebs",
            root_device_name="/dev/xvda", creation_date=datetime(2026, 11, 1, tzinfo=UTC), region_name=region,
        )


AWS_MANAGED_POLICY_PREFIX = "arn:aws:iam::aws:policy/"
ATTACH_METHODS = ("attach_role_policy", "attach_user_policy", "attach_group_policy", "get_policy")


@functools.cache
def _aws_managed_policies() -> dict[str, Any]:
    """moto's copy of AWS's managed policies, by name, parsed once per process."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return dict(json.loads(aws_managed_policies_data))


def aws_managed_policy(name: str) -> dict[str, Any] | None:
    """One of moto's AWS managed policies by name, as _aws_managed_policies() has it. moto keeps all of them in one
    4.7 MB JSON text, a quarter of a second to parse: the entry is found by its top-level key (the only keys one space
    deep in moto's file) and only it is parsed. A name not found that way is looked up in the whole."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data as data

    start = data.find(f'\n "{name}":{{')
    if start == -1:
        found = _aws_managed_policies().get(name)
        return dict(found) if found is not None else None
    entry, _ = json.JSONDecoder().raw_decode(data, data.index("{", start))
    return dict(entry)


@contextmanager
def managed_policies_on_demand() -> Iterator[None]:
    """AWS's managed policies exist in every real account. moto can load all of them (about 1,300) into every IAM
    backend it makes, which costs about a second per rehearsal; instead each one is loaded from moto's same data when
    something first attaches or reads it: attachable exactly when moto's full set would have it, refused otherwise."""
    from moto.iam.models import AWSManagedPolicy, IAMBackend

    def load(backend: Any, policy_arn: str) -> None:
        if not policy_arn.startswith(AWS_MANAGED_POLICY_PREFIX) or policy_arn in backend.managed_policies:
            return
        name = policy_arn.rsplit("/", 1)[-1]
        data = aws_managed_policy(name)
        if data is None:
            return  # not an AWS managed policy: the original call refuses it
        policy = AWSManagedPolicy.from_data(name, backend.account_id, backend.region_name, data)
        if policy.arn == policy_arn:  # the same path too (service-role/...)
            backend.managed_policies[policy.arn] = policy

    originals = {method: getattr(IAMBackend, method) for method in ATTACH_METHODS}

    def on_demand(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def call(backend: Any, policy_arn: str, *args: Any, **kwargs: Any) -> Any:
            load(backend, policy_arn)
            return original(backend, policy_arn, *args, **kwargs)

        return call

    for method, original in originals.items():
        setattr(IAMBackend, method, on_demand(original))
    try:
        yield
    finally:
        for method, original in originals.items():
            setattr(IAMBackend, method, original)


@contextmanager
def shared_service_models() -> Iterator[None]:
    """botocore parses a data file once per loader, and boto3's clients, moto's responses and its backends each have
    their own: EC2's model (4 MB of JSON) was parsed six times per rehearsal and the endpoints five, a second of the
    run. Here each file is parsed once per process and every loader gets that copy (botocore treats loaded data as
    read-only; the extras it merges into a model are the same whichever loader merges them). Likewise each new loader
    listed the data directories (a stat per service, 10 ms) to know which services exist: listed once per search path
    and type here, the files do not change during a run."""
    from botocore.loaders import JSONFileLoader, Loader

    original = JSONFileLoader.load_file
    original_listing = Loader.list_available_services
    parsed: dict[str, Any] = {}
    listed: dict[tuple[tuple[str, ...], str], list[str]] = {}
    lock = threading.Lock()

    def load_file(loader: Any, file_path: str) -> Any:
        with lock:
            if file_path not in parsed:
                parsed[file_path] = original(loader, file_path)
            return parsed[file_path]

    def list_available_services(loader: Any, type_name: str) -> list[str]:
        key = (tuple(loader.search_paths), type_name)
        with lock:
            if key not in listed:
                listed[key] = original_listing(loader, type_name)
            return list(listed[key])

    JSONFileLoader.load_file = load_file
    Loader.list_available_services = list_available_services
    try:
        yield
    finally:
        JSONFileLoader.load_file = original
        Loader.list_available_services = original_listing


class _PrivateKeyOnFirstUse:
    """Stands for the private key moto makes for every KMS key, symmetric ones included (an RSA key each, 40 ms), but
    uses only to sign, verify and show a public key: made when first used."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._key: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._key is None:
            self._key = self._make()
        return getattr(self._key, name)


@contextmanager
def kms_private_keys_on_first_use() -> Iterator[None]:
    import moto.kms.models as kms_models

    original = kms_models.generate_private_key

    def generate_private_key(key_spec: str) -> Any:
        return _PrivateKeyOnFirstUse(lambda: original(key_spec))

    kms_models.generate_private_key = generate_private_key
    try:
        yield
    finally:
        kms_models.generate_private_key = original


OFFERINGS_RESOURCE = "ec2/resources/instance_type_offerings"


class _RegionOfferings(dict[str, Any]):
    """moto's instance type offerings of one location type, read per region on first use: moto reads every region's
    file when moto.ec2 is imported (half a second), and a rehearsal launches instances in one or two regions."""

    def __init__(self, location_type: str, load: Callable[[str], Any]) -> None:
        super().__init__()
        self._location_type = location_type
        self._load = load

    def __missing__(self, region: str) -> list[dict[str, Any]]:
        try:
            offerings = self._load(f"{OFFERINGS_RESOURCE}/{self._location_type}/{region}.json")
        except FileNotFoundError:
            offerings = []  # a region moto does not know: no offerings, as moto's own data would say
        for offering in offerings:
            offering["LocationType"] = self._location_type
        self[region] = offerings
        return offerings

    def get(self, region: str, default: Any = None) -> Any:
        return (self[region] or default) if isinstance(region, str) else default


@functools.cache
def import_ec2_with_lazy_offerings() -> None:
    """Import moto's EC2 models with the offerings read lazily (_RegionOfferings); what moto answers is unchanged."""
    import sys

    import moto.utilities.utils as moto_utils

    if "moto.ec2.models.instance_types" in sys.modules:
        return  # imported already, with every region read: nothing to gain
    original = moto_utils.load_resource

    def skip_offerings(resource: str) -> Any:
        return [] if OFFERINGS_RESOURCE in resource else original(resource)

    moto_utils.load_resource = skip_offerings  # the module binds load_resource at its import
    try:
        from moto.ec2.models import instance_types
    finally:
        moto_utils.load_resource = original
    instance_types.load_resource = original
    for location_type in list(instance_types.INSTANCE_TYPE_OFFERINGS):  # moto's own reader: file.json.gz or file.json
        instance_types.INSTANCE_TYPE_OFFERINGS[location_type] = _RegionOfferings(location_type, original)


@contextmanager
def emulated_account(region: str, hosted_zone: str | None) -> Iterator[EmulatedAccount]:
    """A fresh moto account with what an operator already owns: Canonical's images and the public hosted zone."""
    saved = {key: os.environ.get(key) for key in (*FAKE_CREDENTIALS, "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                                                  "MOTO_IAM_LOAD_MANAGED_POLICIES", "MOTO_EC2_LOAD_DEFAULT_AMIS")}
    os.environ.update(FAKE_CREDENTIALS)
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "false"  # loaded one by one when used: managed_policies_on_demand()
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"  # only the Ubuntu images registered below: the lookup must find them
    os.environ["AWS_DEFAULT_REGION"] = region
    os.environ.pop("AWS_ENDPOINT_URL", None)
    try:
        with shared_service_models(), mock_aws(), managed_policies_on_demand(), kms_private_keys_on_first_use():
            register_ubuntu_images(region)
            if hosted_zone:
                boto3.client("route53", region_name=region).create_hosted_zone(
                    Name=hosted_zone, CallerReference=f"rehearsal-{hosted_zone}")
            yield EmulatedAccount(region=region)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def rehearse(stack: str, config: dict[str, str], account: EmulatedAccount) -> ProgramRun:
    """Run __main__.py with `config` against the emulated `account` (inside emulated_account())."""
    return run_program(stack, config, MotoMocks(account))


def stack_region(config: dict[str, str]) -> str:
    return config.get("aws:region", "") or "eu-west-1"

