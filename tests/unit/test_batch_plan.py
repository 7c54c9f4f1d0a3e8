"""A batch's pure parts: which runs a command line asks for (tasks, tasks files, projects,
branch names), the exit code of several runs, the summary's rows and JSON."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent_worker_app import batch_plan
from agent_worker_app.batch_view import (
    HEADERS,
    Entry,
    render_batch_json,
    render_summary_text,
)
from agent_worker_app.errors import UsageError, worst_exit
from agent_worker_app.report import AgentInfo, FileChange, RunReport, Tokens
from agent_worker_app.totals import Totals

NOW = datetime(2026, 11, 25, 9, 30, 0)


def plan(**options: Any) -> list[batch_plan.Planned]:
    return batch_plan.plan(options, read_stdin=lambda: "from stdin\n", now=NOW)


def test_one_task_is_not_a_batch_and_keeps_its_options() -> None:
    assert not batch_plan.is_batch({"task": ("fix it",)})
    assert not batch_plan.is_batch({"task": "fix it", "project": ("a",)})
    assert batch_plan.single({"task": ("fix it",), "project": ()}) == {
        "task": "fix it",
        "project": None,
    }
    assert batch_plan.is_batch({"task": ("a", "b")})
    assert batch_plan.is_batch({"task": ("a",), "project": ("x", "y")})
    assert batch_plan.is_batch({"tasks_file": "t.txt"})


def test_several_tasks_get_numbered_branches() -> None:
    runs = plan(task=("one", "two", "three"), branch="feature")
    assert [(r.number, r.entry.task, r.branch, r.branch_given) for r in runs] == [
        (1, "one", "feature-1", True),
        (2, "two", "feature-2", True),
        (3, "three", "feature-3", True),
    ]
    generated = plan(task=("one", "two"))
    assert [(r.branch, r.branch_given) for r in generated] == [
        ("agent-task-20261125-093000-1", False),
        ("agent-task-20261125-093000-2", False),
    ]


def test_each_task_runs_on_each_project(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    runs = plan(task=("one", "two"), project=(a, b), branch="x")
    assert [(r.number, r.entry.task, r.project, r.branch) for r in runs] == [
        (1, "one", a, "x-1"),
        (2, "one", b, "x-1"),
        (3, "two", a, "x-2"),
        (4, "two", b, "x-2"),
    ]
    one = plan(task=("only",), project=(a, b), branch="x")
    assert [r.branch for r in one] == ["x", "x"]  # one task: its name as given, in each project
    with pytest.raises(UsageError, match="is given twice"):
        plan(task=("one",), project=(a, str(tmp_path / "a" / ".." / "a")))


def test_a_plain_tasks_file_has_one_task_a_line(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("# a comment\nfix the tests\n\n  add a README  \n", encoding="utf-8")
    runs = plan(tasks_file=str(tasks), task=("first",))
    assert [(r.entry.task, r.entry.where) for r in runs] == [
        ("first", "--task 1"),
        ("fix the tests", f"{tasks}:2"),
        ("add a README", f"{tasks}:4"),
    ]


def test_a_json_lines_tasks_file_says_branch_project_and_agent(tmp_path: Path) -> None:
    tasks = tmp_path / "sub" / "tasks.jsonl"
    tasks.parent.mkdir()
    lines = [
        {"task": "line one\nand two", "branch": "mine", "project": "../repo", "agent_type": "x"},
        {"task": "plain"},
    ]
    tasks.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")
    runs = plan(tasks_file=str(tasks), project=("p1", "p2"), branch="b")
    assert [(r.entry.task, r.project, r.branch, r.branch_given) for r in runs] == [
        ("line one\nand two", str(tasks.parent / "../repo"), "mine", True),
        ("plain", "p1", "b-2", True),
        ("plain", "p2", "b-2", True),
    ]
    assert runs[0].entry.agent_type == "x"
    options = batch_plan.run_options({"tasks_file": str(tasks), "json_output": True}, runs[0])
    assert options == {
        "task": "line one\nand two",
        "task_file": None,
        "tasks_file": None,
        "project": str(tasks.parent / "../repo"),
        "branch": None,
        "agent_type": "x",
        "json_output": True,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"task": "ok"}\n{"task": "a",\n', "tasks.jsonl:2: not a JSON object"),
        ('{"task": "ok"}\n["a"]\n', "tasks.jsonl:2: not a JSON object"),
        ('{"task": "ok", "brnach": "x"}\n', "tasks.jsonl:1: unknown key 'brnach'"),
        ('\n\n{"branch": "x"}\n', 'tasks.jsonl:3: no task ("task" is missing or empty)'),
        ('{"task": "  "}\n', "tasks.jsonl:1: no task"),
        ('{"task": "a", "branch": 3}\n', "tasks.jsonl:1: 'branch' must be a string"),
        ('{"task": "a", "project": ""}\n', "tasks.jsonl:1: 'project' is empty"),
        ("\n# only a comment\n", "has no tasks"),
    ],
)
def test_a_bad_tasks_file_line_is_a_usage_error_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError) as caught:
        plan(tasks_file=str(tasks))
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_tasks_file_problems(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--tasks-file: cannot read .*no such file"):
        plan(tasks_file=str(tmp_path / "missing.txt"))
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        plan(tasks_file=str(latin))
    assert [r.entry.task for r in plan(tasks_file="-")] == ["from stdin"]
    with pytest.raises(UsageError, match="no task"):
        plan(project=("a", "b"))
    with pytest.raises(UsageError, match="exactly one of --task TEXT or --task-file"):
        plan(task=("a",), task_file="x", project=("a", "b"))


def test_the_exit_code_of_several_runs_is_the_worst() -> None:
    assert worst_exit([]) == 0
    assert worst_exit([0, 0]) == 0
    assert worst_exit([0, 1, 0]) == 1
    assert worst_exit([1, 124]) == 124
    assert worst_exit([124, 3, 1]) == 3
    assert worst_exit([3, 2]) == 2
    assert worst_exit([2, 4, 3]) == 4
    assert worst_exit([4, 130, 0]) == 130
    assert worst_exit([0, 1, 2, 3, 4, 124, 130]) == 130


def report(status: str, code: int, **kw: Any) -> RunReport:
    fields: dict[str, Any] = {
        "run_id": "r1",
        "status": status,
        "exit_code": code,
        "branch": "b",
        "base_commit": "0" * 40,
        "head_commit": "1" * 40,
        "duration_s": 2.0,
        "agent": AgentInfo("claude"),
    }
    return RunReport(**(fields | kw))


def test_the_summary_and_json_hold_each_run_and_the_totals() -> None:
    change = FileChange("a\x1b[31m.py", "added", 3, 1)
    entries = [
        Entry(
            1,
            Path("/r/one"),
            "t1",
            "x-1",
            report("success", 0, branch="x-1", files=[change], tokens=Tokens(10, 5), cost_usd=0.25),
        ),
        Entry(
            2,
            Path("/r/two"),
            "t2",
            "x-2",
            report("failed", 1, branch="x-2", tokens=Tokens(1, 1), cost_usd=0.5),
        ),
        Entry(
            3,
            Path("/r/two"),
            "t3",
            "x-3",
            report("skipped", 130, run_id="", branch=None, head_commit=None, duration_s=0.0),
        ),
    ]
    totals = Totals.of([e.report for e in entries], exit_code=130, duration_s=4.0)
    assert (totals.tasks, totals.succeeded, totals.skipped) == (3, 1, 1)
    assert (totals.tokens_total, totals.cost_usd) == (17, 0.75)
    assert (totals.lines_added, totals.lines_removed, totals.files_changed) == (3, 1, 1)
    text = render_summary_text(entries, totals)
    lines = text.splitlines()
    assert lines[0] == "AGENT BATCH REPORT (exit 130)"
    assert tuple(lines[1].split()) == HEADERS
    assert lines[2].split() == [
        "1",
        "x-1",
        "one",
        "success",
        "2.0s",
        "15",
        "$0.2500",
        "+3",
        "-1",
        "1",
    ]
    assert lines[4].split() == ["3", "(x-3)", "two", "skipped", "-", "-", "-", "+0", "-0", "0"]
    assert lines[-1].split() == [
        "total",
        "1/3",
        "succeeded",
        "4.0s",
        "17",
        "$0.7500",
        "+3",
        "-1",
        "1",
    ]
    data = json.loads(render_batch_json(entries, totals))
    assert [(r["branch"], r["status"], r["project"], r["task"]) for r in data["runs"]] == [
        ("x-1", "success", "/r/one", "t1"),
        ("x-2", "failed", "/r/two", "t2"),
        (None, "skipped", "/r/two", "t3"),
    ]
    assert data["totals"] == {
        "tasks": 3,
        "succeeded": 1,
        "failed": 1,
        "skipped": 1,
        "exit_code": 130,
        "duration_s": 4.0,
        "tokens_total": 17,
        "cost_usd": 0.75,
        "lines_added": 3,
        "lines_removed": 1,
        "files_changed": 1,
    }
    assert "\x1b" not in render_batch_json(entries, totals)  # escaped, as in a single report


def test_jobs_and_max_cost_come_from_their_options_or_variables(tmp_path: Path) -> None:
    from agent_worker_app import config

    def load(cli: dict[str, Any], environ: dict[str, str]) -> Any:
        return config.load(
            {"task": "t", "agent_type": "command", **cli},
            environ={"XDG_CONFIG_HOME": str(tmp_path / "xdg"), **environ},
            cwd=tmp_path,
        )

    assert load({}, {}).jobs == 1
    assert load({}, {}).max_cost_usd is None
    assert load({}, {"AGENT_WORKER_JOBS": "3"}).jobs == 3
    assert load({"jobs": "5"}, {"AGENT_WORKER_JOBS": "3"}).jobs == 5  # the command line wins
    assert load({}, {"AGENT_WORKER_MAX_COST": "$2.50"}).max_cost_usd == 2.5
    with pytest.raises(UsageError, match="AGENT_WORKER_JOBS must be a positive whole number"):
        load({}, {"AGENT_WORKER_JOBS": "many"})


def test_the_summary_names_the_node_of_each_task_when_they_ran_on_a_swarm() -> None:
    entries = [
        Entry(1, Path("/r/one"), "t1", "x-1", report("success", 0, branch="x-1", node="w-1")),
        Entry(2, Path("/r/one"), "t2", "x-2", report("success", 0, branch="x-2", node="w\x1b2")),
    ]
    totals = Totals.of([e.report for e in entries], exit_code=0, duration_s=4.0)
    lines = render_summary_text(entries, totals).splitlines()
    assert tuple(lines[1].split()) == (*HEADERS, "node")
    assert lines[2].split()[-1] == "w-1"
    assert lines[3].split()[-1] == '"w\\0332"'  # a name is data: quoted, never a control
    assert [r["node"] for r in json.loads(render_batch_json(entries, totals))["runs"]] == [
        "w-1",
        "w\x1b2",
    ]
    one_engine = [Entry(1, Path("/r/one"), "t1", "x-1", report("success", 0, branch="x-1"))]
    text = render_summary_text(
        one_engine, Totals.of([e.report for e in one_engine], exit_code=0, duration_s=1.0)
    )
    assert tuple(text.splitlines()[1].split()) == HEADERS
