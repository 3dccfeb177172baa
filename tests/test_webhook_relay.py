"""The webhook relay (components/files/webhook_relay.py) as a real HTTP server against a fake chat target."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from components.templates import FILES_DIR

SECRET = b"relay-test-secret"


def _load_relay() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_relay", FILES_DIR / "webhook_relay.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through the module's entry
    spec.loader.exec_module(module)
    return module


relay = _load_relay()


class FakeTarget:
    """A chat webhook that records what it receives and fails the first `failures` requests."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        target = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                """Quiet: the tests read what arrived, not access logs."""

            def do_POST(self) -> None:
                target.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if target.attempts <= target.failures:
                    self.send_response(503)
                else:
                    target.received.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/abc"


@pytest.fixture
def target() -> Iterator[FakeTarget]:
    fake = FakeTarget()
    yield fake
    fake.server.shutdown()


def start_relay(targets: list[str], events: set[str], attempts: int = 3) -> Any:
    config = relay.RelayConfig(SECRET, targets, events, attempts=attempts, backoff_seconds=0.01, timeout_seconds=2)
    server = relay.serve(config, 0, host="127.0.0.1")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def send(server: Any, event: str, payload: dict[str, Any], secret: bytes | None = SECRET) -> tuple[int, str]:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-Gitea-Event": event}
    if secret is not None:
        headers["X-Gitea-Signature"] = hmac.new(secret, body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/hooks/gitea", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (a loopback test server)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


PUSH = {"ref": "refs/heads/main", "commits": [{"id": "a"}, {"id": "b"}], "pusher": {"login": "alice"},
        "repository": {"full_name": "team/site"}, "compare_url": "https://git.example.com/team/site/compare/a...b"}


def test_signed_push_is_forwarded(target: FakeTarget) -> None:
    server = start_relay([target.url], {"push"})
    status, _ = send(server, "push", PUSH)
    assert status == 202
    assert target.received == [{"text": "alice pushed 2 commit(s) to team/site:main https://git.example.com/team/site/compare/a...b"}]
    server.shutdown()


@pytest.mark.parametrize("secret", [b"wrong-secret", None])
def test_bad_or_missing_signature_is_rejected_and_nothing_forwarded(target: FakeTarget, secret: bytes | None) -> None:
    server = start_relay([target.url], {"push"})
    status, body = send(server, "push", PUSH, secret)
    assert status == 401 and "X-Gitea-Signature" in body
    assert target.attempts == 0
    server.shutdown()


def test_unselected_events_are_ignored(target: FakeTarget) -> None:
    server = start_relay([target.url], {"release"})
    assert send(server, "push", PUSH)[0] == 204
    assert send(server, "release", {"action": "updated", "release": {"tag_name": "v1"}})[0] == 204  # only "published"
    assert send(server, "release", {"action": "published", "release": {"tag_name": "v1.2.0", "html_url": "https://x/r"},
                                    "repository": {"full_name": "team/site"}})[0] == 202
    assert target.received == [{"text": "team/site released v1.2.0: https://x/r"}]
    server.shutdown()


def test_only_failed_ci_is_forwarded(target: FakeTarget) -> None:
    server = start_relay([target.url], {"ci_failure"})
    run = {"name": "build", "html_url": "https://git.example.com/team/site/actions/runs/7"}
    repo = {"full_name": "team/site"}

    def completed(conclusion: str) -> dict[str, Any]:
        return {"action": "completed", "workflow_run": {**run, "conclusion": conclusion}, "repository": repo}

    assert send(server, "workflow_run", completed("success"))[0] == 204
    assert send(server, "workflow_run", completed("failure"))[0] == 202
    assert send(server, "status", {"state": "error", "context": "continuous-integration/drone", "repository": repo})[0] == 202
    assert [m["text"] for m in target.received] == [
        "CI failed in team/site: build https://git.example.com/team/site/actions/runs/7",
        "CI failed in team/site: continuous-integration/drone",
    ]
    server.shutdown()


def test_a_failing_target_is_retried() -> None:
    flaky = FakeTarget(failures=2)
    server = start_relay([flaky.url], {"push"}, attempts=3)
    assert send(server, "push", PUSH)[0] == 202
    assert flaky.attempts == 3 and len(flaky.received) == 1
    server.shutdown()
    flaky.server.shutdown()


def test_a_target_that_never_accepts_is_reported_without_its_url() -> None:
    down = FakeTarget(failures=100)
    good = FakeTarget()
    server = start_relay([down.url, good.url], {"push"}, attempts=2)
    status, body = send(server, "push", PUSH)
    assert status == 502
    assert json.loads(body) == {"forwarded": 1, "failed": ["target 0"]}  # the URL carries a token: never echoed
    assert down.attempts == 2 and len(good.received) == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert "webhook_relay_failed_total 1" in metrics and "webhook_relay_forwarded_total 1" in metrics
    server.shutdown()
    down.server.shutdown()
    good.server.shutdown()


def test_health_and_unknown_paths(target: FakeTarget) -> None:
    server = start_relay([target.url], {"push"})
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/healthz", timeout=5) as response:
        assert json.loads(response.read()) == {"status": "ok"}
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/nope", timeout=5)
    assert missing.value.code == 404
    server.shutdown()


def test_configuration_comes_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "targets").write_text('["https://chat.example.com/hooks/x"]')
    monkeypatch.setenv("RELAY_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.setenv("RELAY_TARGETS_FILE", str(tmp_path / "targets"))
    monkeypatch.setenv("RELAY_EVENTS", "push,ci_failure")
    config = relay.RelayConfig.from_environment()
    assert (config.secret, config.targets, config.events) == (b"s3cret", ["https://chat.example.com/hooks/x"], {"push", "ci_failure"})
    monkeypatch.setenv("RELAY_EVENTS", "push,deploy")
    with pytest.raises(ValueError, match="unknown events=\\['deploy'\\]"):
        relay.RelayConfig.from_environment()
