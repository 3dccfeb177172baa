"""topology single: the whole forge on one EC2 host (or this machine's Docker engine on the local stack)."""

from __future__ import annotations

import shlex

import pulumi
import pulumi_command as command

from components.alarms import HEARTBEAT_METRIC, HEARTBEAT_NAMESPACE
from components.backup_job import backup_job, pre_upgrade_backup_argv
from components.constants import CONTAINER_PREFIX, PROJECT
from components.dns import Dns, DnsArgs
from components.host import Host, HostArgs, ssm_session_command
from components.host_files import Heartbeat, HostBundle, host_bundle
from components.network import Network, NetworkArgs, allow_own_address
from components.services import ci, gitea, monitoring, portainer, postgres, sso, workspace_images, workspaces
from components.services.catalog import portainer_signs_on, routed_hostnames, service_specs, sso_clients
from components.services.deploy import (
    DeployTimeCommand,
    HostConnection,
    Services,
    ServicesArgs,
    aws_connection,
    local_connection,
)
from components.settings import Settings, instance_architecture
from components.snapshots import Snapshots, SnapshotsArgs
from components.topology.shared import (
    aws_base,
    export_forge,
    export_shared,
    secret_values,
    stack_alarms,
    stack_backups,
    stack_credentials,
)
from components.workspace_registration import register_images
from components.workspaces_host import WorkspacesHost, WorkspacesHostArgs, ssm_port_forward


