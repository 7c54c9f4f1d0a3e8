"""The check command's own task: a fresh container from the run's image, on a clean checkout of
the branch's final commit (the one the run imported), with a fresh home and setup's paths as
setup left them in the image, offline, as the agent user under the run's limits. Nothing the
agent changed outside its commits reaches it. Its lifecycle is the Backend's, as the agent's
task's; its result line (phase "check") is written by its root stage, with its own nonce, once
every process of the agent user is gone.

prepare() and run() need a configuration, a workspace and an image, not an agent or an earlier
task: what runs the project's maintenance and check without an agent can call them too."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent_worker_app import git_manager
from agent_worker_app.console import show_own_line
from agent_worker_app.engines import channel, sweep
from agent_worker_app.engines.base import ExitInfo, OutputStream, Task, TaskSpec
from agent_worker_app.engines.channel import FileEntry, Inputs, Lines
from agent_worker_app.engines.profile import Profile
from agent_worker_app.errors import AgentWorkerError, Interrupted
from agent_worker_app.sandbox_report import CheckOutcome
from agent_worker_app.task_result import parse_inside

if TYPE_CHECKING:
    from agent_worker_app.config import Config
    from agent_worker_app.console import ProgressSink, Redactor
    from agent_worker_app.engines.base import Backend
    from agent_worker_app.git_manager import Workspace
    from agent_worker_app.pipeline import Signals

log = logging.getLogger("agent_worker")

STOP_S = 15.0  # after a timeout or a signal: time for the check's task to record its stop
PACK = "check-source.pack"  # in the run directory, while the check's task is created


@dataclass(frozen=True)
class CheckRun:
    """How the check's task ended: its record (not run, when it did not), and whether the
    run's timeout or a signal stopped it."""

    check: CheckOutcome
    timed_out: bool = False
    interrupted: bool = False
    warnings: tuple[str, ...] = ()


def prepare(
    cfg: Config,
    ws: Workspace,
    *,
    head: str,
    image: str,
    run_id: str,
    run_dir: Path,
    timeout_s: float,
) -> tuple[TaskSpec, Inputs]:
    """The check's task: its spec and inputs (the check, the maintenance commands, the
    commit's history as a pack, or the object directories with --workspace mount)."""
    assert cfg.check is not None, "a check to run"
    files = [FileEntry(channel.CHECK, cfg.check.encode("utf-8", "surrogateescape"))]
    if cfg.maintenance:
        files.append(FileEntry(channel.MAINTENANCE, None, 0o755))
        files.extend(
            FileEntry(f"{channel.MAINTENANCE}/{n}", command.encode("utf-8", "surrogateescape"))
            for n, command in enumerate(cfg.maintenance, 1)
        )
    source = git_manager.source(ws)
    mount = cfg.workspace == "mount"
    if not mount:
        pack = run_dir / PACK
        git_manager.pack_commit(ws, head, pack)
        files.append(FileEntry(channel.SOURCE_PACK, pack))
    if source.shallow:
        files.append(FileEntry(channel.SHALLOW, source.shallow))
    if source.exclude.strip():
        files.append(FileEntry(channel.EXCLUDE, source.exclude))
    env = (
        dict(cfg.env)
        | channel.task_env(
            branch=ws.branch,
            base=head,
            object_format=ws.object_format,
            firewall=False,
            allow_hosts=[],
            timeout_s=timeout_s,
            session_dir="",
        )
        | {"TZ": cfg.timezone}
    )
    spec = TaskSpec(
        image=image,
        name=f"agent-worker-{run_id}-check",
        command=list(channel.CHECK_COMMAND),
        env=channel.root_safe(env),
        labels=sweep.labels(run_id, ws.root) | {sweep.ROLE: sweep.CHECK_ROLE},
        timeout_s=timeout_s,
        profile=Profile(
            memory_bytes=cfg.memory_bytes,
            cpus=cfg.cpus,
            pids_limit=cfg.pids_limit,
            firewall=False,
            workspace_tmpfs=not cfg.environment.prepares_workspace,
            offline=True,
            runtime=cfg.runtime,  # repository code: under the runtime the user chose
            disk_bytes=cfg.disk_bytes,
        ),
        object_dirs=source.object_dirs if mount else (),
    )
    return spec, channel.inputs(files, channel.new_nonce())


