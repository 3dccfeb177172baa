#!/usr/bin/env python3
"""Move Gitea's object stores (LFS, attachments, avatars, packages, Actions logs and artifacts) from a restored
single-host data directory into the objects bucket of a `topology: ha` stack, under the keys Gitea reads there.

    python components/host_tools/move_objects.py --data /mnt/forge-files/gitea --bucket <objectsBucketName>
    python components/host_tools/move_objects.py --data /mnt/forge-files/gitea --bucket <objectsBucketName> --remove-local

On a single host Gitea keeps these files below /data; in ha its [storage] is the S3 bucket, where each store has
its own key prefix and the same relative paths (Gitea derives both from the same record). Order of work:
  1. walk every store and refuse anything that is not a plain file or directory (a store holds nothing else; a
     planted link could copy a file from outside into the bucket): nothing is uploaded then;
  2. upload each file with its SHA-256 (S3 checks it on arrival; multipart above the part size) and record it as
     object metadata; an object already there with the same size and SHA-256 is skipped, so a second run resumes;
     an object already there with other content is reported and never overwritten;
  3. with --remove-local, and only when every file of every store is verified in the bucket, delete the local
     stores (the backup still holds them).

Exit codes: 0 every object verified in the bucket, 1 some failed or conflicted (run again; nothing was removed),
2 bad usage, 3 refused before anything was uploaded (not a Gitea data directory, a link or special file in a store).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import stat
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import botocore.exceptions

if __package__:  # imported (the tests)
    from . import backup as common
else:  # run as a file, beside backup.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import backup as common  # type: ignore[no-redef]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
# (key prefix in the bucket, directory below Gitea's /data). The directories are the official image's (its app.ini
# template: APP_DATA_PATH /data/gitea, LFS in /data/git/lfs); the prefixes are Gitea's defaults when [storage] is
# minio (MINIO_BASE_PATH "<store>/"). repo-archive is left out: it is a cache Gitea rebuilds on demand.
OBJECT_STORES = (
    ("lfs/", "git/lfs"),
    ("attachments/", "gitea/attachments"),
    ("avatars/", "gitea/avatars"),
    ("repo-avatars/", "gitea/repo-avatars"),
    ("packages/", "gitea/packages"),
    ("actions_log/", "gitea/actions_log"),
    ("actions_artifacts/", "gitea/actions_artifacts"),
)
REPOSITORIES = "git/repositories"  # what makes a directory Gitea's /data
SHA256_METADATA = "sha256"  # x-amz-meta-sha256: the whole object's digest, whatever the upload's parts were
UPLOAD_THREADS = 8  # stores hold many small files: requests in flight matter more than bandwidth
READ_CHUNK = 1024 * 1024


class RefusedError(Exception):
    """The data directory cannot be moved as it is: nothing was uploaded."""


@dataclass(frozen=True)
class LocalObject:
    path: Path
    key: str
    size: int


def log(message: str) -> None:
    print(f"move-objects: {message}", file=sys.stderr, flush=True)


def plan(data: Path) -> list[LocalObject]:
    """Every file of every store with its key; RefusedError names the first entry that is not a plain file or directory."""
    if not (data / REPOSITORIES).is_dir():
        raise RefusedError(
            f"{data} is not a Gitea data directory (no {REPOSITORIES} below it); give the directory restore.py "
            "restored, the one Gitea mounts as /data"
        )
    objects: list[LocalObject] = []
    for prefix, directory in OBJECT_STORES:
        root = data / directory
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise RefusedError(f"{root} is not a directory")
        for current, subdirectories, files in os.walk(root):
            for name in sorted(subdirectories + files):
                path = Path(current, name)
                mode = path.lstat().st_mode
                if stat.S_ISDIR(mode):
                    continue
                if not stat.S_ISREG(mode):
                    kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a plain file"
                    raise RefusedError(f"{path} is {kind}; a Gitea store holds plain files only")
                relative = path.relative_to(root).as_posix()
                objects.append(LocalObject(path, prefix + relative, path.stat().st_size))
    return objects


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def existing(s3: Any, bucket: str, key: str) -> tuple[int, str] | None:
    """(size, recorded sha256 or "") of the object at key, or None when there is none."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return int(head["ContentLength"]), str(head.get("Metadata", {}).get(SHA256_METADATA, ""))


