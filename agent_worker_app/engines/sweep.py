"""The labels every backend puts on what it makes for a task, and the decisions they allow any
later run, from this host or another: which tasks are orphans (their runs are gone, or past
their deadline) and which are lost runs to recover. The same for every backend."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent_worker_app.engines.base import GRACE_S, ExitInfo, LostTask, Task

LABEL = "agent-worker"
RUN_ID = f"{LABEL}.run-id"
PROJECT = f"{LABEL}.project"
DEADLINE = f"{LABEL}.deadline"
HOST = f"{LABEL}.host"
PID = f"{LABEL}.pid"
PID_START = f"{LABEL}.pid-start"
BRANCH = f"{LABEL}.branch"
BASE = f"{LABEL}.base"
AGENT = f"{LABEL}.agent"
# a container of a run's that holds no work of the agent's to recover: "check" (the check's
# task), "network" (the network companion of the agent's container)
ROLE = f"{LABEL}.role"
CHECK_ROLE = "check"
KEEP_LOST_S = 7 * 86400  # a lost run's container waits this long for its repository's next run


def labels(
    run_id: str, project: Path, *, branch: str = "", base: str = "", agent: str = ""
) -> dict[str, str]:
    """Labels that let a later run, from this host or any other, tell whether the task's
    orchestrator is still there (its host, process and that process's start time), and what
    to recover of it (its branch, base and agent); the backend adds its deadline."""
    made = {
        RUN_ID: run_id,
        PROJECT: str(project),
        HOST: socket.gethostname(),
        PID: str(os.getpid()),
        PID_START: process_start(os.getpid()),
    }
    extra = {BRANCH: branch, BASE: base, AGENT: agent}
    return made | {key: value for key, value in extra.items() if value}


def deadline_label(timeout_s: float, later_s: float = 0.0) -> dict[str, str]:
    """The moment after which nobody waits for a task started now any more: its timeout, the
    grace of its stop and of its commit, and later_s more (a node's image pull)."""
    return {DEADLINE: str(int(time.time() + timeout_s + 2 * GRACE_S + later_s))}


def deadline(labels: Mapping[str, str]) -> float:
    try:
        return float(labels.get(DEADLINE, "0"))
    except ValueError:
        return 0.0


def process_start(pid: int) -> str:
    """A process's start time in clock ticks since boot: with the pid, it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def mine(labels: Mapping[str, str]) -> bool:
    """Made on this host."""
    return labels.get(HOST) == socket.gethostname()


def gone(labels: Mapping[str, str], now: float) -> bool:
    """A run is gone when it was made on this host by a process that is no longer there, or,
    made elsewhere, when its deadline passed."""
    if mine(labels):
        return not orchestrator_alive(labels)
    return deadline(labels) < now


def orchestrator_alive(labels: Mapping[str, str]) -> bool:
    """Whether the agent-worker process that made a container (on this host) still runs."""
    try:
        pid = int(labels.get(PID, ""))
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return process_start(pid) == labels.get(PID_START, process_start(pid))


def note(labels: Mapping[str, str], running: bool, now: float) -> str | None:
    """Why a container is to be removed, or None. A running one past its run's deadline is
    wedged (the task stops its agent by itself before then); an exited one of a lost run waits
    KEEP_LOST_S for its repository's next run to recover its work, then is given up."""
    ends = deadline(labels)
    if running:
        return "still running past its deadline" if ends < now else None
    if mine(labels) and orchestrator_alive(labels):
        return None
    if labels.get(ROLE) and (mine(labels) or ends < now):
        return f"the {labels[ROLE]} container of a run that is gone"
    if ends + KEEP_LOST_S >= now:
        return None
    branch = labels.get(BRANCH, "?")
    project = labels.get(PROJECT, "?")
    return (
        f"nobody recovered it within 7 days: the agent's work for branch {branch} of "
        f"{project} is lost"
    )


def scope(project: str | None) -> list[str]:
    """The labels of agent containers: of every run, or of one project's."""
    return [RUN_ID] + ([f"{PROJECT}={project}"] if project else [])


def sweep(
    found: list[tuple[str, Mapping[str, str], bool]],
    remove: Callable[[str], bool],
    now: float | None = None,
) -> list[str]:
    """Remove the orphans among found (name, labels, running); remove(name) says False when the
    container was gone already (another agent-worker's removal). A line for each removed."""
    now = time.time() if now is None else now
    removed = []
    for name, labels, running in found:
        why = note(labels, running, now)
        if why is not None and remove(name):
            removed.append(f"removed container {name} ({why})")
    return removed


def lost(
    found: list[tuple[Any, dict[str, str], bool]], wait: Callable[[Any], ExitInfo | None]
) -> list[LostTask]:
    """The lost runs among found (handle, labels, exited): made on this host by an agent-worker
    that is gone; wait(handle) is the exit of one that exited."""
    tasks = []
    for handle, labels, exited in found:
        if not mine(labels) or orchestrator_alive(labels) or labels.get(ROLE):
            continue
        tasks.append(LostTask(Task(handle), labels, wait(handle) if exited else None))
    return tasks
