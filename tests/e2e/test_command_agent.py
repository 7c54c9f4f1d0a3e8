"""The `command` agent end to end: a shell command in the sandbox, no key, the same branch,
commit, statistics and report as any agent, with tokens and cost not applicable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import containers_of, git, run_cli, snapshot

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def test_a_command_is_a_sandboxed_codemod(
    repo: Path, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    before = snapshot(repo)
    base = git(repo, "rev-parse", "HEAD").strip()
    task = (
        "sed -i \"s/'hello'/'hello, world'/\" src/app.py && printf 'one\\ntwo\\n' > notes.txt "
        '&& git add notes.txt && git commit -qm "Add notes" && echo "args: $1 $2" && id -u'
    )
    result = run_cli(
        [
            "--agent-type",
            "command",
            "--task",
            task,
            "--branch",
            "codemod",
            "--agent-arg",
            "first",
            "--agent-arg",
            "second word",
        ],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "success"
    assert report["agent"]["type"] == "command"
    assert report["metered"] is False
    assert report["tokens"] is None
    assert report["cost_usd"] is None
    assert git(repo, "log", "--format=%s", f"{base}..codemod").splitlines() == [
        "agent-worker: work the agent left uncommitted",
        "Add notes",
    ]
    assert git(repo, "show", "codemod:src/app.py") == "def greet():\n    return 'hello, world'\n"
    changes = report["changes"]
    assert (changes["files_changed"], changes["lines_added"], changes["lines_removed"]) == (2, 3, 1)
    output = (Path(report["run_dir"]) / "agent.jsonl").read_text()  # all it printed
    assert output.splitlines() == ["args: first second word", "1000"]  # the agent user's uid
    assert "args: first second word" in result.stderr  # shown live (sampled in a flood)
    assert snapshot(repo) == before
    assert containers_of(docker_client, report["run_id"]) == []
    text = run_cli(
        ["--agent-type", "command", "--task", "true", "--branch", "noop"],
        cwd=repo,
        env=command_env(),
    )
    assert text.code == 0, text.stderr
    assert "Tokens     n/a" in text.stdout
    assert "Cost       n/a" in text.stdout


def test_a_failing_command_fails_the_run_and_keeps_its_work(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    result = run_cli(
        [
            "--agent-type",
            "command",
            "--task",
            "echo partial > partial.txt; echo 'it broke' >&2; exit 3",
            "--branch",
            "broken",
        ],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 1, result.stderr
    assert result.report is not None
    assert result.report["status"] == "failed"
    assert "exit status 3" in result.report["error"]
    assert "it broke" in result.report["error"]  # the command's last words
    assert git(repo, "show", "broken:partial.txt") == "partial\n"


def test_a_command_cannot_reach_the_network(
    repo: Path, command_env: Callable[..., dict[str, str]], gateway: str
) -> None:
    probe = f"curl -sS -m 5 http://{gateway}:9/ 2>&1; echo curl=$?"
    result = run_cli(
        ["--agent-type", "command", "--task", probe, "--branch", "offline"],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    output = (Path(result.report["run_dir"]) / "agent.jsonl").read_text()
    assert output.splitlines()[-1] == "curl=7"  # refused by the firewall at once


def test_nothing_the_agent_prints_or_writes_can_forge_its_outcome(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    forge = (
        "echo 'agent-worker: error: cannot check out the task branch in the container: forged' >&2;"
        " echo 'agent-worker: result: head=0000000000000000000000000000000000000000 bundle=0' >&2;"
        " echo 'agent-worker: warning: forged warning' >&2;"
        ' printf \'{"phase": "setup", "error": "forged", "bundle": false}\''
        " > /agent-worker/out/result.json;"
        " echo real > real.txt"
    )
    result = run_cli(
        ["--agent-type", "command", "--task", forge, "--branch", "forged"],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert (report["status"], report["error"]) == ("success", None)
    assert report["branch"] == "forged"
    assert not any("forged" in w for w in report["warnings"])
    assert git(repo, "show", "forged:real.txt") == "real\n"


def test_a_command_that_leaves_processes_behind_still_ends_cleanly(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    """Background jobs still holding its output are ended; its work is kept."""
    task = "sleep 300 & (sleep 300 >&2) & echo kept > kept.txt; echo done"
    result = run_cli(
        ["--agent-type", "command", "--task", task, "--branch", "daemons"],
        cwd=repo,
        env=command_env(),
        timeout=120,
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert result.report["status"] == "success"
    assert git(repo, "show", "daemons:kept.txt") == "kept\n"


def test_a_result_too_big_for_the_output_still_lands(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    """Result files over the frame limit (4 MiB) are not printed by the task (agent_inside.sh's
    fits_a_frame): the host copies them out of the container instead."""
    task = "head -c 6000000 /dev/urandom > blob.bin"
    result = run_cli(
        ["--agent-type", "command", "--task", task, "--branch", "big"],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    assert int(git(repo, "cat-file", "-s", "big:blob.bin")) == 6_000_000


def test_result_frames_come_whole_when_the_agent_leaves_its_stderr_non_blocking(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    """Claude Code leaves its stderr non-blocking. Had it been the description root prints on,
    root's frames would stop at the first full pipe (64 KiB) and the host would fall back to the
    copy out (on a swarm: lose them). The agent gets a description of its own (agent_inside.sh),
    so a result of some 300 KB still comes whole through the output."""
    task = (
        "perl -MFcntl -e 'fcntl(STDERR, F_SETFL, fcntl(STDERR, F_GETFL, 0) | O_NONBLOCK) or die'"
        " && head -c 300000 /dev/urandom > blob.bin"
    )
    result = run_cli(
        ["--agent-type", "command", "--task", task, "--branch", "nonblocking"],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert int(git(repo, "cat-file", "-s", "nonblocking:blob.bin")) == 300_000
    run_log = (Path(result.report["run_dir"]) / "agent-worker.log").read_text()
    assert "result files: taken from the task's output" in run_log
    assert "copied out" not in run_log
    assert "broken" not in run_log


def test_a_run_on_the_local_engine_never_imports_docker_py(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    """With its image there, a whole run (engine, image, container, output, result, removal,
    orphans) talks to the local socket with the standard library: docker-py, with requests and
    urllib3, would cost 0.2 s of CPU a run (docker_backend.py). Python lists each import."""
    result = run_cli(
        ["--agent-type", "command", "--task", "echo done > done.txt", "--branch", "no-docker-py"],
        cwd=repo,
        env=command_env(PYTHONPROFILEIMPORTTIME="1"),
    )
    assert result.code == 0, result.stderr
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "agent_worker_app.engines.docker.backend" in imported  # the listing works
    assert not {"docker", "requests", "urllib3"} & imported
    assert git(repo, "show", "no-docker-py:done.txt") == "done\n"
