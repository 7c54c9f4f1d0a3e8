"""What a CI job step gets besides the report: GitHub Actions step outputs (GITHUB_OUTPUT), the
job summary (GITHUB_STEP_SUMMARY) and an error annotation on failure.

Every function takes a list of reports (one run, or a batch of several tasks) and their
Totals. Names, messages and paths are data, whatever they hold: a step output with a line
break uses GitHub's heredoc form with a random delimiter that the value does not contain, the
summary's Markdown shows names with every punctuation character escaped (no link, HTML,
mention or table cell can be forged), and an annotation escapes %, CR and LF as workflow
commands require.

With one report the outputs are that run's; with several, they are the batch's totals (see
step_outputs) plus `reports`, a JSON list with each run's own.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from agent_worker_app.console import escape_text
from agent_worker_app.report import (
    RunReport,
    attempt_mark,
    cost_cell,
    format_duration,
    tokens_cell,
)
from agent_worker_app.totals import Totals

SUMMARY_FILE_LIMIT = 50  # file rows in a one-run summary; GitHub caps a step's summary at 1 MiB
OUTPUT_KEYS = (
    "branch",
    "status",
    "exit_code",
    "cost_usd",
    "tokens_total",
    "lines_added",
    "lines_removed",
    "files_changed",
    "report_file",
    "pull_request",
)


# ---------------------------------------------------------------- the job step, as a whole

VARIABLES = ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ACTIONS")


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment is a CI job that asks for any of it."""
    return any(environ.get(name) for name in VARIABLES)


def emit(
    reports: Sequence[RunReport],
    totals: Totals,
    *,
    environ: Mapping[str, str],
    stderr: IO[str],
    report_file: Path | None = None,
) -> list[str]:
    """Everything the CI environment asks for: step outputs where GITHUB_OUTPUT is set, the
    summary where GITHUB_STEP_SUMMARY is, an ::error:: line on stderr under GitHub Actions when
    the run failed. report_file is --report-file, if given. Returns warnings (a file that
    cannot be written never changes the run's exit code)."""
    warnings = []
    if path := environ.get("GITHUB_OUTPUT"):
        try:
            append(Path(path), format_outputs(step_outputs(reports, totals, report_file)))
        except OSError as exc:
            warnings.append(f"cannot write GITHUB_OUTPUT: {exc}")
    if path := environ.get("GITHUB_STEP_SUMMARY"):
        try:
            append(Path(path), summary(reports, totals))
        except OSError as exc:
            warnings.append(f"cannot write GITHUB_STEP_SUMMARY: {exc}")
    if environ.get("GITHUB_ACTIONS") == "true" and totals.exit_code != 0:
        # the runner reads workflow commands on stderr as on stdout; stdout may be --json
        stderr.write(error_annotation(reports, totals))
        stderr.flush()
    return warnings


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8", errors="surrogateescape") as out:
        out.write(text)


# ---------------------------------------------------------------- GITHUB_OUTPUT


def _number(value: float | None) -> str:
    """A cost as plain decimal digits ('' when unknown): no exponent, no float noise."""
    if value is None:
        return ""
    return format(round(value, 6), "f").rstrip("0").rstrip(".") or "0"


def _report_path(report: RunReport) -> str:
    return str(Path(report.run_dir) / "report.json") if report.run_dir else ""


def _own_outputs(report: RunReport, report_file: Path | None) -> dict[str, str]:
    tokens = report.tokens.total if report.metered else None
    return {
        "branch": report.branch or "",
        "status": report.status,
        "exit_code": str(report.exit_code),
        "cost_usd": _number(report.cost_usd),
        "tokens_total": "" if tokens is None else str(tokens),
        "lines_added": str(report.lines_added),
        "lines_removed": str(report.lines_removed),
        "files_changed": str(len(report.files)),
        "report_file": str(report_file) if report_file else _report_path(report),
        "pull_request": pull_request_url(report),
    }


def step_outputs(
    reports: Sequence[RunReport], totals: Totals, report_file: Path | None = None
) -> dict[str, str]:
    """The step's outputs. One report: its own figures. Several: `status` is success only if
    every run succeeded (else failed), `exit_code` the batch's, the numbers are sums, `branch`
    and `report_file` list each run's, one a line (report_file: --report-file when given, which
    holds them all). Always `reports`: a JSON list of each run's own outputs."""
    each = [_own_outputs(r, None) for r in reports]
    if len(reports) == 1:
        outputs = _own_outputs(reports[0], report_file)
    else:
        outputs = {
            "branch": "\n".join(o["branch"] for o in each if o["branch"]),
            "status": totals.status,
            "exit_code": str(totals.exit_code),
            "cost_usd": _number(totals.cost_usd),
            "tokens_total": "" if totals.tokens_total is None else str(totals.tokens_total),
            "lines_added": str(totals.lines_added),
            "lines_removed": str(totals.lines_removed),
            "files_changed": str(totals.files_changed),
            "report_file": str(report_file)
            if report_file
            else "\n".join(o["report_file"] for o in each if o["report_file"]),
            "pull_request": "\n".join(o["pull_request"] for o in each if o["pull_request"]),
        }
    outputs["reports"] = json.dumps(each, ensure_ascii=True)
    return outputs


