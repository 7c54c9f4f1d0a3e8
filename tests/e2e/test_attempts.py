"""--attempts N with real runs of the command agent: each attempt on its own branch, the winner
chosen by the check, --keep winner, and one pull request (on the suite's fake GitHub API) for
the winner that lists the others."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fake_github import FakeGitHub

from conftest import git, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

TOKEN = "ghp_attempts-test-token"
# Each attempt's clone is on its own branch (NAME-aK): the script reads it there, so the three
# attempts differ as three runs of a real agent would, and only the second passes the check.
TASK = """case "$(git rev-parse --abbrev-ref HEAD)" in
  *-a2) echo ok > result.txt ;;
  *-a3) printf 'no\\nnot\\nthis\\n' > result.txt ;;
  *) echo no > result.txt ;;
esac"""


def test_three_attempts_where_one_passes_the_check_keep_the_winner_and_open_its_pr(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    bare = tmp_path / "widget.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    url = "https://github.com/acme/widget.git"
    git(repo, "remote", "add", "origin", url)
    git(repo, "config", f"url.{bare}.pushInsteadOf", url)
    git(repo, "branch", "try-a", "HEAD")  # branches of the user's own: never deleted
    git(repo, "branch", "try-a4", "HEAD")
    with FakeGitHub("acme", "widget", TOKEN) as fake:
        result = run_cli(
            [
                *("--agent-type", "command", "--task", TASK, "--branch", "try"),
                *("--attempts", "3", "--jobs", "2", "--check", "grep -qx ok result.txt"),
                *("--keep", "winner", "--pr"),
            ],
            cwd=repo,
            env=command_env(GITHUB_API_URL=fake.url, GITHUB_TOKEN=TOKEN, NO_PROXY="127.0.0.1"),
        )
    assert result.code == 0, result.stderr  # an attempt succeeded
    assert result.report is not None
    runs = result.report["runs"]
    assert [r["branch"] for r in runs] == ["try-a1", "try-a2", "try-a3"]
    assert [r["status"] for r in runs] == ["failed", "success", "failed"]
    assert [r["attempt"] for r in runs] == [
        {"number": 1, "of": 3, "winner": False, "kept": False},
        {"number": 2, "of": 3, "winner": True, "kept": True},
        {"number": 3, "of": 3, "winner": False, "kept": False},
    ]
    heads = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()
    assert sorted(heads) == ["main", "try-a", "try-a2", "try-a4"]  # the others, and only them
    assert git(repo, "show", "try-a2:result.txt") == "ok\n"
    for r in runs:  # their run data stays
        assert (Path(r["run_dir"]) / "report.json").is_file()
    assert "success (winner)" in result.stdout
    assert "failed (deleted)" in result.stdout
    assert "attempt 2 of 3 won: branch try-a2" in result.stderr

    (pull,) = fake.pulls  # one pull request, the winner's, listing the others
    assert (pull["head"], pull["base"]) == ("try-a2", "main")
    body = pull["body"].replace("\\", "")
    assert "Other attempts at the same task" in body
    assert "try-a1: ❌ failed (exit 1)" in body
    assert "try-a3: ❌ failed (exit 1)" in body
    assert git(bare, "for-each-ref", "--format=%(refname:short)").split() == ["try-a2"]
    assert runs[1]["pull_request"]["url"] == pull["html_url"]


def test_no_attempt_succeeds_no_winner_every_branch_kept(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    result = run_cli(
        [
            *("--agent-type", "command", "--task", "echo no > r.txt", "--branch", "lost"),
            *("--attempts", "2", "--check", "false", "--keep", "winner"),
        ],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 1, result.stderr
    assert result.report is not None
    assert [r["attempt"]["winner"] for r in result.report["runs"]] == [False, False]
    assert git(repo, "rev-parse", "--verify", "-q", "lost-a1")
    assert git(repo, "rev-parse", "--verify", "-q", "lost-a2")
    assert "no attempt of 2 succeeded: no winner, every branch kept" in result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--attempts", "0"], "--attempts must be a whole number from 1 to 20"),
        (["--keep", "winner"], "--keep goes with --attempts N"),
        (["--attempts", "2", "--keep", "best"], "--keep must be one of all, winner"),
        (["--attempts", "2", "--task", "two"], "--attempts runs one task on one project"),
        (["--attempts", "2", "--branch", "bad..name"], "is not a valid git branch name"),
    ],
)
def test_bad_attempts_are_refused_before_anything(
    repo: Path, command_env: Callable[..., dict[str, str]], args: list[str], said: str
) -> None:
    before = git(repo, "for-each-ref")
    result = run_cli(
        ["--agent-type", "command", "--task", "true", *args], cwd=repo, env=command_env()
    )
    assert result.code == 2, result.stderr
    assert said in result.stderr
    assert git(repo, "for-each-ref") == before
    assert not (repo / ".git" / "agent-worker").exists()
