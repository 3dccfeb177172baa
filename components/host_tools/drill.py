#!/usr/bin/env python3
"""Restore drill: restore the latest backup into throwaway places on the live host and check that it is usable.

    python components/host_tools/drill.py --bucket B --postgres-container forgestack-postgres --work-root /srv/forgestack \
        --metrics-file /var/lib/prometheus/node-exporter/forgestack_restore_drill.prom
    python components/host_tools/drill.py --bucket B --scratch-postgres-url postgresql://u:pw@127.0.0.1/scratch --work-root DIR

1. A scratch PostgreSQL: a container of the running one's image (--postgres-container; no network, its data in
   the scratch directory, removed afterwards), of a named image where no PostgreSQL runs beside it (--postgres-image:
   the ops host of topology ha), or an empty database you name (--scratch-postgres-url).
2. A scratch directory under --work-root (on the data volume, where there is room), removed afterwards.
3. restore.py's whole restore of the latest backup into them: manifest, sizes and sha256, archive members, the dump
   in one transaction; nothing live is touched.
4. Checks: rows in Gitea's key tables (at least one user: Gitea always has its admin), `git fsck` of a sample of
   the restored repositories.
5. Result, duration and the counts go to node-exporter's textfile collector; an alert fires when the last good
   drill is older than 8 days. The duration is the restore time measured for real, on this host.

Exit codes: 0 the drill passed, 1 it failed (the metrics say so too), 2 bad usage.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

if __package__:  # imported (the tests, the program's constants)
    from . import backup as common
    from . import restore
else:  # run as a file beside backup.py and restore.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import backup as common  # type: ignore[no-redef]
    import restore  # type: ignore[no-redef]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = common.EXIT_OK, common.EXIT_FAILED, common.EXIT_USAGE
SCRATCH_CONTAINER = "forgestack-restore-drill"
SCRATCH_PREFIX = ".forgestack-drill-"
SCRATCH_USER = "drill"
KEY_TABLES = ("user", "repository")  # Gitea's; "user" must have rows (its admin)
FSCK_SAMPLE = 5
READY_SECONDS = 120
SCRATCH_MEMORY = "512m"  # the memory plan keeps about this much free for one CI job; the drill runs when CI is quiet
# Metric names the alert rules read (components/services/monitoring.py).
METRIC_LAST_SUCCESS = "forgestack_restore_drill_last_success_timestamp_seconds"
METRIC_LAST_RUN = "forgestack_restore_drill_last_run_timestamp_seconds"
METRIC_RESULT = "forgestack_restore_drill_last_result"
METRIC_DURATION = "forgestack_restore_drill_last_duration_seconds"
METRIC_ROWS = "forgestack_restore_drill_rows"
METRIC_REPOSITORIES = "forgestack_restore_drill_repositories_checked"


class DrillError(Exception):
    """The drill failed; the message fits one line."""


def log(message: str) -> None:
    print(f"drill: {message}", file=sys.stderr, flush=True)


@dataclass
class Outcome:
    backup_id: str = ""
    rows: dict[str, int] | None = None
    repositories_checked: int = 0


def image_of(postgres_container: str) -> str:
    """The live PostgreSQL container's image: the scratch one runs the same."""
    return common.run_text(["docker", "inspect", "--format", "{{.Config.Image}}", postgres_container])


