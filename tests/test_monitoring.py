"""Observability: configs through their real validators (promtool, amtool), alert rules unit-tested, invariants per stack."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.services import logs, mail, monitoring
from components.services.catalog import routed_hostnames, service_specs
from components.services.dashboards import all_panels
from components.services.spec import PublishedPort, ServiceSpec
from components.settings import ConfigError, Settings, parse
from rehearsal.engine import ProgramRun, stack_config

STACKS = ("dev", "prod", "local")
promtool_required = pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian package prometheus (.ci/run installs it)")
amtool_required = pytest.mark.skipif(shutil.which("amtool") is None, reason="Debian package prometheus-alertmanager")


def settings_of(stack: str, **overrides: Any) -> Settings:
    return parse(stack_config(stack, overrides), stack)


def specs_of(settings: Settings) -> dict[str, ServiceSpec]:
    return {spec.name: spec for spec in service_specs(settings)}


def config_file(spec: ServiceSpec, path: str) -> str:
    return next(f.content for f in spec.config_files if f.path == path)


def run_tool(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def prometheus_files(settings: Settings, root: Path) -> Path:
    """The rendered config and rules, with their absolute container paths moved below root (promtool opens them)."""
    prometheus = specs_of(settings)[monitoring.PROMETHEUS]
    (root / "rules").mkdir(parents=True)
    (root / "secrets").mkdir()
    (root / "rules" / "forgestack.yml").write_text(config_file(prometheus, monitoring.PROMETHEUS_RULES))
    for secret in prometheus.secret_files:
        (root / "secrets" / Path(secret.path).name).write_text("token")
    config = (config_file(prometheus, monitoring.PROMETHEUS_CONFIG)
              .replace(str(Path(monitoring.PROMETHEUS_RULES).parent), str(root / "rules"))
              .replace(monitoring.SECRETS_DIR, str(root / "secrets")))
    (root / "prometheus.yml").write_text(config)
    return root / "prometheus.yml"


# ------------------------------------------------------------------ real validators


@pytest.mark.validator
@promtool_required
@pytest.mark.parametrize("stack", STACKS)
def test_promtool_accepts_the_config_and_rules(stack: str, tmp_path: Path) -> None:
    result = run_tool(["promtool", "check", "config", str(prometheus_files(settings_of(stack), tmp_path))])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.validator
@promtool_required
def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    rules = yaml.safe_load(config_file(specs_of(settings_of("dev"))[monitoring.PROMETHEUS], monitoring.PROMETHEUS_RULES))
    rules["groups"][0]["rules"][0]["expr"] = "up == == 0"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    assert run_tool(["promtool", "check", "rules", str(tmp_path / "rules.yml")]).returncode != 0


@pytest.mark.validator
@promtool_required
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool has no expression checker, so each panel's query becomes a recording rule it parses."""
    rules = [{"record": f"forgestack:dashboard:{board}_{index}", "expr": panel.expr}
             for board, panels in all_panels(backups=True).items() for index, panel in enumerate(panels)]
    (tmp_path / "dashboards.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = run_tool(["promtool", "check", "rules", str(tmp_path / "dashboards.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def _expand(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"{{ \$labels\.(\w+) }}", lambda match: labels.get(match.group(1), ""), template)


# (alert, input series, evaluation time, labels of the firing alert; None: must stay silent)
ALERT_CASES: list[tuple[str, dict[str, str], str, dict[str, str] | None]] = [
    ("TargetDown", {'up{job="gitea", instance="gitea:3000"}': "0x20"}, "10m", {"job": "gitea", "instance": "gitea:3000"}),
    ("TargetDown", {'up{job="gitea", instance="gitea:3000"}': "0 0 0 1x20"}, "10m", None),
    ("DiskAlmostFull", {'node_filesystem_avail_bytes{fstype="ext4", mountpoint="/srv/forgestack"}': "5x30",
                        'node_filesystem_size_bytes{fstype="ext4", mountpoint="/srv/forgestack"}': "100x30"},
     "15m", {"fstype": "ext4", "mountpoint": "/srv/forgestack"}),
    ("DiskAlmostFull", {'node_filesystem_avail_bytes{fstype="ext4", mountpoint="/"}': "50x30",
                        'node_filesystem_size_bytes{fstype="ext4", mountpoint="/"}': "100x30"}, "15m", None),
    ("DiskFillingWithin24h", {'node_filesystem_avail_bytes{fstype="ext4", mountpoint="/"}': "1000000000-1000000x500"},
     "7h", {"fstype": "ext4", "mountpoint": "/"}),
    ("DiskFillingWithin24h", {'node_filesystem_avail_bytes{fstype="ext4", mountpoint="/"}': "1000000000-1000x500"}, "7h", None),
    ("MemoryLow", {"node_memory_MemAvailable_bytes": "5x30", "node_memory_MemTotal_bytes": "100x30"}, "15m", {}),
    ("CpuBusy", {'node_cpu_seconds_total{cpu="0", mode="idle"}': "0+1x40"}, "25m", {"mode": "idle"}),
    ("CpuBusy", {'node_cpu_seconds_total{cpu="0", mode="idle"}': "0+55x40"}, "25m", None),
    ("OomKill", {"node_vmstat_oom_kill": "0 0 0 1 1 1 1 1"}, "5m", {}),
    ("ContainerRestarting", {'container_start_time_seconds{name="forgestack-gitea"}': "100 200 300 400 500 600"}, "5m",
     {"name": "forgestack-gitea"}),
    ("ContainerRestarting", {'container_start_time_seconds{name="forgestack-gitea"}': "100x20"}, "15m", None),
    # The workspaces host has its own alert (its runbook is not a container's): TargetDown leaves its job alone.
    ("TargetDown", {'up{job="workspaces-host", instance="10.30.0.20:9100"}': "0x20"}, "10m", None),
    ("WorkspacesHostDown", {'up{job="workspaces-host", instance="10.30.0.20:9100"}': "0x20"}, "10m",
     {"job": "workspaces-host", "instance": "10.30.0.20:9100"}),
    ("WorkspacesHostDown", {'up{job="workspaces-host", instance="10.30.0.20:9100"}': "1x20"}, "10m", None),
    ("PostgresDown", {"pg_up": "0x10"}, "5m", {}),
    ("Watchdog", {"up": "1x10"}, "1m", {}),  # fires whatever the series: it proves the rule evaluation itself
    ("WebhookDeliveriesFailing", {"webhook_relay_failed_total": "0 0 1 1 1 1", "webhook_relay_queue_full_total": "0x5"}, "5m", {}),
    ("WebhookDeliveriesFailing", {"webhook_relay_failed_total": "0x5", "webhook_relay_queue_full_total": "0 2 2 2 2 2"}, "5m", {}),
    ("WebhookDeliveriesFailing", {"webhook_relay_failed_total": "3x60", "webhook_relay_queue_full_total": "1x60"}, "50m", None),
    ("ProbeFailing", {'probe_success{instance="https://git.forge.example.com/"}': "0x20"}, "10m",
     {"instance": "https://git.forge.example.com/"}),
    ("CertificateExpiringSoon", {'probe_ssl_earliest_cert_expiry{instance="https://git.forge.example.com/"}': "439200x200"},
     "2h", {"instance": "https://git.forge.example.com/"}),
    ("CertificateExpiringSoon", {'probe_ssl_earliest_cert_expiry{instance="https://git.forge.example.com/"}': "2592000x200"},
     "2h", None),
    ("RestoreDrillFailed", {"forgestack_restore_drill_last_result": "0x10"}, "5m", {}),
    ("RestoreDrillFailed", {"forgestack_restore_drill_last_result": "1x10"}, "5m", None),
]
# Alerts that take hours or days: evaluated hourly (a minute's steps over eight days cost promtool about a minute; over
# the backup alerts' ten hours and a day, two thirds of the minute cases' time).
DAYS_ALERT_CASES: list[tuple[str, dict[str, str], str, dict[str, str] | None]] = [
    # prod backs up hourly: a backup 10 hours old is past its 8 hours, one 1.7 hours old is not
    ("BackupTooOld", {"forgestack_backup_last_success_timestamp_seconds": "0x12"}, "10h", {}),
    ("BackupTooOld", {"forgestack_backup_last_success_timestamp_seconds": "30000x12"}, "10h", None),
    ("BackupNeverSucceeded", {"up": "1x30"}, "25h", {}),
    ("BackupNeverSucceeded", {"forgestack_backup_last_success_timestamp_seconds": "1x30"}, "25h", None),
    # the last good drill at time 0: 8 days and 2 hours later it is too old; one 6.5 days old is not
    ("RestoreDrillTooOld", {"forgestack_restore_drill_last_success_timestamp_seconds": "0x220"}, "8d2h", {}),
    ("RestoreDrillTooOld", {"forgestack_restore_drill_last_success_timestamp_seconds": "130000x220"}, "8d2h", None),
    ("RestoreDrillNeverPassed", {"up": "1x220"}, "8d2h", {}),
    ("RestoreDrillNeverPassed", {"forgestack_restore_drill_last_success_timestamp_seconds": "1x220"}, "8d2h", None),
]


@pytest.mark.validator
@promtool_required
def test_alert_rules_fire_when_they_should_and_only_then(tmp_path: Path) -> None:
    """promtool test rules over prod's rules (1 h backups: at most 8 h old) with a workspaces host, one case per row of
    ALERT_CASES."""
    settings = parse(stack_config("prod", {"forgestack:workspaces": "true", "forgestack:workspacesReleaseSha256": "ab" * 32}),
                     "prod")
    rules = {a.name: a for a in monitoring.alerts(settings, probes=True)}
    assert {case[0] for case in ALERT_CASES + DAYS_ALERT_CASES} == set(rules), "every alert has a test case"
    (tmp_path / "rules.yml").write_text(monitoring.rules_file(settings, probes=True))
    for interval, cases in (("1m", ALERT_CASES), ("1h", DAYS_ALERT_CASES)):
        tests = []
        for name, series, eval_time, labels in cases:
            expected = []
            if labels is not None:
                all_labels = {**labels, "severity": rules[name].severity}
                expected = [{"exp_labels": all_labels, "exp_annotations": {
                    "summary": _expand(rules[name].summary, all_labels), "runbook": _expand(rules[name].runbook, all_labels)}}]
            tests.append({
                "interval": interval,
                "input_series": [{"series": key, "values": values} for key, values in series.items()],
                "alert_rule_test": [{"eval_time": eval_time, "alertname": name, "exp_alerts": expected}],
            })
        (tmp_path / f"rules_test_{interval}.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": interval,
                                                                            "tests": tests}))
        result = run_tool(["promtool", "test", "rules", str(tmp_path / f"rules_test_{interval}.yml")])
        assert result.returncode == 0, result.stdout + result.stderr


