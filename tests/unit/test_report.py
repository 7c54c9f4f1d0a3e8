"""report.py: the JSON envelope, the plain text report and the rich panel say the same things."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest

from agent_worker_app.report import (
    SCHEMA_VERSION,
    TERMINAL_FILE_LIMIT,
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
        "metered",
        "turns",
        "changes",
        "run_dir",
        "pushed_to",
        "pull_request",
        "attempt",
        "continued_from",
        "branch_totals",
        "node",
        "runtime",
        "error",
        "firewall",
        "check",
        "blocked",
        "meter",
        "warnings",
        "timings",
    }
    assert set(data["agent"]) == {"type", "version", "model", "session_id", "session_cost_usd"}
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
        "session_cost_usd": None,
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


# ---------------------------------------------------------------- names are data, never markup

WIDTH = 200
MARKUP_NAMES = [
    "app/[slug]/page.tsx",
    "docs/[/x].md",
    "[bold]loud[/bold].txt",
    "[red]",
    "[/]",
    "[link=https://example.invalid]x[/link].md",
    ":smile: [b]",
]
# each forges something if printed raw: a report row, a cleared screen, a window title, a CSI
# (C1), a bell, a reversed name (bidi override), a byte that is not UTF-8 (surrogateescape)
CONTROL_NAMES = {
    "evil\nStatus   success": '"evil\\nStatus   success"',
    "esc\x1b[2Jclear": '"esc\\033[2Jclear"',
    "title\x1b]2;pwned\x07": '"title\\033]2;pwned\\a"',
    "csi\x9b31m": '"csi\\302\\23331m"',
    "tab\there\rcr": '"tab\\there\\rcr"',
    "del\x7f nul\x00": '"del\\177 nul\\000"',
    "rlo\u202etxt.exe": '"rlo\\342\\200\\256txt.exe"',
    "bad\udcff.txt": '"bad\\377.txt"',
    'quote"back\\slash': '"quote\\"back\\\\slash"',
}
RAW_CONTROLS = ["\x1b[2J", "\x1b]2;", "\x07", "\x9b", "\x7f", "\x00", "\r", "\u202e", "\t"]


def rich_raw(report: RunReport, width: int = WIDTH) -> str:
    stream = io.StringIO()
    render_rich(report, stream, width=width)
    return stream.getvalue()


def panel_lines(report: RunReport) -> list[str]:
    """The rich panel's lines without styling, each without its border."""
    lines = ANSI.sub("", rich_raw(report)).splitlines()
    assert lines[0].startswith("\u256d")
    assert lines[-1].startswith("\u2570")
    inner = lines[1:-1]
    assert all(line.startswith("\u2502") and line.endswith("\u2502") for line in inner), lines
    return [line[1:-1].rstrip() for line in inner]


def panel_labels(report: RunReport) -> list[str]:
    return [line[1:10].strip() for line in panel_lines(report) if line[1:10].strip()]


def text_labels(text: str) -> list[str]:
    return [line[:10].strip() for line in text.splitlines()[1:] if not line.startswith("  ")]


def test_bracketed_names_render_literally_in_the_panel() -> None:
    files = [FileChange(name, "added", 1, 0) for name in MARKUP_NAMES]
    files.append(FileChange("new/[id].ts", "renamed", 2, 1, old_path="old/[id].ts"))
    report = make_report(files=files)
    shown = "\n".join(panel_lines(report))  # docs/[/x].md raised rich's MarkupError here
    for name in MARKUP_NAMES:
        assert f"A {name} " in shown, name
    assert "R old/[id].ts -> new/[id].ts" in shown
    assert "\U0001f604" not in shown  # :smile: is not an emoji code either


def test_bracketed_names_render_literally_in_plain_text() -> None:
    files = [FileChange(name, "modified", 1, 1) for name in MARKUP_NAMES]
    lines = rows(render_text(make_report(files=files)))[""]
    assert [line.split()[1] for line in lines] == [name.split()[0] for name in MARKUP_NAMES]


