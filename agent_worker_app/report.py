"""How a run ended (Outcome, and the status and exit code it gives), RunReport (plain data) and
its renderers: rich panel, plain text, versioned JSON.

Everything a report holds is data, never markup or terminal control: file names, branch, error
and warning text reach the rich panel as rich.text.Text (a str cell would be parsed as markup:
`app/[slug]/page.tsx` lost its `[slug]`, `docs/[/x].md` raised MarkupError), and both text
renderers show names quoted and messages escaped (console.quote_name, console.escape_text), so
no name can print a line of its own or send the terminal an escape sequence. The JSON report
keeps every value exactly as it is. rich is imported by render_rich only (console.py says why).
"""

from __future__ import annotations

import json
import re
import signal
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any

from agent_worker_app.console import escape_text, quote_name
from agent_worker_app.errors import (
    EXIT_AGENT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_PRECONDITION,
    EXIT_TIMEOUT,
    AgentWorkerError,
    Interrupted,
)
from agent_worker_app.forge import Opened
from agent_worker_app.sandbox_report import (
    BLOCKED_TERMINAL_LIMIT,
    Blocked,
    CheckOutcome,
    Meter,
    blocked_rows,
    check_rows,
    meter_rows,
)

if TYPE_CHECKING:
    from agent_worker_app.agents.base_agent import AgentResult
    from agent_worker_app.engines.base import ExitInfo

