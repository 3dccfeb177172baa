"""Pieces every AWS topology builds the same way: the provider, outgoing mail, credentials and the backups bucket."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.alarms import Alarms, AlarmsArgs, MetricAlarmSpec
from components.backups import Backups, BackupsArgs
from components.constants import COST_ALLOCATION_TAG, EXPIRES_AT_TAG, PROJECT
from components.credentials import Credentials, CredentialsArgs
from components.dns import public_zone_id
from components.mail import Mail, MailArgs
from components.services import gitea, mail, monitoring, relay
from components.settings import Settings


@dataclass(frozen=True)
class AwsBase:
    """The stack's AWS provider (as resource options), its public zone and its SES SMTP user."""

    opts: pulumi.ResourceOptions
    provider: aws.Provider
    zone_id: pulumi.Output[str]
    smtp_credentials: dict[str, pulumi.Output[str]]


def default_tags(settings: Settings) -> dict[str, str]:
    """On every AWS resource: the stack (cost allocation, budgets, the deploy roles' fences) and, on an ephemeral stack,
    when the sweeper may destroy it."""
    tags = {"project": PROJECT, COST_ALLOCATION_TAG: settings.stack, "managed-by": "pulumi"}
    if settings.expires_at:
        tags[EXPIRES_AT_TAG] = settings.expires_at
    return tags


def aws_base(settings: Settings) -> AwsBase:
    # One explicit provider: every AWS resource gets the default tags and the stack's region.
    provider = aws.Provider(
        "aws",
        region=settings.region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=default_tags(settings)),
    )
    opts = pulumi.ResourceOptions(providers={"aws": provider})
    zone_id = public_zone_id(settings.hosted_zone, pulumi.InvokeOutputOptions(provider=provider))
    # Outgoing mail as mail.<domain> through SES; its SMTP user joins the generated credentials.
    outgoing = Mail("mail", MailArgs(settings.stack, settings.region, mail.mail_domain(settings), zone_id, settings.acme_email), opts)
    smtp = {mail.SMTP_USERNAME: outgoing.smtp_username, mail.SMTP_PASSWORD: outgoing.smtp_password}
    return AwsBase(opts, provider, zone_id, smtp)


def stack_credentials(settings: Settings, base: AwsBase | None) -> Credentials:
    return Credentials(
        "credentials",
        CredentialsArgs(store_in_secrets_manager=settings.is_aws, protect=settings.protect, extra=base.smtp_credentials if base else {}),
        base.opts if base else None,
    )


def stack_backups(settings: Settings, base: AwsBase) -> Backups:
    return Backups(
        "backups",
        BackupsArgs(
            settings.backup_retention_days,
            settings.backup_archive_after_days,
            settings.protect,
            lock_mode="COMPLIANCE" if settings.backup_lock_mode == "compliance" else "GOVERNANCE",
            replica_region=settings.backup_replica_region,
        ),
        base.opts,
    )


def secret_values(settings: Settings, credentials: Credentials) -> dict[str, pulumi.Output[str]]:
    """Generated credentials plus the operator's own secrets from the stack config (kept secret end to end)."""
    operator_secrets = {
        monitoring.SMTP_PASSWORD: settings.alert_smtp_password,
        **{credential: getattr(settings, field) for field, credential, *_ in monitoring.SECRET_RECEIVERS},
        "droneGiteaClientSecret": settings.drone_gitea_client_secret,
        relay.TARGETS_CREDENTIAL: relay.targets_value(settings),
    }
    return {**credentials.values, **{key: pulumi.Output.secret(value) for key, value in operator_secrets.items() if value}}


def stack_alarms(
    settings: Settings, base: AwsBase, instance_id: pulumi.Input[str] | None, metric_alarms: tuple[MetricAlarmSpec, ...] = ()
) -> Alarms:
    """The alarm topics (mailing alertEmailTo), Route 53's outside-in check of Gitea, the host's alarms when there is
    a host, and alarms on the managed services' metrics."""
    return Alarms(
        "alarms",
        AlarmsArgs(
            stack=settings.stack,
            region=settings.region,
            instance_id=instance_id,
            health_fqdn=settings.hostname(gitea.SUBDOMAIN),
            health_path=gitea.HEALTH_PATH,
            email=settings.alert_email_to,
            https_endpoints=settings.alarm_https_endpoints,
            protect=settings.protect,
            metric_alarms=metric_alarms,
            budget_usd=settings.budget_usd,
        ),
        base.opts,
    )


def export_forge(settings: Settings, hostnames: list[str]) -> None:
    """What users and operators of any topology look up first."""
    pulumi.export("giteaUrl", f"{gitea.public_url(settings)}/")
    pulumi.export("gitSshUrl", gitea.ssh_clone_base(settings))
    pulumi.export("hostnames", hostnames)
    pulumi.export("giteaAdminUser", settings.gitea_admin_user)
    # What scripts/smoke.py needs to know to check the forge as deployed.
    pulumi.export("tlsPubliclyTrusted", tls_publicly_trusted(settings))
    pulumi.export("ci", settings.ci)


def tls_publicly_trusted(settings: Settings) -> bool:
    """ACM (ha) and Let's Encrypt's production CA chain to public roots; its staging CA and the local stack's
    self-signed certificate do not."""
    if not settings.is_aws:
        return False
    return settings.topology == "ha" or not settings.acme_staging


def export_shared(settings: Settings, credentials: Credentials, backups: Backups, alarms: Alarms) -> None:
    """The AWS outputs every topology has."""
    pulumi.export("backupBucketName", backups.bucket.bucket)
    pulumi.export("backupIntervalHours", settings.backup_interval_hours)
    if backups.replica is not None:
        pulumi.export("backupReplicaBucketName", backups.replica.bucket)
        pulumi.export("backupReplicaRegion", settings.backup_replica_region)
    pulumi.export("credentialsSecretArn", credentials.secret_arn)
    if settings.expires_at:
        pulumi.export("expiresAt", settings.expires_at)  # what the review stacks' sweeper reads
    pulumi.export("alarmTopicArns", {region: topic.arn for region, topic in alarms.topics.items()})