class HashingReader:
    """The file as upload_stream reads it, hashed on the way: the check before completion sees exactly what was sent."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        block = self.stream.read(size)
        self.digest.update(block)
        return block


def upload(s3: Any, bucket: str, item: LocalObject, digest: str) -> None:
    metadata = {SHA256_METADATA: digest}
    if item.size <= common.PART_SIZE:
        body = item.path.read_bytes()
        if hashlib.sha256(body).hexdigest() != digest:
            raise common.BackupError(f"{item.path} changed while it was moved")
        # S3 recomputes the checksum and refuses the object when a byte differs.
        s3.put_object(
            Bucket=bucket,
            Key=item.key,
            Body=body,
            Metadata=metadata,
            ChecksumAlgorithm=common.CHECKSUM_ALGORITHM,
            ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
        )
        return
    with item.path.open("rb") as stream:
        reader = HashingReader(stream)

        def same_file() -> None:  # runs before the object becomes visible
            if reader.digest.hexdigest() != digest:
                raise common.BackupError(f"{item.path} changed while it was moved")

        common.upload_stream(
            s3,
            bucket,
            item.key,
            reader,  # type: ignore[arg-type]  # upload_stream only calls read()
            f"upload {item.key}",
            before_complete=same_file,
            metadata=metadata,
        )


def move_one(s3: Any, bucket: str, item: LocalObject) -> str:
    """What happened to one file: uploaded, skipped (already there, same content), conflict or failed."""
    try:
        digest = sha256_of(item.path)
        found = existing(s3, bucket, item.key)
        if found == (item.size, digest):
            return "skipped"
        if found is not None:
            log(f"conflict: s3://{bucket}/{item.key} exists with other content ({found[0]} bytes); not overwritten")
            return "conflict"
        upload(s3, bucket, item, digest)
        if existing(s3, bucket, item.key) != (item.size, digest):
            raise common.BackupError(f"it does not read back with {item.size} bytes and sha256 {digest[:16]}...")
    except (common.BackupError, OSError, *common.AWS_ERRORS) as error:
        log(f"failed: {item.key}: {error}")
        return "failed"
    return "uploaded"


def run_move(s3: Any, bucket: str, data: Path, remove_local: bool) -> Counter[str]:
    objects = plan(data)
    total = sum(item.size for item in objects)
    log(f"{len(objects):,} objects, {total / 2**20:,.1f} MiB in {len(OBJECT_STORES)} stores below {data}")
    outcomes: Counter[str] = Counter()
    done_bytes, last_print = 0, 0.0
    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        for item, outcome in zip(objects, pool.map(lambda item: move_one(s3, bucket, item), objects), strict=True):
            outcomes[outcome] += 1
            done_bytes += item.size
            if time.monotonic() - last_print >= common.PROGRESS_EVERY_SECONDS:
                last_print = time.monotonic()
                log(f"{outcomes.total():,}/{len(objects):,} objects, {done_bytes / 2**20:,.1f}/{total / 2**20:,.1f} MiB")
    log(", ".join(f"{name} {outcomes[name]:,}" for name in ("uploaded", "skipped", "conflict", "failed")))
    if remove_local and not (outcomes["conflict"] or outcomes["failed"]):
        for _, directory in OBJECT_STORES:
            if (data / directory).is_dir():
                shutil.rmtree(data / directory)
                log(f"removed {data / directory} (every file verified in s3://{bucket})")
    elif remove_local:
        log("nothing removed: not every object is verified in the bucket")
    return outcomes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Exit codes: 0 every object verified in the bucket, 1 some failed or conflicted "
        "(nothing removed; run again), 2 bad usage, 3 refused before any upload.",
    )
    parser.add_argument("--data", type=Path, required=True, help="the restored Gitea data directory (Gitea's /data)")
    parser.add_argument("--bucket", required=True, help="objectsBucketName stack output")
    parser.add_argument("--remove-local", action="store_true", help="delete the local stores once every object is verified in the bucket")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.is_dir():
        print(f"move-objects: --data {args.data} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        outcomes = run_move(common.s3_client(), args.bucket, args.data, args.remove_local)
    except RefusedError as error:
        print(f"move-objects: refused, nothing was uploaded: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print("move-objects: interrupted; nothing was removed, run again to resume", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, *common.AWS_ERRORS) as error:
        print(f"move-objects: failed, nothing was removed: {error}", file=sys.stderr)
        return EXIT_FAILED
    if outcomes["conflict"] or outcomes["failed"]:
        print(
            f"move-objects: {outcomes['conflict']} conflict(s) and {outcomes['failed']} failure(s); nothing was removed, run again",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
