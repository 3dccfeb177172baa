"""Handlers of the ha topology's AWS types: the requests the provider makes, against moto (RDS, ElastiCache, EFS, ECS,
ELBv2, ACM, WAFv2, EC2 NAT gateways and endpoints). Where moto has no call for a request (EFS backup policy, WAF
logging on an encrypted group), the request is checked against botocore's service model and reported as validated."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
import botocore.stub

from rehearsal.engine import ACCOUNT_ID

if TYPE_CHECKING:
    from rehearsal.emulated import EmulatedAccount

Handler = Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]]]


def _number(value: Any) -> int:
    return int(value)  # mocks deliver numbers as floats


def _tag_list(inputs: dict[str, Any]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in (inputs.get("tags") or {}).items()]


def _identifier(name: str) -> str:
    """An RDS/ElastiCache identifier from a logical name: letters, digits, hyphens, at most 40 characters."""
    return name.lower().replace("_", "-")[:40].rstrip("-")


class HaHandlers:
    account: EmulatedAccount
    _next: Callable[[], str]

    def ha_handlers(self) -> dict[str, Handler]:
        return {
            "aws:ec2/natGateway:NatGateway": self._nat_gateway,
            "aws:ec2/vpcEndpoint:VpcEndpoint": self._vpc_endpoint,
            "aws:rds/subnetGroup:SubnetGroup": self._db_subnet_group,
            "aws:rds/parameterGroup:ParameterGroup": self._db_parameter_group,
            "aws:rds/instance:Instance": self._db_instance,
            "aws:elasticache/subnetGroup:SubnetGroup": self._cache_subnet_group,
            "aws:elasticache/parameterGroup:ParameterGroup": self._cache_parameter_group,
            "aws:elasticache/replicationGroup:ReplicationGroup": self._replication_group,
            "aws:efs/fileSystem:FileSystem": self._file_system,
            "aws:efs/backupPolicy:BackupPolicy": self._efs_backup_policy,
            "aws:efs/accessPoint:AccessPoint": self._access_point,
            "aws:efs/mountTarget:MountTarget": self._mount_target,
            "aws:efs/fileSystemPolicy:FileSystemPolicy": self._file_system_policy,
            "aws:ecs/cluster:Cluster": self._ecs_cluster,
            "aws:ecs/taskDefinition:TaskDefinition": self._task_definition,
            "aws:ecs/service:Service": self._ecs_service,
            "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": self._dns_namespace,
            "aws:servicediscovery/service:Service": self._discovery_service,
            "aws:lb/loadBalancer:LoadBalancer": self._load_balancer,
            "aws:lb/targetGroup:TargetGroup": self._target_group,
            "aws:lb/listener:Listener": self._listener,
            "aws:acm/certificate:Certificate": self._certificate,
            "aws:acm/certificateValidation:CertificateValidation": self._certificate_validation,
            "aws:wafv2/webAcl:WebAcl": self._web_acl,
            "aws:wafv2/webAclAssociation:WebAclAssociation": self._web_acl_association,
            "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration": self._web_acl_logging,
            "aws:ssm/document:Document": self._ssm_document,
            "aws:cloudwatch/dashboard:Dashboard": self._dashboard,
            "aws:ssm/association:Association": self._ssm_association,
        }

    def _validated(self, service: str, operation: str, request: dict[str, Any], response: dict[str, Any], what: str) -> None:
        """Check `request` against botocore's model of `service` without sending it (a request AWS would refuse raises
        ParamValidationError); record it as validated only. Used for every type or call moto lacks (DLM too)."""
        fresh = boto3.client(service, region_name=self.account.region)  # a Stubber must not sit on the shared client
        with botocore.stub.Stubber(fresh) as stubber:
            stubber.add_response(operation, response, request)
            getattr(fresh, operation)(**request)
        self.account.validated_only.append(what)

    # ------------------------------------------------------------ network

    def _nat_gateway(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        gateway = self.account.client("ec2").create_nat_gateway(SubnetId=inputs["subnetId"], AllocationId=inputs["allocationId"])[
            "NatGateway"
        ]
        return gateway["NatGatewayId"], {}

    def _vpc_endpoint(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        request: dict[str, Any] = {
            "VpcId": inputs["vpcId"],
            "ServiceName": inputs["serviceName"],
            "VpcEndpointType": inputs["vpcEndpointType"],
        }
        if inputs["vpcEndpointType"] == "Gateway":
            request["RouteTableIds"] = inputs["routeTableIds"]
        else:
            request.update(
                SubnetIds=inputs["subnetIds"],
                SecurityGroupIds=inputs["securityGroupIds"],
                PrivateDnsEnabled=bool(inputs.get("privateDnsEnabled")),
            )
        endpoint = self.account.client("ec2").create_vpc_endpoint(**request)["VpcEndpoint"]
        return endpoint["VpcEndpointId"], {
            "arn": f"arn:aws:ec2:{self.account.region}:{ACCOUNT_ID}:vpc-endpoint/{endpoint['VpcEndpointId']}"
        }

    # ------------------------------------------------------------ RDS

    def _db_subnet_group(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        group_name = inputs.get("name") or _identifier(f"{name}-{self._next()[-7:]}")
        group = self.account.client("rds").create_db_subnet_group(
            DBSubnetGroupName=group_name, DBSubnetGroupDescription=inputs["description"], SubnetIds=inputs["subnetIds"]
        )["DBSubnetGroup"]
        return group_name, {"name": group_name, "arn": group["DBSubnetGroupArn"]}

    def _db_parameter_group(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rds = self.account.client("rds")
        group_name = inputs.get("name") or _identifier(f"{name}-{self._next()[-7:]}")
        group = rds.create_db_parameter_group(
            DBParameterGroupName=group_name, DBParameterGroupFamily=inputs["family"], Description=inputs["description"]
        )["DBParameterGroup"]
        rds.modify_db_parameter_group(
            DBParameterGroupName=group_name,
            Parameters=[
                {"ParameterName": p["name"], "ParameterValue": p["value"], "ApplyMethod": p["applyMethod"]} for p in inputs["parameters"]
            ],
        )
        return group_name, {"name": group_name, "arn": group["DBParameterGroupArn"]}

    def _db_instance(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        identifier = inputs.get("identifier") or _identifier(f"{name}-{self._next()[-7:]}")
        request = {
            "DBInstanceIdentifier": identifier,
            "Engine": inputs["engine"],
            "EngineVersion": inputs["engineVersion"],
            "DBInstanceClass": inputs["instanceClass"],
            "MultiAZ": bool(inputs["multiAz"]),
            "AllocatedStorage": _number(inputs["allocatedStorage"]),
            "MaxAllocatedStorage": _number(inputs["maxAllocatedStorage"]),
            "StorageType": inputs["storageType"],
            "StorageEncrypted": bool(inputs["storageEncrypted"]),
            "KmsKeyId": inputs["kmsKeyId"],
            "DBName": inputs["dbName"],
            "MasterUsername": inputs["username"],
            "ManageMasterUserPassword": bool(inputs["manageMasterUserPassword"]),
            "MasterUserSecretKmsKeyId": inputs["masterUserSecretKmsKeyId"],
            "Port": _number(inputs["port"]),
            "DBSubnetGroupName": inputs["dbSubnetGroupName"],
            "VpcSecurityGroupIds": inputs["vpcSecurityGroupIds"],
            "PubliclyAccessible": bool(inputs["publiclyAccessible"]),
            "DBParameterGroupName": inputs["parameterGroupName"],
            "EnableIAMDatabaseAuthentication": bool(inputs["iamDatabaseAuthenticationEnabled"]),
            "BackupRetentionPeriod": _number(inputs["backupRetentionPeriod"]),
            "PreferredBackupWindow": inputs["backupWindow"],
            "PreferredMaintenanceWindow": inputs["maintenanceWindow"],
            "CopyTagsToSnapshot": bool(inputs["copyTagsToSnapshot"]),
            "DeletionProtection": bool(inputs["deletionProtection"]),
            "EnablePerformanceInsights": bool(inputs["performanceInsightsEnabled"]),
            "PerformanceInsightsKMSKeyId": inputs["performanceInsightsKmsKeyId"],
            "PerformanceInsightsRetentionPeriod": _number(inputs["performanceInsightsRetentionPeriod"]),
            "MonitoringInterval": _number(inputs["monitoringInterval"]),
            "MonitoringRoleArn": inputs["monitoringRoleArn"],
            "EnableCloudwatchLogsExports": inputs["enabledCloudwatchLogsExports"],
            "AutoMinorVersionUpgrade": bool(inputs["autoMinorVersionUpgrade"]),
            "Tags": _tag_list(inputs),
        }
        instance = self.account.client("rds").create_db_instance(**request)["DBInstance"]
        secret = instance.get("MasterUserSecret") or {}
        return instance.get("DbiResourceId", identifier), {
            "identifier": identifier,
            "arn": instance["DBInstanceArn"],
            "address": instance.get("Endpoint", {}).get("Address", ""),
            "endpoint": f"{instance.get('Endpoint', {}).get('Address', '')}:{inputs['port']}",
            "masterUserSecrets": [
                {
                    "secretArn": secret.get("SecretArn", ""),
                    "kmsKeyId": secret.get("KmsKeyId", ""),
                    "secretStatus": secret.get("SecretStatus", ""),
                }
            ]
            if secret
            else [],
        }

    # ------------------------------------------------------------ ElastiCache

    def _cache_subnet_group(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        group_name = inputs.get("name") or _identifier(f"{name}-{self._next()[-7:]}")
        group = self.account.client("elasticache").create_cache_subnet_group(
            CacheSubnetGroupName=group_name,
            CacheSubnetGroupDescription=inputs["description"],
            SubnetIds=inputs["subnetIds"],
        )["CacheSubnetGroup"]
        return group_name, {"name": group_name, "arn": group.get("ARN", "")}

    def _cache_parameter_group(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        group_name = inputs.get("name") or _identifier(f"{name}-{self._next()[-7:]}")
        request = {
            "CacheParameterGroupName": group_name,
            "CacheParameterGroupFamily": inputs["family"],
            "Description": inputs["description"],
        }
        # moto has no cache parameter groups: both requests are checked against ElastiCache's model only.
        self._validated(
            "elasticache",
            "create_cache_parameter_group",
            request,
            {"CacheParameterGroup": {}},
            f"aws:elasticache/parameterGroup:ParameterGroup {name}",
        )
        self._validated(
            "elasticache",
            "modify_cache_parameter_group",
            {
                "CacheParameterGroupName": group_name,
                "ParameterNameValues": [{"ParameterName": p["name"], "ParameterValue": p["value"]} for p in inputs["parameters"]],
            },
            {"CacheParameterGroupName": group_name},
            f"aws:elasticache/parameterGroup:ParameterGroup {name} (parameters)",
        )
        return group_name, {
            "name": group_name,
            "arn": f"arn:aws:elasticache:{self.account.region}:{ACCOUNT_ID}:parametergroup:{group_name}",
        }

    def _replication_group(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        group_id = inputs.get("replicationGroupId") or _identifier(f"{name}-{self._next()[-7:]}")
        request = {
            "ReplicationGroupId": group_id,
            "ReplicationGroupDescription": inputs["description"],
            "Engine": inputs["engine"],
            "EngineVersion": inputs["engineVersion"],
            "CacheNodeType": inputs["nodeType"],
            "NumCacheClusters": _number(inputs["numCacheClusters"]),
            "Port": _number(inputs["port"]),
            "AutomaticFailoverEnabled": bool(inputs["automaticFailoverEnabled"]),
            "MultiAZEnabled": bool(inputs["multiAzEnabled"]),
            "CacheParameterGroupName": inputs["parameterGroupName"],
            "CacheSubnetGroupName": inputs["subnetGroupName"],
            "SecurityGroupIds": inputs["securityGroupIds"],
            "TransitEncryptionEnabled": bool(inputs["transitEncryptionEnabled"]),
            "TransitEncryptionMode": inputs["transitEncryptionMode"],
            "AuthToken": inputs["authToken"],
            "AtRestEncryptionEnabled": bool(inputs["atRestEncryptionEnabled"]),
            "KmsKeyId": inputs["kmsKeyId"],
            "SnapshotRetentionLimit": _number(inputs["snapshotRetentionLimit"]),
            "SnapshotWindow": inputs["snapshotWindow"],
            "PreferredMaintenanceWindow": inputs["maintenanceWindow"],
            "AutoMinorVersionUpgrade": bool(inputs["autoMinorVersionUpgrade"]),
            "Tags": _tag_list(inputs),
        }
        group = self.account.client("elasticache").create_replication_group(**request)["ReplicationGroup"]
        primary = (group.get("NodeGroups") or [{}])[0].get("PrimaryEndpoint", {}).get("Address") or (
            f"master.{group_id}.abcdef.{self.account.region}.cache.amazonaws.com"
        )
        return group_id, {"arn": group.get("ARN", ""), "primaryEndpointAddress": primary}

    # ------------------------------------------------------------ EFS

    def _file_system(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        efs = self.account.client("efs")
        system = efs.create_file_system(
            CreationToken=f"{name}-{self._next()}",
            Encrypted=bool(inputs["encrypted"]),
            KmsKeyId=inputs["kmsKeyId"],
            PerformanceMode=inputs["performanceMode"],
            ThroughputMode=inputs["throughputMode"],
            Tags=_tag_list(inputs),
        )
        efs.put_lifecycle_configuration(
            FileSystemId=system["FileSystemId"],
            LifecyclePolicies=[{"TransitionToIA": policy["transitionToIa"]} for policy in inputs.get("lifecyclePolicies") or []],
        )
        return system["FileSystemId"], {
            "arn": system["FileSystemArn"],
            "dnsName": f"{system['FileSystemId']}.efs.{self.account.region}.amazonaws.com",
        }

    def _efs_backup_policy(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        request = {"FileSystemId": inputs["fileSystemId"], "BackupPolicy": {"Status": inputs["backupPolicy"]["status"]}}
        self.account.client("efs").describe_file_systems(FileSystemId=inputs["fileSystemId"])  # it must exist
        self._validated(
            "efs", "put_backup_policy", request, {"BackupPolicy": {"Status": "ENABLED"}}, f"aws:efs/backupPolicy:BackupPolicy {name}"
        )
        return inputs["fileSystemId"], {}

    def _access_point(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        user, root = inputs["posixUser"], inputs["rootDirectory"]
        creation = root["creationInfo"]
        point = self.account.client("efs").create_access_point(
            ClientToken=f"{name}-{self._next()}",
            FileSystemId=inputs["fileSystemId"],
            PosixUser={"Uid": _number(user["uid"]), "Gid": _number(user["gid"])},
            RootDirectory={
                "Path": root["path"],
                "CreationInfo": {
                    "OwnerUid": _number(creation["ownerUid"]),
                    "OwnerGid": _number(creation["ownerGid"]),
                    "Permissions": creation["permissions"],
                },
            },
        )
        return point["AccessPointId"], {"arn": point["AccessPointArn"]}

    def _mount_target(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        target = self.account.client("efs").create_mount_target(
            FileSystemId=inputs["fileSystemId"], SubnetId=inputs["subnetId"], SecurityGroups=inputs["securityGroups"]
        )
        return target["MountTargetId"], {"ipAddress": target.get("IpAddress", "")}

    def _file_system_policy(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        json.loads(inputs["policy"])  # a policy AWS would refuse as JSON fails here
        self.account.client("efs").put_file_system_policy(FileSystemId=inputs["fileSystemId"], Policy=inputs["policy"])
        return inputs["fileSystemId"], {}

    # ------------------------------------------------------------ ECS

    def _ecs_cluster(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        cluster_name = inputs.get("name") or f"{name}-{self._next()[-7:]}"
        cluster = self.account.client("ecs").create_cluster(
            clusterName=cluster_name, settings=[{"name": s["name"], "value": s["value"]} for s in inputs.get("settings") or []]
        )["cluster"]
        return cluster["clusterArn"], {"name": cluster_name, "arn": cluster["clusterArn"]}

    def _task_definition(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        volumes = []
        for volume in inputs.get("volumes") or []:
            entry: dict[str, Any] = {"name": volume["name"]}
            efs = volume.get("efsVolumeConfiguration")
            if efs:
                entry["efsVolumeConfiguration"] = {
                    "fileSystemId": efs["fileSystemId"],
                    "transitEncryption": efs["transitEncryption"],
                    "authorizationConfig": {
                        "accessPointId": efs["authorizationConfig"]["accessPointId"],
                        "iam": efs["authorizationConfig"]["iam"],
                    },
                }
            volumes.append(entry)
        platform = inputs["runtimePlatform"]
        request = {
            "family": inputs["family"],
            "containerDefinitions": json.loads(inputs["containerDefinitions"]),
            "requiresCompatibilities": inputs["requiresCompatibilities"],
            "networkMode": inputs["networkMode"],
            "cpu": inputs["cpu"],
            "memory": inputs["memory"],
            "executionRoleArn": inputs["executionRoleArn"],
            "taskRoleArn": inputs["taskRoleArn"],
            "runtimePlatform": {"operatingSystemFamily": platform["operatingSystemFamily"], "cpuArchitecture": platform["cpuArchitecture"]},
            "volumes": volumes,
        }
        # The whole request against ECS's model (moto keeps less than it is given), then registered in moto.
        self._validated(
            "ecs",
            "register_task_definition",
            request,
            {"taskDefinition": {"family": inputs["family"]}},
            f"aws:ecs/taskDefinition:TaskDefinition {name} (container definitions)",
        )
        definition = self.account.client("ecs").register_task_definition(**request)["taskDefinition"]
        return definition["taskDefinitionArn"], {"arn": definition["taskDefinitionArn"], "revision": definition["revision"]}

    def _ecs_service(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        network = inputs["networkConfiguration"]
        breaker = inputs["deploymentCircuitBreaker"]
        request = {
            "cluster": inputs["cluster"],
            "serviceName": inputs.get("name") or name,
            "taskDefinition": inputs["taskDefinition"],
            "desiredCount": _number(inputs["desiredCount"]),
            "launchType": inputs["launchType"],
            "platformVersion": inputs["platformVersion"],
            "networkConfiguration": {
                "awsvpcConfiguration": {
                    "subnets": network["subnets"],
                    "securityGroups": network["securityGroups"],
                    "assignPublicIp": "ENABLED" if network.get("assignPublicIp") else "DISABLED",
                }
            },
            "loadBalancers": [
                {
                    "targetGroupArn": lb["targetGroupArn"],
                    "containerName": lb["containerName"],
                    "containerPort": _number(lb["containerPort"]),
                }
                for lb in inputs["loadBalancers"]
            ],
            "deploymentConfiguration": {
                "minimumHealthyPercent": _number(inputs["deploymentMinimumHealthyPercent"]),
                "maximumPercent": _number(inputs["deploymentMaximumPercent"]),
                "deploymentCircuitBreaker": {"enable": bool(breaker["enable"]), "rollback": bool(breaker["rollback"])},
            },
            "healthCheckGracePeriodSeconds": _number(inputs["healthCheckGracePeriodSeconds"]),
            "enableExecuteCommand": bool(inputs["enableExecuteCommand"]),
            "propagateTags": inputs["propagateTags"],
            "enableECSManagedTags": bool(inputs["enableEcsManagedTags"]),
            "availabilityZoneRebalancing": inputs["availabilityZoneRebalancing"],
        }
        registries = inputs.get("serviceRegistries")
        if registries:
            registry = registries["registryArn"]
            discovery = self.account.client("servicediscovery")
            discovery.get_service(Id=registry.rsplit("/", 1)[-1])  # the registry exists
            request["serviceRegistries"] = [{"registryArn": registry}]
        self._validated(
            "ecs",
            "create_service",
            request,
            {"service": {"serviceName": request["serviceName"]}},
            f"aws:ecs/service:Service {name} (deployment settings)",
        )
        moto_request = {key: value for key, value in request.items() if key not in ("availabilityZoneRebalancing",)}
        service = self.account.client("ecs").create_service(**moto_request)["service"]
        return service["serviceArn"], {"name": service["serviceName"], "arn": service["serviceArn"]}

    def _dns_namespace(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        discovery = self.account.client("servicediscovery")
        discovery.create_private_dns_namespace(Name=inputs["name"], Vpc=inputs["vpc"], Description=inputs.get("description", ""))
        namespace = next(n for n in discovery.list_namespaces()["Namespaces"] if n["Name"] == inputs["name"])
        zone = namespace["Properties"]["DnsProperties"]["HostedZoneId"].rsplit("/", 1)[-1]
        return namespace["Id"], {"arn": namespace["Arn"], "hostedZone": zone}

    def _discovery_service(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        dns = inputs["dnsConfig"]
        request: dict[str, Any] = {
            "Name": inputs["name"],
            "NamespaceId": dns["namespaceId"],
            "DnsConfig": {
                "RoutingPolicy": dns["routingPolicy"],
                "DnsRecords": [{"Type": record["type"], "TTL": _number(record["ttl"])} for record in dns["dnsRecords"]],
            },
        }
        if "healthCheckCustomConfig" in inputs:
            request["HealthCheckCustomConfig"] = {}
        service = self.account.client("servicediscovery").create_service(**request)["Service"]
        return service["Id"], {"arn": service["Arn"]}

    # ------------------------------------------------------------ load balancers

    def _load_balancer(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        elb = self.account.client("elbv2")
        balancer_name = inputs.get("name") or f"{name[:24]}-{self._next()[-7:]}"
        balancer = elb.create_load_balancer(
            Name=balancer_name,
            Subnets=inputs["subnets"],
            SecurityGroups=inputs["securityGroups"],
            Scheme="internal" if inputs.get("internal") else "internet-facing",
            Type=inputs["loadBalancerType"],
            Tags=_tag_list(inputs) or [{"Key": "Name", "Value": name}],
        )["LoadBalancers"][0]
        arn = balancer["LoadBalancerArn"]
        attributes = {"deletion_protection.enabled": str(bool(inputs.get("enableDeletionProtection"))).lower()}
        if inputs["loadBalancerType"] == "application":
            logs = inputs["accessLogs"]
            attributes.update(
                {
                    "routing.http.drop_invalid_header_fields.enabled": str(bool(inputs["dropInvalidHeaderFields"])).lower(),
                    "routing.http.desync_mitigation_mode": inputs["desyncMitigationMode"],
                    "idle_timeout.timeout_seconds": str(_number(inputs["idleTimeout"])),
                    "routing.http2.enabled": str(bool(inputs["enableHttp2"])).lower(),
                    "access_logs.s3.enabled": str(bool(logs["enabled"])).lower(),
                    "access_logs.s3.bucket": logs["bucket"],
                    "access_logs.s3.prefix": logs["prefix"],
                }
            )
        else:
            attributes["load_balancing.cross_zone.enabled"] = str(bool(inputs.get("enableCrossZoneLoadBalancing"))).lower()
        elb.modify_load_balancer_attributes(LoadBalancerArn=arn, Attributes=[{"Key": k, "Value": v} for k, v in attributes.items()])
        suffix = arn.split(":loadbalancer/", 1)[1]
        return arn, {"arn": arn, "arnSuffix": suffix, "dnsName": balancer["DNSName"], "zoneId": balancer["CanonicalHostedZoneId"]}

    def _target_group(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        check = inputs["healthCheck"]
        request: dict[str, Any] = {
            "Name": inputs.get("name") or f"{name[:24]}-{self._next()[-7:]}",
            "Protocol": inputs["protocol"],
            "Port": _number(inputs["port"]),
            "VpcId": inputs["vpcId"],
            "TargetType": inputs["targetType"],
            "HealthCheckIntervalSeconds": _number(check["interval"]),
            "HealthyThresholdCount": _number(check["healthyThreshold"]),
            "UnhealthyThresholdCount": _number(check["unhealthyThreshold"]),
        }
        if check.get("path"):
            request.update(
                HealthCheckPath=check["path"], Matcher={"HttpCode": check["matcher"]}, HealthCheckTimeoutSeconds=_number(check["timeout"])
            )
        if check.get("protocol"):
            request["HealthCheckProtocol"] = check["protocol"]
        elb = self.account.client("elbv2")
        group = elb.create_target_group(**request)["TargetGroups"][0]
        arn = group["TargetGroupArn"]
        elb.modify_target_group_attributes(
            TargetGroupArn=arn,
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(_number(inputs["deregistrationDelay"]))}],
        )
        return arn, {"arn": arn, "arnSuffix": arn.split(":", 5)[5]}

    def _listener(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        actions = []
        for action in inputs["defaultActions"]:
            if action["type"] == "forward":
                actions.append({"Type": "forward", "TargetGroupArn": action["targetGroupArn"]})
            else:
                redirect = action["redirect"]
                actions.append(
                    {
                        "Type": "redirect",
                        "RedirectConfig": {
                            "Protocol": redirect["protocol"],
                            "Port": redirect["port"],
                            "StatusCode": redirect["statusCode"],
                        },
                    }
                )
        request: dict[str, Any] = {
            "LoadBalancerArn": inputs["loadBalancerArn"],
            "Protocol": inputs["protocol"],
            "Port": _number(inputs["port"]),
            "DefaultActions": actions,
        }
        if inputs.get("certificateArn"):
            request.update(Certificates=[{"CertificateArn": inputs["certificateArn"]}], SslPolicy=inputs["sslPolicy"])
        listener = self.account.client("elbv2").create_listener(**request)["Listeners"][0]
        return listener["ListenerArn"], {"arn": listener["ListenerArn"]}

    # ------------------------------------------------------------ certificates

    def _certificate(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        acm = self.account.client("acm")
        arn = acm.request_certificate(DomainName=inputs["domainName"], ValidationMethod=inputs["validationMethod"])["CertificateArn"]
        options = acm.describe_certificate(CertificateArn=arn)["Certificate"].get("DomainValidationOptions") or []
        records = [
            {
                "domainName": option["DomainName"],
                "resourceRecordName": option["ResourceRecord"]["Name"],
                "resourceRecordType": option["ResourceRecord"]["Type"],
                "resourceRecordValue": option["ResourceRecord"]["Value"],
            }
            for option in options
            if option.get("ResourceRecord")
        ]
        if not records:  # moto answers the record once validation is pending; shape it as ACM does
            records = [
                {
                    "domainName": inputs["domainName"],
                    "resourceRecordName": f"_{self._next()[-8:]}.{inputs['domainName']}.",
                    "resourceRecordType": "CNAME",
                    "resourceRecordValue": f"_{self._next()[-8:]}.acm-validations.aws.",
                }
            ]
        return arn, {"arn": arn, "domainValidationOptions": records}

    def _certificate_validation(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        # No API call: the provider waits until ACM reports the certificate issued. Here: it exists and names a record.
        self.account.client("acm").describe_certificate(CertificateArn=inputs["certificateArn"])
        if not inputs.get("validationRecordFqdns"):
            raise ValueError(f"{name}: no validation record")
        return inputs["certificateArn"], {"certificateArn": inputs["certificateArn"]}

    # ------------------------------------------------------------ WAF

    @staticmethod
    def _visibility(config: dict[str, Any]) -> dict[str, Any]:
        return {
            "SampledRequestsEnabled": bool(config["sampledRequestsEnabled"]),
            "CloudWatchMetricsEnabled": bool(config["cloudwatchMetricsEnabled"]),
            "MetricName": config["metricName"],
        }

    def _waf_rule(self, rule: dict[str, Any]) -> dict[str, Any]:
        statement = rule["statement"]
        entry: dict[str, Any] = {
            "Name": rule["name"],
            "Priority": _number(rule["priority"]),
            "VisibilityConfig": self._visibility(rule["visibilityConfig"]),
        }
        if "managedRuleGroupStatement" in statement:
            group = statement["managedRuleGroupStatement"]
            entry["Statement"] = {
                "ManagedRuleGroupStatement": {
                    "VendorName": group["vendorName"],
                    "Name": group["name"],
                    "RuleActionOverrides": [
                        {"Name": o["name"], "ActionToUse": {"Count": {}}} for o in group.get("ruleActionOverrides") or []
                    ],
                }
            }
            if not entry["Statement"]["ManagedRuleGroupStatement"]["RuleActionOverrides"]:
                del entry["Statement"]["ManagedRuleGroupStatement"]["RuleActionOverrides"]
            entry["OverrideAction"] = {"None": {}}
        else:
            rate = statement["rateBasedStatement"]
            entry["Statement"] = {
                "RateBasedStatement": {
                    "Limit": _number(rate["limit"]),
                    "AggregateKeyType": rate["aggregateKeyType"],
                    "EvaluationWindowSec": _number(rate["evaluationWindowSec"]),
                }
            }
            entry["Action"] = {"Block": {}}
        return entry

    def _web_acl(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        request = {
            "Name": inputs.get("name") or f"{name}-{self._next()[-7:]}",
            "Scope": inputs["scope"],
            "DefaultAction": {"Allow": {}},
            "Description": inputs["description"],
            "Rules": [self._waf_rule(rule) for rule in inputs["rules"]],
            "VisibilityConfig": self._visibility(inputs["visibilityConfig"]),
        }
        self._validated(
            "wafv2", "create_web_acl", request, {"Summary": {"Name": request["Name"]}}, f"aws:wafv2/webAcl:WebAcl {name} (rules)"
        )
        summary = self.account.client("wafv2").create_web_acl(**request)["Summary"]
        return summary["Id"], {"arn": summary["ARN"], "name": request["Name"]}

    def _web_acl_association(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.account.client("wafv2").associate_web_acl(WebACLArn=inputs["webAclArn"], ResourceArn=inputs["resourceArn"])
        return f"{inputs['webAclArn']},{inputs['resourceArn']}", {}

    def _web_acl_logging(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        redacted = [{"SingleHeader": {"Name": field["singleHeader"]["name"]}} for field in inputs.get("redactedFields") or []]
        configuration = {
            "ResourceArn": inputs["resourceArn"],
            "LogDestinationConfigs": inputs["logDestinationConfigs"],
            "RedactedFields": redacted,
        }
        if not all(":log-group:aws-waf-logs-" in destination for destination in inputs["logDestinationConfigs"]):
            raise ValueError(f"{name}: WAF logs only to a log group named aws-waf-logs-*")
        self.account.client("wafv2").put_logging_configuration(LoggingConfiguration=configuration)
        return inputs["resourceArn"], {}

    # ------------------------------------------------------------ SSM (the ops host's tools)

    def _ssm_document(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        document_name = inputs.get("name") or f"{name}-{self._next()[-7:]}"
        description = self.account.client("ssm").create_document(
            Content=inputs["content"],
            Name=document_name,
            DocumentType=inputs["documentType"],
            DocumentFormat=inputs.get("documentFormat", "JSON"),
        )["DocumentDescription"]
        return document_name, {
            "name": document_name,
            "latestVersion": description["LatestVersion"],
            "defaultVersion": description["DefaultVersion"],
            "arn": f"arn:aws:ssm:{self.account.region}:{ACCOUNT_ID}:document/{document_name}",
        }

    def _ssm_association(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ssm = self.account.client("ssm")
        ssm.describe_document(Name=inputs["name"], DocumentVersion=inputs["documentVersion"])  # it exists, in that version
        targets = [{"Key": target["key"], "Values": target["values"]} for target in inputs["targets"]]
        instances = [value for target in targets if target["Key"] == "InstanceIds" for value in target["Values"]]
        reservations = self.account.client("ec2").describe_instances(InstanceIds=instances)["Reservations"] if instances else []
        if len([i for r in reservations for i in r["Instances"]]) != len(instances):
            raise ValueError(f"{name}: targets an instance that does not exist")
        association_id = f"{self._next()[-8:]}-0000-4000-8000-000000000000"
        request = {"Name": inputs["name"], "DocumentVersion": inputs["documentVersion"], "Targets": targets}
        self._validated(
            "ssm",
            "create_association",
            request,
            {"AssociationDescription": {"AssociationId": association_id}},
            f"aws:ssm/association:Association {name}",
        )
        return association_id, {"associationId": association_id}

    # ------------------------------------------------------------ CloudWatch dashboard

    def _dashboard(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        dashboard = inputs["dashboardName"]
        self.account.client("cloudwatch").put_dashboard(DashboardName=dashboard, DashboardBody=inputs["dashboardBody"])
        return dashboard, {"dashboardArn": f"arn:aws:cloudwatch::{ACCOUNT_ID}:dashboard/{dashboard}"}
