"""What of the user's repository the agent can read: the objects of its branch's history and
nothing else (issue 19, attack 7). The agent (the command agent, a shell in the sandbox) looks
for everything its clone can reach: every object git finds through the clone and whatever it
borrows, every ref, every stash, and what is under /source."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import containers_of, git, make_repo, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# Prints the content of every blob the clone can read (its own objects and its alternates'),
# the refs and stashes it knows, and what /source holds; nothing of it is written to /workspace.
LOOK = (
    "cd /workspace; "
    "git cat-file --batch-all-objects --batch-check='%(objectname) %(objecttype)' "
    '| while read -r id kind; do [ "$kind" = blob ] && git cat-file blob "$id"; done; '
    "git for-each-ref; git stash list; cat .git/objects/info/alternates 2>/dev/null; "
    "ls -R /source 2>/dev/null | head -20; true"
)


def _marked(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}\n"


def _commit(repo: Path, name: str, content: str, message: str) -> None:
    (repo / name).write_text(content)
    git(repo, "add", name)
    git(repo, "commit", "-qm", message)


@pytest.fixture
def attacked(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A repository that borrows objects from another (git clone --shared), with an earlier
    commit on main whose file is gone since, another branch, a stash of an untracked file
    (git stash -u), and an object only in the repository it borrows from."""
    origin = make_repo(tmp_path / "origin", {"README.md": "# origin\n"})
    repo = tmp_path / "project"
    git(tmp_path, "clone", "-q", "--shared", str(origin), str(repo))
    git(repo, "config", "user.name", "Test User")
    git(repo, "config", "user.email", "test@example.com")
    marks = {k: _marked(k) for k in ("history", "branch", "stash", "borrowed")}
    _commit(repo, "old.txt", marks["history"], "An earlier file")
    git(repo, "rm", "-q", "old.txt")
    git(repo, "commit", "-qm", "Remove it")
    git(repo, "checkout", "-q", "-b", "other")
    _commit(repo, "other.txt", marks["branch"], "Another branch's work")
    git(repo, "checkout", "-q", "main")
    (repo / "untracked.txt").write_text(marks["stash"])
    git(repo, "stash", "push", "-q", "-u")
    _commit(origin, "borrowed.txt", marks["borrowed"], "Only in the lender")
    assert git(repo, "status", "--porcelain") == ""
    return repo, marks


def _look(repo: Path, env: dict[str, str], branch: str, *extra: str) -> tuple[str, str]:
    """What the agent printed, and the run's id."""
    result = run_cli(
        ["--agent-type", "command", "--task", LOOK, "--branch", branch, *extra],
        cwd=repo,
        env=env,
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "success"
    assert report["changes"]["files_changed"] == 0
    return (Path(report["run_dir"]) / "agent.jsonl").read_text(), report["run_id"]


def test_the_agent_reads_its_branchs_history_and_nothing_else(
    attacked: tuple[Path, dict[str, str]],
    command_env: Callable[..., dict[str, str]],
    docker_client: Any,
) -> None:
    repo, marks = attacked
    seen, run_id = _look(repo, command_env(), "look")
    assert marks["history"].strip() in seen  # the branch's own history is there
    for kind in ("branch", "stash", "borrowed"):
        assert marks[kind].strip() not in seen, f"the agent read the {kind}'s object"
    assert "refs/heads/other" not in seen
    assert "refs/stash" not in seen
    assert "/source" not in seen
    assert containers_of(docker_client, run_id) == []


def test_an_explicit_mount_shows_every_object_as_documented(
    attacked: tuple[Path, dict[str, str]], command_env: Callable[..., dict[str, str]]
) -> None:
    repo, marks = attacked
    seen, _ = _look(repo, command_env(), "look-mounted", "--workspace", "mount")
    # the README says so: --workspace mount shares the object directories, every object in them
    for kind in ("history", "branch", "stash", "borrowed"):
        assert marks[kind].strip() in seen, kind
    assert "refs/heads/other" not in seen  # names of refs still stay out
