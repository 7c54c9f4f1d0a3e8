"""Where a branch's pull request goes, from the push remote's URL: which forge (GitHub, GitLab,
or one that can only be given a compare URL), the repository's owner and name, its API's
address, and what --pr and its options ask for. Pure: no git, no network (git_manager gives the
URL; github_api.py talks to the API; pull_request.py does the work after the run).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from agent_worker_app.errors import UsageError

PROVIDERS = ("github", "gitlab")
GITHUB_API = "https://api.github.com"
# an scp-like ssh location, [user@]host:path (git's own rule: no slash before the colon)
_SCP = re.compile(r"^(?:[^@/]+@)?(?P<host>[^/:]+):(?P<path>(?!/).+)$")


@dataclass(frozen=True)
class Request:
    """What the command line asked of --pr."""

    on_failure: bool = False  # --pr-on-failure: a failed run with commits gets one too
    base: str | None = None  # --pr-base: the branch it goes into (default: the one the run left)
    provider: str | None = None  # --pr-provider: github or gitlab, for a host of your own


def request(cli: Mapping[str, Any]) -> Request | None:
    """--pr and its options, checked; None without --pr (UsageError: an option of --pr alone)."""
    base = cli.get("pr_base")
    provider = cli.get("pr_provider")
    if not cli.get("pr"):
        for given, flag in ((cli.get("pr_on_failure"), "--pr-on-failure"), (base, "--pr-base")):
            if given:
                raise UsageError(f"{flag} goes with --pr")
        if provider:
            raise UsageError("--pr-provider goes with --pr")
        return None
    if provider is not None and provider not in PROVIDERS:
        raise UsageError(f"--pr-provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    if base is not None:
        base = str(base).strip()
        if not base or base.startswith("-"):
            raise UsageError(f"--pr-base: {base!r} is not a branch name")
    return Request(bool(cli.get("pr_on_failure")), base, provider)


@dataclass(frozen=True)
class Repository:
    """A repository on a forge, as its push URL names it (never its user name or password)."""

    host: str  # lower-cased, without a port
    path: str  # owner/name (GitLab: group/subgroup/name), without .git

    @property
    def owner(self) -> str:
        return self.path.rsplit("/", 1)[0]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def parse_remote(url: str) -> Repository | None:
    """The host and repository path of a remote URL: https://host/owner/repo.git,
    ssh://git@host[:port]/owner/repo.git, git@host:owner/repo.git; None for a path or a URL
    with no owner/name."""
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http", "ssh", "git", "git+ssh", "ssh+git"):
            return None
        host, path = parts.hostname or "", parts.path
    elif match := _SCP.match(url):
        host, path = match["host"], match["path"]
    else:
        return None
    path = path.strip("/").removesuffix(".git").strip("/")
    if not host or path.count("/") < 1 or any(part in ("", ".", "..") for part in path.split("/")):
        return None
    return Repository(host.lower(), path)


def provider_of(
    repo: Repository | None, given: str | None, environ: Mapping[str, str]
) -> str | None:
    """github, gitlab, or None (anything else): --pr-provider first, then the host: github.com
    or gitlab.com, the host the CI job runs on (GITHUB_SERVER_URL, CI_SERVER_HOST), a host
    whose first label is github or gitlab (github.example.com)."""
    if given is not None:
        return given
    if repo is None:
        return None
    github_server = urlsplit(environ.get("GITHUB_SERVER_URL", "")).hostname
    if repo.host in ("github.com", github_server):
        return "github"
    if repo.host in ("gitlab.com", environ.get("CI_SERVER_HOST", "").lower()):
        return "gitlab"
    first = repo.host.split(".", 1)[0]
    return first if first in PROVIDERS else None


def github_api_url(repo: Repository, environ: Mapping[str, str]) -> str:
    """GITHUB_API_URL when set (as GitHub Actions sets it); else api.github.com for github.com
    and https://HOST/api/v3 for a GitHub Enterprise server."""
    if given := environ.get("GITHUB_API_URL", "").strip():
        if urlsplit(given).scheme not in ("https", "http"):
            raise UsageError(f"GITHUB_API_URL must be an https:// URL, got {given!r}")
        return given.rstrip("/")
    return GITHUB_API if repo.host == "github.com" else f"https://{repo.host}/api/v3"


def compare_url(repo: Repository | None, provider: str | None, base: str, head: str) -> str | None:
    """The page where a person opens the pull request by hand, where the forge is known."""
    if repo is None:
        return None
    site = f"https://{repo.host}/{quote(repo.path)}"
    b, h = quote(base, safe=""), quote(head, safe="")
    if provider == "github" or repo.host == "codeberg.org":
        return f"{site}/compare/{b}...{h}" + ("?expand=1" if provider == "github" else "")
    if provider == "gitlab":
        return (
            f"{site}/-/merge_requests/new?merge_request%5Bsource_branch%5D={h}"
            f"&merge_request%5Btarget_branch%5D={b}"
        )
    if repo.host == "bitbucket.org":
        return f"{site}/pull-requests/new?source={h}&dest={b}"
    return None


def title(task: str, branch: str) -> str:
    """The pull request's title: the task's first line that says something, trimmed (control
    characters dropped: it is data), else the branch's name."""
    for raw in task.splitlines():
        line = "".join(c for c in raw if c.isprintable()).strip()
        if line:
            return line if len(line) <= 120 else line[:119].rstrip() + "\u2026"
    return f"agent-worker: {branch}"


@dataclass(frozen=True)
class Opened:
    """What --pr came to, for the report (JSON `pull_request`)."""

    provider: str | None  # github, gitlab, or None (a forge it cannot open one on)
    action: str  # opened, updated, requested (GitLab named no URL back), compare (a URL to open)
    base: str
    url: str | None = None  # the pull (merge) request's page
    number: int | None = None
    compare_url: str | None = None  # where to open it by hand

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "action": self.action,
            "base": self.base,
            "url": self.url,
            "number": self.number,
            "compare_url": self.compare_url,
        }
