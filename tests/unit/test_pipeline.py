"""Every ending of a run's task, driven through a fake Backend (no engine) against real git
repositories: pipeline.run_task from the branch to the report."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from agent_worker_app import config, git_manager, pipeline
from agent_worker_app.agents.command_agent import CommandAgent
from agent_worker_app.console import Env, Progress, Redactor
from agent_worker_app.engines.base import ExitInfo, Task, TaskSpec
from agent_worker_app.engines.channel import (
    CHECK_COMMAND,
    FileEntry,
    Inputs,
    ResultReader,
    ResultTooLargeError,
)
from agent_worker_app.errors import DockerError, Interrupted
from agent_worker_app.images.layers import ImageResult
from conftest import git, make_repo

EXIT_0 = ExitInfo(0, False, None)


@dataclass
class FakeStream:
    interrupt: bool = False
    error: BaseException | None = None
    result: str | None = None

    def is_alive(self) -> bool:
        return self.interrupt

    def network_record(self) -> dict[str, Any] | None:
        return None

    def join(self, timeout: float | None = None) -> None:
        if self.interrupt:
            self.interrupt = False
            raise Interrupted("interrupted by SIGINT")  # as the signal handler raises it


@dataclass
class FakeBackend:
    """A scripted engine: what the task prints, how it exits, what its result channel holds."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit: ExitInfo | None = EXIT_0
    result: dict[str, Any] | str | None = None  # result.json (a str is written as it is)
    bundle: Path | None = None
    create_error: DockerError | None = None
    lost: bool = False  # the engine loses track of the task
    runs_until_signalled: bool = False
    interrupt: bool = False
    local: bool = True
    signals: list[str] = field(default_factory=list)
    removed: list[Task] = field(default_factory=list)
    spec: TaskSpec | None = None
    sent: Inputs | None = None
    # the check's own task (channel.CHECK_COMMAND): its result line, and whether it runs on
    check_result: dict[str, Any] | None = None
    check_runs_until_signalled: bool = False
    check_spec: TaskSpec | None = None
    check_sent: Inputs | None = None
    events: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> tuple[FileEntry, ...]:
        return self.sent.files if self.sent is not None else ()

    def prepare_image(self, *args: Any, **kw: Any) -> ImageResult:
        return ImageResult("fake:1", False, None)

    def create(self, spec: TaskSpec, inputs: Inputs) -> Task:
        if self.create_error is not None:
            raise self.create_error
        if spec.command == list(CHECK_COMMAND):
            self.check_spec, self.check_sent = spec, inputs
            self.events.append("create check-1")
            return Task(handle="check-1", inputs=inputs)
        self.spec, self.sent = spec, inputs
        self.events.append("create task-1")
        return Task(handle="task-1", inputs=inputs)

    def start(
        self, task: Task, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]
    ) -> FakeStream:
        reader = ResultReader(task.inputs.nonce, on_stderr)  # as every backend reads stderr
        if task.handle == "check-1":
            if self.check_result is not None and not self.check_runs_until_signalled:
                reader.feed(result_line(self.check_result, task.inputs.nonce))
            reader.end()
            return FakeStream(result=reader.result)
        on_stdout(self.stdout)
        reader.feed(self.stderr)
        if self.result is not None:  # the root stage's line, marked with the run's nonce
            reader.feed(result_line(self.result, nonce_of(self.inputs)))
        reader.end()
        return FakeStream(interrupt=self.interrupt, result=reader.result)

    def wait(self, task: Task, timeout_s: float) -> ExitInfo | None:
        if self.lost:
            raise DockerError("lost track of the agent container: no such container")
        if task.handle == "check-1":
            return None if self.check_runs_until_signalled and not self.signals else EXIT_0
        if self.runs_until_signalled and not self.signals:
            return None
        return self.exit

    def signal(self, task: Task, name: str) -> None:
        self.signals.append(name)

    def fetch_result(self, task: Task, dest: Path, *, max_bytes: int = 1 << 30) -> bool:
        if self.bundle is None:
            return False
        out = dest / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "agent-tail.jsonl").write_bytes(b"tail\n")  # as the task frames it: first
        if self.bundle.stat().st_size > max_bytes:  # what a backend does past the cap
            raise ResultTooLargeError(max_bytes)
        (out / "result.bundle").write_bytes(self.bundle.read_bytes())
        return True

    def runtime(self, task: Task) -> str | None:
        return "runc"

    def node(self, task: Task) -> str | None:
        return None

    def remove(self, task: Task) -> None:
        self.events.append(f"remove {task.handle}")
        self.removed.append(task)

    def remove_orphans(self) -> list[str]:
        return []


