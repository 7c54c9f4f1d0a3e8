"""ci_outputs.py: GITHUB_OUTPUT as GitHub's runner reads it back, the job summary as Markdown
renders it, and the annotation as a workflow command; names in all of them stay data."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from github_files import read_github_output
from markdown_it import MarkdownIt
from test_report import make_report

from agent_worker_app import ci_outputs
from agent_worker_app.report import FileChange, Tokens
from agent_worker_app.totals import Totals


def html(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


def test_one_run_gives_its_own_figures(tmp_path: Path) -> None:
    report = make_report()
    out = tmp_path / "output"
    warnings = ci_outputs.emit(
        [report],
        Totals.of([report]),
        environ={"GITHUB_OUTPUT": str(out)},
        stderr=io.StringIO(),
    )
    assert warnings == []
    outputs = read_github_output(out.read_text())
    assert {k: outputs[k] for k in ci_outputs.OUTPUT_KEYS} == {
        "branch": "agent-task-20261124-101500",
        "status": "success",
        "exit_code": "0",
        "cost_usd": "0.4312",
        "tokens_total": "14690",
        "lines_added": "234",
        "lines_removed": "87",
        "files_changed": "5",
        "report_file": "/repo/.git/agent-worker/runs/20261124-101500-ab12/report.json",
        "pull_request": "",
    }
    assert json.loads(outputs["reports"]) == [{k: outputs[k] for k in ci_outputs.OUTPUT_KEYS}]


def test_report_file_names_the_given_one_and_unmetered_figures_are_empty(tmp_path: Path) -> None:
    report = make_report(metered=False, tokens=Tokens(), cost_usd=None, files=[])
    outputs = ci_outputs.step_outputs([report], Totals.of([report]), tmp_path / "r.json")
    assert outputs["report_file"] == str(tmp_path / "r.json")
    assert (outputs["tokens_total"], outputs["cost_usd"], outputs["files_changed"]) == ("", "", "0")


@pytest.mark.parametrize(
    "branch",
    [
        "evil\nstatus=success",
        "x\r\nexit_code=0",
        "ghadelimiter_\nEOF\n",
        "a=b<<c",
        "a<<b=c",
    ],
)
def test_a_value_cannot_forge_another_output(branch: str, tmp_path: Path) -> None:
    """A branch is data: it comes back as exactly that value and sets nothing else."""
    report = make_report(branch=branch, status="failed", exit_code=1)
    out = tmp_path / "output"
    out.write_text("earlier=kept\n")
    ci_outputs.emit(
        [report], Totals.of([report]), environ={"GITHUB_OUTPUT": str(out)}, stderr=io.StringIO()
    )
    outputs = read_github_output(out.read_bytes().decode())
    assert outputs["earlier"] == "kept"  # appended, never overwritten
    assert outputs["branch"] == branch.replace("\r\n", "\n")  # the runner reads CR LF as LF
    assert (outputs["status"], outputs["exit_code"]) == ("failed", "1")
    assert set(outputs) == {"earlier", "reports", *ci_outputs.OUTPUT_KEYS}


def test_heredoc_delimiters_are_random_and_never_in_the_value() -> None:
    value = "line one\nline two"
    first = ci_outputs.format_outputs({"v": value})
    second = ci_outputs.format_outputs({"v": value})
    assert first.splitlines()[0] != second.splitlines()[0]
    delimiter = first.splitlines()[0].split("<<", 1)[1]
    assert len(delimiter) > 20
    assert delimiter not in value
    assert first == f"v<<{delimiter}\n{value}\n{delimiter}\n"
    assert ci_outputs.format_outputs({"v": "plain"}) == "v=plain\n"


def test_several_runs_give_the_totals_and_each_run() -> None:
    one = make_report(branch="task-1", cost_usd=0.1)
    two = make_report(
        branch="task-2",
        run_id="r2",
        run_dir="/repo/.git/agent-worker/runs/r2",
        status="failed",
        exit_code=1,
        cost_usd=0.2,
        files=[FileChange("a.txt", "added", 3, 0)],
    )
    totals = Totals.of([one, two], exit_code=1, duration_s=400.0)
    outputs = ci_outputs.step_outputs([one, two], totals)
    assert outputs["branch"] == "task-1\ntask-2"
    assert (outputs["status"], outputs["exit_code"]) == ("failed", "1")
    assert outputs["cost_usd"] == "0.3"  # no float noise (0.30000000000000004)
    assert outputs["tokens_total"] == str(2 * 14690)
    assert (outputs["lines_added"], outputs["lines_removed"]) == ("237", "87")
    assert outputs["files_changed"] == "6"
    assert outputs["report_file"].splitlines()[1] == "/repo/.git/agent-worker/runs/r2/report.json"
    each = json.loads(outputs["reports"])
    assert [r["branch"] for r in each] == ["task-1", "task-2"]
    assert [r["status"] for r in each] == ["success", "failed"]
    assert each[1]["files_changed"] == "1"


def test_totals_defaults() -> None:
    one = make_report(duration_s=10.0)
    two = make_report(duration_s=30.0, exit_code=124, status="timeout")
    totals = Totals.of([one, two])
    assert (totals.tasks, totals.succeeded, totals.exit_code) == (2, 1, 124)
    assert totals.duration_s == 30.0
    assert totals.status == "failed"
    unmetered = make_report(metered=False, tokens=Tokens(), cost_usd=None)
    assert Totals.of([unmetered]).tokens_total is None
    assert Totals.of([unmetered]).cost_usd is None


def test_the_summary_of_one_run_renders_names_as_text() -> None:
    evil = "x](http://evil.example)<script>alert(1)</script>|@octocat *b* `c`"
    report = make_report(
        branch=evil,
        files=[FileChange("app/[slug]/page.tsx", "added", 1, 0), FileChange(evil, "added", 2, 0)],
        warnings=["a | b\nc"],
    )
    rendered = html(ci_outputs.summary([report], Totals.of([report])))
    for tag in ("<a ", "<script", "<em>", "<code>"):
        assert tag not in rendered
    assert "app/[slug]/page.tsx" in rendered
    assert "x](http://evil.example)&lt;script&gt;" in rendered
    rows = [r for r in rendered.split("<tr>") if "Warning" in r]
    assert len(rows) == 1
    assert "a | b\\nc" in rows[0]  # one cell: the pipe and newline are text
    assert "success (exit 0)" in rendered
    assert "+3 \u22120 in 2 files" in rendered


def test_the_summary_of_several_runs_is_a_table_with_totals() -> None:
    one = make_report(branch="task|1", cost_usd=0.1)
    two = make_report(branch="task-2", status="failed", exit_code=1, cost_usd=0.2, files=[])
    markdown = ci_outputs.summary([one, two], Totals.of([one, two]))
    rendered = html(markdown)
    body = rendered.split("<tbody>")[1]
    cells = [row.count("<td>") for row in body.split("<tr>")[1:]]
    assert cells == [7, 7, 7]  # a pipe in a name does not add a cell
    assert "<td>repo</td>" in body  # the project, from the run directory
    assert "task|1" in body
    assert "1 of 2 tasks succeeded" in rendered
    assert "$0.3000" in body.split("<tr>")[-1]


def test_the_summary_caps_its_file_list() -> None:
    files = [
        FileChange(f"f{i}.txt", "added", 1, 0) for i in range(ci_outputs.SUMMARY_FILE_LIMIT + 7)
    ]
    markdown = ci_outputs.summary([make_report(files=files)], Totals.of([make_report()]))
    assert "f0.txt" in html(markdown)
    assert "and 7 more files" in markdown


def test_the_annotation_is_one_command_line() -> None:
    report = make_report(status="failed", exit_code=1, error="100% broken\r\n::warning::forged")
    stderr = io.StringIO()
    ci_outputs.emit(
        [report], Totals.of([report]), environ={"GITHUB_ACTIONS": "true"}, stderr=stderr
    )
    assert stderr.getvalue() == (
        "::error title=agent-worker::agent-worker: agent-task-20261124-101500: failed (exit 1)"
        ": 100%25 broken%0D%0A::warning::forged\n"
    )


def test_no_annotation_on_success_or_outside_github() -> None:
    failed = make_report(status="failed", exit_code=1)
    for report, environ in ((make_report(), {"GITHUB_ACTIONS": "true"}), (failed, {})):
        stderr = io.StringIO()
        ci_outputs.emit([report], Totals.of([report]), environ=environ, stderr=stderr)
        assert stderr.getvalue() == ""


def test_an_unwritable_file_is_a_warning(tmp_path: Path) -> None:
    report = make_report()
    environ = {
        "GITHUB_OUTPUT": str(tmp_path / "missing" / "out"),
        "GITHUB_STEP_SUMMARY": str(tmp_path),
    }
    warnings = ci_outputs.emit([report], Totals.of([report]), environ=environ, stderr=io.StringIO())
    assert [w.split(":")[0] for w in warnings] == [
        "cannot write GITHUB_OUTPUT",
        "cannot write GITHUB_STEP_SUMMARY",
    ]


def test_an_error_before_any_report(tmp_path: Path) -> None:
    environ: dict[str, Any] = {
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        "GITHUB_ACTIONS": "true",
    }
    stderr = io.StringIO()
    ci_outputs.emit_error(2, "--timeout must be\na number", environ=environ, stderr=stderr)
    outputs = read_github_output((tmp_path / "out").read_text())
    assert (outputs["status"], outputs["exit_code"], outputs["branch"]) == ("error", "2", "")
    assert (
        stderr.getvalue()
        == "::error title=agent-worker::agent-worker: --timeout must be%0Aa number\n"
    )
    assert "\\-\\-timeout must be\\\\na number" in (tmp_path / "summary").read_text()


def test_a_pull_request_body_is_the_summary_with_names_as_text() -> None:
    report = make_report()
    report.files[0] = replace(report.files[0], path="[x](https://evil.example) <img src=x>.md")
    report.warnings.append("@everyone look at <script>")
    other = replace(make_report(), branch="try-2 [link](https://e.example)", status="failed")
    body = ci_outputs.pull_request_body(report, others=[other])
    rendered = html(body)
    assert "<a " not in rendered
    assert "<img" not in rendered
    assert "<script" not in rendered
    assert "Other attempts" in body
    assert report.run_id in body.replace("\\", "")
    one = ci_outputs.one_line(report)
    assert "\n" not in one
    assert "\r" not in one