SCHEMA_VERSION = 1
# what render_json escapes beyond json's own C0 escapes (see there)
_JSON_UNSAFE = re.compile(
    "[\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)
TERMINAL_FILE_LIMIT = 20  # file lines the terminal panel shows; the rest are counted
STATUS_STYLE = {
    "success": "green",
    "failed": "red",
    "timeout": "yellow",
    "interrupted": "yellow",
    "error": "red",
}
_CODE = {
    "added": "A",
    "modified": "M",
    "deleted": "D",
    "renamed": "R",
    "copied": "C",
    "type-changed": "T",
}


@dataclass(frozen=True)
class FileChange:
    path: str
    status: str  # added, modified, deleted, renamed, copied, type-changed
    added: int | None  # None for a binary file
    removed: int | None
    old_path: str | None = None
    binary: bool = False


@dataclass
class Tokens:
    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_creation: int | None = None

    @classmethod
    def of(cls, result: AgentResult) -> Tokens:
        """The figures the agent reported."""
        return cls(
            result.input_tokens,
            result.output_tokens,
            result.cache_read_tokens,
            result.cache_creation_tokens,
        )

    @property
    def total(self) -> int | None:
        """Input plus output; the cache figures are shown on their own."""
        if self.input is None and self.output is None:
            return None
        return (self.input or 0) + (self.output or 0)


@dataclass
class AgentInfo:
    type: str
    version: str | None = None
    model: str | None = None
    session_id: str | None = None
    # the cost the agent reported for its session, over every run that resumed it (a run's own
    # cost is RunReport.cost_usd); where the agent reports per run, the same
    session_cost_usd: float | None = None

    @classmethod
    def of(
        cls, agent_type: str, result: AgentResult, version: str | None, session_cost: float | None
    ) -> AgentInfo:
        """What the agent said of itself, with its pinned version where it said none."""
        return cls(
            agent_type, result.version or version, result.model, result.session_id, session_cost
        )


@dataclass(frozen=True)
class BranchTotals:
    """A branch's figures summed over its runs (--continue: runs.branch_totals)."""

    runs: int
    duration_s: float
    tokens_total: int | None
    cost_usd: float | None


@dataclass(frozen=True)
class Attempt:
    """--attempts: which attempt a run was, whether it won, whether its branch is kept."""

    number: int
    of: int
    winner: bool
    kept: bool  # False: --keep winner deleted its branch (its run data stays)


@dataclass
class RunReport:
    run_id: str
    status: str  # success, failed, timeout, interrupted, error
    exit_code: int
    branch: str | None
    base_commit: str | None
    head_commit: str | None
    duration_s: float
    agent: AgentInfo
    tokens: Tokens = field(default_factory=Tokens)
    cost_usd: float | None = None
    turns: int | None = None
    files: list[FileChange] = field(default_factory=list)
    run_dir: str | None = None
    error: str | None = None
    firewall: bool = True
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    metered: bool = True  # False: the agent uses no tokens (the command agent): not applicable
    pushed_to: str | None = None  # --push: the remote the branch was pushed to
    check: CheckOutcome | None = None  # None: no check command was configured
    blocked: list[Blocked] = field(default_factory=list)
    meter: Meter | None = None  # what the credential gate counted (None: no gate)
    continued_from: str | None = None  # --continue: the run before this one on the branch
    branch_totals: BranchTotals | None = None  # --continue: the branch's runs, this one included
    node: str | None = None  # the machine the task ran on, where the backend has several
    runtime: str | None = None  # the engine runtime the task ran under (runc, runsc)
    pull_request: Opened | None = None  # --pr: the pull request opened or updated, if any
    attempt: Attempt | None = None  # --attempts: which one, and whether it won

    @property
    def lines_added(self) -> int:
        return sum(f.added or 0 for f in self.files)

    @property
    def lines_removed(self) -> int:
        return sum(f.removed or 0 for f in self.files)

    def to_json(self) -> dict[str, Any]:
        tokens = asdict(self.tokens) | {"total": self.tokens.total} if self.metered else None
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "branch": self.branch,
            "base_commit": self.base_commit,
            "head_commit": self.head_commit,
            "duration_s": round(self.duration_s, 3),
            "agent": asdict(self.agent),
            "tokens": tokens,
            "cost_usd": self.cost_usd,
            "metered": self.metered,
            "turns": self.turns,
            "changes": {
                "lines_added": self.lines_added,
                "lines_removed": self.lines_removed,
                "files_changed": len(self.files),
                "files": [asdict(f) for f in self.files],
            },
            "run_dir": self.run_dir,
            "pushed_to": self.pushed_to,
            "pull_request": self.pull_request.to_json() if self.pull_request else None,
            "attempt": asdict(self.attempt) if self.attempt else None,
            "continued_from": self.continued_from,
            "branch_totals": asdict(self.branch_totals) if self.branch_totals else None,
            "node": self.node,
            "runtime": self.runtime,
            "error": self.error,
            "firewall": self.firewall,
            "check": self.check.to_json() if self.check is not None else None,
            "blocked": [entry.to_json() for entry in self.blocked],
            "meter": self.meter.to_json() if self.meter is not None else None,
            "warnings": self.warnings,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


@dataclass(frozen=True)
class Outcome:
    """How the run ended, as seen from the host: the task's supervision, what its result
    channel said, the import of its commits, and the error that cut the run short, if any."""

    exit: ExitInfo | None = None
    timed_out: bool = False
    interrupted: bool = False
    over_cost: float | None = None  # stopped by --max-cost, having reported this cost
    started: bool = False  # the task started: the agent may have done work
    node: str | None = None  # the machine it ran on, where the engine has several
    runtime: str | None = None  # the engine runtime it ran under
    head: str | None = None
    import_error: str | None = None
    error: AgentWorkerError | None = None
    agent_tail: list[str] = field(default_factory=list)
    container_error: str | None = None  # why the task could not start the agent, as it said
    warnings: list[str] = field(default_factory=list)
    check: CheckOutcome | None = None  # None: no check configured
    blocked: list[Blocked] = field(default_factory=list)
    meter: Meter | None = None

    @property
    def agent_started(self) -> bool:
        """The agent itself was started (the task set its workspace up): it may have done
        work, so the run's branch stays."""
        return self.started and self.container_error is None


def describe_exit(status: int) -> str:
    """'exit status 1', or 'killed by SIGABRT' for a shell's 128+N."""
    if status > 128:
        with suppress(ValueError):
            return f"killed by {signal.Signals(status - 128).name}"
    return f"exit status {status}"


def check_failure(check: CheckOutcome) -> str:
    """Why a run whose agent succeeded failed its check, for the report's error line."""
    if not check.ran:
        why = f" ({check.output_tail[-1]})" if check.output_tail else ""
        return f"the check {check.command!r} did not run{why}; the branch is kept"
    if check.stopped:
        what = f"was stopped ({check.stopped})"
    else:
        what = f"failed ({describe_exit(check.exit_code or 0)})"
    tail = [line for line in check.output_tail if line.strip()][-3:]
    said = f"; its last output: {' | '.join(tail)}" if tail else ""
    return f"the check {check.command!r} {what}{said}; the agent's work is kept on the branch"


def decide_status(
    outcome: Outcome,
    result: AgentResult | None,
    *,
    timeout_s: float,
    memory: str,
    max_cost: float | None = None,
) -> tuple[str, int, str | None, list[str]]:
    """(status, exit code, error message, warnings) from everything known about a run."""

    exit_info, warnings = outcome.exit, []
    oom = exit_info is not None and exit_info.oom_killed
    status, code, message = _ending(
        outcome, result, timeout_s=timeout_s, memory=memory, max_cost=max_cost
    )
    check = outcome.check
    check_failed = status == "success" and check is not None and not check.passed
    if check_failed and check is not None:  # the agent did its part; the work is not right
        status, code, message = "failed", EXIT_AGENT_FAILED, check_failure(check)
    if oom and status == "success":
        warnings.append(
            f"a process in the container ran out of memory (--memory {memory}) and was killed"
        )
    if outcome.import_error:
        warnings.append(outcome.import_error)
        if status == "success":
            status, code, message = "failed", EXIT_AGENT_FAILED, outcome.import_error
    if status in ("failed", "timeout") and outcome.agent_tail and not check_failed:
        message = f"{message}; the agent's last output: {' | '.join(outcome.agent_tail[-3:])}"
    return status, code, message, warnings


def _ending(
    outcome: Outcome,
    result: AgentResult | None,
    *,
    timeout_s: float,
    memory: str,
    max_cost: float | None,
) -> tuple[str, int, str | None]:
    """(status, exit code, message) of how the task itself ended, the check aside."""
    exit_info = outcome.exit
    oom = exit_info is not None and exit_info.oom_killed
    status, code, message = "success", 0, None
    if outcome.error is not None:
        status = "interrupted" if isinstance(outcome.error, Interrupted) else "error"
        code, message = outcome.error.exit_code, str(outcome.error)
    elif outcome.interrupted:
        status, code, message = "interrupted", EXIT_INTERRUPTED, "interrupted by a signal"
    elif outcome.timed_out or outcome.over_cost is not None:
        status, code, message = _stopped(outcome, timeout_s, max_cost)
    elif exit_info is not None and exit_info.stopped:  # its disk passed --disk
        status, code, message = "failed", EXIT_AGENT_FAILED, exit_info.stopped
    elif exit_info is not None and exit_info.status_code != 0 and oom:
        status, code = "failed", EXIT_AGENT_FAILED
        message = f"the agent ran out of memory (--memory {memory}) and was killed"
    elif outcome.container_error is not None:  # the container could not even run the agent
        status, code, message = "error", EXIT_PRECONDITION, outcome.container_error
        if outcome.runtime not in (None, "runc") and "firewall" in message:
            message += (
                f" (under the runtime {outcome.runtime}, whose network the firewall inside the "
                "container does not act on: no run rather than an unfiltered one; "
                "--no-firewall runs it without egress control)"
            )
    elif exit_info is not None and exit_info.status_code < 0 and exit_info.error:
        # the engine lost the task (its machine went down): no verdict of the agent's came back
        status, code = "failed", EXIT_AGENT_FAILED
        message = f"the agent's task was lost: {exit_info.error}"
    elif result is not None and (result.is_error or not result.found):
        status, code = "failed", EXIT_AGENT_FAILED
        message = result.error or "the agent reported an error"
        if exit_info is not None and exit_info.status_code != 0:
            message += f" ({describe_exit(exit_info.status_code)})"
    elif exit_info is not None and exit_info.status_code != 0:
        status, code = "failed", EXIT_AGENT_FAILED
        message = f"the agent failed ({describe_exit(exit_info.status_code)})"
    return status, code, message


def _stopped(outcome: Outcome, timeout_s: float, max_cost: float | None) -> tuple[str, int, str]:
    """A task the run stopped itself: at its timeout, or past --max-cost."""
    if outcome.timed_out:
        message = f"the agent did not finish within {timeout_s:g}s (--timeout)"
        return "timeout", EXIT_TIMEOUT, message
    limit = f" ${max_cost:g}" if max_cost is not None else ""
    return (
        "failed",
        EXIT_AGENT_FAILED,
        f"the agent's cost ${outcome.over_cost or 0:.4f} passed --max-cost{limit}: stopped",
    )


def format_duration(seconds: float) -> str:
    """5m 23.4s; rounded to tenths first, so 119.97 s is 2m 0.0s, not 1m 60.0s."""
    tenths = round(seconds * 10)
    minutes, tenth_secs = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    secs = tenth_secs / 10
    if hours:
        return f"{hours}h {minutes}m {secs:.1f}s"
    return f"{minutes}m {secs:.1f}s" if minutes else f"{secs:.1f}s"


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _file_name(change: FileChange) -> str:
    name = quote_name(change.path)
    return name if change.old_path is None else f"{quote_name(change.old_path)} -> {name}"


def _file_line(change: FileChange, name: str, width: int) -> str:
    if change.binary:
        counts = "binary"
    else:
        counts = " ".join(
            part
            for part in (
                f"+{change.added}" if change.added else "",
                f"\u2212{change.removed}" if change.removed else "",
            )
            if part
        )
    return f"  {_CODE.get(change.status, '?')} {name:<{width}}  {counts}".rstrip()


def place_rows(report: RunReport) -> list[tuple[str, str]]:
    """Where the work went (the remote it was pushed to) and where it ran (Backend.node)."""
    rows = []
    if report.pushed_to is not None:
        rows.append(("Pushed", f"to {quote_name(report.pushed_to)}"))
    if report.pull_request is not None:
        opened = report.pull_request
        where = opened.url or opened.compare_url or ""
        what = {"compare": "open it at", "requested": "asked of GitLab, into"}.get(
            opened.action, opened.action
        )
        into = f" (into {quote_name(opened.base)})" if opened.action != "requested" else ""
        text = f"{what} {quote_name(where)}{into}" if where else f"{what} {quote_name(opened.base)}"
        rows.append(("PR", text))
    if report.node is not None:
        rows.append(("Node", f"ran on node {quote_name(report.node)}"))
    if report.runtime is not None and report.runtime != "runc":  # runc: Docker's own default
        rows.append(("Runtime", f"ran under {quote_name(report.runtime)}"))
    return rows


def report_rows(report: RunReport, *, file_limit: int | None = None) -> list[tuple[str, str]]:
    """(label, text) rows shared by the plain and the rich renderer; '' labels continue a row.

    Every text is safe to print: names quoted, messages escaped, one row per line. With
    file_limit, a longer file list is cut to that many lines and a count of the rest (a list
    only one longer is shown whole: its last line costs no more than the count).
    """
    status = f"{report.status} (exit {report.exit_code})"
    turns = "?" if report.turns is None else str(report.turns)
    turns = turns if report.metered else "n/a"
    branch = escape_text(report.branch or "-")
    rows = [
        ("Branch", f"{branch:<30} Status   {status}"),
        ("Duration", f"{format_duration(report.duration_s):<30} Turns    {turns}"),
    ]
    t = report.tokens
    if not report.metered:
        rows.append(("Tokens", "n/a (this agent uses no model)"))
        rows.append(("Cost", "n/a"))
    else:
        rows.append(
            (
                "Tokens",
                f"{_n(t.total)} total \u00b7 {_n(t.input)} in \u00b7 {_n(t.output)} out"
                f" \u00b7 {_n(t.cache_read)} cache read \u00b7 {_n(t.cache_creation)}"
                " cache write",
            )
        )
        rows.append(("Cost", "?" if report.cost_usd is None else f"${report.cost_usd:.4f}"))
        rows.extend(meter_rows(report.meter))
    if report.files:
        rows.append(
            (
                "Changes",
                f"+{report.lines_added} \u2212{report.lines_removed} in "
                f"{len(report.files)} file{'s' if len(report.files) != 1 else ''}",
            )
        )
        shown = report.files
        if file_limit is not None and len(shown) > file_limit + 1:
            shown = shown[:file_limit]
        names = [_file_name(f) for f in shown]
        width = min(48, max(len(name) for name in names))
        rows.extend(("", _file_line(f, name, width)) for f, name in zip(shown, names, strict=True))
        if hidden := len(report.files) - len(shown):
            rows.append(("", f"  ... and {hidden} more (every file: --json, or report.json)"))
    elif report.head_commit is not None:
        rows.append(("Changes", "no changes"))
    if report.branch_totals is not None:
        b = report.branch_totals
        figures = [f"{b.runs} runs", format_duration(b.duration_s)]
        if report.metered or b.tokens_total is not None:
            figures.append(f"{_n(b.tokens_total)} tokens")
            figures.append("?" if b.cost_usd is None else f"${b.cost_usd:.4f}")
        joined = " \u00b7 ".join(figures)
        rows.append(("All runs", f"{joined} on this branch (after run {report.continued_from})"))
    rows.extend(place_rows(report))
    rows.extend(check_rows(report.check))
    if not report.firewall:
        rows.append(("Firewall", "off (--no-firewall): the agent could reach any address"))
    limit = BLOCKED_TERMINAL_LIMIT if file_limit is not None else None
    rows.extend(blocked_rows(report.blocked, limit=limit))
    rows.extend(("Warning", escape_text(w)) for w in report.warnings)
    if report.error:
        rows.append(("Error", escape_text(report.error)))
    if report.run_dir:
        rows.append(("Run data", quote_name(report.run_dir)))
    return rows


def render_text(report: RunReport) -> str:
    """The plain report, for a stdout that is not a terminal (a CI log, a pipe, a file).

    It lists every file, uncut: there the report is a record read later, by search or by a
    script, where a missing name is a loss and a long list costs nothing (the terminal panel is
    read by eye and cut at TERMINAL_FILE_LIMIT). It is escaped like the panel all the same: CI
    logs render ANSI escapes, and a row must stay one line however a name is spelled.
    """
    lines = ["AGENT EXECUTION REPORT"]
    for label, text in report_rows(report):
        lines.append(f"{label:<10} {text}" if label else text)
    return "\n".join(lines) + "\n"


def render_rich(report: RunReport, stream: IO[str], *, width: int | None = None) -> None:
    """The panel for a terminal; the file list is cut at TERMINAL_FILE_LIMIT lines."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    for label, text in report_rows(report, file_limit=TERMINAL_FILE_LIMIT):
        # Text, never str: rich reads a str cell as markup, and a name is not markup
        table.add_row(Text(label), Text(text), style="red" if label == "Error" else "")
    Console(file=stream, force_terminal=True, width=width).print(
        Panel(
            table,
            title=Text("AGENT EXECUTION REPORT"),
            title_align="left",
            border_style=STATUS_STYLE.get(report.status, "white"),
        )
    )


def render_json(report: RunReport) -> str:
    """Every value exactly as it is, in readable UTF-8, safe to print on a terminal (--json).

    json escapes the C0 controls itself; DEL, the C1 controls, line separators, bidi controls
    and lone surrogates (the bytes of a name that is not UTF-8, as git's reader keeps them) are
    written as \\uXXXX escapes too, which any JSON reader turns back into the same string.
    """
    return json_text(report.to_json())


def json_text(payload: dict[str, Any]) -> str:
    """payload as readable, indented JSON with render_json's escapes."""
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def attempt_mark(report: RunReport) -> str:
    """--attempts: " (winner)", " (deleted)" after a status; else nothing."""
    if report.attempt is None:
        return ""
    if report.attempt.winner:
        return " (winner)"
    return "" if report.attempt.kept or report.branch is None else " (deleted)"


def tokens_cell(report: RunReport) -> str:
    """A run's token total for a table: n/a for an agent with no model, ? when not reported."""
    if not report.metered:
        return "n/a"
    return "?" if report.tokens.total is None else f"{report.tokens.total:,}"


def cost_cell(report: RunReport) -> str:
    """A run's cost for a table: n/a for an agent with no model, ? when not reported."""
    if not report.metered:
        return "n/a"
    return "?" if report.cost_usd is None else f"${report.cost_usd:.4f}"
