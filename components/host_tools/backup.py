#!/usr/bin/env python3
"""Back up forgestack to S3: a pg_dump of the database and a tar.zst of each data directory.

    python components/host_tools/backup.py --bucket B --postgres-container forgestack-postgres --path /srv/forgestack/gitea
    python components/host_tools/backup.py --bucket B --postgres-url postgresql://gitea@127.0.0.1/gitea --path ./data

Every part streams from its producer (pg_dump, tar | zstd) straight into an S3 multipart upload,
so memory stays flat whatever the data size. Parts land under s3://B/PREFIX/<backup-id>/, then a
manifest (size and sha256 of every part, tool and server versions, times), and only then the
PREFIX/latest pointer. A failure anywhere aborts the upload and leaves `latest` where it was.
Retention is the bucket's lifecycle rules: this script never deletes an object.

Progress goes to stderr; the backup id is the last line of stdout. AWS endpoint and credentials
come from the standard environment (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, the instance role).
Exit codes: 0 backup published, 1 backup failed (nothing published), 2 bad usage.

This file needs only the standard library and boto3: the host installs it as is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import boto3
import botocore.config
import botocore.exceptions

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

FORMAT_VERSION = 1
DEFAULT_PREFIX = "forgestack"
# Every upload names its checksum: S3 refuses uploads to an Object Lock bucket without one (Content-MD5 or a flexible
# checksum), and Ubuntu 24.04's boto3 (1.34) does not send one on its own; S3 also verifies each part with it.
CHECKSUM_ALGORITHM = "SHA256"
MANIFEST_NAME = "manifest.json"
LATEST_NAME = "latest"
DATABASE_PART = "postgres.dump"
PART_SIZE = 16 * 1024 * 1024  # S3 allows 10,000 parts: 160 GiB per backup part
MAX_PARTS = 10_000
UPLOAD_THREADS = 4  # parts in flight; memory is about (UPLOAD_THREADS + 1) * PART_SIZE
PROGRESS_EVERY_SECONDS = 2.0
IMAGE_HELP = ("with --postgres-url: run the client tools from this PostgreSQL image (docker run on the host's network), "
              "e.g. against RDS from the ops host, so the tools match the server's major version")
ZSTD = "zstd -T0 -1"  # all cores, the fastest level: packed git objects barely compress anyway
# Metric names the alert rules read (node-exporter textfile collector).
METRIC_LAST_SUCCESS = "forgestack_backup_last_success_timestamp_seconds"
METRIC_DURATION = "forgestack_backup_last_duration_seconds"
METRIC_SIZE = "forgestack_backup_last_size_bytes"

AWS_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)

# Names that come back from S3 at restore time and are joined to paths there: one plain path component
# (letters, digits, . _ -), never empty, "." or "..", never hidden. backup.py refuses to publish anything else.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
BACKUP_ID = re.compile(r"\d{8}T\d{6}Z")  # new_backup_id's format
# The one tar warning a live data directory may give: the file was archived whole, its content is from
# one of the moments during the read. Anything else (a file that shrank and was padded with zeros, an
# unreadable file) means the archive does not hold the file as it was, and the part fails.
TAR_TOLERATED_WARNING = re.compile(r"tar: .*: file changed as we read it")


class BackupError(Exception):
    """A failure with a message fit for one line on stderr."""


# ---------------------------------------------------------------- one moment for database and files

# With --gitea-container, Gitea is paused (docker pause: the cgroup freezer, requests wait rather than fail) while the
# data directories are hard-linked into a staging directory beside them and the database is dumped to a file there;
# then Gitea runs again and the staged copy is uploaded at leisure. Git writes new files and renames refs into place,
# so a hard-linked tree keeps the paused moment; files changed in place later (logs) show as tar's tolerated warning.
DEFAULT_MAX_PAUSE_SECONDS = 120
STAGING_PREFIX = ".forgestack-backup-"
UNPAUSE_ATTEMPTS = 3
RELEASE = re.compile(r"\d+\.\d+\.\d+")


def image_release(container: str) -> str:
    """The release in a container's image tag (gitea/gitea:1.27.3 -> 1.27.3), or "" when the tag names none.
    Read from the container's configuration, so it works on a stopped container too."""
    image = run_text(["docker", "inspect", "--format", "{{.Config.Image}}", container])
    tag = image.rsplit("/", 1)[-1].partition(":")[2].partition("@")[0]
    return tag if RELEASE.fullmatch(tag) else ""


