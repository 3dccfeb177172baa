"""The host's scheduled backup, snapshots and the pre-upgrade backup: pure rendering, systemd's own checks, and the stacks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from components.backup_job import (
    DRILL_CALENDAR,
    DRILL_UNIT,
    HOST_SCRIPTS,
    METRICS_FILE,
    UNIT_NAME,
    BackupJob,
    backup_job,
    drill_service_unit,
    drill_timer_unit,
    max_backup_age_seconds,
    on_calendar,
    service_unit,
    timer_unit,
)
from components.constants import DATA_MOUNT, SNAPSHOT_TAG_KEY
from components.host_tools.backup import METRIC_LAST_SUCCESS
from components.services import postgres
from components.services.catalog import service_specs
from components.settings import parse
from rehearsal.engine import ProgramRun, run_program, stack_config
from tests.backup_support import unpack_bundle

JOB = BackupJob(bucket="forge-backups-1a2b", region="eu-west-1", interval_hours=6, postgres_container="forgestack-postgres",
                paths=(f"{DATA_MOUNT}/gitea",))


@pytest.mark.parametrize(("hours", "expected"), [(1, "*-*-* 00/1:17:00"), (6, "*-*-* 00/6:17:00"), (24, "*-*-* 03:17:00")])
def test_schedule_runs_every_interval_at_a_fixed_minute(hours: int, expected: str) -> None:
    assert on_calendar(hours) == expected


def test_schedule_refuses_an_interval_that_does_not_divide_a_day() -> None:
    with pytest.raises(ValueError, match="divide"):
        on_calendar(5)


def test_alert_threshold_allows_two_missed_runs_and_a_long_one() -> None:
    assert max_backup_age_seconds(1) == 8 * 3600
    assert max_backup_age_seconds(24) == 54 * 3600


def test_archived_directories_come_from_the_specs() -> None:
    settings = parse(stack_config("dev"), "dev")
    job = backup_job(service_specs(settings), "bucket", "eu-west-1", 24, postgres.NAME)
    # Gitea's data is archived; PostgreSQL's data directory is dumped, never copied live.
    assert job.paths == (f"{DATA_MOUNT}/gitea",)
    assert job.postgres_container == "forgestack-postgres"
    assert job.gitea_container == ""  # not asked for: no pause


def test_the_scheduled_backup_pauses_gitea_for_one_moment(aws_run: ProgramRun, tmp_path: Path) -> None:
    """The installed unit names the Gitea container, so database and repositories are staged while it is paused."""
    settings = parse(stack_config("dev"), "dev")
    job = backup_job(service_specs(settings), "bucket", "eu-west-1", 24, postgres.NAME, "gitea")
    assert job.argv[-2:] == ["--gitea-container", "forgestack-gitea"]
    assert backup_job(service_specs(settings), "bucket", "eu-west-1", 24, postgres.NAME, "no-such-service").gitea_container == ""
    bundle = aws_run.one("command:local:Command", "services-host-files")
    files = unpack_bundle(bundle.inputs["stdin"], tmp_path)
    assert "--gitea-container forgestack-gitea" in files[f"/etc/systemd/system/{UNIT_NAME}.service"]


def test_service_runs_the_installed_script_against_the_container() -> None:
    unit = service_unit(JOB)
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start == ("ExecStart=/usr/bin/python3 /usr/local/lib/forgestack/host_tools/backup.py --bucket forge-backups-1a2b "
                          "--prefix forgestack --postgres-container forgestack-postgres "
                          f"--metrics-file {METRICS_FILE} --path /srv/forgestack/gitea")
    assert f"RequiresMountsFor={DATA_MOUNT}" in unit
    environment = dict(pair.split("=", 1) for line in unit.splitlines() if line.startswith("Environment=")
                       for pair in line.removeprefix("Environment=").split())
    assert environment["AWS_DEFAULT_REGION"] == environment["AWS_REGION"] == "eu-west-1"
    assert METRIC_LAST_SUCCESS in timer_unit(JOB) and "Persistent=true" in timer_unit(JOB)


@pytest.mark.validator
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_units_and_rejects_a_broken_one(tmp_path: Path) -> None:
    (tmp_path / f"{UNIT_NAME}.service").write_text(service_unit(JOB))
    (tmp_path / f"{UNIT_NAME}.timer").write_text(timer_unit(JOB))
    verify = ["systemd-analyze", "verify", "--man=no", str(tmp_path / f"{UNIT_NAME}.timer"), str(tmp_path / f"{UNIT_NAME}.service")]
    result = subprocess.run(verify, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    calendar = subprocess.run(["systemd-analyze", "calendar", on_calendar(JOB.interval_hours)], capture_output=True, text=True,
                              check=False)
    assert calendar.returncode == 0, calendar.stderr
    (tmp_path / f"{UNIT_NAME}.timer").write_text(timer_unit(JOB).replace("OnCalendar=", "OnCalendar=every tuesday-ish "))
    assert subprocess.run(verify, capture_output=True, text=True, check=False).returncode != 0
    # The weekly restore drill's units, the same way.
    (tmp_path / f"{DRILL_UNIT}.service").write_text(drill_service_unit(JOB))
    (tmp_path / f"{DRILL_UNIT}.timer").write_text(drill_timer_unit())
    drill = ["systemd-analyze", "verify", "--man=no", str(tmp_path / f"{DRILL_UNIT}.timer"), str(tmp_path / f"{DRILL_UNIT}.service")]
    result = subprocess.run(drill, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    weekly = subprocess.run(["systemd-analyze", "calendar", DRILL_CALENDAR], capture_output=True, text=True, check=False)
    assert weekly.returncode == 0 and "Sun " in weekly.stdout, weekly.stderr


@pytest.mark.parametrize(("stack", "hours"), [("dev", 24), ("prod", 1)])
def test_the_deploy_installs_the_timer_and_both_scripts(stack: str, hours: int, dev_run: ProgramRun, prod_run: ProgramRun,
                                                        tmp_path: Path) -> None:
    """The stack's host-files command carries the scripts verbatim and the units for this bucket and interval."""
    run = {"dev": dev_run, "prod": prod_run}[stack]
    install = run.one("command:local:Command", name="services-host-files")
    unpacked = unpack_bundle(install.inputs["stdin"], tmp_path)
    repo = Path(__file__).resolve().parent.parent / "components" / "host_tools"
    for path in HOST_SCRIPTS:
        assert unpacked[path] == (repo / Path(path).name).read_text()  # installed verbatim
    bucket = run.outputs["backupBucketName"]
    assert f"--bucket {bucket} " in unpacked[f"/etc/systemd/system/{UNIT_NAME}.service"]
    assert f"OnCalendar={on_calendar(hours)}" in unpacked[f"/etc/systemd/system/{UNIT_NAME}.timer"]
    assert f"{UNIT_NAME}.timer" in install.inputs["create"].split("enable --now", 1)[1]


