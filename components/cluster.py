"""Cluster (topology ha): Gitea as an ECS service on Fargate, its tasks spread across the private subnets.

Each task starts three containers in order: `secrets` writes every credential Gitea reads into files on a
task-private volume (Gitea reads `__FILE`s, as on the single host) and exits; `database-role` creates or updates
Gitea's own PostgreSQL role with the RDS master secret and exits; then `gitea` runs with /data on EFS. Secrets come
from Secrets Manager, resolved by ECS at task start: they are in no task definition, image or log."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_aws as aws

from components.constants import SECRETS_DIR
from components.filesystem import CLIENT_ACTIONS
from components.kms import rotating_key
from components.network import service_assume_role_policy
from components.services import ci, gitea, postgres
from components.services.spec import SecretFile
from components.templates import read

GITEA_CONTAINER: Final = "gitea"
SECRETS_CONTAINER: Final = "secrets"
DATABASE_ROLE_CONTAINER: Final = "database-role"
ADMIN_CONTAINER: Final = "admin"
ADMIN_SCRIPT_NAME: Final = "forgestack-bootstrap-admin"  # $0 of the script, in its messages
GIT_HOME: Final = "/data/git"  # the image's git user's home
RUNNER_TOKEN_SECRET_FILE: Final = SecretFile(ci.RUNNER_TOKEN, ci.RUNNER_TOKEN_FILE, gitea.GIT_UID)
GITEA_RUNNER_TOKEN_ENV: Final = {"GITEA_RUNNER_REGISTRATION_TOKEN_FILE": ci.RUNNER_TOKEN_FILE}  # read by Gitea at start (1.23+)
SECRETS_VOLUME: Final = "secrets"
DATA_VOLUME: Final = "gitea-data"
PLATFORM_VERSION: Final = "1.4.0"  # the first Fargate platform with EFS volumes; pinned, not LATEST
CPU_ARCHITECTURE: Final = "ARM64"  # Graviton: cheaper per vCPU; every pinned image here is multi-arch
DISCOVERY_TTL_SECONDS: Final = 10  # a stopped task's address leaves the answers within seconds
HEALTH_CHECK_GRACE_SECONDS: Final = 180  # first start migrates the database and generates SSH host keys
EXECUTION_ROLE_POLICY: Final = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
# ECS Exec: the SSM agent in the task opens its channels; these actions have no resource-level permissions.
EXEC_ACTIONS: Final = (
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
)
LOG_PREFIXES: Final = {
    GITEA_CONTAINER: "gitea", SECRETS_CONTAINER: "secrets", DATABASE_ROLE_CONTAINER: "database-role", ADMIN_CONTAINER: "admin",
}  # fmt: skip

# Gitea's role: created once, its password set from the stack's credential at every task start (a changed credential
# takes effect with the next deploy), allowed to create its tables in the public schema (closed to others since
# PostgreSQL 15). RDS's master user owns the database, so it may grant that without being a superuser.
# Docker's default capability set, what a Fargate container starts with.
DOCKER_DEFAULT_CAPABILITIES: Final = (
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "NET_RAW", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
)  # fmt: skip
SECRETS_CAPABILITIES: Final = ("CHOWN",)  # root hands each file to the uid that reads it
DATABASE_ROLE_SQL: Final = f"""\\set ON_ERROR_STOP on
\\getenv role_password GITEA_DATABASE_PASSWORD
SELECT 'CREATE ROLE {postgres.USER} LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{postgres.USER}')\\gexec
ALTER ROLE {postgres.USER} WITH LOGIN PASSWORD :'role_password';
GRANT CONNECT, TEMPORARY ON DATABASE {postgres.DATABASE} TO {postgres.USER};
GRANT USAGE, CREATE ON SCHEMA public TO {postgres.USER};
"""  # noqa: S608 (constant names only, no input)


@dataclass(frozen=True)
class ClusterArgs:
    stack: str
    region: str
    gitea_image: str
    postgres_image: str
    gitea_env: pulumi.Input[dict[str, str]]
    secret_files: pulumi.Input[tuple[SecretFile, ...]]
    credentials_secret_arn: pulumi.Input[str]
    credentials_key_arn: pulumi.Input[str]
    database_address: pulumi.Input[str]
    database_master_user: str
    database_master_secret_arn: pulumi.Input[str]
    database_key_arn: pulumi.Input[str]
    file_system_id: pulumi.Input[str]
    file_system_arn: pulumi.Input[str]
    access_point_id: pulumi.Input[str]
    access_point_arn: pulumi.Input[str]
    objects_policy: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    web_target_group_arn: pulumi.Input[str]
    ssh_target_group_arn: pulumi.Input[str]
    tasks: int
    cpu: int
    memory_mib: int
    log_retention_days: int
    admin_user: str  # Gitea's admin account, created once (the single host's deploy does the same)
    admin_email: str
    protect: bool = False
    # ci actions: the runner registration token's own secret (whole string) and key; Gitea reads it as its global token.
    runner_token_secret_arn: pulumi.Input[str] | None = None
    runner_token_key_arn: pulumi.Input[str] | None = None


def discovery_domain(stack: str) -> str:
    """The private DNS namespace (Cloud Map) the stack's tasks register in; resolvable inside the VPC only."""
    return f"{stack}.forgestack.internal"


