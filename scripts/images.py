#!/usr/bin/env python3
"""Print every container image the stacks run, as one JSON list (what the supply-chain workflow scans).

    python scripts/images.py            # ["axllent/mailpit:v1.29.7", ..., "gitea/gitea:1.27.3", ...]

The pinned images of components/services/images.py, and Gitea's and PostgreSQL's at the versions each stack file
sets (or Pulumi.yaml's defaults). Needs only PyYAML. Exit codes: 0 listed, 2 a stack file could not be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from components.services import images  # noqa: E402  (after the path: run as a file)

VERSIONED = {"giteaVersion": images.gitea, "postgresVersion": images.postgres}


def pinned() -> set[str]:
    return {value for name, value in vars(images).items() if name.isupper() and isinstance(value, str) and ":" in value}


def versioned(project: dict[str, Any], stack_files: list[Path]) -> set[str]:
    found = set()
    for key, image in VERSIONED.items():
        default = str(project["config"][key]["default"])
        found.add(image(default))
        for path in stack_files:
            config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
            found.add(image(str(config.get(f"forgestack:{key}", default))))
    return found


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0]).parse_args(argv)
    try:
        project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
        listed = pinned() | versioned(project, sorted(REPO.glob("Pulumi.*.yaml")))
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        print(f"images: cannot read the stack files: {error}", file=sys.stderr)
        return 2
    print(json.dumps(sorted(listed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
