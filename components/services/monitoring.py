"""Metrics and alerts: Prometheus, Alertmanager, Grafana, node-exporter, cAdvisor, postgres-exporter, blackbox.

Pure functions settings -> ServiceSpec. Scrape targets come from the specs' metrics endpoints, probe
targets from the routed hostnames; nothing is listed twice. Only Grafana is reachable from outside,
through the proxy; the rest talk on the Docker network alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from components.backup_job import DRILL_MAX_AGE_DAYS, max_backup_age_seconds
from components.constants import GRAFANA_PORT, PRIVATE_GRAFANA_URL, SECRETS_DIR, TEXTFILE_COLLECTOR_DIR
from components.host_tools.backup import METRIC_LAST_SUCCESS
from components.host_tools.drill import METRIC_LAST_SUCCESS as DRILL_METRIC_LAST_SUCCESS
from components.host_tools.drill import METRIC_RESULT as DRILL_METRIC_RESULT
from components.services import dashboards, images, mail, postgres, sso, workspaces
from components.services.dashboards import REAL_FILESYSTEMS
from components.services.spec import (
    ConfigFile,
    Healthcheck,
    HostMount,
    MetricsEndpoint,
    PublishedPort,
    RateLimit,
    Route,
    SecretFile,
    ServiceSpec,
    Volume,
)
from components.settings import Settings

PROMETHEUS = "prometheus"
PROMETHEUS_PORT = 9090
ALERTMANAGER = "alertmanager"
ALERTMANAGER_PORT = 9093
WATCHDOG = "Watchdog"  # the always-firing alert the host heartbeat looks for
GRAFANA = "grafana"
GRAFANA_HEALTH = "/api/health"  # 200 without a login (its "/" redirects to /login)
GRAFANA_SUBDOMAIN = "grafana"
NODE_EXPORTER = "node-exporter"
NODE_EXPORTER_PORT = 9100
CADVISOR = "cadvisor"
CADVISOR_PORT = 8080
POSTGRES_EXPORTER = "postgres-exporter"
POSTGRES_EXPORTER_PORT = 9187
BLACKBOX = "blackbox"
BLACKBOX_PORT = 9115
BLACKBOX_MODULE = "https_2xx"

NOBODY = 65534  # the Prometheus project's images run as nobody
GRAFANA_UID = 472
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
PROMETHEUS_RULES = "/etc/prometheus/rules/forgestack.yml"
ALERTMANAGER_CONFIG = "/etc/alertmanager/alertmanager.yml"
BLACKBOX_CONFIG = "/etc/blackbox_exporter/config.yml"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
GRAFANA_DASHBOARDS = "/etc/grafana/dashboards"
# The images' storage paths (each a named volume), on the single host and the ops host alike.
PROMETHEUS_DATA = "/prometheus"
GRAFANA_DATA = "/var/lib/grafana"
GRAFANA_PASSWORD_FILE = f"{SECRETS_DIR}/grafana_admin_password"
GRAFANA_PASSWORD_CREDENTIAL = "grafanaAdminPassword"  # noqa: S105 (the credentials key, not a password)
GRAFANA_OAUTH_CLIENT_ID_FILE = f"{SECRETS_DIR}/grafana_oauth_client_id"
GRAFANA_OAUTH_CLIENT_SECRET_FILE = f"{SECRETS_DIR}/grafana_oauth_client_secret"
SCRAPE_INTERVAL = "30s"
CERT_EXPIRY_WARNING_DAYS = 10  # Let's Encrypt lifetimes shrink to 64 and then 45 days; certbot renews at 30 days left


def _dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def _wget_health(port: int, path: str) -> Healthcheck:
    return Healthcheck(("CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}{path}"), interval="30s", start_period="30s")


# ------------------------------------------------------------------ exporters


# node-exporter's flags wherever it runs (the forge host's container, the workspaces host's): the host's root at /host,
# pseudo and Docker-internal filesystems left out.
NODE_EXPORTER_FLAGS = ("--path.rootfs=/host", "--collector.filesystem.mount-points-exclude=^/(dev|proc|run|sys|var/lib/docker/.+)($|/)")


def node_exporter_spec(settings: Settings, memory_mb: int) -> ServiceSpec:
    command = list(NODE_EXPORTER_FLAGS)
    if settings.is_aws:  # the backup job's metrics; the local stack has no backup job
        command.append(f"--collector.textfile.directory=/host{TEXTFILE_COLLECTOR_DIR}")
    return ServiceSpec(
        name=NODE_EXPORTER, image=images.NODE_EXPORTER, memory_mb=memory_mb,
        host_mounts=(HostMount("/", "/host"),),
        command=tuple(command),
        metrics=MetricsEndpoint(NODE_EXPORTER_PORT),
    )


def cadvisor_spec(memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=CADVISOR, image=images.CADVISOR, memory_mb=memory_mb,
        # The Docker socket (read-only mount, but the API is not read-only): cAdvisor needs it to name
        # containers. An accepted risk, recorded in README "Security controls"; no other container has it.
        host_mounts=(HostMount("/", "/rootfs"), HostMount("/var/run", "/var/run"), HostMount("/sys", "/sys"),
                     HostMount("/var/lib/docker", "/var/lib/docker"), HostMount("/dev/disk", "/dev/disk")),
        command=("--docker_only=true", "--housekeeping_interval=30s", "--store_container_labels=false",
                 "--whitelisted_container_labels=forgestack.service",
                 "--disable_metrics=advtcp,cpu_topology,cpuset,hugetlb,memory_numa,percpu,process,referenced_memory,"
                 "resctrl,sched,tcp,udp"),
        metrics=MetricsEndpoint(CADVISOR_PORT),
        capabilities=("DAC_OVERRIDE",),  # reads cgroup and /var/lib/docker files owned by others (mounts are read-only)
    )


def postgres_exporter_spec(memory_mb: int) -> ServiceSpec:
    password_file = f"{SECRETS_DIR}/postgres_password"
    return ServiceSpec(
        name=POSTGRES_EXPORTER, image=images.POSTGRES_EXPORTER, memory_mb=memory_mb,
        env={"DATA_SOURCE_URI": f"{postgres.NAME}:{postgres.PORT}/{postgres.DATABASE}?sslmode=disable",
             "DATA_SOURCE_USER": postgres.USER, "DATA_SOURCE_PASS_FILE": password_file},
        secret_files=(SecretFile("postgresPassword", password_file, NOBODY),),
        metrics=MetricsEndpoint(POSTGRES_EXPORTER_PORT),
        depends_on=(postgres.NAME,),
    )


def blackbox_config(verify_certificates: bool) -> str:
    """One module: HTTPS GET expecting 2xx over TLS. Staging certificates do not verify; expiry is still measured."""
    return _dump({"modules": {BLACKBOX_MODULE: {
        "prober": "http", "timeout": "10s",
        "http": {"preferred_ip_protocol": "ip4", "fail_if_not_ssl": True, "follow_redirects": False,
                 "tls_config": {"insecure_skip_verify": not verify_certificates}},
    }}})


def blackbox_spec(settings: Settings, memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=BLACKBOX, image=images.BLACKBOX_EXPORTER, memory_mb=memory_mb,
        config_files=(ConfigFile(BLACKBOX_CONFIG, blackbox_config(verify_certificates=not settings.acme_staging)),),
        command=(f"--config.file={BLACKBOX_CONFIG}",),
        metrics=MetricsEndpoint(BLACKBOX_PORT),
    )


# ------------------------------------------------------------------ Prometheus


def scrape_configs(specs: Sequence[ServiceSpec], probe_urls: Sequence[str]) -> list[dict[str, Any]]:
    """One job per spec with a metrics endpoint; one blackbox job over every public health URL."""
    jobs: list[dict[str, Any]] = []
    for spec in specs:
        if not spec.metrics:
            continue
        job: dict[str, Any] = {"job_name": spec.name, "metrics_path": spec.metrics.path,
                               "static_configs": [{"targets": [f"{spec.name}:{spec.metrics.port}"]}]}
        if spec.metrics.bearer_credential:
            job["authorization"] = {"type": "Bearer", "credentials_file": bearer_file(spec.metrics.bearer_credential)}
        jobs.append(job)
    if probe_urls:
        jobs.append({
            "job_name": "probe-https", "metrics_path": "/probe", "params": {"module": [BLACKBOX_MODULE]},
            "static_configs": [{"targets": list(probe_urls)}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": f"{BLACKBOX}:{BLACKBOX_PORT}"},
            ],
        })
    return jobs


def bearer_file(credential: str) -> str:
    return f"{SECRETS_DIR}/{credential}"


def prometheus_config(settings: Settings, specs: Sequence[ServiceSpec], probe_urls: Sequence[str]) -> str:
    jobs = scrape_configs(specs, probe_urls)
    if workspaces.enabled(settings):  # over the VPC: the host's group is the one its security group admits
        jobs.append({"job_name": workspaces.METRICS_JOB,
                     "static_configs": [{"targets": [f"{workspaces.private_ip(settings.vpc_cidr)}:{NODE_EXPORTER_PORT}"]}]})
    return _dump({
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL,
                   "external_labels": {"stack": settings.stack, "forge": settings.domain}},
        "rule_files": [PROMETHEUS_RULES],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{ALERTMANAGER}:{ALERTMANAGER_PORT}"]}]}]},
        "scrape_configs": jobs,
    })


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    duration: str
    severity: str  # critical pages, warning waits for working hours
    summary: str
    runbook: str  # one line: what to do first


def alerts(settings: Settings, probes: bool) -> list[Alert]:
    rules = [
        Alert(WATCHDOG, "vector(1)", "0m", "none",
              "always firing: proves that Prometheus evaluates rules and reaches Alertmanager",
              "never routed to anyone; the host's heartbeat (CloudWatch) stops when it is missing: check Prometheus and Alertmanager"),
        Alert("TargetDown", f'up{{job!="{workspaces.METRICS_JOB}"}} == 0', "5m", "critical",
              "{{ $labels.job }} on {{ $labels.instance }} is not answering scrapes",
              "docker ps -a; docker logs forgestack-{{ $labels.job }} --tail 100; check its memory limit and healthcheck"),
        Alert("DiskAlmostFull",
              f"node_filesystem_avail_bytes{{{REAL_FILESYSTEMS}}} / node_filesystem_size_bytes{{{REAL_FILESYSTEMS}}} < 0.10",
              "10m", "critical", "{{ $labels.mountpoint }} has less than 10% free",
              "du -xh --max-depth=2 on the mount point; raise rootVolumeGb/dataVolumeGb and pulumi up (EBS grows online)"),
        Alert("DiskFillingWithin24h",
              f"predict_linear(node_filesystem_avail_bytes{{{REAL_FILESYSTEMS}}}[6h], 24 * 3600) < 0",
              "30m", "warning", "{{ $labels.mountpoint }} will be full within 24 hours at the current rate",
              "find what grows (logs, LFS, Prometheus TSDB); lower retention or grow the volume before it fills"),
        Alert("MemoryLow", "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes < 0.10", "10m", "warning",
              "less than 10% of the host's memory is available",
              "docker stats --no-stream; a larger instanceType resizes every container's limit"),
        Alert("CpuBusy", '1 - avg without (cpu) (rate(node_cpu_seconds_total{mode="idle"}[5m])) > 0.90', "15m", "warning",
              "the host's CPUs are more than 90% busy",
              "docker stats --no-stream; on t3 instances check the CPU credit balance in CloudWatch"),
        Alert("OomKill", "increase(node_vmstat_oom_kill[15m]) > 0", "0m", "warning",
              "the kernel killed a process for lack of memory",
              "journalctl -k | grep -i oom; raise the container's share in catalog.memory_plan or the instance size"),
        Alert("ContainerRestarting", 'changes(container_start_time_seconds{name=~"forgestack-.+"}[15m]) > 2', "0m", "warning",
              "{{ $labels.name }} restarted more than twice in 15 minutes",
              "docker logs {{ $labels.name }} --tail 200; docker inspect {{ $labels.name }} (State.OOMKilled, State.ExitCode)"),
        Alert("PostgresDown", "pg_up == 0", "2m", "critical", "PostgreSQL does not accept connections",
              "docker logs forgestack-postgres --tail 100; df -h /srv/forgestack; restore from backup only if the data is lost"),
        Alert("WebhookDeliveriesFailing",
              "increase(webhook_relay_failed_total[30m]) > 0 or increase(webhook_relay_queue_full_total[30m]) > 0", "0m", "warning",
              "the webhook relay could not deliver to a chat target, or its queue was full",
              "docker logs forgestack-relay --tail 100 (target N is the Nth URL in relayTargets); check the chat service"),
    ]
    if workspaces.enabled(settings):
        rules.append(Alert(
            "WorkspacesHostDown", f'up{{job="{workspaces.METRICS_JOB}"}} == 0', "5m", "critical",
            "the workspaces host ({{ $labels.instance }}) does not answer scrapes",
            "aws ssm start-session --target $(pulumi stack output workspacesInstanceId); sudo docker ps -a; "
            "sudo /opt/kasm/bin/start; cloud-init's log and /var/lib/forgestack/kasm-install.log after a first boot"))
    if probes:
        rules += [
            Alert("ProbeFailing", "probe_success == 0", "5m", "critical", "{{ $labels.instance }} is not reachable over HTTPS",
                  "curl -v {{ $labels.instance }}; docker logs forgestack-proxy --tail 100; check DNS and the security group"),
            Alert("CertificateExpiringSoon", f"probe_ssl_earliest_cert_expiry - time() < {CERT_EXPIRY_WARNING_DAYS} * 86400", "1h",
                  "warning", f"the certificate of {{{{ $labels.instance }}}} expires in less than {CERT_EXPIRY_WARNING_DAYS} days",
                  "docker logs forgestack-certbot --tail 100; renewal runs every 12 h and nginx reloads on change"),
        ]
    if settings.is_aws:
        max_age = max_backup_age_seconds(settings.backup_interval_hours)
        rules += [
            Alert("BackupTooOld", f"time() - {METRIC_LAST_SUCCESS} > {max_age}", "0m", "critical",
                  f"the last successful backup is older than {max_age // 3600} hours",
                  "journalctl -u forgestack-backup --since -1d; sudo systemctl start forgestack-backup.service (job "
                  "workspaces-host: the same for forgestack-kasm-backup on the workspaces host)"),
            Alert("BackupNeverSucceeded", f"absent({METRIC_LAST_SUCCESS})", "1d", "warning",
                  "no successful backup has been recorded on this host for a day",
                  "systemctl list-timers forgestack-backup.timer; journalctl -u forgestack-backup"),
            # The weekly drill restores the latest backup into scratch containers: a backup that does not restore is
            # found within a week, not on the day it is needed.
            Alert("RestoreDrillTooOld", f"time() - {DRILL_METRIC_LAST_SUCCESS} > {DRILL_MAX_AGE_DAYS} * 86400", "0m", "critical",
                  f"no restore drill has passed for more than {DRILL_MAX_AGE_DAYS} days: the backups are not known to restore",
                  "journalctl -u forgestack-restore-drill; sudo systemctl start forgestack-restore-drill.service"),
            Alert("RestoreDrillFailed", f"{DRILL_METRIC_RESULT} == 0", "0m", "warning",
                  "the last restore drill failed (download, verification, restore, row counts or git fsck)",
                  "journalctl -u forgestack-restore-drill -n 50 names the step; README, Restore drills"),
            Alert("RestoreDrillNeverPassed", f"absent({DRILL_METRIC_LAST_SUCCESS})", f"{DRILL_MAX_AGE_DAYS}d", "warning",
                  f"no restore drill has passed on this host in {DRILL_MAX_AGE_DAYS} days",
                  "systemctl list-timers forgestack-restore-drill.timer; sudo systemctl start forgestack-restore-drill.service"),
        ]
    return rules


def rules_file(settings: Settings, probes: bool) -> str:
    return _dump({"groups": [{"name": "forgestack", "rules": [
        {"alert": a.name, "expr": a.expr, "for": a.duration, "labels": {"severity": a.severity},
         "annotations": {"summary": a.summary, "runbook": a.runbook}}
        for a in alerts(settings, probes)
    ]}]})


def prometheus_spec(settings: Settings, scraped: Sequence[ServiceSpec], probe_urls: Sequence[str], memory_mb: int) -> ServiceSpec:
    own = MetricsEndpoint(PROMETHEUS_PORT)
    bearer = sorted({s.metrics.bearer_credential for s in scraped if s.metrics and s.metrics.bearer_credential})
    itself = ServiceSpec(name=PROMETHEUS, image=images.PROMETHEUS, memory_mb=memory_mb, metrics=own)
    return ServiceSpec(
        name=PROMETHEUS, image=images.PROMETHEUS, memory_mb=memory_mb,
        config_files=(
            ConfigFile(PROMETHEUS_CONFIG, prometheus_config(settings, [*scraped, itself], probe_urls)),
            ConfigFile(PROMETHEUS_RULES, rules_file(settings, probes=bool(probe_urls))),
        ),
        secret_files=tuple(SecretFile(credential, bearer_file(credential), NOBODY) for credential in bearer),
        volumes=(Volume(PROMETHEUS, PROMETHEUS_DATA, owner=NOBODY),),
        command=(f"--config.file={PROMETHEUS_CONFIG}", "--storage.tsdb.path=/prometheus",
                 f"--storage.tsdb.retention.time={settings.metrics_retention_days}d"),
        healthcheck=_wget_health(PROMETHEUS_PORT, "/-/healthy"),
        metrics=own,
        depends_on=(ALERTMANAGER,),
    )


# ------------------------------------------------------------------ Alertmanager


# Receiver kinds: the secret setting holding the URL or key, and the Alertmanager config that reads it from a file.
# Email is the fifth, configured from alertEmailTo and the SMTP settings. Every kind hears every alert that is
# sent at all; PagerDuty only the critical ones (they page someone): severity decides who is woken up.
SECRET_RECEIVERS = (  # (settings field, credentials key, Alertmanager config list, its file field, pages only)
    ("alert_slack_webhook_url", "alertSlackWebhookUrl", "slack_configs", "api_url_file", False),
    ("alert_teams_webhook_url", "alertTeamsWebhookUrl", "msteamsv2_configs", "webhook_url_file", False),
    ("alert_webhook_url", "alertWebhookUrl", "webhook_configs", "url_file", False),
    ("alert_pagerduty_routing_key", "alertPagerdutyRoutingKey", "pagerduty_configs", "routing_key_file", True),
)
SMTP_PASSWORD = "alertSmtpPassword"  # noqa: S105 (the credentials key, not a password)
PAGE, NOTIFY, NOBODY_RECEIVER = "page", "notify", "nobody"
SES_USERNAME_PLACEHOLDER = "__SES_SMTP_USERNAME__"  # filled by the deploy with the SES SMTP user's access key id


def alert_secret_file(credential: str) -> str:
    return f"{SECRETS_DIR}/{credential}"


def _receiver(settings: Settings, name: str, pages: bool) -> dict[str, Any]:
    receiver: dict[str, Any] = {"name": name}
    if settings.alert_email_to:
        receiver["email_configs"] = [{"to": settings.alert_email_to, "send_resolved": True}]
    for field, credential, kind, file_field, pages_only in SECRET_RECEIVERS:
        if getattr(settings, field) and (pages or not pages_only):
            receiver[kind] = [{file_field: alert_secret_file(credential), "send_resolved": True}]
    return receiver


def alertmanager_config(settings: Settings) -> str:
    """Critical alerts go to every receiver (PagerDuty too) and repeat hourly; warnings to all but PagerDuty, twice a
    day; a critical alert silences the warnings of the same instance; the Watchdog goes nowhere."""
    global_config: dict[str, Any] = {"resolve_timeout": "5m"}
    if settings.alert_email_to:
        global_config.update(smtp_global(settings))
    return _dump({
        "global": global_config,
        "route": {
            "receiver": NOTIFY, "group_by": ["alertname", "instance"],
            "group_wait": "30s", "group_interval": "5m", "repeat_interval": "12h",
            "routes": [
                # The heartbeat (components/host_tools/heartbeat.py) reads the Watchdog from Alertmanager; nobody is told.
                {"matchers": [f'alertname="{WATCHDOG}"'], "receiver": NOBODY_RECEIVER},
                {"matchers": ['severity="critical"'], "receiver": PAGE, "repeat_interval": "1h"},
                {"matchers": ['severity="warning"'], "receiver": NOTIFY, "repeat_interval": "12h"},
            ],
        },
        "inhibit_rules": [{"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
                           "equal": ["instance"]}],
        "receivers": [_receiver(settings, PAGE, pages=True), _receiver(settings, NOTIFY, pages=False), {"name": NOBODY_RECEIVER}],
    })


def smtp_global(settings: Settings) -> dict[str, Any]:
    """Alert mail through alertSmtpSmarthost when the operator names one, else through the stack's relay (SES with
    its SMTP user on AWS, Mailpit locally). The SES user name exists only once its access key does: a placeholder
    the deploy fills (Alertmanager reads no user name from a file)."""
    if settings.alert_smtp_smarthost:
        smtp: dict[str, Any] = {"smtp_smarthost": settings.alert_smtp_smarthost, "smtp_from": settings.alert_smtp_from,
                                "smtp_require_tls": True}
        if settings.alert_smtp_username:
            smtp.update(smtp_auth_username=settings.alert_smtp_username, smtp_auth_password_file=alert_secret_file(SMTP_PASSWORD))
        return smtp
    relay = mail.relay(settings)
    smtp = {"smtp_smarthost": relay.smarthost, "smtp_from": settings.alert_smtp_from or mail.sender(settings, "alerts"),
            "smtp_require_tls": relay.starttls}
    if relay.authenticated:
        smtp.update(smtp_auth_username=SES_USERNAME_PLACEHOLDER, smtp_auth_password_file=mail.SMTP_PASSWORD_FILE)
    return smtp


def alertmanager_secret_files(settings: Settings) -> tuple[SecretFile, ...]:
    """The receivers' URLs, keys and the SMTP password, each a file Alertmanager reads (never inside its config)."""
    files = [SecretFile(credential, alert_secret_file(credential), NOBODY)
             for field, credential, *_ in SECRET_RECEIVERS if getattr(settings, field)]
    if settings.alert_email_to and settings.alert_smtp_smarthost and settings.alert_smtp_username:
        files.append(SecretFile(SMTP_PASSWORD, alert_secret_file(SMTP_PASSWORD), NOBODY))
    elif settings.alert_email_to and not settings.alert_smtp_smarthost and mail.relay(settings).authenticated:
        files.append(SecretFile(mail.SMTP_PASSWORD, mail.SMTP_PASSWORD_FILE, NOBODY))
    return tuple(files)


