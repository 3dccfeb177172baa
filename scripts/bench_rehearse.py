#!/usr/bin/env python3
"""Benchmark scripts/rehearse.py as a whole process, the way an operator runs it.

    python scripts/bench_rehearse.py                 # every stack (dev, local, prod, staging), 3 runs each
    python scripts/bench_rehearse.py --runs 5 --stack prod

Prints min / median / max wall-clock seconds per stack. The floor is 3 s per stack (median).
Exit codes: 0 floor met, 1 a run failed or the floor was missed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rehearsal.engine import REPO, STACKS

FLOOR_SECONDS = 3.0  # issue 20: a rehearsal answers in 3 s (whole process, median)


def time_one(stack: str) -> float:
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "rehearse.py"), "--stack", stack, "--json"],
                            capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"rehearse.py --stack {stack} exited {result.returncode}: {last}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stack", action="append", choices=STACKS, help="stack(s) to time (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="runs per stack (default 3)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        print("bench: --runs must be at least 1", file=sys.stderr)
        return 2
    missed = []
    for stack in args.stack or STACKS:
        try:
            timings = []
            for run in range(args.runs):
                print(f"bench: {stack} run {run + 1}/{args.runs}", file=sys.stderr, flush=True)
                timings.append(time_one(stack))
        except RuntimeError as error:
            print(f"bench: {error}", file=sys.stderr)
            return 1
        median = statistics.median(timings)
        print(f"{stack:6} min {min(timings):5.2f} s  median {median:5.2f} s  max {max(timings):5.2f} s  ({args.runs} runs)")
        if median >= FLOOR_SECONDS:
            missed.append(f"{stack}: median {median:.2f} s >= {FLOOR_SECONDS} s")
    for miss in missed:
        print(f"bench: floor missed: {miss}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
