"""forge.py: the forge and repository a push remote's URL names, and what --pr asks."""

from __future__ import annotations

import pytest

from agent_worker_app import forge
from agent_worker_app.errors import UsageError


@pytest.mark.parametrize(
    ("url", "host", "path"),
    [
        ("https://github.com/acme/widget.git", "github.com", "acme/widget"),
        ("https://x-access-token:ghs_secret@github.com/acme/widget", "github.com", "acme/widget"),
        ("git@github.com:acme/widget.git", "github.com", "acme/widget"),
        ("ssh://git@GHE.example.com:2222/acme/widget.git", "ghe.example.com", "acme/widget"),
        ("https://gitlab.com/group/sub/proj.git/", "gitlab.com", "group/sub/proj"),
    ],
)
def test_a_remote_url_names_its_host_and_repository(url: str, host: str, path: str) -> None:
    repo = forge.parse_remote(url)
    assert repo == forge.Repository(host, path)
    assert "secret" not in repr(repo)


@pytest.mark.parametrize(
    "url",
    [
        "/srv/git/widget.git",
        "./widget",
        "file:///srv/widget.git",
        "https://github.com/widget",
        "https://github.com/acme/../widget",
        "C:/repos/widget",
    ],
)
def test_a_path_or_a_url_without_owner_and_name_names_none(url: str) -> None:
    assert forge.parse_remote(url) is None


def test_the_provider_comes_from_the_option_then_the_host() -> None:
    gh = forge.Repository("github.com", "a/b")
    ghe = forge.Repository("code.example.com", "a/b")
    assert forge.provider_of(gh, None, {}) == "github"
    assert forge.provider_of(forge.Repository("gitlab.com", "a/b"), None, {}) == "gitlab"
    assert forge.provider_of(forge.Repository("gitlab.corp.example", "a/b"), None, {}) == "gitlab"
    assert forge.provider_of(ghe, None, {}) is None
    assert forge.provider_of(ghe, None, {"GITHUB_SERVER_URL": "https://code.example.com"}) == (
        "github"
    )
    assert forge.provider_of(ghe, None, {"CI_SERVER_HOST": "code.example.com"}) == "gitlab"
    assert forge.provider_of(gh, "gitlab", {}) == "gitlab"
    assert forge.provider_of(None, None, {}) is None


def test_the_api_is_github_s_its_enterprise_server_s_or_github_api_url() -> None:
    assert forge.github_api_url(forge.Repository("github.com", "a/b"), {}) == (
        "https://api.github.com"
    )
    ghe = forge.Repository("ghe.example.com", "a/b")
    assert forge.github_api_url(ghe, {}) == "https://ghe.example.com/api/v3"
    given = {"GITHUB_API_URL": "http://127.0.0.1:8080/"}
    assert forge.github_api_url(ghe, given) == "http://127.0.0.1:8080"
    with pytest.raises(UsageError, match="GITHUB_API_URL"):
        forge.github_api_url(ghe, {"GITHUB_API_URL": "file:///etc/passwd"})


def test_compare_urls_quote_the_branches() -> None:
    gh = forge.Repository("github.com", "acme/widget")
    assert forge.compare_url(gh, "github", "main", "agent/x y") == (
        "https://github.com/acme/widget/compare/main...agent%2Fx%20y?expand=1"
    )
    gl = forge.compare_url(forge.Repository("gitlab.com", "g/p"), "gitlab", "main", "b")
    assert gl is not None
    assert gl.startswith("https://gitlab.com/g/p/-/merge_requests/new?")
    bb = forge.compare_url(forge.Repository("bitbucket.org", "a/b"), None, "main", "b")
    assert bb == "https://bitbucket.org/a/b/pull-requests/new?source=b&dest=main"
    assert forge.compare_url(forge.Repository("git.example", "a/b"), None, "main", "b") is None
    assert forge.compare_url(None, "gitlab", "main", "b") is None


def test_the_title_is_the_task_s_first_line_that_says_something() -> None:
    assert forge.title("\n  Fix the tests \x1b[31m\nmore", "b") == "Fix the tests [31m"
    assert forge.title("\n\n", "agent/x") == "agent-worker: agent/x"
    long = forge.title("x" * 300, "b")
    assert len(long) == 120


def test_pr_options_go_with_pr() -> None:
    assert forge.request({}) is None
    assert forge.request({"pr": True}) == forge.Request()
    made = forge.request(
        {"pr": True, "pr_on_failure": True, "pr_base": " dev ", "pr_provider": "gitlab"}
    )
    assert made == forge.Request(True, "dev", "gitlab")
    for alone in ("pr_on_failure", "pr_base", "pr_provider"):
        with pytest.raises(UsageError, match="goes with --pr"):
            forge.request({alone: "gitlab"})
    with pytest.raises(UsageError, match="--pr-provider must be one of github, gitlab"):
        forge.request({"pr": True, "pr_provider": "gitea"})
    with pytest.raises(UsageError, match="--pr-base"):
        forge.request({"pr": True, "pr_base": "-x"})
