"""A repository's run directories (<git-dir>/agent-worker/runs/<run-id>/): what a run records
of its task as it starts it (task.json, nonce), the one thing a later run trusts when it
recovers that task; and past runs read back from their reports (report.json): --list-runs, and
a branch's totals across its runs for --continue.

A run directory without a readable report is a run still going, or one whose agent-worker was
lost and not yet recovered: it is listed with status "unknown", never skipped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent_worker_app.console import escape_text
from agent_worker_app.engines.channel import NONCE_FILE
from agent_worker_app.report import BranchTotals, format_duration

_RUN_ID = re.compile(r"(\d{8}-\d{6})-[0-9a-f]+")
RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{8}")  # what a run's id is (pipeline.new_run_id)
TASK_RECORD = "task.json"
_OID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_NONCE = re.compile(r"[0-9a-f]{32,128}")


@dataclass(frozen=True)
class PastRun:
    """One run as its report.json recorded it (None where it says nothing)."""

    run_id: str
    started: str | None  # local time, ISO 8601, from the run id
    branch: str | None
    status: str  # success, failed, timeout, interrupted, error; unknown without a report
    exit_code: int | None
    duration_s: float | None
    tokens_total: int | None
    cost_usd: float | None
    lines_added: int
    lines_removed: int
    files_changed: int
    agent: str | None
    session_id: str | None
    session_cost_usd: float | None  # what the agent reported its session had cost, all runs
    head_commit: str | None
    task: str  # the task's first line
    run_dir: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def runs_dir(git_dir: Path) -> Path:
    return git_dir / "agent-worker" / "runs"


# ---------------------------------------------------------------- a task's record


class UnknownRunError(ValueError):
    """A run id that names no task this repository's runs recorded; the message says why."""


@dataclass(frozen=True)
class TaskRecord:
    """What a run recorded of its task as it started it: all a later run trusts when it
    recovers the task, never the labels of a container that claims to be it."""

    run_id: str
    run_dir: Path
    branch: str
    base: str  # the commit the branch started from, where the task's commits go from
    agent: str
    nonce: str  # marks the task's result line; only the task's root stage knows it besides
    environment: str | None = None  # the commit its environment file was read from


