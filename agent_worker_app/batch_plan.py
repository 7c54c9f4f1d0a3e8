"""Which runs a command line asks for: its tasks (--task, given several times, and --tasks-file)
times its projects (--project, given several times), each with its branch name. Pure: reads
the tasks file and nothing else.

A tasks file holds one task a line, or JSON Lines (the first line that is not blank starts
with "{") with "task" and optional "branch", "project" and "agent_type"; a line's project is
relative to the file's directory. A bad line is a usage error naming FILE:LINE.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent_worker_app.errors import UsageError

JSON_KEYS = ("task", "branch", "project", "agent_type")
GENERATED = "agent-task-%Y%m%d-%H%M%S"


@dataclass(frozen=True)
class Entry:
    """One task as given: its text and what its own line of a tasks file says."""

    task: str
    where: str  # "--task 2", "tasks.jsonl:3": named in messages
    branch: str | None = None
    project: str | None = None
    agent_type: str | None = None


@dataclass(frozen=True)
class Planned:
    """One run of a batch: a task on a project, on its own branch."""

    number: int  # 1-based, in the order of the tasks, then of the projects
    entry: Entry
    project: str | None  # None: the default (PROJECT_PATH, else the current directory)
    branch: str
    branch_given: bool  # a name the user chose: taken already is an error, not a new name


def _tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (tuple, list)):
        return tuple(str(v) for v in value)
    return (str(value),)


def is_batch(options: Mapping[str, Any]) -> bool:
    """Several runs asked for: --task more than once, --tasks-file, or several --project."""
    return (
        len(_tuple(options.get("task"))) > 1
        or options.get("tasks_file") is not None
        or len(_tuple(options.get("project"))) > 1
    )


def single(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a command line that asks for one run, as the single-run path takes them."""
    one = dict(options)
    for key in ("task", "project"):
        values = _tuple(options.get(key))
        one[key] = values[0] if values else None
    return one


def plan(
    options: Mapping[str, Any],
    *,
    read_stdin: Callable[[], str],
    now: datetime | None = None,
) -> list[Planned]:
    """Every run the options ask for, numbered, each with its branch; UsageError when they
    ask for none or for one run twice."""
    entries = [Entry(text, f"--task {i}") for i, text in enumerate(_tuple(options.get("task")), 1)]
    if options.get("task_file") is not None:
        if entries:
            raise UsageError("give the task with exactly one of --task TEXT or --task-file PATH")
        entries.append(
            Entry(_read_text("--task-file", options["task_file"], read_stdin), "--task-file")
        )
    if options.get("tasks_file") is not None:
        entries += read_tasks_file(str(options["tasks_file"]), read_stdin)
    if not entries:
        raise UsageError("no task: give --task TEXT (several times for several), or --tasks-file")
    projects = _projects(_tuple(options.get("project")))
    given = options.get("branch")
    stamp = (now or datetime.now()).strftime(GENERATED)
    several = len(entries) > 1
    runs: list[Planned] = []
    for i, entry in enumerate(entries, 1):
        if entry.branch is not None:
            branch, branch_given = entry.branch, True
        elif given:
            branch, branch_given = f"{given}-{i}" if several else str(given), True
        else:
            branch, branch_given = f"{stamp}-{i}" if several else stamp, False
        for project in [entry.project] if entry.project is not None else projects:
            runs.append(Planned(len(runs) + 1, entry, project, branch, branch_given))
    return runs


def _projects(given: tuple[str, ...]) -> list[str | None]:
    seen: set[str] = set()
    for project in given:
        key = str(Path(project).expanduser().resolve())
        if key in seen:
            raise UsageError(f"--project {project} is given twice")
        seen.add(key)
    return list(given) or [None]


def _read_text(option: str, path: str, read_stdin: Callable[[], str]) -> str:
    try:
        if path == "-":
            return read_stdin()
        return Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
        raise UsageError(f"{option}: cannot read {path}: {reason}") from None


def read_tasks_file(path: str, read_stdin: Callable[[], str] = lambda: "") -> list[Entry]:
    """The tasks of a tasks file (see the module's docstring)."""
    text = _read_text("--tasks-file", path, read_stdin)
    name = "stdin" if path == "-" else path
    base = Path.cwd() if path == "-" else Path(path).expanduser().resolve().parent
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    jsonl = first.lstrip().startswith("{")
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or (not jsonl and line.lstrip().startswith("#")):
            continue
        where = f"{name}:{number}"
        entries.append(_json_entry(line, where, base) if jsonl else Entry(line.strip(), where))
    if not entries:
        raise UsageError(f"--tasks-file: {name} has no tasks")
    return entries


def _json_entry(line: str, where: str, base: Path) -> Entry:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise UsageError(f"{where}: not a JSON object ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{where}: not a JSON object (each line of a JSON Lines file is one)")
    unknown = sorted(set(data) - set(JSON_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r} (a line has {', '.join(JSON_KEYS)})")
    for key, value in data.items():
        if not isinstance(value, str):
            raise UsageError(f"{where}: {key!r} must be a string")
    task = data.get("task")
    if not task or not task.strip():
        raise UsageError(f'{where}: no task ("task" is missing or empty)')
    for key in ("branch", "project", "agent_type"):
        if key in data and not data[key].strip():
            raise UsageError(f"{where}: {key!r} is empty")
    project = data.get("project")
    return Entry(
        task=task,
        where=where,
        branch=data.get("branch"),
        project=str(base / Path(project).expanduser()) if project else None,
        agent_type=data.get("agent_type"),
    )


def run_options(options: Mapping[str, Any], run: Planned) -> dict[str, Any]:
    """The options of one run of the batch, as config.load takes them."""
    one = dict(options)
    one.update(
        task=run.entry.task,
        task_file=None,
        tasks_file=None,
        project=run.project,
        branch=None,  # the run's own (run.branch), set on its configuration once loaded
    )
    if run.entry.agent_type is not None:
        one["agent_type"] = run.entry.agent_type
    return one
