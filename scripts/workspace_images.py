#!/usr/bin/env python3
"""What the workspace-images workflow builds and where it pushes each image, from the same facts the deploy registers.

    python scripts/workspace_images.py                    # one line per image and target stack, for people
    python scripts/workspace_images.py --github-output    # images=<JSON> and targets=<JSON>, for $GITHUB_OUTPUT

images: every workspaces/<directory> with the tag its contents give (components/services/workspace_images.py).
targets: for each stack file with workspaces on, each image's reference in that stack's Gitea registry, and the
registry host to log in to. Stack files with workspaces off get nothing (their forge runs no Kasm).
Exit codes: 0 listed, 2 a stack file could not be read or is invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from components.services import workspace_images  # noqa: E402  (after the path: run as a file)
from components.settings import ConfigError, Settings, parse  # noqa: E402
from rehearsal.engine import stack_config  # noqa: E402


def stacks_with_workspaces(stack_names: list[str]) -> list[Settings]:
    found = []
    for stack in stack_names:
        settings = parse(stack_config(stack), stack)
        if settings.workspaces:
            found.append(settings)
    return found


def plan(stack_names: list[str]) -> dict[str, list[dict[str, Any]]]:
    images = [{"directory": image.directory, "tag": workspace_images.tag(image)} for image in workspace_images.IMAGES]
    targets = [
        {"stack": settings.stack, "directory": image.directory, "registry": workspace_images.registry_host(settings),
         "reference": workspace_images.reference(settings, image)}
        for settings in stacks_with_workspaces(stack_names)
        for image in workspace_images.IMAGES
    ]
    return {"images": images, "targets": targets}


def all_stacks() -> list[str]:
    return sorted(path.name.removeprefix("Pulumi.").removesuffix(".yaml") for path in REPO.glob("Pulumi.*.yaml"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", action="append", help="a stack to plan for (repeatable); default: every stack file")
    parser.add_argument("--github-output", action="store_true", help="print images=... and targets=... lines")
    args = parser.parse_args(argv)
    try:
        result = plan(args.stack or all_stacks())
    except (OSError, ValueError, ConfigError) as error:
        print(f"workspace_images: cannot read the stack settings: {error}", file=sys.stderr)
        return 2
    if args.github_output:
        print(f"images={json.dumps(result['images'], separators=(',', ':'))}")
        print(f"targets={json.dumps(result['targets'], separators=(',', ':'))}")
        return 0
    for image in result["images"]:
        print(f"workspaces/{image['directory']}: tag {image['tag']}")
    for target in result["targets"]:
        print(f"  {target['stack']}: {target['reference']}")
    if not result["targets"]:
        print("no stack file turns workspaces on: nothing to push")
    return 0


if __name__ == "__main__":
    sys.exit(main())
