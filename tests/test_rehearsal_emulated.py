"""The program against an emulated AWS account (moto): what AWS would hold afterwards, asserted with boto3,
and the operator scripts run against that same state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from components.credentials import CREDENTIAL_LENGTHS
from components.host import decode_user_data
from components.host_tools import backup as backup_script
from components.host_tools import restore as restore_script
from components.services import mail
from rehearsal.emulated import EmulatedAccount, emulated_account, rehearse, stack_region
from rehearsal.engine import ProgramRun, stack_config
from scripts import credentials as credentials_script

Rehearsal = tuple[ProgramRun, EmulatedAccount]


@pytest.fixture(scope="module", params=["dev", "prod"])
def rehearsed(request: pytest.FixtureRequest) -> Iterator[Rehearsal]:
    stack = request.param
    config = stack_config(stack)
    with emulated_account(stack_region(config), config["forgestack:hostedZone"]) as account:
        yield rehearse(stack, config, account), account


def _ec2(account: EmulatedAccount) -> Any:
    return account.client("ec2")


def _instance(run: ProgramRun, account: EmulatedAccount) -> dict[str, Any]:
    reservations = _ec2(account).describe_instances(InstanceIds=[run.outputs["instanceId"]])["Reservations"]
    return dict(reservations[0]["Instances"][0])


def test_outputs_carry_emulated_ids(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    assert run.outputs["vpcId"].startswith("vpc-") and run.outputs["instanceId"].startswith("i-")
    vpc = _ec2(account).describe_vpcs(VpcIds=[run.outputs["vpcId"]])["Vpcs"][0]
    assert vpc["CidrBlock"] == run.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"]
    assert account.validated_only == ["aws:dlm/lifecyclePolicy:LifecyclePolicy snapshots-policy"]


def test_security_groups_hold_exactly_the_intended_rules(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    groups = _ec2(account).describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [run.outputs["vpcId"]]}])["SecurityGroups"]
    rules = {
        group["Description"] if group["GroupName"] != "default" else "default": (
            sorted((p.get("FromPort"), r["CidrIp"]) for p in group["IpPermissions"] for r in p["IpRanges"]),
            sorted((p["IpProtocol"], r["CidrIp"]) for p in group["IpPermissionsEgress"] for r in p["IpRanges"]),
        )
        for group in groups
    }
    assert rules == {
        "default": ([], []),  # stripped: members of the default group cannot talk to each other
        "forgestack host: web": ([(80, "0.0.0.0/0"), (443, "0.0.0.0/0")], []),
        "forgestack host: git-ssh": ([(22, "0.0.0.0/0")], []),  # git over SSH: the host's own sshd is on loopback
        "forgestack host: outbound": ([], [("-1", "0.0.0.0/0")]),
    }  # no admin SSH: adminCidrs is empty in both stack files, administration goes through SSM


def test_instance_requires_imdsv2_and_all_its_volumes_are_encrypted(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    instance = _instance(run, account)
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert instance["Monitoring"]["State"] == "enabled"
    assert instance["ImageId"] in {i["ImageId"] for i in _ec2(account).describe_images(Owners=["099720109477"])["Images"]}
    volume_ids = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
    assert run.outputs["dataVolumeId"] in volume_ids  # attached
    volumes = _ec2(account).describe_volumes(VolumeIds=volume_ids)["Volumes"]
    assert len(volumes) == 2 and all(v["Encrypted"] for v in volumes)
    user_data = _ec2(account).describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")["UserData"]["Value"]
    assert run.outputs["dataVolumeId"] in decode_user_data(user_data)  # what the instance boots with


def test_backup_bucket_has_every_control(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    s3, bucket = account.client("s3"), run.outputs["backupBucketName"]
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    key_arn = run.one("aws:kms/key:Key", name="backups-key").outputs["arn"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    lifecycle = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    retention = int(run.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", name="backups-lifecycle")
                    .inputs["rules"][0]["expiration"]["days"])
    assert retention in (7, 90)  # dev, prod
    assert lifecycle["expire-backups"]["Expiration"]["Days"] == retention
    assert lifecycle["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy["Statement"][0]["Effect"] == "Deny"
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # Access is logged to the log bucket, which S3 accepted as a target (its policy admits the log delivery).
    logging = s3.get_bucket_logging(Bucket=bucket)["LoggingEnabled"]
    log_bucket = run.one("aws:s3/bucket:Bucket", name="backups-access-logs").id
    assert (logging["TargetBucket"], logging["TargetPrefix"]) == (log_bucket, "backups/")
    assert s3.get_bucket_versioning(Bucket=log_bucket)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=log_bucket)["PublicAccessBlockConfiguration"].values())


def test_secret_holds_every_credential_as_json(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    document = json.loads(account.client("secretsmanager").get_secret_value(SecretId=run.outputs["credentialsSecretArn"])["SecretString"])
    assert set(document) == {*CREDENTIAL_LENGTHS, mail.SMTP_USERNAME, mail.SMTP_PASSWORD}  # with the SES SMTP user
    assert all(len(document[key]) == length for key, length in CREDENTIAL_LENGTHS.items())


def test_records_point_at_the_elastic_ip(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    route53 = account.client("route53")
    zone_id = route53.list_hosted_zones()["HostedZones"][0]["Id"]
    records = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    a_records = {r["Name"].rstrip("."): [v["Value"] for v in r["ResourceRecords"]] for r in records if r["Type"] == "A"}
    assert a_records == {hostname: [run.outputs["hostPublicIp"]] for hostname in run.outputs["hostnames"]}
    address = _ec2(account).describe_addresses(PublicIps=[run.outputs["hostPublicIp"]])["Addresses"][0]
    assert address["InstanceId"] == run.outputs["instanceId"]
    assert any(r["Type"] == "CAA" for r in records)


def test_host_role_names_exactly_this_bucket_and_its_key(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    iam = account.client("iam")
    role_name = run.one("aws:iam/role:Role", name="host-role").id
    (policy_name,) = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    resources = {statement["Resource"] for statement in document["Statement"] if statement["Effect"] == "Allow"}
    bucket_arn = f"arn:aws:s3:::{run.outputs['backupBucketName']}"
    kms = account.client("kms")
    backups_key = kms.describe_key(KeyId=run.one("aws:kms/key:Key", name="backups-key").id)["KeyMetadata"]["Arn"]
    assert resources == {bucket_arn, f"{bucket_arn}/*", f"{bucket_arn}/forgestack/*", backups_key, "arn:aws:ec2:*:*:instance/*", "*"}
    assert run.outputs["credentialsSecretArn"] not in resources  # nothing on the host reads the credentials
    assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []
    profile = _instance(run, account)["IamInstanceProfile"]["Arn"].split("/")[-1]
    assert [r["RoleName"] for r in iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]] == [role_name]


def test_flow_logs_go_to_their_log_group(rehearsed: Rehearsal) -> None:
    run, account = rehearsed
    (flow_log,) = _ec2(account).describe_flow_logs()["FlowLogs"]
    assert flow_log["ResourceId"] == run.outputs["vpcId"] and flow_log["TrafficType"] == "ALL"
    group = account.client("logs").describe_log_groups()["logGroups"][0]
    assert group["retentionInDays"] == int(run.one("aws:cloudwatch/logGroup:LogGroup").inputs["retentionInDays"])
    key = account.client("kms").describe_key(KeyId=group["kmsKeyId"])["KeyMetadata"]
    assert key["KeyManager"] == "CUSTOMER" and key["Arn"] == run.one("aws:kms/key:Key", name="network-flow-logs-key").outputs["arn"]


def test_credentials_script_reads_the_emulated_secret(rehearsed: Rehearsal, capsys: pytest.CaptureFixture[str]) -> None:
    run, account = rehearsed
    arn = run.outputs["credentialsSecretArn"]
    assert credentials_script.main(["--secret-arn", arn, "--list"]) == 0
    assert capsys.readouterr().out.split() == sorted((*CREDENTIAL_LENGTHS, mail.SMTP_USERNAME, mail.SMTP_PASSWORD))
    assert credentials_script.main(["--secret-arn", arn, "--key", "giteaAdminPassword"]) == 0
    stored = json.loads(account.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])
    assert capsys.readouterr().out.strip() == stored["giteaAdminPassword"]


@contextmanager
def tls_only_policy_set_aside(s3: Any, bucket: str) -> Iterator[None]:
    """moto 5.2 evaluates a Deny statement whose condition does not match as DENIED (AWS: not applicable), so the
    TLS-only policy refuses every request there, HTTPS included. AWS applies it to plain HTTP only, which botocore
    never uses. The policy itself is asserted in test_backup_bucket_has_every_control; here it is set aside."""
    policy = s3.get_bucket_policy(Bucket=bucket)["Policy"]
    s3.delete_bucket_policy(Bucket=bucket)
    try:
        yield
    finally:
        s3.put_bucket_policy(Bucket=bucket, Policy=policy)


def test_moto_refuses_https_under_the_tls_only_policy(rehearsed: Rehearsal) -> None:
    """Pins the moto behaviour worked around above: when moto evaluates conditions correctly this fails, and the
    work-around can go."""
    run, account = rehearsed
    with pytest.raises(botocore.exceptions.ClientError, match="Forbidden"):
        account.client("s3").put_object(Bucket=run.outputs["backupBucketName"], Key="probe", Body=b"x")


def test_backup_and_restore_against_the_emulated_bucket(rehearsed: Rehearsal, tmp_path: Path) -> None:
    run, account = rehearsed
    data = tmp_path / "gitea"
    (data / "repositories").mkdir(parents=True)
    (data / "repositories" / "HEAD").write_text("ref: refs/heads/main\n")
    bucket = run.outputs["backupBucketName"]
    target = tmp_path / "restored"
    target.mkdir()
    s3 = account.client("s3")
    with tls_only_policy_set_aside(s3, bucket):
        manifest = backup_script.run_backup(s3, bucket, backup_script.DEFAULT_PREFIX, None, [data])
        restored = restore_script.run_restore(s3, bucket, backup_script.DEFAULT_PREFIX, "latest", None, target, tmp_path)
        assert s3.get_object(Bucket=bucket, Key=f"forgestack/{manifest['backup_id']}/manifest.json")["ServerSideEncryption"] == "aws:kms"
    assert restored == manifest["backup_id"]
    assert (target / "gitea" / "repositories" / "HEAD").read_text() == "ref: refs/heads/main\n"
