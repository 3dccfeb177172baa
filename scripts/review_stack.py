#!/usr/bin/env python3
"""Ephemeral review stacks: a pull request labelled `review-stack` gets its own small forge, destroyed when the pull
request is closed (or unlabelled) or its time is up.

    python scripts/review_stack.py config --pr 42 --hosted-zone review.forge.example.com --secrets-provider URL
    python scripts/review_stack.py sweep --hosted-zone review.forge.example.com --open-prs 42,57

`config` writes Pulumi.review-<pr>.yaml (dev's settings at the smallest size: no monitoring, logging, Portainer or CI,
Let's Encrypt's staging CA, nothing protected, one day of backups, a budget of REVIEW_BUDGET_USD, expiresAt --hours
from now, at most MAX_HOURS) and creates the stack if it does not exist; it refuses a new stack when MAX_REVIEW_STACKS
already exist. `sweep` destroys and removes every review stack whose pull request is not in --open-prs, whose
expiresAt has passed, or which never finished a deploy MAX_HOURS after its last update (one never updated, just
created for an open pull request, stays; so does one under a running update); each step is printed.

Review stacks run a pull request's code with the right to create AWS resources, so they live in an AWS account of
their own (scripts/ci_roles.py --stacks review, against that account) and behind a GitHub environment with required
reviewers (README, Delivery).

Exit codes: 0 done, 1 Pulumi failed (the last line of its output is printed), 2 bad usage or a limit reached.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.settings import EXPIRES_AT_FORMAT
from rehearsal.engine import REPO
from rehearsal.engine import REVIEW_STACK_PREFIX as REVIEW_PREFIX

BASE_STACK: Final = "dev"
MAX_REVIEW_STACKS: Final = 3  # at most this many at once: names and costs bounded
DEFAULT_HOURS: Final = 48
MAX_HOURS: Final = 168
REVIEW_BUDGET_USD: Final = 40  # a budget alert per review stack; a t3.medium for a week costs about 8 USD

RunPulumi = Callable[[Sequence[str]], str]


class UsageError(Exception):
    """Exit 2."""


class PulumiError(Exception):
    """Exit 1: a pulumi command failed."""


def say(line: str) -> None:
    print(f"review-stack: {line}", file=sys.stderr, flush=True)


def stack_name(pr: int) -> str:
    return f"{REVIEW_PREFIX}{pr}"


def review_config(base: Mapping[str, Any], pr: int, hosted_zone: str, expires_at: datetime) -> dict[str, Any]:
    """The base stack's config at the smallest size; what makes a stack a review stack is set here and only here."""
    config = {key: value for key, value in base.items() if key not in ("forgestack:adminUiAccess", "forgestack:alertEmailTo")}
    config.update({
        "forgestack:domain": f"pr-{pr}.{hosted_zone}",
        "forgestack:hostedZone": hosted_zone,
        "forgestack:instanceType": "t3.medium",
        "forgestack:dataVolumeGb": 10,
        "forgestack:rootVolumeGb": 20,
        "forgestack:protect": False,
        "forgestack:acmeStaging": True,
        "forgestack:monitoring": False,
        "forgestack:logging": False,
        "forgestack:portainer": False,
        "forgestack:ci": "none",
        "forgestack:backupRetentionDays": 1,
        "forgestack:backupArchiveAfterDays": 0,
        "forgestack:backupIntervalHours": 24,
        "forgestack:snapshotRetentionDays": 1,
        "forgestack:flowLogRetentionDays": 1,
        "forgestack:budgetMonthlyUsd": REVIEW_BUDGET_USD,
        "forgestack:expiresAt": expires_at.strftime(EXPIRES_AT_FORMAT),
    })
    return config


def base_config() -> dict[str, Any]:
    document = yaml.safe_load((REPO / f"Pulumi.{BASE_STACK}.yaml").read_text())
    return dict(document["config"])


def write_stack_file(directory: Path, pr: int, config: Mapping[str, Any]) -> Path:
    path = directory / f"Pulumi.{stack_name(pr)}.yaml"
    header = f"# Review stack of pull request #{pr}, written by scripts/review_stack.py (not committed).\n"
    path.write_text(header + yaml.safe_dump({"config": dict(config)}, sort_keys=False))
    return path


def pulumi_runner(args: Sequence[str]) -> str:
    run = subprocess.run(["pulumi", *args, "--non-interactive"], capture_output=True, text=True, check=False, cwd=REPO)
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or run.stdout.strip().splitlines() or ["no output"])[-1]
        raise PulumiError(f"pulumi {' '.join(args)} failed: {last}")
    return run.stdout


