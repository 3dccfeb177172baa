#!/usr/bin/env python3
"""Register the forge's workspace images in Kasm Workspaces through its developer API, idempotently.

Run by the deploy (a pulumi-command on the machine running `pulumi up`) against https://workspaces.<domain>. Each
wanted image is matched by its friendly name: missing -> created, different -> updated (a new tag after a Dockerfile
change), same -> left alone. Workspaces this script did not name are never touched.

Credentials come from the environment only, never argv (which `ps` shows) and never in output:
  KASM_API_KEY, KASM_API_KEY_SECRET  a Kasm developer API key (Kasm admin UI: Settings > Developers)
  REGISTRY_TOKEN                     the token Kasm's agent pulls the images with (read:package in Gitea)

Exit status: 0 done, 1 Kasm refused or could not be reached, 2 wrong usage. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from typing import Any

API_PREFIX = "/api/public"
TIMEOUT_SECONDS = 30
ATTEMPTS = 5  # the proxy may still be reloading right after a deploy: retry unreachable, never a refusal
PAUSE_SECONDS = 6
# The fields this script owns on each workspace; anything else an admin set in Kasm's UI is left as it is.
MANAGED_FIELDS = ("name", "description", "cores", "memory", "enabled", "image_type", "docker_registry", "docker_user")
ENVIRONMENT = ("KASM_API_KEY", "KASM_API_KEY_SECRET", "REGISTRY_TOKEN")


class KasmError(Exception):
    """Kasm refused a call or could not be reached: one line for the operator."""


class KasmApi:
    def __init__(self, base_url: str, api_key: str, api_key_secret: str, verify_tls: bool) -> None:
        if not base_url.startswith("https://"):
            raise KasmError(f"--kasm-url {base_url!r}: expected an https:// address (the API key travels in each call)")
        self._base = base_url.rstrip("/") + API_PREFIX
        self._auth = {"api_key": api_key, "api_key_secret": api_key_secret}
        self._tls = ssl.create_default_context()
        if not verify_tls:  # a staging (untrusted) certificate on the proxy: the operator said so with --insecure
            self._tls.check_hostname = False
            self._tls.verify_mode = ssl.CERT_NONE

    def call(self, endpoint: str, **payload: Any) -> dict[str, Any]:
        body = json.dumps({**self._auth, **payload}).encode()
        request = urllib.request.Request(f"{self._base}/{endpoint}", data=body, method="POST",  # noqa: S310 (https only, checked above)
                                         headers={"Content-Type": "application/json"})
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=self._tls) as response:  # noqa: S310
                    answer = json.loads(response.read() or b"{}")
                break
            except urllib.error.HTTPError as error:  # Kasm answered: report what it said, do not retry
                raise KasmError(f"{endpoint}: HTTP {error.code} {_error_message(error.read())}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                reason = getattr(error, "reason", error)
                if isinstance(reason, ssl.SSLError):  # a certificate problem does not heal itself: no retry
                    raise KasmError(f"{endpoint}: TLS with {self._base} failed ({reason}); --insecure only for a "
                                    "staging certificate") from None
                if attempt == ATTEMPTS:
                    raise KasmError(f"{endpoint}: Kasm not reachable at {self._base} ({reason})") from None
                print(f"Kasm not reachable yet (attempt {attempt}/{ATTEMPTS}), retrying in {PAUSE_SECONDS} s", flush=True)
                time.sleep(PAUSE_SECONDS)
            except json.JSONDecodeError:
                raise KasmError(f"{endpoint}: Kasm answered something that is not JSON (is the URL Kasm's?)") from None
        if not isinstance(answer, dict):
            raise KasmError(f"{endpoint}: unexpected answer {type(answer).__name__}, expected a JSON object")
        if answer.get("error_message"):  # Kasm reports refusals in the body, often with status 200
            raise KasmError(f"{endpoint}: {answer['error_message']}")
        return answer


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error_message") or "")
    except (ValueError, AttributeError):
        return ""


def wanted_images(images_json: str, registry: str, registry_user: str, registry_token: str) -> list[dict[str, Any]]:
    try:
        images = json.loads(images_json)
    except json.JSONDecodeError as error:
        raise SystemExit(f"usage: --images is not JSON ({error.msg}); expected a list of workspace objects") from None
    required = {"friendly_name", "name", "description", "cores", "memory"}
    if not isinstance(images, list) or not all(isinstance(i, dict) and required <= i.keys() for i in images):
        raise SystemExit(f"usage: --images must be a JSON list of objects with {sorted(required)}")
    return [
        {**image, "enabled": True, "image_type": "Container", "docker_registry": registry, "docker_user": registry_user,
         "docker_token": registry_token}
        for image in images
    ]


def differs(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """A workspace is left alone only when Kasm shows every field this script owns as wanted, the pull token included:
    a token Kasm does not show cannot be checked, so it is set again (a new one after a rotation must reach Kasm)."""
    return any(current.get(field) != wanted[field] for field in (*MANAGED_FIELDS, "docker_token"))


def register(api: KasmApi, wanted: list[dict[str, Any]]) -> dict[str, str]:
    """Create or update each wanted workspace; returns friendly name -> what was done."""
    print(f"reading the workspaces Kasm has ({len(wanted)} to register)", flush=True)
    existing = api.call("get_images").get("images")
    if not isinstance(existing, list):
        raise KasmError("get_images: no 'images' list in Kasm's answer")
    done: dict[str, str] = {}
    for image in wanted:
        matches = [current for current in existing if current.get("friendly_name") == image["friendly_name"]]
        if len(matches) > 1:
            raise KasmError(f"{len(matches)} workspaces are named {image['friendly_name']!r} in Kasm; expected at most one "
                            "(rename or delete the extra ones in Kasm's admin UI)")
        if not matches:
            api.call("create_image", target_image=image)
            done[image["friendly_name"]] = "created"
        elif differs(matches[0], image):
            api.call("update_image", target_image={**image, "image_id": matches[0]["image_id"]})
            done[image["friendly_name"]] = "updated"
        else:
            done[image["friendly_name"]] = "unchanged"
        print(f"{image['friendly_name']}: {done[image['friendly_name']]} ({image['name']})", flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kasm-url", required=True, help="Kasm's address, e.g. https://workspaces.example.com")
    parser.add_argument("--images", required=True, help="JSON list of workspaces: friendly_name, name, description, "
                        "cores, memory (bytes)")
    parser.add_argument("--registry", required=True, help="the registry the images are pulled from, e.g. https://git.example.com")
    parser.add_argument("--registry-user", required=True, help="the account REGISTRY_TOKEN belongs to")
    parser.add_argument("--insecure", action="store_true", help="accept an untrusted certificate (ACME staging)")
    args = parser.parse_args(argv)
    missing = [name for name in ENVIRONMENT if not os.environ.get(name)]
    if missing:
        print(f"usage: set {', '.join(missing)} in the environment (credentials are never taken as arguments)", file=sys.stderr)
        return 2
    try:
        wanted = wanted_images(args.images, args.registry, args.registry_user, os.environ["REGISTRY_TOKEN"])
        api = KasmApi(args.kasm_url, os.environ["KASM_API_KEY"], os.environ["KASM_API_KEY_SECRET"], not args.insecure)
        register(api, wanted)
    except SystemExit as error:
        print(error, file=sys.stderr)
        return 2
    except KasmError as error:
        print(f"Kasm workspace registration failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
