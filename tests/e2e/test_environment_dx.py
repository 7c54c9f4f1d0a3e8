"""Writing a project's environment, as a new user does it: --try-environment on a real
pyproject-only src-layout package (setup's `pip install -e .` from PyPI), with no credential;
progress a person reads (a timed line per layer and setup command, none of Docker's step
transcript); failures that quote the command's own reason, colour codes taken out; and
setup_inputs patterns that rebuild the environment when a matched file changes, not otherwise."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from projects import NODE_ENV, SRC_LAYOUT_ENV, SRC_LAYOUT_FILES, src_layout_project

from conftest import git, make_repo, run_cli, snapshot

COLD_BUILD_S = 1800  # the first run on a machine builds the Python system layer (apt)
CREDENTIALS = ("ANTHROPIC", "CLAUDE_CODE_OAUTH", "OPENAI", "CODEX")
TRANSCRIPT = re.compile(r"Step \d+/\d+ :|--->|Removing intermediate container|Successfully built")


def no_credential(env: dict[str, str]) -> dict[str, str]:
    assert not [name for name in env if name.startswith(CREDENTIALS)]
    return env


def assert_left_nothing(repo: Path, before: dict[str, Any], docker_client: Any) -> None:
    assert snapshot(repo) == before
    assert git(repo, "branch", "--list") == "* main\n"
    labelled = docker_client.containers.list(
        all=True, filters={"label": f"agent-worker.project={repo}"}
    )
    assert labelled == []


def steps(report: dict[str, Any]) -> dict[str, tuple[str, float | None]]:
    return {step["name"]: (step["status"], step["seconds"]) for step in report["steps"]}


def test_try_environment_of_a_src_layout_package_and_its_setup_inputs_patterns(
    tmp_path: Path, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    repo = src_layout_project(tmp_path / "tally")
    # a README no run has seen: the environment layer is new on any machine
    (repo / "README.rst").write_text(f"tally\n=====\n\n{uuid.uuid4()}\n")
    git(repo, "commit", "-qam", "readme")
    before = snapshot(repo)
    env = no_credential(command_env())

    tried = run_cli(["--try-environment"], cwd=repo, env=env, timeout=COLD_BUILD_S)
    assert tried.code == 0, tried.stderr
    report = tried.report
    assert report is not None
    assert report["try_environment"]
    done = steps(report)
    assert done["environment layer"][0] == "built"
    assert done["setup 1/2 `python3 -m venv /workspace/.venv`"][0] == "passed"
    install = (
        "setup 2/2 `/workspace/.venv/bin/pip install --disable-pip-version-check -q -e '.[test]'`"
    )
    assert done[install][0] == "passed"
    assert done["check `python -m pytest -q`"][0] == "passed"
    assert all(seconds is not None for status, seconds in done.values() if status != "reused")
    assert "Environment: .agent-worker/environment.toml at " in tried.stdout
    assert "every step passed; no branch was kept" in tried.stdout
    # progress: a timed line per setup command, none of Docker's transcript
    assert re.search(
        r"image: environment: setup 2/2 `/workspace/\.venv/bin/pip install .*` [0-9.]+ s",
        tried.stderr,
    )
    assert re.search(r"image: environment layer built in [0-9.]+ s", tried.stderr)
    assert not TRANSCRIPT.search(tried.stderr), tried.stderr
    # ... which the build log keeps
    run_dir = Path(report["run_dir"])
    assert TRANSCRIPT.search((run_dir / "build-environment.log").read_text())
    assert_left_nothing(repo, before, docker_client)

    # A change setup does not read (a module of the package): the environment is reused.
    (repo / "src/tally/core.py").write_text("def total(items):\n    return sum(list(items))\n")
    git(repo, "commit", "-qam", "core")
    again = run_cli(["--try-environment"], cwd=repo, env=env)
    assert again.code == 0, again.stderr
    assert again.report is not None
    assert steps(again.report)["environment layer"][0] == "reused"
    assert "setup 1/2 `python3 -m venv /workspace/.venv`" not in steps(again.report)

    # A file a pattern matches (src/*/__init__.py, the version setup reads): rebuilt.
    (repo / "src/tally/__init__.py").write_text('"""Counting."""\n\n__version__ = "1.2.0"  # \n')
    git(repo, "commit", "-qam", "version")
    rebuilt = run_cli(["--try-environment"], cwd=repo, env=env, timeout=COLD_BUILD_S)
    assert rebuilt.code == 0, rebuilt.stderr
    assert rebuilt.report is not None
    assert steps(rebuilt.report)["environment layer"][0] == "built"

    # A failing check: exit 1, its own last lines quoted, and still nothing left behind.
    (repo / "src/tally/core.py").write_text("def total(items):\n    return sum(items) - 1\n")
    git(repo, "commit", "-qam", "broken")
    before = snapshot(repo)
    failed = run_cli(["--try-environment"], cwd=repo, env=env)
    assert failed.code == 1, failed.stderr
    assert failed.report is not None
    assert steps(failed.report)["check `python -m pytest -q`"][0] == "failed"
    error = failed.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "agent-worker: failed: the check 'python -m pytest -q' failed (exit status 1)"
    )
    assert "1 failed, 1 passed" in error
    assert "\\033" not in failed.stderr
    assert "kept on the branch" not in error
    assert_left_nothing(repo, before, docker_client)


def test_a_failing_setup_quotes_its_own_reason_and_the_try_exits_3(
    tmp_path: Path, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    # setup_inputs without the package (src/*/__init__.py), where setuptools reads the
    # version that pyproject.toml says is dynamic: pip install -e . fails in setuptools, which
    # says why in the middle of pip's own noise (and of its colour codes, on stderr)
    repo = src_layout_project(tmp_path / "tally")
    toml = SRC_LAYOUT_ENV.replace(', "src/*/__init__.py"', "")
    assert toml != SRC_LAYOUT_ENV
    (repo / ".agent-worker/environment.toml").write_text(toml)
    # a pyproject.toml no run has seen: the environment layer is new on any machine
    (repo / "pyproject.toml").write_text(SRC_LAYOUT_FILES["pyproject.toml"] + f"# {uuid.uuid4()}\n")
    git(repo, "commit", "-qam", "no package for setup")
    before = snapshot(repo)
    result = run_cli(
        ["--try-environment"], cwd=repo, env=no_credential(command_env()), timeout=COLD_BUILD_S
    )
    assert result.code == 3, result.stderr
    error = next(
        line for line in result.stderr.splitlines() if line.startswith("agent-worker: error:")
    )
    failed = "setup command 2/2 of the environment failed (exit code 1): `/workspace/.venv/bin/pip"
    assert f"{failed} install" in error
    # setuptools' own reason, on the error line itself
    assert "its last output: ModuleNotFoundError: tally | " in error
    assert re.search(r"\(full log: /\S+/build-environment-[0-9a-f]+\.log\)$", error)
    for docker_s in ("returned a non-zero code", "Removing intermediate container", "/bin/sh -c"):
        assert docker_s not in result.stderr
    assert "\\033" not in result.stderr
    assert "[91m" not in result.stderr
    assert "\x1b" not in result.stderr
    assert not TRANSCRIPT.search(result.stderr)
    assert_left_nothing(repo, before, docker_client)
    assert not (repo / ".git" / "agent-worker").exists()


def test_try_environment_maintenance_and_check_without_an_environment_layer(
    tmp_path: Path, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    red = "printf '\\\\33[31m%s\\\\33[0m\\\\n'"
    toml = (
        f'maintenance = ["echo prepared", "{red % "maint-broke-here"} >&2; exit 5"]\n'
        f'check = "{red % "check-said-no"}; exit 2"\n'
    )
    repo = make_repo(tmp_path / "p", {".agent-worker/environment.toml": toml})
    before = snapshot(repo)
    env = no_credential(command_env())
    result = run_cli(["--try-environment"], cwd=repo, env=env)
    assert result.code == 1, result.stderr
    assert result.report is not None
    done = list(steps(result.report).values())
    assert done[-3][0] == "passed"
    assert done[-3][1] is not None
    assert done[-2][0] == "failed"
    assert done[-1][0] == "not run"  # the check
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "agent-worker: error: maintenance command 2 of 2 failed (exit status 5)"
    )
    assert error.endswith("its last output: maint-broke-here")
    assert "\\033" not in result.stderr
    assert_left_nothing(repo, before, docker_client)

    # the check alone fails: exit 1, its own words, colours out
    (repo / ".agent-worker/environment.toml").write_text(toml.replace("exit 5", "exit 0"))
    git(repo, "commit", "-qam", "maintenance fixed")
    before = snapshot(repo)
    result = run_cli(["--try-environment"], cwd=repo, env=env)
    assert result.code == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "failed (exit status 2); its last output: check-said-no" in error
    assert "\\033" not in result.stderr
    assert_left_nothing(repo, before, docker_client)

    # usage: an agent's option is refused before anything starts
    refused = run_cli(["--try-environment", "--task", "x"], cwd=repo, env=env)
    assert refused.code == 2
    assert refused.stderr.strip().splitlines() == [
        "agent-worker: error: --try-environment runs no agent and keeps no branch: leave out --task"
    ]
    assert_left_nothing(repo, before, docker_client)


def test_a_terminal_s_progress_has_no_docker_transcript(
    tmp_path: Path, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    from test_terminal import run_on_a_terminal

    marker = uuid.uuid4().hex[:12]  # a setup no run has seen: the layer is built
    toml = f'setup = ["echo built-{marker}", "printf \'%s\\\\n\' one two three"]\ncheck = "true"\n'
    repo = make_repo(tmp_path / "p", {".agent-worker/environment.toml": toml})
    before = snapshot(repo)
    code, screen = run_on_a_terminal(
        ["--try-environment"], cwd=repo, env=no_credential(command_env())
    )
    text = screen.decode(errors="replace")
    assert code == 0, text
    assert f"image: environment: setup 1/2 `echo built-{marker}`" in text
    assert "image: environment: setup 2/2 `printf" in text
    assert not TRANSCRIPT.search(text), text
    assert "every step passed" in text
    assert_left_nothing(repo, before, docker_client)

    # with --debug, the transcript is there too
    (repo / ".agent-worker/environment.toml").write_text(toml.replace(marker, f"{marker}-debug"))
    git(repo, "commit", "-qam", "another setup")
    debug = run_cli(["--try-environment", "--debug"], cwd=repo, env=command_env())
    assert debug.code == 0, debug.stderr
    assert re.search(r"agent-worker: debug: build environment: Step \d+/\d+ :", debug.stderr)


def test_without_an_environment_file_a_python_or_node_project_gets_a_suggestion(
    tmp_path: Path, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    marker = uuid.uuid4().hex[:12]  # a version no run has seen: its environment layer is new
    repo = make_repo(
        tmp_path / "py",
        {
            "pyproject.toml": (
                '[build-system]\nrequires = ["setuptools>=64"]\n'
                'build-backend = "setuptools.build_meta"\n\n'
                f'[project]\nname = "tally"\nversion = "0.0.0+{marker}"\n'
            ),
            "tally.py": "def total(items):\n    return sum(items)\n",
            "test_tally.py": "from tally import total\n\n\n"
            "def test_total():\n    assert total([1, 2]) == 3\n",
        },
    )
    env = no_credential(command_env())
    tried = run_cli(["--try-environment"], cwd=repo, env=env)
    assert tried.code == 0, tried.stderr
    assert "this looks like a Python project (pyproject.toml)" in tried.stderr
    assert "Suggested for this Python project (pyproject.toml)" in tried.stdout
    assert tried.report is not None
    suggested = tried.report["suggested"]
    assert 'setup_inputs = ["pyproject.toml"]' in suggested
    # nothing was applied on its own: no environment layer
    assert [step["name"] for step in tried.report["steps"]] == ["system layer", "agent layer"]

    # the suggestion, committed as it is, works: the package installed, its tests the check
    (repo / ".agent-worker").mkdir()
    (repo / ".agent-worker/environment.toml").write_text(suggested)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the suggested environment")
    before = snapshot(repo)
    applied = run_cli(["--try-environment"], cwd=repo, env=env, timeout=COLD_BUILD_S)
    assert applied.code == 0, applied.stderr
    assert applied.report is not None
    assert steps(applied.report)["check `python -m pytest -q`"][0] == "passed"
    assert "Suggested" not in applied.stdout
    assert "looks like" not in applied.stderr
    assert_left_nothing(repo, before, docker_client)

    # a run says so too (one line), and applies nothing
    node = make_repo(tmp_path / "node", {"package.json": '{"name": "x", "version": "1.0.0"}\n'})
    ran = run_cli(["--agent-type", "command", "--task", "true", "--branch", "b"], cwd=node, env=env)
    assert ran.code == 0, ran.stderr
    assert (
        "agent-worker: no environment file, and this looks like a Node project (package.json): "
        "the agent gets no toolchain of its own; `agent-worker --try-environment` prints a "
        "suggested .agent-worker/environment.toml"
    ) in ran.stderr.splitlines()


def test_npm_s_notarget_is_the_error_line_s_reason(
    tmp_path: Path, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    # a Node project without a lockfile asking for a version that does not exist
    repo = make_repo(
        tmp_path / "node",
        {
            ".agent-worker/environment.toml": NODE_ENV,
            "package.json": (
                f'{{"name": "pad-{uuid.uuid4().hex[:8]}", "version": "1.0.0", "private": true,\n'
                ' "dependencies": {"left-pad": "99.99.99"}}\n'
            ),
        },
    )
    before = snapshot(repo)
    result = run_cli(["--try-environment"], cwd=repo, env=no_credential(command_env()))
    assert result.code == 3, result.stderr
    error = next(
        line for line in result.stderr.splitlines() if line.startswith("agent-worker: error:")
    )
    assert error.startswith(
        "agent-worker: error: setup command 1/1 of the environment failed (exit code 1): "
        "`npm install --no-audit --no-fund`; its last output: "
    )
    assert "notarget No matching version found for left-pad@99.99.99" in error
    assert "complete log of this run" not in error
    assert "\\033" not in result.stderr
    assert "\x1b" not in result.stderr
    assert "returned a non-zero code" not in result.stderr
    assert_left_nothing(repo, before, docker_client)


def test_a_credential_in_the_user_s_environment_never_reaches_the_try(
    tmp_path: Path, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    secret = f"sk-ant-api03-try-{uuid.uuid4().hex}"
    look = f"if env | grep -q {secret[-12:]}; then echo LEAKED; exit 9; fi; echo clean"
    repo = make_repo(
        tmp_path / "p", {".agent-worker/environment.toml": f'maintenance = ["{look}"]\n'}
    )
    before = snapshot(repo)
    env = command_env(ANTHROPIC_API_KEY=secret, CLAUDE_CODE_OAUTH_TOKEN=secret)
    result = run_cli(["--try-environment", "--check", look], cwd=repo, env=env)
    assert result.code == 0, result.stderr
    assert "check: clean" in result.stderr
    assert "maintenance: clean" in result.stderr
    assert secret not in result.stderr + result.stdout
    assert_left_nothing(repo, before, docker_client)

    # the same look finds a value that is passed (a plain variable of the file): it can fail
    leaky = f'maintenance = ["{look}"]\n[env]\nPLAIN = "{secret}"\n'
    (repo / ".agent-worker/environment.toml").write_text(leaky)
    git(repo, "commit", "-qam", "a plain variable")
    before = snapshot(repo)
    found = run_cli(["--try-environment"], cwd=repo, env=env)
    assert found.code == 1, found.stderr
    assert "maintenance: LEAKED" in found.stderr
    assert_left_nothing(repo, before, docker_client)


def test_a_newer_toolchain_from_the_project_s_dockerfile(
    tmp_path: Path,
    command_env: Callable[..., dict[str, str]],
    docker_client: Any,
    base_image: str,
) -> None:
    """The README's newer-toolchain forms: `base_image = "golang:1.22-bookworm"` needs an
    official image, which this machine cannot pull (no registry), so the `dockerfile` form is
    tried here, from the suite's local base image: a toolchain the Dockerfile installs is the
    check's. It needs the user's trust; without it the file's other parts still apply."""
    marker = uuid.uuid4().hex[:12]
    dockerfile = (
        f"FROM {base_image}\n"
        f"RUN printf '#!/bin/sh\\necho go version go1.22.5-{marker}\\n' > /usr/local/bin/go \\\n"
        " && chmod 755 /usr/local/bin/go\n"
    )
    repo = make_repo(
        tmp_path / "p",
        {
            ".agent-worker/Dockerfile": dockerfile,
            ".agent-worker/environment.toml": (
                'dockerfile = ".agent-worker/Dockerfile"\n'
                f'check = "go version | grep -q go1.22.5-{marker}"\n'
            ),
        },
    )
    before = snapshot(repo)
    env = no_credential(command_env(XDG_CONFIG_HOME=str(tmp_path / "config")))
    untrusted = run_cli(["--try-environment"], cwd=repo, env=env)
    assert untrusted.code == 1, untrusted.stderr  # the default image: no such Go
    assert "not applied without your trust: dockerfile" in untrusted.stderr
    assert_left_nothing(repo, before, docker_client)

    trusted = run_cli(
        ["--try-environment", "--trust-environment"], cwd=repo, env=env, timeout=COLD_BUILD_S
    )
    assert trusted.code == 0, trusted.stderr
    assert trusted.report is not None
    done = steps(trusted.report)
    assert done["base layer"][0] == "built"
    assert done[f"check `go version | grep -q go1.22.5-{marker}`"][0] == "passed"
    assert_left_nothing(repo, before, docker_client)


def test_a_check_that_fails_at_once_is_failed_every_time(
    tmp_path: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    """The container waited for the check with `while kill -0 PID; do wait PID; done`: a check
    that had ended (and been reaped by bash) before the first kill -0 left its status at 0 and
    passed. Seen once in nine tries on a loaded machine (the root shell descheduled for the
    77 ms the check took); the status is now waited for first."""
    repo = make_repo(tmp_path / "p", {".agent-worker/environment.toml": 'check = "exit 3"\n'})
    env = command_env()
    codes = [run_cli(["--try-environment"], cwd=repo, env=env).code for _ in range(8)]
    assert codes == [1] * 8
