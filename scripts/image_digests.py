#!/usr/bin/env python3
"""Pin every image the stacks run to its digest: components/files/image_digests.json (image:tag -> sha256:...).

    python scripts/image_digests.py --refresh        # ask each registry for each tag's digest, rewrite the lock
    python scripts/image_digests.py --check          # exit 1 unless every image has a digest and none is stale

--refresh asks the registry of each image (Docker Hub, ghcr.io, quay.io, ...; anonymous pull tokens, the Registry
HTTP API v2) for the digest its tag points at now: the multi-architecture index where there is one, which is what
`docker pull` resolves. Every image is printed as it is resolved. The lock is written only when every image resolved:
a registry that refuses one leaves the old lock untouched. --endpoint REGISTRY=URL sends a registry's requests
elsewhere (a pull-through mirror). Renovate keeps the digests of unchanged tags current; after a tag changes in
components/services/images.py or a version setting, run --refresh (--check, in the supply-chain workflow, says so).

Exit codes: 0 done (or every image locked), 1 a registry refused or the lock is incomplete or stale, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import yaml

REPO: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from components.services.images import DIGEST, DIGESTS_FILE  # noqa: E402  (after the path: run as a file)
from scripts.images import pinned, versioned  # noqa: E402

DOCKER_HUB: Final = "registry-1.docker.io"
# What `docker pull` accepts, index first: the digest of a multi-architecture image is its index's.
ACCEPT: Final = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
TIMEOUT_SECONDS: Final = 30


class RegistryError(Exception):
    """A registry did not give a digest for an image (exit 1)."""


@dataclass(frozen=True)
class Reference:
    registry: str  # host of the Registry API
    repository: str  # library/nginx, google/cadvisor
    tag: str


def parse_reference(image: str) -> Reference:
    """nginx:1.28 -> registry-1.docker.io library/nginx 1.28; ghcr.io/google/cadvisor:v0.56 -> ghcr.io google/cadvisor."""
    name, _, tag = image.rpartition(":")
    if not name or "@" in image or "/" in tag:
        raise ValueError(f"{image!r} is not image:tag")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return Reference(first, rest, tag)
    return Reference(DOCKER_HUB, name if rest else f"library/{name}", tag)


Opener = Callable[[urllib.request.Request], tuple[int, Mapping[str, str], bytes]]


def open_url(request: urllib.request.Request) -> tuple[int, Mapping[str, str], bytes]:
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 (registry URLs)
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
    except (urllib.error.URLError, OSError) as error:
        raise RegistryError(f"{request.full_url}: {getattr(error, 'reason', error)}") from error


def bearer_token(challenge: str, opener: Opener) -> str:
    """An anonymous pull token from the realm a 401's WWW-Authenticate names."""
    if not challenge.lower().startswith("bearer "):
        raise RegistryError(f"the registry asks for {challenge.split(' ')[0] or 'nothing'} authentication, not a bearer token")
    fields = dict(_CHALLENGE.findall(challenge))
    realm = fields.pop("realm", "")
    if not realm.startswith(("https://", "http://")):
        raise RegistryError(f"no token realm in {challenge!r}")
    status, _, body = opener(urllib.request.Request(f"{realm}?{urllib.parse.urlencode(fields)}"))  # noqa: S310
    if status != 200:
        raise RegistryError(f"the token service {realm} answered HTTP {status}")
    document = json.loads(body)
    token = document.get("token") or document.get("access_token")
    if not token:
        raise RegistryError(f"the token service {realm} gave no token")
    return str(token)


def resolve(image: str, endpoints: Mapping[str, str], opener: Opener = open_url) -> str:
    reference = parse_reference(image)
    base = endpoints.get(reference.registry, f"https://{reference.registry}")
    url = f"{base}/v2/{reference.repository}/manifests/{reference.tag}"
    headers = {"Accept": ACCEPT}
    status, answer, _ = opener(urllib.request.Request(url, headers=headers, method="HEAD"))  # noqa: S310
    if status == 401:
        headers["Authorization"] = "Bearer " + bearer_token(_header(answer, "WWW-Authenticate"), opener)
        status, answer, _ = opener(urllib.request.Request(url, headers=headers, method="HEAD"))  # noqa: S310
    if status == 404:
        raise RegistryError(f"{image}: no such tag in {reference.registry}/{reference.repository}")
    if status != 200:
        raise RegistryError(f"{image}: {reference.registry} answered HTTP {status}")
    digest = _header(answer, "Docker-Content-Digest")
    if not DIGEST.fullmatch(digest):
        raise RegistryError(f"{image}: {reference.registry} sent no sha256 digest")
    return digest


def _header(headers: Mapping[str, str], name: str) -> str:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), "")


def stack_images() -> list[str]:
    """Every image:tag the stacks run (scripts/images.py's list)."""
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    return sorted(pinned() | versioned(project, sorted(REPO.glob("Pulumi.*.yaml"))))


def read_lock(path: Path) -> dict[str, str]:
    return dict(json.loads(path.read_text())["digests"])


def write_lock(path: Path, found: Mapping[str, str], now: datetime) -> None:
    document = {"written_by": "python scripts/image_digests.py --refresh", "refreshed_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "digests": dict(sorted(found.items()))}
    path.write_text(json.dumps(document, indent=2) + "\n")


def check(lock: Mapping[str, str], images: list[str]) -> list[str]:
    """Problems of the lock against the images: missing digests and entries no stack runs."""
    problems = [f"no digest for {image}" for image in images if image not in lock]
    problems += [f"stale entry {image} (no stack runs it)" for image in sorted(set(lock) - set(images))]
    return problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--refresh", action="store_true", help="resolve every image's digest and rewrite the lock")
    action.add_argument("--check", action="store_true", help="exit 1 unless the lock covers exactly the stacks' images")
    parser.add_argument("--endpoint", action="append", default=[], metavar="REGISTRY=URL",
                        help="send REGISTRY's requests to URL (a mirror), e.g. registry-1.docker.io=https://mirror.example")
    parser.add_argument("--lock", type=Path, default=DIGESTS_FILE, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, opener: Opener = open_url) -> int:
    args = parse_args(argv)
    endpoints = {}
    for entry in args.endpoint:
        registry, _, url = entry.partition("=")
        if not registry or not url.startswith(("https://", "http://")):
            print(f"image-digests: --endpoint {entry!r}: expected REGISTRY=URL", file=sys.stderr)
            return 2
        endpoints[registry] = url.rstrip("/")
    images = stack_images()
    if args.check:
        problems = check(read_lock(args.lock), images)
        for problem in problems:
            print(f"image-digests: {problem}", file=sys.stderr)
        if problems:
            print(f"image-digests: {len(problems)} problem(s): run python scripts/image_digests.py --refresh", file=sys.stderr)
            return 1
        print(f"image-digests: all {len(images)} images locked", file=sys.stderr)
        return 0
    found = {}
    for number, image in enumerate(images, start=1):
        try:
            found[image] = resolve(image, endpoints, opener)
        except (RegistryError, ValueError, json.JSONDecodeError) as error:
            print(f"image-digests: {error}; the lock is unchanged", file=sys.stderr)
            return 1
        print(f"image-digests: [{number}/{len(images)}] {image} -> {found[image]}", file=sys.stderr, flush=True)
    write_lock(args.lock, found, datetime.now(UTC))
    print(f"image-digests: wrote {len(found)} digests to {args.lock.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
