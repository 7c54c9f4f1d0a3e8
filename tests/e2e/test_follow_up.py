"""A repository's runs over time, with real runs of the command agent: --list-runs, and
--continue on an agent's branch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import git, make_repo, run_cli
from fake_anthropic import Turn, edit, write

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


def test_continue_a_branch_with_the_command_agent(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    env = command_env()
    first = command_run(repo, env, "echo one > one.txt", "--branch", "feature")
    assert first["status"] == "success"
    second = command_run(repo, env, "printf 'a\\nb\\n' > two.txt", "--continue", "feature")
    assert second["status"] == "success", second["error"]
    assert second["branch"] == "feature"
    assert second["base_commit"] == first["head_commit"]  # on top of its last commit
    assert git(repo, "rev-parse", "feature").strip() == second["head_commit"]
    assert git(repo, "show", "feature:one.txt") == "one\n"
    assert git(repo, "show", "feature:two.txt") == "a\nb\n"
    assert [f["path"] for f in second["changes"]["files"]] == ["two.txt"]  # this run's figures
    assert second["continued_from"] == first["run_id"]
    totals = second["branch_totals"]
    assert totals["runs"] == 2
    assert totals["duration_s"] == pytest.approx(
        first["duration_s"] + second["duration_s"], abs=0.01
    )
    assert (totals["tokens_total"], totals["cost_usd"]) == (None, None)  # not applicable

    third = command_run(repo, env, "echo three > three.txt", "--continue", str(second["run_id"]))
    assert third["status"] == "success", third["error"]
    assert third["branch_totals"]["runs"] == 3
    text = run_cli(
        ["--agent-type", "command", "--task", "true", "--continue", "feature"],
        cwd=repo,
        env=env,
    )
    assert text.code == 0, text.stderr
    assert "All runs   4 runs" in text.stdout


def test_continue_refuses_what_it_cannot_continue(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    env = command_env()
    first = command_run(repo, env, "echo one > one.txt", "--branch", "done")
    second = command_run(repo, env, "echo two > two.txt", "--continue", "done")
    git(repo, "branch", "plain")
    user = git(repo, "commit-tree", "-p", "done", "-m", "mine", "done^{tree}").strip()

    def refused(target: str, *extra: str) -> str:
        before = (git(repo, "for-each-ref"), sorted((repo / ".git/agent-worker/runs").iterdir()))
        result = run_cli(
            ["--agent-type", "command", "--task", "true", "--continue", target, *extra],
            cwd=repo,
            env=env,
        )
        assert result.code == 2, result.stderr
        after = (git(repo, "for-each-ref"), sorted((repo / ".git/agent-worker/runs").iterdir()))
        assert after == before  # nothing made, nothing moved
        return result.stderr

    assert "'plain' is not an agent-worker branch" in refused("plain")
    assert "'gone' is not an agent-worker branch" in refused("gone")
    assert f"run {first['run_id']} is not the last run" in refused(str(first["run_id"]))
    assert "--continue and --branch" in refused("done", "--branch", "x")
    git(repo, "update-ref", "refs/heads/done", user, str(second["head_commit"]))
    assert "branch 'done' has moved since its last run" in refused("done")


def message_texts(body: dict[str, Any]) -> list[str]:
    """Every text of a Messages API request's conversation, in order."""
    texts = []
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
            continue
        for block in content:
            if block.get("type") == "text":
                texts.append(block["text"])
            elif block.get("type") == "tool_result":
                inner = block.get("content")
                texts.append(json.dumps(inner) if not isinstance(inner, str) else inner)
    return texts


