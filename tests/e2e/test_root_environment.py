"""A repository's environment file cannot reach what root runs in the container (issue 19): its
PATH, BASH_ENV, dynamic loader and tool variables apply to the agent user only. The attack: the
project's `env` (the README's own Python example puts /workspace/.venv/bin first on PATH) and
an agent that plants programs there, which root would run after the agent ended."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import make_repo, run_cli, tool_outputs
from fake_anthropic import Turn, bash

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# What root runs after the agent (emit_result, blocked_json, run_check, kill_user_processes)
ROOT_TOOLS = ("base64", "jq", "sed", "tar", "cat", "tail", "cut", "du", "pgrep", "pkill")
ENVIRONMENT = """\
check = "true"

[env]
PATH = "/workspace/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASH_ENV = "/workspace/.bashenv"
LD_PRELOAD = "/workspace/planted-library.so"
PERL5OPT = "-Mplanted"
TAR_OPTIONS = "--checkpoint=1 --checkpoint-action=exec=/workspace/.venv/bin/planted"
"""
# Each planted program says who ran it, on stderr (root's goes to container.log), and then does
# what the real one does.
PLANTED = (
    'echo "PLANTED $(basename "$0") ran as uid $(id -u)" >&2; exec "/usr/bin/$(basename "$0")" "$@"'
)


def plant() -> str:
    lines = [
        "mkdir -p .venv/bin",
        f"printf '#!/bin/sh\\n%s\\n' {shlex.quote(PLANTED)} > .venv/bin/planted",
        "chmod +x .venv/bin/planted",
        *(f"ln -s planted .venv/bin/{tool}" for tool in ROOT_TOOLS),
        """echo 'echo "PLANTED bash_env ran as uid $(id -u)" >&2' > .bashenv""",
        "printf x | base64",  # the control: the agent's own PATH finds the planted program
    ]
    return " && ".join(lines)


def test_the_projects_environment_reaches_the_agent_and_never_root(
    tmp_path: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    repo = make_repo(tmp_path / "project", {".agent-worker/environment.toml": ENVIRONMENT})
    fake_api.add_turns(
        Turn.tool_use(bash(plant())),
        Turn.tool_use(bash("echo LD=$LD_PRELOAD PERL5OPT=$PERL5OPT; id -u")),
        Turn.text("planted"),
    )
    # trusted: even the user's trust in the file never reaches root
    result = run_cli(
        [
            *("--task", "t", "--branch", "planted", "--maintenance", "echo maintained"),
            "--trust-environment",
        ],
        cwd=repo,
        env=run_env(XDG_CONFIG_HOME=str(tmp_path / "config")),
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "success"
    assert report["check"]["passed"]
    # the agent user has the project's environment: its PATH, BASH_ENV and loader variables
    outputs = tool_outputs(fake_api)
    assert "PLANTED base64 ran as uid 1000" in outputs[0], outputs
    assert "PLANTED bash_env ran as uid 1000" in outputs[1], outputs
    assert "LD=/workspace/planted-library.so PERL5OPT=-Mplanted" in outputs[1], outputs
    assert "planted-library.so" in outputs[1]  # the loader's complaint: it tried, as the agent
    # root ran none of it: nothing planted ran as root (or as agent-worker's own steps of the
    # agent stage: their output is container.log), perl's DNS forwarder and tar ran as built;
    # the loader's complaint comes only from the project's own commands, the first of which is
    # the maintenance command (its output: "maintained")
    log = (Path(report["run_dir"]) / "container.log").read_text(errors="replace")
    assert "ran as uid 0" not in log
    planted = [line for line in log.splitlines() if "PLANTED" in line]
    # (the project's own commands in the check's container, on the branch the agent committed
    # .bashenv to: the maintenance command and the check, whose bash reads the project's
    # BASH_ENV, as the agent user)
    assert planted == [
        "agent-worker: maintenance: PLANTED bash_env ran as uid 1000",
        "agent-worker: check: PLANTED bash_env ran as uid 1000",
    ]
    assert "the DNS forwarder is not listening" not in log
    before_maintenance = log[: log.index("maintenance 1/1")]
    assert "firewall: egress limited" in before_maintenance
    assert "planted-library.so" not in before_maintenance
    assert "maintenance: maintained" in log