def alertmanager_config_file(settings: Settings) -> ConfigFile:
    rendered = alertmanager_config(settings)
    values = ((SES_USERNAME_PLACEHOLDER, mail.SMTP_USERNAME),) if SES_USERNAME_PLACEHOLDER in rendered else ()
    return ConfigFile(ALERTMANAGER_CONFIG, rendered, values=values)


def alertmanager_spec(settings: Settings, memory_mb: int) -> ServiceSpec:
    return ServiceSpec(
        name=ALERTMANAGER, image=images.ALERTMANAGER, memory_mb=memory_mb,
        config_files=(alertmanager_config_file(settings),),
        secret_files=alertmanager_secret_files(settings),
        volumes=(Volume(ALERTMANAGER, "/alertmanager", owner=NOBODY),),
        command=(f"--config.file={ALERTMANAGER_CONFIG}", "--storage.path=/alertmanager",
                 "--cluster.listen-address="),  # one instance: no gossip port
        healthcheck=_wget_health(ALERTMANAGER_PORT, "/-/healthy"),
        metrics=MetricsEndpoint(ALERTMANAGER_PORT),
    )


# ------------------------------------------------------------------ Grafana


def grafana_datasources(loki_url: str | None, prometheus_url: str = f"http://{PROMETHEUS}:{PROMETHEUS_PORT}",
                        cloudwatch_region: str | None = None) -> str:
    """Prometheus always; Loki where logs are collected; CloudWatch (topology ha: the managed services' metrics, read
    with the instance role, the SDK's default credentials) where a region is given."""
    sources: list[dict[str, Any]] = [{"name": "Prometheus", "uid": "prometheus", "type": "prometheus", "access": "proxy",
                                      "url": prometheus_url, "isDefault": True, "editable": False}]
    if loki_url:
        sources.append({"name": "Loki", "uid": "loki", "type": "loki", "access": "proxy", "url": loki_url, "editable": False})
    if cloudwatch_region:
        sources.append({"name": "CloudWatch", "uid": "cloudwatch", "type": "cloudwatch", "editable": False,
                        "jsonData": {"authType": "default", "defaultRegion": cloudwatch_region}})
    return _dump({"apiVersion": 1, "datasources": sources})


