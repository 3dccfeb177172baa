"""A stand-in for the part of Gitea's API that single sign-on's client script uses, shaped like Gitea 1.27's answers
(routers/api/v1/user/app.go, org.go): basic auth, organizations, OAuth2 applications with secrets shown only on
create and update, lists paged at most 50 per page, compact JSON. No Gitea binary is reachable here."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.servers import QUICK_SHUTDOWN

MAX_PAGE_SIZE = 50  # Gitea's [api] MAX_RESPONSE_ITEMS default


@dataclass
class Application:
    id: int
    name: str
    redirect_uris: list[str]
    client_id: str
    secret: str
    confidential_client: bool
    skip_secondary_authorization: bool


@dataclass
class FakeGitea:
    admin: str
    password: str
    organizations: dict[str, str] = field(default_factory=dict)  # name -> owner
    applications: list[Application] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) in order
    url: str = ""

    def add_application(self, name: str, redirect_uri: str) -> Application:
        application = Application(len(self.applications) + 1, name, [redirect_uri], str(uuid.uuid4()),
                                  "gto_" + secrets.token_hex(16), True, False)
        self.applications.append(application)
        return application


def _json(application: Application, with_secret: bool) -> dict[str, Any]:
    return {"id": application.id, "name": application.name, "redirect_uris": application.redirect_uris,
            "client_id": application.client_id, "client_secret": application.secret if with_secret else "",
            "confidential_client": application.confidential_client,
            "skip_secondary_authorization": application.skip_secondary_authorization, "created": "2026-11-30T12:00:00Z"}


def _handler(gitea: FakeGitea) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return False
            user, _, password = base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")
            return user == gitea.admin and password == gitea.password

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            body: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
            return body

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            gitea.requests.append((method, url.path))
            if not self._authorized():
                self._send(401, {"message": "user does not exist [uid: 0, name: ]", "url": gitea.url})
                return
            parts = url.path.removeprefix("/api/v1/").split("/")
            if parts[0] == "orgs" and method == "GET" and len(parts) == 2:
                if parts[1] in gitea.organizations:
                    self._send(200, {"id": 1, "name": parts[1], "username": parts[1], "visibility": "private"})
                else:
                    self._send(404, {"errors": ["organization does not exist"], "message": "The target couldn't be found."})
            elif parts == ["orgs"] and method == "POST":
                name = self._body()["username"]
                if name in gitea.organizations:
                    self._send(422, {"message": "user already exists"})
                    return
                gitea.organizations[name] = gitea.admin
                self._send(201, {"id": 1, "name": name, "username": name, "visibility": "private"})
            elif parts[:3] == ["user", "applications", "oauth2"]:
                self._applications(method, parts[3:], parse_qs(url.query))
            else:
                self._send(404, {"message": "not found"})

        def _applications(self, method: str, rest: list[str], query: dict[str, list[str]]) -> None:
            if method == "GET" and not rest:
                page, limit = int(query.get("page", ["1"])[0]), min(int(query.get("limit", ["30"])[0]), MAX_PAGE_SIZE)
                chunk = gitea.applications[(page - 1) * limit : page * limit]
                self._send(200, [_json(application, with_secret=False) for application in chunk])
            elif method == "POST" and not rest:
                body = self._body()
                application = gitea.add_application(body["name"], body["redirect_uris"][0])
                application.redirect_uris = body["redirect_uris"]
                application.confidential_client = body.get("confidential_client", False)
                application.skip_secondary_authorization = body.get("skip_secondary_authorization", False)
                self._send(201, _json(application, with_secret=True))
            elif method == "PATCH" and len(rest) == 1:
                matches = [a for a in gitea.applications if a.id == int(rest[0])]
                if not matches:
                    self._send(404, {"message": "The target couldn't be found."})
                    return
                body = self._body()
                application = matches[0]
                application.name, application.redirect_uris = body["name"], body["redirect_uris"]
                application.confidential_client = body.get("confidential_client", False)
                application.skip_secondary_authorization = body.get("skip_secondary_authorization", False)
                application.secret = "gto_" + secrets.token_hex(16)  # an update regenerates the secret
                self._send(200, _json(application, with_secret=True))
            else:
                self._send(405, {"message": "method not allowed"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PATCH(self) -> None:
            self._route("PATCH")

    return Handler


@contextmanager
def fake_gitea(admin: str, password: str) -> Iterator[FakeGitea]:
    gitea = FakeGitea(admin, password)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(gitea))
    gitea.url = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs=QUICK_SHUTDOWN, daemon=True)
    thread.start()
    try:
        yield gitea
    finally:
        server.shutdown()
        server.server_close()
