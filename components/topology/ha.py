"""topology ha: Gitea on ECS Fargate in two or three zones behind an ALB (web, WAF) and an NLB (git SSH), on RDS
PostgreSQL Multi-AZ, ElastiCache Valkey with failover, EFS for the repositories and S3 for Gitea's objects.

An ops host in a private subnet carries the admin tools (restore, the migration from a single host) and runs the
backups and restore drills; with ci actions a runner host of its own runs the CI jobs. What ha does not run yet: the
monitoring stack; alerts come from CloudWatch alarms on every managed piece and from Route 53's outside-in health
check."""

from __future__ import annotations

import pulumi

from components import cache, database
from components.alarms import backup_alarm, dashboard_url, managed_service_alarms, restore_drill_alarm
from components.cache import Cache, CacheArgs
from components.cluster import GITEA_CONTAINER, Cluster, ClusterArgs, gitea_discovery_name
from components.database import Database, DatabaseArgs
from components.edge import OBJECTS_LOG_PREFIX, Edge, EdgeArgs
from components.filesystem import FileSystem, FileSystemArgs
from components.host import ssm_session_command
from components.object_storage import ObjectStorage, ObjectStorageArgs
from components.ops_host import OpsHost, OpsHostArgs
from components.ops_monitoring import port_forward_command
from components.runner_host import RunnerHost, RunnerHostArgs, RunnerToken
from components.services import gitea, images
from components.settings import Settings, instance_architecture, instance_memory_gib
from components.topology.shared import aws_base, export_forge, export_shared, stack_alarms, stack_backups, stack_credentials
from components.zonal_network import ZonalNetwork, ZonalNetworkArgs, tier_rules