@pytest.mark.parametrize(("stack", "days"), [("dev", 7), ("prod", 30)])
def test_data_volume_is_snapshotted_daily_with_the_stack_retention(stack: str, days: int, dev_run: ProgramRun,
                                                                   prod_run: ProgramRun) -> None:
    run = {"dev": dev_run, "prod": prod_run}[stack]
    details = run.one("aws:dlm/lifecyclePolicy:LifecyclePolicy").inputs["policyDetails"]
    (schedule,) = details["schedules"]
    assert schedule["createRule"]["interval"] == 24 and schedule["createRule"]["intervalUnit"] == "HOURS"
    assert schedule["retainRule"] == {"interval": days, "intervalUnit": "DAYS"}
    volume_tags = run.one("aws:ebs/volume:Volume").inputs["tags"]
    assert details["targetTags"] == {SNAPSHOT_TAG_KEY: volume_tags[SNAPSHOT_TAG_KEY]} == {SNAPSHOT_TAG_KEY: f"forgestack-{stack}"}


def test_pre_upgrade_backup_runs_before_every_container(aws_run: ProgramRun) -> None:
    backup = aws_run.one("command:local:Command", name="services-pre-upgrade-backup")
    assert "systemctl start forgestack-backup.service" in backup.inputs["create"]
    assert sorted(backup.inputs["triggers"]) == sorted(
        aws_run.one("docker:index/remoteImage:RemoteImage", name=f"services-{name}-image").inputs["name"]
        for name in ("gitea", "postgres")
    )
    for container in aws_run.of_type("docker:index/container:Container"):
        assert backup.urn in container.depends_on, container.name


def test_a_version_bump_changes_the_triggers() -> None:
    """A changed trigger makes Pulumi replace the command, which runs the backup again before the containers change."""
    def triggers(run: ProgramRun) -> list[str]:
        return list(run.one("command:local:Command", name="services-pre-upgrade-backup").inputs["triggers"])

    before = triggers(run_program("dev", stack_config("dev")))
    after = triggers(run_program("dev", stack_config("dev", {"forgestack:giteaVersion": "1.27.4"})))
    assert before != after and "gitea/gitea:1.27.4" in after


def test_local_stack_has_no_host_backup(local_run: ProgramRun) -> None:
    assert not [r for r in local_run.resources if r.name == "services-pre-upgrade-backup"]
    assert not local_run.of_type("aws:dlm/lifecyclePolicy:LifecyclePolicy")