def grafana_env(domain: str, root_url: str, password_file: str) -> dict[str, str]:
    """Grafana's settings wherever it runs: one admin (password from a file), no sign-up, no anonymous access, no calls
    home."""
    return {
        "GF_SERVER_DOMAIN": domain, "GF_SERVER_ROOT_URL": root_url,
        "GF_SECURITY_ADMIN_USER": "admin", "GF_SECURITY_ADMIN_PASSWORD__FILE": password_file,
        "GF_SECURITY_COOKIE_SECURE": "true", "GF_SECURITY_DISABLE_GRAVATAR": "true",
        "GF_USERS_ALLOW_SIGN_UP": "false", "GF_AUTH_ANONYMOUS_ENABLED": "false",
        "GF_ANALYTICS_REPORTING_ENABLED": "false", "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        "GF_PATHS_PROVISIONING": GRAFANA_PROVISIONING,
    }  # fmt: skip


def grafana_dashboard_provider() -> str:
    return _dump({"apiVersion": 1, "providers": [{
        "name": "forgestack", "folder": "forgestack", "type": "file", "disableDeletion": True, "allowUiUpdates": False,
        "options": {"path": GRAFANA_DASHBOARDS},
    }]})


def grafana_url(settings: Settings) -> str:
    """Private: no public name; operators forward the host's loopback port to theirs (README, Admin UIs)."""
    if settings.admin_ui_private:
        return PRIVATE_GRAFANA_URL
    return f"https://{settings.hostname(GRAFANA_SUBDOMAIN)}/"


