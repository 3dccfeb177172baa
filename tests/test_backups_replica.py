"""A second region for the backups (backupReplicaRegion, on in prod's stack file): a locked, KMS-encrypted replica
bucket there, S3 replication of every new backup (never of deletes) with metrics, a replication role that can do
nothing else, and Data Lifecycle Manager copying each snapshot there on that region's key. Checked on the emulated
account after a prod rehearsal; DLM (which moto lacks) on the request validated against botocore's model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from components.backups import replication_policy
from components.settings import ConfigError, parse
from rehearsal.emulated import EmulatedAccount, emulated_account, rehearse
from rehearsal.engine import ProgramRun, run_program, stack_config

REPLICA_REGION = "eu-central-1"


@pytest.fixture(scope="module")
def prod_in_account() -> Iterator[tuple[ProgramRun, EmulatedAccount]]:
    config = stack_config("prod")
    assert config["forgestack:backupReplicaRegion"] == REPLICA_REGION
    with emulated_account("eu-west-1", config["forgestack:hostedZone"]) as account:
        yield rehearse("prod", config, account), account


def test_the_replica_bucket_lives_in_the_second_region_locked_and_on_its_own_key(
        prod_in_account: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = prod_in_account
    s3 = account.client("s3", REPLICA_REGION)
    replica = run.outputs["backupReplicaBucketName"]
    assert s3.get_bucket_location(Bucket=replica)["LocationConstraint"] == REPLICA_REGION
    key = run.one("aws:kms/key:Key", "backups-replica-key")
    assert key.outputs["arn"].startswith(f"arn:aws:kms:{REPLICA_REGION}:")
    rule = s3.get_bucket_encryption(Bucket=replica)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key.outputs["arn"]}
    lock = s3.get_object_lock_configuration(Bucket=replica)["ObjectLockConfiguration"]
    assert (lock["ObjectLockEnabled"], lock["Rule"]["DefaultRetention"]["Mode"], lock["Rule"]["DefaultRetention"]["Days"]) == (
        "Enabled", "GOVERNANCE", 90)
    assert s3.get_bucket_versioning(Bucket=replica)["Status"] == "Enabled"
    blocks = s3.get_public_access_block(Bucket=replica)["PublicAccessBlockConfiguration"]
    assert all(blocks.values())


def test_every_new_backup_is_replicated_and_no_delete_ever_is(prod_in_account: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = prod_in_account
    configuration = account.client("s3").get_bucket_replication(Bucket=run.outputs["backupBucketName"])["ReplicationConfiguration"]
    (rule,) = configuration["Rules"]
    assert configuration["Role"] == run.one("aws:iam/role:Role", "backups-replication-role").outputs["arn"]
    assert rule["Status"] == "Enabled" and rule["Filter"] == {"Prefix": ""}
    assert rule["DeleteMarkerReplication"] == {"Status": "Disabled"}
    assert rule["Destination"]["Bucket"] == f"arn:aws:s3:::{run.outputs['backupReplicaBucketName']}"
    replica_key = run.one("aws:kms/key:Key", "backups-replica-key").outputs["arn"]
    assert rule["Destination"]["EncryptionConfiguration"]["ReplicaKmsKeyID"] == replica_key
    assert rule["Destination"]["Metrics"]["Status"] == "Enabled"
    # SSE-KMS objects replicate only when selected (moto does not echo this part back: checked on the request)
    requested = run.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig").inputs["rules"][0]
    assert requested["sourceSelectionCriteria"]["sseKmsEncryptedObjects"]["status"] == "Enabled"


def test_the_replication_role_can_replicate_and_nothing_else() -> None:
    document = json.loads(replication_policy("arn:aws:s3:::src", "arn:aws:s3:::dst", "arn:src-key", "arn:dst-key"))
    actions = {action for statement in document["Statement"] for action in
               ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])}
    assert not {a for a in actions if "Delete" in a or a.endswith("*")}  # never deletes, no wildcards
    writes = [s for s in document["Statement"] if "s3:ReplicateObject" in s["Action"]]
    assert [w["Resource"] for w in writes] == ["arn:aws:s3:::dst/*"]
    keys = {s["Resource"]: s["Condition"] for s in document["Statement"] if s["Sid"] in ("DecryptTheSource", "EncryptTheReplica")}
    assert keys == {"arn:src-key": {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}},
                    "arn:dst-key": {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}}


def test_snapshots_are_copied_to_the_second_region_on_its_key(prod_in_account: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, _ = prod_in_account
    (schedule,) = run.one("aws:dlm/lifecyclePolicy:LifecyclePolicy").inputs["policyDetails"]["schedules"]
    (copy,) = schedule["crossRegionCopyRules"]
    replica_key = run.one("aws:kms/key:Key", "backups-replica-key").outputs["arn"]
    assert (copy["target"], copy["encrypted"], copy["cmkArn"], copy["copyTags"]) == (REPLICA_REGION, True, replica_key, True)
    assert (copy["retainRule"]["interval"], copy["retainRule"]["intervalUnit"]) == (30, "DAYS")
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "snapshots-volume-key").inputs["policy"])
    assert replica_key in policy["Statement"][0]["Resource"]  # Data Lifecycle Manager may encrypt the copies


def test_one_region_stacks_have_no_replica() -> None:
    run = run_program("dev", stack_config("dev"))
    assert "backupReplicaBucketName" not in run.outputs
    assert not [r for r in run.resources if r.name.startswith("backups-replica")]
    (schedule,) = run.one("aws:dlm/lifecyclePolicy:LifecyclePolicy").inputs["policyDetails"]["schedules"]
    assert not schedule.get("crossRegionCopyRules")


def test_a_replica_in_the_stacks_own_region_is_refused() -> None:
    config = {**stack_config("dev"), "forgestack:backupReplicaRegion": "eu-west-1"}
    with pytest.raises(ConfigError, match="backupReplicaRegion: got 'eu-west-1'; expected empty or a region other than the stack's"):
        parse(config, "dev")
