"""Runs the real __main__.py under Pulumi mocks and records what it registers.

The mock monitor is wrapped so each registration keeps what `MockResourceArgs` leaves out:
the parent, protect, ignore_changes, retain_on_delete, delete_before_replace, additional secret outputs and the provider reference.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from rehearsal import lazy_provider

lazy_provider.install()  # before the program imports pulumi_aws's subpackages: they load lazily offline

from components.services import sso  # noqa: E402

REPO = Path(__file__).resolve().parent.parent  # the repository root
MAIN = REPO / "__main__.py"
REVIEW_STACK_PREFIX = "review-"  # ephemeral stacks of pull requests (scripts/review_stack.py); their files are not committed
# Every stack is a Pulumi.<stack>.yaml beside the program; the local one runs on Docker, the others on AWS.
STACKS = tuple(sorted(name for name in (path.name.split(".")[1] for path in REPO.glob("Pulumi.*.yaml"))
                      if not name.startswith(REVIEW_STACK_PREFIX)))
AWS_STACKS = tuple(stack for stack in STACKS if stack != "local")
# A stack file turned into topology ha: ha also turns off what it does not build (single sign-on, settings refuse it).
HA_OVERRIDES: dict[str, str] = {"forgestack:topology": "ha", "forgestack:ssoOrganization": ""}


def topology_overrides(topology: str) -> dict[str, str]:
    """Config overrides that run a stack file with the given topology."""
    return dict(HA_OVERRIDES) if topology == "ha" else {"forgestack:topology": topology}


ACCOUNT_ID = "123456789012"  # moto's default account; the mocks use it too
SECRET_SIG = "4dabf18193072939515e22adb298388d"
# Elastic Load Balancing's log-delivery account per region, as the provider's aws.elb.getServiceAccount answers it.
ELB_ACCOUNTS = {"eu-west-1": "156460612806", "eu-central-1": "054676820928", "us-east-1": "127311923021"}


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]
    id: str
    outputs: dict[str, Any]
    custom: bool
    parent: str = ""
    protect: bool = False
    ignore_changes: list[str] = field(default_factory=list)
    retain_on_delete: bool = False
    delete_before_replace: bool = False
    depends_on: list[str] = field(default_factory=list)
    additional_secret_outputs: list[str] = field(default_factory=list)
    provider: str = ""
    urn: str = ""
    raw_inputs: dict[str, Any] | None = None  # as the engine receives them (secrets still wrapped)


@dataclass
class ProgramRun:
    resources: list[Registered]
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def of_type(self, type_: str) -> list[Registered]:
        return [resource for resource in self.resources if resource.type == type_]

    def one(self, type_: str, name: str | None = None) -> Registered:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {type_} {name or ''}, found {[r.name for r in found]}"
        return found[0]


def unwrap_secrets(value: Any) -> Any:
    """Mocks receive secret inputs wrapped as {sig: ..., value: ...}; give back the plain value."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            return unwrap_secrets(value["value"])
        return {key: unwrap_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(item) for item in value]
    return value


def has_secret(value: Any) -> bool:
    if isinstance(value, dict):
        return value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270" or any(has_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(has_secret(item) for item in value)
    return False


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.requests: dict[str, Any] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)
        self.requests[response.urn] = request
        return response