def gitea_discovery_name(stack: str) -> str:
    """One A record per running Gitea task: what the ops host's Prometheus resolves to scrape every task."""
    return f"{GITEA_CONTAINER}.{discovery_domain(stack)}"


def secret_variable(secret_file: SecretFile) -> str:
    """The environment variable the `secrets` container receives one credential in."""
    return "SECRET_" + "".join(char if char.isalnum() else "_" for char in secret_file.path.removeprefix(SECRETS_DIR + "/")).upper()


def dropped_capabilities(needed: Sequence[str]) -> list[str]:
    """Fargate starts a container with Docker's default capabilities and can add back none but SYS_PTRACE: so a container
    drops every default one it does not need."""
    return sorted(set(DOCKER_DEFAULT_CAPABILITIES) - set(needed))


def secrets_script(secret_files: tuple[SecretFile, ...]) -> str:
    """Shell that writes each credential into its file (owner-only, owned by the uid that reads it); the file's text
    around the secret (a connection string) is not secret and is written as given."""
    lines = ["set -eu", "umask 077"]
    for secret_file in secret_files:
        prefix, _, suffix = secret_file.template.partition("{value}")
        path = shlex.quote(secret_file.path)
        lines.append(f"printf '%s%s%s' {shlex.quote(prefix)} \"${secret_variable(secret_file)}\" {shlex.quote(suffix)} > {path}")
        lines.append(f"chmod 0400 {path}")  # before chown: root keeps only CHOWN, so it may change the mode of its own files only
        lines.append(f"chown {secret_file.owner}:{secret_file.owner} {path}")
    return "\n".join(lines) + "\n"


def database_role_script() -> str:
    """Shell for the `database-role` container: the SQL on psql's standard input (no password in any argument)."""
    return f"psql <<'SQL'\n{DATABASE_ROLE_SQL}SQL\n"


def secret_reference(secret_arn: str, json_key: str) -> str:
    """ECS `valueFrom` for one JSON key of a Secrets Manager secret (current version)."""
    return f"{secret_arn}:{json_key}::"


