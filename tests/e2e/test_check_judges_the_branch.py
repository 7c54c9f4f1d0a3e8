"""The check judges the branch, not the agent's container: it runs in a fresh container from the
run's image, on a clean checkout of the branch's final commit, with a fresh home and setup's
paths as setup left them, offline. Each attack is an agent (the command agent: its task is a
bash script run as the agent user) that fixes nothing and plants a bypass where the check used
to see it; each run must fail its check. The same run with a real fix passes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from projects import python_project

from conftest import containers_of, git, make_repo, run_cli, runtime_env

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

COLD_BUILD_S = 1800  # the Python project's environment layer (pytest from PyPI), if not built yet
HOME_BIN = "/home/agent/.local/bin"  # on the project's PATH, as pipx, cargo or go install make it
PROJECT_PATH = f"{HOME_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ENVIRONMENT = f"""check = "python3 -m unittest -q test_calc"

[env]
PATH = "{PROJECT_PATH}"
"""

FIX = "sed -i 's/a - b/a + b/' calc.py"

# Each plants a way for the check to pass without a fix, outside the agent's commits.
HOME_ATTACKS = {
    # a wrapper earlier on the project's PATH, in the agent's home: `python3` that passes
    "a wrapper on PATH in the home": (
        f"mkdir -p {HOME_BIN} && printf '#!/bin/sh\\nexit 0\\n' > {HOME_BIN}/python3"
        f" && chmod +x {HOME_BIN}/python3 && python3 -m unittest -q test_calc"
    ),
    # a .pth file in the user site (the home): Python runs it at every start, and it ends the
    # interpreter with success before a test runs
    "a .pth file in the home's user site": (
        'site=$(/usr/bin/python3 -m site --user-site) && mkdir -p "$site"'
        " && echo 'import os; os._exit(0)' > \"$site/agent-worker-bypass.pth\""
        " && /usr/bin/python3 -m unittest -q test_calc"
    ),
}


def unittest_project(path: Path) -> Path:
    return make_repo(
        path,
        {
            ".agent-worker/environment.toml": ENVIRONMENT,
            "calc.py": "def add(a, b):\n    return a - b\n",
            "test_calc.py": "import unittest\n\nfrom calc import add\n\n\n"
            "class T(unittest.TestCase):\n    def test_add(self):\n"
            "        self.assertEqual(add(2, 3), 5)\n",
        },
    )


def command(*args: str) -> list[str]:
    return ["--agent-type", "command", *args]


@pytest.mark.parametrize("attack", sorted(HOME_ATTACKS))
def test_a_bypass_planted_in_the_home_does_not_pass_the_check(
    tmp_path: Path, command_env: Callable[..., dict[str, str]], docker_client: Any, attack: str
) -> None:
    repo = unittest_project(tmp_path / "project")
    result = run_cli(
        command("--task", HOME_ATTACKS[attack], "--branch", "bypass"),
        cwd=repo,
        env=command_env(),
    )
    # in the agent's own container the bypass works: its task (which ends with the check's
    # own command) succeeded, so the agent's part of the run is a success
    assert result.code == 1, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "failed"
    check = report["check"]
    assert check["ran"] is True
    assert check["passed"] is False
    assert check["exit_code"] == 1
    assert any("FAILED (failures=1)" in line for line in check["output_tail"])
    assert "the check 'python3 -m unittest -q test_calc' failed" in report["error"]
    assert "Checking the branch in a fresh container" in result.stderr
    assert containers_of(docker_client, report["run_id"]) == []  # the check's container too


def test_the_same_run_with_a_real_fix_passes_the_check(
    tmp_path: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    repo = unittest_project(tmp_path / "project")
    result = run_cli(command("--task", FIX, "--branch", "fixed"), cwd=repo, env=command_env())
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "success"
    assert report["check"]["passed"] is True
    assert git(repo, "show", "fixed:calc.py") == "def add(a, b):\n    return a + b\n"


def test_the_check_sees_the_commit_and_nothing_else_of_the_agents_container(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    """The agent's uncommitted work (committed by agent-worker) is what the check sees, on a
    clean checkout of the branch's final commit; its home, /tmp and untracked files stay
    behind."""
    task = (
        "echo work > work.txt; echo mine > ~/planted; echo mine > /tmp/planted;"
        " echo scratch > untracked.log; echo 'untracked.log' >> .git/info/exclude"
    )
    check = (
        "git rev-parse HEAD; git status --porcelain | wc -l; cat work.txt;"
        " ls ~/planted /tmp/planted untracked.log 2>&1 | wc -l; id -un; true"
    )
    result = run_cli(
        command("--task", task, "--branch", "seen", "--check", check), cwd=repo, env=command_env()
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    tail = report["check"]["output_tail"]
    assert tail[0] == report["head_commit"] == git(repo, "rev-parse", "seen").strip()
    assert git(repo, "log", "-1", "--format=%s", "seen").startswith("agent-worker: work the agent")
    assert tail[1:] == ["0", "work", "3", "agent"]  # clean, the work, none of the three left


def test_the_check_has_no_network(
    repo: Path, command_env: Callable[..., dict[str, str]], target: str
) -> None:
    """The agent may reach an allowed host; the check, in the same run, reaches nothing."""
    probe = f"curl -s -o /dev/null --max-time 5 http://{target}:8080/"
    result = run_cli(
        command(
            *("--task", f'{probe}; echo "agent probe exit=$?"'),
            *("--allow-host", f"{target}:8080", "--branch", "online"),
            *("--check", f'{probe}; status=$?; echo "check probe exit=$status"; exit $status'),
        ),
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 1, result.stderr
    assert "agent probe exit=0" in result.stderr
    report = result.report
    assert report is not None
    check = report["check"]
    assert check["passed"] is False
    assert check["exit_code"] not in (0, None)
    assert check["output_tail"][-1].startswith("check probe exit=")
    assert check["output_tail"][-1] != "check probe exit=0"


def test_a_bypass_planted_in_setups_venv_does_not_pass_the_check(
    tmp_path: Path, command_env: Callable[..., dict[str, str]], runtime: str
) -> None:
    """Setup made /workspace/.venv (untracked, kept out of the agent's commits); the agent
    plants a .pth in it that ends every Python with success, and fixes nothing. The check's
    container has the .venv as setup left it. With the fix, the same run passes. (Under
    gVisor's 2022 kernel, which refuses `ls`'s statx, the .venv once went into the agent's
    commits, planted .pth and all, and the check passed.)"""
    repo = python_project(tmp_path / "py")
    attack = (
        "site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')"
        " && echo 'import os; os._exit(0)' > \"$site/agent-worker-bypass.pth\""
        " && python -m pytest -q"  # passes here, in the agent's container
    )
    env = command_env(**runtime_env(runtime))
    attacked = run_cli(
        command("--task", attack, "--branch", "venv-bypass"),
        cwd=repo,
        env=env,
        timeout=COLD_BUILD_S,
    )
    assert attacked.code == 1, attacked.stderr
    report = attacked.report
    assert report is not None
    assert report["status"] == "failed"
    assert report["check"]["passed"] is False
    assert any("1 failed" in line for line in report["check"]["output_tail"])
    assert [f["path"] for f in report["changes"]["files"]] == []  # nothing committed

    fixed = run_cli(
        command("--task", "sed -i 's/a - b/a + b/' calc.py", "--branch", "venv-fix"),
        cwd=repo,
        env=env,
    )
    assert fixed.code == 0, fixed.stderr
    assert fixed.report is not None
    assert fixed.report["check"]["passed"] is True
    assert any("1 passed" in line for line in fixed.report["check"]["output_tail"])


def test_a_batch_checks_each_run_in_its_own_container(
    tmp_path: Path, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    """--jobs 2: each run's check judges its own branch (one fixed, one attacked)."""
    repo = unittest_project(tmp_path / "project")
    report_file = tmp_path / "batch.json"
    attack = HOME_ATTACKS["a wrapper on PATH in the home"]
    args = ["--jobs", "2", "--branch", "many", "--json", "--report-file", str(report_file)]
    result = run_cli(command(*args, "--task", FIX, "--task", attack), cwd=repo, env=command_env())
    assert result.code == 1, result.stderr
    runs = json.loads(report_file.read_text())["runs"]
    assert [(r["branch"], r["status"], r["check"]["passed"]) for r in runs] == [
        ("many-1", "success", True),
        ("many-2", "failed", False),
    ]
    for n in (1, 2):
        assert f"[{n}/2 many-{n}] Checking the branch in a fresh container" in result.stderr
    assert all(containers_of(docker_client, r["run_id"]) == [] for r in runs)


def test_maintenance_prepares_the_checks_checkout_offline(
    tmp_path: Path, command_env: Callable[..., dict[str, str]], target: str
) -> None:
    """The maintenance commands run again in the check's container, before the check: what they
    make of the checkout (here an ignored, generated file) is there for it. They run offline
    there: one that needs the network fails, and the check did not run, saying why."""
    repo = make_repo(tmp_path / "project", {".gitignore": "generated.txt\n", "a.txt": "a\n"})
    generate = "echo made-by-maintenance > generated.txt"
    made = run_cli(
        command(
            *("--task", "rm generated.txt", "--branch", "generated"),
            *("--maintenance", generate, "--check", "cat generated.txt"),
        ),
        cwd=repo,
        env=command_env(),
    )
    assert made.code == 0, made.stderr
    assert made.report is not None
    assert made.report["check"]["output_tail"] == ["made-by-maintenance"]
    download = f"curl -sf -o /dev/null --max-time 5 http://{target}:8080/"
    offline = run_cli(
        command(
            *("--task", "true", "--branch", "needs-network", "--allow-host", f"{target}:8080"),
            *("--maintenance", download, "--check", "true"),
        ),
        cwd=repo,
        env=command_env(),
    )
    assert offline.code == 1, offline.stderr
    report = offline.report
    assert report is not None
    assert report["status"] == "failed"
    assert report["check"]["ran"] is False
    assert "the check 'true' did not run (maintenance command 1 of 1 failed" in report["error"]
    assert "(the check did not start)" in report["error"]
    assert report["branch"] == "needs-network"  # the agent's part (its maintenance) went well
