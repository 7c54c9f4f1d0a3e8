"""What a task hands back at its end: its own account of how it ended (the result line, read
from its result channel) and the bundle of its commits, fetched onto its branch. A run reads
them as it collects its task (pipeline.collect); a later run, or --recover, reads those of a
run whose agent-worker is gone (recovery.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent_worker_app import git_manager
from agent_worker_app.errors import GitError
from agent_worker_app.git_manager import Workspace
from agent_worker_app.output_text import clean_line, clean_message
from agent_worker_app.sandbox_report import (
    Blocked,
    CheckOutcome,
    Meter,
    parse_blocked,
    parse_check,
    parse_meter,
)


@dataclass(frozen=True)
class Inside:
    """The task's own account of its end, from its result channel: written after the agent's
    processes are gone and marked with a nonce only the task's root stage knows, so nothing the
    agent prints can forge it."""

    phase: str  # "setup": the agent never started; "agent": it ran
    error: str | None = None
    head: str | None = None
    bundle: bool = False
    stopped: str | None = None  # why the task stopped its agent by itself, if it did
    warnings: tuple[str, ...] = ()
    check: CheckOutcome | None = None  # the check command's run, recorded by the root stage
    blocked: tuple[Blocked, ...] = ()  # what the firewall refused, from root's own record
    meter: Meter | None = None  # what the credential gate counted (None: no gate)


def import_result(
    ws: Workspace, bundle: Path, *, expected: str | None = None
) -> tuple[str, str | None]:
    """(the branch's head, an import error or None) after fetching the task's bundle, whose
    head must be expected (the head the task reported) when given."""
    if not bundle.is_file():
        return git_manager.branch_head(ws), "the container's result bundle is missing"
    try:
        head = git_manager.import_bundle(ws, bundle, expected=expected)
    except GitError as exc:
        return git_manager.branch_head(ws), f"{exc}; the agent's commits are kept in {bundle}"
    bundle.unlink()
    return head, None


def parse_network(record: dict[str, Any] | None) -> tuple[tuple[Blocked, ...], Meter | None]:
    """The blocked destinations and the meter of what held the task's network outside it (a
    network companion's record), for a task that died without its result line; none when
    there is no record or it cannot be read."""
    if record is None:
        return (), None
    try:
        return parse_blocked(record.get("blocked")), parse_meter(record.get("meter"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return (), None


def parse_inside(text: str | None) -> tuple[Inside | None, str | None]:
    """The task's result line, parsed; (None, a problem) when it is not what a task writes."""
    if text is None:
        return None, None
    try:
        data = json.loads(text)
        warnings = data.get("warnings") or []
        inside = Inside(
            phase=str(data["phase"]),
            # the commands' own output quoted in it: colours out, not escaped (output_text)
            error=clean_message(str(data["error"])) if data.get("error") else None,
            head=str(data["head"]) if data.get("head") else None,
            bundle=bool(data.get("bundle")),
            stopped=str(data["stopped"]) if data.get("stopped") else None,
            warnings=tuple(str(w) for w in warnings if w),
            check=_cleaned(parse_check(data.get("check"))),
            blocked=parse_blocked(data.get("blocked")),
            meter=parse_meter(data.get("meter")),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"the container's result cannot be read ({type(exc).__name__})"
    return inside, None


def _cleaned(check: CheckOutcome | None) -> CheckOutcome | None:
    """The check's last lines as a terminal showed them: colours and redraws resolved."""
    if check is None:
        return None
    return replace(check, output_tail=tuple(clean_line(line) for line in check.output_tail))