def container_definitions(args: ClusterArgs, values: dict[str, Any]) -> str:
    """The task's three containers as ECS JSON; `values` holds the resolved outputs (ARNs, addresses, env)."""

    def logs(container: str) -> dict[str, Any]:
        return {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": values["log_group"],
                "awslogs-region": args.region,
                "awslogs-stream-prefix": LOG_PREFIXES[container],
            },
        }

    secret_files: tuple[SecretFile, ...] = values["secret_files"]
    unique = {secret_variable(secret_file): secret_file.credential for secret_file in secret_files}
    references = [
        {"name": variable, "valueFrom": secret_reference(values["credentials_arn"], credential)} for variable, credential in unique.items()
    ]
    env = dict(values["env"])
    if values["runner_token_arn"]:
        # The runner's registration token, from its own secret (the whole string), where Gitea reads its global token.
        secret_files = (*secret_files, RUNNER_TOKEN_SECRET_FILE)
        references.append({"name": secret_variable(RUNNER_TOKEN_SECRET_FILE), "valueFrom": values["runner_token_arn"]})
        env.update(GITEA_RUNNER_TOKEN_ENV)
    secrets_container = {
        "name": SECRETS_CONTAINER,
        "image": args.gitea_image,
        "essential": False,
        "user": "0",
        "entryPoint": ["/bin/sh", "-c"],
        "command": [secrets_script(secret_files)],
        "secrets": references,
        "mountPoints": [{"sourceVolume": SECRETS_VOLUME, "containerPath": SECRETS_DIR, "readOnly": False}],
        "readonlyRootFilesystem": True,  # it writes only into the task-private volume
        "linuxParameters": {"capabilities": {"drop": dropped_capabilities(SECRETS_CAPABILITIES)}},
        "logConfiguration": logs(SECRETS_CONTAINER),
    }
    role_container = {
        "name": DATABASE_ROLE_CONTAINER,
        "image": args.postgres_image,
        "essential": False,
        "entryPoint": ["/bin/sh", "-c"],
        "command": [database_role_script()],
        "environment": [
            {"name": "PGHOST", "value": values["database_address"]},
            {"name": "PGPORT", "value": str(postgres.PORT)},
            {"name": "PGDATABASE", "value": postgres.DATABASE},
            {"name": "PGUSER", "value": args.database_master_user},
            {"name": "PGSSLMODE", "value": "require"},
            {"name": "PGCONNECT_TIMEOUT", "value": "10"},
        ],
        "secrets": [
            {"name": "PGPASSWORD", "valueFrom": secret_reference(values["master_secret_arn"], "password")},
            {"name": "GITEA_DATABASE_PASSWORD", "valueFrom": secret_reference(values["credentials_arn"], "postgresPassword")},
        ],
        "readonlyRootFilesystem": True,  # psql reads the SQL from a pipe and writes nothing
        "linuxParameters": {"capabilities": {"drop": ["ALL"]}},
        "logConfiguration": logs(DATABASE_ROLE_CONTAINER),
    }
    gitea_container = {
        "name": GITEA_CONTAINER,
        "image": args.gitea_image,
        "essential": True,
        "portMappings": [
            {"containerPort": gitea.HTTP_PORT, "protocol": "tcp"},
            {"containerPort": gitea.CONTAINER_SSH_PORT, "protocol": "tcp"},
        ],
        "environment": [{"name": name, "value": value} for name, value in sorted(env.items())],
        "mountPoints": [
            {"sourceVolume": DATA_VOLUME, "containerPath": "/data", "readOnly": False},
            {"sourceVolume": SECRETS_VOLUME, "containerPath": SECRETS_DIR, "readOnly": True},
        ],
        "dependsOn": [
            {"containerName": SECRETS_CONTAINER, "condition": "SUCCESS"},
            {"containerName": DATABASE_ROLE_CONTAINER, "condition": "SUCCESS"},
        ],
        "healthCheck": {
            "command": ["CMD", "curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{gitea.HTTP_PORT}{gitea.HEALTH_PATH}"],
            "interval": 30,
            "timeout": 5,
            "retries": 3,
            "startPeriod": 120,
        },
        "linuxParameters": {"initProcessEnabled": True},  # ECS Exec needs an init process
        "ulimits": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
        "stopTimeout": 30,
        "logConfiguration": logs(GITEA_CONTAINER),
    }
    # Once Gitea answers, the admin account the single host's deploy creates: the same script, idempotent, and safe
    # when every task runs it at once (it checks again after a failed create).
    admin_container = {
        "name": ADMIN_CONTAINER,
        "image": args.gitea_image,
        "essential": False,
        "user": str(gitea.GIT_UID),
        "entryPoint": ["/bin/sh", "-c"],
        "command": [read("gitea-bootstrap-admin.sh"), ADMIN_SCRIPT_NAME, args.admin_user, args.admin_email],
        "environment": [{"name": "HOME", "value": GIT_HOME}, {"name": "USER", "value": "git"}],
        "mountPoints": [
            {"sourceVolume": DATA_VOLUME, "containerPath": "/data", "readOnly": False},
            {"sourceVolume": SECRETS_VOLUME, "containerPath": SECRETS_DIR, "readOnly": True},
        ],
        "dependsOn": [{"containerName": GITEA_CONTAINER, "condition": "HEALTHY"}],
        "linuxParameters": {"capabilities": {"drop": ["ALL"]}},  # the git user needs none
        "logConfiguration": logs(ADMIN_CONTAINER),
    }
    return json.dumps([secrets_container, role_container, gitea_container, admin_container])


