"""Bounded results (issue 19, point 8): the result the host reads back, the logs it writes and
the container's own disk each have a cap, and links in the output are never fatal. Each attack
performed in a real run with the command agent against the real engine, next to the same run
without it, which succeeds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import git, run_cli
from fake_anthropic import Turn, bash
from remote_engine import RemoteEngine

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def _run(
    repo: Path, env: dict[str, str], task: str, branch: str, *options: str, timeout: float = 300
) -> tuple[int, dict[str, Any], str]:
    result = run_cli(
        ["--agent-type", "command", "--task", task, "--branch", branch, *options],
        cwd=repo,
        env=env,
        timeout=timeout,
    )
    assert result.report is not None, result.stderr
    return result.code, result.report, result.stderr


# A result under 4 MiB comes back framed in the container's output; a larger one is copied out
# of the stopped container: both are read up to the cap and no further.
@pytest.mark.parametrize("size", [3_000_000, 6_000_000], ids=["framed", "copied-out"])
def test_an_oversized_result_fails_clearly_and_keeps_what_it_can(
    repo: Path, command_env: Callable[..., dict[str, str]], size: int
) -> None:
    """The agent commits a file far larger than --max-result-size: the run fails naming the cap
    and its option, the branch stays (at the base: no truncated bundle is ever imported), and the
    agent's last lines are kept. The same run with a small file succeeds under the same cap."""
    env = command_env()
    task = f"echo working; head -c {size} /dev/urandom > big.bin && git add big.bin"
    code, report, stderr = _run(repo, env, task, "too-big", "--max-result-size", "1m")
    assert code == 1, stderr
    assert report["status"] == "failed"
    assert "--max-result-size (1m)" in report["error"]
    assert "AGENT_WORKER_MAX_RESULT_SIZE" in report["error"]
    assert report["branch"] == "too-big"
    assert git(repo, "rev-parse", "too-big") == git(repo, "rev-parse", "main")
    out = Path(report["run_dir"]) / "out"
    assert not (out / "result.bundle").exists()
    assert "working" in (out / "agent-tail.jsonl").read_text()
    # without the attack
    task = "head -c 100000 /dev/urandom > small.bin && git add small.bin && git commit -qm small"
    code, report, stderr = _run(repo, env, task, "small-enough", "--max-result-size", "1m")
    assert code == 0, stderr
    assert report["status"] == "success"
    assert git(repo, "cat-file", "-s", "small-enough:small.bin").strip() == "100000"


