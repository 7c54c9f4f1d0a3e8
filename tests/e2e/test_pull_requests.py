"""--pr with real runs of the command agent and real git: a draft pull request on a fake of
GitHub's REST API served by the suite on loopback (the remote's URL names github.com, and
git's pushInsteadOf sends the push to a local bare repository), its body brought up to date on
--continue; GitLab's merge request push options, recorded by a bare repository's pre-receive
hook; the token, which never reaches the container; and bad input refused before anything."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_github import FakeGitHub
from github_files import read_github_output
from push_remote import RECORD_OPTIONS, recording_remote, sent

from conftest import git, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

TOKEN = "ghp_pr-test-token-never-in-the-container"
# the agent looks for the token everywhere it can, and prints what it found
HUNT = (
    "env; cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n'; "
    "grep -rsl 'pr-test-tok[e]n' /workspace /home /tmp /run /root /etc /agent-worker; "
)


@pytest.fixture
def github(repo: Path, tmp_path: Path) -> Iterator[FakeGitHub]:
    """The fake API, and the repository's origin on github.com, pushed to a bare repository."""
    bare = tmp_path / "widget.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    url = "https://github.com/acme/widget.git"
    git(repo, "remote", "add", "origin", url)
    git(repo, "config", f"url.{bare}.pushInsteadOf", url)
    with FakeGitHub("acme", "widget", TOKEN) as fake:
        yield fake


