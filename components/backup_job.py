"""The scheduled backup on the host: systemd units, the schedule, and the pre-upgrade command. Pure functions.

The job itself is components/host_tools/backup.py, installed verbatim on the host by cloud-init, run as root by a
systemd timer. It dumps PostgreSQL inside its container (pg_dump matches the server) and archives
the data directories the service specs mark for backup.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.constants import CONTAINER_PREFIX, DATA_MOUNT, HOST_TOOLS_DIR, TEXTFILE_COLLECTOR_DIR
from components.host_tools.backup import DEFAULT_PREFIX, METRIC_LAST_SUCCESS
from components.host_tools.drill import METRIC_LAST_SUCCESS as DRILL_METRIC_LAST_SUCCESS
from components.services.spec import ServiceSpec
from policy.forgestack_rules import BACKUP_ERASURE_ACTIONS

REPO_HOST_TOOLS = Path(__file__).resolve().parent / "host_tools"
HOST_SCRIPTS = (
    f"{HOST_TOOLS_DIR}/host_tools/backup.py",
    f"{HOST_TOOLS_DIR}/host_tools/restore.py",
    f"{HOST_TOOLS_DIR}/host_tools/drill.py",
)
UNIT_NAME = "forgestack-backup"
METRICS_FILE = f"{TEXTFILE_COLLECTOR_DIR}/forgestack_backup.prom"
BACKUP_MINUTE = 17  # off the hour, away from everyone else's cron jobs
TIMEOUT_HOURS = 6
BACKUP_DELAY = "5min"  # RandomizedDelaySec of the backup timer
DRILL_DELAY = "30min"


@dataclass(frozen=True)
class BackupJob:
    bucket: str
    region: str
    interval_hours: int
    postgres_container: str
    paths: tuple[str, ...]  # host directories to archive
    gitea_container: str = ""  # paused while database and directories are staged (one moment); "" when Gitea is absent

    @property
    def argv(self) -> list[str]:
        argv = [
            "/usr/bin/python3",
            HOST_SCRIPTS[0],
            "--bucket",
            self.bucket,
            "--prefix",
            DEFAULT_PREFIX,
            "--postgres-container",
            self.postgres_container,
            "--metrics-file",
            METRICS_FILE,
        ]
        for path in self.paths:
            argv += ["--path", path]
        if self.gitea_container:
            argv += ["--gitea-container", self.gitea_container]
        return argv


def backup_job(
    specs: tuple[ServiceSpec, ...], bucket: str, region: str, interval_hours: int, postgres_name: str, gitea_name: str = ""
) -> BackupJob:
    """Which directories to archive comes from the specs (volumes marked backup=True), never from a second list."""
    paths = tuple(f"{DATA_MOUNT}/{volume.name}" for spec in specs for volume in spec.volumes if volume.backup)
    gitea = f"{CONTAINER_PREFIX}{gitea_name}" if gitea_name and any(spec.name == gitea_name for spec in specs) else ""
    return BackupJob(
        bucket=bucket,
        region=region,
        interval_hours=interval_hours,
        postgres_container=f"{CONTAINER_PREFIX}{postgres_name}",
        paths=paths,
        gitea_container=gitea,
    )


def backup_writer_statements(bucket_arn: str, key_arn: str, prefix: str, read_everything: bool = True) -> list[dict[str, Any]]:
    """What a host that backs up may do in the backups bucket: list, read (every backup, or only its own prefix's), write
    new objects under its prefix, use the bucket's key; and never erase or shorten a backup, denied outright so that no
    later or widened statement can grant it (the policy pack checks the allows too)."""
    readable = f"{bucket_arn}/*" if read_everything else f"{bucket_arn}/{prefix}/*"
    listing: dict[str, Any] = {"Sid": "ListBackups", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn}
    if not read_everything:
        listing["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}
    return [
        listing,
        {"Sid": "ReadBackups", "Effect": "Allow", "Action": "s3:GetObject", "Resource": readable},
        {"Sid": "WriteNewBackups", "Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
         "Resource": f"{bucket_arn}/{prefix}/*"},
        {"Sid": "NeverEraseBackups", "Effect": "Deny", "Action": list(BACKUP_ERASURE_ACTIONS),
         "Resource": [bucket_arn, f"{bucket_arn}/*"]},
        {"Sid": "EncryptBackups", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": key_arn},
    ]


def on_calendar(interval_hours: int) -> str:
    """systemd OnCalendar for every N hours at a fixed minute; N divides 24 (settings enforce it)."""
    if 24 % interval_hours:
        raise ValueError(f"{interval_hours} does not divide a day")
    if interval_hours == 24:
        return f"*-*-* 03:{BACKUP_MINUTE:02d}:00"
    return f"*-*-* 00/{interval_hours}:{BACKUP_MINUTE:02d}:00"


def max_backup_age_seconds(interval_hours: int) -> int:
    """How old the last success may be before an alert: two missed runs plus the longest a run may take."""
    return (2 * interval_hours + TIMEOUT_HOURS) * 3600


@dataclass(frozen=True)
class OneshotUnit:
    """A backup or a restore drill as a systemd oneshot service: the shape both the single host and the ha ops host use."""

    description: str
    argv: Sequence[str]
    region: str
    mount: str  # RequiresMountsFor: the data it reads
    timeout_hours: int
    idle: bool = False  # a drill yields to everything (nice 15, idle I/O); a backup only to the services (nice 10)
    documentation: str = ""
    after: str = ""  # units it follows besides the network and Docker
    success_argv: Sequence[str] = ()  # run only when argv succeeded (ExecStartPost)
    state_directory: str = ""  # /var/lib/<name>, made by systemd
    read_write_paths: str = ""  # writable for it beyond what ProtectSystem=full leaves


def oneshot_service(unit: OneshotUnit) -> str:
    priority = "Nice=15\nIOSchedulingClass=idle" if unit.idle else "Nice=10\nIOSchedulingClass=best-effort\nIOSchedulingPriority=7"
    lines = [
        "[Unit]",
        f"Description={unit.description}",
        *([f"Documentation=file://{unit.documentation}"] if unit.documentation else []),
        "Wants=network-online.target",
        f"After=network-online.target docker.service{' ' + unit.after if unit.after else ''}",
        f"RequiresMountsFor={unit.mount}",
        "",
        "[Service]",
        "Type=oneshot",
        f"Environment=AWS_REGION={unit.region} AWS_DEFAULT_REGION={unit.region}",
        *([f"StateDirectory={unit.state_directory}"] if unit.state_directory else []),
        f"ExecStart={shlex.join(unit.argv)}",
        *([f"ExecStartPost={shlex.join(unit.success_argv)}"] if unit.success_argv else []),
        f"TimeoutStartSec={unit.timeout_hours}h",
        priority,
        # root reads the data and the Docker socket; nothing else is writable.
        "ProtectSystem=full",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        *([f"ReadWritePaths={unit.read_write_paths}"] if unit.read_write_paths else []),
    ]
    return "\n".join(lines) + "\n"


def calendar_timer(description: str, calendar: str, randomized_delay: str) -> str:
    """A timer that catches up after downtime (Persistent) and spreads its start (RandomizedDelaySec)."""
    return f"""[Unit]
Description={description}

[Timer]
OnCalendar={calendar}
RandomizedDelaySec={randomized_delay}
Persistent=true

[Install]
WantedBy=timers.target
"""


def service_unit(job: BackupJob) -> str:
    return oneshot_service(
        OneshotUnit(
            "forgestack backup of PostgreSQL and the data directories to S3",
            job.argv,
            job.region,
            DATA_MOUNT,
            TIMEOUT_HOURS,
            documentation=HOST_SCRIPTS[0],
            read_write_paths=TEXTFILE_COLLECTOR_DIR,
        )
    )


def timer_unit(job: BackupJob) -> str:
    return calendar_timer(
        f"forgestack backup every {job.interval_hours} h (metric {METRIC_LAST_SUCCESS})", on_calendar(job.interval_hours), BACKUP_DELAY
    )


DRILL_UNIT = "forgestack-restore-drill"
DRILL_METRICS_FILE = f"{TEXTFILE_COLLECTOR_DIR}/forgestack_restore_drill.prom"
DRILL_CALENDAR = "Sun *-*-* 05:43:00"  # weekly, after the night's backups, before the working week
DRILL_TIMEOUT_HOURS = 6
DRILL_MAX_AGE_DAYS = 8  # one missed week and a day before the alert


def drill_argv(job: BackupJob) -> list[str]:
    return [
        "/usr/bin/python3",
        HOST_SCRIPTS[2],
        "--bucket",
        job.bucket,
        "--prefix",
        DEFAULT_PREFIX,
        "--postgres-container",
        job.postgres_container,
        "--work-root",
        DATA_MOUNT,
        "--metrics-file",
        DRILL_METRICS_FILE,
    ]


def drill_service_unit(job: BackupJob) -> str:
    return oneshot_service(
        OneshotUnit(
            "forgestack restore drill: the latest backup restored into scratch containers and checked",
            drill_argv(job),
            job.region,
            DATA_MOUNT,
            DRILL_TIMEOUT_HOURS,
            idle=True,
            documentation=HOST_SCRIPTS[2],
            after=f"{UNIT_NAME}.service",
            read_write_paths=TEXTFILE_COLLECTOR_DIR,
        )
    )


def drill_timer_unit() -> str:
    return calendar_timer(f"forgestack restore drill every week (metric {DRILL_METRIC_LAST_SUCCESS})", DRILL_CALENDAR, DRILL_DELAY)


def pre_upgrade_backup_argv(postgres_name: str) -> list[str]:
    """Run on the host before containers change: a fresh backup, or a note that there is nothing yet to back up.
    systemctl start waits for the oneshot unit, so a failed backup stops the deploy."""
    container = f"{CONTAINER_PREFIX}{postgres_name}"
    script = (
        f"if sudo docker inspect {container} >/dev/null 2>&1; then "
        f"echo 'pre-upgrade backup: starting {UNIT_NAME}.service' >&2; sudo systemctl start {UNIT_NAME}.service; "
        f"else echo 'pre-upgrade backup: no {container} yet, nothing to back up' >&2; fi"
    )
    return ["sh", "-c", script]


def host_scripts() -> dict[str, str]:
    """Path on the host -> content, taken verbatim from this repository."""
    return {path: (REPO_HOST_TOOLS / Path(path).name).read_text() for path in HOST_SCRIPTS}
