"""The command line as a user meets it: help, version, and every bad input with its one-line
message and exit code, leaving nothing behind. None of these reach Docker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, clean_env, git, make_repo, run_cli, snapshot


def test_help_and_version_do_not_import_docker_git_or_rich() -> None:
    # nor importlib.metadata (tens of ms cold), which the agent registry needs only for a run
    code = (
        "import sys\n"
        "import agent_worker\n"
        "for argv in (['--help'], ['--version'], ['-h']):\n"
        "    try:\n"
        "        agent_worker.cli(argv, prog_name='agent-worker')\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, exit.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('docker', 'git', 'rich')\n"
        "    or m == 'importlib.metadata')\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "HEAVY []" in done.stdout
    assert "--task TEXT" in done.stdout
    assert "Exit codes:" in done.stdout
    assert "agent-worker, version" in done.stdout


def test_installed_command_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "agent-worker"
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("agent-worker, version ")


def test_every_option_is_in_the_help() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "agent_worker.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for option in (
        "--project",
        "--branch",
        "--task",
        "--task-file",
        "--tasks-file",
        "--jobs",
        "--max-cost",
        "--agent-type",
        "--api-key",
        "--base-url",
        "--model",
        "--max-turns",
        "--timezone",
        "--timeout",
        "--remote-docker",
        "--base-image",
        "--agent-version",
        "--agent-arg",
        "--auth",
        "--list-agents",
        "--ca-cert",
        "--force-rebuild",
        "--json",
        "--report-file",
        "--debug",
        "--env-file",
        "--version",
        "--git-identity",
        "--workspace",
        "--allow-host",
        "--no-firewall",
        "--memory",
        "--cpus",
        "--pids-limit",
    ):
        assert option in done.stdout, option
    from agent_worker_app.config import ENV_KEYS

    for variable in ENV_KEYS.values():
        assert variable in done.stdout, variable


def nothing_left(repo: Path, before: dict[str, object], branches: str) -> None:
    assert snapshot(repo) == before
    assert git(repo, "branch", "--list") == branches
    assert not (repo / ".git" / "agent-worker").exists()


KEY = {"ANTHROPIC_API_KEY": "sk-ant-test-0000000000"}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--timeout", "0"], 2, "--timeout must be a positive number of seconds, got '0'"),
        (["--timeout", "-1"], 2, "--timeout must be a positive number of seconds, got '-1'"),
        (["--timeout", "soon"], 2, "--timeout must be a positive number of seconds"),
        (["--agent-type", "robot"], 2, "unknown agent type 'robot'; known: claude"),
        (["--remote-docker", "tcp//nohost"], 2, "--remote-docker must be a URL starting with"),
        (["--branch", "a..b"], 2, "--branch: 'a..b' is not a valid git branch name"),
        (["--branch", "-x"], 2, "--branch: '-x' is not a valid git branch name"),
        (["--branch", "with space"], 2, "--branch: 'with space' is not a valid git branch name"),
        (["--task", ""], 2, "the task is empty"),
        (["--ca-cert", "/etc/hostname"], 2, "is not a PEM certificate"),
        (["--jobs", "0"], 2, "--jobs must be a positive whole number, got '0'"),
        (["--max-cost", "free"], 2, "--max-cost must be a positive amount of US dollars"),
        (["--task", "a", "--task", "b", "--jobs", "x"], 2, "--jobs must be a positive whole"),
        (["--task", "a", "--task", "b", "--branch", "a..b"], 2, "--branch: 'a..b-1' is not a"),
        (["--tasks-file", "/nonexistent/tasks"], 2, "--tasks-file: cannot read /nonexistent/tasks"),
        (["--task", "a", "--project", ".", "--project", "./"], 2, "--project ./ is given twice"),
        (["--task", "a", "--task", "b", "--continue", "x"], 2, "--continue runs one task on one"),
    ],
)
def test_bad_options(repo: Path, args: list[str], code: int, message: str) -> None:
    before = snapshot(repo)
    argv = args if "--task" in args else ["--task", "do it", *args]
    result = run_cli(argv, cwd=repo, env=clean_env(**KEY))
    assert result.code == code, result.stderr
    assert result.stderr.startswith("agent-worker: error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    nothing_left(repo, before, "* main\n")


def test_missing_api_key_names_the_variable(repo: Path) -> None:
    before = snapshot(repo)
    result = run_cli(["--task", "x"], cwd=repo, env=clean_env())
    assert result.code == 2
    assert "no credential for claude: set one of ANTHROPIC_API_KEY" in result.stderr
    nothing_left(repo, before, "* main\n")


def test_task_file_problems(repo: Path, tmp_path: Path) -> None:
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9\n")
    for path, message in (
        (tmp_path / "missing.md", "no such file or directory"),
        (latin, "not UTF-8 text"),
    ):
        result = run_cli(["--task-file", str(path)], cwd=repo, env=clean_env(**KEY))
        assert result.code == 2
        assert message in result.stderr


def test_a_one_megabyte_task_is_refused(repo: Path) -> None:
    before = snapshot(repo)
    result = run_cli(["--task-file", "-"], cwd=repo, env=clean_env(**KEY), stdin="y" * 1_000_000)
    assert result.code == 2
    assert "the task is 1,000,000 bytes, over the 524,288-byte limit" in result.stderr
    nothing_left(repo, before, "* main\n")


def test_project_that_is_not_a_directory(tmp_path: Path) -> None:
    file = tmp_path / "file.txt"
    file.write_text("x")
    result = run_cli(["--task", "x", "--project", str(file)], cwd=tmp_path, env=clean_env(**KEY))
    assert result.code == 2
    assert "is not a directory" in result.stderr


def test_directory_that_is_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = run_cli(["--task", "x"], cwd=plain, env=clean_env(**KEY))
    assert result.code == 3
    assert "is not a git repository" in result.stderr
    assert list(plain.iterdir()) == []


def test_repository_without_commits(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    result = run_cli(["--task", "x"], cwd=empty, env=clean_env(**KEY))
    assert result.code == 3
    assert "has no commits yet: make a first commit" in result.stderr
    assert not (empty / ".git" / "agent-worker").exists()


@pytest.mark.parametrize("kind", ["modified", "staged", "untracked"])
def test_dirty_tree(repo: Path, kind: str) -> None:
    if kind == "modified":
        (repo / "README.md").write_text("changed\n")
    elif kind == "staged":
        (repo / "new.txt").write_text("new\n")
        git(repo, "add", "new.txt")
    else:
        (repo / "stray.txt").write_text("stray\n")
    before = snapshot(repo)
    result = run_cli(["--task", "x"], cwd=repo, env=clean_env(**KEY))
    assert result.code == 3
    assert "uncommitted changes" in result.stderr
    assert "stash" in result.stderr
    nothing_left(repo, before, "* main\n")


def test_ignored_files_do_not_make_the_tree_dirty(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {".gitignore": "build/\n", "a.txt": "a\n"})
    (repo / "build").mkdir()
    (repo / "build" / "out.o").write_text("binary")
    from agent_worker_app import git_manager

    ws = git_manager.preflight(repo, "b1", branch_given=True)
    assert ws.branch == "b1"


def test_existing_branch(repo: Path) -> None:
    git(repo, "branch", "taken")
    before = snapshot(repo)
    result = run_cli(["--task", "x", "--branch", "taken"], cwd=repo, env=clean_env(**KEY))
    assert result.code == 3
    assert "branch 'taken' already exists" in result.stderr
    nothing_left(repo, before, "* main\n  taken\n")


def test_unreachable_docker_url(repo: Path) -> None:
    before = snapshot(repo)
    result = run_cli(
        ["--task", "x", "--remote-docker", "tcp://127.0.0.1:9"],
        cwd=repo,
        env=clean_env(**KEY),
        timeout=120,
    )
    assert result.code == 3
    assert "cannot reach the Docker engine at tcp://127.0.0.1:9" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    nothing_left(repo, before, "* main\n")


def test_no_engine_on_a_local_socket(repo: Path, tmp_path: Path) -> None:
    """The local socket is reached without docker-py (api.EngineAPI): the same one-line error."""
    before = snapshot(repo)
    socket_url = f"unix://{tmp_path}/no-engine.sock"
    result = run_cli(["--task", "x", "--remote-docker", socket_url], cwd=repo, env=clean_env(**KEY))
    assert result.code == 3
    assert (
        f"cannot reach the Docker engine at {socket_url} (No such file or directory): start "
        "Docker, or point --remote-docker / DOCKER_HOST at a running engine"
    ) in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    nothing_left(repo, before, "* main\n")


def test_json_mode_reports_errors_as_json(repo: Path) -> None:
    import json

    result = run_cli(["--task", "x", "--json"], cwd=repo, env=clean_env())
    assert result.code == 2
    payload = json.loads(result.stdout)
    assert payload["status"] == "error"
    assert payload["exit_code"] == 2
    assert "ANTHROPIC_API_KEY" in payload["error"]


def test_the_checkout_script_runs_directly() -> None:
    done = subprocess.run(
        [str(ROOT / "agent_worker.py"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin"),
    )
    assert done.stdout.startswith("agent-worker, version ")


def test_an_internal_error_exits_4_and_names_a_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from agent_worker_app import agent_worker, config
    from agent_worker_app.console import Env

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(config, "load", broken)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    code = agent_worker.main({"task": "x"}, Env(stdout=out, stderr=err, stdin=io.StringIO()))
    assert code == 4
    line = err.getvalue()
    assert line.startswith("agent-worker: error: internal error (RuntimeError: a bug")
    assert line.count("\n") == 1
    log = Path(line.rsplit("with the log ", 1)[1].strip())
    assert log.is_file()
    assert "Traceback" in log.read_text()
    assert "RuntimeError" in log.read_text()


def test_the_wheel_carries_the_container_files_under_one_directory(tmp_path: Path) -> None:
    import shutil
    import zipfile

    source = tmp_path / "source"  # setuptools builds in the source tree: keep the checkout clean
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", ".*_cache", "tests", "bench"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("agent_worker-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"agent_worker_app"}
    for name in (
        "container/agent_inside.sh",
        "container/init-firewall.sh",
        "container/dns-names.pl",
        "container/credential-gate.py",
        "agent_worker.py",
        "agents/claude_agent.py",
    ):
        assert f"agent_worker_app/{name}" in names, name
    assert modes["agent_worker_app/container/agent_inside.sh"] & 0o111


def test_report_file_gets_the_error_too(repo: Path) -> None:
    import json

    report = repo.parent / "out" / "report.json"
    report.parent.mkdir()
    result = run_cli(["--task", "x", "--report-file", str(report)], cwd=repo, env=clean_env())
    assert result.code == 2
    payload = json.loads(report.read_text())
    assert payload["status"] == "error"
    assert "ANTHROPIC_API_KEY" in payload["error"]