def nonce_of(inputs: tuple[FileEntry, ...]) -> str:
    entry = next(e for e in inputs if e.path == "/agent-worker/nonce")
    assert isinstance(entry.data, bytes)
    return entry.data.decode()


def result_line(result: dict[str, Any] | str, nonce: str) -> bytes:
    text = result if isinstance(result, str) else json.dumps(result)
    return f"\nagent-worker-result {nonce} {base64.b64encode(text.encode()).decode()}\n".encode()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "project", {"a.txt": "a\n"})


def context(project: Path, tmp_path: Path, **options: Any) -> pipeline.Context:
    cfg = config.load(
        {"task": "echo hi", "agent_type": "command", "branch": "task", **options},
        environ={"XDG_CONFIG_HOME": str(tmp_path / "xdg")},
        cwd=project,
    )
    agent = CommandAgent(cfg.agent)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = Env(stdout=io.StringIO(), stderr=io.StringIO(), stdin=io.StringIO())
    redactor = Redactor()
    return pipeline.Context(
        cfg,
        agent,
        agent.parser(),
        redactor,
        Progress(env, redactor),
        pipeline.Signals(),
        "run-1",
        run_dir,
        pipeline.Journal(),
    )


def agent_bundle(project: Path, tmp_path: Path) -> tuple[Path, str]:
    """A bundle of one commit on top of the project's HEAD, as a container leaves it."""
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    (clone / "b.txt").write_text("b\nb\n")
    git(clone, "add", "b.txt")
    git(clone, "-c", "user.name=A", "-c", "user.email=a@b", "commit", "-qm", "b")
    head = git(clone, "rev-parse", "HEAD").strip()
    base = git(project, "rev-parse", "HEAD").strip()
    bundle = tmp_path / "result.bundle"
    git(clone, "bundle", "create", "-q", str(bundle), f"{base}..HEAD")
    return bundle, head


def run(project: Path, tmp_path: Path, backend: FakeBackend, **options: Any) -> Any:
    ctx = context(project, tmp_path, **options)
    ws = git_manager.preflight(project, "task", branch_given=True)
    return pipeline.run_task(ctx, backend, ws, "fake:1"), ws


def branches(project: Path) -> list[str]:
    return git(project, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()


def test_a_result_past_its_cap_fails_the_run_and_keeps_the_branch_at_the_base(
    project: Path, tmp_path: Path
) -> None:
    bundle, head = agent_bundle(project, tmp_path)
    result = {"phase": "agent", "head": head, "bundle": True}
    backend = FakeBackend(result=result, bundle=bundle)
    ctx = context(project, tmp_path)
    cap = bundle.stat().st_size - 1  # (under the options' 64k least, for a small bundle)
    ctx = dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, max_result_bytes=cap))
    ws = git_manager.preflight(project, "task", branch_given=True)
    report = pipeline.run_task(ctx, backend, ws, "fake:1")
    assert (report.status, report.exit_code) == ("failed", 1)
    assert report.error is not None
    assert "--max-result-size" in report.error
    assert "the agent's commits were not brought back" in report.error
    assert report.branch == "task"  # kept, at the base: nothing cut short is imported
    assert git(project, "rev-parse", "task") == git(project, "rev-parse", "HEAD")
    assert (Path(report.run_dir) / "out" / "agent-tail.jsonl").is_file()


