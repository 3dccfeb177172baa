"""Grafana dashboards, built from (title, PromQL/LogQL, unit) so that every query is also checked by promtool."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.host_tools.backup import METRIC_DURATION, METRIC_LAST_SUCCESS, METRIC_SIZE

# Filesystems that can fill: not the in-memory ones nor the containers' overlay layers.
REAL_FILESYSTEMS = 'fstype!~"tmpfs|overlay"'


@dataclass(frozen=True)
class Panel:
    title: str
    expr: str  # PromQL
    unit: str = "short"
    legend: str = ""


HOST = [
    Panel("CPU busy", '1 - avg without (cpu) (rate(node_cpu_seconds_total{mode="idle"}[5m]))', "percentunit"),
    Panel("Memory available", "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes", "percentunit"),
    Panel("Disk free", f"node_filesystem_avail_bytes{{{REAL_FILESYSTEMS}}} / node_filesystem_size_bytes{{{REAL_FILESYSTEMS}}}",
          "percentunit", "{{mountpoint}}"),
    Panel("Disk I/O", "rate(node_disk_io_time_seconds_total[5m])", "percentunit", "{{device}}"),
    Panel("Network received", 'rate(node_network_receive_bytes_total{device!="lo"}[5m])', "Bps", "{{device}}"),
    Panel("OOM kills", "increase(node_vmstat_oom_kill[1h])"),
]
CONTAINERS = [
    Panel("CPU by container", 'sum by (name) (rate(container_cpu_usage_seconds_total{name=~"forgestack-.+"}[5m]))', "short", "{{name}}"),
    Panel("Memory by container", 'sum by (name) (container_memory_working_set_bytes{name=~"forgestack-.+"})', "bytes", "{{name}}"),
    Panel("Memory used of limit", 'sum by (name) (container_memory_working_set_bytes{name=~"forgestack-.+"})'
          ' / sum by (name) (container_spec_memory_limit_bytes{name=~"forgestack-.+"} > 0)', "percentunit", "{{name}}"),
    Panel("Restarts (15 min)", 'changes(container_start_time_seconds{name=~"forgestack-.+"}[15m])', "short", "{{name}}"),
]
GITEA_APP = [  # Gitea's own metrics: what any Prometheus scraping Gitea (job "gitea") can show
    Panel("Users", "gitea_users"),
    Panel("Repositories", "gitea_repositories"),
    Panel("Issues", "gitea_issues"),
    Panel("Gitea up", 'up{job="gitea"}', "short", "{{instance}}"),
]
GITEA = [
    *GITEA_APP,
    Panel("HTTPS probe", "probe_success", "short", "{{instance}}"),
    Panel("Certificate days left", "(probe_ssl_earliest_cert_expiry - time()) / 86400", "d", "{{instance}}"),
]
POSTGRES = [
    Panel("PostgreSQL up", "pg_up"),
    Panel("Connections", "sum by (state) (pg_stat_activity_count)", "short", "{{state}}"),
    Panel("Database size", "pg_database_size_bytes", "bytes", "{{datname}}"),
    Panel("Transactions", "rate(pg_stat_database_xact_commit[5m])", "ops", "{{datname}}"),
]
BACKUPS = [
    Panel("Hours since last backup", f"(time() - {METRIC_LAST_SUCCESS}) / 3600", "h"),
    Panel("Last backup size", METRIC_SIZE, "bytes"),
    Panel("Last backup duration", METRIC_DURATION, "s"),
]


WIDTH, HEIGHT = 12, 8  # two panels per row (the grid is 24 units wide)


@dataclass(frozen=True)
class CloudWatchPanel:
    """A graph of one CloudWatch metric as an alarm watches it, the alarm's threshold drawn as a red line."""

    title: str
    region: str
    namespace: str
    metric: str
    dimensions: Mapping[str, str]
    statistic: str
    period: int  # seconds
    threshold: float


def _board(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    for index, panel in enumerate(panels):
        panel["id"] = index + 1
        panel["gridPos"] = {"x": (index % 2) * WIDTH, "y": (index // 2) * HEIGHT, "w": WIDTH, "h": HEIGHT}
    return {
        "uid": f"forgestack-{uid}", "title": f"forgestack / {title}", "tags": ["forgestack"], "editable": False,
        "schemaVersion": 39, "time": {"from": "now-24h", "to": "now"}, "refresh": "1m", "panels": panels,
    }  # fmt: skip


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    return _board(uid, title, [
        {
            "type": "timeseries", "title": panel.title, "datasource": {"type": "prometheus", "uid": "prometheus"},
            "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
            "targets": [{"refId": "A", "expr": panel.expr, "legendFormat": panel.legend,
                         "datasource": {"type": "prometheus", "uid": "prometheus"}}],
        }
        for panel in panels
    ])  # fmt: skip


def cloudwatch_dashboard(uid: str, title: str, panels: list[CloudWatchPanel]) -> dict[str, Any]:
    """Grafana's CloudWatch data source (uid "cloudwatch"), one metric query per panel."""
    source = {"type": "cloudwatch", "uid": "cloudwatch"}
    return _board(uid, title, [
        {
            "type": "timeseries", "title": panel.title, "datasource": source,
            "fieldConfig": {"defaults": {
                "custom": {"thresholdsStyle": {"mode": "line"}},
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                             {"color": "red", "value": panel.threshold}]},
            }, "overrides": []},
            "targets": [{
                "refId": "A", "datasource": source, "queryMode": "Metrics", "metricQueryType": 0, "metricEditorMode": 0,
                "region": panel.region, "namespace": panel.namespace, "metricName": panel.metric,
                "dimensions": dict(panel.dimensions), "matchExact": True, "statistic": panel.statistic,
                "period": str(panel.period), "id": "", "expression": "", "label": "",
            }],
        }
        for panel in panels
    ])  # fmt: skip


def all_panels(backups: bool) -> dict[str, list[Panel]]:
    boards = {"host": HOST, "containers": CONTAINERS, "gitea": GITEA, "postgres": POSTGRES}
    if backups:
        boards["backups"] = BACKUPS
    return boards


def all_dashboards(backups: bool) -> dict[str, str]:
    """File name (without .json) -> dashboard JSON."""
    return {uid: json.dumps(dashboard(uid, uid.capitalize(), panels), indent=2) for uid, panels in all_panels(backups).items()}
