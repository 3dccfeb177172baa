"""forgestack webhook relay: receives Gitea webhooks, verifies their HMAC signature, forwards selected events.

Runs in a pinned Python image with this file uploaded (standard library only, no private registry).
Configuration from the environment:
  RELAY_SECRET_FILE     file holding the webhook secret shared with Gitea (HMAC-SHA256 key)
  RELAY_TARGETS_FILE    file holding a JSON list of chat webhook URLs (Slack-compatible {"text": ...})
  RELAY_EVENTS          comma-separated: push, release, ci_failure
  RELAY_PORT            listen port (default 8080)
  RELAY_ATTEMPTS        tries per target (default 3), with exponential backoff from RELAY_BACKOFF_SECONDS (default 1)
  RELAY_MAX_BODY_BYTES  largest accepted delivery (default 1 MiB)
  RELAY_WORKERS         connections served at once (default 8); more get 503 at once
  RELAY_QUEUE_SIZE      messages waiting for delivery (default 100); a full queue answers 503
  RELAY_SOCKET_TIMEOUT  seconds a connection may sit idle or trickle its body (default 10)

Endpoints: POST /hooks/gitea (Gitea's X-Gitea-Event, X-Gitea-Delivery and X-Gitea-Signature headers),
GET /healthz, GET /metrics (Prometheus text format). Answers: 202 queued for delivery, 200 a delivery
seen before (dropped), 204 ignored (event not selected), 400 malformed, 401 bad or missing signature,
411 no Content-Length, 413 too large, 503 busy or queue full (Gitea may retry), 500 a bug, never a
dropped connection. Deliveries are queued and sent by a background thread with retries, so Gitea
never waits for a slow chat service.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

EVENTS = ("push", "release", "ci_failure")
HOOK_PATH = "/hooks/gitea"
SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")  # hex HMAC-SHA256
CONTENT_LENGTH = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() would also take "-1", " 1", "1_0" and non-ASCII digits
DELIVERY_ID = re.compile(r"[0-9A-Za-z-]{1,64}")  # Gitea sends a UUID
REMEMBERED_DELIVERIES = 10_000  # ids and body digests kept to drop replays (in memory: a restart forgets them)
log = logging.getLogger("webhook-relay")


@dataclass
class RelayConfig:
    secret: bytes
    targets: list[str]
    events: set[str]
    attempts: int = 3
    backoff_seconds: float = 1.0
    timeout_seconds: float = 10.0  # per request to a target
    max_body_bytes: int = 1024 * 1024
    workers: int = 8
    queue_size: int = 100
    socket_timeout_seconds: float = 10.0

    @classmethod
    def from_environment(cls) -> RelayConfig:
        with open(os.environ["RELAY_SECRET_FILE"], "rb") as handle:
            secret = handle.read().strip()
        with open(os.environ["RELAY_TARGETS_FILE"], encoding="utf-8") as handle:
            targets = json.load(handle)
        events = {e.strip() for e in os.environ.get("RELAY_EVENTS", ",".join(EVENTS)).split(",") if e.strip()}
        unknown = events - set(EVENTS)
        if not secret or not isinstance(targets, list) or unknown:
            raise ValueError(f"bad relay configuration: secret set={bool(secret)}, targets a list={isinstance(targets, list)}, "
                             f"unknown events={sorted(unknown)}")
        number = os.environ.get
        return cls(secret, [str(t) for t in targets], events, attempts=int(number("RELAY_ATTEMPTS", "3")),
                   backoff_seconds=float(number("RELAY_BACKOFF_SECONDS", "1")),
                   max_body_bytes=int(number("RELAY_MAX_BODY_BYTES", str(1024 * 1024))),
                   workers=int(number("RELAY_WORKERS", "8")), queue_size=int(number("RELAY_QUEUE_SIZE", "100")),
                   socket_timeout_seconds=float(number("RELAY_SOCKET_TIMEOUT", "10")))


COUNTERS = ("received", "rejected", "duplicate", "ignored", "queued", "queue_full", "busy", "errors", "forwarded", "failed")


@dataclass
class Metrics:
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue_depth: Callable[[], int] = lambda: 0  # the delivery queue's size, set when the queue exists

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            self.counts[name] += amount

    def render(self) -> str:
        with self.lock:
            lines = []
            for name in COUNTERS:
                metric = f"webhook_relay_{name}_total"
                lines += [f"# TYPE {metric} counter", f"{metric} {self.counts[name]}"]
            lines += ["# TYPE webhook_relay_queue_depth gauge", f"webhook_relay_queue_depth {self.queue_depth()}"]
            return "\n".join(lines) + "\n"


class SeenDeliveries:
    """Delivery ids and body digests of recent deliveries, bounded: a captured delivery replayed (with its own id or
    a new one, the id is not signed) is dropped."""

    def __init__(self, size: int = REMEMBERED_DELIVERIES) -> None:
        self.size = size
        self.keys: OrderedDict[str, None] = OrderedDict()
        self.lock = threading.Lock()

    def first_time(self, delivery: str, body: bytes) -> bool:
        keys = (f"id:{delivery}", f"sha256:{hashlib.sha256(body).hexdigest()}")
        with self.lock:
            if any(key in self.keys for key in keys):
                return False
            for key in keys:
                self.keys[key] = None
            while len(self.keys) > self.size:
                self.keys.popitem(last=False)
            return True


def signature_valid(secret: bytes, body: bytes, signature: str) -> bool:
    if not SIGNATURE.fullmatch(signature):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, signature.lower().encode())


def chat_escape(text: str) -> str:
    """Text from a payload (branch names, titles) must not ping or format: Slack's &, <, > escapes (which also
    defuse <!channel> and <@U123>), and a zero-width space breaks the plain @channel/@here/@everyone mentions
    that Mattermost and Discord read."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"@(channel|here|everyone|all)\b", "@\u200b\\1", text, flags=re.IGNORECASE)


