"""Recovering the work of runs whose agent-worker is gone (kill -9, a dropped ssh session, a
cancelled CI job): their containers stopped their agents by themselves and kept the commits.
The next run on the same repository, or `agent-worker --recover`, brings those commits onto
their branches, writes the runs' reports, and only then removes the containers."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent_worker_app import agents, git_manager
from agent_worker_app.agents.base_agent import AgentResult, AgentSettings
from agent_worker_app.engines import sweep
from agent_worker_app.engines.base import GRACE_S, LostTask
from agent_worker_app.errors import EXIT_INTERRUPTED, AgentWorkerError, GitError
from agent_worker_app.report import AgentInfo, RunReport, Tokens, render_json
from agent_worker_app.task_result import import_result, parse_inside

if TYPE_CHECKING:
    from agent_worker_app.engines.base import Backend
    from agent_worker_app.git_manager import Workspace

log = logging.getLogger("agent_worker")
ACCOUNT_NAME = "agent-worker-result.json"


def recover(backend: Backend, ws: Workspace) -> list[str]:
    """Recover every lost task of this repository; a line for the user about each."""
    return recover_found(backend, ws, backend.lost_tasks(str(ws.root)))


def recover_found(backend: Backend, ws: Workspace, found: list[LostTask]) -> list[str]:
    """Recover these lost tasks (backend.lost_tasks); a line for the user about each."""
    lines = []
    for lost in found:
        try:
            lines.append(recover_one(backend, ws, lost))
        except AgentWorkerError as exc:
            lines.append(f"could not recover run {lost.labels.get(sweep.RUN_ID)}: {exc}")
    return lines


def recover_one(backend: Backend, ws: Workspace, lost: LostTask) -> str:
    labels = lost.labels
    run_id = labels.get(sweep.RUN_ID, "unknown")
    exit_info = lost.exit or backend.wait(lost.task, GRACE_S)  # it is stopping by itself
    if exit_info is None:
        return f"run {run_id} is still stopping its agent: the next run will recover it"
    run_dir = ws.git_dir / "agent-worker" / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    backend.fetch_result(lost.task, run_dir, account=True)
    account = run_dir / ACCOUNT_NAME
    text = account.read_text(encoding="utf-8") if account.is_file() else None
    inside, problem = parse_inside(text)
    branch_ws = replace(
        ws, branch=labels.get(sweep.BRANCH, ""), base_commit=labels.get(sweep.BASE, "")
    )
    head, error = branch_ws.base_commit, problem
    if inside is not None and inside.bundle:
        bundle = run_dir / "out" / "result.bundle"
        head, error = import_result(branch_ws, bundle, expected=inside.head)
    elif inside is None:
        error = error or "the container left no account of its end"
    agent_type = labels.get(sweep.AGENT, "claude")
    result = agent_result(agent_type, run_dir / "out")
    # the agent's raw last lines, which no redactor saw (this process does not know the lost
    # run's credential): its figures are read, and it goes
    (run_dir / "out" / "agent-tail.jsonl").unlink(missing_ok=True)
    report = recovered_report(
        branch_ws, run_id, run_dir, head=head, agent_type=agent_type, result=result, error=error
    )
    if inside is not None:  # what the container's root stage recorded: check, blocked, meter
        report.check, report.blocked = inside.check, list(inside.blocked)
        report.meter = inside.meter
    (run_dir / "report.json").write_text(render_json(report), encoding="utf-8")
    backend.remove(lost.task)
    commits = count_commits(branch_ws, head)
    log.info("recovered run %s: %d commits onto %s", run_id, commits, branch_ws.branch)
    if error and commits == 0:
        return f"run {run_id} (branch {branch_ws.branch}) had nothing to recover: {error}"
    plural = "" if commits == 1 else "s"
    return f"recovered {commits} commit{plural} of run {run_id} onto branch {branch_ws.branch}"


def agent_result(agent_type: str, out: Path) -> AgentResult:
    """What the agent's last output lines (kept by the container) say: its final figures."""
    try:
        parser = agents.get(agent_type, AgentSettings()).parser()
    except AgentWorkerError:
        return AgentResult()
    tail = out / "agent-tail.jsonl"
    if tail.is_file():
        with tail.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                parser.feed(line)
    return parser.result()


def count_commits(ws: Workspace, head: str) -> int:
    try:
        return len(git_manager.commits_between(ws, ws.base_commit, head))
    except GitError:
        return 0


def recovered_report(
    ws: Workspace,
    run_id: str,
    run_dir: Path,
    *,
    head: str,
    agent_type: str,
    result: AgentResult,
    error: str | None,
) -> RunReport:
    try:
        files = git_manager.diff_stats(ws, head)
    except GitError:
        files = []
    message = "agent-worker was gone before the run ended; the container stopped the agent"
    return RunReport(
        run_id=run_id,
        status="interrupted",
        exit_code=EXIT_INTERRUPTED,
        branch=ws.branch,
        base_commit=ws.base_commit,
        head_commit=head,
        duration_s=0.0,
        agent=AgentInfo.of(agent_type, result, None, result.cost_usd),
        tokens=Tokens.of(result),
        cost_usd=result.cost_usd,
        turns=result.turns,
        files=files,
        run_dir=str(run_dir),
        error=message + (f" ({error})" if error else ""),
        warnings=[f"recovered at {time.strftime('%Y-%m-%d %H:%M:%S')} by a later agent-worker"],
    )