def github_env(
    fake: FakeGitHub, env: Callable[..., dict[str, str]], **extra: str
) -> dict[str, str]:
    settings = {
        "GITHUB_API_URL": fake.url,
        "GITHUB_TOKEN": TOKEN,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    return env(**(settings | extra))


def test_a_successful_run_opens_a_draft_pull_request_without_the_token_in_the_container(
    repo: Path, github: FakeGitHub, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """The attack: the agent looks for the token in its environment and every file it can read;
    it finds nothing, and the pull request is opened after the container is gone. Its body is
    the report, with a file name that would be a link and HTML shown as text."""
    outputs = tmp_path / "github_output"
    task = (
        "Add the notes\n\nsecond line\n"
        f"{HUNT}\n"
        "echo note > 'see [here](https:evil.example) <b>x.md'"
    )
    result = run_cli(
        ["--agent-type", "command", "--task", task, "--branch", "agent/notes", "--pr"],
        cwd=repo,
        env=github_env(github, command_env, GITHUB_OUTPUT=str(outputs)),
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    run_dir = Path(report["run_dir"])
    agent_output = (run_dir / "agent.jsonl").read_text()
    assert "GITHUB_TOKEN" not in agent_output
    assert "pr-test-token" not in agent_output
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert b"pr-test-token" not in path.read_bytes(), path
    assert "pr-test-token" not in result.stdout + result.stderr

    assert [c.method for c in github.calls] == ["GET", "POST"]
    assert all(c.authorization == f"Bearer {TOKEN}" for c in github.calls)
    assert github.calls[0].query == {"head": ["acme:agent/notes"], "state": ["open"]}
    pull = github.made("POST")[0].body
    assert (pull["head"], pull["base"], pull["draft"]) == ("agent/notes", "main", True)
    assert pull["title"] == "Add the notes"
    assert report["run_id"] in pull["body"].replace("\\", "")
    assert "### agent-worker: success" in pull["body"]
    assert "](https" not in pull["body"]
    assert "<b>" not in pull["body"]
    assert "&lt;b&gt;x" in pull["body"]

    assert report["pushed_to"] == "origin"
    assert report["pull_request"] == {
        "provider": "github",
        "action": "opened",
        "base": "main",
        "url": "https://github.test/acme/widget/pull/1",
        "number": 1,
        "compare_url": "https://github.com/acme/widget/compare/main...agent%2Fnotes?expand=1",
    }
    assert "pull request opened: https://github.test/acme/widget/pull/1" in result.stderr
    assert read_github_output(outputs.read_text())["pull_request"] == report["pull_request"]["url"]
    # the push went to the bare repository, through pushInsteadOf
    pushed = git(repo.parent / "widget.git", "rev-parse", "agent/notes")
    assert pushed == git(repo, "rev-parse", "agent/notes")

    # --continue: the same pull request's body is brought up to date, no second one opened
    again = run_cli(
        [
            "--agent-type",
            "command",
            "--task",
            "echo more > more.txt",
            "--continue",
            "agent/notes",
            "--pr",
        ],
        cwd=repo,
        env=github_env(github, command_env),
    )
    assert again.code == 0, again.stderr
    assert again.report is not None
    assert [c.method for c in github.calls] == ["GET", "POST", "GET", "PATCH"]
    assert len(github.pulls) == 1
    assert again.report["run_id"] in github.pulls[0]["body"].replace("\\", "")
    assert again.report["pull_request"]["action"] == "updated"
    assert git(repo.parent / "widget.git", "show", "agent/notes:more.txt") == "more\n"


def test_a_pull_request_that_cannot_be_opened_is_a_warning_and_the_run_keeps_its_code(
    repo: Path, github: FakeGitHub, command_env: Callable[..., dict[str, str]]
) -> None:
    result = run_cli(
        ["--agent-type", "command", "--task", "echo x > x.txt", "--branch", "refused", "--pr"],
        cwd=repo,
        env=github_env(github, command_env, GITHUB_TOKEN="ghp_wrong"),
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert result.report["pushed_to"] == "origin"  # the branch is up; only the PR is missing
    assert result.report["pull_request"] is None
    warning = next(w for w in result.report["warnings"] if "pull request" in w)
    assert "HTTP 401: Bad credentials" in warning
    assert "gh pr create --draft --repo github.com/acme/widget --base main --head refused" in (
        warning
    )
    assert "agent-worker: warning: no pull request was opened" in result.stderr
    assert github.pulls == []


def test_a_failed_run_gets_a_pull_request_only_with_pr_on_failure(
    repo: Path, github: FakeGitHub, command_env: Callable[..., dict[str, str]]
) -> None:
    def run(branch: str, *extra: str) -> dict[str, object]:
        result = run_cli(
            [
                *("--agent-type", "command", "--task", "echo x > x.txt", "--branch", branch),
                *("--check", "false", "--pr", *extra),
            ],
            cwd=repo,
            env=github_env(github, command_env),
        )
        assert result.code == 1, result.stderr  # the failed check's exit code, either way
        assert result.report is not None
        return result.report

    assert run("failed-quietly")["pushed_to"] is None
    assert github.calls == []
    report = run("failed-openly", "--pr-on-failure")
    assert report["pushed_to"] == "origin"
    pull = github.made("POST")[0].body
    assert pull["head"] == "failed-openly"
    assert "failed" in pull["body"]
    assert "Check" in pull["body"]


def gitlab_remote(path: Path, url: str) -> Path:
    """A bare repository that records push options, and answers a push that asks for a merge
    request the way GitLab does (the URL is text; nothing is served there)."""
    git(path.parent, "init", "-q", "--bare", str(path))
    git(path, "config", "receive.advertisePushOptions", "true")
    hook = path / "hooks" / "pre-receive"
    hook.write_text(
        RECORD_OPTIONS
        + 'if grep -q "^merge_request" "$GIT_DIR/push-options" 2>/dev/null; then\n'
        + f"  echo 'View merge request for the branch:' >&2; echo '  {url}' >&2\nfi\n"
    )
    hook.chmod(0o755)
    return path


def test_gitlab_opens_a_merge_request_with_push_options(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    mr = "https://gitlab.test/acme/widget/-/merge_requests/7"
    remote = gitlab_remote(tmp_path / "gitlab.git", mr)
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "checkout", "-q", "-b", "develop")
    env = command_env(GITHUB_TOKEN=TOKEN)
    result = run_cli(
        [
            *("--agent-type", "command", "--task", "Fix it\n\n" + HUNT + "echo y > y.txt"),
            *("--branch", "agent/fix", "--pr", "--pr-provider", "gitlab"),
        ],
        cwd=repo,
        env=env,
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    options, counts = sent(remote)
    assert counts == [str(len(options))]
    assert options[:5] == [
        "ci.skip",
        "merge_request.create",
        "merge_request.draft",
        "merge_request.target=develop",  # the branch the run started from
        "merge_request.title=Fix it",
    ]
    description = options[5].replace("\\", "")  # markdown's escapes
    assert description.startswith(f"merge_request.description=agent-worker run {report['run_id']}")
    assert "success (exit 0)" in description
    assert report["pull_request"]["url"] == mr
    assert report["pull_request"]["action"] == "opened"
    assert "pr-test-token" not in (Path(report["run_dir"]) / "agent.jsonl").read_text()

    # --continue: the merge request is there; its description is updated, none created
    again = run_cli(
        [
            "--agent-type",
            "command",
            "--task",
            "echo z > z.txt",
            "--continue",
            "agent/fix",
            "--pr",
            "--pr-provider",
            "gitlab",
        ],
        cwd=repo,
        env=env,
    )
    assert again.code == 0, again.stderr
    second = sent(remote)[0][len(options) :]
    assert "merge_request.create" not in second
    assert "merge_request.target=develop" in second
    assert any(o.startswith("merge_request.description=") for o in second)
    assert again.report is not None
    assert again.report["pull_request"]["action"] == "updated"


def test_another_forge_gets_the_compare_url(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    bare = tmp_path / "cb.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    url = "git@codeberg.org:acme/widget.git"
    git(repo, "remote", "add", "origin", url)
    git(repo, "config", f"url.{bare}.pushInsteadOf", url)
    result = run_cli(
        ["--agent-type", "command", "--task", "echo c > c.txt", "--branch", "elsewhere", "--pr"],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    compare = "https://codeberg.org/acme/widget/compare/main...elsewhere"
    assert result.report["pull_request"]["compare_url"] == compare
    assert f"open the pull request at {compare}" in result.stderr


@pytest.mark.parametrize(
    ("setup", "extra", "env", "said"),
    [
        ("none", [], {}, "--pr pushes the branch first, and no remote named 'origin'"),
        ("detached", [], {"GITHUB_TOKEN": TOKEN}, "give --pr-base BRANCH"),
        ("github", [], {}, "--pr: no GitHub token"),
        ("github", ["--pr-provider", "bitbucket"], {"GITHUB_TOKEN": TOKEN}, "--pr-provider must"),
        ("none", ["--pr-base", "x"], {}, "--pr-base goes with --pr"),
    ],
)
def test_bad_input_is_refused_before_anything(
    repo: Path,
    command_env: Callable[..., dict[str, str]],
    setup: str,
    extra: list[str],
    env: dict[str, str],
    said: str,
) -> None:
    if setup in ("github", "detached"):
        git(repo, "remote", "add", "origin", "git@github.com:acme/widget.git")
    if setup == "detached":
        git(repo, "checkout", "-q", "--detach")
    before = git(repo, "for-each-ref")
    pr = [] if "--pr-base" in extra else ["--pr"]
    result = run_cli(
        ["--agent-type", "command", "--task", "true", "--branch", "never", *pr, *extra],
        cwd=repo,
        env=command_env(PATH="/usr/bin:/bin", **env),  # no gh: no token from it either
    )
    assert result.code == 2, result.stderr
    assert said in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert git(repo, "for-each-ref") == before
    assert not (repo / ".git" / "agent-worker").exists()


def test_the_json_report_names_no_pull_request_without_pr(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    result = run_cli(
        ["--agent-type", "command", "--task", "true", "--branch", "plain", "--json"],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["pull_request"] is None


def test_each_task_of_a_batch_gets_its_own_merge_request(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    remote = gitlab_remote(tmp_path / "gl.git", "https://gitlab.test/a/b/-/merge_requests/3")
    git(repo, "remote", "add", "origin", str(remote))
    result = run_cli(
        [
            *("--agent-type", "command", "--task", "echo a > a.txt", "--task", "echo b > b.txt"),
            *("--branch", "many", "--jobs", "2", "--pr", "--pr-provider", "gitlab"),
        ],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    runs = result.report["runs"]
    assert [r["pull_request"]["action"] for r in runs] == ["opened", "opened"]
    titles = sorted(o for o in sent(remote)[0] if o.startswith("merge_request.title="))
    assert titles == ["merge_request.title=echo a > a.txt", "merge_request.title=echo b > b.txt"]
    assert git(remote, "show", "many-2:b.txt") == "b\n"


def test_a_server_without_push_options_gets_the_branch_and_a_warning(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    plain = recording_remote(tmp_path / "plain.git", advertise=False)
    git(repo, "remote", "add", "origin", str(plain))
    result = run_cli(
        [
            *("--agent-type", "command", "--task", "echo p > p.txt", "--branch", "plain"),
            *("--pr", "--pr-provider", "gitlab"),
        ],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert result.report["pushed_to"] == "origin"
    assert result.report["pull_request"] is None
    assert any("no merge request was opened" in w for w in result.report["warnings"])
    assert sent(plain) == ([], ["0"])
    assert git(plain, "show", "plain:p.txt") == "p\n"
