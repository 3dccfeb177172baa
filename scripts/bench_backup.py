#!/usr/bin/env python3
"""Benchmark backup.py and restore.py: throughput and peak memory against S3 on loopback (moto's server).

    python scripts/bench_backup.py                 # 384 MiB tree, checks the floors
    python scripts/bench_backup.py --size-mib 1024 --json

Generates a data tree (half incompressible like packed git objects, half text like sources and
logs), backs it up and restores it as real subprocesses, and reports MB/s and the peak RSS of each
run (the script and its tar/zstd children, from wait4). Needs the dev requirements (moto[server]),
tar and zstd. Exit codes: 0 floors met, 1 a floor missed or a run failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FLOOR_PEAK_RSS_MIB = 256
FLOOR_BACKUP_MB_S = 100.0
FILE_SIZE = 4 * 1024 * 1024
BUCKET = "bench-backups"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def generate_tree(root: Path, size_mib: int) -> int:
    """Half random bytes (like packed git objects), half repetitive text (like sources and logs)."""
    rng = random.Random(42)  # noqa: S311 (test data, not security)
    words = [f"{rng.getrandbits(32):08x}" for _ in range(2000)]
    written, index = 0, 0
    while written < size_mib * 2**20:
        directory = root / f"repo-{index // 16:03d}.git" / "objects"
        directory.mkdir(parents=True, exist_ok=True)
        if index % 2:
            data = os.urandom(FILE_SIZE)
        else:
            text = " ".join(rng.choice(words) for _ in range(FILE_SIZE // 9))
            data = text.encode()[:FILE_SIZE]
        (directory / f"pack-{index:05d}.bin").write_bytes(data)
        written += len(data)
        index += 1
        if index % 32 == 0:
            log(f"generated {written / 2**20:,.0f} / {size_mib} MiB")
    return written


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed_run(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB of the process and its children, stdout)."""
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=None, env=env)
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"{Path(argv[1]).name} exited {process.returncode}")
    return seconds, usage.ru_maxrss, output


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        with path.open("rb") as stream:
            while chunk := stream.read(2**20):
                digest.update(chunk)
    return digest.hexdigest()


def start_s3_server(port: int) -> subprocess.Popen[bytes]:
    """moto's server in its own process: it holds every uploaded byte in memory, which must not count against
    (or, through fork, be inherited into the peak RSS of) the scripts being measured."""
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("moto's S3 server did not start within 30 s")


def run(size_mib: int) -> dict[str, Any]:
    import boto3

    port = free_port()
    server = start_s3_server(port)
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "eu-west-1"}
    try:
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="eu-west-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(  # noqa: S106
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        with tempfile.TemporaryDirectory(prefix="forgestack-bench-") as scratch:
            source = Path(scratch) / "data" / "gitea"
            size = generate_tree(source, size_mib)
            log(f"backing up {size / 2**20:,.0f} MiB")
            backup_s, backup_rss, stdout = timed_run(
                [sys.executable, str(REPO / "components/host_tools/backup.py"), "--bucket", BUCKET, "--path", str(source)], env)
            backup_id = stdout.strip().splitlines()[-1]
            target = Path(scratch) / "restored"
            target.mkdir()
            log(f"restoring {backup_id}")
            restore_s, restore_rss, _ = timed_run(
                [sys.executable, str(REPO / "components/host_tools/restore.py"), "--bucket", BUCKET, "--backup-id", backup_id,
                 "--path-target", str(target), "--work-dir", scratch], env)
            identical = tree_digest(source) == tree_digest(target / "gitea")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "data_mib": round(size / 2**20, 1),
        "backup": {"seconds": round(backup_s, 2), "mb_per_s": round(size / 1e6 / backup_s, 1),
                   "peak_rss_mib": round(backup_rss / 1024, 1)},
        "restore": {"seconds": round(restore_s, 2), "mb_per_s": round(size / 1e6 / restore_s, 1),
                    "peak_rss_mib": round(restore_rss / 1024, 1)},
        "restored_identical": identical,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=384, help="size of the generated data tree (default 384)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args(argv)
    if args.size_mib < 16:
        print("bench: --size-mib must be at least 16", file=sys.stderr)
        return 2
    try:
        result = run(args.size_mib)
    except (RuntimeError, OSError, ImportError) as error:
        print(f"bench: failed: {error}", file=sys.stderr)
        return 1
    misses = []
    if result["backup"]["peak_rss_mib"] >= FLOOR_PEAK_RSS_MIB:
        misses.append(f"backup peak RSS {result['backup']['peak_rss_mib']} MiB >= {FLOOR_PEAK_RSS_MIB} MiB")
    if result["backup"]["mb_per_s"] < FLOOR_BACKUP_MB_S:
        misses.append(f"backup {result['backup']['mb_per_s']} MB/s < {FLOOR_BACKUP_MB_S} MB/s")
    if not result["restored_identical"]:
        misses.append("the restored tree differs from the source")
    result["floors_met"] = not misses
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for phase in ("backup", "restore"):
            figures = result[phase]
            print(f"{phase:8} {result['data_mib']:>7} MiB  {figures['seconds']:>6} s  {figures['mb_per_s']:>6} MB/s  "
                  f"peak RSS {figures['peak_rss_mib']} MiB")
        print(f"restored tree identical: {result['restored_identical']}")
    for miss in misses:
        print(f"bench: floor missed: {miss}", file=sys.stderr)
    return 0 if not misses else 1


if __name__ == "__main__":
    sys.exit(main())