def test_success_imports_the_commits(project: Path, tmp_path: Path) -> None:
    bundle, head = agent_bundle(project, tmp_path)
    result = {"phase": "agent", "head": head, "bundle": True, "warnings": ["w1"]}
    backend = FakeBackend(stdout=b"working\n", result=result, bundle=bundle)
    report, ws = run(project, tmp_path, backend)
    assert (report.status, report.exit_code, report.error) == ("success", 0, None)
    assert report.head_commit == head
    assert git(project, "rev-parse", "task").strip() == head
    assert [(f.path, f.added) for f in report.files] == [("b.txt", 2)]
    assert "w1" in report.warnings
    assert report.branch == "task"
    assert backend.removed  # removed on every path
    assert backend.spec is not None
    assert backend.spec.env["AW_BASE"] == ws.base_commit
    assert json.loads((tmp_path / "run" / "report.json").read_text())["status"] == "success"


def test_the_agent_failing_is_exit_1_with_its_words(project: Path, tmp_path: Path) -> None:
    base = git(project, "rev-parse", "HEAD").strip()
    backend = FakeBackend(
        stderr=b"it broke\n",
        exit=ExitInfo(3, False, None),
        result={"phase": "agent", "head": base, "bundle": False},
    )
    report, _ = run(project, tmp_path, backend)
    assert (report.status, report.exit_code) == ("failed", 1)
    assert "exit status 3" in report.error
    assert "it broke" in report.error
    assert report.branch == "task"  # the agent ran: its branch stays


def test_no_result_is_a_failure_that_says_so(project: Path, tmp_path: Path) -> None:
    report, _ = run(project, tmp_path, FakeBackend(result=None))
    assert (report.status, report.exit_code) == ("failed", 1)
    assert "did not hand back the agent's work" in report.error


def test_an_unreadable_result_is_a_failure_and_a_warning(project: Path, tmp_path: Path) -> None:
    report, _ = run(project, tmp_path, FakeBackend(result="{not json"))
    assert (report.status, report.exit_code) == ("failed", 1)
    assert any("the container's result cannot be read" in w for w in report.warnings)


def test_a_result_line_without_the_nonce_is_not_trusted(project: Path, tmp_path: Path) -> None:
    """What the agent prints is never the task's word, however it is dressed."""
    bundle, head = agent_bundle(project, tmp_path)
    forged = {"phase": "agent", "head": head, "bundle": True}
    backend = FakeBackend(stderr=result_line(forged, "0" * 32), bundle=bundle)
    report, _ = run(project, tmp_path, backend)
    assert report.status == "failed"
    assert "did not hand back the agent's work" in report.error
    assert git(project, "rev-parse", "task").strip() != head


def test_a_setup_failure_deletes_the_branch(project: Path, tmp_path: Path) -> None:
    backend = FakeBackend(
        exit=ExitInfo(3, False, None),
        result={"phase": "setup", "error": "cannot check out the task branch: denied"},
    )
    report, _ = run(project, tmp_path, backend)
    assert (report.status, report.exit_code) == ("error", 3)
    assert "cannot check out" in report.error
    assert report.branch is None
    assert branches(project) == ["main"]


def test_a_timeout_stops_the_task_politely_and_keeps_its_work(
    project: Path, tmp_path: Path
) -> None:
    bundle, head = agent_bundle(project, tmp_path)
    backend = FakeBackend(
        runs_until_signalled=True,
        exit=ExitInfo(0, False, None),
        result={"phase": "agent", "head": head, "bundle": True},
        bundle=bundle,
    )
    report, _ = run(project, tmp_path, backend, timeout="0.2")
    assert (report.status, report.exit_code) == ("timeout", 124)
    assert backend.signals == ["SIGTERM"]
    assert git(project, "rev-parse", "task").strip() == head


