"""OpsHost (topology ha): a small Amazon Linux 2023 instance in a private subnet where admins run the forge's tools
against the managed services: restore a backup into RDS and onto EFS, move Gitea's objects into S3 (the migration from
a single host), look at the file system.

No public address and no inbound port: reached through SSM Session Manager. The file system's root is mounted with the
EFS mount helper (TLS, IAM), the PostgreSQL client tools come from the stack's own PostgreSQL image, and the tools' Python
packages are pinned with their hashes (files/ops-requirements.txt). Amazon Linux 2023, unlike the single host's Ubuntu,
because the EFS mount helper is packaged there and nowhere else.

It also runs the ha stack's backup on a timer, in the single host's format (the same restore.py restores it): RDS
dumped, then Gitea's /data on the file system archived, into the backups bucket (which replicates where the stack says
so); each success puts a CloudWatch datapoint whose absence alarms.

The role reads every backup and writes new ones (never erases or shortens one), reads the credentials secret (Gitea's
database password), and reads and writes Gitea's objects bucket."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import pulumi
import pulumi_aws as aws

from components import database, templates
from components.alarms import BACKUP_METRIC, HEARTBEAT_NAMESPACE, RESTORE_DRILL_METRIC, MetricAlarmSpec, grafana_panels
from components.backup_job import (
    BACKUP_DELAY,
    DRILL_DELAY,
    DRILL_TIMEOUT_HOURS,
    DRILL_UNIT,
    REPO_HOST_TOOLS,
    TIMEOUT_HOURS,
    UNIT_NAME,
    OneshotUnit,
    backup_writer_statements,
    calendar_timer,
    on_calendar,
    oneshot_service,
)
from components.filesystem import ADMIN_ACTION, CLIENT_ACTIONS, ROOT_DIRECTORY
from components.host import SSM_AGENT_STATEMENTS, encode_user_data, ssm_association_statements
from components.host_files import HostFile, install_lines
from components.host_tools.backup import DEFAULT_PREFIX as BACKUP_PREFIX
from components.host_tools.heartbeat import DIMENSION as HEARTBEAT_DIMENSION
from components.ops_monitoring import UNITS as MONITORING_UNITS
from components.ops_monitoring import OpsMonitoring, monitoring_files
from components.ops_monitoring import units as ops_monitoring_units
from components.private_instance import PrivateInstanceArgs, private_instance
from components.services import postgres

OPS_USER: Final = "ec2-user"  # Amazon Linux's login user
MOUNT_POINT: Final = "/mnt/forge-files"  # the file system's root; Gitea's /data is MOUNT_POINT + filesystem.ROOT_DIRECTORY
VENV: Final = "/opt/forgestack/venv"
TOOLS_DIR: Final = "/opt/forgestack/host_tools"
MONITORING_DIR: Final = "/opt/forgestack/monitoring"
# restore.py, drill.py and credential_file.py import backup.py
TOOLS: Final = ("backup.py", "restore.py", "drill.py", "move_objects.py", "credential_file.py")
CREDENTIAL_TOOL: Final = (f"{VENV}/bin/python", f"{TOOLS_DIR}/credential_file.py")
# Grafana's CloudWatch data source reads metrics (the AmazonGrafanaCloudWatchAccess managed policy's CloudWatch part
# without logs, tags and the alarm reads that take a resource: the dashboards draw metrics); none of these takes one.
GRAFANA_CLOUDWATCH_ACTIONS: Final = (
    "cloudwatch:ListMetrics", "cloudwatch:GetMetricStatistics", "cloudwatch:GetMetricData", "cloudwatch:DescribeAlarmsForMetric",
    "ec2:DescribeRegions",
)  # fmt: skip
DRILL_CALENDAR: Final = "Sun,Wed *-*-* 05:43:00"  # twice a week: one missed drill stays inside the alarm's 7 days
UNITS_DIR: Final = "/etc/systemd/system"
GITEA_DATA: Final = MOUNT_POINT + ROOT_DIRECTORY  # the access point's directory: what the tasks mount as /data
REQUIREMENTS_PATH: Final = "/opt/forgestack/requirements.txt"
REQUIREMENTS_FILE: Final = "ops-requirements.txt"
# Amazon Linux 2023 packages (the release's versions: the repository is locked to the image). python3-botocore: the mount
# helper's IAM and mount-target lookups need it and do not declare it.
PACKAGES: Final = ("amazon-efs-utils", "python3-botocore", "python3.11", "python3.11-pip", "docker", "zstd", "tar", "git")


@dataclass(frozen=True)
class OpsHostArgs:
    stack: str
    region: str
    instance_type: str
    volume_gb: int  # the OS, Docker's PostgreSQL image, and room for a restore drill (a backup and its unpacked copy)
    architecture: Literal["x86_64", "arm64"]
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    file_system_id: pulumi.Input[str]
    file_system_arn: pulumi.Input[str]
    backup_bucket_arn: pulumi.Input[str]
    backup_bucket_name: pulumi.Input[str]
    backup_key_arn: pulumi.Input[str]
    backup_interval_hours: int
    database_address: pulumi.Input[str]
    credentials_secret_arn: pulumi.Input[str]
    credentials_key_arn: pulumi.Input[str]
    objects_policy: pulumi.Input[str]  # ObjectStorage.access_policy: what Gitea's tasks may do with their objects
    postgres_image: str
    domain: str
    gitea_discovery_name: str  # cluster.gitea_discovery_name(): Prometheus scrapes every task found under it
    metric_alarms: Sequence[MetricAlarmSpec] = ()  # what the alarms watch: Grafana draws the same
    ssh_public_key: str = ""
    protect: bool = False
    mount_targets: Sequence[pulumi.Resource] = ()  # the mount at first boot needs them


@dataclass(frozen=True)
class OpsBackupJob:
    """The ha stack's backup, in the single host's format (restore.py restores either): RDS dumped with the stack's
    PostgreSQL tools, then Gitea's /data on the file system archived; the success is a CloudWatch datapoint."""

    stack: str
    region: str
    bucket: str
    database_address: str  # host name; the port is database.PORT
    credentials_secret_arn: str
    postgres_image: str
    interval_hours: int

    @property
    def argv(self) -> list[str]:
        url = f"postgresql://{postgres.USER}@{self.database_address}:{database.PORT}/{postgres.DATABASE}?sslmode=require"
        return [
            f"{VENV}/bin/python", f"{TOOLS_DIR}/backup.py", "--bucket", self.bucket, "--prefix", BACKUP_PREFIX,
            "--postgres-url", url, "--postgres-image", self.postgres_image, "--credentials-secret", self.credentials_secret_arn,
            "--path", GITEA_DATA,
        ]  # fmt: skip

    @property
    def drill_argv(self) -> list[str]:
        return [
            f"{VENV}/bin/python", f"{TOOLS_DIR}/drill.py", "--bucket", self.bucket, "--prefix", BACKUP_PREFIX,
            "--postgres-image", self.postgres_image, "--work-root", f"/var/lib/{DRILL_UNIT}",
        ]  # fmt: skip

    def success_argv(self, metric: str) -> list[str]:
        """The datapoint a success puts (its absence alarms: alarms.backup_alarm, alarms.restore_drill_alarm)."""
        return [
            "/usr/bin/aws", "cloudwatch", "put-metric-data", "--region", self.region, "--namespace", HEARTBEAT_NAMESPACE,
            "--metric-name", metric, "--dimensions", f"{HEARTBEAT_DIMENSION}={self.stack}", "--value", "1",
        ]  # fmt: skip


