"""topology ha: the whole prod stack rehearsed against moto, the task's start-up scripts run for real (sh, PostgreSQL)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components import cluster
from components.services import gitea, images, postgres
from components.settings import parse
from policy.forgestack_rules import evaluate
from rehearsal.emulated import EmulatedAccount
from rehearsal.engine import HA_OVERRIDES, ProgramRun, policy_view, run_program, stack_config
from tests.backup_support import make_rds_like, run_database_role_script
from tests.servers import postgres_server

HA = HA_OVERRIDES


def test_the_network_spans_two_zones_with_private_subnets_nat_and_endpoints(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = ha_rehearsal
    ec2 = account.client("ec2")
    vpc_id = run.outputs["vpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    assert len(subnets) == 4 and len({subnet["AvailabilityZone"] for subnet in subnets}) == 2
    assert not any(subnet["MapPublicIpOnLaunch"] for subnet in subnets)
    nat = ec2.describe_nat_gateways(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["NatGateways"]
    assert len(nat) == 2  # prod: haNatGateways per-zone (the default)
    endpoints = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
    assert {endpoint["ServiceName"].rsplit(".", 1)[-1] for endpoint in endpoints} >= {"s3", "secretsmanager", "logs", "ssmmessages"}


def test_only_the_gitea_tasks_and_the_ops_host_reach_the_data_tier_and_the_data_tier_reaches_nothing(
    ha_rehearsal: tuple[ProgramRun, EmulatedAccount],
) -> None:
    run, account = ha_rehearsal
    groups = account.client("ec2").describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [run.outputs["vpcId"]]}])
    by_tier = {group["Description"].removeprefix("forgestack ha: "): group for group in groups["SecurityGroups"]}
    tasks, ops = by_tier["tasks"]["GroupId"], by_tier["ops"]["GroupId"]
    for tier, port, sources in (("database", 5432, {tasks, ops}), ("cache", 6379, {tasks}), ("file-system", 2049, {tasks, ops})):
        rules = by_tier[tier]["IpPermissions"]
        assert [(rule["FromPort"], {pair["GroupId"] for pair in rule["UserIdGroupPairs"]}, rule["IpRanges"]) for rule in rules] == [
            (port, sources, [])
        ], tier
        assert by_tier[tier]["IpPermissionsEgress"] == [], tier
    web_lb_egress = by_tier["web-lb"]["IpPermissionsEgress"]
    assert [(rule["FromPort"], rule["UserIdGroupPairs"][0]["GroupId"]) for rule in web_lb_egress] == [(gitea.HTTP_PORT, tasks)]
    # The tasks' web port: from the load balancer, and from the ops host (Prometheus scrapes /metrics); nothing else.
    web_sources = {pair["GroupId"] for rule in by_tier["tasks"]["IpPermissions"] if rule["FromPort"] == gitea.HTTP_PORT
                   for pair in rule["UserIdGroupPairs"]}  # fmt: skip
    assert web_sources == {by_tier["web-lb"]["GroupId"], ops}
    # The ops host: nothing comes in; out only to the database, the file system, Gitea's web port, and HTTPS.
    assert by_tier["ops"]["IpPermissions"] == []
    ops_egress = {
        (rule["FromPort"], tuple(pair["GroupId"] for pair in rule["UserIdGroupPairs"]), tuple(r["CidrIp"] for r in rule["IpRanges"]))
        for rule in by_tier["ops"]["IpPermissionsEgress"]
    }
    assert ops_egress == {
        (5432, (by_tier["database"]["GroupId"],), ()),
        (2049, (by_tier["file-system"]["GroupId"],), ()),
        (gitea.HTTP_PORT, (tasks,), ()),
        (443, (), ("0.0.0.0/0",)),
    }


def test_the_data_tier_is_managed_encrypted_and_spread(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = ha_rehearsal
    database = account.client("rds").describe_db_instances()["DBInstances"][0]
    assert (database["Engine"], database["MultiAZ"], database["StorageEncrypted"], database["PubliclyAccessible"]) == (
        "postgres",
        True,
        True,
        False,
    )
    assert database["DeletionProtection"] is True  # prod is protected
    assert database["MasterUsername"] != postgres.USER  # Gitea has its own role
    group = account.client("elasticache").describe_replication_groups()["ReplicationGroups"][0]
    assert group["AutomaticFailover"] == "enabled" and group["TransitEncryptionEnabled"] and group["AtRestEncryptionEnabled"]
    # ElastiCache runs the Valkey the single host runs (the image's major.minor, one pinned fact)
    requested = run.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs
    image_version = images.VALKEY.split(":")[1].split("-")[0]
    assert image_version.startswith(requested["engineVersion"] + ".") and requested["engine"] == "valkey"
    family = run.one("aws:elasticache/parameterGroup:ParameterGroup").inputs["family"]
    assert family == "valkey" + image_version.split(".")[0]
    efs = account.client("efs")
    system = efs.describe_file_systems(FileSystemId=run.outputs["fileSystemId"])["FileSystems"][0]
    assert system["Encrypted"] is True
    targets = efs.describe_mount_targets(FileSystemId=system["FileSystemId"])["MountTargets"]
    assert len({target["SubnetId"] for target in targets}) == 2
    point = efs.describe_access_points(FileSystemId=system["FileSystemId"])["AccessPoints"][0]
    assert point["PosixUser"]["Uid"] == gitea.GIT_UID


def test_gitea_runs_as_two_tasks_behind_both_load_balancers_with_waf(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = ha_rehearsal
    ecs = account.client("ecs")
    service = ecs.describe_services(cluster=run.outputs["clusterName"], services=[run.outputs["serviceName"]])["services"][0]
    assert service["desiredCount"] == 2 and len(service["loadBalancers"]) == 2
    # moto keeps no deployment configuration: the request was checked against ECS's model, its inputs are asserted here
    assert run.one("aws:ecs/service:Service").inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    definition = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    containers = {container["name"]: container for container in definition["containerDefinitions"]}
    assert containers["gitea"]["dependsOn"] == [
        {"containerName": "secrets", "condition": "SUCCESS"},
        {"containerName": "database-role", "condition": "SUCCESS"},
    ]
    assert definition["volumes"][1]["efsVolumeConfiguration"]["transitEncryption"] == "ENABLED"
    elb = account.client("elbv2")
    balancers = {lb["Type"]: lb for lb in elb.describe_load_balancers()["LoadBalancers"]}
    listeners = {
        (kind, listener["Port"]): listener
        for kind, lb in balancers.items()
        for listener in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    }
    assert listeners["application", 443]["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert listeners["application", 80]["DefaultActions"][0]["RedirectConfig"]["Protocol"] == "HTTPS"
    assert listeners["network", 22]["Protocol"] == "TCP"
    acl = account.client("wafv2").get_web_acl_for_resource(ResourceArn=balancers["application"]["LoadBalancerArn"])["WebACL"]
    assert {rule["Name"] for rule in acl["Rules"]} >= {"AWSManagedRulesCommonRuleSet", "rate-limit-per-address"}
    assert run.outputs["gitSshUrl"] == "ssh://git@git-ssh.forge.example.com/"


def test_no_secret_is_in_the_task_definition_or_the_environment(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, _ = ha_rehearsal
    generated = [r.outputs["result"] for r in run.of_type("random:index/randomPassword:RandomPassword")]
    definition = run.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    assert generated and not [value for value in generated if value in definition]
    secrets = json.loads(definition)[0]["secrets"]
    runner_token = run.one("aws:secretsmanager/secret:Secret", "runner-token-secret").outputs["arn"]
    assert all(
        entry["valueFrom"].startswith(run.outputs["credentialsSecretArn"] + ":") or entry["valueFrom"] == runner_token for entry in secrets
    )


def test_the_policy_pack_passes_with_only_listed_risks(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, _ = ha_rehearsal
    report = evaluate(policy_view(run))
    assert [v for v in report.mandatory if not v.accepted] == []


def test_every_ha_resource_has_a_component_parent_and_its_prefix() -> None:
    run = run_program("dev", stack_config("dev", HA))
    components = {r.urn: r.name for r in run.resources if not r.custom}
    orphans = [r.name for r in run.resources if r.custom and r.type.startswith(("aws:", "random:")) and r.parent not in components]
    assert orphans == []
    assert [r.name for r in run.resources if r.parent in components and not r.name.startswith(components[r.parent] + "-")] == []


def test_single_and_ha_gitea_differ_only_in_the_endpoints() -> None:
    settings = parse(stack_config("prod", HA), stack="prod")
    single = gitea.gitea_env(settings, gitea.single_host_endpoints())
    ha = gitea.gitea_env(settings, gitea.ha_endpoints("db:5432", "cache:6379", "objects", "eu-west-1", "10.30.0.0/16"))
    changed = {key for key in single.keys() | ha.keys() if single.get(key) != ha.get(key)}
    assert changed == {
        "GITEA__database__HOST",
        "GITEA__database__SSL_MODE",
        "GITEA__security__REVERSE_PROXY_TRUSTED_PROXIES",
        "GITEA__webhook__ALLOWED_HOST_LIST",
        "GITEA__indexer__ISSUE_INDEXER_TYPE",
        "GITEA__indexer__REPO_INDEXER_ENABLED",
        *(f"GITEA__storage__{key}" for key in ("STORAGE_TYPE", "MINIO_ENDPOINT", "MINIO_BUCKET", "MINIO_LOCATION", "MINIO_USE_SSL")),
    }


# ------------------------------------------------------------ the task's start-up containers, run for real


def test_the_secrets_container_writes_every_file_gitea_reads(tmp_path: Path) -> None:
    settings = parse(stack_config("prod", HA), stack="prod")
    endpoints = gitea.ha_endpoints("db:5432", "master.cache.example:6379", "objects", "eu-west-1", "10.30.0.0/16")
    files = tuple(
        dataclasses.replace(f, path=str(tmp_path / Path(f.path).name), owner=os.getuid())
        for f in gitea.gitea_secret_files(settings, endpoints)
    )
    environment = {cluster.secret_variable(f): f"value-of-{f.credential}" for f in files}
    script = cluster.secrets_script(files)
    subprocess.run(["shellcheck", "-s", "sh", "-"], input=script, text=True, check=True)
    subprocess.run(["sh", "-c", script], env={"PATH": os.environ["PATH"], **environment}, check=True)
    for secret_file in files:
        written = Path(secret_file.path)
        assert written.read_text() == secret_file.template.replace("{value}", f"value-of-{secret_file.credential}")
        assert written.stat().st_mode & 0o777 == 0o400
    cache_file = Path(tmp_path / Path(gitea.valkey_file("queue")).name).read_text()
    assert cache_file == "rediss://:value-of-valkeyPassword@master.cache.example:6379/2"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and util-linux setpriv")
def test_the_secrets_script_works_with_only_the_capabilities_its_container_keeps(tmp_path: Path) -> None:
    """As root with every capability but the container's dropped (setpriv's bounding set), files for uid 1000."""
    settings = parse(stack_config("prod", HA), stack="prod")
    endpoints = gitea.ha_endpoints("db:5432", "cache:6379", "objects", "eu-west-1", "10.30.0.0/16")
    files = tuple(dataclasses.replace(f, path=str(tmp_path / Path(f.path).name)) for f in gitea.gitea_secret_files(settings, endpoints))
    kept = set(cluster.DOCKER_DEFAULT_CAPABILITIES) - set(cluster.dropped_capabilities(cluster.SECRETS_CAPABILITIES))
    bounding = ",".join(["-all", *(f"+{capability.lower()}" for capability in sorted(kept))])
    environment = {"PATH": os.environ["PATH"], **{cluster.secret_variable(f): "v" for f in files}}
    result = subprocess.run(
        ["setpriv", "--bounding-set", bounding, "--inh-caps", "-all", "sh", "-c", cluster.secrets_script(files)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for secret_file in files:
        written = Path(secret_file.path).stat()
        assert (written.st_uid, written.st_mode & 0o777) == (gitea.GIT_UID, 0o400)


def test_the_init_containers_are_read_only_and_drop_what_they_do_not_need(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, _ = ha_rehearsal
    containers = {c["name"]: c for c in json.loads(run.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"])}
    secrets, role = containers[cluster.SECRETS_CONTAINER], containers[cluster.DATABASE_ROLE_CONTAINER]
    assert secrets["readonlyRootFilesystem"] and role["readonlyRootFilesystem"]
    assert set(secrets["linuxParameters"]["capabilities"]["drop"]) == set(cluster.DOCKER_DEFAULT_CAPABILITIES) - {"CHOWN"}
    assert role["linuxParameters"]["capabilities"]["drop"] == ["ALL"]


def test_the_database_role_script_makes_gitea_a_login_that_owns_its_tables_as_a_non_superuser_master() -> None:
    with postgres_server() as server:
        make_rds_like(server)  # RDS's master: no superuser

        run_database_role_script(server, "first-password")
        run_database_role_script(server, "second-password")  # every task start: idempotent, and a changed credential takes effect
        gitea_url = f"postgresql://{postgres.USER}:second-password@127.0.0.1:{server.port}/{postgres.DATABASE}"
        server.psql("CREATE TABLE repository (id bigint primary key); INSERT INTO repository VALUES (1)", gitea_url)
        assert server.psql("SELECT count(*) FROM repository", gitea_url) == "1"
        old = subprocess.run(
            ["psql", f"postgresql://{postgres.USER}:first-password@127.0.0.1:{server.port}/{postgres.DATABASE}", "-c", "SELECT 1"],
            capture_output=True,
            text=True,
        )
        assert old.returncode != 0 and "password authentication failed" in old.stderr


def test_giteas_objects_are_copied_to_the_second_region_deletes_included(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    """Gitea's objects are not in the backups: prod (backupReplicaRegion eu-central-1) copies them, mirroring deletes as
    delete markers; the backups' own replication still never carries a delete."""
    run, account = ha_rehearsal
    s3 = account.client("s3")
    (rule,) = s3.get_bucket_replication(Bucket=run.outputs["objectsBucketName"])["ReplicationConfiguration"]["Rules"]
    replica = run.one("aws:s3/bucket:Bucket", "objects-replica")
    assert rule["Destination"]["Bucket"] == replica.outputs["arn"]
    # moto answers DeleteMarkerReplication Disabled whatever it was given: checked on the requests.
    requested = {r.name: r.inputs["rules"][0] for r in run.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig")}
    assert requested["objects-replication"]["deleteMarkerReplication"] == {"status": "Enabled"}
    assert requested["backups-replication"]["deleteMarkerReplication"] == {"status": "Disabled"}
    assert s3.get_bucket_location(Bucket=replica.id)["LocationConstraint"] == "eu-central-1"
    assert (
        rule["Destination"]["EncryptionConfiguration"]["ReplicaKmsKeyID"]
        == run.one("aws:kms/key:Key", "objects-replica-key").outputs["arn"]
    )
    role = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "objects-replication-policy").inputs["policy"])
    assert "s3:ReplicateDelete" in json.dumps(role)
    assert "s3:ReplicateDelete" not in run.one("aws:iam/rolePolicy:RolePolicy", "backups-replication-policy").inputs["policy"]