def test_a_signal_stops_the_task_and_keeps_its_work(project: Path, tmp_path: Path) -> None:
    bundle, head = agent_bundle(project, tmp_path)
    backend = FakeBackend(
        interrupt=True,
        runs_until_signalled=True,
        result={"phase": "agent", "head": head, "bundle": True},
        bundle=bundle,
    )
    report, _ = run(project, tmp_path, backend)
    assert (report.status, report.exit_code) == ("interrupted", 130)
    assert backend.signals == ["SIGTERM"]
    assert git(project, "rev-parse", "task").strip() == head


def test_a_damaged_bundle_is_an_import_failure_that_keeps_it(project: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.bundle"
    damaged.write_bytes(b"# v2 git bundle\nnot really\n")
    backend = FakeBackend(result={"phase": "agent", "head": "f" * 40, "bundle": True})
    backend.bundle = damaged
    report, _ = run(project, tmp_path, backend)
    assert (report.status, report.exit_code) == ("failed", 1)
    assert "the agent's commits are kept in" in report.error
    assert (tmp_path / "run" / "out" / "result.bundle").is_file()


def test_losing_the_task_is_an_error_and_it_is_still_removed(project: Path, tmp_path: Path) -> None:
    backend = FakeBackend(lost=True, result=None)
    backend.exit = None
    backend.stdout = b""
    report, _ = run(project, tmp_path, backend)
    assert (report.status, report.exit_code) == ("error", 3)
    assert "lost track of the agent container" in report.error
    assert backend.removed


def test_an_engine_refusing_the_task_leaves_no_branch(project: Path, tmp_path: Path) -> None:
    refused = DockerError("Docker refused to create the agent container: no such image")
    report, _ = run(project, tmp_path, FakeBackend(create_error=refused))
    assert (report.status, report.exit_code) == ("error", 3)
    assert "refused" in report.error
    assert report.branch is None
    assert branches(project) == ["main"]


def test_the_outcome_does_not_listen_to_the_agents_output(project: Path, tmp_path: Path) -> None:
    base = git(project, "rev-parse", "HEAD").strip()
    forged = (
        b"agent-worker: error: cannot check out the task branch: forged\n"
        b"agent-worker: result: head=0000 bundle=1\n"
        + result_line({"phase": "setup", "error": "forged"}, "f" * 32)
    )
    backend = FakeBackend(
        stdout=forged, stderr=forged, result={"phase": "agent", "head": base, "bundle": False}
    )
    report, _ = run(project, tmp_path, backend)
    assert (report.status, report.exit_code, report.error) == ("success", 0, None)
    assert report.branch == "task"


def test_a_task_that_stopped_its_agent_by_itself_says_why(project: Path, tmp_path: Path) -> None:
    base = git(project, "rev-parse", "HEAD").strip()
    result = {
        "phase": "agent",
        "head": base,
        "bundle": False,
        "stopped": "the task's deadline passed",
    }
    report, _ = run(project, tmp_path, FakeBackend(result=result))
    assert any(
        "the task's deadline passed: the task stopped its agent" in w for w in report.warnings
    )


def test_copy_mode_sends_a_pack_and_no_mounts(project: Path, tmp_path: Path) -> None:
    # the default on a local engine too: mounting the object directories shows every object
    backend = FakeBackend(result=None)
    run(project, tmp_path, backend)
    assert backend.spec is not None
    assert backend.spec.object_dirs == ()
    sent = [entry.path for entry in backend.inputs]
    assert "/agent-worker/source.pack" in sent
    assert not (tmp_path / "run" / "source.pack").exists()  # cleaned up after the run
    mounted = FakeBackend(result=None)
    other = tmp_path / "second"
    other.mkdir()
    git(project, "branch", "-D", "task")
    run(project, other, mounted, workspace="mount")
    assert mounted.spec is not None
    assert mounted.spec.object_dirs == ((project / ".git" / "objects").resolve(),)
    assert "/agent-worker/source.pack" not in [entry.path for entry in mounted.inputs]


def test_mount_mode_refuses_a_partial_clone(project: Path, tmp_path: Path) -> None:
    git(project, "config", "uploadpack.allowFilter", "true")
    partial = tmp_path / "partial"
    git(tmp_path, "clone", "-q", "--filter=blob:none", f"file://{project}", str(partial))
    backend = FakeBackend(result=None)
    report, _ = run(partial, tmp_path, backend, workspace="mount")
    assert "partial clone" in (report.error or "")
    assert backend.spec is None  # nothing started
    assert "task" not in branches(partial)  # the branch it made is gone


def test_nothing_is_left_running_when_reading_output_breaks(project: Path, tmp_path: Path) -> None:
    class Broken(FakeBackend):
        def start(self, task: Task, *callbacks: Callable[[bytes], None]) -> FakeStream:
            return FakeStream(error=OSError("connection reset"))

    backend = Broken(result=None)
    report, _ = run(project, tmp_path, backend)
    assert any("reading the agent's output failed" in w for w in report.warnings)
    assert backend.removed


def test_a_pack_is_a_real_pack(project: Path, tmp_path: Path) -> None:
    ws = git_manager.create_branch(
        git_manager.preflight(project, "t", branch_given=True), branch_given=True
    )
    pack = tmp_path / "p.pack"
    git_manager.pack_branch(ws, pack)
    verify = subprocess.run(
        ["git", "index-pack", "--stdin"],
        stdin=pack.open("rb"),
        cwd=make_repo(tmp_path / "empty"),
        capture_output=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_a_task_whose_reported_cost_passes_max_cost_is_stopped(
    project: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from agent_worker_app.agents.command_agent import CommandParser

    class Costly(CommandParser):
        def cost_so_far(self) -> float | None:
            return 0.75

    bundle, head = agent_bundle(project, tmp_path)
    backend = FakeBackend(
        runs_until_signalled=True,
        result={"phase": "agent", "head": head, "bundle": True},
        bundle=bundle,
    )
    ctx = replace(context(project, tmp_path, max_cost="0.5"), parser=Costly())
    ws = git_manager.preflight(project, "task", branch_given=True)
    report = pipeline.run_task(ctx, backend, ws, "fake:1")
    assert (report.status, report.exit_code) == ("failed", 1)
    assert report.error == "the agent's cost $0.7500 passed --max-cost $0.5: stopped"
    assert backend.signals == ["SIGTERM"]  # politely: its work is kept
    assert git(project, "rev-parse", "task").strip() == head


def test_a_task_in_a_worker_thread_stops_when_the_main_thread_is_signalled(
    project: Path, tmp_path: Path
) -> None:
    """Signal handlers run in the main thread only: a batch's task sees the signal through
    TaskSignals and stops as a single run does."""
    import threading
    from dataclasses import replace

    bundle, head = agent_bundle(project, tmp_path)
    backend = FakeBackend(
        runs_until_signalled=True,
        result={"phase": "agent", "head": head, "bundle": True},
        bundle=bundle,
    )
    main = pipeline.Signals()
    ctx = replace(context(project, tmp_path), signals=pipeline.TaskSignals(main))
    ws = git_manager.preflight(project, "task", branch_given=True)
    reports: list[Any] = []
    worker = threading.Thread(
        target=lambda: reports.append(pipeline.run_task(ctx, backend, ws, "fake:1"))
    )
    worker.start()
    main.stop_tasks()  # as the main thread's handler counts a signal
    worker.join(60)
    assert not worker.is_alive()
    assert (reports[0].status, reports[0].exit_code) == ("interrupted", 130)
    assert backend.signals == ["SIGTERM"]
    assert git(project, "rev-parse", "task").strip() == head


def checked(check: dict[str, Any] | None, error: str | None = None) -> dict[str, Any]:
    """The check task's result line, as its root stage writes it."""
    return {"phase": "check", "error": error, "check": check}


def test_maintenance_check_and_env_reach_the_tasks(project: Path, tmp_path: Path) -> None:
    """The agent's task gets the maintenance commands, not the check; the check's own task, a
    fresh one created once the agent's is removed, gets both, the branch's final commit, the
    project's variables, no network, and a label that keeps it out of recovery."""
    bundle, head = agent_bundle(project, tmp_path)
    result = {
        "phase": "agent",
        "head": head,
        "bundle": True,
        "blocked": [{"address": "10.0.0.7", "protocol": "tcp", "port": 443, "count": 2}],
    }
    check = {"command": "make test", "ran": True, "exit_code": 0, "duration_s": 0.5}
    backend = FakeBackend(result=result, bundle=bundle, check_result=checked(check))
    ctx = context(
        project, tmp_path, maintenance=("npm ci", "make gen\nmake more"), check="make test"
    )
    ctx = replace(
        ctx,
        config=config.apply_environment(ctx.config, source="env.toml", env={"NODE_ENV": "test"}),
    )
    ws = git_manager.preflight(project, "task", branch_given=True)
    report = pipeline.run_task(ctx, backend, ws, "fake:1")
    files = {e.path: e for e in backend.inputs}
    assert files["/agent-worker/maintenance"].data is None  # a directory
    assert files["/agent-worker/maintenance/1"].data == b"npm ci"
    assert files["/agent-worker/maintenance/2"].data == b"make gen\nmake more"
    assert "/agent-worker/check" not in files
    assert backend.spec is not None
    assert backend.spec.env["NODE_ENV"] == "test"
    assert backend.events == ["create task-1", "remove task-1", "create check-1", "remove check-1"]
    assert backend.check_sent is not None
    assert backend.check_spec is not None
    sent = {e.path: e for e in backend.check_sent.files}
    assert sent["/agent-worker/check"].data == b"make test"
    assert sent["/agent-worker/maintenance/2"].data == b"make gen\nmake more"
    assert "/agent-worker/source.pack" in sent
    assert not any(path.startswith("/agent-worker/secrets/") for path in sent)
    assert backend.sent is not None
    assert backend.check_sent.nonce != backend.sent.nonce  # its own
    spec = backend.check_spec
    assert spec.image == "fake:1"
    assert spec.env["AW_BASE"] == head  # the commit the run imported
    assert spec.env["NODE_ENV"] == "test"
    assert spec.profile.offline
    assert not spec.profile.firewall
    assert spec.labels["agent-worker.role"] == "check"
    assert spec.profile.memory_bytes == backend.spec.profile.memory_bytes
    assert 0 < spec.timeout_s <= ctx.config.timeout_s
    assert not (ctx.run_dir / "check-source.pack").exists()
    assert (report.status, report.exit_code) == ("success", 0)
    assert report.check is not None
    assert report.check.passed
    assert [(b.address, b.port, b.count) for b in report.blocked] == [("10.0.0.7", 443, 2)]


def test_a_failing_check_fails_the_run_and_keeps_the_branch(project: Path, tmp_path: Path) -> None:
    base = git(project, "rev-parse", "HEAD").strip()
    check = {"command": "make test", "ran": True, "exit_code": 2, "output_tail": ["boom"]}
    backend = FakeBackend(
        result={"phase": "agent", "head": base, "bundle": False}, check_result=checked(check)
    )
    report, _ = run(project, tmp_path, backend, check="make test")
    assert (report.status, report.exit_code) == ("failed", 1)
    assert "the check 'make test' failed (exit status 2); its last output: boom" in report.error
    assert report.branch == "task"
    assert "task" in branches(project)


def test_a_check_task_that_says_nothing_did_not_run(project: Path, tmp_path: Path) -> None:
    base = git(project, "rev-parse", "HEAD").strip()
    backend = FakeBackend(result={"phase": "agent", "head": base, "bundle": False})
    report, _ = run(project, tmp_path, backend, check="make test")
    assert (report.status, report.exit_code) == ("failed", 1)
    assert report.check is not None
    assert not report.check.ran
    assert "did not run (its container ended without a result)" in report.error
    assert report.to_json()["check"]["ran"] is False


def test_a_check_whose_checkout_failed_did_not_run_and_says_why(
    project: Path, tmp_path: Path
) -> None:
    base = git(project, "rev-parse", "HEAD").strip()
    why = 'maintenance command 1 of 1 failed (exit status 1): "pip install -e ."'
    backend = FakeBackend(
        result={"phase": "agent", "head": base, "bundle": False}, check_result=checked(None, why)
    )
    report, _ = run(project, tmp_path, backend, check="make test")
    assert (report.status, report.exit_code) == ("failed", 1)
    assert f"the check 'make test' did not run ({why})" in report.error


def test_a_run_whose_agent_failed_runs_no_check(project: Path, tmp_path: Path) -> None:
    base = git(project, "rev-parse", "HEAD").strip()
    backend = FakeBackend(
        exit=ExitInfo(1, False, None),
        result={"phase": "agent", "head": base, "bundle": False, "agent_exit": 1},
        check_result=checked({"command": "make test", "ran": True, "exit_code": 0}),
    )
    report, _ = run(project, tmp_path, backend, check="make test")
    assert (report.status, report.exit_code) == ("failed", 1)
    assert backend.check_spec is None
    assert report.check is not None
    assert not report.check.ran


def test_a_timeout_during_the_check_is_a_timeout_with_the_check_stopped(
    project: Path, tmp_path: Path
) -> None:
    base = git(project, "rev-parse", "HEAD").strip()
    backend = FakeBackend(
        result={"phase": "agent", "head": base, "bundle": False},
        check_runs_until_signalled=True,
    )
    report, _ = run(project, tmp_path, backend, check="sleep 300", timeout=1)
    assert (report.status, report.exit_code) == ("timeout", 124)
    assert backend.signals == ["SIGTERM"]
    assert backend.events[-1] == "remove check-1"
    assert report.check is not None
    assert not report.check.passed


def test_a_failed_maintenance_command_deletes_the_branch(project: Path, tmp_path: Path) -> None:
    error = 'maintenance command 1 of 1 failed (exit status 7): "npm ci" (the agent did not start)'
    backend = FakeBackend(
        exit=ExitInfo(3, False, None), result={"phase": "setup", "error": error, "bundle": False}
    )
    report, _ = run(project, tmp_path, backend, maintenance=("npm ci",), check="npm test")
    assert (report.status, report.exit_code) == ("error", 3)
    assert report.error == error
    assert report.branch is None
    assert "task" not in branches(project)
    assert report.check is not None
    assert not report.check.ran  # configured, never run


def test_a_continuing_runs_cost_is_its_own() -> None:
    """An agent whose reported cost spans its resumed session (Claude Code) has the session's
    earlier cost taken off; others, and runs that resume nothing, keep what they report."""
    from types import SimpleNamespace

    from agent_worker_app.task_spec import Session

    def ctx(spans: bool, session: Session | None) -> Any:
        continuation = SimpleNamespace(session=session)
        agent = SimpleNamespace(cost_spans_session=spans)
        return SimpleNamespace(continuation=continuation, agent=agent)

    resumed = Session("s1", (), cost_usd=0.0145)
    assert pipeline.own_cost(ctx(True, resumed), 0.0325) == pytest.approx(0.018)
    assert pipeline.own_cost(ctx(False, resumed), 0.0325) == 0.0325  # per run already
    assert pipeline.own_cost(ctx(True, None), 0.0325) == 0.0325  # nothing resumed
    assert pipeline.own_cost(ctx(True, resumed), 0.01) == 0.01  # it did not resume after all
    assert pipeline.own_cost(ctx(True, resumed), None) is None
    unknown = Session("s1", (), cost_usd=None)
    assert pipeline.own_cost(ctx(True, unknown), 0.0325) == 0.0325
    none = SimpleNamespace(continuation=None, agent=SimpleNamespace(cost_spans_session=True))
    assert pipeline.own_cost(none, 0.0325) == 0.0325