def record_task(
    run_dir: Path, *, branch: str, base: str, agent: str, nonce: str, environment: str = ""
) -> None:
    """Record a task as the run starts it, before its container exists: its branch, base and
    agent, the commit its environment file was read from (what a --continue of it uses), and
    its nonce (readable by the user only)."""
    record = {"branch": branch, "base": base, "agent": agent, "environment": environment}
    (run_dir / TASK_RECORD).write_text(json.dumps(record) + "\n", encoding="utf-8")
    fd = os.open(run_dir / NONCE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(fd, 0o600)  # one there already keeps its mode through O_CREAT
        handle.write(nonce)


def task_record(git_dir: Path, run_id: str) -> TaskRecord:
    """The task run_id recorded in this repository's run directory; UnknownRunError when run_id
    is not a run id (a path, say: it is data, never a path to follow) or names no run here
    that recorded a task."""
    shown = escape_text(run_id[:80])
    if not RUN_ID.fullmatch(run_id):
        raise UnknownRunError(f"its run id '{shown}' is not one agent-worker makes")
    run_dir = runs_dir(git_dir) / run_id
    if run_dir.is_symlink() or not run_dir.is_dir():
        raise UnknownRunError(f"this repository has no run {run_id}")
    try:
        data = _dict(json.loads((run_dir / TASK_RECORD).read_text(encoding="utf-8")))
        nonce = (run_dir / NONCE_FILE).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        raise UnknownRunError(f"run {run_id} recorded no task to recover") from None
    branch, base = _str(data.get("branch")), _str(data.get("base"))
    if not branch or base is None or not _OID.fullmatch(base) or not _NONCE.fullmatch(nonce):
        raise UnknownRunError(f"run {run_id}'s record of its task cannot be read")
    environment = _str(data.get("environment"))
    return TaskRecord(
        run_id,
        run_dir,
        branch,
        base,
        _str(data.get("agent")) or "claude",
        nonce,
        environment if environment and _OID.fullmatch(environment) else None,
    )


def ended(record: TaskRecord) -> bool:
    """Whether the run wrote its report (it ended, or was recovered already)."""
    return (record.run_dir / "report.json").exists()


def started(run_id: str) -> str | None:
    match = _RUN_ID.fullmatch(run_id)
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%d-%H%M%S").isoformat()
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def read_run(run_dir: Path) -> PastRun:
    """A run directory's record; what its report lacks (or a report that cannot be read) is
    None, and the status "unknown"."""
    try:
        data = _dict(json.loads((run_dir / "report.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        data = {}
    try:
        task = (run_dir / "task.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        task = ""
    changes = _dict(data.get("changes"))
    agent = _dict(data.get("agent"))
    return PastRun(
        run_id=run_dir.name,
        started=started(run_dir.name),
        branch=_str(data.get("branch")),
        status=_str(data.get("status")) or "unknown",
        exit_code=_int(data.get("exit_code")),
        duration_s=_float(data.get("duration_s")),
        tokens_total=_int(_dict(data.get("tokens")).get("total")),
        cost_usd=_float(data.get("cost_usd")),
        lines_added=_int(changes.get("lines_added")) or 0,
        lines_removed=_int(changes.get("lines_removed")) or 0,
        files_changed=_int(changes.get("files_changed")) or 0,
        agent=_str(agent.get("type")),
        session_id=_str(agent.get("session_id")),
        session_cost_usd=_float(agent.get("session_cost_usd")),
        head_commit=_str(data.get("head_commit")),
        task=(task.strip().splitlines() or [""])[0],
        run_dir=str(run_dir),
    )


def past_runs(git_dir: Path) -> list[PastRun]:
    """Every run of the repository, newest first."""
    base = runs_dir(git_dir)
    try:
        dirs = [d for d in base.iterdir() if d.is_dir()]
    except OSError:
        return []
    # the id's time is to the second; task.md, written as the run starts, orders runs that
    # started within one second
    dated = sorted(((read_run(d), _mtime(d / "task.md")) for d in dirs), key=_newest, reverse=True)
    return [run for run, _ in dated]


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _newest(dated: tuple[PastRun, int]) -> tuple[str, int, str]:
    run, mtime = dated
    return (run.started or "", mtime, run.run_id)


def branch_totals(runs: Sequence[PastRun], branch: str) -> BranchTotals:
    mine = [r for r in runs if r.branch == branch]
    tokens = [r.tokens_total for r in mine if r.tokens_total is not None]
    costs = [r.cost_usd for r in mine if r.cost_usd is not None]
    return BranchTotals(
        runs=len(mine),
        duration_s=sum(r.duration_s or 0.0 for r in mine),
        tokens_total=sum(tokens) if tokens else None,
        cost_usd=sum(costs) if costs else None,
    )


# ---------------------------------------------------------------- --list-runs


def render_json(runs: Sequence[PastRun]) -> str:
    return json.dumps({"runs": [r.to_json() for r in runs]}, indent=2, ensure_ascii=False) + "\n"


_COLUMNS = ("when", "branch", "status", "duration", "tokens", "cost", "changes", "task")
_MAX_TASK = 50


def render_text(runs: Sequence[PastRun]) -> str:
    """A plain table, one run a line, newest first; names and tasks escaped (they are data)."""
    if not runs:
        return "no runs yet in this repository\n"
    rows = [list(_COLUMNS)]
    for r in runs:
        task = escape_text(r.task)
        rows.append(
            [
                (r.started or "?").replace("T", " "),
                escape_text(r.branch or "-"),
                r.status if r.exit_code is None else f"{r.status} ({r.exit_code})",
                "?" if r.duration_s is None else format_duration(r.duration_s),
                "-" if r.tokens_total is None else f"{r.tokens_total:,}",
                "-" if r.cost_usd is None else f"${r.cost_usd:.4f}",
                f"+{r.lines_added} \u2212{r.lines_removed} ({r.files_changed})",
                task if len(task) <= _MAX_TASK else task[: _MAX_TASK - 1] + "\u2026",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"