def run(
    backend: Backend,
    spec: TaskSpec,
    inputs: Inputs,
    *,
    command: str,
    deadline: float,
    run_dir: Path,
    progress: ProgressSink,
    signals: Signals,
    redactor: Redactor,
) -> CheckRun:
    """Create, start and supervise the check's task until it ends, the run's deadline
    (time.monotonic()) passes or a signal arrives; it is removed when this returns."""
    progress.phase("Checking the branch in a fresh container (offline)")
    output = _Output(run_dir, progress, redactor)
    task: Task | None = None
    stream: OutputStream | None = None
    exit_info, timed_out, interrupted, result = None, False, False, None
    try:
        try:
            task = backend.create(spec, inputs)
            stream = backend.start(task, lambda data: None, output.stderr.feed)
            while exit_info is None and (left := deadline - time.monotonic()) > 0:
                signals.check()
                if stream.is_alive():
                    stream.join(min(left, 1.0))
                else:
                    exit_info = backend.wait(task, min(left, 5.0))
            timed_out = exit_info is None
        except Interrupted:
            interrupted = True
        with signals.protected():
            if task is not None and exit_info is None:
                exit_info = _stop(backend, task, signals)
            if stream is not None:
                stream.join(10.0)
                result = stream.result
    finally:
        output.close()
        (run_dir / PACK).unlink(missing_ok=True)
        if task is not None:
            with signals.protected():
                backend.remove(task)
    return _outcome(command, result, exit_info, timed_out=timed_out, interrupted=interrupted)


def _stop(backend: Backend, task: Task, signals: Signals) -> ExitInfo | None:
    """Stop the check's task: politely (its root records the check as stopped), then not."""
    backend.signal(task, "SIGTERM")
    end = time.monotonic() + STOP_S
    seen = max(signals.count, 1)
    while time.monotonic() < end and signals.count <= seen:
        if (exit_info := backend.wait(task, 1.0)) is not None:
            return exit_info
    backend.signal(task, "SIGKILL")
    exit_info = backend.wait(task, 60.0)
    if exit_info is None:
        raise AgentWorkerError("the check's container does not stop: check the Docker engine")
    return exit_info


def _outcome(
    command: str,
    result: str | None,
    exit_info: ExitInfo | None,
    *,
    timed_out: bool,
    interrupted: bool,
) -> CheckRun:
    """The check's record from its task's result line; one not run (and why) without it."""
    inside, problem = parse_inside(result)
    warnings = [problem] if problem else []
    check = inside.check if inside is not None else None
    if check is None:
        why = inside.error if inside is not None and inside.error else None
        if inside is None and not (timed_out or interrupted):
            why = "its container ended without a result"
            if exit_info is not None and exit_info.error:
                why += f" ({exit_info.error})"
        check = CheckOutcome(command=command, output_tail=(why,) if why else ())
    elif inside is not None and inside.error:
        warnings.append(f"the check's container: {inside.error}")
    if exit_info is not None and exit_info.oom_killed:
        warnings.append("a process in the check's container ran out of memory and was killed")
    return CheckRun(check, timed_out, interrupted, tuple(warnings))


class _Output:
    """The check's task's stderr: to container.log after the agent's, its own lines shown as
    progress (maintenance, the check's last lines and verdict), as the agent task's are."""

    def __init__(self, run_dir: Path, progress: ProgressSink, redactor: Redactor) -> None:
        self._log = (run_dir / "container.log").open("ab")
        self._progress = progress
        self.stderr = Lines(self._line, redact=redactor.data, keep=redactor.longest)

    def _line(self, raw: bytes) -> None:
        self._log.write(raw)
        show_own_line(
            self._progress, raw.decode("utf-8", "replace").rstrip("\n").removesuffix("\r")
        )

    def close(self) -> None:
        self.stderr.close()
        self._log.close()