@contextmanager
def scratch_container(image: str, data_dir: Path) -> Iterator[common.Database]:
    """A PostgreSQL of `image` with no network and trust auth on its own socket, its data in data_dir."""
    subprocess.run(["docker", "rm", "--force", SCRATCH_CONTAINER], capture_output=True, check=False)  # a leftover
    data_dir.mkdir()
    # Hardened like the live one: no network, a memory and process cap, no new privileges, only the capabilities its
    # entrypoint needs to own the data directory and drop to postgres.
    common.run_text(["docker", "run", "--detach", "--name", SCRATCH_CONTAINER, "--network", "none", "--memory", SCRATCH_MEMORY,
                     "--pids-limit", "256", "--security-opt", "no-new-privileges", "--cap-drop", "ALL",
                     *(f"--cap-add={cap}" for cap in ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")),
                     "--env", f"POSTGRES_USER={SCRATCH_USER}", "--env", f"POSTGRES_DB={SCRATCH_USER}",
                     "--env", "POSTGRES_HOST_AUTH_METHOD=trust", "--volume", f"{data_dir}:/var/lib/postgresql", image])
    try:
        log(f"scratch PostgreSQL {SCRATCH_CONTAINER} from {image}")
        deadline = time.monotonic() + READY_SECONDS
        while subprocess.run(["docker", "exec", SCRATCH_CONTAINER, "pg_isready", "--quiet", "--username", SCRATCH_USER],
                             capture_output=True, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise DrillError(f"the scratch PostgreSQL was not ready within {READY_SECONDS} s")
            time.sleep(1)
        yield common.Database(container=SCRATCH_CONTAINER)
    finally:
        subprocess.run(["docker", "rm", "--force", "--volumes", SCRATCH_CONTAINER], capture_output=True, check=False)


def count_rows(database: common.Database, table: str) -> int:
    sql = f'SELECT count(*) FROM "{table}"'  # noqa: S608 (table names are this file's constants)
    argv = database.command("psql", "--no-psqlrc", "--tuples-only", "--no-align", "--set=ON_ERROR_STOP=1", f"--command={sql}")
    try:
        return int(common.run_text(argv, env=database.environment()))
    except (common.BackupError, ValueError) as error:
        raise DrillError(f"counting {table} in the restored database failed: {error}") from error


def repositories(root: Path) -> list[Path]:
    """Bare repositories below a restored Gitea data directory (git/repositories/<owner>/<name>.git)."""
    return sorted(path for path in root.glob("*/git/repositories/*/*.git") if path.is_dir())


def fsck(repository: Path) -> None:
    result = subprocess.run(["git", "-c", "safe.directory=*", f"--git-dir={repository}", "fsck", "--no-progress", "--strict"],
                            capture_output=True, text=True, check=False, timeout=3600)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or [f"exit {result.returncode}"]
        raise DrillError(f"git fsck of {repository.name} failed: {lines[0]}")


def run_drill(s3: object, bucket: str, prefix: str, database: common.Database, scratch: Path, sample: int,
              rng: random.Random) -> Outcome:
    outcome = Outcome()
    target, work = scratch / "files", scratch / "download"
    target.mkdir()
    work.mkdir()
    outcome.backup_id = restore.run_restore(s3, bucket, prefix, "latest", database, target, work)
    outcome.rows = {table: count_rows(database, table) for table in KEY_TABLES}
    log("rows: " + ", ".join(f"{table} {count}" for table, count in outcome.rows.items()))
    if outcome.rows["user"] < 1:
        raise DrillError("the restored database has no user (Gitea always has its admin): the dump is empty or wrong")
    found = repositories(target)
    chosen = rng.sample(found, min(sample, len(found)))
    for number, repository in enumerate(chosen, 1):
        log(f"git fsck {number}/{len(chosen)}: {repository.relative_to(target)}")
        fsck(repository)
    outcome.repositories_checked = len(chosen)
    return outcome


def previous_success(path: Path) -> str:
    """The last success time already in the metrics file, kept when this drill fails."""
    try:
        text = path.read_text()
    except OSError:
        return ""  # no file yet: no drill has ever passed here
    found = [line.split()[1] for line in text.splitlines() if line.startswith(METRIC_LAST_SUCCESS + " ")]
    return found[0] if found else ""


def write_metrics(path: Path, passed: bool, started: float, duration: float, outcome: Outcome) -> None:
    success = f"{started:.0f}" if passed else previous_success(path)
    lines = [f"# HELP {METRIC_RESULT} 1 when the last restore drill passed, 0 when it failed.", f"# TYPE {METRIC_RESULT} gauge",
             f"{METRIC_RESULT} {int(passed)}",
             f"# TYPE {METRIC_LAST_RUN} gauge", f"{METRIC_LAST_RUN} {started:.0f}",
             f"# HELP {METRIC_DURATION} Seconds the last drill took: download, verification, restore and checks.",
             f"# TYPE {METRIC_DURATION} gauge", f"{METRIC_DURATION} {duration:.1f}",
             f"# TYPE {METRIC_REPOSITORIES} gauge", f"{METRIC_REPOSITORIES} {outcome.repositories_checked}"]
    if success:
        lines += [f"# HELP {METRIC_LAST_SUCCESS} Unix time of the last restore drill that passed.",
                  f"# TYPE {METRIC_LAST_SUCCESS} gauge", f"{METRIC_LAST_SUCCESS} {success}"]
    if outcome.rows:
        lines += [f"# TYPE {METRIC_ROWS} gauge", *(f'{METRIC_ROWS}{{table="{t}"}} {n}' for t, n in outcome.rows.items())]
    common.write_textfile(path, "\n".join(lines) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     epilog="Exit codes: 0 the drill passed, 1 it failed, 2 bad usage.")
    parser.add_argument("--bucket", required=True, help="backupBucketName stack output")
    parser.add_argument("--prefix", default=common.DEFAULT_PREFIX, help=f"key prefix in the bucket (default {common.DEFAULT_PREFIX})")
    scratch = parser.add_mutually_exclusive_group(required=True)
    scratch.add_argument("--postgres-container", help="the live PostgreSQL container: the scratch one runs its image")
    scratch.add_argument("--postgres-image", help="the scratch PostgreSQL runs this image (no live container beside it: ha)")
    scratch.add_argument("--scratch-postgres-url", help="an empty database to restore into instead of a scratch container")
    parser.add_argument("--work-root", type=Path, required=True, help="the scratch directory goes below it (needs room)")
    parser.add_argument("--metrics-file", type=Path, help="node-exporter textfile collector file for the result")
    parser.add_argument("--sample", type=int, default=FSCK_SAMPLE, help=f"repositories to git fsck (default {FSCK_SAMPLE})")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.work_root.is_dir():
        print(f"drill: --work-root {args.work_root} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    if args.sample < 0:
        print("drill: --sample must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    started, clock = time.time(), time.monotonic()
    outcome = Outcome()
    passed = False
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=args.work_root))
    sampler = random.Random()  # noqa: S311 (which repositories to fsck, not a secret)
    try:
        if args.postgres_container or args.postgres_image:
            image = args.postgres_image or image_of(args.postgres_container)
            with scratch_container(image, scratch / "postgres") as database:
                outcome = run_drill(common.s3_client(), args.bucket, args.prefix, database, scratch, args.sample, sampler)
        else:
            given = common.database_from_args(args.scratch_postgres_url, None, None)
            assert given is not None
            outcome = run_drill(common.s3_client(), args.bucket, args.prefix, given, scratch, args.sample, sampler)
        passed = True
    except restore.VerificationError as error:
        print(f"drill: failed: the backup did not verify: {error}", file=sys.stderr)
    except (DrillError, common.BackupError, OSError, subprocess.SubprocessError, *common.AWS_ERRORS) as error:
        print(f"drill: failed: {error}", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # only the directory this drill made
    duration = time.monotonic() - clock
    if args.metrics_file:
        write_metrics(args.metrics_file, passed, started, duration, outcome)
    if not passed:
        return EXIT_FAILED
    log(f"passed: backup {outcome.backup_id} restored and checked in {duration:.1f} s "
        f"({outcome.repositories_checked} repositories fsck'd)")
    print(outcome.backup_id)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
