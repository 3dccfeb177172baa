"""The README stays true: its diagrams parse, and the files and commands it names exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rehearsal.engine import REPO
from tests.node_tools import run_node_validator

README = REPO / "README.md"


@pytest.mark.validator
def test_every_mermaid_diagram_parses() -> None:
    result = run_node_validator("mermaid.mjs", str(README))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok") == README.read_text().count("```mermaid") >= 2


@pytest.mark.validator
def test_the_parser_rejects_a_broken_diagram(tmp_path: Path) -> None:
    broken = tmp_path / "broken.md"
    broken.write_text("```mermaid\nflowchart LR\n  a[one] -->\n```\n")
    assert run_node_validator("mermaid.mjs", str(broken)).returncode == 1


def test_every_path_in_the_layout_exists() -> None:
    layout = README.read_text().split("```\nPulumi.yaml", 1)[1].split("```", 1)[0]
    paths = [line.split()[0] for line in ("Pulumi.yaml" + layout).splitlines() if line.strip()]
    missing = []
    for path in paths:
        if "{" in path:  # components/services/{a,b}.py
            stem, alternatives, suffix = re.fullmatch(r"(.*)\{(.*)\}(.*)", path).groups()  # type: ignore[union-attr]
            missing += [f"{stem}{name}{suffix}" for name in alternatives.split(",") if not (REPO / f"{stem}{name}{suffix}").exists()]
        elif not (REPO / path).exists():
            missing.append(path)
    assert not missing, f"README layout names files that do not exist: {missing}"


def test_every_script_the_readme_runs_exists() -> None:
    scripts = set(re.findall(r"scripts/[a-z_]+\.py", README.read_text()))
    assert scripts and all((REPO / script).exists() for script in scripts), scripts
