"""agent-worker installed from its wheel, next to a distribution with top-level `agents` and
`config` modules and the plugin distribution in tests/plugin: one import name per module, no
shadowing, the built-ins found through the installed entry points, a plugin that cannot be
used refused in one line, and a plugin agent that runs a task end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, clean_env, containers_of, git, make_repo

COLLIDER = {
    "pyproject.toml": """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "collider"
version = "1.0"

[tool.setuptools]
py-modules = ["config"]
packages = ["agents"]
""",
    "config.py": "WHO = 'collider'\n",
    "agents/__init__.py": "WHO = 'collider'\n",
}


def pip(python: Path, *args: str) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with agent-worker's wheel, the collider and the plugin."""
    work = tmp_path_factory.mktemp("wheel-install")
    collider = work / "collider"
    for name, text in COLLIDER.items():
        (collider / name).parent.mkdir(parents=True, exist_ok=True)
        (collider / name).write_text(text)
    wheels = work / "wheels"
    for source in (ROOT, collider, ROOT / "tests" / "plugin"):
        pip(Path(sys.executable), "wheel", "--no-deps", "-w", str(wheels), str(source))
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    pip(python, "install", *map(str, sorted(wheels.glob("*.whl"))))
    return env_dir


def python_in(installed: Path, code: str, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    """python -c code in the installed environment."""
    return subprocess.run(
        [str(installed / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_each_module_has_one_name_and_shadows_nothing(installed: Path) -> None:
    probe = (
        "import json, sys, agents, config\n"
        "from agent_worker_app import agent_worker\n"
        "from agent_worker_app.agents import base_agent\n"
        "import aw_echo_plugin\n"
        "ours = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('agent_worker_app', 'agents', 'config', 'errors', 'report', 'console'))\n"
        "print(json.dumps({'agents': agents.WHO, 'config': config.WHO, 'modules': ours,\n"
        "  'plugin_base': aw_echo_plugin.BaseAgent is base_agent.BaseAgent}))\n"
    )
    done = python_in(installed, probe, cwd=installed)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["agents"] == "collider"  # the other distribution's modules stay theirs
    assert seen["config"] == "collider"
    assert seen["plugin_base"] is True
    assert {m.split(".")[0] for m in seen["modules"]} == {"agent_worker_app", "agents", "config"}
    assert "agents.base_agent" not in seen["modules"]


def test_list_agents_shows_the_plugin_and_warns_of_the_unusable_ones(installed: Path) -> None:
    done = subprocess.run(
        [str(installed / "bin" / "agent-worker"), "--list-agents"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for name in ("claude  (built-in)", "codex  (built-in)", "command  (built-in)"):
        assert name in done.stdout
    assert "echo  (agent-worker-echo-plugin)" in done.stdout
    assert "credential: ECHO_TOKEN (--auth token)" in done.stdout
    assert "broken  (agent-worker-echo-plugin)" in done.stdout
    assert "aw_no_such_module:Agent (from agent-worker-echo-plugin) cannot be loaded" in (
        done.stderr
    )
    for name in ("abstract", "raising", "claude"):
        assert f"{name}  (agent-worker-echo-plugin)" in done.stdout
    assert (
        "agent-worker: warning: agent plugin aw_broken_agents:Abstract (from "
        "agent-worker-echo-plugin) cannot be used: it does not implement parser\n"
    ) in done.stderr
    assert (
        "agent-worker: warning: agent plugin aw_broken_agents:Raising (from "
        "agent-worker-echo-plugin) cannot be used: its constructor raised ValueError: "
        "RAISING_MODE must be set\n"
    ) in done.stderr
    assert (
        "agent-worker: warning: agent plugin aw_echo_plugin:EchoAgent (from "
        "agent-worker-echo-plugin) is ignored: claude is a built-in agent's name\n"
    ) in done.stderr


def list_agents(installed: Path) -> list[str]:
    """The names --list-agents gives, each with where it comes from."""
    done = subprocess.run(
        [str(installed / "bin" / "agent-worker"), "--list-agents"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if not line.startswith(" ")]


@pytest.mark.parametrize(
    ("entry_points", "built_ins"),
    [
        (  # the installed metadata decides: codex left out, another name added
            "[agent_worker.agents]\n"
            "claude = agent_worker_app.agents.claude_agent:ClaudeAgent\n"
            "command = agent_worker_app.agents.command_agent:CommandAgent\n"
            "shout = agent_worker_app.agents.command_agent:CommandAgent\n",
            ["claude", "command", "shout"],
        ),
        (None, ["claude", "codex", "command"]),  # none of agent-worker's: the fallback
    ],
)
def test_the_built_ins_are_the_installed_entry_points(
    installed: Path, entry_points: str | None, built_ins: list[str]
) -> None:
    (dist_info,) = installed.glob("lib/python*/site-packages/agent_worker-*.dist-info")
    declared = dist_info / "entry_points.txt"
    original = declared.read_text()
    assert "claude = agent_worker_app.agents.claude_agent:ClaudeAgent" in original
    try:
        if entry_points is None:
            declared.unlink()
        else:
            declared.write_text(entry_points)
        listed = list_agents(installed)
    finally:
        declared.write_text(original)
    assert [line for line in listed if line.endswith("(built-in)")] == [
        f"{name}  (built-in)" for name in built_ins
    ]
    assert "echo  (agent-worker-echo-plugin)" in listed


def test_a_broken_plugin_is_a_clear_usage_error(installed: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "project")
    done = subprocess.run(
        [str(installed / "bin" / "agent-worker"), "--agent-type", "broken", "--task", "t"],
        capture_output=True,
        text=True,
        cwd=repo,
        env=clean_env(XDG_CONFIG_HOME=str(tmp_path)),
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "cannot be loaded: ModuleNotFoundError" in done.stderr
    assert git(repo, "branch", "--list") == "* main\n"


@pytest.mark.parametrize(
    ("agent_type", "message"),
    [
        (
            "abstract",
            "agent plugin aw_broken_agents:Abstract (from agent-worker-echo-plugin) cannot be "
            "used: it does not implement parser",
        ),
        (
            "raising",
            "agent plugin aw_broken_agents:Raising (from agent-worker-echo-plugin) cannot be "
            "used: its constructor raised ValueError: RAISING_MODE must be set",
        ),
    ],
)
def test_a_plugin_that_cannot_be_used_is_a_one_line_usage_error(
    installed: Path, tmp_path: Path, agent_type: str, message: str
) -> None:
    repo = make_repo(tmp_path / "project")
    done = subprocess.run(
        [str(installed / "bin" / "agent-worker"), "--agent-type", agent_type, "--task", "t"],
        capture_output=True,
        text=True,
        cwd=repo,
        env=clean_env(XDG_CONFIG_HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache")),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"agent-worker: error: {message}\n"
    assert git(repo, "branch", "--list") == "* main\n"


def test_a_plugin_cannot_take_a_built_ins_name(installed: Path, tmp_path: Path) -> None:
    probe = (
        "from agent_worker_app import agents\n"
        "from agent_worker_app.agents.base_agent import AgentSettings\n"
        "print(type(agents.get('claude', AgentSettings())).__module__)\n"
    )
    done = python_in(installed, probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "agent_worker_app.agents.claude_agent\n"


@pytest.mark.docker
@pytest.mark.e2e
def test_the_plugin_runs_a_task_end_to_end(
    installed: Path,
    tmp_path: Path,
    docker_client: Any,
    base_image: str,
    ca_certs: tuple[Path, ...],
) -> None:
    repo = make_repo(tmp_path / "project")
    report_file = tmp_path / "report.json"
    env = clean_env(
        XDG_CONFIG_HOME=str(tmp_path),
        ECHO_TOKEN="echo-secret-0123456789",
        AGENT_WORKER_BASE_IMAGE=base_image,
        AGENT_WORKER_CA_CERT=os.pathsep.join(map(str, ca_certs)),
    )
    done = subprocess.run(
        [
            str(installed / "bin" / "agent-worker"),
            "--agent-type",
            "echo",
            "--model",
            "bonjour",
            "--task",
            "greet",
            "--branch",
            "echoed",
            "--report-file",
            str(report_file),
        ],
        capture_output=True,
        text=True,
        cwd=repo,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(report_file.read_text())
    assert report["status"] == "success"
    assert report["agent"]["type"] == "echo"
    assert report["agent"]["version"] == "1.0"
    assert report["tokens"]["input"] == 11
    assert report["tokens"]["output"] == 7
    assert report["cost_usd"] == 0.25
    assert git(repo, "show", "echoed:echo.txt") == "bonjour\ntask: greet\n"
    assert "echo-secret-0123456789" not in done.stdout + done.stderr
    assert containers_of(docker_client, report["run_id"]) == []
