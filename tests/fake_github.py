"""A scripted fake of GitHub's REST API for pull requests, served on loopback over HTTP: what
--pr calls (list a head's open pull requests, open one, change its body). It checks the token
on every call (401 otherwise, as GitHub answers a bad credential), records each call, and
keeps the pull requests it opened, so a test can read what agent-worker sent."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str
    body: Any


@dataclass
class FakeGitHub:
    owner: str
    repo: str
    token: str
    calls: list[Call] = field(default_factory=list)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    refuse_drafts: bool = False  # as a plan without draft pull requests answers

    def __enter__(self) -> FakeGitHub:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, code: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                auth = self.headers.get("Authorization", "")
                fake.calls.append(Call(self.command, parts.path, parse_qs(parts.query), auth, body))
                if auth != f"Bearer {fake.token}":
                    self._answer(401, {"message": "Bad credentials"})
                    return
                self._answer(*fake.route(self.command, parts.path, parse_qs(parts.query), body))

            do_GET = do_POST = do_PATCH = _handle  # noqa: N815 (http.server's names)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        pulls = f"/repos/{self.owner}/{self.repo}/pulls"
        if method == "POST" and path == pulls:
            return self.open(body)
        if method == "GET" and path == pulls:
            head = query.get("head", [""])[0]
            state = query.get("state", ["open"])[0]
            found = [p for p in self.pulls if f"{self.owner}:{p['head']}" == head]
            return 200, [p for p in found if state == "all" or p["state"] == state]
        if method == "PATCH" and path.startswith(pulls + "/"):
            number = int(path.rsplit("/", 1)[1])
            pull = next((p for p in self.pulls if p["number"] == number), None)
            if pull is None:
                return 404, {"message": "Not Found"}
            pull.update({k: v for k, v in body.items() if k in ("title", "body", "state")})
            return 200, pull
        return 404, {"message": "Not Found"}

    def open(self, body: Any) -> tuple[int, Any]:
        """POST .../pulls: a new pull request, checked as GitHub checks it."""
        missing = [k for k in ("title", "head", "base", "body") if not body.get(k)]
        if missing:
            return 422, {"message": "Validation Failed", "errors": [{"message": str(missing)}]}
        if body.get("draft") and self.refuse_drafts:
            message = "Draft pull requests are not supported in this repository."
            return 422, {"message": "Validation Failed", "errors": [{"message": message}]}
        number = len(self.pulls) + 1
        made = {
            "number": number,
            "html_url": f"https://github.test/{self.owner}/{self.repo}/pull/{number}",
            "state": "open",
            **{k: body[k] for k in ("title", "head", "base", "body")},
            "draft": bool(body.get("draft")),
        }
        self.pulls.append(made)
        return 201, made

    def made(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]
