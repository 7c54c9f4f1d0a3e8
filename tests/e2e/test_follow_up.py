"""A repository's runs over time, with real runs of the command agent: --list-runs, and
--continue on an agent's branch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import run_cli

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def command_run(repo: Path, env: dict[str, str], task: str, *args: str) -> dict[str, object]:
    result = run_cli(["--agent-type", "command", "--task", task, *args], cwd=repo, env=env)
    assert result.report is not None, result.stderr
    return result.report


def test_list_runs_newest_first(repo: Path, command_env: Callable[..., dict[str, str]]) -> None:
    env = command_env()
    first = command_run(repo, env, "printf '1\\n2\\n' > a.txt", "--branch", "first")
    second = command_run(repo, env, "exit 4", "--branch", "second")
    assert (first["status"], second["status"]) == ("success", "failed")
    listed = run_cli(["--list-runs", "--json"], cwd=repo, env=env)
    assert listed.code == 0, listed.stderr
    found = json.loads(listed.stdout)["runs"]
    assert [r["run_id"] for r in found] == [second["run_id"], first["run_id"]]
    assert [r["branch"] for r in found] == ["second", "first"]
    assert (found[0]["status"], found[0]["exit_code"]) == ("failed", 1)
    assert (found[1]["lines_added"], found[1]["files_changed"]) == (2, 1)
    assert found[1]["duration_s"] == first["duration_s"]
    assert found[1]["task"] == "printf '1\\n2\\n' > a.txt"
    text = run_cli(["--list-runs"], cwd=repo, env=env)
    assert text.code == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split()[:3] == ["when", "branch", "status"]
    assert lines[1].split()[2:4] == ["second", "failed"]
    assert lines[2].split()[2:4] == ["first", "success"]
