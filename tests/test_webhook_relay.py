"""The webhook relay (components/files/webhook_relay.py) as a real HTTP server against a fake chat target,
attacked with malformed, replayed, hostile and slow requests, alone and behind the real Nginx."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.services import relay as relay_service
from components.services.proxy import ProxyRoute
from components.templates import FILES_DIR
from tests.nginx_support import https_request, read_answer, require_nginx, running_nginx, status_of, tls_connection
from tests.servers import QUICK_SHUTDOWN

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

    def __init__(self, failures: int = 0, hold: threading.Event | None = None) -> None:
        self.failures = failures
        self.hold = hold  # when given, every request waits for it: a slow chat service
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        target = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                """Quiet: the tests read what arrived, not access logs."""

            def do_POST(self) -> None:
                target.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if target.hold is not None:
                    target.hold.wait(30)
                if target.attempts <= target.failures:
                    self.send_response(503)
                else:
                    target.received.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/abc"


@pytest.fixture
def target() -> Iterator[FakeTarget]:
    fake = FakeTarget()
    yield fake
    fake.server.shutdown()


def start_relay(targets: list[str], events: set[str], attempts: int = 3, **options: Any) -> Any:
    config = relay.RelayConfig(SECRET, targets, events, attempts=attempts, backoff_seconds=0.01, timeout_seconds=2, **options)
    server = relay.serve(config, 0, host="127.0.0.1")
    threading.Thread(target=server.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True).start()
    return server


def signed_headers(event: str, body: bytes, secret: bytes | None = SECRET, delivery: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-Gitea-Event": event, "X-Gitea-Delivery": delivery or str(uuid.uuid4())}
    if secret is not None:
        headers["X-Gitea-Signature"] = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return headers


def send(server: Any, event: str, payload: dict[str, Any], secret: bytes | None = SECRET, delivery: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, str]:
    body = json.dumps(payload).encode()
    all_headers = {**signed_headers(event, body, secret, delivery), **(headers or {})}
    request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}/hooks/gitea", data=body, headers=all_headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (a loopback test server)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def raw_request(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send bytes as they are (no client library fixes them up) and read the answer, keeping our side open."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        connection.sendall(data)
        return read_answer(connection)


def wait_for(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def metric(server: Any, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"webhook_relay_{name} "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


PUSH = {"ref": "refs/heads/main", "commits": [{"id": "a"}, {"id": "b"}], "pusher": {"login": "alice"},
        "repository": {"full_name": "team/site"}, "compare_url": "https://git.example.com/team/site/compare/a...b"}


def test_signed_push_is_queued_at_once_and_forwarded(target: FakeTarget) -> None:
    server = start_relay([target.url], {"push"})
    status, body = send(server, "push", PUSH)
    assert (status, json.loads(body)) == (202, {"queued": True})
    wait_for(lambda: target.received)
    assert target.received == [{"text": "alice pushed 2 commit(s) to team/site:main https://git.example.com/team/site/compare/a...b"}]
    server.shutdown()


@pytest.mark.parametrize("signature", ["wrong-secret", None, "abc", "é" * 64, "0" * 64, "g" * 64, "a" * 63])
def test_bad_or_missing_signature_is_rejected_and_nothing_forwarded(target: FakeTarget, signature: str | None) -> None:
    server = start_relay([target.url], {"push"})
    body = json.dumps(PUSH).encode()
    headers = signed_headers("push", body, b"wrong-secret" if signature == "wrong-secret" else SECRET)
    if signature is None:
        del headers["X-Gitea-Signature"]
    elif signature != "wrong-secret":
        headers["X-Gitea-Signature"] = signature
    head = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    answer = raw_request(server.server_port, f"POST /hooks/gitea HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body)}\r\n\r\n"
                         .encode() + body)
    assert status_of(answer) == 401 and b"X-Gitea-Signature" in answer
    time.sleep(0.2)
    assert target.attempts == 0
    server.shutdown()


@pytest.mark.parametrize(("length", "expected"), [
    ("-1", 400), ("abc", 400), ("1e3", 400), ("+5", 400), ("1_0", 400), ("\u0661\u0662", 400), (None, 411),
    (str(2 * 1024 * 1024), 413),
])
def test_a_bad_content_length_is_answered_at_once_without_reading(target: FakeTarget, length: str | None, expected: int) -> None:
    server = start_relay([target.url], {"push"})
    head = "POST /hooks/gitea HTTP/1.1\r\nHost: x\r\n" + (f"Content-Length: {length}\r\n" if length is not None else "") + "\r\n"
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=3) as connection:
        connection.sendall(head.encode("utf-8") + b"x" * 1024)  # the client keeps its side open, with more to send
        started = time.monotonic()
        answer = read_answer(connection)
    assert status_of(answer) == expected, answer
    assert time.monotonic() - started < 3  # answered from the headers, not after the 10 s socket timeout
    assert b"Connection: close" in answer  # the unread body is never parsed as another request
    server.shutdown()


def test_a_body_shorter_than_announced_is_not_held_forever(target: FakeTarget) -> None:
    server = start_relay([target.url], {"push"}, socket_timeout_seconds=0.5)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as connection:
        connection.sendall(b"POST /hooks/gitea HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"ref\"")
        answer = read_answer(connection)
    assert status_of(answer) == 408
    server.shutdown()


def test_unselected_events_are_ignored(target: FakeTarget) -> None:
    server = start_relay([target.url], {"release"})
    assert send(server, "push", PUSH)[0] == 204
    assert send(server, "release", {"action": "updated", "release": {"tag_name": "v1"}})[0] == 204  # only "published"
    assert send(server, "release", {"action": "published", "release": {"tag_name": "v1.2.0", "html_url": "https://x/r"},
                                    "repository": {"full_name": "team/site"}})[0] == 202
    wait_for(lambda: target.received)
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
    wait_for(lambda: len(target.received) == 2)
    assert [m["text"] for m in target.received] == [
        "CI failed in team/site: build https://git.example.com/team/site/actions/runs/7",
        "CI failed in team/site: continuous-integration/drone",
    ]
    server.shutdown()


def test_a_failing_target_is_retried_in_the_background() -> None:
    flaky = FakeTarget(failures=2)
    server = start_relay([flaky.url], {"push"}, attempts=3)
    assert send(server, "push", PUSH)[0] == 202
    wait_for(lambda: len(flaky.received) == 1)
    assert flaky.attempts == 3
    server.shutdown()
    flaky.server.shutdown()


def test_a_target_that_never_accepts_is_counted_without_its_url(caplog: pytest.LogCaptureFixture) -> None:
    down = FakeTarget(failures=100)
    good = FakeTarget()
    server = start_relay([down.url, good.url], {"push"}, attempts=2)
    assert send(server, "push", PUSH)[0] == 202
    wait_for(lambda: metric(server, "failed_total") == 1)
    assert metric(server, "forwarded_total") == 1
    assert down.attempts == 2 and len(good.received) == 1
    assert down.url not in caplog.text  # the URL carries a token: never logged
    server.shutdown()
    down.server.shutdown()
    good.server.shutdown()


def test_a_slow_target_never_makes_gitea_wait_and_a_full_queue_is_503() -> None:
    released = threading.Event()
    slow = FakeTarget(hold=released)
    server = start_relay([slow.url], {"push"}, queue_size=1)
    started = time.monotonic()
    assert send(server, "push", PUSH)[0] == 202  # taken by the sender, which now waits on the slow target
    wait_for(lambda: slow.attempts == 1)
    assert send(server, "push", {**PUSH, "ref": "refs/heads/b"})[0] == 202  # waits in the queue
    status, body = send(server, "push", {**PUSH, "ref": "refs/heads/c"})
    assert (status, json.loads(body)) == (503, {"error": "delivery queue full, retry later"})
    assert time.monotonic() - started < 10  # every answer came while the target was stuck (it holds for 30 s)
    assert metric(server, "queue_depth") == 1
    released.set()
    wait_for(lambda: len(slow.received) == 2)
    server.shutdown()
    slow.server.shutdown()


def test_a_replayed_delivery_is_dropped(target: FakeTarget) -> None:
    server = start_relay([target.url], {"push"})
    delivery = str(uuid.uuid4())
    assert send(server, "push", PUSH, delivery=delivery)[0] == 202
    assert send(server, "push", PUSH, delivery=delivery) == (200, json.dumps({"duplicate": True}))
    assert send(server, "push", PUSH)[0] == 200  # the same signed body under a fresh id: the id is not signed
    assert send(server, "push", {**PUSH, "ref": "refs/heads/dev"}, delivery=delivery)[0] == 200
    assert send(server, "push", {**PUSH, "ref": "refs/heads/dev"}, headers={"X-Gitea-Delivery": ""})[0] == 400
    wait_for(lambda: target.received)
    time.sleep(0.2)
    assert len(target.received) == 1
    assert metric(server, "duplicate_total") == 3
    server.shutdown()


def test_remembered_deliveries_are_bounded() -> None:
    seen = relay.SeenDeliveries(size=4)  # two deliveries: an id and a body digest each
    assert seen.first_time("a", b"1") and seen.first_time("b", b"2")
    assert not seen.first_time("b", b"new body") and not seen.first_time("new id", b"1")
    assert seen.first_time("c", b"3")  # makes room by forgetting the oldest, a
    assert seen.first_time("a", b"9")
    assert len(seen.keys) == 4


def test_chat_mentions_and_markup_in_payload_text_are_escaped(target: FakeTarget) -> None:
    server = start_relay([target.url], {"push"})
    hostile = {**PUSH, "ref": "refs/heads/<!channel>-@here", "pusher": {"login": "<@U024BE7LH>&@everyone"}}
    assert send(server, "push", hostile)[0] == 202
    wait_for(lambda: target.received)
    text = target.received[0]["text"]
    assert text.startswith("&lt;@U024BE7LH&gt;&amp;@\u200beveryone pushed 2 commit(s) to team/site:&lt;!channel&gt;-@\u200bhere")
    assert "<" not in text and "@here" not in text and "@everyone" not in text
    server.shutdown()


@pytest.mark.parametrize("payload", [
    {"repository": "x", "commits": 5, "pusher": [], "ref": None},
    {"repository": {"full_name": ["a"]}, "commits": None, "sender": "bob", "compare_url": {"x": 1}},
    {"action": "published", "release": "v1", "repository": 7},
])
def test_a_signed_payload_of_any_shape_is_answered(target: FakeTarget, payload: dict[str, Any]) -> None:
    server = start_relay([target.url], {"push", "release"})
    assert send(server, "push", payload)[0] == 202
    assert send(server, "release", {**payload, "delivered": "again, as a release"})[0] in (202, 204)
    wait_for(lambda: target.received)
    assert target.received[0]["text"].startswith("? pushed")
    server.shutdown()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=12)
KEYS = st.sampled_from(["repository", "full_name", "commits", "pusher", "sender", "login", "ref", "compare_url", "action",
                        "release", "tag_name", "html_url", "workflow_run", "workflow_job", "conclusion", "name", "state",
                        "context", "target_url"])


@settings(max_examples=300, deadline=None)
@given(payload=st.dictionaries(KEYS, JSON | st.dictionaries(KEYS, JSON, max_size=4), max_size=8),
       event=st.sampled_from(["push", "release", "workflow_run", "workflow_job", "status", "issues"]))
def test_no_payload_shape_makes_the_message_builder_raise(payload: dict[str, Any], event: str) -> None:
    config = relay.RelayConfig(SECRET, [], set(relay.EVENTS))
    text = relay.select(config, event, {**payload, "action": payload.get("action", "completed")})
    assert text is None or isinstance(text, str)


def test_a_bug_in_the_handler_is_a_500_answer(target: FakeTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_relay([target.url], {"push"})

    def broken(*_: Any) -> str:
        raise KeyError("a bug")

    monkeypatch.setattr(relay, "select", broken)
    status, body = send(server, "push", PUSH)
    assert (status, json.loads(body)) == (500, {"error": "internal error"})
    assert metric(server, "errors_total") == 1
    server.shutdown()


def test_idle_connections_are_bounded_and_closed(target: FakeTarget) -> None:
    server = start_relay([target.url], {"push"}, workers=2, socket_timeout_seconds=3)
    idle = [socket.create_connection(("127.0.0.1", server.server_port), timeout=10) for _ in range(2)]
    time.sleep(0.2)
    started = time.monotonic()
    answer = raw_request(server.server_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 503 and b"too many clients" in answer  # at once, not after a wait
    assert time.monotonic() - started < 2  # well before the idle ones time out (3 s)
    for connection in idle:
        assert connection.recv(1) == b""  # closed by the relay after its socket timeout
        connection.close()
    # The slots come back as the closed connections' threads end (a moment after the client sees the close).
    wait_for(lambda: status_of(raw_request(server.server_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
             == 200, seconds=5)
    server.shutdown()


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
    monkeypatch.setenv("RELAY_WORKERS", "3")
    config = relay.RelayConfig.from_environment()
    assert (config.secret, config.targets, config.events) == (b"s3cret", ["https://chat.example.com/hooks/x"], {"push", "ci_failure"})
    assert config.workers == 3
    monkeypatch.setenv("RELAY_EVENTS", "push,deploy")
    with pytest.raises(ValueError, match="unknown events=\\['deploy'\\]"):
        relay.RelayConfig.from_environment()


def test_the_service_and_the_relay_agree_on_the_hook_path() -> None:
    assert relay_service.HOOK_PATH == relay.HOOK_PATH


# ------------------------------------------------------------ behind the real Nginx, with the rendered configuration

HOOKS_HOST = "hooks.example.test"


@pytest.fixture
def nginx_in_front(tmp_path: Path, target: FakeTarget) -> Iterator[tuple[int, Any]]:
    """The relay (2 workers, a long socket timeout) behind Nginx running the rendered hooks server block."""
    require_nginx()
    server = start_relay([target.url], {"push"}, workers=2, socket_timeout_seconds=30)
    max_body = f"{relay_service.MAX_BODY_BYTES // 1024}k"
    route = ProxyRoute(HOOKS_HOST, f"127.0.0.1:{server.server_port}", (relay_service.HOOK_PATH,), max_body)
    try:
        with running_nginx(tmp_path, [route]) as port:
            yield port, server
    finally:
        server.shutdown()


@pytest.mark.validator
def test_behind_nginx_slow_senders_never_hold_the_relays_workers(nginx_in_front: tuple[int, Any], target: FakeTarget) -> None:
    port, server = nginx_in_front
    trickling = []
    for _ in range(6):  # three times the relay's workers, each sending a tenth of its body and then nothing
        connection = tls_connection(port, HOOKS_HOST)
        connection.sendall(f"POST /hooks/gitea HTTP/1.1\r\nHost: {HOOKS_HOST}\r\nContent-Length: 1000\r\n\r\n".encode() + b"{" * 100)
        trickling.append(connection)
    time.sleep(0.3)
    body = json.dumps(PUSH).encode()
    started = time.monotonic()
    answer = https_request(port, HOOKS_HOST, "POST", "/hooks/gitea", body, signed_headers("push", body))
    assert status_of(answer) == 202, answer
    assert time.monotonic() - started < 10  # not held behind the trickling senders (the relay waits 30 s on a body)
    assert metric(server, "busy_total") == 0  # Nginx held the slow bodies; the relay never saw them
    wait_for(lambda: target.received)
    for connection in trickling:
        connection.close()


@pytest.mark.validator
@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/metrics", 404), ("GET", "/healthz", 404), ("POST", "/hooks/other", 404), ("POST", "/hooks/gitea/../x", 404),
    ("GET", "/", 404),
])
def test_behind_nginx_only_the_hook_path_is_routed(nginx_in_front: tuple[int, Any], method: str, path: str, expected: int) -> None:
    port, _ = nginx_in_front
    assert status_of(https_request(port, HOOKS_HOST, method, path)) == expected


@pytest.mark.validator
def test_behind_nginx_an_oversized_delivery_is_refused_by_nginx(nginx_in_front: tuple[int, Any]) -> None:
    port, server = nginx_in_front
    answer = https_request(port, HOOKS_HOST, "POST", "/hooks/gitea", b"x" * (relay_service.MAX_BODY_BYTES + 1))
    assert status_of(answer) == 413
    assert metric(server, "received_total") == 0