def backup_service_unit(job: OpsBackupJob) -> str:
    # The dump comes first, then the archive: repositories a little newer than the database is the direction Gitea's
    # doctor repairs (several tasks cannot be paused for one moment the way the single host pauses its one Gitea).
    return oneshot_service(
        OneshotUnit(
            "forgestack backup of the database (RDS) and Gitea's /data (EFS) to S3", job.argv, job.region, MOUNT_POINT, TIMEOUT_HOURS,
            success_argv=job.success_argv(BACKUP_METRIC),
        )
    )  # fmt: skip


def backup_timer_unit(job: OpsBackupJob) -> str:
    return calendar_timer(
        f"forgestack backup every {job.interval_hours} h (CloudWatch {HEARTBEAT_NAMESPACE}/{BACKUP_METRIC})",
        on_calendar(job.interval_hours),
        BACKUP_DELAY,
    )


def drill_service_unit(job: OpsBackupJob) -> str:
    return oneshot_service(
        OneshotUnit(
            "forgestack restore drill: the latest backup restored into a scratch PostgreSQL and directory, and checked",
            job.drill_argv, job.region, MOUNT_POINT, DRILL_TIMEOUT_HOURS, idle=True, after=f"{UNIT_NAME}.service",
            success_argv=job.success_argv(RESTORE_DRILL_METRIC), state_directory=DRILL_UNIT,
        )
    )  # fmt: skip


