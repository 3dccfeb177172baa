#!/usr/bin/env python3
"""Write one credential of the stack's secret into a file that only its reader can read, for a container that reads
its secrets from files (Prometheus' bearer token, Grafana's admin password on the ops host of topology ha).

    python components/host_tools/credential_file.py --secret <credentialsSecretArn> --key metricsToken \
        --output /run/forgestack-prometheus/metricsToken --owner 65534

The value never reaches a command line, the environment or a log: it goes from Secrets Manager (the instance role)
straight into a new file of mode 0400 owned by --owner, which then replaces --output in one rename, so a reader never
sees half a file and a failed run leaves the previous file in place.

Exit codes: 0 written, 1 the secret or key could not be read or the file not written, 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__:  # imported (the tests)
    from . import backup as common
else:  # run as a file beside backup.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import backup as common  # type: ignore[no-redef]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = common.EXIT_OK, common.EXIT_FAILED, common.EXIT_USAGE
MODE = 0o400


def write_private(path: Path, value: str, owner: int) -> None:
    """value into path, readable by owner alone; replaced atomically (a temporary file beside it, then a rename)."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(value)
        if os.geteuid() == 0:
            os.chown(temporary, owner, owner)
        elif owner != os.geteuid():
            raise PermissionError(f"only root can hand the file to uid {owner}")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Exit codes: 0 written, 1 the secret or key could not be read or the file not written, 2 bad usage.",
    )
    parser.add_argument("--secret", required=True, help="the credentials secret's ARN (credentialsSecretArn output)")
    parser.add_argument("--key", required=True, help="the JSON key inside the secret, e.g. metricsToken")
    parser.add_argument("--output", type=Path, required=True, help="the file to write (its directory must exist)")
    parser.add_argument("--owner", type=int, required=True, help="uid (and gid) that reads the file, e.g. 65534 for nobody")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.output.parent.is_dir():
        print(f"credential-file: the directory of --output {args.output} does not exist", file=sys.stderr)
        return EXIT_USAGE
    try:
        value = common.read_credential(args.secret, args.key)
        write_private(args.output, value, args.owner)
    except (common.BackupError, OSError, ValueError, *common.AWS_ERRORS) as error:
        print(f"credential-file: {args.key} not written to {args.output}: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"credential-file: {args.key} written to {args.output} for uid {args.owner}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
