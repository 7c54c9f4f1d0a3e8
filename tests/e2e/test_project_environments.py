"""Projects with their own environment, end to end: the real CLI, the real Claude Code against
the fake API, setup run at build time from PyPI and npm, the agent running the project's tests
behind the firewall, and the layers reused on the next run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from projects import devcontainer_project, node_project, python_project

from conftest import git, make_repo, run_cli, snapshot, tool_outputs
from fake_anthropic import Turn, bash, edit

COLD_BUILD_S = 1800  # the first run on a machine builds the layers (Debian's npm is large)


def tree(repo: Path, ref: str) -> list[str]:
    return git(repo, "ls-tree", "-r", "--name-only", ref).splitlines()


def test_a_python_project_the_agent_fixes_and_tests_with_pytest_from_setup(
    tmp_path: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    repo = python_project(tmp_path / "py")
    before = snapshot(repo)
    fake_api.add_turns(
        Turn.tool_use(bash("python -m pytest -q")),
        Turn.tool_use(edit("/workspace/calc.py", "return a - b", "return a + b")),
        Turn.tool_use(bash("python -m pytest -q && ls -d .venv && git status --porcelain")),
        Turn.text("Fixed add(); the tests pass."),
    )
    result = run_cli(
        ["--task", "Fix the failing test", "--branch", "agent/fix"],
        cwd=repo,
        env=run_env(),
        timeout=COLD_BUILD_S,
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "success"
    # the environment's check ran after the agent, with the same tools
    assert report["check"]["command"] == "python -m pytest -q"
    assert report["check"]["passed"]
    assert any("1 passed" in line for line in report["check"]["output_tail"])
    outputs = tool_outputs(fake_api)
    assert "1 failed" in outputs[0]
    assert "assert -1 == 5" in outputs[0]
    # pytest came from PyPI during setup, into /workspace/.venv, which the clone kept; the
    # agent's checkout does not see it as a change
    assert "1 passed" in outputs[-1]
    assert outputs[-1].rstrip().endswith(".venv\n M calc.py") or outputs[-1].rstrip().endswith(
        ".venv\nM  calc.py"
    )
    assert git(repo, "show", "agent/fix:calc.py") == "def add(a, b):\n    return a + b\n"
    assert [f["path"] for f in report["changes"]["files"]] == ["calc.py"]
    assert not any(path.startswith(".venv") for path in tree(repo, "agent/fix"))
    assert snapshot(repo) == before

    # The next run reuses every layer: it builds nothing.
    fake_api.add_turns(Turn.tool_use(bash("pytest --version")), Turn.text("ok"))
    again = run_cli(
        # from the base, where the test still fails: a check of its own
        ["--task", "Which pytest?", "--branch", "agent/again", "--check", "pytest --version"],
        cwd=repo,
        env=run_env(),
    )
    assert again.code == 0, again.stderr
    assert again.report is not None
    assert "pytest 8.3.4" in tool_outputs(fake_api)[-1]
    run_dir = Path(again.report["run_dir"])
    assert not list(run_dir.glob("build*.log"))
    log = (run_dir / "agent-worker.log").read_text()
    for layer in ("system", "environment", "agent"):
        assert f"image layer {layer}: " in log
    assert "(built)" not in log


def test_a_node_project_the_agent_fixes_and_tests_with_npm_install_from_setup(
    tmp_path: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    repo = node_project(tmp_path / "node")
    fake_api.add_turns(
        Turn.tool_use(bash("npm test 2>&1")),
        Turn.tool_use(
            edit("/workspace/pad.js", "leftPad(text, width, ' ')", "leftPad(text, width, '0')")
        ),
        Turn.tool_use(bash("npm test 2>&1 && ls node_modules")),
        Turn.text("Pads with zeros now."),
    )
    result = run_cli(
        ["--task", "Fix the failing test", "--branch", "agent/pad"],
        cwd=repo,
        env=run_env(),
        timeout=COLD_BUILD_S,
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert result.report["status"] == "success"
    assert result.report["check"]["command"] == "npm test"
    assert result.report["check"]["passed"]
    outputs = tool_outputs(fake_api)
    assert "# fail 1" in outputs[0]
    assert "# pass 1" in outputs[-1]
    assert "# fail 0" in outputs[-1]
    assert outputs[-1].rstrip().endswith("left-pad")  # installed by setup, from npm
    assert [f["path"] for f in result.report["changes"]["files"]] == ["pad.js"]
    assert not any(path.startswith("node_modules") for path in tree(repo, "agent/pad"))


def test_a_devcontainer_project(
    tmp_path: Path, run_env: Callable[..., dict[str, str]], base_image: str
) -> None:
    repo = devcontainer_project(tmp_path / "dev", base_image)
    task = 'cat prepared.txt && echo "GREETING=$GREETING" && echo note > made-by-agent.txt'
    result = run_cli(
        ["--agent-type", "command", "--task", task, "--branch", "agent/dev"],
        cwd=repo,
        env=run_env(),
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    warning = (
        ".devcontainer/devcontainer.json: not supported, ignored: features "
        "(install what the features give with setup commands)"
    )
    assert warning in report["warnings"]
    assert f"warning: {warning}" in result.stderr
    text = (Path(report["run_dir"]) / "agent.jsonl").read_text()
    # onCreateCommand, then updateContentCommand, ran at build time; containerEnv reached it
    assert "made-by-onCreate\nmade-by-update" in text
    assert "GREETING=hello from containerEnv" in text
    assert tree(repo, "agent/dev") == [
        ".devcontainer/devcontainer.json",
        "README.md",
        "made-by-agent.txt",
    ]


def test_an_environment_file_given_on_the_command_line(
    tmp_path: Path, run_env: Callable[..., dict[str, str]], base_image: str
) -> None:
    """--environment PATH (a .json file: a dev container's) sets up a repository that has no
    environment of its own, exactly as its own file would have: here the devcontainer project's,
    without its features, kept outside the repository."""
    source = devcontainer_project(tmp_path / "dev", base_image)
    text = (source / ".devcontainer" / "devcontainer.json").read_text()
    features = '  "features": {"ghcr.io/devcontainers/features/node:1": {}},\n'
    assert features in text
    given = tmp_path / "elsewhere" / "devcontainer.json"
    given.parent.mkdir()
    given.write_text(text.replace(features, ""))
    repo = make_repo(tmp_path / "plain", {"README.md": "# plain\n"})
    task = 'cat prepared.txt && echo "GREETING=$GREETING"'
    args = ["--agent-type", "command", "--task", task, "--branch", "agent/given"]
    result = run_cli([*args, "--environment", str(given)], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["warnings"] == []
    text = (Path(report["run_dir"]) / "agent.jsonl").read_text()
    assert "made-by-onCreate\nmade-by-update" in text
    assert "GREETING=hello from containerEnv" in text
    assert tree(repo, "agent/given") == ["README.md"]  # setup's files stay out of the commits
