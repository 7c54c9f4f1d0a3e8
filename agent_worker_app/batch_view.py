"""What a batch shows: one live line per running task (rich on a terminal; lines prefixed with
`[n/N branch]` when stderr is not one, or with NO_COLOR or TERM=dumb), then a summary table
with totals, or JSON. Task text, branch and project names are data: escaped, never markup.
rich is imported only where a terminal is drawn on (console.py says why)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agent_worker_app.console import Env, Redactor, escape_text, quote_name
from agent_worker_app.output_text import OUTPUT_MARK
from agent_worker_app.report import (
    SCHEMA_VERSION,
    STATUS_STYLE,
    attempt_mark,
    cost_cell,
    format_duration,
    json_text,
    tokens_cell,
)
from agent_worker_app.totals import Totals

if TYPE_CHECKING:
    from agent_worker_app.agents.base_agent import ProgressEvent
    from agent_worker_app.report import RunReport

MAX_SHOWN = 100  # characters of a task's live line


@dataclass(frozen=True)
class Entry:
    """One run of a batch, as its summary shows it: its report and what it was asked to do."""

    number: int
    project: Path
    task: str
    planned_branch: str  # the branch it was to get (a run not started has none)
    report: RunReport


# ---------------------------------------------------------------- live progress


class BatchView:
    """The batch's progress on stderr. Every method may be called from any task's thread."""

    def __init__(self, env: Env, redactor: Redactor, total: int) -> None:
        self._env = env
        self._redact = redactor.text
        self._total = total
        self._lock = threading.Lock()
        self._running: dict[int, _Line] = {}
        self._live: Any = None
        self._console: Any = None
        if env.rich_stderr:
            from rich.console import Console

            self._console = Console(file=env.stderr, highlight=False)

    @property
    def plain(self) -> bool:
        return self._console is None

    def shown(self, text: str) -> str:
        return escape_text(self._redact(text))

    def task(self, number: int, branch: str) -> TaskProgress:
        """The progress of one run (pipeline.run_task's ProgressSink)."""
        return TaskProgress(self, number, f"[{number}/{self._total} {escape_text(branch)}]")

    def start(self, number: int, prefix: str) -> None:
        with self._lock:
            self._running[number] = _Line(prefix, time.monotonic())
            if self._console is not None and self._live is None:
                from rich.live import Live

                self._live = Live(
                    _Lines(self), console=self._console, refresh_per_second=4, transient=True
                )
                self._live.start()

    def update(self, number: int, text: str) -> None:
        with self._lock:
            line = self._running.get(number)
            if line is not None:
                line.text = text

    def finish(self, number: int) -> None:
        with self._lock:
            self._running.pop(number, None)

    def lines(self) -> list[tuple[str, str, float]]:
        with self._lock:
            return [(line.prefix, line.text, line.since) for line in self._running.values()]

    def print(self, text: str, *, style: str = "") -> None:
        """A line above the live lines (or, plain, a line of its own); text is shown as is."""
        if self._console is None:
            with self._lock:
                self._env.stderr.write(text + "\n")
                self._env.stderr.flush()
            return
        from rich.text import Text

        self._console.print(Text(text, style=style))  # rich's console has its own lock

    def phase(self, text: str) -> None:
        """A step of the batch as a whole (preparing images, ...)."""
        self.print(f"agent-worker: {self.shown(text)}", style="bold")

    def note(self, text: str) -> None:
        self.print(f"agent-worker: {self.shown(text)}", style="green")

    def warn(self, text: str) -> None:
        self.print(f"agent-worker: warning: {self.shown(text)}", style="yellow")

    def build_line(self, text: str) -> None:
        if not text.startswith(OUTPUT_MARK):  # the commands' output: in the build log only
            self.print(f"  {self.shown(text)}", style="dim")

    def event(self, event: ProgressEvent) -> None:
        self.print(f"  {self.shown(event.text)}", style="dim")

    def line(self, text: str, *, style: str = "") -> None:
        self.print(f"  {self.shown(text)}", style=style)

    def done(self, entry: Entry) -> None:
        """A run ended: its one line."""
        report = entry.report
        branch = escape_text(report.branch or entry.planned_branch)
        what = f"{report.status} (exit {report.exit_code})"
        if report.status != "skipped":
            what += f" in {format_duration(report.duration_s)}"
        if report.error:
            what += f": {escape_text(report.error)}"
        self.print(
            f"[{entry.number}/{self._total} {branch}] {what}",
            style=STATUS_STYLE.get(report.status, ""),
        )

    def close(self) -> None:
        with self._lock:
            live, self._live = self._live, None
        if live is not None:
            live.stop()


@dataclass
class _Line:
    prefix: str
    since: float
    text: str = "starting"


class _Lines:
    """The live lines of the running tasks (re-rendered as they change)."""

    def __init__(self, view: BatchView) -> None:
        self._view = view

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        now = time.monotonic()
        return Group(
            *(
                Text.assemble(
                    (prefix, "bold"), " ", text[:MAX_SHOWN], (f"  {now - since:.0f}s", "dim")
                )
                for prefix, text, since in self._view.lines()
            )
        )


class TaskProgress:
    """One run's progress in a batch: its live line on a terminal; prefixed lines otherwise."""

    def __init__(self, view: BatchView, number: int, prefix: str) -> None:
        self._view = view
        self._number = number
        self.prefix = prefix
        self._plain = view.plain
        view.start(number, prefix)

    def _say(self, text: str, style: str = "") -> None:
        self._view.print(f"{self.prefix} {text}", style=style)

    def phase(self, text: str) -> None:
        shown = self._view.shown(text)
        self._view.update(self._number, shown)
        if self._plain:
            self._say(shown)

    def line(self, text: str, *, style: str = "") -> None:
        shown = self._view.shown(text)
        if self._plain:
            self._say(f"  {shown}")
        else:
            self._view.update(self._number, shown)

    def build_line(self, text: str) -> None:
        if not (self._plain and text.startswith(OUTPUT_MARK)):  # plain: no command output
            self.line(text.strip())

    def event(self, event: ProgressEvent) -> None:
        self.line(event.text)

    def note(self, text: str) -> None:
        self._say(self._view.shown(text), "green")

    def warn(self, text: str) -> None:
        self._say(f"warning: {self._view.shown(text)}", "yellow")

    def close(self) -> None:
        self._view.finish(self._number)


# ---------------------------------------------------------------- the summary


HEADERS = ("#", "branch", "project", "status", "duration", "tokens", "cost", "+/-", "files")
NODE = "node"  # a column of its own when tasks ran on several machines (Backend.node)


def headers(entries: Sequence[Entry]) -> tuple[str, ...]:
    return (*HEADERS, NODE) if any(e.report.node for e in entries) else HEADERS


def summary_rows(entries: Sequence[Entry], totals: Totals) -> list[tuple[str, ...]]:
    """The summary's cells, every one safe to print; the last row holds the totals."""
    rows: list[tuple[str, ...]] = []
    nodes = NODE in headers(entries)
    for entry in entries:
        r = entry.report
        skipped = not r.run_id  # never started: no figures
        rows.append(
            (
                str(entry.number),
                escape_text(r.branch or f"({entry.planned_branch})"),
                quote_name(entry.project.name or str(entry.project)),
                r.status + attempt_mark(r),
                "-" if skipped else format_duration(r.duration_s),
                "-" if skipped else tokens_cell(r),
                "-" if skipped else cost_cell(r),
                f"+{r.lines_added} -{r.lines_removed}",
                str(len(r.files)),
                *((quote_name(r.node) if r.node else "-",) if nodes else ()),
            )
        )
    tokens = "-" if totals.tokens_total is None else f"{totals.tokens_total:,}"
    cost = "-" if totals.cost_usd is None else f"${totals.cost_usd:.4f}"
    rows.append(
        (
            "",
            "total",
            "",
            f"{totals.succeeded}/{totals.tasks} succeeded",
            format_duration(totals.duration_s),
            tokens,
            cost,
            f"+{totals.lines_added} -{totals.lines_removed}",
            str(totals.files_changed),
            *(("",) if nodes else ()),
        )
    )
    return rows


def render_summary_text(entries: Sequence[Entry], totals: Totals) -> str:
    """The summary as plain aligned columns (a pipe, a CI log, a file)."""
    rows = [headers(entries), *summary_rows(entries, totals)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"AGENT BATCH REPORT (exit {totals.exit_code})"]
    for n, row in enumerate(rows):
        if n == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def render_summary_rich(
    entries: Sequence[Entry], totals: Totals, stream: IO[str], *, width: int | None = None
) -> None:
    """The summary as a table for a terminal."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"AGENT BATCH REPORT (exit {totals.exit_code})"), title_justify="left")
    for header in headers(entries):
        names = header in ("branch", "project")  # folded, never cut: they are what to look up
        table.add_column(
            header,
            justify="right" if header in ("#", "files") else "left",
            overflow="fold" if names else "ellipsis",
            no_wrap=not names,
        )
    rows = summary_rows(entries, totals)
    for entry, row in zip(entries, rows, strict=False):
        style = STATUS_STYLE.get(entry.report.status, "")
        table.add_row(*(Text(cell) for cell in row), style=style)
    table.add_section()
    table.add_row(*(Text(cell) for cell in rows[-1]), style="bold")
    Console(file=stream, force_terminal=True, width=width).print(table)


def render_batch_json(entries: Sequence[Entry], totals: Totals) -> str:
    """{"runs": [each run's report, with its project and task], "totals": {...}} (--json)."""
    runs = []
    for entry in entries:
        data = entry.report.to_json()
        data["project"] = str(entry.project)
        data["task"] = entry.task
        runs.append(data)
    payload = {"schema_version": SCHEMA_VERSION, "runs": runs, "totals": totals.to_json()}
    return json_text(payload)
