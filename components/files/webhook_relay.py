"""forgestack webhook relay: receives Gitea webhooks, verifies their HMAC signature, forwards selected events.

Runs in a pinned Python image with this file uploaded (standard library only, no private registry).
Configuration from the environment:
  RELAY_SECRET_FILE    file holding the webhook secret shared with Gitea (HMAC-SHA256 key)
  RELAY_TARGETS_FILE   file holding a JSON list of chat webhook URLs (Slack-compatible {"text": ...})
  RELAY_EVENTS         comma-separated: push, release, ci_failure
  RELAY_PORT           listen port (default 8080)
  RELAY_ATTEMPTS       tries per target (default 3), with exponential backoff from RELAY_BACKOFF_SECONDS (default 1)

Endpoints: POST /hooks/gitea (Gitea's X-Gitea-Event and X-Gitea-Signature headers), GET /healthz,
GET /metrics (Prometheus text format). Answers: 202 forwarded, 204 ignored (event not selected),
401 bad or missing signature, 413 too large, 502 a target failed after every attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 1024 * 1024
EVENTS = ("push", "release", "ci_failure")
log = logging.getLogger("webhook-relay")


@dataclass
class RelayConfig:
    secret: bytes
    targets: list[str]
    events: set[str]
    attempts: int = 3
    backoff_seconds: float = 1.0
    timeout_seconds: float = 10.0

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
        return cls(secret, [str(t) for t in targets], events, int(os.environ.get("RELAY_ATTEMPTS", "3")),
                   float(os.environ.get("RELAY_BACKOFF_SECONDS", "1")))


@dataclass
class Metrics:
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            self.counts[name] += amount

    def render(self) -> str:
        with self.lock:
            lines = []
            for name in ("received", "rejected", "ignored", "forwarded", "failed"):
                metric = f"webhook_relay_{name}_total"
                lines += [f"# TYPE {metric} counter", f"{metric} {self.counts[name]}"]
            return "\n".join(lines) + "\n"


def signature_valid(secret: bytes, body: bytes, signature: str) -> bool:
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return bool(signature) and hmac.compare_digest(expected, signature.strip().lower())


def message_for(event: str, payload: dict[str, Any]) -> str | None:
    """The chat line for a selected event, or None when the event is not one we forward."""
    repository = (payload.get("repository") or {}).get("full_name", "?")
    if event == "push":
        commits = payload.get("commits") or []
        who = (payload.get("pusher") or {}).get("login") or (payload.get("sender") or {}).get("login", "?")
        branch = str(payload.get("ref", "")).removeprefix("refs/heads/")
        return f"{who} pushed {len(commits)} commit(s) to {repository}:{branch} {payload.get('compare_url', '')}".rstrip()
    if event == "release" and payload.get("action") == "published":
        release = payload.get("release") or {}
        return f"{repository} released {release.get('tag_name', '?')}: {release.get('html_url', '')}".rstrip()
    return None


def ci_failure_message(event: str, payload: dict[str, Any]) -> str | None:
    """Gitea Actions (workflow_run / workflow_job completed with failure) or a commit status (Drone) in failure/error."""
    repository = (payload.get("repository") or {}).get("full_name", "?")
    if event in ("workflow_run", "workflow_job"):
        run = payload.get(event) or {}
        if payload.get("action") == "completed" and run.get("conclusion") == "failure":
            return f"CI failed in {repository}: {run.get('name', event)} {run.get('html_url', '')}".rstrip()
    if event == "status" and payload.get("state") in ("failure", "error"):
        return f"CI failed in {repository}: {payload.get('context', 'status')} {payload.get('target_url', '')}".rstrip()
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


def make_handler(config: RelayConfig, metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "forgestack-webhook-relay"

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def _answer(self, status: int, document: dict[str, Any] | None = None, text: str | None = None) -> None:
            body = (json.dumps(document) if document is not None else text or "").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if document is not None else "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
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
            if self.path != "/hooks/gitea":
                self._answer(404, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._answer(413, {"error": "payload too large"})
                return
            body = self.rfile.read(length)
            metrics.add("received")
            if not signature_valid(config.secret, body, self.headers.get("X-Gitea-Signature", "")):
                metrics.add("rejected")
                self._answer(401, {"error": "bad or missing X-Gitea-Signature"})
                return
            try:
                payload = json.loads(body)
            except ValueError:
                metrics.add("rejected")
                self._answer(400, {"error": "body is not JSON"})
                return
            text = select(config, self.headers.get("X-Gitea-Event", ""), payload if isinstance(payload, dict) else {})
            if text is None:
                metrics.add("ignored")
                self._answer(204)
                return
            failed = forward(config, text)
            metrics.add("forwarded", len(config.targets) - len(failed))
            metrics.add("failed", len(failed))
            if failed:
                self._answer(502, {"forwarded": len(config.targets) - len(failed), "failed": failed})
            else:
                self._answer(202, {"forwarded": len(config.targets)})

    return Handler


def serve(config: RelayConfig, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104 (inside the Docker network)
    return ThreadingHTTPServer((host, port), make_handler(config, Metrics()))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = RelayConfig.from_environment()
    server = serve(config, int(os.environ.get("RELAY_PORT", "8080")))
    log.info("relaying %s to %d target(s) on port %d", sorted(config.events), len(config.targets), server.server_port)
    server.serve_forever()


if __name__ == "__main__":
    main()