class ForgeMocks(pulumi.runtime.Mocks):
    """Echoes inputs and adds the computed attributes AWS would assign, with realistic ids."""

    def __init__(self) -> None:
        self.registered: list[Registered] = []
        self.counter = 0

    def _next(self) -> str:
        self.counter += 1
        return f"{self.counter:017x}"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        outputs = dict(args.inputs)
        suffix = self._next()
        resource_id = f"{args.name}-{suffix[-8:]}"
        type_ = args.typ
        region = args.inputs.get("region") or "eu-west-1"  # a resource may name its own region (pulumi-aws 7)
        arn_prefix = {
            "aws:kms/key:Key": f"arn:aws:kms:{region}:{ACCOUNT_ID}:key/",
            "aws:sns/topic:Topic": f"arn:aws:sns:{region}:{ACCOUNT_ID}:",
            "aws:secretsmanager/secret:Secret": f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT_ID}:secret:",
            "aws:iam/role:Role": f"arn:aws:iam::{ACCOUNT_ID}:role/",
            "aws:cloudwatch/logGroup:LogGroup": f"arn:aws:logs:eu-west-1:{ACCOUNT_ID}:log-group:",
            "aws:ssm/document:Document": f"arn:aws:ssm:{region}:{ACCOUNT_ID}:document/",
        }
        id_prefix = {
            "aws:ec2/vpc:Vpc": "vpc-", "aws:ec2/subnet:Subnet": "subnet-", "aws:ec2/instance:Instance": "i-",
            "aws:ec2/securityGroup:SecurityGroup": "sg-", "aws:ec2/internetGateway:InternetGateway": "igw-",
            "aws:ec2/routeTable:RouteTable": "rtb-", "aws:ebs/volume:Volume": "vol-", "aws:ec2/eip:Eip": "eipalloc-",
            "aws:ec2/flowLog:FlowLog": "fl-", "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "sgr-",
        }
        if type_ in id_prefix:
            resource_id = id_prefix[type_] + suffix
        if type_ in arn_prefix:
            outputs["arn"] = arn_prefix[type_] + resource_id
        if type_ == "aws:s3/bucket:Bucket":
            resource_id = f"{args.name}-{suffix[-8:]}"
            outputs.update(bucket=resource_id, arn=f"arn:aws:s3:::{resource_id}")
        if type_ == "aws:iam/role:Role":
            outputs["name"] = resource_id
        if type_ == "aws:iam/instanceProfile:InstanceProfile":
            outputs["name"] = resource_id
        if type_ == "aws:ec2/eip:Eip":
            outputs["publicIp"] = "203.0.113.10"
        if type_ == "aws:ec2/instance:Instance":
            outputs["privateIp"] = "10.20.0.10"
        if type_ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = "sha256:" + hashlib.sha256(args.inputs["name"].encode()).hexdigest()
            outputs["repoDigest"] = args.inputs["name"].rsplit(":", 1)[0] + "@" + outputs["imageId"]
        if type_ == "docker:index/network:Network":
            resource_id = suffix
        if type_ == "tls:index/privateKey:PrivateKey":
            outputs["privateKeyPem"] = "-----BEGIN PRIVATE KEY-----\nmock\n-----END PRIVATE KEY-----\n"
        if type_ == "tls:index/selfSignedCert:SelfSignedCert":
            outputs["certPem"] = "-----BEGIN CERTIFICATE-----\nmock\n-----END CERTIFICATE-----\n"
        if type_ == "command:local:Command":
            # What the command prints; deploy-time secrets (the runner token) are read from stdout. Single sign-on's
            # client script prints two lines: the client id and its secret.
            stdout = f"{args.name}-stdout-{suffix[-8:]}"
            if sso.CLIENT_SCRIPT in str(args.inputs.get("create", "")):
                stdout = f"{args.name}-client-id-{suffix[-8:]}\n{args.name}-client-secret-{suffix[-8:]}\n"
            outputs.update(stdout=stdout, stderr="")
        if type_ == "aws:ses/domainIdentity:DomainIdentity":
            outputs.update(arn=f"arn:aws:ses:{region}:{ACCOUNT_ID}:identity/{args.inputs['domain']}", verificationToken="mock-token")
        if type_ == "aws:ses/domainDkim:DomainDkim":
            outputs["dkimTokens"] = [f"dkim{n}{suffix[-6:]}" for n in range(3)]
        if type_ == "aws:iam/accessKey:AccessKey":
            resource_id = "AKIA" + suffix[-12:].upper()
            outputs["sesSmtpPasswordV4"] = f"smtp-password-{suffix[-8:]}"
        if type_ == "aws:iam/user:User":
            outputs["arn"] = f"arn:aws:iam::{ACCOUNT_ID}:user/{args.inputs.get('name', resource_id)}"
        outputs.update(_managed_service_attributes(type_, args.name, resource_id, region, outputs))
        if type_ == "random:index/randomPassword:RandomPassword":
            # Distinct, recognisable values so a test can search for leaks.
            outputs["result"] = (hashlib.sha256(args.name.encode()).hexdigest() * 4)[: int(args.inputs["length"])]
        self.registered.append(
            Registered(type_, args.name, unwrap_secrets(args.inputs), resource_id, outputs, bool(args.custom), raw_inputs=args.inputs)
        )
        return resource_id, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        token = args.token
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": ["eu-west-1a", "eu-west-1b", "eu-west-1c"], "zoneIds": ["euw1-az1", "euw1-az2", "euw1-az3"]}, []
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/ci", "userId": "AIDA"}, []
        if token == "aws:ec2/getAmi:getAmi":
            return {"id": "ami-0123456789abcdef0", "architecture": "x86_64", "name": "ubuntu-noble"}, []
        if token == "aws:ssm/getParameter:getParameter":  # the newest Amazon Linux image's id
            return {"id": args.args["name"], "name": args.args["name"], "value": "ami-0fedcba9876543210", "type": "String"}, []
        if token == "aws:route53/getZone:getZone":
            return {"zoneId": "Z0123456789ABCDEFGHIJ", "id": "Z0123456789ABCDEFGHIJ", "name": args.args.get("name")}, []
        if token == "aws:ec2/getManagedPrefixList:getManagedPrefixList":
            return {"id": "pl-0123456789abcdef0", "name": args.args["name"]}, []
        if token == "aws:elb/getServiceAccount:getServiceAccount":
            return {"id": ELB_ACCOUNTS["eu-west-1"], "arn": f"arn:aws:iam::{ELB_ACCOUNTS['eu-west-1']}:root"}, []
        raise AssertionError(f"unexpected invoke {token} with {args.args}")


