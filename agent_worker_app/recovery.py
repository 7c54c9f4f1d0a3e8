"""Recovering the work of runs whose agent-worker is gone (kill -9, a dropped ssh session, a
cancelled CI job): their containers stopped their agents by themselves and kept the commits.
The next run on the same repository, or `agent-worker --recover`, brings those commits onto
their branches, writes the runs' reports, and only then removes the containers.

Labels only find candidates: anyone who can create a container on the engine can set them. A
candidate is recovered only as the run it claims to be recorded it in this repository's run
directory (runs.task_record: its branch, base, agent and nonce), and only when its result line
is marked with that run's nonce; anything else is left as it is, with a warning."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent_worker_app import agents, git_manager, runs
from agent_worker_app.agents.base_agent import AgentResult, AgentSettings
from agent_worker_app.console import escape_text
from agent_worker_app.engines import channel, sweep
from agent_worker_app.engines.base import GRACE_S, LostTask
from agent_worker_app.errors import EXIT_INTERRUPTED, AgentWorkerError, GitError
from agent_worker_app.report import AgentInfo, RunReport, Tokens, render_json
from agent_worker_app.runs import TaskRecord, UnknownRunError
from agent_worker_app.task_result import import_result, parse_inside

if TYPE_CHECKING:
    from agent_worker_app.engines.base import Backend
    from agent_worker_app.git_manager import Workspace

log = logging.getLogger("agent_worker")
ACCOUNT_NAME = "agent-worker-result.json"


@dataclass(frozen=True)
class Said:
    """A line for the user about one lost task; a warning when it was not recovered."""

    text: str
    warning: bool = False


def recover(backend: Backend, ws: Workspace) -> list[Said]:
    """Recover every lost task of this repository; a line for the user about each."""
    return recover_found(backend, ws, backend.lost_tasks(str(ws.root)))


def recover_found(backend: Backend, ws: Workspace, found: list[LostTask]) -> list[Said]:
    """Recover these lost tasks (backend.lost_tasks); a line for the user about each."""
    lines = []
    for lost in found:
        try:
            lines.append(recover_one(backend, ws, lost))
        except AgentWorkerError as exc:
            shown = escape_text(lost.labels.get(sweep.RUN_ID, "")[:80])
            lines.append(Said(f"could not recover run {shown}: {exc}", warning=True))
    return lines


def ignored(lost: LostTask, why: str) -> Said:
    claimed = escape_text(lost.labels.get(sweep.RUN_ID, "")[:80])
    log.warning("not recovering the container of run %r (%s); labels %r", claimed, why, lost.labels)
    return Said(
        f"ignored a container that claims to be run '{claimed}' of this repository: {why}; "
        "it is left as it is (not this repository's task, or not one to trust)",
        warning=True,
    )


def recover_one(backend: Backend, ws: Workspace, lost: LostTask) -> Said:
    try:
        record = runs.task_record(ws.git_dir, lost.labels.get(sweep.RUN_ID, ""))
    except UnknownRunError as exc:
        return ignored(lost, str(exc))
    run_id = record.run_id
    exit_info = lost.exit or backend.wait(lost.task, GRACE_S)  # it is stopping by itself
    if exit_info is None:
        return Said(f"run {run_id} is still stopping its agent: the next run will recover it")
    with fetched(backend, lost, record, ws) as (text, out):
        if text is None:  # a task that ended before its result line cannot be told from a fake
            return ignored(lost, f"its result is not marked with run {run_id}'s nonce")
        if runs.ended(record):  # a copy of a result already recovered, or a leftover
            backend.remove(lost.task)
            return Said(f"run {run_id} had ended already: removed a container left of it")
        keep(out, record.run_dir / "out")
    (record.run_dir / ACCOUNT_NAME).write_text(text, encoding="utf-8")
    return recovered(backend, ws, lost, record, text)


@contextlib.contextmanager
def fetched(
    backend: Backend, lost: LostTask, record: TaskRecord, ws: Workspace
) -> Iterator[tuple[str | None, Path]]:
    """What the task left, fetched into a directory of its own (never the run directory before
    it is known to be the run's): its result line's JSON when marked with the run's nonce (else
    None), and where its files are."""
    parent = ws.git_dir / "agent-worker"
    with tempfile.TemporaryDirectory(dir=parent, prefix="recovering-") as where:
        fetch = Path(where)
        nonce = fetch / channel.NONCE_FILE  # a service's result is read from its log with it
        nonce.write_text(record.nonce, encoding="utf-8")  # (the directory is the user's alone)
        backend.fetch_result(lost.task, fetch, account=True)
        nonce.unlink()
        account = fetch / ACCOUNT_NAME
        data = account.read_bytes() if account.is_file() and not account.is_symlink() else b""
        yield channel.vouched(data, record.nonce), fetch / "out"


def keep(out: Path, dest: Path) -> None:
    """Move the task's files into the run directory."""
    if not out.is_dir():
        return
    dest.mkdir(exist_ok=True)
    for item in out.iterdir():
        there = dest / item.name
        if there.is_dir() and not there.is_symlink():
            shutil.rmtree(there)
        item.replace(there)


def recovered(
    backend: Backend, ws: Workspace, lost: LostTask, record: TaskRecord, text: str
) -> Said:
    """Bring the task's commits onto the run's branch, from the run's base (as the run recorded
    them), write its report and remove its container."""
    run_id, run_dir = record.run_id, record.run_dir
    inside, problem = parse_inside(text)
    branch_ws = replace(ws, branch=record.branch, base_commit=record.base)
    head, error = branch_ws.base_commit, problem
    if inside is not None and inside.bundle:
        bundle = run_dir / "out" / "result.bundle"
        head, error = import_result(branch_ws, bundle, expected=inside.head)
    elif inside is None:
        error = error or "the container left no account of its end"
    result = agent_result(record.agent, run_dir / "out")
    # the agent's raw last lines, which no redactor saw (this process does not know the lost
    # run's credential): its figures are read, and it goes
    (run_dir / "out" / "agent-tail.jsonl").unlink(missing_ok=True)
    report = recovered_report(
        branch_ws, run_id, run_dir, head=head, agent_type=record.agent, result=result, error=error
    )
    if inside is not None:  # what the container's root stage recorded: check, blocked, meter
        report.check, report.blocked = inside.check, list(inside.blocked)
        report.meter = inside.meter
    (run_dir / "report.json").write_text(render_json(report), encoding="utf-8")
    backend.remove(lost.task)
    commits = count_commits(branch_ws, head)
    log.info("recovered run %s: %d commits onto %s", run_id, commits, branch_ws.branch)
    if error and commits == 0:
        return Said(f"run {run_id} (branch {branch_ws.branch}) had nothing to recover: {error}")
    plural = "" if commits == 1 else "s"
    return Said(
        f"recovered {commits} commit{plural} of run {run_id} onto branch {branch_ws.branch}"
    )


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
