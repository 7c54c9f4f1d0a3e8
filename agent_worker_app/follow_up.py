"""--continue: a new task on an existing agent branch, on top of its last commit, with the
agent's earlier session where it can resume one.

The branch must be one that agent-worker's runs worked on (a run directory says so) and still
be where its last run left it: a branch the user moved since, or one never made by a run, is
refused rather than guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent_worker_app import git_manager, runs
from agent_worker_app.errors import UsageError
from agent_worker_app.git_manager import Workspace
from agent_worker_app.report import BranchTotals
from agent_worker_app.runs import PastRun
from agent_worker_app.task_spec import Session


@dataclass(frozen=True)
class Continuation:
    """What a continuing run starts from."""

    previous: PastRun  # the branch's last run: the branch is still where it left it
    session: Session | None  # the agent's earlier session, when one was kept for this agent
    before: BranchTotals  # the branch's runs so far
    # the commit the continued run read its environment file from: this run reads it there,
    # never from the branch the agent wrote (None: a run from before it was recorded)
    environment: str | None = None


def _target(found: list[PastRun], target: str) -> tuple[str, PastRun | None]:
    """(the branch, the run named) for a branch name or a run id."""
    named = next((r for r in found if r.run_id == target), None)
    if named is None:
        return target, None
    if not named.branch:
        raise UsageError(f"--continue: run {target} kept no branch (it never started its agent)")
    return named.branch, named


def prepare(project: Path, target: str, agent_type: str) -> tuple[Workspace, Continuation]:
    """The workspace of a run continuing target (a branch or a run id) and what it continues;
    UsageError when it is not an agent-worker branch or has moved since its last run."""
    repo = git_manager.repository(project)
    found = runs.past_runs(repo.git_dir)
    branch, named = _target(found, target)
    mine = [r for r in found if r.branch == branch and r.head_commit]
    if not mine:
        raise UsageError(
            f"--continue: {branch!r} is not an agent-worker branch (no run of this repository "
            "worked on it; --list-runs shows the runs)"
        )
    ws = git_manager.preflight_continue(project, branch)
    last = mine[0]
    if named is not None and named.run_id != last.run_id:
        raise UsageError(
            f"--continue: run {named.run_id} is not the last run on {branch!r} "
            f"({last.run_id} is): continue the branch, or the last run"
        )
    if ws.base_commit != last.head_commit:
        raise UsageError(
            f"--continue: branch {branch!r} has moved since its last run (run {last.run_id} "
            f"left it at {str(last.head_commit)[:12]}, it is now at {ws.base_commit[:12]}): "
            "agent-worker only continues a branch it left as it is"
        )
    try:
        environment = runs.task_record(repo.git_dir, last.run_id).environment
    except runs.UnknownRunError:
        environment = None
    return ws, Continuation(
        last, _session(mine, agent_type), runs.branch_totals(found, branch), environment
    )


def _session(mine: list[PastRun], agent_type: str) -> Session | None:
    """The session of this agent type's last run on the branch, with its files; None when that
    run kept none (a recovered run): an older session would not know that run's work."""
    run = next((r for r in mine if r.agent == agent_type), None)
    if run is None or not run.session_id:
        return None
    kept = Path(run.run_dir) / "session"
    files = tuple(sorted(p for p in kept.glob("*.jsonl") if p.is_file()))
    if not any(p.stem == run.session_id for p in files):
        return None
    # a report from before session_cost_usd was kept: its cost was the session's, all of it
    spent = run.session_cost_usd if run.session_cost_usd is not None else run.cost_usd
    return Session(run.session_id, files, spent)
