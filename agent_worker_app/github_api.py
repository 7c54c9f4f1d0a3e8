"""GitHub's REST API for a branch's pull request, with the standard library: find the open one
for a head, open a draft, change its body. The token is the user's (token()), read on the host
after the run's container is gone; it goes in the Authorization header of these calls only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

TIMEOUT_S = 30.0
TOKEN_VARIABLES = ("GITHUB_TOKEN", "GH_TOKEN")
BODY_LIMIT = 60_000  # GitHub refuses a body over 65,536 characters


class ApiError(Exception):
    """A call that did not do what it asked; the message says why, in GitHub's words."""


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str  # its page (html_url)


def token(environ: Mapping[str, str], host: str) -> str | None:
    """GITHUB_TOKEN, GH_TOKEN, else what `gh auth token` gives for the host, when gh is
    installed; None when none is found."""
    for name in TOKEN_VARIABLES:
        if environ.get(name, "").strip():
            return environ[name].strip()
    gh = shutil.which("gh")
    if gh is None:
        return None
    try:
        done = subprocess.run(
            [gh, "auth", "token", "--hostname", host],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def token_may_exist(environ: Mapping[str, str]) -> bool:
    """Whether token() may find one, without asking gh for it (checked before a run)."""
    return any(environ.get(n, "").strip() for n in TOKEN_VARIABLES) or bool(shutil.which("gh"))


@dataclass(frozen=True)
class Client:
    api: str  # https://api.github.com, https://HOST/api/v3, or GITHUB_API_URL
    owner: str
    repo: str
    token: str

    def find_open(self, head: str) -> PullRequest | None:
        """The open pull request whose head is this repository's branch, if any."""
        query = urlencode({"head": f"{self.owner}:{head}", "state": "open"})
        found = self._call("GET", f"{self._pulls()}?{query}")
        if not isinstance(found, list) or not found:
            return None
        return _pull(found[0])

    def open_draft(self, *, head: str, base: str, title: str, body: str) -> PullRequest:
        """A new draft pull request of head into base. A repository whose plan has no drafts
        gets a ready one (GitHub's 422 says so)."""
        fields = {"title": title, "head": head, "base": base, "body": body[:BODY_LIMIT]}
        try:
            return _pull(self._call("POST", self._pulls(), fields | {"draft": True}))
        except ApiError as exc:
            if "draft" not in str(exc).lower():
                raise
            return _pull(self._call("POST", self._pulls(), fields))

    def update_body(self, number: int, body: str) -> PullRequest:
        return _pull(self._call("PATCH", f"{self._pulls()}/{number}", {"body": body[:BODY_LIMIT]}))

    def _pulls(self) -> str:
        return f"{self.api}/repos/{quote(self.owner)}/{quote(self.repo)}/pulls"

    def _call(self, method: str, url: str, fields: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(fields).encode() if fields is not None else None
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self.token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "agent-worker",
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        # the URL is forge.github_api_url's: http or https, checked there
        call = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with _opener().open(call, timeout=TIMEOUT_S) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ApiError(f"{method} {_path(url)}: HTTP {exc.code}: {_said(exc)}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"{method} {_path(url)}: {reason}") from None


def _opener() -> urllib.request.OpenerDirector:
    """urllib's opener with the environment's proxies, and no redirects followed: a redirect
    would carry the token to another address."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    proxies = urllib.request.getproxies()
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies), NoRedirect())


def _path(url: str) -> str:
    return urlsplit(url).path


def _said(exc: urllib.error.HTTPError) -> str:
    """GitHub's message and its errors' messages, from the answer's JSON."""
    try:
        body = json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return exc.reason or "no answer"
    if not isinstance(body, dict):
        return str(exc.reason)
    parts = [str(body.get("message") or exc.reason)]
    for error in body.get("errors") or []:
        if isinstance(error, dict) and error.get("message"):
            parts.append(str(error["message"]))
    return ": ".join(parts)


def _pull(answer: Any) -> PullRequest:
    if not isinstance(answer, dict) or not isinstance(answer.get("number"), int):
        raise ApiError("the answer named no pull request")
    return PullRequest(answer["number"], str(answer.get("html_url") or ""))
