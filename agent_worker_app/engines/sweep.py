"""Which agent containers are orphans (their runs are gone) and which are lost runs to recover,
by their labels: the same decisions for every backend (containers.py, swarm.py).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent_worker_app.engines.base import ExitInfo, LostTask, Task
from agent_worker_app.task_spec import LABEL, process_start

KEEP_LOST_S = 7 * 86400  # a lost run's container waits this long for its repository's next run


def orchestrator_alive(labels: Mapping[str, str]) -> bool:
    """Whether the agent-worker process that made a container (on this host) still runs."""
    try:
        pid = int(labels.get(f"{LABEL}.pid", ""))
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return process_start(pid) == labels.get(f"{LABEL}.pid-start", process_start(pid))


def note(labels: Mapping[str, str], running: bool, now: float) -> str | None:
    """Why a container is to be removed, or None. A running one past its run's deadline is
    wedged (the task stops its agent by itself before then); an exited one of a lost run waits
    KEEP_LOST_S for its repository's next run to recover its work, then is given up."""
    try:
        deadline = float(labels.get(f"{LABEL}.deadline", "0"))
    except ValueError:
        deadline = 0.0
    if running:
        return "still running past its deadline" if deadline < now else None
    mine = labels.get(f"{LABEL}.host") == socket.gethostname()
    if mine and orchestrator_alive(labels):
        return None
    if deadline + KEEP_LOST_S >= now:
        return None
    branch = labels.get(f"{LABEL}.branch", "?")
    project = labels.get(f"{LABEL}.project", "?")
    return (
        f"nobody recovered it within 7 days: the agent's work for branch {branch} of "
        f"{project} is lost"
    )


def scope(project: str | None) -> list[str]:
    """The labels of agent containers: of every run, or of one project's."""
    return [f"{LABEL}.run-id"] + ([f"{LABEL}.project={project}"] if project else [])


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
        if labels.get(f"{LABEL}.host") != socket.gethostname() or orchestrator_alive(labels):
            continue
        tasks.append(LostTask(Task(handle), labels, wait(handle) if exited else None))
    return tasks