class BoundedPause:
    """docker pause for at most max_seconds: a timer unpauses on its own, and the backup then fails (the moment
    was not held). Leaving the block always unpauses."""

    def __init__(self, container: str, max_seconds: float) -> None:
        self.container, self.max_seconds = container, max_seconds
        self.lock = threading.Lock()
        self.paused = False
        self.overran = False
        self.seconds = 0.0
        self.started = 0.0
        self.timer: threading.Timer | None = None

    def __enter__(self) -> BoundedPause:
        if run_text(["docker", "inspect", "--format", "{{.State.Running}}", self.container]) != "true":
            log(f"{self.container} is not running: nothing writes, nothing to pause")  # e.g. stopped for a restore
            return self
        run_text(["docker", "pause", self.container])
        self.started, self.paused = time.monotonic(), True
        log(f"{self.container} paused (at most {self.max_seconds:.0f} s)")
        self.timer = threading.Timer(self.max_seconds, self._overrun)
        self.timer.daemon = True
        self.timer.start()
        return self

    def _overrun(self) -> None:
        self.overran = True
        try:
            self._unpause()
        except BackupError as error:  # on the timer's thread: say it in one line; __exit__ tries again
            log(f"could not unpause {self.container} after {self.max_seconds:.0f} s: {error}")

    def _unpause(self) -> None:
        with self.lock:
            if not self.paused:
                return
            self.seconds = time.monotonic() - self.started
            for attempt in range(1, UNPAUSE_ATTEMPTS + 1):  # a frozen forge is worse than a failed backup: insist
                try:
                    run_text(["docker", "unpause", self.container])
                    break
                except BackupError:
                    if attempt == UNPAUSE_ATTEMPTS:
                        raise BackupError(f"{self.container} is still PAUSED: docker unpause {self.container} failed "
                                          f"{attempt} times; run it by hand") from None
                    time.sleep(1)
            self.paused = False
            log(f"{self.container} running again after {self.seconds:.2f} s")

    def __exit__(self, *_: object) -> None:
        if self.timer:
            self.timer.cancel()
        self._unpause()