# One value per receiver kind (the secrets a test must never find in the rendered config).
RECEIVER_VALUES = {
    "forgestack:alertSlackWebhookUrl": "https://hooks.slack.com/services/T0/B0/slack-s3cret",
    "forgestack:alertTeamsWebhookUrl": "https://prod-1.westeurope.logic.azure.com/workflows/teams-s3cret",
    "forgestack:alertWebhookUrl": "https://bridge.example.com/hooks/webhook-s3cret",
    "forgestack:alertPagerdutyRoutingKey": "pagerdutyS3cret0123456789abcdefg",
}
NO_EMAIL = {"forgestack:alertEmailTo": "", "forgestack:alertSmtpSmarthost": "", "forgestack:alertSmtpFrom": ""}
RECEIVER_COMBINATIONS = [
    {**dict(chosen), **({} if email else NO_EMAIL),
     **({"forgestack:alertSmtpUsername": "AKIAEXAMPLE", "forgestack:alertSmtpPassword": "smtp-s3cret"} if email else {})}
    for email in (True, False)
    for size in range(len(RECEIVER_VALUES) + 1)
    for chosen in itertools.combinations(RECEIVER_VALUES.items(), size)
]
# Fields of the pinned Alertmanager (0.28) that Debian's amtool (0.25) predates, and what they may hold (from
# Alertmanager's configuration reference): webhook url_file (0.26) and the Teams Workflows receiver (0.28).
MSTEAMSV2_KEYS = {"webhook_url_file", "send_resolved"}