def test_branch_warnings_error_and_run_dir_with_brackets_are_literal() -> None:
    report = make_report(
        status="failed",
        exit_code=1,
        branch="agent/[wip]",
        warnings=["allowed host [::1]:8080 is listed twice", "[/] closes nothing"],
        error="Claude Code reported an error: [bold]API Error[/bold]: 500 [/x]",
        run_dir="/home/u/[proj]/.git/agent-worker/runs/r1",
    )
    for shown in ("\n".join(panel_lines(report)), render_text(report)):
        assert "agent/[wip]" in shown
        assert "allowed host [::1]:8080 is listed twice" in shown
        assert "[/] closes nothing" in shown
        assert "Claude Code reported an error: [bold]API Error[/bold]: 500 [/x]" in shown
        assert "/home/u/[proj]/.git/agent-worker/runs/r1" in shown


def test_the_panel_title_and_labels_are_not_markup() -> None:
    raw = rich_raw(make_report())
    assert "AGENT EXECUTION REPORT" in ANSI.sub("", raw)
    assert panel_labels(make_report()) == [
        "Branch",
        "Duration",
        "Tokens",
        "Cost",
        "Changes",
        "Run data",
    ]


@pytest.mark.parametrize(("name", "quoted"), list(CONTROL_NAMES.items()))
def test_a_control_character_in_a_name_is_escaped_and_cannot_forge_a_row(
    name: str, quoted: str
) -> None:
    report = make_report(files=[FileChange(name, "added", 3, 0), *FILES])
    text = render_text(report)
    raw = rich_raw(report)
    for control in RAW_CONTROLS:
        assert control not in text, control
        assert control not in raw, control
    assert "\x1b" not in ANSI.sub("", raw)
    text.encode("utf-8")  # a byte that was not UTF-8 no longer makes the write fail
    expected = ["Branch", "Duration", "Tokens", "Cost", "Changes", "Run data"]
    assert text_labels(text) == expected
    assert panel_labels(report) == expected
    assert len(text.splitlines()) == 1 + len(expected) + 1 + len(FILES)
    line = next(line for line in rows(text)[""] if "+3" in line)
    assert line.startswith(f"  A {quoted} ")
    assert f"A {quoted} " in "\n".join(panel_lines(report))


def test_a_renamed_name_quotes_each_side() -> None:
    change = FileChange("new\nname", "renamed", 1, 0, old_path="old\x1bname")
    line = rows(render_text(make_report(files=[change])))[""][0]
    assert line == '  R "old\\033name" -> "new\\nname"  +1'


def test_non_ascii_names_stay_readable() -> None:
    names = [
        "dossier \u00e9/nouveau nom \u00fc.txt",
        "\u65e5\u672c\u3000\u8a9e.md",
        "na\u00efve.md",
    ]
    report = make_report(files=[FileChange(n, "added", 1, 0) for n in names])
    for shown in (render_text(report), "\n".join(panel_lines(report))):
        for name in names:
            assert f"A {name} " in shown
            assert f'"{name}"' not in shown


def test_warnings_and_errors_with_control_characters_stay_on_their_row() -> None:
    report = make_report(
        status="failed",
        exit_code=1,
        warnings=["host x\x1b[2J\nError      forged by a warning", "tab\there \x9b bell\x07"],
        error="API Error: 500\r\nStatus   success (exit 0)\x1b]2;pwned\x07",
    )
    text = render_text(report)
    raw = rich_raw(report)
    for control in RAW_CONTROLS:
        assert control not in text, control
        assert control not in raw, control
    expected = ["Branch", "Duration", "Tokens", "Cost", "Changes"]
    expected += ["Warning", "Warning", "Error", "Run data"]
    assert text_labels(text) == expected
    assert panel_labels(report) == expected
    found = rows(text)
    assert found["Warning"] == [
        "host x\\033[2J\\nError      forged by a warning",
        "tab\\there \\302\\233 bell\\a",
    ]
    assert found["Error"] == ["API Error: 500\\r\\nStatus   success (exit 0)\\033]2;pwned\\a"]
    shown = "\n".join(panel_lines(report))
    assert "host x\\033[2J\\nError      forged by a warning" in shown
    assert "API Error: 500\\r\\nStatus   success (exit 0)\\033]2;pwned\\a" in shown