def text_at(payload: Any, *keys: str, default: str = "?") -> str:
    """payload[k1][k2]... as text when every level is what Gitea sends, else the default: a signed payload may still
    have any shape (a bug in a sender, another Gitea version)."""
    value = payload
    for key in keys:
        if not isinstance(value, dict):
            return default
        value = value.get(key)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return chat_escape(str(value))
    return default


def message_for(event: str, payload: dict[str, Any]) -> str | None:
    """The chat line for a selected event, or None when the event is not one we forward."""
    repository = text_at(payload, "repository", "full_name")
    if event == "push":
        commits = payload.get("commits")
        count = len(commits) if isinstance(commits, list) else 0
        who = text_at(payload, "pusher", "login", default=text_at(payload, "sender", "login"))
        branch = text_at(payload, "ref", default="").removeprefix("refs/heads/")
        return f"{who} pushed {count} commit(s) to {repository}:{branch} {text_at(payload, 'compare_url', default='')}".rstrip()
    if event == "release" and payload.get("action") == "published":
        return (f"{repository} released {text_at(payload, 'release', 'tag_name')}: "
                f"{text_at(payload, 'release', 'html_url', default='')}").rstrip()
    return None


def ci_failure_message(event: str, payload: dict[str, Any]) -> str | None:
    """Gitea Actions (workflow_run / workflow_job completed with failure) or a commit status (Drone) in failure/error."""
    repository = text_at(payload, "repository", "full_name")
    failed_run = payload.get("action") == "completed" and text_at(payload, event, "conclusion") == "failure"
    if event in ("workflow_run", "workflow_job") and failed_run:
        return (f"CI failed in {repository}: {text_at(payload, event, 'name', default=event)} "
                f"{text_at(payload, event, 'html_url', default='')}").rstrip()
    if event == "status" and payload.get("state") in ("failure", "error"):
        return (f"CI failed in {repository}: {text_at(payload, 'context', default='status')} "
                f"{text_at(payload, 'target_url', default='')}").rstrip()
    return None


def select(config: RelayConfig, event: str, payload: dict[str, Any]) -> str | None:
    if event in ("push", "release") and event in config.events:
        return message_for(event, payload)
    if "ci_failure" in config.events:
        return ci_failure_message(event, payload)
    return None