def test_every_task_creates_the_admin_once_gitea_answers(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    """A fresh ha stack gets the admin account the single host's deploy creates: a non-essential container of every task,
    after Gitea is healthy, as the git user with no capability, the password read from the secrets volume."""
    run, _ = ha_rehearsal
    containers = {c["name"]: c for c in json.loads(run.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"])}
    admin = containers[cluster.ADMIN_CONTAINER]
    assert admin["essential"] is False and admin["user"] == str(gitea.GIT_UID)
    assert admin["dependsOn"] == [{"containerName": cluster.GITEA_CONTAINER, "condition": "HEALTHY"}]
    settings = parse(stack_config("prod", HA), stack="prod")
    assert admin["command"][1:] == [cluster.ADMIN_SCRIPT_NAME, settings.gitea_admin_user, settings.acme_email]
    assert admin["command"][0] == (Path(cluster.__file__).parent / "files" / "gitea-bootstrap-admin.sh").read_text()
    assert admin["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
    assert {m["containerPath"]: m["readOnly"] for m in admin["mountPoints"]} == {"/data": False, "/run/secrets": True}


@pytest.mark.parametrize(
    ("before", "create", "exit_code", "message"),
    [
        ("absent", "ok", 0, "created"),
        ("present", "ok", 0, "exists: nothing to do"),
        ("absent", "race", 0, "created meanwhile"),  # another task created it between the check and the create
        ("absent", "fail", 1, "failed"),
    ],
)
def test_the_admin_script_is_idempotent_and_safe_when_tasks_race(
    tmp_path: Path, before: str, create: str, exit_code: int, message: str
) -> None:
    state, calls, password = tmp_path / "state", tmp_path / "calls", tmp_path / "password"
    state.write_text(before)
    password.write_text("admin-password-from-the-file")
    shim = f"""#!/bin/sh
echo "$*" >> {calls}
case "$1 $2 $3" in
  "admin user list")
    echo "ID   Username    Email               IsActive IsAdmin 2FA"
    if [ "$(cat {state})" = present ]; then echo "1    forge-admin ops@example.com     true     true    false"; fi ;;
  "admin user create")
    case "{create}" in
      ok) echo present > {state} ;;
      race) echo present > {state}; echo "user already exists" >&2; exit 1 ;;
      fail) exit 1 ;;
    esac ;;
esac
"""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gitea").write_text(shim)
    (bin_dir / "gitea").chmod(0o755)
    script = (Path(cluster.__file__).parent / "files" / "gitea-bootstrap-admin.sh").read_text()
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "ADMIN_PASSWORD_FILE": str(password)}
    result = subprocess.run(
        ["sh", "-c", script, cluster.ADMIN_SCRIPT_NAME, "forge-admin", "ops@example.com"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    created = [line for line in calls.read_text().splitlines() if line.startswith("admin user create")]
    assert len(created) == (0 if before == "present" else 1)
    assert all("--password admin-password-from-the-file" in line for line in created)


def test_the_dashboard_graphs_exactly_what_the_alarms_watch(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    """One graph per managed-service, backup and drill alarm, on the alarm's own metric, dimensions, statistic and period,
    with its threshold drawn: read back from CloudWatch for both, so the two cannot disagree."""
    run, account = ha_rehearsal
    cloudwatch = account.client("cloudwatch")
    body = json.loads(cloudwatch.get_dashboard(DashboardName="forgestack-prod")["DashboardBody"])

    def key(namespace: str, metric: str, dimensions: list[tuple[str, str]], stat: str, period: int) -> tuple[object, ...]:
        return namespace, metric, tuple(sorted(dimensions)), stat, period

    graphs = {}
    for widget in body["widgets"]:
        namespace, metric, *pairs = widget["properties"]["metrics"][0]
        dimensions = list(zip(pairs[::2], pairs[1::2], strict=True))
        threshold = widget["properties"]["annotations"]["horizontal"][0]["value"]
        graphs[key(namespace, metric, dimensions, widget["properties"]["stat"], widget["properties"]["period"])] = threshold
    watched = {
        key(a["Namespace"], a["MetricName"], [(d["Name"], d["Value"]) for d in a["Dimensions"]], a["Statistic"], a["Period"]): a[
            "Threshold"
        ]
        for a in cloudwatch.describe_alarms()["MetricAlarms"]
        if a["AlarmName"].startswith("alarms-") and "gitea-unreachable" not in a["AlarmName"]
    }
    assert graphs == watched and len(graphs) == 13
    assert run.outputs["dashboardUrl"].endswith("#dashboards:name=forgestack-prod")
