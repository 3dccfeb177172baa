"""Database (topology ha): Amazon RDS for PostgreSQL, Multi-AZ, encrypted with the stack's key, TLS only.

The master password is created and kept by RDS in Secrets Manager (never in the program or the state); Gitea logs in
as its own role, which the Gitea task's first container creates from that secret (components/cluster.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_aws as aws

from components.kms import rotating_key
from components.network import service_assume_role_policy
from components.services import postgres

PORT: Final = 5432
MASTER_USER: Final = "forgestack_admin"
MAX_BACKUP_RETENTION_DAYS: Final = 35  # RDS's limit for automated backups
BACKUP_WINDOW: Final = "02:00-03:00"  # UTC, before the maintenance window
MAINTENANCE_WINDOW: Final = "sun:03:30-sun:04:30"
ENHANCED_MONITORING_SECONDS: Final = 60
ENHANCED_MONITORING_POLICY: Final = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
STORAGE_GROWTH: Final = 4  # storage autoscaling up to this multiple of the allocated size


@dataclass(frozen=True)
class DatabaseArgs:
    stack: str
    postgres_major: int
    instance_class: str
    storage_gb: int
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    backup_retention_days: int
    protect: bool = False


# Server parameters: TLS required for every connection (static: applied at the next reboot); slow statements, schema
# changes (DDL: who altered what, never the data) and connections logged.
PARAMETERS: Final = {
    "rds.force_ssl": "1",
    "log_min_duration_statement": "1000",
    "log_statement": "ddl",
    "log_connections": "1",
    "log_disconnections": "1",
}
STATIC_PARAMETERS: Final = ("rds.force_ssl",)


def backup_retention(days: int) -> int:
    return max(1, min(days, MAX_BACKUP_RETENTION_DAYS))


class Database(pulumi.ComponentResource):
    instance: aws.rds.Instance
    key: aws.kms.Key

    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:Database", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.key = rotating_key(f"{name}-key", f"forgestack {args.stack} database", self, args.protect)
        subnets = aws.rds.SubnetGroup(
            f"{name}-subnets", subnet_ids=args.subnet_ids, description="forgestack database: private subnets", opts=child
        )
        family = f"postgres{args.postgres_major}"
        parameter_group = aws.rds.ParameterGroup(
            f"{name}-parameters",
            family=family,
            description=f"forgestack {family}: TLS only, slow statements logged",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(
                    name=key, value=value, apply_method="pending-reboot" if key in STATIC_PARAMETERS else "immediate"
                )
                for key, value in PARAMETERS.items()
            ],
            opts=child,
        )
        monitoring_role = aws.iam.Role(
            f"{name}-monitoring-role", assume_role_policy=service_assume_role_policy("monitoring.rds.amazonaws.com"), opts=child
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-monitoring-policy", role=monitoring_role.name, policy_arn=ENHANCED_MONITORING_POLICY, opts=child
        )
        self.instance = aws.rds.Instance(
            f"{name}-postgres",
            engine="postgres",
            engine_version=str(args.postgres_major),
            auto_minor_version_upgrade=True,  # the major is pinned
            instance_class=args.instance_class,
            multi_az=True,
            allocated_storage=args.storage_gb,
            max_allocated_storage=args.storage_gb * STORAGE_GROWTH,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=self.key.arn,
            db_name=postgres.DATABASE,
            username=MASTER_USER,
            manage_master_user_password=True,
            master_user_secret_kms_key_id=self.key.arn,
            port=PORT,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[args.security_group_id],
            publicly_accessible=False,
            parameter_group_name=parameter_group.name,
            iam_database_authentication_enabled=True,
            backup_retention_period=backup_retention(args.backup_retention_days),
            backup_window=BACKUP_WINDOW,
            maintenance_window=MAINTENANCE_WINDOW,
            copy_tags_to_snapshot=True,
            delete_automated_backups=not args.protect,
            deletion_protection=args.protect,
            skip_final_snapshot=not args.protect,
            final_snapshot_identifier=f"forgestack-{args.stack}-final" if args.protect else None,
            performance_insights_enabled=True,
            performance_insights_kms_key_id=self.key.arn,
            performance_insights_retention_period=7,
            monitoring_interval=ENHANCED_MONITORING_SECONDS,
            monitoring_role_arn=monitoring_role.arn,
            enabled_cloudwatch_logs_exports=["postgresql", "upgrade"],
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        # The secret RDS keeps the master password in ({"username", "password"}).
        self.master_secret_arn: pulumi.Output[str] = self.instance.master_user_secrets.apply(
            lambda secrets: (secrets[0].secret_arn or "") if secrets else ""
        )
        self.register_outputs({"endpoint": self.instance.address, "masterSecretArn": self.master_secret_arn})
