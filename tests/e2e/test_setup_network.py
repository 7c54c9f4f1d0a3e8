"""The setup commands (repository code, run at build time) keep the internet but reach no
private, loopback or link-local address unless the user allows it (--setup-allow-net): a
committed setup that reaches for a peer on the Docker bridge (where a cloud runner's metadata
service, the host's services or the engine's own port would be) fails; allowed, it reaches it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, git, make_repo, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def _project(tmp_path: Path, target: str, marker: str) -> Path:
    # the marker keeps each test's environment layer its own: never one another test built
    setup = f"curl -sS -m 10 http://{target}:8080/{marker} -o /workspace/fetched.txt"
    environment = (
        f"setup = [{setup!r}]\ncheck = \"grep -q 'target says hi' /workspace/fetched.txt\"\n"
    )
    return make_repo(
        tmp_path / "project",
        {"README.md": "a project\n", ".agent-worker/environment.toml": environment},
    )


def test_setup_reaches_no_private_address_unless_allowed(
    tmp_path: Path, target: str, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    repo = _project(tmp_path, target, f"closed-{os.getpid()}-{time.time_ns()}")
    refused = run_cli(["--agent-type", "command", "--task", "true"], cwd=repo, env=command_env())
    assert refused.code == 3, refused.stderr
    assert "setup command 1/1 of the environment failed" in refused.stderr
    log = re.search(r"full log: (\S+?\.log)", refused.stderr)
    assert log is not None, refused.stderr
    # refused at once (Docker's build stream cuts stderr into coloured pieces: joined here)
    said = re.sub(r"\x1b\[[0-9;]*m|\n", "", Path(log.group(1)).read_text())
    assert "Couldn't connect to server" in said
    assert git(repo, "branch", "--list", "agent-task-*").strip() == ""  # nothing left behind
    assert not docker_client.containers.list(
        all=True, filters={"label": "agent-worker.setup-network"}
    )

    # the user allows the peer's address: the same setup reaches it, and the check finds what
    # it fetched
    allowed = run_cli(
        ["--agent-type", "command", "--task", "true", "--setup-allow-net", target],
        cwd=repo,
        env=command_env(),
    )
    assert allowed.code == 0, allowed.stderr
    assert allowed.report is not None
    assert allowed.report["check"]["passed"] is True


def test_a_bad_network_is_a_usage_error(
    tmp_path: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    repo = make_repo(tmp_path / "project", {"README.md": "a project\n"})
    done = run_cli(
        ["--agent-type", "command", "--task", "true", "--setup-allow-net", "10.0.0.0/33"],
        cwd=repo,
        env=command_env(),
    )
    assert done.code == 2
    assert "--setup-allow-net must be an address or network" in done.stderr
    assert git(repo, "branch", "--list", "agent-task-*").strip() == ""


HOLD = """
import sys, time
from agent_worker_app.engines.docker.client import connect
from agent_worker_app.images import setup_network
with setup_network.firewalled(connect(None), sys.argv[1], allow=()) as mode:
    print(mode, flush=True)
    time.sleep(600)
"""


def test_the_setup_network_goes_when_agent_worker_is_killed(
    command_image: str, docker_client: Any
) -> None:
    # command_image has iptables (the system layer's): any image of the run's would do
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, command_image],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        mode = holder.stdout.readline().strip()
        ident = mode.removeprefix("container:")
        assert docker_client.containers.get(ident).status == "running"
        # a build step in that network: the gateway (the host) is closed, as the bridge is
        probe = _run_in(
            docker_client,
            command_image,
            mode,
            "curl -sS -m 5 http://$(ip route | awk '/default/ {print $3}'):9/",
        ).decode()
        assert "Couldn't connect to server" in probe, probe
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        for _ in range(100):
            if not docker_client.containers.list(all=True, filters={"id": ident}):
                break
            time.sleep(0.1)
        assert not docker_client.containers.list(all=True, filters={"id": ident})
    finally:
        holder.kill()
        holder.wait()


def test_the_engines_own_address_stays_closed_even_when_allowed(
    target: str, command_image: str, docker_client: Any
) -> None:
    """A network engine's port is root on its host: setup never reaches its address, even
    inside a network the user allowed. (The test's peer stands in for the engine: its address
    is what the client says the engine is at.)"""
    from agent_worker_app.engines.docker.client import client_for
    from agent_worker_app.engines.docker.endpoint import Engine
    from agent_worker_app.images import setup_network

    client = client_for(Engine(None))
    fetch = ["curl", "-sS", "-m", "5", f"http://{target}:8080/"]
    with setup_network.firewalled(client, command_image, allow=(f"{target}/16",)) as mode:
        reached = _run_in(docker_client, command_image, mode, " ".join(fetch))
    assert b"target says hi" in reached  # allowed: the peer answers
    client.api.engine = Engine(f"tcp://{target}:8080")
    with setup_network.firewalled(client, command_image, allow=(f"{target}/16",)) as mode:
        refused = _run_in(docker_client, command_image, mode, " ".join(fetch))
    assert b"Couldn't connect to server" in refused, refused


def _run_in(docker_client: Any, image: str, network_mode: str, script: str) -> bytes:
    """What a build step's script says (stdout and stderr) in that network, as the agent user."""
    container = docker_client.containers.run(
        image, ["bash", "-c", script], network_mode=network_mode, user="agent", detach=True
    )
    try:
        container.wait(timeout=60)
        return bytes(container.logs(stdout=True, stderr=True))
    finally:
        container.remove(force=True)