def _managed_service_attributes(type_: str, name: str, resource_id: str, region: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """What AWS assigns to the ha topology's resources (addresses, ARNs, DNS names), in AWS's formats."""
    arn = f"arn:aws:{{}}:{region}:{ACCOUNT_ID}:{{}}"
    if type_ == "aws:rds/instance:Instance":
        secret_arn = arn.format("secretsmanager", f"secret:rds!db-{resource_id}")
        return {"address": f"{name}.abcdefghijkl.{region}.rds.amazonaws.com", "identifier": name, "arn": arn.format("rds", f"db:{name}"),
                "masterUserSecrets": [{"secretArn": secret_arn, "secretStatus": "active"}]}
    if type_ == "aws:elasticache/replicationGroup:ReplicationGroup":
        return {"primaryEndpointAddress": f"master.{name}.abcdef.euw1.cache.amazonaws.com",
                "arn": arn.format("elasticache", f"replicationgroup:{name}")}
    if type_ == "aws:efs/fileSystem:FileSystem":
        return {"arn": arn.format("elasticfilesystem", f"file-system/{resource_id}")}
    if type_ == "aws:efs/accessPoint:AccessPoint":
        return {"arn": arn.format("elasticfilesystem", f"access-point/{resource_id}")}
    if type_ == "aws:lb/loadBalancer:LoadBalancer":
        kind = "app" if inputs.get("loadBalancerType") == "application" else "net"
        suffix = f"{kind}/{name}/{resource_id[-16:]}"
        return {"arn": arn.format("elasticloadbalancing", f"loadbalancer/{suffix}"), "arnSuffix": suffix,
                "dnsName": f"{name}-1234567890.{region}.elb.amazonaws.com", "zoneId": "Z32O12XQLNTSW2"}
    if type_ == "aws:lb/targetGroup:TargetGroup":
        suffix = f"targetgroup/{name[:32]}/{resource_id[-16:]}"
        return {"arn": arn.format("elasticloadbalancing", suffix), "arnSuffix": suffix}
    if type_ == "aws:acm/certificate:Certificate":
        return {"arn": arn.format("acm", f"certificate/{resource_id}"), "domainValidationOptions": [{
            "domainName": inputs.get("domainName"), "resourceRecordName": f"_abc123.{inputs.get('domainName')}.",
            "resourceRecordType": "CNAME", "resourceRecordValue": "_def456.acm-validations.aws."}]}
    if type_ == "aws:acm/certificateValidation:CertificateValidation":
        return {"certificateArn": inputs.get("certificateArn")}
    if type_ == "aws:ecs/cluster:Cluster":
        return {"name": name, "arn": arn.format("ecs", f"cluster/{name}")}
    if type_ == "aws:ecs/service:Service":
        return {"name": name}
    if type_ in ("aws:ecs/taskDefinition:TaskDefinition", "aws:wafv2/webAcl:WebAcl"):
        return {"arn": arn.format(type_.split(":")[1].split("/")[0], resource_id)}
    if type_ == "aws:route53/record:Record":
        return {"fqdn": str(inputs.get("name", "")).rstrip(".")}
    if type_ == "aws:ssm/document:Document":
        return {"name": name, "latestVersion": "1", "defaultVersion": "1"}
    if type_ in AUTO_NAMED:  # AWS names what the program leaves unnamed (Pulumi's auto-naming)
        return {"name": inputs.get("name") or f"{name}-{resource_id[-7:]}"}
    return {}


AUTO_NAMED = (
    "aws:rds/parameterGroup:ParameterGroup", "aws:rds/subnetGroup:SubnetGroup", "aws:elasticache/parameterGroup:ParameterGroup",
    "aws:elasticache/subnetGroup:SubnetGroup",
)  # fmt: skip


def stack_config(
    stack: str, overrides: dict[str, Any] | None = None, drop: tuple[str, ...] = (), stack_file: Path | None = None
) -> dict[str, str]:
    """A stack file's config as the CLI passes it: every value a string, lists and maps as JSON."""
    path = stack_file or REPO / f"Pulumi.{stack}.yaml"
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path.name} is not valid YAML: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
        raise ValueError(f"{path.name}: expected a mapping with a `config:` mapping")
    config = {**document.get("config", {}), **(overrides or {})}
    return {key: as_config_string(value) for key, value in config.items() if key not in drop}