def post(url: str, text: str, timeout: float) -> None:
    request = urllib.request.Request(url, data=json.dumps({"text": text}).encode(), method="POST",  # noqa: S310 (configured URLs)
                                     headers={"Content-Type": "application/json", "User-Agent": "forgestack-webhook-relay"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        if response.status >= 300:
            raise urllib.error.HTTPError(url, response.status, "unexpected status", response.headers, None)


def forward(config: RelayConfig, text: str, sleep: Any = time.sleep) -> list[str]:
    """Deliver to every target, retrying each with exponential backoff; return the targets that never accepted."""
    failed = []
    for index, url in enumerate(config.targets):
        for attempt in range(1, config.attempts + 1):
            try:
                post(url, text, config.timeout_seconds)
                break
            except (urllib.error.URLError, OSError, ValueError) as error:
                log.warning("target %d attempt %d/%d failed: %s", index, attempt, config.attempts, error)
                if attempt == config.attempts:
                    failed.append(f"target {index}")  # never the URL itself: it carries a token
                else:
                    sleep(config.backoff_seconds * 2 ** (attempt - 1))
    return failed


class Delivery:
    """The background sender: a bounded queue of chat messages and one thread that forwards them with retries."""

    def __init__(self, config: RelayConfig, metrics: Metrics) -> None:
        self.config, self.metrics = config, metrics
        self.queue: queue.Queue[str] = queue.Queue(maxsize=config.queue_size)
        metrics.queue_depth = self.queue.qsize
        self.thread = threading.Thread(target=self.run, name="delivery", daemon=True)
        self.thread.start()

    def offer(self, text: str) -> bool:
        try:
            self.queue.put_nowait(text)
        except queue.Full:
            return False
        return True

    def run(self) -> None:
        while True:
            text = self.queue.get()
            try:
                failed = forward(self.config, text)
                self.metrics.add("forwarded", len(self.config.targets) - len(failed))
                self.metrics.add("failed", len(failed))
            except Exception:  # a bug must not stop every later delivery
                log.exception("delivery failed")
                self.metrics.add("errors")
            finally:
                self.queue.task_done()


class RequestRefusedError(Exception):
    """An answer decided while reading the request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def make_handler(config: RelayConfig, metrics: Metrics, delivery: Delivery, seen: SeenDeliveries) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "forgestack-webhook-relay"
        protocol_version = "HTTP/1.1"
        timeout = config.socket_timeout_seconds  # idle and trickling connections are closed

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def _answer(self, status: int, document: dict[str, Any] | None = None, text: str | None = None) -> None:
            body = (json.dumps(document) if document is not None else text or "").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if document is not None else "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._answer(200, {"status": "ok"})
            elif self.path == "/metrics":
                self._answer(200, text=metrics.render())
            else:
                self._answer(404, {"error": "not found"})

        def do_POST(self) -> None:
            try:
                status, document = self._post()
            except RequestRefusedError as refused:
                self.close_connection = True  # the body may be unread: never parse it as the next request
                status, document = refused.status, {"error": str(refused)}
            except TimeoutError:
                self.close_connection = True
                status, document = 408, {"error": "the request body did not arrive in time"}
            except Exception:  # a bug answers 500; Gitea records the delivery as failed and may retry
                log.exception("handling a delivery failed")
                metrics.add("errors")
                self.close_connection = True
                status, document = 500, {"error": "internal error"}
            if status >= 400:
                metrics.add("rejected")
            self._answer(status, document if status != 204 else None)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding"):
                raise RequestRefusedError(411, "send a Content-Length, not Transfer-Encoding")
            declared = self.headers.get("Content-Length")
            if declared is None:
                raise RequestRefusedError(411, "Content-Length is required")
            if not CONTENT_LENGTH.fullmatch(declared):
                raise RequestRefusedError(400, "Content-Length must be a non-negative integer")
            length = int(declared)
            if length > config.max_body_bytes:
                raise RequestRefusedError(413, f"payload larger than {config.max_body_bytes} bytes")
            body = self.rfile.read(length)
            if len(body) != length:
                raise RequestRefusedError(400, "the body is shorter than its Content-Length")
            return body

        def _post(self) -> tuple[int, dict[str, Any]]:
            if self.path != HOOK_PATH:
                raise RequestRefusedError(404, "not found")
            body = self._body()
            metrics.add("received")
            if not signature_valid(config.secret, body, self.headers.get("X-Gitea-Signature", "")):
                return 401, {"error": "bad or missing X-Gitea-Signature"}
            delivery_id = self.headers.get("X-Gitea-Delivery", "")
            if not DELIVERY_ID.fullmatch(delivery_id):
                return 400, {"error": "X-Gitea-Delivery is required (a delivery id)"}
            if not seen.first_time(delivery_id, body):
                metrics.add("duplicate")
                return 200, {"duplicate": True}
            try:
                payload = json.loads(body)
            except ValueError:
                return 400, {"error": "body is not JSON"}
            if not isinstance(payload, dict):
                return 400, {"error": "body is not a JSON object"}
            text = select(config, self.headers.get("X-Gitea-Event", ""), payload)
            if text is None:
                metrics.add("ignored")
                return 204, {}
            if not delivery.offer(text):
                metrics.add("queue_full")
                return 503, {"error": "delivery queue full, retry later"}
            metrics.add("queued")
            return 202, {"queued": True}

    return Handler


BUSY_BODY = b'{"error": "too many clients, retry later"}'
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\nConnection: close\r\n"
                 b"Content-Length: " + str(len(BUSY_BODY)).encode() + b"\r\n\r\n" + BUSY_BODY)


class BoundedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most `workers` connections served at once: one more is answered 503 at once
    instead of starting an unbounded thread (slow or idle clients cannot exhaust the container)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], workers: int, metrics: Metrics) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(workers)
        self.metrics = metrics

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.metrics.add("busy")
            try:
                request.settimeout(1)
                request.sendall(BUSY_RESPONSE)
            except OSError:
                pass  # the client is gone already; nothing to tell it
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve(config: RelayConfig, port: int, host: str = "0.0.0.0") -> BoundedHTTPServer:  # noqa: S104 (inside the Docker network)
    metrics = Metrics()
    delivery = Delivery(config, metrics)
    return BoundedHTTPServer((host, port), make_handler(config, metrics, delivery, SeenDeliveries()), config.workers, metrics)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = RelayConfig.from_environment()
    server = serve(config, int(os.environ.get("RELAY_PORT", "8080")))
    log.info("relaying %s to %d target(s) on port %d", sorted(config.events), len(config.targets), server.server_port)
    server.serve_forever()


if __name__ == "__main__":
    main()