def execution_policy(
    credentials_arn: str,
    credentials_key_arn: str,
    master_secret_arn: str,
    database_key_arn: str,
    runner_arn: str = "",
    runner_key_arn: str = "",
) -> str:
    """ECS reads exactly the secrets the containers get (the runner token's too, with ci actions), and decrypts them."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ReadTheTasksSecrets",
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": [credentials_arn, master_secret_arn, *([runner_arn] if runner_arn else [])],
                },
                {
                    "Sid": "DecryptThem",
                    "Effect": "Allow",
                    "Action": "kms:Decrypt",
                    "Resource": [credentials_key_arn, database_key_arn, *([runner_key_arn] if runner_key_arn else [])],
                },
            ],
        }
    )


def task_policy(file_system_arn: str, access_point_arn: str) -> str:
    """Gitea's own rights besides its objects: mount /data through the access point, and ECS Exec for admins."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "MountTheRepositories",
                    "Effect": "Allow",
                    "Action": list(CLIENT_ACTIONS),
                    "Resource": file_system_arn,
                    "Condition": {"StringEquals": {"elasticfilesystem:AccessPointArn": access_point_arn}},
                },
                {"Sid": "EcsExec", "Effect": "Allow", "Action": list(EXEC_ACTIONS), "Resource": "*"},
            ],
        }
    )


