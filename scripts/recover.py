#!/usr/bin/env python3
"""Recover a forgestack AWS stack from a lost host, data volume, availability zone or region.

    python scripts/recover.py --stack prod --scenario volume-lost             # print the plan
    python scripts/recover.py --stack prod --scenario zone-lost --apply       # and run it (pulumi config set, pulumi up)

Reads the stack's outputs (`pulumi stack output --json`, or --outputs-file) and looks at the account:
  host-lost    the instance is gone (terminated, retired), the data volume survives: a new host on the same volume.
  volume-lost  the data volume is gone or broken: a new volume from the newest completed snapshot, same zone.
  zone-lost    the zone is down: the newest snapshot becomes a volume in another available zone; subnet and host follow.
  region-lost  the region is down: a new stack in the replica region (backupReplicaRegion) from the newest snapshot
               copied there; it takes over the forge's DNS names; then restore the newest replicated backup.
The plan names every step and the data it brings back (RPO: the snapshot's age; newer changes come from the S3
backups, restored afterwards with restore.py). It refuses when the account says nothing was lost (a running host, a
volume attached to a running host) unless --force (volume-lost, zone-lost: the volume is there but broken).
Exit codes: 0 planned (and applied), 1 a step failed, 2 bad usage, 3 refused (nothing lost, or no snapshot).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
import botocore.exceptions

from components.constants import PROJECT, SNAPSHOT_TAG_KEY
from components.settings import ConfigError, Settings, parse
from rehearsal.engine import stack_config

SCENARIOS = ("host-lost", "volume-lost", "zone-lost", "region-lost")
AWS_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


class RecoveryRefusedError(Exception):
    """Nothing is lost, or nothing to recover from: the plan would do harm or nothing."""


@dataclass
class Plan:
    scenario: str
    stack: str
    facts: list[str] = field(default_factory=list)  # what the account showed
    config: dict[str, str] = field(default_factory=dict)  # forgestack:<key> -> value
    commands: list[list[str]] = field(default_factory=list)
    rpo: str = ""

    def steps(self) -> list[list[str]]:
        settings = [["pulumi", "config", "set", "--stack", self.stack, f"forgestack:{key}", value] for key, value in self.config.items()]
        if self.scenario == "region-lost":  # the new stack exists (and has its region) before it gets settings
            return self.commands[:2] + settings + self.commands[2:]
        return settings + self.commands


# (component type, resource type, name) of what the plans name by URN (components/host.py).
INSTANCE = ("forgestack:aws:Host", "aws:ec2/instance:Instance", "host-instance")
DATA_VOLUME = ("forgestack:aws:Host", "aws:ebs/volume:Volume", "host-data")


def urn(stack: str, resource: tuple[str, str, str]) -> str:
    parent_type, resource_type, name = resource
    return f"urn:pulumi:{stack}::{PROJECT}::{parent_type}${resource_type}::{name}"


def stack_outputs(stack: str, outputs_file: Path | None) -> dict[str, Any]:
    if outputs_file:
        return dict(json.loads(outputs_file.read_text()))
    try:
        result = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", stack], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RecoveryRefusedError("the Pulumi CLI is not installed here: install it, or give the outputs with --outputs-file") from None
    if result.returncode != 0:
        raise RecoveryRefusedError(f"cannot read the outputs of stack {stack}: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return dict(json.loads(result.stdout))


def plan_region_loss(stack: str, outputs: dict[str, Any], replica_ec2: Any, now: datetime) -> Plan:
    """A new stack (<stack>-<replica region>) with the old one's settings, in the replica region, its data volume from the
    newest snapshot copied there; the old stack stays as it is until its region is back (then destroy it)."""
    if not outputs.get("backupReplicaBucketName"):
        raise RecoveryRefusedError(f"stack {stack} has no replica region (backupReplicaRegion): recover from a backup copied "
                                   "elsewhere by hand, or wait for the region")
    region = str(outputs["backupReplicaRegion"])
    plan = Plan("region-lost", f"{stack}-{region}")
    copied = newest_snapshot(replica_ec2, stack)
    age_hours = (now - copied["StartTime"]).total_seconds() / 3600
    plan.facts += [f"replica region {region}: bucket {outputs['backupReplicaBucketName']}",
                   f"newest copied snapshot {copied['SnapshotId']}: {copied['StartTime'].isoformat()} ({age_hours:.1f} h old)"]
    plan.commands.append(["pulumi", "stack", "init", plan.stack, "--copy-config-from", stack])
    plan.commands.append(["pulumi", "config", "set", "--stack", plan.stack, "aws:region", region])
    plan.config = {"backupReplicaRegion": "", "availabilityZone": "", "dataVolumeSnapshotId": copied["SnapshotId"],
                   # the new stack name has no cost estimate: it keeps the old stack's budget
                   "budgetMonthlyUsd": str(stack_settings(stack).budget_usd)}
    plan.commands.append(["pulumi", "up", "--stack", plan.stack, "--yes"])
    plan.rpo = (f"{age_hours:.1f} h from the copied snapshot; then restore the newest replicated backup on the new host: "
                f"AWS_REGION={region} restore.py --bucket {outputs['backupReplicaBucketName']} (README, Restore)")
    return plan


def newest_snapshot(ec2: Any, stack: str) -> dict[str, Any]:
    """The newest completed Data Lifecycle Manager snapshot of the stack's data volume (DLM copies the volume's tags)."""
    snapshots = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
        {"Name": f"tag:{SNAPSHOT_TAG_KEY}", "Values": [f"{PROJECT}-{stack}"]}, {"Name": "status", "Values": ["completed"]},
    ])["Snapshots"]
    if not snapshots:
        raise RecoveryRefusedError(f"no completed snapshot tagged {SNAPSHOT_TAG_KEY}={PROJECT}-{stack}: recover from the S3 "
                                   "backups instead (README, Restore)")
    return dict(max(snapshots, key=lambda snapshot: snapshot["StartTime"]))


def _volume(ec2: Any, volume_id: str) -> dict[str, Any] | None:
    try:
        volumes = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    except botocore.exceptions.ClientError as error:
        if error.response["Error"]["Code"] == "InvalidVolume.NotFound":
            return None
        raise
    return dict(volumes[0]) if volumes else None


def _instance_state(ec2: Any, instance_id: str) -> str:
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except botocore.exceptions.ClientError as error:
        if error.response["Error"]["Code"] == "InvalidInstanceID.NotFound":
            return "gone"
        raise
    instances = [instance for reservation in reservations for instance in reservation["Instances"]]
    return str(instances[0]["State"]["Name"]) if instances else "gone"


def _instance_zone(ec2: Any, instance_id: str) -> str:
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except botocore.exceptions.ClientError:
        return ""
    instances = [instance for reservation in reservations for instance in reservation["Instances"]]
    return str(instances[0]["Placement"]["AvailabilityZone"]) if instances else ""


def stack_protected(stack: str) -> bool:
    """The stack file's `protect` setting: a protected data volume must be unprotected before it can be replaced."""
    return stack_settings(stack).protect