def drill_timer_unit() -> str:
    return calendar_timer(
        f"forgestack restore drill twice a week (CloudWatch {HEARTBEAT_NAMESPACE}/{RESTORE_DRILL_METRIC})", DRILL_CALENDAR, DRILL_DELAY
    )


def tools_files() -> tuple[HostFile, ...]:
    return tuple(HostFile(f"/{name}", (REPO_HOST_TOOLS / name).read_text(), 0o755) for name in TOOLS)  # relative to TOOLS_DIR


def tools_script(
    job: OpsBackupJob, monitoring: OpsMonitoring, tools_dir: str = TOOLS_DIR, units_dir: str = UNITS_DIR
) -> list[str]:
    """Shell lines that install the tools into tools_dir and the monitoring configuration into monitoring.directory
    (install_lines), then the backup's and the monitoring's units; start the timers and (re)start the monitoring."""
    units = {
        f"{UNIT_NAME}.service": backup_service_unit(job),
        f"{UNIT_NAME}.timer": backup_timer_unit(job),
        f"{DRILL_UNIT}.service": drill_service_unit(job),
        f"{DRILL_UNIT}.timer": drill_timer_unit(),
        **ops_monitoring_units(monitoring),
    }
    return [
        "set -eu",
        *install_lines(tools_files(), tools_dir),
        *install_lines(monitoring_files(monitoring), monitoring.directory),
        *(f"printf '%s' {shlex.quote(text)} > {units_dir}/{unit}" for unit, text in units.items()),
        "systemctl daemon-reload",
        f"systemctl enable --now {UNIT_NAME}.timer {DRILL_UNIT}.timer",
        # restart, not start: a new document version brings new configuration
        f"systemctl enable {' '.join(MONITORING_UNITS)} && systemctl restart {' '.join(MONITORING_UNITS)}",
        f"echo 'forgestack ops tools and monitoring installed, backup every {job.interval_hours} h'",
    ]


def tools_document(job: OpsBackupJob, monitoring: OpsMonitoring) -> str:
    """The SSM Command document the ops host runs (through an association) to install the tools, the backup job and
    the monitoring."""
    return json.dumps(
        {
            "schemaVersion": "2.2",
            "description": "Install forgestack's admin tools (backup, restore, drill, move_objects), their timers and Prometheus "
            "and Grafana on the ops host",
            "mainSteps": [
                {"action": "aws:runShellScript", "name": "installTools", "inputs": {"runCommand": tools_script(job, monitoring)}}
            ],
        }
    )


def render_user_data(file_system_id: str, postgres_image: str, ssh_public_key: str = "") -> str:
    """cloud-init user data: packages, the EFS root mounted, the tools' virtualenv, the PostgreSQL image; no secret."""
    return templates.render(
        "ops-cloud-init.yaml.j2",
        packages=PACKAGES,
        ssh_public_key=ssh_public_key,
        requirements_path=REQUIREMENTS_PATH,
        requirements=templates.read(REQUIREMENTS_FILE),
        file_system_id=file_system_id,
        mount_point=MOUNT_POINT,
        host_user=OPS_USER,
        venv=VENV,
        postgres_image=postgres_image,
    )