class Cluster(pulumi.ComponentResource):
    cluster: aws.ecs.Cluster
    task_definition: aws.ecs.TaskDefinition
    service: aws.ecs.Service
    task_role: aws.iam.Role

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("forgestack:aws:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cluster = aws.ecs.Cluster(
            f"{name}-ecs", settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enhanced")], opts=child
        )
        self.log_key = rotating_key(
            f"{name}-logs-key", f"forgestack {args.stack} Gitea task logs", self, args.protect, logs_region=args.region
        )
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs", retention_in_days=args.log_retention_days, kms_key_id=self.log_key.arn, opts=child
        )

        execution_role = aws.iam.Role(
            f"{name}-execution-role", assume_role_policy=service_assume_role_policy("ecs-tasks.amazonaws.com"), opts=child
        )
        aws.iam.RolePolicyAttachment(f"{name}-execution-managed", role=execution_role.name, policy_arn=EXECUTION_ROLE_POLICY, opts=child)
        aws.iam.RolePolicy(
            f"{name}-execution-secrets",
            role=execution_role.id,
            policy=pulumi.Output.all(
                args.credentials_secret_arn,
                args.credentials_key_arn,
                args.database_master_secret_arn,
                args.database_key_arn,
                args.runner_token_secret_arn or "",
                args.runner_token_key_arn or "",
            ).apply(lambda arns: execution_policy(*arns)),
            opts=child,
        )
        self.task_role = aws.iam.Role(
            f"{name}-task-role", assume_role_policy=service_assume_role_policy("ecs-tasks.amazonaws.com"), opts=child
        )
        aws.iam.RolePolicy(f"{name}-task-objects", role=self.task_role.id, policy=args.objects_policy, opts=child)
        aws.iam.RolePolicy(
            f"{name}-task-mount",
            role=self.task_role.id,
            policy=pulumi.Output.all(args.file_system_arn, args.access_point_arn).apply(lambda values: task_policy(*values)),
            opts=child,
        )

        definitions = pulumi.Output.all(
            log_group=self.log_group.name,
            credentials_arn=args.credentials_secret_arn,
            master_secret_arn=args.database_master_secret_arn,
            database_address=args.database_address,
            env=args.gitea_env,
            secret_files=args.secret_files,
            runner_token_arn=args.runner_token_secret_arn or "",
        ).apply(lambda values: container_definitions(args, values))
        self.task_definition = aws.ecs.TaskDefinition(
            f"{name}-gitea",
            family=f"forgestack-{args.stack}-gitea",
            requires_compatibilities=["FARGATE"],
            network_mode="awsvpc",
            cpu=str(args.cpu),
            memory=str(args.memory_mib),
            execution_role_arn=execution_role.arn,
            task_role_arn=self.task_role.arn,
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(operating_system_family="LINUX", cpu_architecture=CPU_ARCHITECTURE),
            container_definitions=definitions,
            volumes=[
                aws.ecs.TaskDefinitionVolumeArgs(name=SECRETS_VOLUME),  # task storage: gone with the task
                aws.ecs.TaskDefinitionVolumeArgs(
                    name=DATA_VOLUME,
                    efs_volume_configuration=aws.ecs.TaskDefinitionVolumeEfsVolumeConfigurationArgs(
                        file_system_id=args.file_system_id,
                        transit_encryption="ENABLED",
                        authorization_config=aws.ecs.TaskDefinitionVolumeEfsVolumeConfigurationAuthorizationConfigArgs(
                            access_point_id=args.access_point_id, iam="ENABLED"
                        ),
                    ),
                ),
            ],
            opts=child,
        )
        # Cloud Map: ECS registers each running task's address under gitea_discovery_name() and removes it when the task
        # stops (and while its health check fails), so a scraper finds every task without asking the ECS API.
        self.namespace = aws.servicediscovery.PrivateDnsNamespace(
            f"{name}-namespace", name=discovery_domain(args.stack), vpc=args.vpc_id, description="forgestack tasks", opts=child
        )
        self.discovery = aws.servicediscovery.Service(
            f"{name}-discovery",
            name=GITEA_CONTAINER,
            dns_config=aws.servicediscovery.ServiceDnsConfigArgs(
                namespace_id=self.namespace.id,
                dns_records=[aws.servicediscovery.ServiceDnsConfigDnsRecordArgs(ttl=DISCOVERY_TTL_SECONDS, type="A")],
                routing_policy="MULTIVALUE",
            ),
            health_check_custom_config=aws.servicediscovery.ServiceHealthCheckCustomConfigArgs(),  # ECS reports task health
            force_destroy=True,  # ECS's registrations go with the service; nothing else registers here
            opts=child,
        )
        self.service = aws.ecs.Service(
            f"{name}-service",
            cluster=self.cluster.arn,
            task_definition=self.task_definition.arn,
            desired_count=args.tasks,
            launch_type="FARGATE",
            platform_version=PLATFORM_VERSION,
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=args.subnet_ids, security_groups=[args.security_group_id], assign_public_ip=False
            ),
            load_balancers=[
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=args.web_target_group_arn, container_name=GITEA_CONTAINER, container_port=gitea.HTTP_PORT
                ),
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=args.ssh_target_group_arn, container_name=GITEA_CONTAINER, container_port=gitea.CONTAINER_SSH_PORT
                ),
            ],
            service_registries=aws.ecs.ServiceServiceRegistriesArgs(registry_arn=self.discovery.arn),
            # A deploy starts the new tasks before stopping old ones, and rolls back when they never become healthy.
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(enable=True, rollback=True),
            health_check_grace_period_seconds=HEALTH_CHECK_GRACE_SECONDS,
            enable_execute_command=True,
            availability_zone_rebalancing="ENABLED",
            propagate_tags="SERVICE",
            enable_ecs_managed_tags=True,
            opts=child,
        )
        self.register_outputs({"clusterName": self.cluster.name, "serviceName": self.service.name})
