"""report.py: the JSON envelope, the plain text report and the rich panel say the same things."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest

from report import (
    SCHEMA_VERSION,
    AgentInfo,
    FileChange,
    RunReport,
    Tokens,
    format_duration,
    render_json,
    render_rich,
    render_text,
)

MINUS = "\u2212"
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")

FILES = [
    FileChange("src/app.py", "modified", 120, 80),
    FileChange("docs/new guide.md", "added", 100, 0),
    FileChange("old.txt", "deleted", 0, 7),
    FileChange("lib/b.py", "renamed", 14, 0, old_path="lib/a.py"),
    FileChange("logo.png", "added", None, None, binary=True),
]


def make_report(**changes: Any) -> RunReport:
    fields: dict[str, Any] = {
        "run_id": "20261124-101500-ab12",
        "status": "success",
        "exit_code": 0,
        "branch": "agent-task-20261124-101500",
        "base_commit": "a" * 40,
        "head_commit": "b" * 40,
        "duration_s": 323.4,
        "agent": AgentInfo("claude", "2.1.331", "claude-opus-5-5", "sess-1"),
        "tokens": Tokens(input=12345, output=2345, cache_read=1_000_000, cache_creation=500),
        "cost_usd": 0.4312,
        "turns": 17,
        "files": list(FILES),
        "run_dir": "/repo/.git/agent-worker/runs/20261124-101500-ab12",
        "timings": {"preflight": 0.12345, "agent": 300.0004},
    }
    fields.update(changes)
    return RunReport(**fields)


def rows(text: str) -> dict[str, list[str]]:
    """Label -> the texts of the rows with that label, from the plain report."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines()[1:]:
        if line.startswith("  "):
            found.setdefault("", []).append(line)
        else:
            found.setdefault(line[:10].strip(), []).append(line[11:])
    return found


# ---------------------------------------------------------------- JSON


def test_to_json_has_exactly_the_documented_keys() -> None:
    data = make_report().to_json()
    assert set(data) == {
        "schema_version",
        "run_id",
        "status",
        "exit_code",
        "branch",
        "base_commit",
        "head_commit",
        "duration_s",
        "agent",
        "tokens",
        "cost_usd",
        "turns",
        "changes",
        "run_dir",
        "error",
        "firewall",
        "warnings",
        "timings",
    }
    assert set(data["agent"]) == {"type", "version", "model", "session_id"}
    assert set(data["tokens"]) == {"input", "output", "cache_read", "cache_creation", "total"}
    assert set(data["changes"]) == {"lines_added", "lines_removed", "files_changed", "files"}
    for entry in data["changes"]["files"]:
        assert set(entry) == {"path", "status", "added", "removed", "old_path", "binary"}


def test_to_json_values() -> None:
    data = make_report(warnings=["w1"], error=None, firewall=False).to_json()
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert data["status"] == "success"
    assert data["exit_code"] == 0
    assert data["duration_s"] == 323.4
    assert data["agent"] == {
        "type": "claude",
        "version": "2.1.331",
        "model": "claude-opus-5-5",
        "session_id": "sess-1",
    }
    assert data["tokens"] == {
        "input": 12345,
        "output": 2345,
        "cache_read": 1_000_000,
        "cache_creation": 500,
        "total": 12345 + 2345,
    }
    assert data["cost_usd"] == 0.4312
    assert data["turns"] == 17
    changes = data["changes"]
    assert changes["lines_added"] == 120 + 100 + 14
    assert changes["lines_removed"] == 80 + 7
    assert changes["files_changed"] == 5
    assert changes["files"][3] == {
        "path": "lib/b.py",
        "status": "renamed",
        "added": 14,
        "removed": 0,
        "old_path": "lib/a.py",
        "binary": False,
    }
    assert changes["files"][4]["binary"] is True
    assert changes["files"][4]["added"] is None
    assert data["firewall"] is False
    assert data["warnings"] == ["w1"]
    assert data["error"] is None
    assert data["timings"] == {"preflight": 0.123, "agent": 300.0}


@pytest.mark.parametrize(
    ("tokens", "total"),
    [
        (Tokens(), None),
        (Tokens(input=10), 10),
        (Tokens(output=7), 7),
        (Tokens(input=3, output=4, cache_read=1000, cache_creation=1000), 7),
    ],
)
def test_total_is_input_plus_output(tokens: Tokens, total: int | None) -> None:
    assert tokens.total == total
    assert make_report(tokens=tokens).to_json()["tokens"]["total"] == total


def test_render_json_round_trips() -> None:
    report = make_report(
        files=[FileChange("données/é €.txt", "added", 1, 0)],
        error="boom \u2014 what to do",
        warnings=["a", "b"],
    )
    text = render_json(report)
    assert text.endswith("\n")
    assert json.loads(text) == report.to_json()
    assert "données/é €.txt" in text  # not \u-escaped
    empty = RunReport("r", "error", 3, None, None, None, 0.5, AgentInfo("claude"))
    assert json.loads(render_json(empty)) == empty.to_json()
    assert json.loads(render_json(empty))["changes"] == {
        "lines_added": 0,
        "lines_removed": 0,
        "files_changed": 0,
        "files": [],
    }