def test_continue_resumes_claude_codes_session(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    """The second run's requests carry the first run's conversation: Claude Code really resumed
    the session kept in the first run's directory."""
    fake_api.add_turns(
        Turn.tool_use(write("/workspace/greeting.txt", "hello\n")),
        Turn.text("Wrote greeting.txt with the word ZEBRA-FIRST-RUN."),
    )
    first = run_cli(
        ["--task", "Create a greeting file (first task)", "--branch", "talk"],
        cwd=repo,
        env=run_env(),
    )
    assert first.code == 0, first.stderr
    assert first.report is not None
    session_id = first.report["agent"]["session_id"]
    kept = Path(first.report["run_dir"]) / "session" / f"{session_id}.jsonl"
    assert "ZEBRA-FIRST-RUN" in kept.read_text()
    served_first = len(fake_api.main_requests)

    fake_api.add_turns(
        Turn.tool_use(edit("/workspace/greeting.txt", "hello", "hello again")),
        Turn.text("Done."),
    )
    second = run_cli(
        ["--task", "Now say it again (second task)", "--continue", "talk"],
        cwd=repo,
        env=run_env(),
    )
    assert second.code == 0, second.stderr
    report = second.report
    assert report is not None
    assert f"resuming the agent's session {session_id}" in second.stderr
    requests = fake_api.main_requests[served_first:]
    assert requests
    texts = message_texts(requests[0].body)
    first_task = next(i for i, t in enumerate(texts) if "Create a greeting file (first task)" in t)
    earlier_answer = next(i for i, t in enumerate(texts) if "ZEBRA-FIRST-RUN" in t)
    second_task = next(i for i, t in enumerate(texts) if "Now say it again (second task)" in t)
    assert first_task < earlier_answer < second_task
    assert git(repo, "show", "talk:greeting.txt") == "hello again\n"
    assert report["base_commit"] == first.report["head_commit"]
    assert report["branch_totals"]["runs"] == 2
    assert report["branch_totals"]["tokens_total"] == (
        first.report["tokens"]["total"] + report["tokens"]["total"]
    )
    assert report["branch_totals"]["cost_usd"] == pytest.approx(
        first.report["cost_usd"] + report["cost_usd"]
    )
    # Claude Code restored the session's cost with it: what it reported for the second run is
    # the session's whole cost; the run's own is that less the first run's, and the branch's
    # total counts each run once
    assert first.report["agent"]["session_cost_usd"] == first.report["cost_usd"]
    session_cost = report["agent"]["session_cost_usd"]
    assert session_cost > first.report["cost_usd"]
    assert 0 < report["cost_usd"] < session_cost
    assert report["cost_usd"] == pytest.approx(session_cost - first.report["cost_usd"])
    assert report["branch_totals"]["cost_usd"] == pytest.approx(session_cost)


def test_continue_uses_the_environment_the_continued_run_used(
    tmp_path: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    """The attack: the agent rewrites the environment file on its branch (a check that always
    passes) to arm the next run; --continue reads the file where the continued run read it, so
    the real check still judges the next run's work."""
    repo = make_repo(
        tmp_path / "project",
        {".agent-worker/environment.toml": 'check = "grep -q fixed app.txt"\n', "app.txt": "x\n"},
    )
    env = command_env()
    arm = (
        "echo fixed > app.txt && printf 'check = \"true\"\\n' > .agent-worker/environment.toml"
        " && git add -A && git commit -qm 'fix, and arm the next run'"
    )
    first = command_run(repo, env, arm, "--branch", "armed")
    assert first["status"] == "success", first["error"]
    assert first["check"]["command"] == "grep -q fixed app.txt"
    assert git(repo, "show", "armed:.agent-worker/environment.toml") == 'check = "true"\n'
    # the next run breaks the work; the check it gets is the continued run's, which fails
    second = command_run(repo, env, "echo broken > app.txt", "--continue", "armed")
    assert second["check"]["command"] == "grep -q fixed app.txt"
    assert second["check"]["passed"] is False
    assert second["status"] == "failed"
    # without the attack, a continuation whose work passes the same check succeeds
    third = command_run(repo, env, "echo fixed > app.txt", "--continue", "armed")
    assert third["check"]["command"] == "grep -q fixed app.txt"
    assert third["status"] == "success", third["error"]