def test_an_agent_printing_past_the_log_cap_fills_no_disk(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    """The agent prints 20 MB on stdout and on stderr: agent.jsonl and container.log stop at
    --max-log-size, each saying so in its last line, the report warns, and the run goes on to
    its end (the agent's commit is kept). The same run printing little has no such warning."""
    env = command_env()
    flood = "head -c 20000000 /dev/zero | tr '\\0' a | fold -w 200"
    task = f"{flood}; {flood} >&2; echo done > done.txt"
    code, report, stderr = _run(repo, env, task, "chatty", "--max-log-size", "1m")
    assert code == 0, stderr
    assert report["status"] == "success"
    assert git(repo, "show", "chatty:done.txt") == "done\n"
    run_dir = Path(report["run_dir"])
    for name in ("agent.jsonl", "container.log"):
        log = run_dir / name
        assert log.stat().st_size <= (1 << 20) + 200, name
        assert log.read_text().rstrip().endswith("the rest was not written"), name
        assert any(
            w.startswith(f"{name} stopped at --max-log-size (1m)") for w in report["warnings"]
        )
    assert (run_dir / "agent-worker.log").stat().st_size <= (1 << 20) + 200
    # without the attack
    code, report, stderr = _run(
        repo, env, "echo quiet > quiet.txt", "quiet", "--max-log-size", "1m"
    )
    assert code == 0, stderr
    assert not [w for w in report["warnings"] if "--max-log-size" in w]
    assert "the rest was not written" not in (Path(report["run_dir"]) / "agent.jsonl").read_text()


@pytest.mark.parametrize("where", ["/tmp", "/var/tmp"])
def test_a_flood_of_the_scratch_directories_stops_at_the_cap(
    repo: Path, command_env: Callable[..., dict[str, str]], where: str
) -> None:
    """/tmp and /var/tmp are tmpfs of --disk at most: writing past it fails in the container
    (no space left), never on the engine's disk, and the agent's failure is the run's."""
    env = command_env()
    task = f"for i in $(seq 1 40); do head -c 10000000 /dev/zero > {where}/flood-$i || exit 7; done"
    code, report, stderr = _run(repo, env, task, "scratch-flood", "--disk", "64m")
    assert code == 1, stderr
    assert report["status"] == "failed"
    assert "exit status 7" in report["error"]
    assert "No space left on device" in report["error"]
    # without the attack
    task = f"head -c 1000000 /dev/zero > {where}/small && ls -l {where}/small > seen.txt"
    code, report, stderr = _run(repo, env, task, "scratch-small", "--disk", "64m")
    assert code == 0, stderr
    assert "1000000" in git(repo, "show", "scratch-small:seen.txt")


def test_a_flood_of_the_home_directory_is_stopped_at_the_cap(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    """The agent writes without end into its home, on the container's own filesystem: the run
    stops it once that passes --disk (as at a timeout: what it committed is kept), and says so.
    The same run writing a small file there succeeds."""
    env = command_env()
    task = (
        "echo kept > kept.txt && git add kept.txt && git commit -qm kept; "
        "while true; do head -c 20000000 /dev/zero >> /home/agent/flood || exit 9; done"
    )
    code, report, stderr = _run(repo, env, task, "home-flood", "--disk", "200m", timeout=240)
    assert code == 1, stderr
    assert report["status"] == "failed"
    assert "--disk (200m" in report["error"]
    assert "AGENT_WORKER_DISK" in report["error"]
    assert git(repo, "show", "home-flood:kept.txt") == "kept\n"
    # without the attack
    task = "head -c 5000000 /dev/zero > /home/agent/small && echo ok > ok.txt"
    code, report, stderr = _run(repo, env, task, "home-small", "--disk", "200m")
    assert code == 0, stderr
    assert report["status"] == "success"


def test_a_flood_of_the_home_directory_on_a_remote_engine_is_stopped_at_the_cap(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], remote_engine: RemoteEngine
) -> None:
    """The same flood by Claude Code's Bash tool, on the remote test engine (vfs storage, which
    cannot cap a container's layer): the watch over TCP stops it. Then a run writing a small
    file there succeeds."""
    flood = "while true; do head -c 20000000 /dev/zero >> /home/agent/flood || exit 9; done"
    fake_api.add_turns(Turn.tool_use(bash(flood)))  # (no turn after it: the agent is killed)
    env = run_env(DOCKER_HOST=remote_engine.plain)
    result = run_cli(
        ["--task", "fill the disk", "--branch", "remote-flood", "--disk", "200m"],
        cwd=repo,
        env=env,
        timeout=600,
    )
    assert result.code == 1, result.stderr
    assert result.report is not None
    assert "--disk (200m" in result.report["error"]
    assert remote_engine.client().containers.list(all=True) == []
    # without the attack
    fake_api.add_turns(
        Turn.tool_use(bash("head -c 5000000 /dev/zero > /home/agent/small && echo ok > ok.txt")),
        Turn.text("done"),
    )
    result = run_cli(
        ["--task", "write a little", "--branch", "remote-small", "--disk", "200m"],
        cwd=repo,
        env=env,
        timeout=600,
    )
    assert result.code == 0, result.stderr
    assert git(repo, "show", "remote-small:ok.txt") == "ok\n"


# (the result small enough to come back framed, or large enough to be copied out)
@pytest.mark.parametrize("size", [1000, 5_000_000], ids=["framed", "copied-out"])
def test_a_symlinked_output_is_never_fatal(
    repo: Path, command_env: Callable[..., dict[str, str]], size: int
) -> None:
    """Links the agent leaves in its output directory: absolute, a loop, one to a directory,
    the session directory and the agent's last lines made links. Skipped, never the end of a
    good run; nothing of them lands in the run directory."""
    env = command_env()
    out = "/agent-worker/out"
    task = (
        f"head -c {size} /dev/urandom > data.bin && "
        f"ln -s /etc/shadow {out}/absolute && ln -s loop {out}/loop && "
        f"ln -s a {out}/b && ln -s b {out}/a && ln -s / {out}/root && "
        f"ln -s /home/agent {out}/session && "
        f"rm -f {out}/agent-tail.jsonl && ln -s {out}/agent-tail.jsonl {out}/agent-tail.jsonl"
    )
    code, report, stderr = _run(repo, env, task, "linked-out")
    assert code == 0, stderr
    assert report["status"] == "success"
    assert git(repo, "cat-file", "-s", "linked-out:data.bin").strip() == str(size)
    kept = Path(report["run_dir"])
    assert [p for p in kept.rglob("*") if p.is_symlink()] == []
    # without the attack
    code, report, stderr = _run(repo, env, f"head -c {size} /dev/urandom > d.bin", "plain-out")
    assert code == 0, stderr
