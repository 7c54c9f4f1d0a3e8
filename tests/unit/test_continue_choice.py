"""follow_up.py against real git repositories and run directories: which branch --continue
takes, from which commit, with which session, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report import make_report
from test_runs import write_run

from agent_worker_app import follow_up
from agent_worker_app.errors import PreconditionError, UsageError
from conftest import git


def agent_branch(repo: Path, branch: str, run_id: str, **report: object) -> str:
    """A branch made by a (recorded) run: its commit and its run directory."""
    tip = git(repo, "commit-tree", "-p", "HEAD", "-m", run_id, "HEAD^{tree}").strip()
    git(repo, "update-ref", f"refs/heads/{branch}", tip)
    fields = {"branch": branch, "head_commit": tip, "run_id": run_id} | report
    write_run(repo / ".git", run_id, f"task of {run_id}", make_report(**fields))
    return tip


def test_the_branch_and_its_last_run(repo: Path) -> None:
    agent_branch(repo, "feature", "20261125-090000-aa")
    tip = agent_branch(repo, "feature", "20261125-100000-bb", agent=make_report().agent)
    ws, continuation = follow_up.prepare(repo, "feature", "claude")
    assert (ws.branch, ws.base_commit) == ("feature", tip)
    assert continuation.previous.run_id == "20261125-100000-bb"
    assert continuation.before.runs == 2
    assert continuation.session is None  # no session file kept
    ws2, by_run = follow_up.prepare(repo, "20261125-100000-bb", "claude")
    assert ws2 == ws
    assert by_run.previous.run_id == "20261125-100000-bb"


def test_the_session_kept_by_the_same_agent(repo: Path) -> None:
    agent_branch(repo, "talk", "20261125-090000-aa")  # session sess-1, agent claude
    session_dir = repo / ".git/agent-worker/runs/20261125-090000-aa/session"
    session_dir.mkdir()
    (session_dir / "sess-1.jsonl").write_text("{}\n")
    (session_dir / "other.jsonl").write_text("{}\n")
    _, continuation = follow_up.prepare(repo, "talk", "claude")
    assert continuation.session is not None
    assert continuation.session.session_id == "sess-1"
    assert [p.name for p in continuation.session.files] == ["other.jsonl", "sess-1.jsonl"]
    _, other_agent = follow_up.prepare(repo, "talk", "codex")
    assert other_agent.session is None
    agent_branch(repo, "talk", "20261125-100000-bb")  # a later run that kept no session file
    _, later = follow_up.prepare(repo, "talk", "claude")
    assert later.session is None  # not the older one: it would not know the later work


def test_what_it_refuses(repo: Path, tmp_path: Path) -> None:
    git(repo, "branch", "plain")
    with pytest.raises(UsageError, match="'plain' is not an agent-worker branch"):
        follow_up.prepare(repo, "plain", "claude")
    tip = agent_branch(repo, "moved", "20261125-090000-aa")
    agent_branch(repo, "moved", "20261125-090001-bb")
    with pytest.raises(UsageError, match="run 20261125-090000-aa is not the last run"):
        follow_up.prepare(repo, "20261125-090000-aa", "claude")
    git(repo, "update-ref", "refs/heads/moved", tip)  # reset by the user
    with pytest.raises(UsageError, match="'moved' has moved since its last run"):
        follow_up.prepare(repo, "moved", "claude")
    agent_branch(repo, "deleted", "20261125-090002-cc")
    git(repo, "branch", "-D", "deleted")
    with pytest.raises(UsageError, match="there is no branch 'deleted'"):
        follow_up.prepare(repo, "deleted", "claude")
    agent_branch(repo, "here", "20261125-090003-dd")
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "here")
    with pytest.raises(PreconditionError, match="'here' is checked out in"):
        follow_up.prepare(repo, "here", "claude")