def compose(settings: Settings) -> None:
    specs = service_specs(settings)
    hostnames = routed_hostnames(settings, specs)
    base = aws_base(settings) if settings.is_aws else None
    credentials = stack_credentials(settings, base)

    connection: pulumi.Output[HostConnection]
    bundle: pulumi.Output[HostBundle] | None = None
    workspaces_resources: list[pulumi.Resource] = []
    if base is not None:
        aws_opts = base.opts
        network = Network(
            "network",
            NetworkArgs(
                settings.vpc_cidr,
                settings.region,
                admin_cidrs=settings.admin_cidrs,
                flow_log_retention_days=settings.flow_log_retention_days,
                protect=settings.protect,
                availability_zone=settings.availability_zone,
                git_ssh_port=settings.git_ssh_port,
                allowed_cidrs=settings.allowed_cidrs,
            ),
            aws_opts,
        )
        backups = stack_backups(settings, base)
        snapshot_tag = f"{PROJECT}-{settings.stack}"
        job = backups.bucket.bucket.apply(
            lambda bucket: backup_job(specs, bucket, settings.region, settings.backup_interval_hours, postgres.NAME, gitea.NAME)
        )
        heartbeat = Heartbeat(
            settings.stack,
            settings.region,
            HEARTBEAT_NAMESPACE,
            HEARTBEAT_METRIC,
            alertmanager_container=CONTAINER_PREFIX + monitoring.ALERTMANAGER if settings.monitoring else "",
            watchdog=monitoring.WATCHDOG,
        )
        # The backup job, the heartbeat and the host's other units, installed by the deploy.
        bundle = job.apply(lambda backup: host_bundle(backup, heartbeat, settings.host_sshd_loopback_only, settings.reboot_window))
        host = Host(
            "host",
            HostArgs(
                instance_type=settings.instance_type,
                architecture=settings.architecture,
                root_volume_gb=settings.root_volume_gb,
                data_volume_gb=settings.data_volume_gb,
                subnet_id=network.subnet.id,
                availability_zone=network.availability_zone,
                security_group_ids=network.security_group_ids,
                snapshot_tag=snapshot_tag,
                backup_bucket_arn=backups.bucket.arn,
                backup_key_arn=backups.key.arn,
                ssh_public_key=settings.ssh_public_key,
                protect=settings.protect,
                customer_managed_key=settings.volume_key == "customer-managed",
                data_volume_snapshot_id=settings.data_volume_snapshot_id,
                acme_dns_zone_id=base.zone_id if settings.acme_challenge == "dns-01" else None,
                acme_dns_names=tuple(hostnames) if settings.acme_challenge == "dns-01" else (),
            ),
            aws_opts,
        )
        if settings.allowed_cidrs:
            allow_own_address(network, host.elastic_ip.public_ip, aws_opts)
        # Daily snapshots of the data volume; they inherit its key, which Data Lifecycle Manager's role may then use.
        Snapshots(
            "snapshots",
            SnapshotsArgs(
                snapshot_tag,
                settings.snapshot_retention_days,
                host.volume_key.arn if host.volume_key else None,
                copy_region=settings.backup_replica_region,
                copy_key_arn=backups.replica_key.arn if backups.replica_key else None,
            ),
            aws_opts,
        )
        if workspaces.enabled(settings):
            workspaces_host = WorkspacesHost(
                "workspaces",
                WorkspacesHostArgs(
                    stack=settings.stack, region=settings.region, instance_type=settings.workspaces_instance_type,
                    architecture=instance_architecture(settings.workspaces_instance_type),
                    volume_gb=settings.workspaces_volume_gb, sessions=settings.workspaces_sessions,
                    release=settings.workspaces_release, release_sha256=settings.workspaces_release_sha256,
                    vpc_id=network.vpc.id, subnet_id=network.subnet.id, private_ip=workspaces.private_ip(settings.vpc_cidr),
                    # Every group of the forge host holds only the host; its outbound group names it as a source.
                    forge_host_security_group_id=network.security_groups["outbound"].id,
                    backup_bucket_name=backups.bucket.bucket, backup_bucket_arn=backups.bucket.arn,
                    backup_key_arn=backups.key.arn, backup_interval_hours=settings.backup_interval_hours, protect=settings.protect,
                ),
                aws_opts,
            )
            workspaces_resources.append(workspaces_host)
            pulumi.export("workspacesUrl", f"https://{settings.hostname(workspaces.SUBDOMAIN)}/")
            pulumi.export("workspacesInstanceId", workspaces_host.instance.id)
            pulumi.export("workspacesSecretArn", workspaces_host.secret.arn)
            pulumi.export("workspacesPortForward", workspaces_host.instance.id.apply(
                lambda instance_id: ssm_port_forward(settings.region, instance_id)))
        alarms = stack_alarms(settings, base, host.instance.id)
        Dns("dns", DnsArgs(base.zone_id, settings.domain, hostnames, host.elastic_ip.public_ip, settings.acme_email), aws_opts)
        # Without admin networks there is no port 22: SSH (and so Docker) goes through SSM Session Manager.
        connection = pulumi.Output.all(host.elastic_ip.public_ip, host.instance.id, host.instance.private_ip).apply(
            lambda ids: aws_connection(settings.region, not settings.admin_cidrs, ids[0], ids[1], ids[2])
        )

        pulumi.export("hostPublicIp", host.elastic_ip.public_ip)
        pulumi.export("instanceId", host.instance.id)
        pulumi.export("vpcId", network.vpc.id)
        pulumi.export("dataVolumeId", host.data_volume.id)
        export_shared(settings, credentials, backups, alarms)
        pulumi.export(
            "ssmSessionCommand", host.instance.id.apply(lambda i: ssm_session_command(settings.region, i))
        )
    else:
        connection = pulumi.Output.from_input(local_connection())

    values = secret_values(settings, credentials)
    services = Services(
        "services",
        ServicesArgs(
            specs=specs,
            secret_values=values,
            connection=connection,
            hostnames=hostnames,
            wait_for_host=settings.is_aws,
            host_bundle=bundle,
            named_volumes=not settings.is_aws,
            # On AWS a changed Gitea or PostgreSQL version first takes a backup on the host (rollback: restore it).
            pre_upgrade_backup=tuple(pre_upgrade_backup_argv(postgres.NAME)) if settings.is_aws else None,
            upgrade_triggers=tuple(spec.image for spec in specs if spec.name in (gitea.NAME, postgres.NAME)),
            admin_bootstrap=(gitea.NAME, tuple(gitea.admin_bootstrap_command(settings, CONTAINER_PREFIX + gitea.NAME))),
            deploy_time_commands=deploy_time_commands(settings),
            exported_credentials=exported_credentials(settings),
        ),
    )
    if portainer_signs_on(settings):
        portainer_sign_on(settings, services, connection, values[portainer.PASSWORD_CREDENTIAL])
    if workspaces.enabled(settings) and sso.enabled(settings):
        # Every value of Kasm's OpenID form (Kasm has no API for it: README, Workspaces); secret as a whole.
        pulumi.export("workspacesOidc", {
            **workspaces.oidc_form(settings),
            "clientId": services.exported[workspaces.OIDC_CLIENT_ID_CREDENTIAL],
            "clientSecret": services.exported[workspaces.OIDC_CLIENT_SECRET_CREDENTIAL],
        })
    if workspace_images.registration_enabled(settings):
        # After the proxy (which routes workspaces.<domain>) and the workspaces host exist.
        register_images(settings, services.exported[workspace_images.PULL_TOKEN_CREDENTIAL],
                        after=[services, *workspaces_resources])

    export_forge(settings, list(hostnames))
    if settings.monitoring:
        pulumi.export("grafanaUrl", monitoring.grafana_url(settings))
    # The smoke test checks each client's application in Gitea (scripts/smoke.py, sso).
    pulumi.export("ssoClients", {client.application: client.redirect_uri for client in sso_clients(settings)})