def stack_settings(stack: str) -> Settings:
    try:
        return parse(stack_config(stack), stack)
    except (OSError, ValueError, ConfigError) as error:
        raise RecoveryRefusedError(f"cannot read the settings of stack {stack} (Pulumi.{stack}.yaml): {error}") from None


def plan_recovery(scenario: str, stack: str, outputs: dict[str, Any], ec2: Any, now: datetime, force: bool = False,
                  protected: bool = False) -> Plan:
    plan = Plan(scenario, stack)
    instance_state = _instance_state(ec2, outputs["instanceId"])
    volume = _volume(ec2, outputs["dataVolumeId"])
    plan.facts.append(f"instance {outputs['instanceId']}: {instance_state}")
    where = f"{volume['State']} in {volume['AvailabilityZone']}" if volume else "gone"
    plan.facts.append(f"data volume {outputs['dataVolumeId']}: {where}")
    up = ["pulumi", "up", "--stack", stack, "--refresh", "--yes"]
    if scenario == "host-lost":
        if instance_state in ("running", "pending"):
            raise RecoveryRefusedError(f"instance {outputs['instanceId']} is {instance_state}: the host is not lost (to replace "
                                       f"a sick one: pulumi up --replace '{urn(stack, INSTANCE)}')")
        if volume is None:
            raise RecoveryRefusedError("the data volume is gone too: this is volume-lost (or zone-lost)")
        # The refresh finds the instance gone; up creates a new one, attaches the same volume and deploys onto it.
        plan.commands = [up]
        plan.rpo = "none lost: the data volume carries on"
        return plan
    if volume is not None and volume["State"] == "in-use" and instance_state == "running" and not force:
        raise RecoveryRefusedError(f"data volume {outputs['dataVolumeId']} is attached to a running host: nothing is lost "
                                   "(--force if it is broken)")
    snapshot = newest_snapshot(ec2, stack)
    age_hours = (now - snapshot["StartTime"]).total_seconds() / 3600
    plan.facts.append(f"newest snapshot {snapshot['SnapshotId']}: {snapshot['StartTime'].isoformat()} ({age_hours:.1f} h old)")
    plan.config["dataVolumeSnapshotId"] = snapshot["SnapshotId"]
    if scenario == "zone-lost":
        lost = volume["AvailabilityZone"] if volume else _instance_zone(ec2, outputs["instanceId"])
        if not lost:
            raise RecoveryRefusedError("neither the data volume nor the instance says which zone was lost")
        zones = [z["ZoneName"] for z in ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}])[
            "AvailabilityZones"] if z["ZoneName"] != lost and z.get("ZoneType", "availability-zone") == "availability-zone"]
        if not zones:
            raise RecoveryRefusedError(f"no other available zone than {lost} in this region")
        plan.config["availabilityZone"] = sorted(zones)[0]
        plan.facts.append(f"moving from {lost} to {plan.config['availabilityZone']}")
    if protected:
        # The program protects the volume on these stacks; the next up protects the new one again.
        plan.commands.append(["pulumi", "state", "unprotect", "--stack", stack, "--yes", urn(stack, DATA_VOLUME)])
    plan.commands.append(up)
    plan.rpo = f"{age_hours:.1f} h from the snapshot; restore the newest S3 backup afterwards for less (README, Restore)"
    return plan


