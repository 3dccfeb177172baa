#!/usr/bin/env python3
"""Benchmark how long a backup keeps Gitea paused: the hard-linked staging copy of its data directory.

    python scripts/bench_pause.py                  # 100,000 files in 200 repositories, checks the floor
    python scripts/bench_pause.py --files 400000 --json

backup.py --gitea-container pauses Gitea while it runs `cp --archive --link` of each data directory (and pg_dump to
a local file, which depends on the database's size, not measured here). The copy's time grows with the number of
files and directories, not their size, so the tree here is many small files laid out like bare repositories
(objects/xx/...). Runs the same command as backup.py three times and reports the median.
Exit codes: 0 floor met, 1 floor missed or a run failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FLOOR_SECONDS_PER_100K_FILES = 10.0  # Gitea paused at most this long per 100,000 files
RUNS = 3


def log(message: str) -> None:
    print(f"bench-pause: {message}", file=sys.stderr, flush=True)


def generate_tree(root: Path, files: int, repositories: int) -> None:
    per_repository = max(files // repositories, 1)
    for number in range(repositories):
        repository = root / "git" / "repositories" / f"team/repo-{number}.git"
        for index in range(per_repository):
            directory = repository / "objects" / f"{index % 256:02x}"
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"{index:038x}").write_bytes(b"x")
        if number % 20 == 0:
            log(f"generated {number + 1}/{repositories} repositories")


def run(files: int, repositories: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="forgestack-bench-pause-") as scratch:
        data = Path(scratch) / "gitea"
        generate_tree(data, files, repositories)
        timings = []
        for attempt in range(1, RUNS + 1):
            staged = Path(scratch) / f".forgestack-backup-{attempt}"
            started = time.monotonic()
            subprocess.run(["cp", "--archive", "--link", str(data), str(staged)], check=True)  # what backup.py's stage() runs
            timings.append(time.monotonic() - started)
            log(f"run {attempt}/{RUNS}: {timings[-1]:.2f} s")
            shutil.rmtree(staged)
    seconds = statistics.median(timings)
    return {"files": files, "repositories": repositories, "seconds": round(seconds, 3),
            "seconds_per_100k_files": round(seconds * 100_000 / files, 3), "floor_seconds_per_100k_files": FLOOR_SECONDS_PER_100K_FILES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=100_000, help="files in the generated tree (default 100000)")
    parser.add_argument("--repositories", type=int, default=200, help="bare repositories they are spread over (default 200)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args(argv)
    if args.files < 1 or args.repositories < 1:
        print("bench-pause: --files and --repositories must be positive", file=sys.stderr)
        return 2
    try:
        figures = run(args.files, args.repositories)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"bench-pause: failed: {error}", file=sys.stderr)
        return 1
    met = figures["seconds_per_100k_files"] <= FLOOR_SECONDS_PER_100K_FILES
    if args.json:
        print(json.dumps({**figures, "floor_met": met}, indent=2))
    else:
        print(f"staging {figures['files']:,} files: {figures['seconds']:.2f} s (median of {RUNS}), "
              f"{figures['seconds_per_100k_files']:.2f} s per 100,000 files; floor {FLOOR_SECONDS_PER_100K_FILES} s: "
              f"{'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
