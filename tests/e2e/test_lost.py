"""A lost agent-worker (kill -9, a stopped process) costs nothing more and loses nothing: the
container stops its agent by itself, and the next run or --recover brings the work back."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_faults import containers_of_project, start_cli, wait_for_requests

from conftest import git, run_cli
from fake_anthropic import Turn, bash, write

WORK_THEN_A_SLOW_ANSWER = [
    Turn.tool_use(bash("echo one > step1.txt && git add step1.txt && git commit -qm 'Step 1'")),
    Turn.tool_use(write("/workspace/step2.txt", "half done\n")),
    Turn.text("too late", delay=300),
    Turn.text("never asked for"),
]


def wait_until(check: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.2)
    return check()


def exited(docker_client: Any, repo: Path) -> bool:
    left = containers_of_project(docker_client, repo)
    return len(left) == 1 and left[0].status == "exited"


def kill_mid_run(repo: Path, fake_api: Any, env: dict[str, str], docker_client: Any) -> str:
    """Start a run, kill -9 it while the agent waits on the API; the run's id."""
    fake_api.add_turns(*WORK_THEN_A_SLOW_ANSWER)
    proc = start_cli(["--task", "work", "--branch", "lost"], cwd=repo, env=env)
    wait_for_requests(fake_api, 3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    # within 10 s the container has stopped its agent and exited, and the API hears no more
    assert wait_until(lambda: exited(docker_client, repo), 10.0)
    asked = len(fake_api.main_requests)
    time.sleep(2)
    assert len(fake_api.main_requests) == asked == 3
    left = containers_of_project(docker_client, repo)
    assert left[0].labels["agent-worker.pid"] == str(proc.pid)  # kept, for recovery
    return str(left[0].labels["agent-worker.run-id"])


def check_recovered(repo: Path, run_id: str, fake_api: Any) -> None:
    assert git(repo, "log", "--format=%s", "main..lost").splitlines() == [
        "agent-worker: work the agent left uncommitted",
        "Step 1",
    ]
    assert git(repo, "show", "lost:step2.txt") == "half done\n"
    report = json.loads(
        (repo / ".git" / "agent-worker" / "runs" / run_id / "report.json").read_text()
    )
    assert report["status"] == "interrupted"
    assert report["exit_code"] == 130
    assert report["branch"] == "lost"
    assert report["head_commit"] == git(repo, "rev-parse", "lost").strip()
    served = fake_api.main_usage_total
    assert report["tokens"]["input"] == served.input_tokens  # Claude Code's own final figures
    assert report["tokens"]["output"] == served.output_tokens
    assert report["changes"]["files_changed"] == 2


def test_a_killed_run_stops_spending_and_recover_brings_its_work_back(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    run_id = kill_mid_run(repo, fake_api, run_env(), docker_client)
    result = run_cli(["--recover"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    assert f"recovered 2 commits of run {run_id} onto branch lost" in result.stdout
    check_recovered(repo, run_id, fake_api)
    assert containers_of_project(docker_client, repo) == []
    again = run_cli(["--recover"], cwd=repo, env=run_env())
    assert "nothing to recover" in again.stdout


def test_the_next_run_recovers_a_killed_one_too(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    run_id = kill_mid_run(repo, fake_api, run_env(), docker_client)
    served = fake_api.main_usage_total
    fake_api.add_turns(Turn.text("quick"))
    result = run_cli(["--task", "next", "--branch", "next"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    assert f"recovered 2 commits of run {run_id} onto branch lost" in result.stderr
    report = json.loads(
        (repo / ".git" / "agent-worker" / "runs" / run_id / "report.json").read_text()
    )
    assert report["status"] == "interrupted"
    assert report["tokens"]["input"] == served.input_tokens
    assert git(repo, "show", "lost:step2.txt") == "half done\n"
    assert containers_of_project(docker_client, repo) == []


def test_a_stopped_agent_worker_cannot_keep_its_agent_past_the_deadline(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    """SIGSTOP: the process lives but does nothing, its timeout passes unnoticed; the task's own
    deadline (the timeout plus 10 s) ends the agent."""
    fake_api.add_turns(
        Turn.tool_use(write("/workspace/early.txt", "early\n")),
        Turn.text("too late", delay=300),
    )
    # 15 s: Claude Code's start on a loaded machine must not use up the timeout before its
    # second request, the signal to stop agent-worker
    proc = start_cli(
        ["--task", "slow", "--branch", "stopped", "--timeout", "15"], cwd=repo, env=run_env()
    )
    try:
        wait_for_requests(fake_api, 2)
        proc.send_signal(signal.SIGSTOP)
        assert wait_until(lambda: exited(docker_client, repo), 60.0)
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 124, err
    assert git(repo, "show", "stopped:early.txt") == "early\n"
    assert "the task's deadline passed: the task stopped its agent by itself" in out
    assert containers_of_project(docker_client, repo) == []
