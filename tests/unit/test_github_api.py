"""github_api against the suite's fake of GitHub's REST API, on loopback: the calls --pr
makes, a plan without drafts, a refused token, and no redirect followed with the token."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fake_github import FakeGitHub

from agent_worker_app import github_api

TOKEN = "ghp_unit-token"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with FakeGitHub("acme", "widget", TOKEN) as server:
        yield server


def client(fake: FakeGitHub, token: str = TOKEN) -> github_api.Client:
    return github_api.Client(fake.url, "acme", "widget", token)


def test_open_then_find_then_update(fake: FakeGitHub) -> None:
    made = client(fake).open_draft(head="agent/x", base="main", title="T", body="B")
    assert made == github_api.PullRequest(1, "https://github.test/acme/widget/pull/1")
    assert fake.pulls[0]["draft"] is True
    assert client(fake).find_open("agent/x") == made
    assert client(fake).find_open("agent/other") is None
    client(fake).update_body(1, "new body")
    assert fake.pulls[0]["body"] == "new body"
    assert {c.authorization for c in fake.calls} == {f"Bearer {TOKEN}"}


def test_a_repository_without_drafts_gets_a_ready_pull_request(fake: FakeGitHub) -> None:
    fake.refuse_drafts = True
    made = client(fake).open_draft(head="agent/x", base="main", title="T", body="B")
    assert made.number == 1
    assert fake.pulls[0]["draft"] is False
    assert [c.method for c in fake.calls] == ["POST", "POST"]


def test_a_refused_token_is_an_error_in_github_s_words(fake: FakeGitHub) -> None:
    with pytest.raises(github_api.ApiError, match="HTTP 401: Bad credentials"):
        client(fake, "wrong").find_open("agent/x")


def test_the_body_is_cut_to_what_github_takes(fake: FakeGitHub) -> None:
    client(fake).open_draft(head="h", base="main", title="T", body="x" * 70_000)
    assert len(fake.pulls[0]["body"]) == github_api.BODY_LIMIT


def test_a_redirect_is_not_followed_with_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/x")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(github_api.ApiError, match="HTTP 302"):
            github_api.Client(api, "acme", "widget", TOKEN).find_open("h")
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [f"Bearer {TOKEN}"]  # one call: the redirect's target got nothing


def test_the_token_comes_from_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no gh
    assert github_api.token({"GITHUB_TOKEN": " a ", "GH_TOKEN": "b"}, "github.com") == "a"
    assert github_api.token({"GH_TOKEN": "b"}, "github.com") == "b"
    assert github_api.token({}, "github.com") is None
    assert not github_api.token_may_exist({})
