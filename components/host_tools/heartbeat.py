#!/usr/bin/env python3
"""forgestack heartbeat: one CloudWatch datapoint while the host's alerting works. Run every minute by a systemd timer.

Sends the datapoint only when Docker answers and (with --alertmanager-container) Alertmanager holds the
always-firing Watchdog alert, which proves Prometheus evaluates its rules and reaches Alertmanager. Anything
less sends nothing: the CloudWatch alarm treats missing datapoints as breaching and mails the operator, so a dead
host, a stopped Docker or a broken monitoring stack is heard about without the host's help.

Exit codes: 0 sent, 1 not healthy (nothing sent; the reason is one line on stderr), 2 usage, 3 CloudWatch refused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

DIMENSION = "Stack"  # the metric's one dimension; components/alarms.py alarms on the same
ALERTS_URL = "http://127.0.0.1:9093/api/v2/alerts?active=true&silenced=false&inhibited=false"
COMMAND_TIMEOUT_SECONDS = 20


class UnhealthyError(Exception):
    """A reason to send no heartbeat."""


def run(what: str, argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise UnhealthyError(f"{what} ({argv[0]} {argv[1]}: {error})") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UnhealthyError(f"{what} ({argv[0]} {argv[1]} exit {result.returncode}: {last})")
    return result.stdout


def check_docker() -> None:
    run("Docker does not answer", ["docker", "info", "--format", "{{.ServerVersion}}"])


def check_watchdog(container: str, alertname: str) -> None:
    """Alertmanager's own API, asked inside its container (its port is not published on the host)."""
    text = run(f"Alertmanager ({container}) does not answer", ["docker", "exec", container, "wget", "-q", "-O", "-", ALERTS_URL])
    try:
        alerts: Any = json.loads(text)
    except json.JSONDecodeError:
        raise UnhealthyError(f"Alertmanager answered something that is not JSON: {text[:80]!r}") from None
    if not isinstance(alerts, list):
        raise UnhealthyError("Alertmanager answered something that is not a list of alerts")
    if not any(isinstance(a, dict) and isinstance(a.get("labels"), dict) and a["labels"].get("alertname") == alertname
               for a in alerts):
        raise UnhealthyError(f"Alertmanager holds no active {alertname} alert: Prometheus is not evaluating rules or not reaching it")


def send(namespace: str, metric: str, stack: str) -> None:
    import boto3  # imported here: --help and the checks work without it

    boto3.client("cloudwatch").put_metric_data(
        Namespace=namespace,
        MetricData=[{"MetricName": metric, "Dimensions": [{"Name": DIMENSION, "Value": stack}], "Value": 1.0, "Unit": "Count"}],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="AWS region and credentials come from the environment (the instance role on the host).")
    parser.add_argument("--stack", required=True, help=f"the stack name, the metric's {DIMENSION} dimension")
    parser.add_argument("--namespace", required=True, help="CloudWatch namespace of the metric")
    parser.add_argument("--metric", required=True, help="metric name")
    parser.add_argument("--alertmanager-container", default="", help="check its Watchdog alert too (omit when monitoring is off)")
    parser.add_argument("--watchdog", default="", help="name of the always-firing alert (with --alertmanager-container)")
    args = parser.parse_args(argv)
    if args.alertmanager_container and not args.watchdog:
        parser.error("--alertmanager-container needs --watchdog (the name of the always-firing alert)")
    try:
        check_docker()
        if args.alertmanager_container:
            check_watchdog(args.alertmanager_container, args.watchdog)
    except UnhealthyError as problem:
        print(f"heartbeat: not sent: {problem}", file=sys.stderr)
        return 1
    try:
        send(args.namespace, args.metric, args.stack)
    except Exception as error:
        print(f"heartbeat: CloudWatch refused the datapoint: {type(error).__name__}: {error}", file=sys.stderr)
        return 3
    print(f"heartbeat: sent {args.namespace}/{args.metric} {DIMENSION}={args.stack}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
