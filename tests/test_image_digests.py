"""Image digests: scripts/image_digests.py as a process against a fake registry that speaks the Registry API v2 with
anonymous bearer tokens (Docker Hub's and ghcr.io's way), and the program pulling tag@digest once the lock knows it."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from components.services import images
from policy.forgestack_rules import PINNED_IMAGE
from rehearsal.engine import REPO, run_program, stack_config
from scripts.image_digests import Reference, parse_reference, stack_images
from tests.servers import QUICK_SHUTDOWN

SCRIPT = REPO / "scripts" / "image_digests.py"
INDEX = "application/vnd.oci.image.index.v1+json"


def digest_of(repository: str, tag: str) -> str:
    return "sha256:" + hashlib.sha256(f"{repository}:{tag}".encode()).hexdigest()


class FakeRegistry(BaseHTTPRequestHandler):
    missing: ClassVar[set[str]] = set()  # repository:tag the registry does not have

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:  # the token service
        query = parse_qs(urlsplit(self.path).query)
        body = json.dumps({"token": f"pull:{query['scope'][0]}"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # manifests
        match = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", self.path)
        assert match, self.path
        repository, tag = match[1], match[2]
        scope = f"repository:{repository}:pull"
        if self.headers.get("Authorization") != f"Bearer pull:{scope}":
            self.send_response(401)
            realm = f"http://{self.headers['Host']}/token"
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="registry.test",scope="{scope}"')
            self.end_headers()
            return
        if f"{repository}:{tag}" in self.missing:
            self.send_response(404)
            self.end_headers()
            return
        assert self.headers["Accept"].startswith(INDEX)  # the multi-architecture index first, as docker pull asks
        self.send_response(200)
        self.send_header("Docker-Content-Digest", digest_of(repository, tag))
        self.send_header("Content-Type", INDEX)
        self.end_headers()


@pytest.fixture
def registry() -> Iterator[str]:
    FakeRegistry.missing = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def digests(lock: Path, registry: str, *action: str) -> subprocess.CompletedProcess[str]:
    endpoints = [argument for host in ("registry-1.docker.io", "ghcr.io") for argument in ("--endpoint", f"{host}={registry}")]
    return subprocess.run([sys.executable, str(SCRIPT), *action, *endpoints, "--lock", str(lock)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_references_name_their_registry_and_repository() -> None:
    assert parse_reference("nginx:1.28.3-alpine") == Reference("registry-1.docker.io", "library/nginx", "1.28.3-alpine")
    assert parse_reference("grafana/loki:3.5.3") == Reference("registry-1.docker.io", "grafana/loki", "3.5.3")
    assert parse_reference("ghcr.io/google/cadvisor:v0.56.2") == Reference("ghcr.io", "google/cadvisor", "v0.56.2")


def test_refresh_locks_every_stack_image_and_check_then_passes(registry: str, tmp_path: Path) -> None:
    lock = tmp_path / "image_digests.json"
    lock.write_text(json.dumps({"digests": {}}))
    assert digests(lock, registry, "--check").returncode == 1  # an empty lock is incomplete
    refreshed = digests(lock, registry, "--refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    found = json.loads(lock.read_text())["digests"]
    wanted = stack_images()
    assert list(found) == wanted and "gitea/gitea:1.27.3" in wanted and "ghcr.io/google/cadvisor:v0.56.2" in wanted
    for image, digest in found.items():
        reference = parse_reference(image)
        assert digest == digest_of(reference.repository, reference.tag)
    assert f"[{len(wanted)}/{len(wanted)}]" in refreshed.stderr  # progress, image by image
    checked = digests(lock, registry, "--check")
    assert checked.returncode == 0 and f"all {len(wanted)} images locked" in checked.stderr


def test_a_tag_the_registry_lacks_leaves_the_lock_untouched(registry: str, tmp_path: Path) -> None:
    lock = tmp_path / "image_digests.json"
    before = json.dumps({"digests": {"nginx:1.0.0": "sha256:" + "0" * 64}})
    lock.write_text(before)
    FakeRegistry.missing = {"library/postgres:18.4"}
    refreshed = digests(lock, registry, "--refresh")
    assert refreshed.returncode == 1
    assert "postgres:18.4: no such tag in registry-1.docker.io/library/postgres; the lock is unchanged" in refreshed.stderr
    assert lock.read_text() == before and "Traceback" not in refreshed.stderr


def test_check_names_missing_and_stale_entries(registry: str, tmp_path: Path) -> None:
    lock = tmp_path / "image_digests.json"
    entries = {image: "sha256:" + "1" * 64 for image in stack_images() if image != images.NGINX}
    entries["nginx:1.0.0"] = "sha256:" + "2" * 64
    lock.write_text(json.dumps({"digests": entries}))
    checked = digests(lock, registry, "--check")
    assert checked.returncode == 1
    assert f"image-digests: no digest for {images.NGINX}" in checked.stderr
    assert "image-digests: stale entry nginx:1.0.0 (no stack runs it)" in checked.stderr


def test_the_program_pulls_tag_at_digest_once_the_lock_knows_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "image_digests.json"
    lock.write_text(json.dumps({"digests": {images.NGINX: "sha256:" + "3" * 64, images.gitea("1.27.3"): "sha256:" + "4" * 64}}))
    monkeypatch.setattr(images, "DIGESTS_FILE", lock)
    images.digests.cache_clear()
    try:
        run = run_program("dev", stack_config("dev"))
    finally:
        images.digests.cache_clear()
    pulled = {r.name: r.inputs["name"] for r in run.of_type("docker:index/remoteImage:RemoteImage")}
    assert pulled["services-proxy-image"] == f"{images.NGINX}@sha256:{'3' * 64}"
    assert pulled["services-gitea-image"] == f"gitea/gitea:1.27.3@sha256:{'4' * 64}"
    assert pulled["services-valkey-image"] == images.VALKEY  # not in the lock: by its tag
    assert all(PINNED_IMAGE.match(name) for name in pulled.values())  # the policy pack takes tag@digest


def test_the_committed_lock_is_well_formed_and_holds_only_current_images() -> None:
    """Empty until someone runs --refresh with registry access (this machine has none); never stale or malformed."""
    images.digests.cache_clear()
    lock = images.digests()
    assert set(lock) <= set(stack_images())
