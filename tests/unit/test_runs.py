"""runs.py: a repository's past runs read back from run directories, newest first, odd ones
(no report, a broken report) listed rather than skipped, names shown as data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
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


# ---------------------------------------------------------------- a task's record

BASE = "0123456789abcdef0123456789abcdef01234567"
NONCE = "00112233445566778899aabbccddeeff"


def recorded(git_dir: Path, run_id: str = "20261124-101500-0a1b2c3d") -> Path:
    run_dir = runs.runs_dir(git_dir) / run_id
    run_dir.mkdir(parents=True)
    runs.record_task(run_dir, branch="agent/x", base=BASE, agent="codex", nonce=NONCE)
    return run_dir


def test_a_run_records_its_task_and_its_nonce_for_the_user_alone(tmp_path: Path) -> None:
    run_dir = recorded(tmp_path)
    assert (run_dir / "nonce").stat().st_mode & 0o777 == 0o600
    assert (run_dir / "nonce").read_text() == NONCE
    record = runs.task_record(tmp_path, run_dir.name)
    assert record == runs.TaskRecord(run_dir.name, run_dir, "agent/x", BASE, "codex", NONCE)
    assert not runs.ended(record)
    (run_dir / "report.json").write_text("{}")
    assert runs.ended(record)


def test_a_nonce_file_there_already_is_made_the_users_alone(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "nonce").write_text("old")
    (run_dir / "nonce").chmod(0o644)
    runs.record_task(run_dir, branch="b", base=BASE, agent="claude", nonce=NONCE)
    assert (run_dir / "nonce").stat().st_mode & 0o777 == 0o600
    assert (run_dir / "nonce").read_text() == NONCE


def test_the_ids_runs_get_are_the_ids_recovery_takes() -> None:
    from agent_worker_app.pipeline import new_run_id

    assert runs.RUN_ID.fullmatch(new_run_id())


@pytest.mark.parametrize(
    "run_id",
    [
        "../../evil",
        "../../../evil",
        "/tmp/evil",
        "20261124-101500-0a1b2c3d/../../evil",
        "20261124-101500-0a1b2c3d/",
        "20261124-101500-0a1b2c3d\n",
        "20261124-101500-0A1B2C3D",
        "",
        ".",
    ],
)
def test_a_run_id_that_is_not_one_is_refused_before_any_path_is_made_of_it(
    tmp_path: Path, run_id: str
) -> None:
    recorded(tmp_path)
    with pytest.raises(runs.UnknownRunError, match="is not one agent-worker makes"):
        runs.task_record(tmp_path, run_id)


def test_a_run_this_repository_never_had_or_that_recorded_no_task_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(runs.UnknownRunError, match="has no run 20261124-101500-0a1b2c3d"):
        runs.task_record(tmp_path, "20261124-101500-0a1b2c3d")
    older = runs.runs_dir(tmp_path) / "20261124-101500-00000000"
    older.mkdir(parents=True)  # a run directory with no record: of an older version, say
    with pytest.raises(runs.UnknownRunError, match="recorded no task"):
        runs.task_record(tmp_path, older.name)


def test_a_run_directory_that_is_a_symlink_is_not_a_run(tmp_path: Path) -> None:
    elsewhere = recorded(tmp_path / "elsewhere")
    (runs.runs_dir(tmp_path)).mkdir(parents=True)
    (runs.runs_dir(tmp_path) / "20261124-101500-11111111").symlink_to(elsewhere)
    with pytest.raises(runs.UnknownRunError, match="has no run"):
        runs.task_record(tmp_path, "20261124-101500-11111111")


@pytest.mark.parametrize(
    ("record", "nonce"),
    [
        ({"branch": "b", "base": "HEAD"}, NONCE),
        ({"branch": "", "base": BASE}, NONCE),
        ({"branch": ["b"], "base": BASE}, NONCE),
        ({"branch": "b", "base": BASE}, ""),
        ({"branch": "b", "base": BASE}, "not hex at all, not a nonce"),
    ],
)
def test_a_record_that_cannot_be_read_is_refused(
    tmp_path: Path, record: dict[str, Any], nonce: str
) -> None:
    run_dir = recorded(tmp_path)
    (run_dir / "task.json").write_text(json.dumps(record))
    (run_dir / "nonce").write_text(nonce)
    with pytest.raises(runs.UnknownRunError, match="record of its task cannot be read"):
        runs.task_record(tmp_path, run_dir.name)