# ---------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0.0s"),
        (5.04, "5.0s"),
        (59.94, "59.9s"),
        (60, "1m 0.0s"),
        (323.4, "5m 23.4s"),
        (3600, "1h 0m 0.0s"),
        (3723.4, "1h 2m 3.4s"),
        (119.97, "2m 0.0s"),
        (3599.97, "1h 0m 0.0s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_render_text_rows() -> None:
    text = render_text(make_report())
    assert text.startswith("AGENT EXECUTION REPORT\n")
    found = rows(text)
    assert found["Branch"] == ["agent-task-20261124-101500     Status   success (exit 0)"]
    assert found["Duration"][0].startswith("5m 23.4s ")
    assert found["Duration"][0].endswith("Turns    17")
    assert found["Tokens"] == [
        "14,690 total \u00b7 12,345 in \u00b7 2,345 out \u00b7 1,000,000 cache read"
        " \u00b7 500 cache write"
    ]
    assert found["Cost"] == ["$0.4312"]
    assert found["Changes"] == [f"+234 {MINUS}87 in 5 files"]
    assert found["Run data"] == ["/repo/.git/agent-worker/runs/20261124-101500-ab12"]
    assert "Firewall" not in found
    assert "Error" not in found
    assert "Warning" not in found


def test_render_text_file_lines() -> None:
    lines = rows(render_text(make_report()))[""]
    assert len(lines) == 5
    by_code = {line.split()[0]: line for line in lines}
    modified = next(line for line in lines if "src/app.py" in line)
    assert modified.split()[0] == "M"
    assert modified.endswith(f"+120 {MINUS}80")
    added = next(line for line in lines if "docs/new guide.md" in line)
    assert added.split()[0] == "A"
    assert added.endswith("+100")
    assert MINUS not in added
    deleted = by_code["D"]
    assert "old.txt" in deleted
    assert deleted.endswith(f"{MINUS}7")
    assert "+" not in deleted
    renamed = by_code["R"]
    assert "lib/a.py -> lib/b.py" in renamed
    assert renamed.endswith("+14")
    binary = next(line for line in lines if "logo.png" in line)
    assert binary.split()[0] == "A"
    assert binary.endswith("binary")
    # the counts line up in one column
    assert len({line.rfind("  ") for line in lines}) == 1


def test_one_file_is_singular() -> None:
    found = rows(render_text(make_report(files=[FileChange("a.txt", "modified", 1, 1)])))
    assert found["Changes"] == [f"+1 {MINUS}1 in 1 file"]


def test_no_changes_only_when_the_branch_head_is_known() -> None:
    assert rows(render_text(make_report(files=[])))["Changes"] == ["no changes"]
    assert "Changes" not in rows(render_text(make_report(files=[], head_commit=None)))


def test_unknown_figures_are_question_marks() -> None:
    report = make_report(tokens=Tokens(), cost_usd=None, turns=None, branch=None)
    found = rows(render_text(report))
    assert found["Tokens"] == [
        "? total \u00b7 ? in \u00b7 ? out \u00b7 ? cache read \u00b7 ? cache write"
    ]
    assert found["Cost"] == ["?"]
    assert found["Duration"][0].endswith("Turns    ?")
    assert found["Branch"][0].startswith("- ")


def test_firewall_off_error_and_warnings_are_shown() -> None:
    report = make_report(
        status="failed",
        exit_code=1,
        firewall=False,
        error="Claude Code reported an error: API Error: 500",
        warnings=["allowed host x.invalid does not resolve", "second warning"],
    )
    text = render_text(report)
    found = rows(text)
    assert "failed (exit 1)" in found["Branch"][0]
    assert found["Firewall"] == ["off (--no-firewall): the agent could reach any address"]
    assert found["Error"] == ["Claude Code reported an error: API Error: 500"]
    assert found["Warning"] == ["allowed host x.invalid does not resolve", "second warning"]


# ---------------------------------------------------------------- rich


def rich_text(report: RunReport) -> str:
    stream = io.StringIO()
    render_rich(report, stream)
    raw = stream.getvalue()
    assert "\x1b[" in raw  # it is styled for a terminal
    return ANSI.sub("", raw)


def test_render_rich_shows_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    report = make_report(
        status="failed",
        exit_code=1,
        firewall=False,
        error="the agent ran out of memory",
        warnings=["a warning"],
    )
    shown = rich_text(report)
    assert "AGENT EXECUTION REPORT" in shown
    assert "\x1b" not in shown
    for label, text in rows(render_text(report)).items():
        for row in text:
            assert row.strip() in shown, (label, row)
    for figure in (
        "5m 23.4s",
        "14,690 total",
        "12,345 in",
        "1,000,000 cache read",
        "$0.4312",
        f"+234 {MINUS}87 in 5 files",
        "lib/a.py -> lib/b.py",
        "binary",
        "failed (exit 1)",
        "off (--no-firewall)",
        "the agent ran out of memory",
        "a warning",
    ):
        assert figure in shown, figure


def test_render_rich_at_80_columns_keeps_every_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    shown = rich_text(make_report())
    for figure in ("5m 23.4s", "14,690", "12,345", "2,345", "1,000,000", "$0.4312", "+234"):
        assert figure in shown, figure
    assert "no changes" not in shown
    assert "no changes" in rich_text(make_report(files=[]))
