"""runs.py: a repository's past runs read back from run directories, newest first, odd ones
(no report, a broken report) listed rather than skipped, names shown as data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from test_report import make_report

from agent_worker_app import runs
from agent_worker_app.report import render_json


def write_run(git_dir: Path, run_id: str, task: str, report: Any = None, mtime: int = 0) -> Path:
    run_dir = runs.runs_dir(git_dir) / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "task.md").write_text(task)
    if isinstance(report, str):
        (run_dir / "report.json").write_text(report)
    elif report is not None:
        (run_dir / "report.json").write_text(render_json(report))
    if mtime:
        os.utime(run_dir / "task.md", ns=(mtime, mtime))
    return run_dir


def test_runs_newest_first_with_their_figures(tmp_path: Path) -> None:
    write_run(tmp_path, "20261124-101500-aa", "First task\nmore", make_report(branch="one"))
    write_run(
        tmp_path,
        "20261125-090000-bb",
        "Second",
        make_report(branch="two", status="failed", exit_code=1, cost_usd=None, files=[]),
        mtime=2_000_000_000_000_000_000,
    )
    write_run(  # the same second, started later
        tmp_path,
        "20261125-090000-00",
        "Third",
        make_report(branch="three", duration_s=1.5),
        mtime=2_000_000_000_500_000_000,
    )
    found = runs.past_runs(tmp_path)
    assert [r.branch for r in found] == ["three", "two", "one"]
    one = found[2]
    assert (one.started, one.status, one.exit_code) == ("2026-11-24T10:15:00", "success", 0)
    assert (one.tokens_total, one.cost_usd, one.task) == (14690, 0.4312, "First task")
    assert (one.lines_added, one.lines_removed, one.files_changed) == (234, 87, 5)
    assert found[1].cost_usd is None
    text = runs.render_text(found)
    lines = text.splitlines()
    assert lines[0].split() == [
        "when",
        "branch",
        "status",
        "duration",
        "tokens",
        "cost",
        "changes",
        "task",
    ]
    assert lines[1].startswith("2026-11-25 09:00:00  three ")
    assert "failed (1)" in lines[2]
    assert "$0.4312" in lines[3]
    assert "+234 \u221287 (5)" in lines[3]
    data = json.loads(runs.render_json(found))
    assert [r["branch"] for r in data["runs"]] == ["three", "two", "one"]
    assert data["runs"][2]["tokens_total"] == 14690


def test_a_run_without_a_readable_report_is_listed_as_unknown(tmp_path: Path) -> None:
    write_run(tmp_path, "20261125-090000-aa", "going on")
    write_run(tmp_path, "20261125-090001-bb", "broken", "{not json")
    write_run(tmp_path, "20261125-090002-cc", "odd", '{"status": 3, "changes": []}')
    found = runs.past_runs(tmp_path)
    assert [r.status for r in found] == ["unknown", "unknown", "unknown"]
    assert all(r.branch is None for r in found)
    assert "unknown" in runs.render_text(found)


def test_names_and_tasks_are_data(tmp_path: Path) -> None:
    write_run(
        tmp_path, "20261125-090000-aa", "\x1b[2Jclear", make_report(branch="evil\x1b]2;x\x07")
    )
    text = runs.render_text(runs.past_runs(tmp_path))
    assert "\x1b" not in text
    assert "evil\\033]2;x\\a" in text


def test_no_runs(tmp_path: Path) -> None:
    assert runs.past_runs(tmp_path) == []
    assert runs.render_text([]) == "no runs yet in this repository\n"
    assert json.loads(runs.render_json([])) == {"runs": []}


def test_branch_totals(tmp_path: Path) -> None:
    write_run(tmp_path, "20261125-090000-aa", "a", make_report(branch="b", cost_usd=0.5))
    write_run(tmp_path, "20261125-090001-bb", "b", make_report(branch="b", cost_usd=0.25))
    write_run(tmp_path, "20261125-090002-cc", "c", make_report(branch="other"))
    totals = runs.branch_totals(runs.past_runs(tmp_path), "b")
    assert (totals.runs, totals.tokens_total, totals.cost_usd) == (2, 2 * 14690, 0.75)
    assert totals.duration_s == 2 * 323.4


def test_a_continued_session_knows_what_it_cost_before(tmp_path: Path) -> None:
    """The session --continue resumes carries what the agent reported it had cost: a report's
    session_cost_usd, or, from a report written before it was kept, its cost_usd (which then
    was the session's)."""
    import json

    from agent_worker_app import follow_up

    def run(run_id: str, agent: dict[str, object], cost: float) -> runs.PastRun:
        run_dir = tmp_path / run_id
        (run_dir / "session").mkdir(parents=True)
        (run_dir / "session" / "s1.jsonl").write_text("{}\n")
        report = {"branch": "b", "head_commit": "c", "cost_usd": cost, "agent": agent}
        (run_dir / "report.json").write_text(json.dumps(report))
        return runs.read_run(run_dir)

    newer = run(
        "20261207-100000-aa", {"type": "claude", "session_id": "s1", "session_cost_usd": 0.03}, 0.02
    )
    older = run("20261207-090000-bb", {"type": "claude", "session_id": "s1"}, 0.01)
    session = follow_up._session([newer], "claude")
    assert session is not None
    assert (session.session_id, session.cost_usd) == ("s1", 0.03)
    session = follow_up._session([older], "claude")
    assert session is not None
    assert session.cost_usd == 0.01