def test_a_branch_with_control_characters_is_escaped() -> None:
    text = render_text(make_report(branch="b\x1b[2J\nStatus"))
    assert rows(text)["Branch"][0].startswith("b\\033[2J\\nStatus ")
    assert text_labels(text)[:2] == ["Branch", "Duration"]


# ---------------------------------------------------------------- long file lists


def many_files(count: int) -> list[FileChange]:
    return [FileChange(f"src/module_{i:03d}.py", "added", i + 1, 0) for i in range(count)]


def test_the_panel_cuts_a_long_file_list_and_counts_the_rest() -> None:
    report = make_report(files=many_files(57))
    lines = panel_lines(report)
    listed = [line for line in lines if "src/module_" in line]
    assert len(listed) == TERMINAL_FILE_LIMIT == 20
    assert "src/module_019.py" in listed[-1]
    assert not any("src/module_020.py" in line for line in lines)
    more = [line for line in lines if "... and" in line]
    assert len(more) == 1
    assert "... and 37 more" in more[0]
    assert "Changes" in lines[lines.index(listed[0]) - 1]
    assert f"+{sum(range(1, 58))} {MINUS}0 in 57 files" in "\n".join(lines)


@pytest.mark.parametrize(("count", "listed"), [(20, 20), (21, 21), (22, 20)])
def test_the_cut_never_hides_a_single_file(count: int, listed: int) -> None:
    lines = panel_lines(make_report(files=many_files(count)))
    assert sum("src/module_" in line for line in lines) == listed
    hidden = count - listed
    assert sum(f"... and {hidden} more" in line for line in lines) == (1 if hidden else 0)


def test_plain_text_and_json_keep_every_file() -> None:
    report = make_report(files=many_files(57))
    lines = rows(render_text(report))[""]
    assert len(lines) == 57
    assert "... and" not in render_text(report)
    data = json.loads(render_json(report))
    assert [f["path"] for f in data["changes"]["files"]] == [f.path for f in many_files(57)]
    assert data["changes"]["files_changed"] == 57


# ---------------------------------------------------------------- JSON keeps every name exactly


def test_json_keeps_every_name_exactly_and_is_safe_to_print() -> None:
    names = [*MARKUP_NAMES, *CONTROL_NAMES, "dossier \u00e9/\u00fc.txt", "line\u2028sep"]
    report = make_report(
        files=[FileChange(n, "added", 1, 0) for n in names],
        warnings=["w\x1b[2J\x9b"],
        error="e\n\x00",
    )
    text = render_json(report)
    text.encode("utf-8")  # would fail on a lone surrogate
    for control in [*RAW_CONTROLS, "\u2028", "\n  x"]:
        assert control not in text.replace("\n  ", "").replace("\n}", ""), control
    data = json.loads(text)
    assert [f["path"] for f in data["changes"]["files"]] == names
    assert data["warnings"] == ["w\x1b[2J\x9b"]
    assert data["error"] == "e\n\x00"
    assert data == json.loads(json.dumps(report.to_json()))
    assert "dossier \u00e9/\u00fc.txt" in text  # readable, not \u-escaped
    assert "app/[slug]/page.tsx" in text


def test_the_swarm_node_a_task_ran_on_is_reported() -> None:
    report = make_report(node="worker-2")
    assert report.to_json()["node"] == "worker-2"
    assert rows(render_text(report))["Node"] == ["ran on node worker-2"]
    assert make_report().to_json()["node"] is None
    assert "Node" not in rows(render_text(make_report()))


def test_the_pull_request_is_a_row_of_the_text_report() -> None:
    from agent_worker_app.forge import Opened

    report = make_report(pushed_to="origin")
    report.pull_request = Opened("github", "opened", "main", url="https://github.test/a/b/pull/1")
    assert rows(render_text(report))["PR"] == ["opened https://github.test/a/b/pull/1 (into main)"]
    report.pull_request = Opened(None, "compare", "main", compare_url="https://x.test/a/b/compare")
    assert rows(render_text(report))["PR"] == ["open it at https://x.test/a/b/compare (into main)"]
