"""Whole runs: the real CLI, the real image and Claude Code, the suite's fake Anthropic API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import TEST_KEY, containers_of, git, run_cli, snapshot
from fake_anthropic import Turn, bash, edit, write


def numstat(repo: Path, base: str, head: str) -> dict[str, tuple[int | None, int | None]]:
    """git's own per-file counts, renames shown by their new path."""
    out = git(repo, "diff", "--numstat", "-z", "-M", base, head).split("\0")
    counts: dict[str, tuple[int | None, int | None]] = {}
    i = 0
    while i < len(out) and out[i]:
        added, removed, path = out[i].split("\t", 2)
        if not path:
            path, i = out[i + 2], i + 2
        counts[path] = (
            None if added == "-" else int(added),
            None if removed == "-" else int(removed),
        )
        i += 1
    return counts


def report_counts(report: dict[str, Any]) -> dict[str, tuple[int | None, int | None]]:
    return {f["path"]: (f["added"], f["removed"]) for f in report["changes"]["files"]}


def test_multi_turn_session_comes_back_on_the_branch(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    fake_api.add_turns(
        Turn.tool_use(write("/workspace/src/util.py", "def add(a, b):\n    return a + b\n")),
        Turn.tool_use(bash("git add src/util.py && git commit -q -m 'Add util'")),
        Turn.tool_use(edit("/workspace/src/app.py", "return 'hello'", "return 'hello, world'")),
        Turn.tool_use(write("/workspace/notes.txt", "one\ntwo\nthree\n")),
        Turn.text("Added util, changed the greeting, left notes."),
    )
    before = snapshot(repo)
    base = git(repo, "rev-parse", "HEAD").strip()

    result = run_cli(
        ["--task", "Improve the app", "--branch", "agent/improve"], cwd=repo, env=run_env()
    )

    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "success"
    assert report["exit_code"] == 0
    assert report["branch"] == "agent/improve"
    assert report["base_commit"] == base
    head = git(repo, "rev-parse", "agent/improve").strip()
    assert report["head_commit"] == head
    log = git(repo, "log", "--format=%s|%an|%ae", f"{base}..agent/improve").splitlines()
    assert log == [
        "agent-worker: work the agent left uncommitted|agent-worker|agent-worker@localhost",
        "Add util|agent-worker|agent-worker@localhost",
    ]
    assert (
        git(repo, "show", "agent/improve:src/app.py") == "def greet():\n    return 'hello, world'\n"
    )
    assert snapshot(repo) == before

    assert report_counts(report) == numstat(repo, base, head)
    changes = report["changes"]
    assert changes["files_changed"] == 3
    assert changes["lines_added"] == 2 + 1 + 3
    assert changes["lines_removed"] == 1
    served = fake_api.main_usage_total
    assert report["tokens"]["input"] == served.input_tokens
    assert report["tokens"]["output"] == served.output_tokens
    assert report["tokens"]["cache_read"] == served.cache_read_input_tokens
    assert report["tokens"]["cache_creation"] == served.cache_creation_input_tokens
    assert report["tokens"]["total"] == served.input_tokens + served.output_tokens
    assert report["turns"] == 5
    assert report["cost_usd"] > 0
    assert report["agent"]["session_id"]
    assert fake_api.saw_api_key(TEST_KEY)
    assert containers_of(docker_client, report["run_id"]) == []
    run_dir = Path(report["run_dir"])
    assert run_dir.parent == repo / ".git" / "agent-worker" / "runs"
    assert {p.name for p in run_dir.iterdir()} >= {
        "task.md",
        "agent.jsonl",
        "report.json",
        "agent-worker.log",
    }
    assert json.loads((run_dir / "report.json").read_text()) == report
