#!/usr/bin/env python3
"""Scan a stack's AWS resources with Checkov: rehearse the stack offline, write its resources as a Terraform plan
JSON document (rehearsal/terraform_plan.py), run Checkov's terraform_plan framework over it, and compare what fails
with the accepted findings in policy/forgestack_rules.CHECKOV_ACCEPTED.

    python scripts/checkov_scan.py --stack dev
    python scripts/checkov_scan.py --stack prod --plan-out prod-plan.json --json
    python scripts/checkov_scan.py --stack prod --set topology=ha

Checkov runs from its own virtualenv (tools/checkov/.venv, made by .ci/run from tools/checkov/requirements.txt),
so its pins never move the program's. Needs no AWS account and no network (--skip-download).
Exit codes: 0 nothing but accepted findings, 1 an unaccepted finding, 2 bad usage or Checkov missing or broken.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    gc.disable()  # a short process that rehearses and exits: see scripts/rehearse.py (a fifth of the run, for a few MB)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy.forgestack_rules import CHECKOV_ACCEPTED
from rehearsal.engine import AWS_STACKS, REPO, ProgramRun
from rehearsal.terraform_plan import aws_resources, plan_document, terraform_address

CHECKOV = REPO / "tools" / "checkov" / ".venv" / "bin" / "checkov"
CHECKOV_TIMEOUT_SECONDS = 300


class ScanError(Exception):
    """Checkov is missing or did not produce a report."""


@dataclass(frozen=True)
class Finding:
    check_id: str
    resource: str  # the Pulumi resource name
    title: str


@dataclass(frozen=True)
class ScanResult:
    passed: int
    failed: list[Finding]

    def unaccepted(self) -> list[Finding]:
        return [f for f in self.failed if (f.check_id, f.resource) not in CHECKOV_ACCEPTED]

    def not_reported(self, stack_resources: set[str]) -> list[tuple[str, str]]:
        """Accepted findings about a resource this stack has that Checkov does not report here (another stack may:
        an acceptance is stale only when no stack reports it, which tests/test_checkov.py checks)."""
        reported = {(f.check_id, f.resource) for f in self.failed}
        return [key for key in CHECKOV_ACCEPTED if key[1] in stack_resources and key not in reported]


def run_checkov(plan_files: Sequence[Path], checkov: Path = CHECKOV) -> dict[str, Any]:
    """One Checkov process over every plan file: its start-up (2.5 s) is most of a scan's time."""
    if not checkov.exists():
        raise ScanError(f"Checkov is not installed at {checkov}: python3 -m venv tools/checkov/.venv && "
                        "tools/checkov/.venv/bin/pip install -r tools/checkov/requirements.txt (.ci/run does it)")
    files = [argument for plan_file in plan_files for argument in ("--file", str(plan_file))]
    completed = subprocess.run(
        [str(checkov), *files, "--framework", "terraform_plan", "--output", "json", "--compact", "--skip-download"],
        capture_output=True, text=True, check=False, cwd=plan_files[0].parent, timeout=CHECKOV_TIMEOUT_SECONDS,
    )
    # Checkov exits 1 when a check fails; only a missing or unreadable report is a broken run.
    try:
        report = json.loads(completed.stdout)
    except ValueError:
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise ScanError(f"Checkov exited {completed.returncode} without a JSON report: {last}") from None
    report = report[0] if isinstance(report, list) else report
    if not isinstance(report, dict) or "results" not in report:
        raise ScanError(f"Checkov found nothing to scan in {', '.join(map(str, plan_files))} (exit {completed.returncode})")
    if report["summary"].get("parsing_errors"):
        raise ScanError(f"Checkov could not parse {', '.join(map(str, report['results'].get('parsing_errors') or plan_files))}")
    return report


def scan_all(plans: Mapping[Path, ProgramRun], checkov: Path = CHECKOV) -> dict[Path, ScanResult]:
    """Each run's resources written as a plan document to its path, all scanned by one Checkov process; the checks
    are told apart by the file they were made on."""
    if not plans:
        return {}
    for plan_file, run in plans.items():
        plan_file.write_text(json.dumps(plan_document(run), indent=1, default=str))
    report = run_checkov(list(plans), checkov)
    results = {}
    for plan_file, run in plans.items():
        mine = str(plan_file.resolve())
        names = {terraform_address(r): r.name for r in aws_resources(run)}
        passed = sum(1 for check in report["results"]["passed_checks"] if check["file_abs_path"] == mine)
        failed = [Finding(check["check_id"], names.get(check["resource"], check["resource"]), check["check_name"])
                  for check in report["results"]["failed_checks"] if check["file_abs_path"] == mine]
        results[plan_file] = ScanResult(passed, sorted(failed, key=lambda f: (f.resource, f.check_id)))
    return results


def scan(run: ProgramRun, plan_file: Path, checkov: Path = CHECKOV) -> ScanResult:
    return scan_all({plan_file: run}, checkov)[plan_file]


def main(argv: list[str] | None = None) -> int:
    from scripts.rehearse import add_set_option, run_stack, set_overrides  # the emulated-AWS rehearsal (moto): loaded here

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stack", required=True, choices=AWS_STACKS, help="AWS stack to scan (its Pulumi.<stack>.yaml)")
    parser.add_argument("--plan-out", type=Path, help="keep the plan document here (default: a temporary file)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    add_set_option(parser)
    args = parser.parse_args(argv)
    overrides = set_overrides(parser, args.set)

    from rehearsal.engine import stack_config

    started = time.monotonic()
    print(f"checkov-scan: rehearsing {args.stack} against the emulated account", file=sys.stderr)
    run, _ = run_stack(args.stack, stack_config(args.stack, overrides))
    with tempfile.TemporaryDirectory() as scratch:
        plan_file = args.plan_out.resolve() if args.plan_out else Path(scratch) / f"{args.stack}-plan.json"
        print(f"checkov-scan: running Checkov over {len(aws_resources(run))} resources ({plan_file.name})", file=sys.stderr)
        try:
            result = scan(run, plan_file)
        except (ScanError, subprocess.TimeoutExpired, OSError) as error:
            print(f"checkov-scan: {error}", file=sys.stderr)
            return 2
    unaccepted = result.unaccepted()
    quiet = result.not_reported({r.name for r in aws_resources(run)})
    if args.json:
        print(json.dumps({"stack": args.stack, "passed": result.passed,
                          "failed": [f.__dict__ | {"accepted": CHECKOV_ACCEPTED.get((f.check_id, f.resource), "")}
                                     for f in result.failed],
                          "accepted_not_reported_here": [list(key) for key in quiet]}, indent=2))
    else:
        for finding in result.failed:
            reason = CHECKOV_ACCEPTED.get((finding.check_id, finding.resource))
            print(f"{'accepted' if reason else 'FAILED  '} {finding.check_id} {finding.resource}: {reason or finding.title}")
        for check_id, resource in quiet:
            print(f"passes   {check_id} {resource}: accepted for other stacks, passes on this one")
        print(f"{args.stack}: {result.passed} passed, {len(result.failed) - len(unaccepted)} accepted, {len(unaccepted)} failed "
              f"({time.monotonic() - started:.1f} s)")
    return 1 if unaccepted else 0


if __name__ == "__main__":
    sys.exit(main())
