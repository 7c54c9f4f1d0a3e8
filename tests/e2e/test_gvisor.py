"""--runtime: the agent's container under another engine runtime (gVisor's runsc, which
scripts/gvisor registers with the suite's engine), reported as such; an unknown one is exit 3
naming the engine's; its firewall held by a network companion (rules inside gVisor's sandbox
would not act on its network). The sandbox's and the credential's own tests (limits among them:
a memory hog, a process flood) run under both runtimes (the runtime fixture)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, git, make_repo, run_cli, snapshot

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

COMMIT = "echo hi > f.txt && git add f.txt && git commit -qm hi && dmesg 2>&1 | head -n 1"


def _repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "project", {"README.md": "a project\n"})


def test_the_agent_runs_under_runsc_and_the_report_says_so(
    tmp_path: Path, runsc: str, command_env: Callable[..., dict[str, str]]
) -> None:
    repo = _repo(tmp_path)
    args = ["--agent-type", "command", "--task", COMMIT, "--no-firewall"]
    # the check's fresh container runs repository code too: under the same runtime
    check = ["--check", "test -f f.txt && dmesg | head -n 1"]
    done = run_cli(
        [*args, *check, "--runtime", runsc, "--branch", "gvisor"], cwd=repo, env=command_env()
    )
    assert done.code == 0, done.stderr
    assert done.report is not None
    assert done.report["runtime"] == "runsc"
    assert done.report["check"]["passed"] is True
    assert "Starting gVisor" in " ".join(done.report["check"]["output_tail"])
    assert "Runtime    ran under runsc" in done.stdout
    assert git(repo, "show", "gvisor:f.txt") == "hi\n"
    # gVisor's own kernel answered the agent, not the host's
    log = Path(done.report["run_dir"]) / "agent.jsonl"
    assert "gVisor" in log.read_text(), log.read_text()
    # the same run on the engine's default runtime says so too
    plain = run_cli([*args, "--branch", "plain"], cwd=repo, env=command_env())
    assert plain.code == 0, plain.stderr
    assert plain.report is not None
    assert plain.report["runtime"] == "runc"
    assert "Runtime" not in plain.stdout
    assert "gVisor" not in (Path(plain.report["run_dir"]) / "agent.jsonl").read_text()


def test_under_runsc_a_network_companion_holds_the_firewall_and_goes_with_the_run(
    tmp_path: Path,
    runsc: str,
    command_env: Callable[..., dict[str, str]],
    docker_client: Any,
    target: str,
) -> None:
    """gVisor's network is not the kernel's: rules inside its sandbox would not act. The run's
    network companion holds them: the agent reaches what is allowed, is refused the rest (and
    the report says so), cannot touch the rules, and the companion is gone with the run."""
    repo = _repo(tmp_path)
    probe = (
        "curl -s -o /dev/null -w 'allowed=%{http_code}\\n' --max-time 5 http://{t}:8080/; "
        "curl -s -o /dev/null -w 'other=%{http_code} ' --max-time 5 http://{t}:8081/; "
        "echo exit=$?; iptables -F OUTPUT 2>/dev/null; echo flush=$?; " + COMMIT
    ).replace("{t}", target)
    done = run_cli(
        [
            *("--agent-type", "command", "--task", probe, "--runtime", runsc),
            *("--allow-host", f"{target}:8080"),
        ],
        cwd=repo,
        env=command_env(),
    )
    assert done.code == 0, done.stderr
    log = (Path(done.report["run_dir"]) / "agent.jsonl").read_text() if done.report else ""
    assert "allowed=200" in log, log
    assert "other=000 exit=7" in log, log  # refused at once
    assert "flush=0" not in log
    assert "Starting gVisor" in log
    assert done.report is not None
    assert done.report["runtime"] == "runsc"
    assert [(b["address"], b["port"], b["count"]) for b in done.report["blocked"]] == [
        (target, 8081, 1)
    ]
    assert "network companion" in done.stderr
    assert not docker_client.containers.list(
        all=True, filters={"label": f"agent-worker.run-id={done.report['run_id']}"}
    )


def test_a_process_flood_under_runsc_is_held_by_gvisors_own_kernel(
    tmp_path: Path, runsc: str, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    """The engine's pids limit would kill gVisor's whole sandbox (its ptrace platform needs a
    host process for each of the sandbox's): under runsc the agent user's processes are held
    by gVisor's own kernel instead (RLIMIT_NPROC at --pids-limit). A fork past it fails, the
    sandbox lives, and the commit made before the flood is kept."""
    repo = _repo(tmp_path)
    flood = (
        "echo before > f.txt && git add f.txt && git commit -qm before && "
        "for i in $(seq 300); do sleep 60 & done 2>/dev/null; echo after"
    )
    done = run_cli(
        [
            *("--agent-type", "command", "--task", flood, "--runtime", runsc, "--no-firewall"),
            *("--pids-limit", "64", "--timeout", "120", "--branch", "flood"),
        ],
        cwd=repo,
        env=command_env(),
        timeout=200,
    )
    assert done.report is not None
    assert done.report["duration_s"] < 120  # ended by the flood's failed fork, not the timeout
    assert git(repo, "show", "flood:f.txt") == "before\n"  # the sandbox lived to hand it back
    assert done.code == 1, done.stderr  # the agent's shell gave up on its fork: failed
    assert done.report["status"] == "failed"
    assert not docker_client.containers.list(
        all=True, filters={"label": f"agent-worker.run-id={done.report['run_id']}"}
    )


def test_an_unknown_runtime_is_exit_3_naming_the_engines(
    tmp_path: Path, runsc: str, command_env: Callable[..., dict[str, str]]
) -> None:
    repo = _repo(tmp_path)
    before = snapshot(repo)
    done = run_cli(
        ["--agent-type", "command", "--task", "true", "--runtime", "kata-nope"],
        cwd=repo,
        env=command_env(),
    )
    assert done.code == 3, done.stderr
    # the engine's list (with its containerd shims on a freshly started dockerd)
    said = re.search(
        r"the Docker engine has no runtime 'kata-nope' \(it has: ([^;]*);", done.stderr
    )
    assert said is not None, done.stderr
    assert {"runc", "runsc"} <= set(said.group(1).split(", "))
    assert snapshot(repo) == before
    listed = subprocess.run(
        [sys.executable, str(ROOT / "agent_worker.py"), "--list-runtimes"],
        cwd=repo,
        env=command_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert {"runc  (default)", "runsc"} <= set(listed.stdout.splitlines())
