"""agent-worker as a CI job step, with real runs of the command agent: GitHub's step outputs,
job summary and error annotation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from github_files import read_github_output

from conftest import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def github_env(tmp_path: Path) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(tmp_path / "github_output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary"),
    }


def test_a_github_step_gets_outputs_a_summary_and_an_annotation(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    ci = github_env(tmp_path)
    task = "printf 'a\\nb\\n' > added.txt && echo done"
    ok = run_cli(
        ["--agent-type", "command", "--task", task, "--branch", "ci/one"],
        cwd=repo,
        env=command_env(**ci),
    )
    assert ok.code == 0, ok.stderr
    assert ok.report is not None
    assert "::error" not in ok.stderr
    outputs = read_github_output(Path(ci["GITHUB_OUTPUT"]).read_text())
    assert {k: outputs[k] for k in ("branch", "status", "exit_code")} == {
        "branch": "ci/one",
        "status": "success",
        "exit_code": "0",
    }
    assert (outputs["lines_added"], outputs["lines_removed"], outputs["files_changed"]) == (
        "2",
        "0",
        "1",
    )
    assert (outputs["tokens_total"], outputs["cost_usd"]) == ("", "")  # not applicable
    # run_cli passes --report-file: that is the file named
    assert json.loads(Path(outputs["report_file"]).read_text())["run_id"] == ok.report["run_id"]
    assert "### agent-worker: success" in Path(ci["GITHUB_STEP_SUMMARY"]).read_text()

    failed = run_cli(
        ["--agent-type", "command", "--task", "echo 'it broke: 100%' >&2; exit 5"],
        cwd=repo,
        env=command_env(**ci),
    )
    assert failed.code == 1, failed.stderr
    outputs = read_github_output(Path(ci["GITHUB_OUTPUT"]).read_text())  # the later value wins
    assert (outputs["status"], outputs["exit_code"]) == ("failed", "1")
    annotations = [line for line in failed.stderr.splitlines() if line.startswith("::error")]
    assert len(annotations) == 1
    assert "exit status 5" in annotations[0]
    assert "it broke: 100%25" in annotations[0]
    summary = Path(ci["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.count("### agent-worker:") == 2  # appended, step after step


def test_a_refused_run_still_tells_the_step(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    ci = github_env(tmp_path)
    bad = run_cli(
        ["--agent-type", "command", "--task", "true", "--timeout", "soon"],
        cwd=repo,
        env=command_env(**ci),
    )
    assert bad.code == 2
    outputs = read_github_output(Path(ci["GITHUB_OUTPUT"]).read_text())
    assert (outputs["status"], outputs["exit_code"]) == ("error", "2")
    assert "::error title=agent-worker::agent-worker: --timeout must be" in bad.stderr