def format_outputs(outputs: Mapping[str, str]) -> str:
    """GitHub's GITHUB_OUTPUT file format: name=value, or, for a value with a line break,
    name<<DELIMITER / the value / DELIMITER with a random delimiter the value does not hold."""
    lines = []
    for name, value in outputs.items():
        if "\n" not in value and "\r" not in value:
            lines.append(f"{name}={value}\n")
            continue
        delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        while delimiter in value:  # never, in practice; but a value is data
            delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        lines.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    return "".join(lines)


# ---------------------------------------------------------------- GITHUB_STEP_SUMMARY

_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MD_PUNCTUATION = frozenset(string.punctuation) - set(_MD_ENTITIES)


def markdown_text(text: str) -> str:
    """Text shown literally in GitHub Markdown, in a table cell too: control characters as C
    escapes, each ASCII punctuation character backslash-escaped (no emphasis, link, mention,
    code span or cell break), &, < and > as entities (no HTML)."""
    out = []
    for char in escape_text(text):
        if char in _MD_ENTITIES:
            out.append(_MD_ENTITIES[char])
        elif char in _MD_PUNCTUATION:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _changes(added: int, removed: int, files: int) -> str:
    return f"+{added} \u2212{removed} in {files} file{'s' if files != 1 else ''}"


def _status(status: str, code: int) -> str:
    mark = "\u2705" if status == "success" else "\u274c"
    return f"{mark} {markdown_text(status)} (exit {code})"


def summary(reports: Sequence[RunReport], totals: Totals) -> str:
    """The job summary's Markdown: one run's report, or a table of several and their totals."""
    if len(reports) == 1:
        return _one_summary(reports[0])
    lines = [
        f"### agent-worker: {totals.succeeded} of {totals.tasks} tasks succeeded",
        "",
        "| branch | project | status | duration | tokens | cost | changes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(
            f"| {markdown_text(r.branch or '-')} | {markdown_text(project_name(r))} "
            f"| {_status(r.status, r.exit_code)}{attempt_mark(r)} "
            f"| {format_duration(r.duration_s)} | {tokens_cell(r)} | {cost_cell(r)} "
            f"| {_changes(r.lines_added, r.lines_removed, len(r.files))} |"
        )
    tokens = "n/a" if totals.tokens_total is None else f"{totals.tokens_total:,}"
    cost = "n/a" if totals.cost_usd is None else f"${totals.cost_usd:.4f}"
    changes = _changes(totals.lines_added, totals.lines_removed, totals.files_changed)
    lines.append(
        f"| **total** | | exit {totals.exit_code} | {format_duration(totals.duration_s)} "
        f"| {tokens} | {cost} | {changes} |"
    )
    return "\n".join(lines) + "\n\n"


def project_name(report: RunReport) -> str:
    """The repository a run worked on, by its folder's name, from the run directory
    (<repository>/.git/agent-worker/runs/<run-id>; a git directory elsewhere is named itself)."""
    if not report.run_dir:
        return "-"
    git_dir = Path(report.run_dir).parents[2]
    return git_dir.parent.name if git_dir.name == ".git" else git_dir.name


def pull_request_url(report: RunReport) -> str:
    """The run's pull request's page ('' when none was opened)."""
    return report.pull_request.url or "" if report.pull_request is not None else ""


def _check_cell(r: RunReport) -> str | None:
    if r.check is None:
        return None
    command = markdown_text(r.check.command)
    if not r.check.ran:
        return f"not run: {command}"
    if r.check.passed:
        return f"\u2705 passed: {command}"
    state = f"stopped ({markdown_text(r.check.stopped)})" if r.check.stopped else "failed"
    code = "" if r.check.exit_code is None else f" (exit {r.check.exit_code})"
    return f"\u274c {state}{code}: {command}"


def _blocked_cell(r: RunReport, limit: int = 10) -> str | None:
    if not r.blocked:
        return None
    shown = []
    for entry in r.blocked[:limit]:
        what = entry.allow if entry.protocol == "dns" else f"{entry.address}:{entry.port}"
        names = f" ({', '.join(entry.names)})" if entry.names and entry.protocol != "dns" else ""
        shown.append(markdown_text(f"{what}{names} \u00d7{entry.count}"))
    more = f"; and {len(r.blocked) - limit} more" if len(r.blocked) > limit else ""
    return f"{len(r.blocked)} refused: " + "; ".join(shown) + more