def portainer_sign_on(
    settings: Settings, services: Services, connection: pulumi.Output[HostConnection], password: pulumi.Output[str]
) -> command.local.Command:
    """Portainer's OAuth settings, set through its API from the Gitea container; the admin's password and the client's
    id and secret travel on standard input (through ssh on AWS), never on a command line. Again whenever Portainer's
    container is replaced or its client's secret changes."""
    client_id = services.exported[portainer.OAUTH_CLIENT_ID_CREDENTIAL]
    client_secret = services.exported[portainer.OAUTH_CLIENT_SECRET_CREDENTIAL]
    argv = portainer.oauth_command(settings, CONTAINER_PREFIX + gitea.NAME)
    return command.local.Command(
        "services-portainer-oauth",
        create=connection.apply(lambda c: shlex.join(c.remote(argv))),
        stdin=pulumi.Output.secret(pulumi.Output.all(password, client_id, client_secret).apply(  # type: ignore[arg-type]
            lambda v: portainer.oauth_stdin(v[0], v[1], v[2]))),
        triggers=[services.containers[portainer.NAME].id, client_secret],
        opts=pulumi.ResourceOptions(depends_on=[services]),
    )


def exported_credentials(settings: Settings) -> tuple[str, ...]:
    """Deploy-time credentials used outside any container: Kasm's pull token and its OpenID client, Portainer's client."""
    exported: list[str] = []
    if portainer_signs_on(settings):
        exported += [portainer.OAUTH_CLIENT_ID_CREDENTIAL, portainer.OAUTH_CLIENT_SECRET_CREDENTIAL]
    if workspace_images.registration_enabled(settings):
        exported.append(workspace_images.PULL_TOKEN_CREDENTIAL)
    if workspaces.enabled(settings) and sso.enabled(settings):
        exported += [workspaces.OIDC_CLIENT_ID_CREDENTIAL, workspaces.OIDC_CLIENT_SECRET_CREDENTIAL]
    return tuple(exported)


def deploy_time_commands(settings: Settings) -> tuple[DeployTimeCommand, ...]:
    """What Gitea makes once it runs: the runner's registration token (ci: actions), Kasm's token for pulling the
    workspace images, and each single sign-on client's id and secret. Services runs only those whose credentials a
    container reads or the stack exports."""
    container = CONTAINER_PREFIX + gitea.NAME
    return (
        DeployTimeCommand(gitea.NAME, tuple(ci.runner_token_command(container)), (ci.RUNNER_TOKEN,)),
        DeployTimeCommand(gitea.NAME, tuple(workspace_images.pull_token_command(settings, container)),
                          (workspace_images.PULL_TOKEN_CREDENTIAL,)),
        *(DeployTimeCommand(gitea.NAME, tuple(sso.client_command(settings, client, container)),
                            (client.client_id_credential, client.client_secret_credential))
          for client in sso_clients(settings)),
    )