def ops_policy(
    backup_bucket_arn: str, backup_key_arn: str, credentials_secret_arn: str, credentials_key_arn: str, file_system_arn: str
) -> str:
    """Least privilege for the admin tools and the backup job: the SSM agent's needs, read every backup and write new ones
    under the backup prefix (never erase or shorten one), read the credentials, the file system's root (also granted by
    the file system's own policy), and the backup's success metric. Gitea's objects bucket is a policy of its own (the
    tasks' statements), so no statement here can touch the backups with an object-store right."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                *SSM_AGENT_STATEMENTS,
                *backup_writer_statements(backup_bucket_arn, backup_key_arn, BACKUP_PREFIX),
                {
                    "Sid": "BackupMetric",
                    "Effect": "Allow",
                    "Action": "cloudwatch:PutMetricData",
                    "Resource": "*",  # PutMetricData takes no resource; the condition keeps it to one namespace
                    "Condition": {"StringEquals": {"cloudwatch:namespace": HEARTBEAT_NAMESPACE}},
                },
                {
                    "Sid": "ReadCredentials",
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": credentials_secret_arn,
                },
                {"Sid": "DecryptCredentials", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": credentials_key_arn},
                {"Sid": "GrafanaReadsCloudWatch", "Effect": "Allow", "Action": list(GRAFANA_CLOUDWATCH_ACTIONS), "Resource": "*"},
                {
                    "Sid": "MountTheFileSystemRoot",
                    "Effect": "Allow",
                    "Action": [*CLIENT_ACTIONS, ADMIN_ACTION, "elasticfilesystem:DescribeMountTargets"],
                    "Resource": file_system_arn,
                },
            ],
        }
    )


class OpsHost(pulumi.ComponentResource):
    instance: aws.ec2.Instance
    role: aws.iam.Role

    def __init__(self, name: str, args: OpsHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:OpsHost", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # The tools arrive through SSM: the association runs the document on the instance once its agent is online, and
        # again whenever the document changes (a new version of the tools).
        def document(bucket: str, database_address: str, secret_arn: str, *dimensions: dict[str, str]) -> str:
            job = OpsBackupJob(
                stack=args.stack,
                region=args.region,
                bucket=bucket,
                database_address=database_address,
                credentials_secret_arn=secret_arn,
                postgres_image=args.postgres_image,
                interval_hours=args.backup_interval_hours,
            )
            monitoring = OpsMonitoring(
                stack=args.stack,
                region=args.region,
                domain=args.domain,
                gitea_discovery_name=args.gitea_discovery_name,
                credentials_secret_arn=secret_arn,
                panels=grafana_panels(args.region, args.metric_alarms, dimensions),
                directory=MONITORING_DIR,
                credential_tool=CREDENTIAL_TOOL,
            )
            return tools_document(job, monitoring)

        content = pulumi.Output.all(
            args.backup_bucket_name,
            args.database_address,
            args.credentials_secret_arn,
            *(pulumi.Output.from_input(spec.dimensions) for spec in args.metric_alarms),
        ).apply(lambda values: document(*values))
        self.tools = aws.ssm.Document(f"{name}-tools", document_type="Command", document_format="JSON", content=content, opts=child)
        self.instance, self.role = private_instance(
            self,
            name,
            PrivateInstanceArgs(
                stack=args.stack,
                purpose="ops",
                instance_type=args.instance_type,
                architecture=args.architecture,
                subnet_id=args.subnet_id,
                security_group_id=args.security_group_id,
                volume_gb=args.volume_gb,
                user_data_base64=pulumi.Output.from_input(args.file_system_id).apply(
                    lambda file_system_id: encode_user_data(render_user_data(file_system_id, args.postgres_image, args.ssh_public_key))
                ),
                policies=(
                    (
                        "policy",
                        pulumi.Output.all(
                            args.backup_bucket_arn, args.backup_key_arn, args.credentials_secret_arn, args.credentials_key_arn,
                            args.file_system_arn,
                        ).apply(lambda values: ops_policy(*values)),
                    ),
                    # Gitea's objects as the tasks may use them: move_objects.py uploads and verifies there.
                    ("objects-policy", args.objects_policy),
                    # The agent runs the tools document's association.
                    ("associations-policy", self.tools.arn.apply(
                        lambda arn: json.dumps({"Version": "2012-10-17", "Statement": ssm_association_statements(arn)}))),
                ),
                protect=args.protect,
                depends_on=args.mount_targets,  # the first boot mounts the file system
            ),
        )  # fmt: skip
        aws.ssm.Association(
            f"{name}-tools-install",
            name=self.tools.name,
            document_version=self.tools.latest_version,
            targets=[aws.ssm.AssociationTargetArgs(key="InstanceIds", values=[self.instance.id])],
            opts=child,
        )
        self.register_outputs({"instanceId": self.instance.id, "roleArn": self.role.arn, "toolsDocument": self.tools.name})