def as_config_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


class DuplicateResourceError(RuntimeError):
    """Two resources of one type share a name: `pulumi up` would stop at the second."""


def run_program(stack: str, config: dict[str, str], mocks: ForgeMocks | None = None) -> ProgramRun:
    """Execute __main__.py under mocks for `stack` with `config`; re-raises what the program raises.

    Pass your own `mocks` to inspect what was registered when the program fails.
    """
    pulumi_settings.ROOT.set(None)
    mocks = mocks or ForgeMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="forgestack", stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config)
    pulumi_settings.SETTINGS.rpc_manager.clear()
    pulumi_settings.SETTINGS.outputs.clear()
    captured: dict[str, Any] = {}
    secret_outputs: set[str] = set()

    async def resolve(outputs: dict[str, Any]) -> None:
        for name, value in outputs.items():
            output = pulumi.Output.from_input(value)
            captured[name] = await output.future()
            if await output.is_secret():
                secret_outputs.add(name)

    def program() -> None:
        runpy.run_path(str(MAIN), run_name="__main__")
        root = pulumi_settings.get_root_resource()
        outputs = dict(getattr(root, "outputs", {}))
        _sync_await(asyncio.ensure_future(resolve(outputs)))

    _sync_await(run_pulumi_func(program))

    # Pulumi refuses a second resource with the same URN; the mocks accept it silently, so the rehearsal refuses it here.
    counts = Counter((r.type, r.name) for r in mocks.registered)
    duplicates = sorted(f"{type_} {name}" for (type_, name), count in counts.items() if count > 1)
    if duplicates:
        raise DuplicateResourceError(f"duplicate resource URN (type and name registered twice): {', '.join(duplicates)}")
    by_name = {(r.type, r.name): r for r in mocks.registered}
    for urn, request in monitor.requests.items():
        record = by_name.get((request.type, request.name))
        if record is None:
            continue
        record.urn = urn
        record.parent = request.parent
        record.protect = bool(request.protect)
        record.ignore_changes = list(request.ignoreChanges)
        record.retain_on_delete = bool(request.retainOnDelete)
        record.delete_before_replace = bool(request.deleteBeforeReplace)
        record.depends_on = list(request.dependencies)
        record.additional_secret_outputs = list(request.additionalSecretOutputs)
        record.provider = request.provider
    return ProgramRun(mocks.registered, captured, secret_outputs)


def policy_view(run: ProgramRun) -> list[Any]:
    """The run's resources as the policy rules see them (type, name, inputs, URN, dependencies)."""
    from policy.forgestack_rules import Resource

    return [Resource(r.type, r.name, r.inputs, r.urn, tuple(r.depends_on)) for r in run.resources]
