"""Deploy-time registration of the forge's workspace images in Kasm (files/kasm-register-images.py), run where
`pulumi up` runs, against Kasm's developer API behind the forge's proxy."""

from __future__ import annotations

import json
import shlex

import pulumi
import pulumi_command as command

from components.services import workspace_images, workspaces
from components.settings import Settings
from components.templates import FILES_DIR


def register_argv(settings: Settings) -> list[str]:
    """The script's command line: only what is not secret (the wanted images and where they come from)."""
    argv = [
        "python3", str((FILES_DIR / workspace_images.REGISTER_SCRIPT_FILE).relative_to(FILES_DIR.parent.parent)),
        "--kasm-url", f"https://{settings.hostname(workspaces.SUBDOMAIN)}",
        "--images", json.dumps(workspace_images.desired(settings), sort_keys=True),
        "--registry", f"https://{workspace_images.registry_host(settings)}",
        "--registry-user", settings.gitea_admin_user,
    ]
    if settings.acme_staging:  # the proxy's certificate is from Let's Encrypt's staging CA, which nothing trusts
        argv.append("--insecure")
    return argv


def register_images(
    settings: Settings, registry_token: pulumi.Output[str], after: list[pulumi.Resource]
) -> command.local.Command:
    """Runs on every change of the wanted images, the API key or the pull token (Pulumi re-runs `create` on update)."""
    return command.local.Command(
        "workspaces-images",
        create=shlex.join(register_argv(settings)),
        environment={
            "KASM_API_KEY": pulumi.Output.secret(settings.workspaces_api_key),
            "KASM_API_KEY_SECRET": pulumi.Output.secret(settings.workspaces_api_key_secret),
            "REGISTRY_TOKEN": registry_token,
        },
        opts=pulumi.ResourceOptions(depends_on=after),
    )
