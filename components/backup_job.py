"""The scheduled backup on the host: systemd units, the schedule, and the pre-upgrade command. Pure functions.

The job itself is components/host_tools/backup.py, installed verbatim on the host by cloud-init, run as root by a
systemd timer. It dumps PostgreSQL inside its container (pg_dump matches the server) and archives
the data directories the service specs mark for backup.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from components.constants import CONTAINER_PREFIX, DATA_MOUNT, HOST_TOOLS_DIR, TEXTFILE_COLLECTOR_DIR
from components.host_tools.backup import DEFAULT_PREFIX, METRIC_LAST_SUCCESS
from components.host_tools.drill import METRIC_LAST_SUCCESS as DRILL_METRIC_LAST_SUCCESS
from components.services.spec import ServiceSpec

REPO_HOST_TOOLS = Path(__file__).resolve().parent / "host_tools"
HOST_SCRIPTS = (f"{HOST_TOOLS_DIR}/host_tools/backup.py", f"{HOST_TOOLS_DIR}/host_tools/restore.py",
                f"{HOST_TOOLS_DIR}/host_tools/drill.py")
UNIT_NAME = "forgestack-backup"
METRICS_FILE = f"{TEXTFILE_COLLECTOR_DIR}/forgestack_backup.prom"
BACKUP_MINUTE = 17  # off the hour, away from everyone else's cron jobs
TIMEOUT_HOURS = 6


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
        argv = ["/usr/bin/python3", HOST_SCRIPTS[0], "--bucket", self.bucket, "--prefix", DEFAULT_PREFIX,
                "--postgres-container", self.postgres_container, "--metrics-file", METRICS_FILE]
        for path in self.paths:
            argv += ["--path", path]
        if self.gitea_container:
            argv += ["--gitea-container", self.gitea_container]
        return argv


def backup_job(specs: tuple[ServiceSpec, ...], bucket: str, region: str, interval_hours: int, postgres_name: str,
               gitea_name: str = "") -> BackupJob:
    """Which directories to archive comes from the specs (volumes marked backup=True), never from a second list."""
    paths = tuple(f"{DATA_MOUNT}/{volume.name}" for spec in specs for volume in spec.volumes if volume.backup)
    gitea = f"{CONTAINER_PREFIX}{gitea_name}" if gitea_name and any(spec.name == gitea_name for spec in specs) else ""
    return BackupJob(bucket=bucket, region=region, interval_hours=interval_hours,
                     postgres_container=f"{CONTAINER_PREFIX}{postgres_name}", paths=paths, gitea_container=gitea)


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


def service_unit(job: BackupJob) -> str:
    return f"""[Unit]
Description=forgestack backup of PostgreSQL and the data directories to S3
Documentation=file://{HOST_SCRIPTS[0]}
Wants=network-online.target
After=network-online.target docker.service
RequiresMountsFor={DATA_MOUNT}

[Service]
Type=oneshot
Environment=AWS_DEFAULT_REGION={job.region}
ExecStart={shlex.join(job.argv)}
TimeoutStartSec={TIMEOUT_HOURS}h
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
# root reads every data directory and the Docker socket; nothing else is writable.
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
ReadWritePaths={TEXTFILE_COLLECTOR_DIR}
"""


def timer_unit(job: BackupJob) -> str:
    return f"""[Unit]
Description=forgestack backup every {job.interval_hours} h (metric {METRIC_LAST_SUCCESS})

[Timer]
OnCalendar={on_calendar(job.interval_hours)}
RandomizedDelaySec=5min
Persistent=true

[Install]
WantedBy=timers.target
"""


DRILL_UNIT = "forgestack-restore-drill"
DRILL_METRICS_FILE = f"{TEXTFILE_COLLECTOR_DIR}/forgestack_restore_drill.prom"
DRILL_CALENDAR = "Sun *-*-* 05:43:00"  # weekly, after the night's backups, before the working week
DRILL_TIMEOUT_HOURS = 6
DRILL_MAX_AGE_DAYS = 8  # one missed week and a day before the alert


def drill_argv(job: BackupJob) -> list[str]:
    return ["/usr/bin/python3", HOST_SCRIPTS[2], "--bucket", job.bucket, "--prefix", DEFAULT_PREFIX,
            "--postgres-container", job.postgres_container, "--work-root", DATA_MOUNT, "--metrics-file", DRILL_METRICS_FILE]


def drill_service_unit(job: BackupJob) -> str:
    return f"""[Unit]
Description=forgestack restore drill: the latest backup restored into scratch containers and checked
Documentation=file://{HOST_SCRIPTS[2]}
Wants=network-online.target
After=network-online.target docker.service {UNIT_NAME}.service
RequiresMountsFor={DATA_MOUNT}

[Service]
Type=oneshot
Environment=AWS_DEFAULT_REGION={job.region}
ExecStart={shlex.join(drill_argv(job))}
TimeoutStartSec={DRILL_TIMEOUT_HOURS}h
Nice=15
IOSchedulingClass=idle
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes
NoNewPrivileges=yes
ReadWritePaths={TEXTFILE_COLLECTOR_DIR}
"""


def drill_timer_unit() -> str:
    return f"""[Unit]
Description=forgestack restore drill every week (metric {DRILL_METRIC_LAST_SUCCESS})

[Timer]
OnCalendar={DRILL_CALENDAR}
RandomizedDelaySec=30min
Persistent=true

[Install]
WantedBy=timers.target
"""


def pre_upgrade_backup_argv(postgres_name: str) -> list[str]:
    """Run on the host before containers change: a fresh backup, or a note that there is nothing yet to back up.
    systemctl start waits for the oneshot unit, so a failed backup stops the deploy."""
    container = f"{CONTAINER_PREFIX}{postgres_name}"
    script = (f"if sudo docker inspect {container} >/dev/null 2>&1; then "
              f"echo 'pre-upgrade backup: starting {UNIT_NAME}.service' >&2; sudo systemctl start {UNIT_NAME}.service; "
              f"else echo 'pre-upgrade backup: no {container} yet, nothing to back up' >&2; fi")
    return ["sh", "-c", script]


def host_scripts() -> dict[str, str]:
    """Path on the host -> content, taken verbatim from this repository."""
    return {path: (REPO_HOST_TOOLS / Path(path).name).read_text() for path in HOST_SCRIPTS}
