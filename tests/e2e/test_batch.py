"""Several tasks in one invocation, for real: the `command` agent in real containers, on real
repositories, at most --jobs at once; a signal in the middle; the --max-cost budget; and four
agent-worker processes at once on one repository."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from agent_worker_app import agents
from agent_worker_app.agent_worker import cache_dir
from agent_worker_app.agents.base_agent import AgentSettings
from agent_worker_app.images import build
from conftest import ROOT, clean_env, git, make_repo, run_cli, snapshot

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# A task that waits for the test to say "go" (a file the test makes in its container): the
# test sees how many run at once without timing anything.
WAIT_FOR_GO = "while [ ! -e /tmp/go ]; do sleep 0.1; done; "


@pytest.fixture
def command_env(base_image: str, command_image: str, ca_certs: tuple[Path, ...]) -> Any:
    def make(**extra: str) -> dict[str, str]:
        settings = {
            "AGENT_WORKER_BASE_IMAGE": base_image,
            "AGENT_WORKER_CA_CERT": os.pathsep.join(str(p) for p in ca_certs),
        }
        return clean_env(**(settings | extra))

    return make


def start_cli(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    empty = cwd.parent / "empty.env"
    empty.touch()
    return subprocess.Popen(
        [sys.executable, str(ROOT / "agent_worker.py"), "--env-file", str(empty), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def project_containers(docker_client: Any, repo: Path, **filters: str) -> list[Any]:
    return list(
        docker_client.containers.list(
            all=True, filters={"label": f"agent-worker.project={repo}", **filters}
        )
    )


def until(what: str, check: Callable[[], Any], timeout: float = 180) -> Any:
    """Poll check() until it gives something true (a hang fails with what was awaited)."""
    end = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.1)
    return value


def has_file(container: Any, path: str) -> bool:
    try:
        return bool(container.exec_run(["test", "-e", path]).exit_code == 0)
    except Exception:
        return False


def go(docker_client: Any, repo: Path, count: int) -> list[Any]:
    """Wait until exactly count tasks of repo are running, then let them finish."""
    running = until(
        f"{count} tasks running at once",
        lambda: (
            (found := project_containers(docker_client, repo, status="running"))
            and len(found) >= count
            and found
        ),
    )
    assert len(running) == count  # never more than --jobs
    for container in running:
        container.exec_run(["touch", "/tmp/go"])
    return running


@pytest.fixture
def cleanup(docker_client: Any, repo: Path) -> Iterator[None]:
    yield
    for container in project_containers(docker_client, repo):
        container.remove(force=True)


def test_several_tasks_run_at_once_each_on_its_own_branch(
    repo: Path, command_env: Callable[..., dict[str, str]], docker_client: Any, cleanup: None
) -> None:
    before = snapshot(repo)
    tasks = [
        f"{WAIT_FOR_GO}printf 'a\\nb\\n' > one.txt",
        f"{WAIT_FOR_GO}echo two > two.txt",
        "sed -i s/hello/bye/ src/app.py",
    ]
    report_file = repo.parent / "batch.json"
    remote = repo.parent / "remote.git"
    git(repo.parent, "init", "-q", "--bare", str(remote))
    args = ["--agent-type", "command", "--jobs", "2", "--branch", "feat", "--json"]
    args += ["--report-file", str(report_file), "--push", str(remote)]
    proc = start_cli(
        [*args, *(a for task in tasks for a in ("--task", task))], cwd=repo, env=command_env()
    )
    go(docker_client, repo, 2)  # the first two, together; the third waits for a free place
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    data = json.loads(stdout)
    assert json.loads(report_file.read_text()) == data
    runs = data["runs"]
    assert [(r["branch"], r["status"], r["exit_code"]) for r in runs] == [
        ("feat-1", "success", 0),
        ("feat-2", "success", 0),
        ("feat-3", "success", 0),
    ]
    assert [r["task"] for r in runs] == tasks
    assert {r["project"] for r in runs} == {str(repo)}
    assert len({r["run_id"] for r in runs}) == 3
    assert git(repo, "show", "feat-1:one.txt") == "a\nb\n"
    assert git(repo, "show", "feat-2:two.txt") == "two\n"
    assert "bye" in git(repo, "show", "feat-3:src/app.py")
    assert git(repo, "ls-tree", "--name-only", "feat-2") == "README.md\nsrc\ntwo.txt\n"
    assert data["totals"] == {
        "tasks": 3,
        "succeeded": 3,
        "failed": 0,
        "skipped": 0,
        "exit_code": 0,
        "duration_s": data["totals"]["duration_s"],
        "tokens_total": None,
        "cost_usd": None,
        "lines_added": 2 + 1 + 1,
        "lines_removed": 1,
        "files_changed": 3,
    }
    for run in runs:  # each run has its own run directory and report, as a single run does
        own = json.loads((Path(run["run_dir"]) / "report.json").read_text())
        assert own["run_id"] == run["run_id"]
        assert own["branch"] == run["branch"]
    for n in (1, 2, 3):  # progress: prefixed lines, as stderr is no terminal
        assert f"[{n}/3 feat-{n}] Agent at work on branch feat-{n}" in stderr
        assert f"[{n}/3 feat-{n}] success (exit 0)" in stderr
    for n in (1, 2, 3):  # --push: each successful run's branch, from the host
        assert git(remote, "rev-parse", f"feat-{n}") == git(repo, "rev-parse", f"feat-{n}")
    assert [r["pushed_to"] for r in runs] == [str(remote)] * 3
    assert snapshot(repo) == before
    assert project_containers(docker_client, repo) == []


def test_tasks_files_and_several_projects(
    tmp_path: Path, command_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    one = make_repo(tmp_path / "one")
    two = make_repo(tmp_path / "two")
    other = make_repo(tmp_path / "other")
    plain = tmp_path / "tasks.txt"
    plain.write_text("# made by the test\necho first > first.txt\n\necho second > second.txt\n")
    result = run_cli(
        [
            "--agent-type",
            "command",
            "--tasks-file",
            str(plain),
            "--project",
            str(one),
            "--project",
            str(two),
            "--jobs",
            "2",
            "--branch",
            "plain",
        ],
        cwd=one,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    got = [(Path(r["project"]).name, r["branch"], r["status"]) for r in result.report["runs"]]
    assert got == [
        ("one", "plain-1", "success"),
        ("two", "plain-1", "success"),
        ("one", "plain-2", "success"),
        ("two", "plain-2", "success"),
    ]
    for repo in (one, two):
        assert git(repo, "show", "plain-1:first.txt") == "first\n"
        assert git(repo, "show", "plain-2:second.txt") == "second\n"
    # the summary table, as a pipe gets it
    lines = result.stdout.splitlines()
    assert lines[0] == "AGENT BATCH REPORT (exit 0)"
    assert lines[2].split()[:4] == ["1", "plain-1", "one", "success"]
    assert lines[-1].split()[:4] == ["total", "4/4", "succeeded", lines[-1].split()[3]]

    jsonl = tmp_path / "tasks.jsonl"
    lines_in = [
        {"task": "echo mine > mine.txt", "branch": "own-name", "project": "other"},
        {"task": "echo 'two\nlines' > multi.txt", "agent_type": "command"},
    ]
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines_in))
    result = run_cli(
        ["--agent-type", "command", "--tasks-file", str(jsonl), "--project", str(one), "--json"],
        cwd=tmp_path,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(Path(r["project"]).name, r["status"]) for r in data["runs"]] == [
        ("other", "success"),
        ("one", "success"),
    ]
    assert data["runs"][0]["branch"] == "own-name"
    assert git(other, "show", "own-name:mine.txt") == "mine\n"
    generated = data["runs"][1]["branch"]
    assert generated.startswith("agent-task-")
    assert generated.endswith("-2")
    assert git(one, "show", f"{generated}:multi.txt") == "two\nlines\n"
    assert project_containers(docker_client, other) == []

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "fine"}\n{"task": "x", "brnach": "typo"}\n')
    before = snapshot(one)
    result = run_cli(
        ["--agent-type", "command", "--tasks-file", str(bad)], cwd=one, env=command_env()
    )
    assert result.code == 2
    assert result.stderr == (
        f"agent-worker: error: {bad}:2: unknown key 'brnach' "
        "(a line has task, branch, project, agent_type)\n"
    )
    assert snapshot(one) == before
    assert git(one, "branch", "--list", "agent-task-*") == f"  {generated}\n"


def test_the_exit_code_is_the_worst_runs(
    tmp_path: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    clean = make_repo(tmp_path / "clean")
    dirty = make_repo(tmp_path / "dirty")
    (dirty / "README.md").write_text("changed\n")
    tasks = ["--task", "exit 3", "--task", "sleep 300", "--task", "true"]
    common = ["--agent-type", "command", "--timeout", "20", "--jobs", "3", "--json", *tasks]
    result = run_cli(
        [*common, "--project", str(clean), "--project", str(dirty)], cwd=clean, env=command_env()
    )
    data = json.loads(result.stdout)
    got = [(Path(r["project"]).name, r["status"], r["exit_code"]) for r in data["runs"]]
    assert got == [
        ("clean", "failed", 1),
        ("dirty", "error", 3),
        ("clean", "timeout", 124),
        ("dirty", "error", 3),
        ("clean", "success", 0),
        ("dirty", "error", 3),
    ]
    assert "uncommitted changes" in data["runs"][1]["error"]
    assert (result.code, data["totals"]["exit_code"]) == (3, 3)  # precondition > timeout > failed
    # as a GitHub Actions step: the job summary holds the batch's table, the outputs its totals
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    ci = command_env(GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(outputs))
    result = run_cli([*common, "--project", str(clean), "--branch", "again"], cwd=clean, env=ci)
    assert result.code == 124, result.stderr
    assert [r["exit_code"] for r in json.loads(result.stdout)["runs"]] == [1, 124, 0]
    table = summary.read_text()
    assert "### agent-worker: 1 of 3 tasks succeeded" in table
    for n in (1, 2, 3):
        assert f"| again\\-{n} |" in table
    total = [line for line in table.splitlines() if line.startswith("| **total** |")]
    assert len(total) == 1
    assert "| exit 124 |" in total[0]
    assert "exit_code=124\n" in outputs.read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_every_running_task_and_starts_no_other(
    repo: Path,
    command_env: Callable[..., dict[str, str]],
    docker_client: Any,
    sig: signal.Signals,
    cleanup: None,
) -> None:
    task = (
        "echo $RANDOM > work.txt && git add work.txt && git commit -qm 'Work' "
        "&& echo more > more.txt && touch /tmp/committed && sleep 300"
    )
    args = ["--agent-type", "command", "--jobs", "2", "--branch", "stop", "--json"]
    proc = start_cli([*args, *(["--task", task] * 4)], cwd=repo, env=command_env())
    running = until(
        "two tasks with a commit each",
        lambda: (
            (found := project_containers(docker_client, repo, status="running"))
            and len(found) == 2
            and all(has_file(c, "/tmp/committed") for c in found)
            and found
        ),
    )
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=180)  # a hang fails here, not a timing bound
    assert proc.returncode == 130, stderr
    data = json.loads(stdout)
    runs = data["runs"]
    assert [(r["status"], r["exit_code"]) for r in runs] == [
        ("interrupted", 130),
        ("interrupted", 130),
        ("skipped", 130),
        ("skipped", 130),
    ]
    for run in runs[:2]:  # the work is kept: the commit and what was left uncommitted
        assert git(repo, "log", "--format=%s", f"main..{run['branch']}").splitlines() == [
            "agent-worker: work the agent left uncommitted",
            "Work",
        ]
        assert git(repo, "show", f"{run['branch']}:more.txt") == "more\n"
    for run in runs[2:]:
        assert run["branch"] is None
        assert run["error"] == "not started: interrupted"
    assert git(repo, "branch", "--list", "stop-*").split() == ["stop-1", "stop-2"]
    assert (data["totals"]["skipped"], data["totals"]["exit_code"]) == (2, 130)
    assert {c.id for c in running}.isdisjoint(c.id for c in docker_client.containers.list(all=True))
    assert project_containers(docker_client, repo) == []


def test_max_cost_starts_no_task_once_the_finished_ones_spent_it(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    result = run_cli(
        [
            "--task",
            "say hi",
            "--task",
            "say hi again",
            "--task",
            "and again",
            "--jobs",
            "1",
            "--max-cost",
            "0.000001",
            "--json",
            "--branch",
            "cheap",
        ],
        cwd=repo,
        env=run_env(),
    )
    assert result.code == 1, result.stderr
    runs = json.loads(result.stdout)["runs"]
    first = runs[0]
    assert first["cost_usd"] > 0.000001  # the fake's usage, priced by Claude Code itself
    assert first["branch"] == "cheap-1"
    assert [(r["status"], r["exit_code"], r["branch"]) for r in runs[1:]] == [
        ("skipped", 1, None),
        ("skipped", 1, None),
    ]
    assert runs[1]["error"].startswith("not started: the finished tasks spent $")
    assert "--max-cost $1e-06" in runs[1]["error"]
    assert len(fake_api.main_requests) >= 1
    assert git(repo, "branch", "--list", "cheap-*").split() == ["cheap-1"]
    assert project_containers(docker_client, repo) == []


def test_four_processes_at_once_on_one_repository(
    repo: Path,
    command_env: Callable[..., dict[str, str]],
    docker_client: Any,
    base_image: str,
    ca_certs: tuple[Path, ...],
    cleanup: None,
) -> None:
    """Branch names, run ids, containers and the build of a missing image: four agent-worker
    processes started together on one repository never collide. The image is new to the
    engine (a base image name of its own, so every layer comes from the build cache): one
    process builds it, the others wait for that build and reuse it."""
    alias = f"agent-worker-test/jobs-base:{os.getpid()}-{time.monotonic_ns()}"
    docker_client.images.get(base_image).tag(alias)
    env = command_env(AGENT_WORKER_BASE_IMAGE=alias)
    procs = []
    reports = [repo.parent / f"proc-{i}.json" for i in range(4)]
    layer = agents.get("command", AgentSettings()).image_layer()
    tag = build.agent_image_tag(docker_client, layer, base_image=alias, ca_certs=ca_certs)
    builds = cache_dir() / "builds"
    try:
        # The test holds the image's build lock until all four wait for it, so that they
        # reach the build together, whatever their start-up times.
        with build.build_lock(builds, tag):
            for i, report in enumerate(reports):
                task = f"echo {i} > proc{i}.txt"
                args = ["--agent-type", "command", "--task", task, "--report-file", str(report)]
                procs.append(start_cli(args, cwd=repo, env=env))
            lock = build.build_lock_path(builds, tag)
            until("four processes waiting for the image's build", lambda: waiting(lock) == 4)
        outputs = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
        done = [json.loads(report.read_text()) for report in reports]
        built = [r for r in done if (Path(r["run_dir"]) / "build.log").is_file()]
        assert len(built) == 1  # one built the image; three waited and reused it
        assert _built_tag(Path(built[0]["run_dir"]) / "build.log") == tag
        branches = [r["branch"] for r in done]
        assert len(set(branches)) == 4
        assert len({r["run_id"] for r in done}) == 4
        for i, r in enumerate(done):
            assert git(repo, "show", f"{r['branch']}:proc{i}.txt") == f"{i}\n"
        assert project_containers(docker_client, repo) == []
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        with suppress(docker.errors.ImageNotFound):  # the test's own tag; the image stays
            docker_client.images.remove(tag)  # while another tag holds it
        docker_client.images.remove(alias)


def waiting(lock: Path) -> int:
    """How many processes wait for the flock on this file (/proc/locks: "->" lines)."""
    inode = f":{lock.stat().st_ino} "
    text = Path("/proc/locks").read_text()
    return sum(1 for line in text.splitlines() if "->" in line and inode in line)


def _built_tag(build_log: Path) -> str:
    found = re.findall(r"Successfully tagged (agent-worker:[0-9a-f]+)", build_log.read_text())
    assert found, "the build log names the image it tagged"
    return str(found[-1])


def on_a_terminal(args: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    """./agent_worker.py with stdout and stderr on a pty (util-linux `script`): all it showed."""
    import shlex
    import shutil

    from conftest import require

    if shutil.which("script") is None:
        require("util-linux `script` is missing: it gives the run a terminal")
    empty = cwd.parent / "empty.env"
    empty.touch()
    argv = [sys.executable, str(ROOT / "agent_worker.py"), "--env-file", str(empty), *args]
    done = subprocess.run(
        ["script", "-qec", shlex.join(argv), "/dev/null"],
        cwd=cwd,
        env=env | {"COLUMNS": "160", "TERM": "xterm-256color"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    return done.stdout.decode("utf-8", "replace")


def test_a_batch_on_a_terminal_shows_live_lines_and_a_table(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    # what the agent prints is data: markup and terminal control reach the screen escaped
    task = "printf '[bold]loud[/bold] \\033]2;pwned\\007\\n'; sleep 1; echo x > x.txt"
    args = ["--agent-type", "command", "--jobs", "2", "--branch", "tty"]
    args += ["--task", task, "--task", task]
    shown = on_a_terminal(args, cwd=repo, env=command_env())
    assert "\x1b]2;pwned" not in shown
    assert "[bold]loud[/bold] \\033]2;pwned\\a" in shown  # the live line, escaped
    assert "\x1b[" in shown  # colour: a terminal gets rich output
    for n in (1, 2):
        assert f"[{n}/2 tty-{n}] success (exit 0)" in shown
    assert "AGENT BATCH REPORT (exit 0)" in shown
    assert "\u2503" in shown  # the summary is a table with box drawing
    cells = re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", shown)  # the table without its colours
    assert re.search(r"\u2502\s+1\s+\u2502\s+tty-1\s+\u2502\s+project\s+\u2502\s+success", cells)

    plain = on_a_terminal(
        [*args[:-4], "--branch", "plain", "--task", task, "--task", task],
        cwd=repo,
        env=command_env(NO_COLOR="1"),
    )
    assert "\x1b" not in plain  # NO_COLOR: no colour, live display or box drawing
    assert "\u2503" not in plain
    assert "[1/2 plain-1] Agent at work on branch plain-1" in plain
    assert "[2/2 plain-2]   [bold]loud[/bold] \\033]2;pwned\\a" in plain
    assert re.search(r"^1\s+plain-1\s+project\s+success", plain, re.M)