def grafana_oauth_client(settings: Settings) -> sso.OAuthClient:
    """Grafana's OAuth2 application in Gitea; Grafana's callback is /login/generic_oauth below its root URL."""
    return sso.OAuthClient(application=GRAFANA, redirect_uri=f"{grafana_url(settings)}login/generic_oauth",
                           client_id_credential="grafanaOauthClientId",
                           client_secret_credential="grafanaOauthClientSecret")  # noqa: S106 (a credentials key)


def grafana_role_attribute_path(organization: str) -> str:
    """JMESPath over Gitea's claims: the Owners team administers, other members view, anyone else gets no role (and
    role_attribute_strict refuses the login)."""
    # Gitea sends "groups": null for a user in no organization: `[]` stands in, so the expression never errors.
    return (f"contains(groups || `[]`, '{sso.owners_group(organization)}') && 'Admin' "
            f"|| contains(groups || `[]`, '{organization}') && 'Viewer' || ''")


def grafana_sso_env(settings: Settings) -> dict[str, str]:
    """Generic OAuth against Gitea (PKCE, id and secret read from files); the login form stays for break-glass admin."""
    gitea = sso.endpoints(settings)
    return {
        "GF_AUTH_GENERIC_OAUTH_ENABLED": "true", "GF_AUTH_GENERIC_OAUTH_NAME": "Gitea",
        "GF_AUTH_GENERIC_OAUTH_CLIENT_ID__FILE": GRAFANA_OAUTH_CLIENT_ID_FILE,
        "GF_AUTH_GENERIC_OAUTH_CLIENT_SECRET__FILE": GRAFANA_OAUTH_CLIENT_SECRET_FILE,
        "GF_AUTH_GENERIC_OAUTH_SCOPES": " ".join(sso.SCOPES), "GF_AUTH_GENERIC_OAUTH_USE_PKCE": "true",
        "GF_AUTH_GENERIC_OAUTH_AUTH_URL": gitea.authorize, "GF_AUTH_GENERIC_OAUTH_TOKEN_URL": gitea.token,
        "GF_AUTH_GENERIC_OAUTH_API_URL": gitea.userinfo,
        "GF_AUTH_GENERIC_OAUTH_LOGIN_ATTRIBUTE_PATH": sso.USERNAME_CLAIM, "GF_AUTH_GENERIC_OAUTH_EMAIL_ATTRIBUTE_PATH": "email",
        "GF_AUTH_GENERIC_OAUTH_NAME_ATTRIBUTE_PATH": "name", "GF_AUTH_GENERIC_OAUTH_GROUPS_ATTRIBUTE_PATH": sso.GROUPS_CLAIM,
        "GF_AUTH_GENERIC_OAUTH_ROLE_ATTRIBUTE_PATH": grafana_role_attribute_path(settings.sso_organization),
        "GF_AUTH_GENERIC_OAUTH_ROLE_ATTRIBUTE_STRICT": "true",
        # Accounts come from Gitea's organization; GF_USERS_ALLOW_SIGN_UP stays false for the login form.
        "GF_AUTH_GENERIC_OAUTH_ALLOW_SIGN_UP": "true",
    }  # fmt: skip