def apply(plan: Plan) -> None:
    steps = plan.steps()
    for number, argv in enumerate(steps, 1):
        print(f"recover: step {number}/{len(steps)}: {' '.join(argv)}", file=sys.stderr, flush=True)
        if subprocess.run(argv, check=False).returncode != 0:
            raise RuntimeError(f"step {number} failed: {' '.join(argv)}; the steps before it stand, rerun after fixing")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stack", required=True, help="the Pulumi stack (dev, prod, ...)")
    parser.add_argument("--scenario", required=True, choices=SCENARIOS, help="what was lost")
    parser.add_argument("--region", help="the stack's region (default: the region in the outputs' instance ARN or AWS_REGION)")
    parser.add_argument("--outputs-file", type=Path, help="the stack's outputs as JSON instead of `pulumi stack output --json`")
    parser.add_argument("--force", action="store_true", help="volume-lost/zone-lost: plan although the volume is attached (broken)")
    parser.add_argument("--apply", action="store_true", help="run the steps (pulumi config set, pulumi up) instead of printing them")
    args = parser.parse_args(argv)
    try:
        outputs = stack_outputs(args.stack, args.outputs_file)
        missing = [key for key in ("instanceId", "dataVolumeId") if key not in outputs]
        if missing:
            print(f"recover: the stack's outputs lack {', '.join(missing)}: is {args.stack} an AWS stack?", file=sys.stderr)
            return 2
        if args.scenario == "region-lost":
            replica = boto3.client("ec2", region_name=outputs.get("backupReplicaRegion") or args.region)
            plan = plan_region_loss(args.stack, outputs, replica, datetime.now(UTC))
        else:
            ec2 = boto3.client("ec2", region_name=args.region)
            plan = plan_recovery(args.scenario, args.stack, outputs, ec2, datetime.now(UTC), args.force, stack_protected(args.stack))
    except RecoveryRefusedError as error:
        print(f"recover: refused: {error}", file=sys.stderr)
        return 3
    except (OSError, ValueError, *AWS_ERRORS) as error:
        print(f"recover: cannot look at the account: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    for fact in plan.facts:
        print(f"recover: {fact}", file=sys.stderr)
    print(f"recover: {plan.scenario}: data brought back: {plan.rpo}", file=sys.stderr)
    if not args.apply:
        for argv_ in plan.steps():
            print(" ".join(argv_))
        return 0
    try:
        apply(plan)
    except (RuntimeError, OSError) as error:
        print(f"recover: {error}", file=sys.stderr)
        return 1
    print("recover: done; check the forge (README, Operate) and restore the newest S3 backup if it is newer than the snapshot",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
