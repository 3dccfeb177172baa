"""The forge's own Kasm workspaces: images built from workspaces/<name>/Dockerfile by CI
(.github/workflows/workspace-images.yml), pushed to this stack's Gitea container registry, and registered in Kasm at
deploy time (files/kasm-register-images.py). Pure facts, no cloud call.

An image's tag is the digest of its build directory: CI and the deploy compute it from the same commit, so what the
deploy registers is exactly what CI built from that commit, and a changed Dockerfile is a new tag (never a moved one).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from components.services import gitea
from components.settings import KASM_SESSION_MIB, Settings

SOURCE_DIR = Path(__file__).resolve().parents[2] / "workspaces"
TAG_PREFIX = "src-"
TAG_DIGITS = 16  # of the build directory's SHA-256: enough to never collide between two commits' contents
IMAGE_SUFFIX = "-workspace"  # git.<domain>/<owner>/devops-workspace
MIB = 1024 * 1024
# The Gitea access token Kasm pulls the images with: read-only on packages, made in Gitea at deploy time.
PULL_TOKEN_CREDENTIAL = "workspacesRegistryToken"  # noqa: S105 (a credentials key; the token is made at deploy time)
PULL_TOKEN_SCOPES = "read:package"  # noqa: S105 (a scope name)
REGISTER_SCRIPT_FILE = "kasm-register-images.py"


@dataclass(frozen=True)
class WorkspaceImage:
    """One workspace offered in Kasm."""

    directory: str  # workspaces/<directory>/Dockerfile
    friendly_name: str  # what users see in Kasm, and what registration matches an existing workspace by
    description: str
    cores: float  # Kasm's CPU allocation for a session
    memory_mib: int  # Kasm's memory limit for a session


IMAGES: tuple[WorkspaceImage, ...] = (
    # Kasm's default workspace memory, which the host's memory check counts per session.
    WorkspaceImage("devops", "Forge DevOps", "Ubuntu desktop with git, Pulumi, the AWS CLI, Python, the Docker CLI and "
                   "kubectl, pinned to what this forge is built with.", cores=2, memory_mib=KASM_SESSION_MIB),
    WorkspaceImage("postman", "Forge Postman", "Postman for the forge's APIs.", cores=1, memory_mib=2048),
)


def dockerfile(image: WorkspaceImage) -> Path:
    return SOURCE_DIR / image.directory / "Dockerfile"


def tag(image: WorkspaceImage) -> str:
    """src-<digest of every file of the build directory, names and contents, in a fixed order>."""
    digest = hashlib.sha256()
    root = SOURCE_DIR / image.directory
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return TAG_PREFIX + digest.hexdigest()[:TAG_DIGITS]


def registry_host(settings: Settings) -> str:
    """The stack's Gitea serves its container registry at its own hostname."""
    return settings.hostname(gitea.SUBDOMAIN)


def repository(settings: Settings, image: WorkspaceImage) -> str:
    """Images belong to the Gitea admin account (the deploy's pull token is that account's)."""
    return f"{registry_host(settings)}/{settings.gitea_admin_user}/{image.directory}{IMAGE_SUFFIX}"


def reference(settings: Settings, image: WorkspaceImage) -> str:
    return f"{repository(settings, image)}:{tag(image)}"


def registration_enabled(settings: Settings) -> bool:
    """Registration needs Kasm's API key, which an admin makes in Kasm's UI after the first deploy."""
    return settings.workspaces and bool(settings.workspaces_api_key and settings.workspaces_api_key_secret)


def pull_token_command(settings: Settings, gitea_container: str) -> list[str]:
    """docker exec that prints a fresh read:package token of the admin. Token names are unique per user in Gitea, so the
    name carries the time it was made (the command runs once, and again only when its arguments change)."""
    make = (f'exec gitea admin user generate-access-token --username "$1" --scopes {PULL_TOKEN_SCOPES} --raw '
            '--token-name "kasm-pull-$(date -u +%Y%m%dT%H%M%SZ)"')
    return ["docker", "exec", "--user", "git", gitea_container, "sh", "-c", make, "sh", settings.gitea_admin_user]


def desired(settings: Settings) -> list[dict[str, object]]:
    """What the registration script makes Kasm hold (no credentials: those travel in its environment)."""
    return [
        {
            "friendly_name": image.friendly_name,
            "name": reference(settings, image),
            "description": image.description,
            "cores": image.cores,
            "memory": image.memory_mib * MIB,  # Kasm counts bytes
        }
        for image in IMAGES
    ]