def review_stacks(pulumi: RunPulumi) -> list[dict[str, Any]]:
    """The review stacks of the backend, by short name (the DIY backend may list organization/project/stack)."""
    stacks = json.loads(pulumi(["stack", "ls", "--json"]) or "[]")
    found = []
    for stack in stacks:
        name = str(stack.get("name", "")).rsplit("/", 1)[-1]
        if name.startswith(REVIEW_PREFIX) and name[len(REVIEW_PREFIX):].isdigit():
            found.append({**stack, "name": name})
    return found


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def sweep_reason(stack: Mapping[str, Any], outputs: Mapping[str, Any], open_prs: set[int], now: datetime) -> str | None:
    """Why this review stack goes, or None while it may stay."""
    pr = int(str(stack["name"])[len(REVIEW_PREFIX):])
    if stack.get("updateInProgress"):
        return None  # never under a running deploy; the next sweep looks again
    if pr not in open_prs:
        return f"pull request #{pr} is closed or no longer labelled"
    if outputs.get("expiresAt"):
        expires = parse_time(str(outputs["expiresAt"]))
        return f"expired at {outputs['expiresAt']}" if expires <= now else None
    last = stack.get("lastUpdate")
    # Never updated: created a moment ago, its first `pulumi up` about to start (and nothing to pay for): it stays.
    if last and parse_time(str(last)) + timedelta(hours=MAX_HOURS) <= now:
        return f"no finished deploy, last update {last}"
    return None


def config_command(pulumi: RunPulumi, directory: Path, pr: int, hosted_zone: str, hours: int, secrets_provider: str,
                   now: datetime) -> str:
    if not 1 <= hours <= MAX_HOURS:
        raise UsageError(f"--hours {hours}: expected 1 to {MAX_HOURS}")
    existing = [stack["name"] for stack in review_stacks(pulumi)]
    name = stack_name(pr)
    if name not in existing and len(existing) >= MAX_REVIEW_STACKS:
        raise UsageError(f"{len(existing)} review stacks exist already ({', '.join(sorted(existing))}), at most "
                         f"{MAX_REVIEW_STACKS}: close or unlabel a pull request first")
    path = write_stack_file(directory, pr, review_config(base_config(), pr, hosted_zone, now + timedelta(hours=hours)))
    say(f"wrote {path.name} (expires in {hours} h)")
    if name not in existing:
        pulumi(["stack", "init", name, "--secrets-provider", secrets_provider])
        say(f"created stack {name}")
    return name


def sweep_command(pulumi: RunPulumi, directory: Path, hosted_zone: str, open_prs: set[int], now: datetime) -> list[str]:
    swept = []
    stacks = review_stacks(pulumi)
    say(f"{len(stacks)} review stack(s); open labelled pull requests: {', '.join(map(str, sorted(open_prs))) or 'none'}")
    for stack in stacks:
        name = stack["name"]
        try:
            outputs = json.loads(pulumi(["stack", "output", "--json", "--stack", name]) or "{}")
        except PulumiError:
            outputs = {}
        reason = sweep_reason(stack, outputs, open_prs, now)
        if reason is None:
            say(f"{name}: stays")
            continue
        pr = int(name[len(REVIEW_PREFIX):])
        # destroy works from the state; the stack file gives it the project's config and secrets provider as before
        write_stack_file(directory, pr, review_config(base_config(), pr, hosted_zone, now))
        say(f"{name}: destroying ({reason})")
        pulumi(["destroy", "--stack", name, "--yes", "--skip-preview"])
        pulumi(["stack", "rm", name, "--yes"])
        say(f"{name}: destroyed and removed")
        swept.append(name)
    return swept


def parse_prs(value: str) -> set[int]:
    try:
        return {int(part) for part in value.split(",") if part.strip()}
    except ValueError:
        raise UsageError(f"--open-prs {value!r}: expected comma-separated pull request numbers") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="write the review stack's file and create the stack")
    config.add_argument("--pr", type=int, required=True, help="pull request number")
    config.add_argument("--hours", type=int, default=DEFAULT_HOURS, help=f"time to live (default {DEFAULT_HOURS}, at most {MAX_HOURS})")
    config.add_argument("--secrets-provider", required=True, help="awskms://alias/forgestack-pulumi-review?region=...")
    sweep = commands.add_parser("sweep", help="destroy review stacks that are closed, expired or abandoned")
    sweep.add_argument("--open-prs", default="", help="comma-separated numbers of the open pull requests labelled review-stack")
    for command in (config, sweep):
        command.add_argument("--hosted-zone", required=True, help="the review account's public hosted zone")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, pulumi: RunPulumi = pulumi_runner, directory: Path = REPO) -> int:
    """directory: where the stack files go (the project's, beside Pulumi.yaml, where the CLI looks for them)."""
    args = parse_args(argv)
    now = datetime.now(UTC)
    try:
        if args.command == "config":
            if args.pr < 1:
                raise UsageError(f"--pr {args.pr}: expected a pull request number")
            print(config_command(pulumi, directory, args.pr, args.hosted_zone, args.hours, args.secrets_provider, now))
        else:
            swept = sweep_command(pulumi, directory, args.hosted_zone, parse_prs(args.open_prs), now)
            say(f"swept {len(swept)}: {', '.join(swept) or 'none'}")
    except UsageError as error:
        say(str(error))
        return 2
    except (PulumiError, json.JSONDecodeError) as error:
        say(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