def _one_rows(r: RunReport) -> list[tuple[str, str]]:
    """The rows of one run's summary: what a reviewer needs to judge the branch."""
    rows = [
        ("Branch", markdown_text(r.branch or "-")),
        ("Status", _status(r.status, r.exit_code)),
        ("Duration", format_duration(r.duration_s)),
        ("Tokens", tokens_cell(r)),
        ("Cost", cost_cell(r)),
        ("Turns", "n/a" if not r.metered else ("?" if r.turns is None else str(r.turns))),
        ("Changes", _changes(r.lines_added, r.lines_removed, len(r.files))),
    ]
    rows += [("Check", cell)] if (cell := _check_cell(r)) else []
    rows += [("Blocked", cell)] if (cell := _blocked_cell(r)) else []
    rows += [("Pull request", markdown_text(url))] if (url := pull_request_url(r)) else []
    rows += [("Run", markdown_text(r.run_id))] if r.run_id else []
    rows += [("Error", markdown_text(r.error))] if r.error else []
    rows += [("Warning", markdown_text(w)) for w in r.warnings]
    return rows


def _one_summary(r: RunReport) -> str:
    lines = [f"### agent-worker: {markdown_text(r.status)}", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {text} |" for label, text in _one_rows(r)]
    if r.files:
        lines += ["", "| file | status | added | removed |", "|---|---|---|---|"]
        for f in r.files[:SUMMARY_FILE_LIMIT]:
            name = markdown_text(f.path)
            if f.old_path is not None:
                name = f"{markdown_text(f.old_path)} \u2192 {name}"
            added = "binary" if f.binary else str(f.added)
            removed = "" if f.binary else str(f.removed)
            lines.append(f"| {name} | {f.status} | {added} | {removed} |")
        hidden = len(r.files) - SUMMARY_FILE_LIMIT
        if hidden > 0:
            lines += ["", f"... and {hidden} more files (every file: report.json)"]
    return "\n".join(lines) + "\n\n"


def pull_request_body(r: RunReport, *, others: Sequence[RunReport] = ()) -> str:
    """A pull request's body: the run's summary as the job summary renders it (every name and
    message escaped), then the other attempts at the same task, if any."""
    text = _one_summary(r)
    if others:
        text += "Other attempts at the same task:\n\n" + "".join(
            f"- {markdown_text(o.branch or o.run_id or '-')}: {_status(o.status, o.exit_code)}, "
            f"{_changes(o.lines_added, o.lines_removed, len(o.files))}, {cost_cell(o)}\n"
            for o in others
        )
    return text + "\n<sub>Opened by agent-worker.</sub>\n"


def one_line(r: RunReport) -> str:
    """The summary on one line (a GitLab push option cannot hold a line break), escaped."""
    parts = [
        f"agent-worker run {markdown_text(r.run_id)}: {_status(r.status, r.exit_code)}",
        f"changes {_changes(r.lines_added, r.lines_removed, len(r.files))}",
        f"tokens {tokens_cell(r)}",
        f"cost {cost_cell(r)}",
        f"duration {format_duration(r.duration_s)}",
    ]
    parts += [f"check {cell}"] if (cell := _check_cell(r)) else []
    parts += [f"blocked {cell}"] if (cell := _blocked_cell(r, limit=3)) else []
    parts += [f"error {markdown_text(r.error)}"] if r.error else []
    return " \u00b7 ".join(parts)


# ---------------------------------------------------------------- the annotation


def command_escape(text: str) -> str:
    """A workflow command's message: %, CR and LF escaped as the runner reads them back (so a
    message stays one command), then any other control character as a C escape."""
    return escape_text(text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def error_annotation(reports: Sequence[RunReport], totals: Totals) -> str:
    """One `::error::` line naming each failed run and why."""
    failed = [r for r in reports if r.exit_code != 0]
    parts = [
        f"{r.branch or r.run_id}: {r.status} (exit {r.exit_code})"
        + (f": {r.error}" if r.error else "")
        for r in failed
    ]
    if len(reports) > 1:
        parts.insert(0, f"{totals.tasks - totals.succeeded} of {totals.tasks} tasks failed")
    message = "; ".join(parts) or f"exit {totals.exit_code}"
    return f"::error title=agent-worker::agent-worker: {command_escape(message)}\n"


def emit_error(
    code: int, message: str, *, environ: Mapping[str, str], stderr: IO[str]
) -> list[str]:
    """The same for a run refused or broken before it had a report (a bad option, no Docker):
    status `error`, its exit code, the message; the figures empty."""
    warnings = []
    if path := environ.get("GITHUB_OUTPUT"):
        outputs = dict.fromkeys(OUTPUT_KEYS, "") | {"status": "error", "exit_code": str(code)}
        try:
            append(Path(path), format_outputs(outputs | {"reports": "[]"}))
        except OSError as exc:
            warnings.append(f"cannot write GITHUB_OUTPUT: {exc}")
    if path := environ.get("GITHUB_STEP_SUMMARY"):
        text = f"### agent-worker: error (exit {code})\n\n{markdown_text(message)}\n\n"
        try:
            append(Path(path), text)
        except OSError as exc:
            warnings.append(f"cannot write GITHUB_STEP_SUMMARY: {exc}")
    if environ.get("GITHUB_ACTIONS") == "true":
        stderr.write(f"::error title=agent-worker::agent-worker: {command_escape(message)}\n")
        stderr.flush()
    return warnings
