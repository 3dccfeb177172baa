"""renovate.json: Renovate's own config validator (npm `renovate`, tools/validators) accepts it as repository config
and refuses a broken copy; its regex managers, run here with Python's re on the real files, find every pinned image,
Gitea's and PostgreSQL's versions in Pulumi.yaml and every stack file, and the Pulumi CLI's version."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rehearsal.engine import REPO
from tests.node_tools import VALIDATORS

VALIDATOR = VALIDATORS / "node_modules" / ".bin" / "renovate-config-validator"
CONFIG = REPO / "renovate.json"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    if not (shutil.which("node") and VALIDATOR.exists()):
        message = "Renovate's validator not installed: npm ci --prefix tools/validators (.ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run([str(VALIDATOR), "--strict", "--no-global", str(path)], capture_output=True, text=True, check=False,
                          cwd=REPO, timeout=120)  # fmt: skip


@pytest.mark.validator
def test_renovates_validator_accepts_the_config_and_refuses_a_broken_one(tmp_path: Path) -> None:
    accepted = validate(CONFIG)
    assert accepted.returncode == 0 and "validated successfully" in accepted.stdout, accepted.stdout[-2000:]
    broken = tmp_path / "renovate.json"
    broken.write_text(CONFIG.read_text().replace('"automerge": false', '"automerge": "no"', 1))
    refused = validate(broken)
    assert refused.returncode == 1 and "should be boolean" in refused.stdout


def python_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern.replace("(?<", "(?P<"))  # JavaScript's named groups in Python's spelling


NOT_THE_PROJECTS = {".git", ".venv", "tools", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
                    ".hypothesis"}


@functools.cache
def project_files() -> tuple[str, ...]:
    """The repository's own files (relative, sorted), without walking the virtualenv and the node validators."""
    found = []
    for directory, subdirectories, files in os.walk(REPO):
        subdirectories[:] = [name for name in subdirectories if name not in NOT_THE_PROJECTS]
        found += [(Path(directory) / name).relative_to(REPO).as_posix() for name in files]
    return tuple(sorted(found))


def extracted(manager: dict[str, Any]) -> set[str]:
    """depName:currentValue of everything the manager's matchStrings find in the files its patterns name."""
    found = set()
    file_patterns = [re.compile(pattern.strip("/")) for pattern in manager["managerFilePatterns"]]
    for relative in project_files():
        if not any(p.search(relative) for p in file_patterns):
            continue
        text = (REPO / relative).read_text()
        for pattern in manager["matchStrings"]:
            for match in python_regex(pattern).finditer(text):
                groups = match.groupdict()
                found.add(f"{groups.get('depName') or manager['depNameTemplate']}:{groups['currentValue']}")
    return found


def test_the_regex_managers_find_every_pinned_image_and_version() -> None:
    managers = json.loads(CONFIG.read_text())["customManagers"]
    found = set().union(*(extracted(manager) for manager in managers if manager["datasourceTemplate"] == "docker"))
    listed = subprocess.run([sys.executable, str(REPO / "scripts" / "images.py")], capture_output=True, text=True, check=True)
    assert found == set(json.loads(listed.stdout))  # every image the stacks run, and nothing else
    (cli,) = [manager for manager in managers if manager["datasourceTemplate"] == "github-releases"]
    pulumi_pin = re.search(r"^pulumi==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert pulumi_pin and extracted(cli) == {f"pulumi/pulumi:{pulumi_pin.group(1)}"}  # the CLI moves with the SDK