def grafana_spec(settings: Settings, memory_mb: int, loki_url: str | None) -> ServiceSpec:
    hostname = "localhost" if settings.admin_ui_private else settings.hostname(GRAFANA_SUBDOMAIN)
    root_url = grafana_url(settings)
    boards = dashboards.all_dashboards(backups=settings.is_aws)
    secret_files = [SecretFile(GRAFANA_PASSWORD_CREDENTIAL, GRAFANA_PASSWORD_FILE, GRAFANA_UID)]
    env = grafana_env(hostname, root_url, GRAFANA_PASSWORD_FILE)
    if sso.enabled(settings):
        client = grafana_oauth_client(settings)
        secret_files += [SecretFile(client.client_id_credential, GRAFANA_OAUTH_CLIENT_ID_FILE, GRAFANA_UID),
                         SecretFile(client.client_secret_credential, GRAFANA_OAUTH_CLIENT_SECRET_FILE, GRAFANA_UID)]
        env.update(grafana_sso_env(settings))
    return ServiceSpec(
        name=GRAFANA, image=images.GRAFANA, memory_mb=memory_mb,
        env=env,
        secret_files=tuple(secret_files),
        config_files=(
            ConfigFile(f"{GRAFANA_PROVISIONING}/datasources/forgestack.yaml", grafana_datasources(loki_url)),
            ConfigFile(f"{GRAFANA_PROVISIONING}/dashboards/forgestack.yaml", grafana_dashboard_provider()),
            *(ConfigFile(f"{GRAFANA_DASHBOARDS}/{name}.json", content) for name, content in sorted(boards.items())),
        ),
        volumes=(Volume(GRAFANA, GRAFANA_DATA, owner=GRAFANA_UID),),
        healthcheck=_wget_health(GRAFANA_PORT, GRAFANA_HEALTH),
        route=None if settings.admin_ui_private else Route(
            GRAFANA_SUBDOMAIN, GRAFANA_PORT, admin_ui=True, limits=(RateLimit("= /login", "login"),), health_path=GRAFANA_HEALTH),
        ports=(PublishedPort(GRAFANA_PORT, GRAFANA_PORT, loopback=True),) if settings.admin_ui_private else (),
        metrics=MetricsEndpoint(GRAFANA_PORT),
        depends_on=(PROMETHEUS,),
    )