def amtool_checkable(rendered: str, secrets_dir: Path) -> str:
    """The rendered config as Debian's amtool 0.25 can check it: secret files moved below secrets_dir, webhook
    url_file as an inline url, the msteamsv2 entries taken out after their keys are checked against the reference."""
    document = yaml.safe_load(rendered.replace(monitoring.SECRETS_DIR, str(secrets_dir)))
    for receiver in document["receivers"]:
        for teams in receiver.pop("msteamsv2_configs", []):
            assert set(teams) == MSTEAMSV2_KEYS and Path(teams["webhook_url_file"]).parent == secrets_dir
        for webhook in receiver.get("webhook_configs", []):
            assert Path(webhook.pop("url_file")).parent == secrets_dir
            webhook["url"] = "http://validator.invalid/"
    return yaml.safe_dump(document)


@pytest.mark.validator
@amtool_required
@pytest.mark.parametrize("overrides", RECEIVER_COMBINATIONS, ids=lambda o: "+".join(
    k.removeprefix("forgestack:alert") for k in o if k in RECEIVER_VALUES or k == "forgestack:alertSmtpPassword") or "none")
def test_amtool_accepts_every_receiver_combination(overrides: dict[str, str], tmp_path: Path) -> None:
    settings = settings_of("prod", **overrides)
    rendered = monitoring.alertmanager_config(settings)
    assert "s3cret" not in rendered  # secrets reach the container as files, never inside the config
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for secret_file in monitoring.alertmanager_secret_files(settings):
        (secrets / Path(secret_file.path).name).write_text("https://x.example.com/\n")
    (tmp_path / "alertmanager.yml").write_text(amtool_checkable(rendered, secrets))
    result = run_tool(["amtool", "check-config", str(tmp_path / "alertmanager.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.validator
@amtool_required
@pytest.mark.parametrize(("labels", "receiver"), [
    (["severity=critical", "alertname=PostgresDown"], "page"),
    (["severity=warning", "alertname=DiskFillingWithin24h"], "notify"),
    (["severity=none", "alertname=Watchdog"], "nobody"),
    (["alertname=Unlabelled"], "notify"),
])
def test_severity_decides_who_is_paged(tmp_path: Path, labels: list[str], receiver: str) -> None:
    """amtool's own route tester on the rendered tree; PagerDuty sits in the paging receiver only."""
    settings = settings_of("prod", **RECEIVER_VALUES)
    rendered = monitoring.alertmanager_config(settings)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "alertmanager.yml").write_text(amtool_checkable(rendered, tmp_path / "secrets"))
    result = run_tool(["amtool", "config", "routes", "test", f"--config.file={tmp_path / 'alertmanager.yml'}", *labels])
    assert result.stdout.split() == [receiver], result.stdout + result.stderr
    receivers = {r["name"]: r for r in yaml.safe_load(rendered)["receivers"]}
    kinds = {"email_configs", "slack_configs", "msteamsv2_configs", "webhook_configs"}
    assert set(receivers["page"]) - {"name"} == kinds | {"pagerduty_configs"}
    assert set(receivers["notify"]) - {"name"} == kinds  # warnings never page
    assert set(receivers["nobody"]) == {"name"}


@pytest.mark.validator
@amtool_required
def test_amtool_rejects_a_broken_config(tmp_path: Path) -> None:
    (tmp_path / "alertmanager.yml").write_text(monitoring.alertmanager_config(settings_of("dev")).replace("receiver: page",
                                                                                                        "receiver: undefined"))
    assert run_tool(["amtool", "check-config", str(tmp_path / "alertmanager.yml")]).returncode != 0


# ------------------------------------------------------------------ derived configuration


def test_scrape_targets_derive_from_the_specs() -> None:
    settings = settings_of("dev")
    specs = specs_of(settings)
    config = yaml.safe_load(config_file(specs[monitoring.PROMETHEUS], monitoring.PROMETHEUS_CONFIG))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    with_metrics = {name for name, spec in specs.items() if spec.metrics}
    assert set(jobs) == with_metrics | {"probe-https"}
    assert jobs["gitea"]["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metricsToken"}
    assert jobs["postgres-exporter"]["static_configs"] == [{"targets": ["postgres-exporter:9187"]}]
    probes = jobs["probe-https"]["static_configs"][0]["targets"]
    assert probes == [f"https://{host}{path}" for host, path in (
        (settings.hostname("git"), "/api/healthz"), (settings.hostname("hooks"), "/healthz"),
        (settings.hostname("portainer"), "/api/system/status"), (settings.hostname("grafana"), "/api/health"))]
    assert [url.split("/")[2] for url in probes] == list(routed_hostnames(settings, list(specs.values())))
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_prometheus_reads_the_gitea_token_from_a_file_it_owns() -> None:
    prometheus = specs_of(settings_of("dev"))[monitoring.PROMETHEUS]
    assert [(s.credential, s.path, s.owner) for s in prometheus.secret_files] == [
        ("metricsToken", "/run/secrets/metricsToken", monitoring.NOBODY)]


@pytest.mark.parametrize(("stack", "metrics_days", "log_days"), [("dev", 15, 7), ("prod", 90, 30)])
def test_retention_follows_the_stack(stack: str, metrics_days: int, log_days: int) -> None:
    specs = specs_of(settings_of(stack))
    assert f"--storage.tsdb.retention.time={metrics_days}d" in specs[monitoring.PROMETHEUS].command
    loki = yaml.safe_load(config_file(specs[logs.LOKI], logs.LOKI_CONFIG))
    assert loki["limits_config"]["retention_period"] == f"{log_days * 24}h"
    assert loki["compactor"]["retention_enabled"] is True and loki["compactor"]["delete_request_store"] == "filesystem"


def test_staging_certificates_are_probed_without_verification() -> None:
    dev = yaml.safe_load(config_file(specs_of(settings_of("dev"))[monitoring.BLACKBOX], monitoring.BLACKBOX_CONFIG))
    prod = yaml.safe_load(config_file(specs_of(settings_of("prod"))[monitoring.BLACKBOX], monitoring.BLACKBOX_CONFIG))
    assert dev["modules"]["https_2xx"]["http"]["tls_config"]["insecure_skip_verify"] is True
    assert prod["modules"]["https_2xx"]["http"]["tls_config"]["insecure_skip_verify"] is False


def test_backup_alert_threshold_follows_the_schedule() -> None:
    dev = {a.name: a for a in monitoring.alerts(settings_of("dev"), probes=True)}
    prod = {a.name: a for a in monitoring.alerts(settings_of("prod"), probes=True)}
    assert dev["BackupTooOld"].expr.endswith("> 194400")  # (2 * 24 h + 6 h)
    assert prod["BackupTooOld"].expr.endswith("> 28800")  # (2 * 1 h + 6 h)
    assert "BackupTooOld" not in {a.name for a in monitoring.alerts(settings_of("local"), probes=False)}


def test_every_alert_has_severity_and_a_runbook() -> None:
    for alert in monitoring.alerts(settings_of("prod"), probes=True):
        assert alert.severity in ("critical", "warning") or alert.name == monitoring.WATCHDOG, alert.name
        assert alert.runbook and "\n" not in alert.runbook, alert.name


def test_grafana_is_provisioned_and_routed() -> None:
    settings = settings_of("dev")
    grafana = specs_of(settings)[monitoring.GRAFANA]
    assert grafana.route is not None and settings.hostname(grafana.route.subdomain) == "grafana.dev.forge.example.com"
    assert grafana.env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    # The local admin (break-glass) and, with single sign-on, Gitea's OAuth2 client: all files, none in env.
    assert [s.credential for s in grafana.secret_files] == ["grafanaAdminPassword", "grafanaOauthClientId",
                                                            "grafanaOauthClientSecret"]
    datasources = yaml.safe_load(config_file(grafana, "/etc/grafana/provisioning/datasources/forgestack.yaml"))
    assert {d["uid"]: d["url"] for d in datasources["datasources"]} == {"prometheus": "http://prometheus:9090",
                                                                       "loki": "http://loki:3100"}
    boards = sorted(Path(f.path).name for f in grafana.config_files if f.path.startswith(monitoring.GRAFANA_DASHBOARDS))
    assert boards == ["backups.json", "containers.json", "gitea.json", "host.json", "postgres.json"]


def test_alloy_ships_container_and_journal_logs_to_loki_without_the_socket() -> None:
    alloy = specs_of(settings_of("dev"))[logs.ALLOY]
    config = config_file(alloy, logs.ALLOY_CONFIG)
    assert 'url = "http://loki:3100/loki/api/v1/push"' in config
    assert '"/var/lib/docker/containers/*/*-json.log"' in config and 'path          = "/var/log/journal"' in config
    assert "docker.sock" not in config
    assert config.count("{") == config.count("}")  # balanced blocks (no Alloy binary here to parse it)


@pytest.mark.parametrize("access", ["public", "admin-cidrs", "private"])
def test_only_grafana_is_reachable_and_only_as_admin_ui_access_says(access: str) -> None:
    settings = settings_of("prod", **{"forgestack:adminUiAccess": access, "forgestack:adminCidrs": '["203.0.113.0/24"]'})
    for name, spec in specs_of(settings).items():
        if name in monitoring.__dict__.values() or name in (logs.LOKI, logs.ALLOY):
            reachable = name == monitoring.GRAFANA
            assert (spec.route is not None) == (reachable and access != "private"), name
            loopback = (PublishedPort(monitoring.GRAFANA_PORT, monitoring.GRAFANA_PORT, loopback=True),)
            assert spec.ports == (loopback if reachable and access == "private" else ()), name
    grafana = specs_of(settings)[monitoring.GRAFANA]
    expected_url = "http://localhost:3000/" if access == "private" else "https://grafana.forge.example.com/"
    assert grafana.env["GF_SERVER_ROOT_URL"] == expected_url == monitoring.grafana_url(settings)


def test_alert_mail_goes_through_the_stacks_relay_unless_overridden() -> None:
    """The stack files name only alertEmailTo: SES (with its SMTP user) on AWS, Mailpit locally."""
    aws = yaml.safe_load(monitoring.alertmanager_config(settings_of("prod")))["global"]
    assert (aws["smtp_smarthost"], aws["smtp_from"], aws["smtp_require_tls"]) == (
        "email-smtp.eu-west-1.amazonaws.com:587", "alerts@mail.forge.example.com", True)
    assert aws["smtp_auth_username"] == monitoring.SES_USERNAME_PLACEHOLDER  # the access key id, filled at deploy
    assert aws["smtp_auth_password_file"] == mail.SMTP_PASSWORD_FILE
    local = yaml.safe_load(monitoring.alertmanager_config(settings_of("local", **{"forgestack:alertEmailTo": "ops@example.com"})))
    assert (local["global"]["smtp_smarthost"], local["global"]["smtp_require_tls"]) == ("mailpit:1025", False)
    assert "smtp_auth_username" not in local["global"]
    own = yaml.safe_load(monitoring.alertmanager_config(settings_of(
        "prod", **{"forgestack:alertSmtpSmarthost": "smtp.example.net:587", "forgestack:alertSmtpFrom": "a@example.net"})))
    assert (own["global"]["smtp_smarthost"], own["global"]["smtp_from"]) == ("smtp.example.net:587", "a@example.net")


@pytest.mark.parametrize(("overrides", "key"), [
    ({"forgestack:alertSmtpSmarthost": "smtp.example.net:587"}, "forgestack:alertSmtpFrom"),  # an own relay names its sender
    ({"forgestack:alertSmtpSmarthost": "email-smtp.eu-west-1.amazonaws.com:587", "forgestack:alertSmtpFrom": "a@example.com"},
     "forgestack:alertSmtpSmarthost"),  # SES without SMTP credentials refuses every message
])
def test_an_alert_relay_that_cannot_send_is_refused(overrides: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        settings_of("dev", **overrides)


def test_alert_secrets_stay_secret_in_the_stack() -> None:
    """Every receiver's URL or key reaches Alertmanager as a 0400 secret upload, and nowhere else."""
    from rehearsal.engine import has_secret, run_program

    run = run_program("prod", stack_config("prod", RECEIVER_VALUES))
    alertmanager = next(c for c in run.of_type("docker:index/container:Container") if c.inputs["name"] == "forgestack-alertmanager")
    assert alertmanager.raw_inputs is not None and has_secret(alertmanager.raw_inputs["uploads"])
    uploads = {u["file"]: u for u in alertmanager.inputs["uploads"]}
    for key, value in RECEIVER_VALUES.items():
        upload = uploads[f"/run/secrets/{key.removeprefix('forgestack:')}"]
        assert (upload["content"], upload["permissions"]) == (value, "0400")
    everything_else = str(run.outputs) + " ".join(" ".join(c.inputs.get("envs") or []) for c in run.of_type(
        "docker:index/container:Container")) + str([u["content"] for u in uploads.values() if "/secrets/" not in u["file"]])
    assert "s3cret" not in everything_else


def test_owned_data_directories_are_prepared_before_containers(dev_run: ProgramRun) -> None:
    prepare = dev_run.one("command:local:Command", name="services-data-directories")
    for directory, uid in (("prometheus", 65534), ("grafana", 472), ("loki", 10001), ("alertmanager", 65534)):
        assert f"install -d -o {uid} -g {uid} /srv/forgestack/{directory}" in prepare.inputs["create"]
    for container in dev_run.of_type("docker:index/container:Container"):
        assert prepare.urn in container.depends_on, container.name


def test_grafana_url_is_exported(dev_run: ProgramRun) -> None:
    assert dev_run.outputs["grafanaUrl"] == "https://grafana.dev.forge.example.com/"


def test_readme_lists_every_alert() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [a.name for a in monitoring.alerts(settings_of("prod"), probes=True) if f"`{a.name}`" not in readme]
    assert not missing, f"README's alert table lacks {missing}"
