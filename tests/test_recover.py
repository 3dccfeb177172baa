"""Disaster recovery paths (scripts/recover.py), each rehearsed: the dev or prod stack deployed into an emulated account,
the loss made real there (volume deleted, instance terminated), the plan computed from what the account shows, and
the program run with the plan's settings builds the replacement from the right snapshot in the right zone.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from components.constants import SNAPSHOT_TAG_KEY
from components.settings import parse
from rehearsal.emulated import EmulatedAccount, emulated_account, rehearse
from rehearsal.engine import ProgramRun, run_program, stack_config
from scripts import recover
from tests.shims import install_shim

REGION = "eu-west-1"


@pytest.fixture(params=["dev", "prod"])
def deployed(request: pytest.FixtureRequest) -> Iterator[tuple[str, ProgramRun, EmulatedAccount]]:
    stack = request.param
    config = stack_config(stack)
    with emulated_account(REGION, config["forgestack:hostedZone"]) as account:
        yield stack, rehearse(stack, config, account), account


def snapshot(account: EmulatedAccount, volume_id: str, stack: str) -> str:
    """A snapshot as Data Lifecycle Manager leaves it: the volume's snapshot tag copied."""
    return str(account.client("ec2").create_snapshot(VolumeId=volume_id, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": [{"Key": SNAPSHOT_TAG_KEY, "Value": f"forgestack-{stack}"}]}])["SnapshotId"])


def lose_the_volume(account: EmulatedAccount, run: ProgramRun) -> None:
    ec2 = account.client("ec2")
    ec2.detach_volume(VolumeId=run.outputs["dataVolumeId"], InstanceId=run.outputs["instanceId"], Device="/dev/sdf", Force=True)
    ec2.delete_volume(VolumeId=run.outputs["dataVolumeId"])


def later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=3)


def test_volume_lost_recreates_the_volume_from_the_newest_snapshot(deployed: tuple[str, ProgramRun, EmulatedAccount]) -> None:
    stack, run, account = deployed
    ec2 = account.client("ec2")
    snapshot(account, run.outputs["dataVolumeId"], stack)
    time.sleep(1.1)  # moto stamps snapshots to the second
    newest = snapshot(account, run.outputs["dataVolumeId"], stack)
    snapshot(account, ec2.create_volume(AvailabilityZone="eu-west-1a", Size=1)["VolumeId"], "other-stack")  # not ours
    lose_the_volume(account, run)
    plan = recover.plan_recovery("volume-lost", stack, run.outputs, ec2, later(), protected=recover.stack_protected(stack))
    assert plan.config == {"dataVolumeSnapshotId": newest}
    assert plan.steps()[0] == ["pulumi", "config", "set", "--stack", stack, "forgestack:dataVolumeSnapshotId", newest]
    assert plan.steps()[-1] == ["pulumi", "up", "--stack", stack, "--refresh", "--yes"]
    unprotect = [step for step in plan.steps() if step[1:3] == ["state", "unprotect"]]
    if stack == "prod":  # prod's stack file says protect: the plan unprotects exactly the volume's URN
        assert unprotect == [["pulumi", "state", "unprotect", "--stack", "prod", "--yes", run.one("aws:ebs/volume:Volume").urn]]
    else:
        assert unprotect == []
    assert "3.0 h from the snapshot" in plan.rpo
    # Applying the plan's settings: the program asks for a volume from that snapshot in the same zone.
    after = run_program(stack, {**stack_config(stack), **{f"forgestack:{k}": v for k, v in plan.config.items()}})
    volume, before = after.one("aws:ebs/volume:Volume"), run.one("aws:ebs/volume:Volume")
    assert (volume.inputs["snapshotId"], volume.inputs["availabilityZone"]) == (newest, before.inputs["availabilityZone"])


def test_zone_lost_moves_volume_subnet_and_host_to_another_zone(deployed: tuple[str, ProgramRun, EmulatedAccount]) -> None:
    stack, run, account = deployed
    ec2 = account.client("ec2")
    taken = snapshot(account, run.outputs["dataVolumeId"], stack)
    lost_zone = run.one("aws:ebs/volume:Volume").inputs["availabilityZone"]
    lose_the_volume(account, run)
    plan = recover.plan_recovery("zone-lost", stack, run.outputs, ec2, later(), protected=recover.stack_protected(stack))
    assert plan.config["dataVolumeSnapshotId"] == taken
    assert plan.config["availabilityZone"] not in ("", lost_zone) and plan.config["availabilityZone"].startswith(REGION)
    after = run_program(stack, {**stack_config(stack), **{f"forgestack:{k}": v for k, v in plan.config.items()}})
    assert after.one("aws:ebs/volume:Volume").inputs["availabilityZone"] == plan.config["availabilityZone"]
    assert after.one("aws:ec2/subnet:Subnet").inputs["availabilityZone"] == plan.config["availabilityZone"]
    assert after.one("aws:ec2/volumeAttachment:VolumeAttachment").delete_before_replace


def test_host_lost_brings_a_new_host_onto_the_same_volume(deployed: tuple[str, ProgramRun, EmulatedAccount]) -> None:
    stack, run, account = deployed
    ec2 = account.client("ec2")
    with pytest.raises(recover.RecoveryRefusedError, match="is running: the host is not lost"):
        recover.plan_recovery("host-lost", stack, run.outputs, ec2, later())
    ec2.modify_instance_attribute(InstanceId=run.outputs["instanceId"], DisableApiTermination={"Value": False})
    ec2.terminate_instances(InstanceIds=[run.outputs["instanceId"]])
    plan = recover.plan_recovery("host-lost", stack, run.outputs, ec2, later())
    assert plan.config == {} and plan.steps() == [["pulumi", "up", "--stack", stack, "--refresh", "--yes"]]
    assert plan.rpo == "none lost: the data volume carries on"
    assert any(fact.endswith(": terminated") for fact in plan.facts)


def test_nothing_lost_or_nothing_to_recover_from_is_refused(deployed: tuple[str, ProgramRun, EmulatedAccount]) -> None:
    stack, run, account = deployed
    ec2 = account.client("ec2")
    with pytest.raises(recover.RecoveryRefusedError, match="attached to a running host: nothing is lost"):
        recover.plan_recovery("volume-lost", stack, run.outputs, ec2, later())
    with pytest.raises(recover.RecoveryRefusedError, match=f"no completed snapshot tagged forgestack:snapshots=forgestack-{stack}"):
        recover.plan_recovery("volume-lost", stack, run.outputs, ec2, later(), force=True)


def test_the_urns_the_plans_name_are_the_programs(prod_run: ProgramRun) -> None:
    assert recover.urn("prod", recover.DATA_VOLUME) == prod_run.one("aws:ebs/volume:Volume").urn
    assert recover.urn("prod", recover.INSTANCE) == prod_run.one("aws:ec2/instance:Instance").urn


PULUMI_SHIM = """#!/bin/sh
echo "$*" >> "$PULUMI_LOG"
case "$*" in *"--refresh"*) exit "${PULUMI_UP_EXIT:-0}" ;; esac
exit 0
"""


def test_apply_runs_the_steps_in_order_and_stops_at_a_failing_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    shim = install_shim(tmp_path / "bin", "pulumi", PULUMI_SHIM)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("PULUMI_LOG", str(tmp_path / "pulumi.log"))
    config = stack_config("dev")
    with emulated_account(REGION, config["forgestack:hostedZone"]) as account:
        run = rehearse("dev", config, account)
        taken = snapshot(account, run.outputs["dataVolumeId"], "dev")
        lose_the_volume(account, run)
        outputs = tmp_path / "outputs.json"
        outputs.write_text(json.dumps(run.outputs, default=str))
        assert recover.main(["--stack", "dev", "--scenario", "volume-lost", "--outputs-file", str(outputs), "--region", REGION,
                             "--apply"]) == 0
        assert (tmp_path / "pulumi.log").read_text().splitlines() == [
            f"config set --stack dev forgestack:dataVolumeSnapshotId {taken}", "up --stack dev --refresh --yes"]
        monkeypatch.setenv("PULUMI_UP_EXIT", "1")
        assert recover.main(["--stack", "dev", "--scenario", "volume-lost", "--outputs-file", str(outputs), "--region", REGION,
                             "--apply"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "recover: step 2 failed: pulumi up --stack dev --refresh --yes; the steps before it stand, rerun after fixing")


def test_usage_and_refusals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    local = tmp_path / "local.json"
    local.write_text(json.dumps({"giteaUrl": "https://git.forge.localhost/"}))
    assert recover.main(["--stack", "local", "--scenario", "host-lost", "--outputs-file", str(local)]) == 2
    assert capsys.readouterr().err.strip() == "recover: the stack's outputs lack instanceId, dataVolumeId: is local an AWS stack?"
    with pytest.raises(SystemExit) as exit_:
        recover.main(["--stack", "dev", "--scenario", "datacenter-lost"])
    assert exit_.value.code == 2
    capsys.readouterr()  # argparse's usage text
    no_replica = tmp_path / "dev.json"
    no_replica.write_text(json.dumps({"instanceId": "i-0", "dataVolumeId": "vol-0"}))
    assert recover.main(["--stack", "dev", "--scenario", "region-lost", "--outputs-file", str(no_replica), "--region", REGION]) == 3
    assert capsys.readouterr().err.strip() == ("recover: refused: stack dev has no replica region (backupReplicaRegion): recover "
                                               "from a backup copied elsewhere by hand, or wait for the region")
    # Whether the volume is protected comes from the stack's own settings: an unknown stack is refused, not guessed.
    assert recover.main(["--stack", "nosuch", "--scenario", "volume-lost", "--outputs-file", str(no_replica), "--region", REGION]) == 3
    assert capsys.readouterr().err.strip().startswith("recover: refused: cannot read the settings of stack nosuch (Pulumi.nosuch.yaml)")


def test_region_lost_rebuilds_the_stack_in_the_replica_region_from_copied_data(tmp_path: Path) -> None:
    """prod (replica region eu-central-1) deployed; eu-west-1 then lost. In the replica region there are a snapshot copy
    (as DLM leaves it) and a replicated backup (written there by the same backup.py). The plan names a new stack there
    from the copy; that stack, rehearsed in the same account, builds its volume from the copy in eu-central-1 and takes
    the forge's DNS names over; and the backup restores from the replica bucket."""
    from components.host_tools import backup as backup_script
    from components.host_tools import restore as restore_script
    from rehearsal.emulated import register_ubuntu_images

    config = stack_config("prod")
    replica_region = config["forgestack:backupReplicaRegion"]
    with emulated_account(REGION, config["forgestack:hostedZone"]) as account:
        run = rehearse("prod", config, account)
        assert run.outputs["backupReplicaRegion"] == replica_region
        replica_ec2 = account.client("ec2", replica_region)
        source = replica_ec2.create_volume(AvailabilityZone=f"{replica_region}a", Size=200)["VolumeId"]
        copy = replica_ec2.create_snapshot(VolumeId=source, TagSpecifications=[
            {"ResourceType": "snapshot", "Tags": [{"Key": SNAPSHOT_TAG_KEY, "Value": "forgestack-prod"}]}])["SnapshotId"]
        data = tmp_path / "gitea"
        (data / "git").mkdir(parents=True)
        (data / "git" / "HEAD").write_text("ref: refs/heads/main\n")
        replica_s3 = account.client("s3", replica_region)
        # moto treats the TLS-only policy's conditional deny as a deny even over HTTPS (README, What is proven how)
        replica_s3.delete_bucket_policy(Bucket=run.outputs["backupReplicaBucketName"])
        made = backup_script.run_backup(replica_s3, run.outputs["backupReplicaBucketName"], "forgestack", None, [data])

        plan = recover.plan_region_loss("prod", run.outputs, replica_ec2, later())
        assert plan.stack == f"prod-{replica_region}"
        assert plan.steps() == [
            ["pulumi", "stack", "init", plan.stack, "--copy-config-from", "prod"],
            ["pulumi", "config", "set", "--stack", plan.stack, "aws:region", replica_region],
            ["pulumi", "config", "set", "--stack", plan.stack, "forgestack:backupReplicaRegion", ""],
            ["pulumi", "config", "set", "--stack", plan.stack, "forgestack:availabilityZone", ""],
            ["pulumi", "config", "set", "--stack", plan.stack, "forgestack:dataVolumeSnapshotId", copy],
            ["pulumi", "config", "set", "--stack", plan.stack, "forgestack:budgetMonthlyUsd", str(parse(config, "prod").budget_usd)],
            ["pulumi", "up", "--stack", plan.stack, "--yes"]]
        assert f"AWS_REGION={replica_region} restore.py --bucket {run.outputs['backupReplicaBucketName']}" in plan.rpo

        # The new stack, as the plan sets it up, in the same account: its own names, the replica region.
        register_ubuntu_images(replica_region)
        rebuilt_config = {**config, "aws:region": replica_region, **{f"forgestack:{k}": v for k, v in plan.config.items()}}
        rebuilt = rehearse(plan.stack, rebuilt_config, EmulatedAccount(region=replica_region, rehearsals=account.rehearsals))
        (volume,) = replica_ec2.describe_volumes(VolumeIds=[rebuilt.outputs["dataVolumeId"]])["Volumes"]
        assert volume["SnapshotId"] == copy and volume["AvailabilityZone"].startswith(replica_region)
        zone = rebuilt.one("aws:route53/record:Record", "dns-git-a").inputs["zoneId"]
        records = account.client("route53").list_resource_record_sets(HostedZoneId=zone)
        git_a = [r for r in records["ResourceRecordSets"] if r["Name"].rstrip(".") == "git.forge.example.com" and r["Type"] == "A"]
        assert [v["Value"] for v in git_a[0]["ResourceRecords"]] == [rebuilt.outputs["hostPublicIp"]]  # taken over

        target = tmp_path / "restored"
        target.mkdir()
        assert restore_script.run_restore(replica_s3, run.outputs["backupReplicaBucketName"], "forgestack", "latest", None, target,
                                          tmp_path) == made["backup_id"]
        assert (target / "gitea" / "git" / "HEAD").read_text() == "ref: refs/heads/main\n"
