"""Stand-ins for commands a script runs (docker, pulumi, sshd, ...), put first on PATH by the tests."""

from __future__ import annotations

from pathlib import Path


def install_shim(directory: Path, name: str, script: str) -> Path:
    """An executable `name` in `directory` running `script` (a complete shell script, #! line included)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(script)
    path.chmod(0o755)
    return path