def compose(settings: Settings) -> None:
    base = aws_base(settings)
    credentials = stack_credentials(settings, base)
    assert credentials.secret is not None and credentials.key is not None  # AWS stacks keep them in Secrets Manager
    backups = stack_backups(settings, base)  # restores from a single host's backups, and the ops host's later
    network = ZonalNetwork(
        "network",
        ZonalNetworkArgs(
            settings.vpc_cidr,
            settings.region,
            tier_rules(settings.git_ssh_port, gitea.HTTP_PORT, gitea.CONTAINER_SSH_PORT),
            zones=settings.ha_zones,
            nat_gateways=settings.ha_nat_gateways,
            flow_log_retention_days=settings.flow_log_retention_days,
            protect=settings.protect,
        ),
        base.opts,
    )
    tiers = network.tier_groups
    postgres_major = int(settings.postgres_version.split(".")[0])
    db = Database(
        "database",
        DatabaseArgs(
            settings.stack,
            postgres_major,
            settings.ha_database_class,
            settings.ha_database_storage_gb,
            network.private_subnet_ids,
            tiers["database"].id,
            settings.backup_retention_days,
            settings.protect,
        ),
        base.opts,
    )
    valkey = Cache(
        "cache",
        CacheArgs(
            settings.stack,
            settings.ha_cache_node_type,
            settings.ha_zones,
            network.private_subnet_ids,
            tiers["cache"].id,
            credentials.values["valkeyPassword"],
            settings.protect,
        ),
        base.opts,
    )
    repositories = FileSystem(
        "filesystem",
        FileSystemArgs(settings.stack, gitea.GIT_UID, network.private_subnet_ids, tiers["file-system"].id, settings.protect),
        base.opts,
    )
    objects = ObjectStorage("objects", ObjectStorageArgs(settings.stack, settings.protect, settings.backup_replica_region), base.opts)
    edge = Edge(
        "edge",
        EdgeArgs(
            stack=settings.stack,
            region=settings.region,
            zone_id=base.zone_id,
            web_hostname=settings.hostname(gitea.SUBDOMAIN),
            ssh_hostname=gitea.ssh_hostname(settings),
            acme_email=settings.acme_email,
            vpc_id=network.vpc.id,
            public_subnet_ids=network.public_subnet_ids,
            web_security_group_id=tiers["web-lb"].id,
            ssh_security_group_id=tiers["ssh-lb"].id,
            web_port=gitea.HTTP_PORT,
            ssh_port=gitea.CONTAINER_SSH_PORT,
            public_ssh_port=settings.git_ssh_port,
            health_path=gitea.HEALTH_PATH,
            objects_bucket_arn=objects.bucket.arn,
            log_retention_days=settings.flow_log_retention_days,
            protect=settings.protect,
        ),
        base.opts,
    )
    objects.log_access_to("objects", edge.logs.id, OBJECTS_LOG_PREFIX, edge.log_controls)

    # Gitea's configuration is the single host's, with the managed endpoints: one function, so the two cannot drift.
    endpoints = pulumi.Output.all(db.instance.address, valkey.group.primary_endpoint_address, objects.bucket.bucket).apply(
        lambda values: gitea.ha_endpoints(
            f"{values[0]}:{database.PORT}", f"{values[1]}:{cache.PORT}", values[2], settings.region, settings.vpc_cidr
        )
    )
    env = endpoints.apply(lambda values: gitea.gitea_env(settings, values))
    secret_files = endpoints.apply(lambda values: gitea.gitea_secret_files(settings, values))  # with the cache's address
    # ci actions: one registration token, generated here, read by Gitea as its global token and by the runner host.
    runner_token = RunnerToken("runner-token", settings.stack, settings.protect, base.opts) if settings.ci == "actions" else None
    service = Cluster(
        "cluster",
        ClusterArgs(
            stack=settings.stack,
            region=settings.region,
            gitea_image=images.locked(images.gitea(settings.gitea_version)),
            postgres_image=images.locked(images.postgres(settings.postgres_version)),
            gitea_env=env,
            secret_files=secret_files,
            credentials_secret_arn=credentials.secret.arn,
            credentials_key_arn=credentials.key.arn,
            database_address=db.instance.address,
            database_master_user=database.MASTER_USER,
            database_master_secret_arn=db.master_secret_arn,
            database_key_arn=db.key.arn,
            file_system_id=repositories.file_system.id,
            file_system_arn=repositories.file_system.arn,
            access_point_id=repositories.access_point.id,
            access_point_arn=repositories.access_point.arn,
            objects_policy=objects.access_policy,
            vpc_id=network.vpc.id,
            subnet_ids=network.private_subnet_ids,
            security_group_id=tiers["tasks"].id,
            web_target_group_arn=edge.web_targets.arn,
            ssh_target_group_arn=edge.ssh_targets.arn,
            tasks=settings.ha_gitea_tasks,
            cpu=settings.task_cpu,
            memory_mib=settings.task_memory_mib,
            log_retention_days=settings.flow_log_retention_days,  # a CloudWatch retention period the stack already chose
            admin_user=settings.gitea_admin_user,
            admin_email=settings.acme_email,
            runner_token_secret_arn=runner_token.secret.arn if runner_token else None,
            runner_token_key_arn=runner_token.key.arn if runner_token else None,
            protect=settings.protect,
        ),
        base.opts,
    )
    # What pages an operator; the ops host's Grafana draws the same specs.
    metric_alarms = (
        *managed_service_alarms(
            settings.stack,
            edge.web.arn_suffix,
            edge.web_targets.arn_suffix,
            db.instance.identifier,
            valkey.group.id,
            repositories.file_system.id,
            service.cluster.name,
            service.service.name,
            settings.ha_gitea_tasks,
            settings.ha_database_storage_gb,
        ),
        backup_alarm(settings.stack, settings.backup_interval_hours),
        restore_drill_alarm(settings.stack),
    )
    ops = OpsHost(
        "ops",
        OpsHostArgs(
            stack=settings.stack,
            region=settings.region,
            instance_type=settings.ha_ops_instance_type,
            volume_gb=settings.ha_ops_volume_gb,
            architecture=instance_architecture(settings.ha_ops_instance_type),
            subnet_id=network.private_subnet_ids[0],
            security_group_id=tiers["ops"].id,
            file_system_id=repositories.file_system.id,
            file_system_arn=repositories.file_system.arn,
            backup_bucket_arn=backups.bucket.arn,
            backup_bucket_name=backups.bucket.bucket,
            backup_key_arn=backups.key.arn,
            backup_interval_hours=settings.backup_interval_hours,
            database_address=db.instance.address,
            credentials_secret_arn=credentials.secret.arn,
            credentials_key_arn=credentials.key.arn,
            objects_policy=objects.access_policy,
            postgres_image=images.locked(images.postgres(settings.postgres_version)),
            domain=settings.domain,
            gitea_discovery_name=gitea_discovery_name(settings.stack),
            metric_alarms=metric_alarms,
            ssh_public_key=settings.ssh_public_key,
            protect=settings.protect,
            mount_targets=repositories.mount_targets,
        ),
        base.opts,
    )
    repositories.allow_clients("filesystem", service.task_role.arn, ops.role.arn)
    runner = (
        RunnerHost(
            "runner",
            RunnerHostArgs(
                stack=settings.stack,
                region=settings.region,
                instance_type=settings.ha_runner_instance_type,
                instance_memory_mib=int(instance_memory_gib(settings.ha_runner_instance_type) * 1024),
                architecture=instance_architecture(settings.ha_runner_instance_type),
                subnet_id=network.private_subnet_ids[-1],  # the other zone than the ops host's
                security_group_id=tiers["runner"].id,
                token_secret_arn=runner_token.secret.arn,
                token_key_arn=runner_token.key.arn,
                instance_url=f"{gitea.public_url(settings)}/",
                ssh_public_key=settings.ssh_public_key,
                protect=settings.protect,
            ),
            base.opts,
        )
        if runner_token
        else None
    )

    alarms = stack_alarms(settings, base, None, metric_alarms)

    pulumi.export("topology", "ha")
    export_forge(settings, [settings.hostname(gitea.SUBDOMAIN), gitea.ssh_hostname(settings)])
    pulumi.export("vpcId", network.vpc.id)
    pulumi.export("databaseEndpoint", db.instance.address)
    pulumi.export("databaseMasterSecretArn", db.master_secret_arn)
    pulumi.export("cacheEndpoint", valkey.group.primary_endpoint_address)
    pulumi.export("fileSystemId", repositories.file_system.id)
    pulumi.export("objectsBucketName", objects.bucket.bucket)
    pulumi.export("clusterName", service.cluster.name)
    pulumi.export("serviceName", service.service.name)
    pulumi.export("loadBalancerDnsName", edge.web.dns_name)
    export_shared(settings, credentials, backups, alarms)
    pulumi.export("dashboardUrl", dashboard_url(settings.region, settings.stack))
    pulumi.export("opsInstanceId", ops.instance.id)
    pulumi.export("grafanaPortForward", ops.instance.id.apply(lambda instance_id: port_forward_command(settings.region, instance_id)))
    if runner:
        pulumi.export("runnerInstanceId", runner.instance.id)
    pulumi.export("opsSessionCommand", ops.instance.id.apply(lambda i: ssm_session_command(settings.region, i)))
    pulumi.export(
        "ecsExecCommand",
        service.cluster.name.apply(
            lambda cluster_name: (
                f"aws ecs execute-command --region {settings.region} --cluster {cluster_name} --container {GITEA_CONTAINER} "
                f"--interactive --command /bin/sh --task <task id from: aws ecs list-tasks --cluster {cluster_name}>"
            )
        ),
    )