def log(message: str) -> None:
    print(f"backup: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- where the database is


@dataclass(frozen=True)
class Database:
    """How to reach PostgreSQL: the client tools on this machine (conninfo), inside the server's container, or from a
    PostgreSQL image run beside a remote server (conninfo + image: the tools as new as the server, nothing installed).

    conninfo never holds the password (split_password takes it out): it appears in argv, the manifest and logs.
    The password travels to libpq in PGPASSWORD only."""

    conninfo: str | None = None
    container: str | None = None
    password: str | None = field(default=None, repr=False)
    image: str | None = None  # with conninfo: `docker run` this image's client tools on the host's network
    # With container: the user and database inside it; None takes the image's POSTGRES_USER and POSTGRES_DB (an image
    # that sets neither, such as Kasm's kasm_db, needs them named).
    user: str | None = None
    dbname: str | None = None

    @property
    def tools_read_stdin(self) -> bool:
        """The tools run in a container: a dump reaches them on stdin, never as a path on this machine."""
        return bool(self.container or self.image)

    def command(self, tool: str, *options: str) -> list[str]:
        if self.container:
            # The image's own variables name the user and database; the local socket needs no password.
            user = shlex.quote(self.user) if self.user else '"$POSTGRES_USER"'
            dbname = shlex.quote(self.dbname) if self.dbname else '"$POSTGRES_DB"'
            inner = " ".join([tool, *map(shlex.quote, options), f"-U {user}", f"-d {dbname}"])
            return ["docker", "exec", "-i", self.container, "sh", "-c", inner]
        assert self.conninfo is not None
        if self.image:
            # --env NAME without a value hands the container this process's PGPASSWORD: never in argv.
            return [*self.image_run("host"), tool, *options, f"--dbname={self.conninfo}"]
        return [tool, *options, f"--dbname={self.conninfo}"]

    def image_run(self, network: str) -> list[str]:
        assert self.image is not None
        return ["docker", "run", "--rm", "-i", "--network", network, "--env", "PGPASSWORD", self.image]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.password:
            env["PGPASSWORD"] = self.password  # never on the command line, where ps would show it
        return env

    def describe(self) -> str:
        if self.container:
            return f"container {self.container}"
        return f"{self.conninfo} (tools of {self.image})" if self.image else (self.conninfo or "")

    def versions(self) -> dict[str, str]:
        if self.container:
            client = run_text(["docker", "exec", self.container, "pg_dump", "--version"])
            server = run_text(["docker", "exec", self.container, "postgres", "--version"])
        else:
            client = run_text([*self.image_run("none"), "pg_dump", "--version"] if self.image else ["pg_dump", "--version"])
            server = run_text(self.command("psql", "--no-psqlrc", "--tuples-only", "--no-align", "--command=SHOW server_version"),
                              env=self.environment())
        return {"pg_dump": client, "server": server}


def split_password(conninfo: str) -> tuple[str, str | None]:
    """(the connection string without any password, the password or None), for both libpq forms:
    URIs (postgresql://user:pw@host/db, ?password=pw) and key=value strings (host=h password='p w')."""
    if conninfo.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(conninfo)
        password = unquote(parts.password) if parts.password is not None else None
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hosts = netloc.rpartition("@")
            netloc = f"{userinfo.split(':', 1)[0]}@{hosts}"
        query = parse_qsl(parts.query, keep_blank_values=True)
        password = next((value for key, value in query if key == "password"), password)
        kept = urlencode([(key, value) for key, value in query if key != "password"])
        return urlunsplit(parts._replace(netloc=netloc, query=kept)), password
    pairs = parse_keyword_conninfo(conninfo)
    password = next((value for key, value in pairs if key == "password"), None)
    kept_pairs = [f"{key}={quote_keyword_value(value)}" for key, value in pairs if key != "password"]
    return " ".join(kept_pairs), password


_KEYWORD = re.compile(r"\s*([A-Za-z_]+)\s*=\s*")


def parse_keyword_conninfo(conninfo: str) -> list[tuple[str, str]]:
    """libpq's keyword/value form: `key = value` pairs, a value bare (backslash escapes) or in single quotes."""
    pairs: list[tuple[str, str]] = []
    position = 0
    while conninfo[position:].strip():
        match = _KEYWORD.match(conninfo, position)
        if not match:
            raise BackupError("the connection string is neither a postgresql:// URI nor key=value pairs")
        position = match.end()
        value: list[str] = []
        quoted = position < len(conninfo) and conninfo[position] == "'"
        position += quoted
        while position < len(conninfo):
            char = conninfo[position]
            if char == "\\" and position + 1 < len(conninfo):
                value.append(conninfo[position + 1])
                position += 2
                continue
            if (quoted and char == "'") or (not quoted and char.isspace()):
                position += 1
                break
            value.append(char)
            position += 1
        else:
            if quoted:
                raise BackupError("the connection string has an unterminated quoted value")
        pairs.append((match.group(1), "".join(value)))
    return pairs


def quote_keyword_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def run_text(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BackupError(f"cannot run {argv[0]}: {error}") from error
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise BackupError(f"{' '.join(argv[:2])} failed: {reason[0]}")
    return result.stdout.strip()


def read_credential(secret_arn: str, key: str) -> str:
    """One value of the stack's credentials secret (the region is part of the ARN)."""
    region = secret_arn.split(":")[3] if secret_arn.count(":") >= 6 else None
    client = boto3.client("secretsmanager", region_name=region)
    document = json.loads(client.get_secret_value(SecretId=secret_arn)["SecretString"])
    if key not in document:
        raise BackupError(f"the credentials secret has no key {key!r}")
    return str(document[key])


def database_from_args(url: str | None, container: str | None, credentials_secret: str | None,
                       image: str | None = None, user: str | None = None, dbname: str | None = None) -> Database | None:
    if (user or dbname) and not container:
        raise BackupError("--postgres-user and --postgres-database name the user and database inside --postgres-container; "
                          "with --postgres-url they are part of the URL")
    if container:
        return Database(container=container, user=user or None, dbname=dbname or None)
    if not url:
        if image:
            raise BackupError("--postgres-image runs the client tools against --postgres-url: give the URL too")
        return None
    conninfo, password = split_password(url)
    if password is None and credentials_secret:
        password = read_credential(credentials_secret, "postgresPassword")
    return Database(conninfo=conninfo, password=password, image=image or None)


# ---------------------------------------------------------------- streaming upload


@dataclass
class Progress:
    """Prints bytes done and rate to stderr every few seconds."""

    label: str
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    last_print: float = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last_print >= PROGRESS_EVERY_SECONDS:
            self.last_print = now
            log(f"{self.label}: {self.done / 2**20:,.1f} MiB ({self.rate_mib_s():,.1f} MiB/s)")

    def rate_mib_s(self) -> float:
        return self.done / 2**20 / max(time.monotonic() - self.started, 1e-6)


def read_block(stream: IO[bytes], size: int) -> bytes:
    """Up to size bytes; fewer only at the end of the stream (pipes return short reads)."""
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def upload_stream(s3: Any, bucket: str, key: str, stream: IO[bytes], label: str,
                  before_complete: Callable[[], None] = lambda: None, metadata: dict[str, str] | None = None) -> tuple[int, str]:
    """Multipart-upload a stream of unknown length; returns (size, sha256). Aborts the upload on any failure.

    before_complete runs after the last byte and before the object becomes visible: it raises when the
    producer turns out to have failed, so a damaged part never lands in the bucket at all."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                                           Metadata=metadata or {})["UploadId"]
    digest = hashlib.sha256()
    progress = Progress(label)
    finished: list[dict[str, Any]] = []
    pending: set[Future[dict[str, Any]]] = set()

    def send(number: int, body: bytes) -> dict[str, Any]:
        response = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body,
                                  ChecksumAlgorithm=CHECKSUM_ALGORITHM)
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": response["ChecksumSHA256"]}

    try:
        with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
            number = 0
            while True:
                block = read_block(stream, PART_SIZE)
                if not block and number > 0:
                    break
                number += 1
                if number > MAX_PARTS:
                    raise BackupError(f"{label} is larger than {MAX_PARTS} parts of {PART_SIZE // 2**20} MiB")
                digest.update(block)
                progress.advance(len(block))
                while len(pending) >= UPLOAD_THREADS:  # keep memory flat: never more parts in flight
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    finished.extend(future.result() for future in done)
                pending.add(pool.submit(send, number, block))
                if not block:
                    break  # an empty stream still needs its one (empty) part
            finished.extend(future.result() for future in pending)
        before_complete()
        finished.sort(key=lambda part: part["PartNumber"])
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": finished})
    except BaseException:
        try:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except AWS_ERRORS as error:
            log(f"could not abort the upload of {key} (the lifecycle rule removes it within a day): {error}")
        raise
    log(f"{label}: {progress.done / 2**20:,.1f} MiB uploaded ({progress.rate_mib_s():,.1f} MiB/s)")
    return progress.done, digest.hexdigest()


class Child:
    """A producer process whose stdout is a part's bytes. finish() waits for it and raises unless it succeeded:
    exit 0, or an exit code in `accept` with every stderr line a `tolerated` warning (kept in .warnings)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None, accept: Sequence[int],
                 tolerated: re.Pattern[str] | None) -> None:
        self.argv, self.accept, self.tolerated = list(argv), tuple(accept), tolerated
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert self.process.stdout is not None
        self.stdout: IO[bytes] = self.process.stdout
        self.stderr_lines: list[str] = []
        self.warnings: list[str] = []
        self.returncode: int | None = None
        # Drained on a thread so a chatty child never blocks on a full pipe.
        self.reader = threading.Thread(target=self._collect_stderr, daemon=True)
        self.reader.start()

    def _collect_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr_lines.extend(self.process.stderr.read().decode(errors="replace").splitlines())

    def finish(self) -> None:
        if self.returncode is None:
            self.stdout.close()
            self.returncode = self.process.wait()
            self.reader.join(timeout=5)
        if self.returncode == 0:
            return
        tolerated = self.tolerated
        not_tolerated = [line for line in self.stderr_lines if not (tolerated and tolerated.fullmatch(line))]
        if self.returncode not in self.accept or not_tolerated or not self.stderr_lines:
            reasons = not_tolerated or self.stderr_lines
            detail = f": {reasons[0]}" if reasons else ""
            raise BackupError(f"{self.argv[0]} failed (exit {self.returncode}){detail}")
        self.warnings = list(self.stderr_lines)
        for line in self.warnings:
            log(f"{self.argv[0]} warned: {line}")

    def kill(self) -> None:
        self.process.kill()
        self.stdout.close()
        self.returncode = self.process.wait()
        self.reader.join(timeout=5)


@contextmanager
def producer(argv: Sequence[str], env: dict[str, str] | None, accept: Sequence[int] = (0,),
             tolerated: re.Pattern[str] | None = None) -> Iterator[Child]:
    """Start a producer; on leaving, make sure it finished well (finish() is idempotent) or kill it."""
    child = Child(argv, env, accept, tolerated)
    try:
        yield child
    except BaseException:
        child.kill()
        raise
    child.finish()


# ---------------------------------------------------------------- the backup


@dataclass(frozen=True)
class Part:
    name: str  # object name below the backup id
    kind: str  # "postgres" or "directory"
    source: str  # what it was made from, for the operator
    argv: tuple[str, ...]
    env: dict[str, str] | None = field(default=None, repr=False)
    accept: tuple[int, ...] = (0,)
    tolerated: re.Pattern[str] | None = None  # stderr lines that an accepted non-zero exit may carry
    restore_as: str = ""  # directory name below the restore target


def directory_part(path: Path) -> Part:
    if not PLAIN_NAME.fullmatch(path.name):
        raise BackupError(f"--path {path}: the directory's own name ({path.name!r}) names its part and where it is "
                          "restored; expected a plain name such as gitea (letters, digits, . _ -, not hidden), "
                          "so give the directory by its path, e.g. /srv/forgestack/gitea, not . or /")
    return Part(
        name=f"files-{path.name}.tar.zst", kind="directory", source=str(path), restore_as=path.name,
        # --numeric-owner keeps uids (Gitea runs as 1000) whatever the restoring machine calls them.
        argv=("tar", "--create", "--file=-", "--numeric-owner", f"--use-compress-program={ZSTD}", "--directory", str(path), "."),
        # tar exits 1 for warnings; only "file changed as we read it" leaves a sound archive (a live Gitea writes logs).
        accept=(0, 1), tolerated=TAR_TOLERATED_WARNING,
    )


def plan_parts(database: Database | None, paths: Sequence[Path]) -> list[Part]:
    parts: list[Part] = []
    if database:
        parts.append(Part(
            name=DATABASE_PART, kind="postgres", source=database.describe(),
            argv=tuple(database.command("pg_dump", "--format=custom", "--no-owner")), env=database.environment(),
        ))
    for path in paths:
        if not path.is_dir():
            raise BackupError(f"--path {path}: not a directory")
        parts.append(directory_part(path))
    names = [part.name for part in parts]
    if len(set(names)) != len(names):
        raise BackupError(f"two --path directories share a name: {names}; each part is named after its directory")
    if not parts:
        raise BackupError("nothing to back up: give --postgres-url, --postgres-container or --path")
    return parts


def new_backup_id(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ")


def backup_key(prefix: str, backup_id: str, name: str) -> str:
    return f"{prefix.strip('/')}/{backup_id}/{name}" if prefix.strip("/") else f"{backup_id}/{name}"


def latest_key(prefix: str) -> str:
    return f"{prefix.strip('/')}/{LATEST_NAME}" if prefix.strip("/") else LATEST_NAME


def tool_versions(database: Database | None, parts: Sequence[Part]) -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "boto3": boto3.__version__}
    if any(part.kind == "directory" for part in parts):
        versions["tar"] = run_text(["tar", "--version"]).splitlines()[0]
        versions["zstd"] = run_text(["zstd", "--version"])
    if database:
        versions.update(database.versions())
    return versions


def staging_root(paths: Sequence[Path], backup_id: str) -> Path:
    """Beside the data directories, on their filesystem (hard links cannot cross one)."""
    parents = {path.resolve().parent for path in paths}
    if len(parents) != 1:
        raise BackupError(f"--gitea-container needs every --path in one parent directory (hard links stay on one filesystem), "
                          f"got {sorted(map(str, parents))}")
    return parents.pop() / f"{STAGING_PREFIX}{backup_id}"


def stage(database: Database | None, paths: Sequence[Path], staging: Path, gitea_container: str,
          max_pause_seconds: float) -> tuple[Path | None, list[Path], float]:
    """Pause Gitea, hard-link each directory into staging and dump the database to a file there, unpause.
    Returns (the dump file or None, the staged directories, seconds Gitea was paused)."""
    staging.mkdir(mode=0o700)
    dump = staging / DATABASE_PART if database else None
    staged = [staging / path.name for path in paths]
    with BoundedPause(gitea_container, max_pause_seconds) as pause:
        for path, copy in zip(paths, staged, strict=True):
            run_text(["cp", "--archive", "--link", str(path), str(copy)])
        if database and dump:
            with dump.open("wb") as out, producer(database.command("pg_dump", "--format=custom", "--no-owner"),
                                                   database.environment()) as child:
                shutil.copyfileobj(child.stdout, out, PART_SIZE)
    if pause.overran:
        raise BackupError(f"{gitea_container} would have stayed paused longer than {max_pause_seconds:.0f} s; it was unpaused "
                          "and this backup abandoned (raise --max-pause-seconds, or look at what made staging slow)")
    log(f"staged {len(staged)} director{'y' if len(staged) == 1 else 'ies'}{' and the database' if dump else ''} "
        f"while {gitea_container} was paused for {pause.seconds:.2f} s")
    return dump, staged, pause.seconds


def run_backup(
    s3: Any, bucket: str, prefix: str, database: Database | None, paths: Sequence[Path],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    gitea_container: str = "", max_pause_seconds: float = DEFAULT_MAX_PAUSE_SECONDS,
) -> dict[str, Any]:
    """Upload every part, then the manifest, then the latest pointer. Returns the manifest.
    With gitea_container, database and directories are taken at one moment (stage) and uploaded from there."""
    parts = plan_parts(database, paths)
    started = clock()
    backup_id = new_backup_id(started)
    # Ids have one-second resolution: never write into a backup that already exists.
    if s3.list_objects_v2(Bucket=bucket, Prefix=backup_key(prefix, backup_id, ""), MaxKeys=1).get("KeyCount", 0):
        raise BackupError(f"backup {backup_id} already exists in s3://{bucket}; it is never overwritten, try again in a second")
    versions = tool_versions(database, parts)
    consistency: dict[str, Any] = {"method": "none"}
    staging: Path | None = None
    if gitea_container:
        versions["gitea"] = image_release(gitea_container)
        staging = staging_root(paths, backup_id)
    log(f"backup {backup_id} to s3://{bucket}/{backup_key(prefix, backup_id, '')}: {len(parts)} part(s)")
    recorded = []
    try:
        if staging is not None:
            dump, staged, paused = stage(database, paths, staging, gitea_container, max_pause_seconds)
            consistency = {"method": "paused", "container": gitea_container, "paused_seconds": round(paused, 3)}
            # The same parts, now read from the staged moment (names and restore targets unchanged).
            parts = [replace(part, argv=("cat", str(dump)), env=None) if part.kind == "postgres" and dump else part for part in parts]
            by_name = {copy.name: copy for copy in staged}
            parts = [replace(directory_part(by_name[part.restore_as]), source=part.source) if part.kind == "directory" else part
                     for part in parts]
        for part in parts:
            key = backup_key(prefix, backup_id, part.name)
            log(f"{part.name}: from {part.source}")
            with producer(part.argv, part.env, part.accept, part.tolerated) as child:
                size, sha256 = upload_stream(s3, bucket, key, child.stdout, part.name, before_complete=child.finish)
            recorded.append({"name": part.name, "kind": part.kind, "key": key, "size": size, "sha256": sha256,
                             "source": part.source, "restore_as": part.restore_as, "warnings": child.warnings})
    finally:
        if staging is not None and staging.name.startswith(STAGING_PREFIX) and staging.exists():
            shutil.rmtree(staging)  # only the directory this run created (hard links: the live data is untouched)
    finished = clock()
    manifest = {
        "format_version": FORMAT_VERSION, "backup_id": backup_id, "host": socket.gethostname(),
        "started_at": started.isoformat(), "finished_at": finished.isoformat(),
        "duration_seconds": round((finished - started).total_seconds(), 3),
        "tools": versions, "consistency": consistency, "parts": recorded,
    }
    manifest_key = backup_key(prefix, backup_id, MANIFEST_NAME)
    s3.put_object(Bucket=bucket, Key=manifest_key, Body=json.dumps(manifest, indent=2).encode(), ContentType="application/json",
                  ChecksumAlgorithm=CHECKSUM_ALGORITHM)
    # Last of all: only a complete backup ever becomes `latest`.
    pointer = {"backup_id": backup_id, "manifest": manifest_key, "finished_at": finished.isoformat()}
    s3.put_object(Bucket=bucket, Key=latest_key(prefix), Body=json.dumps(pointer).encode(), ContentType="application/json",
                  ChecksumAlgorithm=CHECKSUM_ALGORITHM)
    return manifest


def write_metrics(path: Path, manifest: dict[str, Any], finished: float) -> None:
    """node-exporter textfile collector format, written atomically (the collector may read at any time)."""
    size = sum(part["size"] for part in manifest["parts"])
    text = (
        f"# HELP {METRIC_LAST_SUCCESS} Unix time of the last backup that reached S3 completely.\n"
        f"# TYPE {METRIC_LAST_SUCCESS} gauge\n{METRIC_LAST_SUCCESS} {finished:.0f}\n"
        f"# HELP {METRIC_DURATION} Duration of the last successful backup.\n"
        f"# TYPE {METRIC_DURATION} gauge\n{METRIC_DURATION} {manifest['duration_seconds']}\n"
        f"# HELP {METRIC_SIZE} Bytes stored by the last successful backup.\n"
        f"# TYPE {METRIC_SIZE} gauge\n{METRIC_SIZE} {size}\n"
    )
    write_textfile(path, text)


def write_textfile(path: Path, text: str) -> None:
    """A node-exporter textfile, replaced atomically (the collector may read it at any moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def s3_client() -> Any:
    return boto3.client("s3", config=botocore.config.Config(max_pool_connections=UPLOAD_THREADS + 2,
                                                            retries={"max_attempts": 5, "mode": "standard"}))


def add_container_identity(parser: argparse.ArgumentParser, tool: str) -> None:
    """--postgres-user and --postgres-database, for a container whose image does not set POSTGRES_USER and POSTGRES_DB."""
    parser.add_argument("--postgres-user", help=f"with --postgres-container: the user {tool} connects as (default: the "
                                                "container's POSTGRES_USER)")
    parser.add_argument("--postgres-database", help="with --postgres-container: the database (default: the container's POSTGRES_DB)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     epilog="Exit codes: 0 published, 1 failed (nothing published), 2 bad usage.")
    parser.add_argument("--bucket", required=True, help="backupBucketName stack output")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key prefix in the bucket (default {DEFAULT_PREFIX})")
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--postgres-url", help="libpq URL; the local pg_dump must be as new as the server")
    database.add_argument("--postgres-container", help="run pg_dump inside this PostgreSQL container (docker exec)")
    parser.add_argument("--postgres-image", help=IMAGE_HELP)
    add_container_identity(parser, "pg_dump")
    parser.add_argument("--credentials-secret", help="credentialsSecretArn: read the database password from it when the URL has none")
    parser.add_argument("--path", action="append", default=[], type=Path, help="a data directory to archive (repeatable)")
    parser.add_argument("--metrics-file", type=Path, help="write the last success time here (node-exporter textfile collector)")
    parser.add_argument("--gitea-container", default="",
                        help="pause this Gitea container while database and directories are staged, so both show one moment; "
                             "its release is recorded (restore refuses a backup from a newer Gitea)")
    parser.add_argument("--max-pause-seconds", type=float, default=DEFAULT_MAX_PAUSE_SECONDS,
                        help=f"unpause and abandon the backup if staging takes longer (default {DEFAULT_MAX_PAUSE_SECONDS})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        database = database_from_args(args.postgres_url, args.postgres_container, args.credentials_secret, args.postgres_image,
                                      args.postgres_user, args.postgres_database)
        plan_parts(database, args.path)  # usage errors before any upload starts
    except BackupError as error:
        print(f"backup: {error}", file=sys.stderr)
        return EXIT_USAGE
    except AWS_ERRORS as error:
        print(f"backup: cannot read the database password: {error}", file=sys.stderr)
        return EXIT_FAILED
    try:
        manifest = run_backup(s3_client(), args.bucket, args.prefix, database, args.path,
                              gitea_container=args.gitea_container, max_pause_seconds=args.max_pause_seconds)
    except KeyboardInterrupt:
        print("backup: interrupted; nothing was published", file=sys.stderr)
        return EXIT_FAILED
    except (BackupError, OSError, *AWS_ERRORS) as error:
        print(f"backup: failed, nothing was published: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.metrics_file:
        write_metrics(args.metrics_file, manifest, time.time())
    size = sum(part["size"] for part in manifest["parts"])
    log(f"published {manifest['backup_id']}: {size / 2**20:,.1f} MiB in {manifest['duration_seconds']:.1f} s")
    print(manifest["backup_id"])
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
