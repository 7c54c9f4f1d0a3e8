"""One run's task as a pipeline over a Backend: its run directory, its branch, then the task's
four steps (spec, supervise, collect, report), each passing frozen values to the next. What
comes before a task (the checks, the engine, the image) and after it (the engine's
housekeeping) is the driver's (driver.py), written once for a single run and a batch.

From the branch on, a report is always written, the task is removed on every path, and the
branch is deleted only if this run made it and the agent never started.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from agent_worker_app import capped_log, check_task, git_manager, runs, task_spec
from agent_worker_app.agents.base_agent import AgentResult
from agent_worker_app.check_task import CheckRun
from agent_worker_app.console import AgentOutput
from agent_worker_app.engines.base import GRACE_S, Backend, ExitInfo, Task
from agent_worker_app.engines.channel import ResultTooLargeError
from agent_worker_app.errors import (
    AgentWorkerError,
    DockerError,
    GitError,
    Interrupted,
    internal_error,
)
from agent_worker_app.git_manager import SKIP_CI_OPTION as SKIP_CI
from agent_worker_app.images.layers import ImageResult
from agent_worker_app.report import (
    AgentInfo,
    BranchTotals,
    Outcome,
    RunReport,
    Tokens,
    decide_status,
    render_json,
)
from agent_worker_app.sandbox_report import CheckOutcome
from agent_worker_app.task_result import Inside, import_result, parse_inside, parse_network

if TYPE_CHECKING:
    from agent_worker_app.agents.base_agent import BaseAgent, OutputParser
    from agent_worker_app.config import Config
    from agent_worker_app.console import ProgressSink, Redactor, RunLog
    from agent_worker_app.follow_up import Continuation
    from agent_worker_app.git_manager import Workspace
    from agent_worker_app.task_spec import Session

log = logging.getLogger("agent_worker")


class Signals:
    """SIGINT and SIGTERM raise Interrupted in the main thread, once; while protected (cleanup)
    they are only counted, and one more means "stop waiting"."""

    def __init__(self) -> None:
        self._count = 0
        self._protected = 0
        self._previous: dict[int, Any] = {}

    @property
    def count(self) -> int:
        """How many signals arrived."""
        return self._count

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._count += 1
        if self._count == 1 and not self._protected:
            raise Interrupted(f"interrupted by {signal.Signals(signum).name}")

    def check(self) -> None:
        """Raise Interrupted here if a signal asked for it and the handler could not: nothing
        to do in the main thread, where the handler raises it itself (see TaskSignals)."""

    def stop_tasks(self) -> None:
        """Stop the tasks running in worker threads as a signal would (TaskSignals)."""
        self._count += 1

    @contextmanager
    def protected(self) -> Iterator[None]:
        self._protected += 1
        try:
            yield
        finally:
            self._protected -= 1


class TaskSignals(Signals):
    """The process's Signals as a task run in a worker thread sees them. Python runs signal
    handlers in the main thread only, so the task asks (check(), in its supervising loop) and
    raises Interrupted itself, once, outside its protected sections; count is the process's,
    so one more signal still cuts its waits short."""

    def __init__(self, main: Signals) -> None:
        super().__init__()
        self._main = main
        self._raised = False

    @property
    def count(self) -> int:
        return self._main.count

    def install(self) -> None:
        raise RuntimeError("a task's signals are the main thread's: install those")

    def check(self) -> None:
        if self._main.count and not self._raised and not self._protected:
            self._raised = True
            raise Interrupted("interrupted by a signal")


@dataclass
class Journal:
    """What a run notes as it goes: timings of its phases and warnings for the report."""

    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    _last: float = field(default_factory=time.monotonic)

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.timings[name] = now - self._last
        self._last = now


@dataclass(frozen=True)
class Context:
    """What every step of one run shares."""

    config: Config
    agent: BaseAgent
    parser: OutputParser
    redactor: Redactor
    progress: ProgressSink
    signals: Signals
    run_id: str
    run_dir: Path
    journal: Journal
    push_remote: str | None = None  # --push: where the branch goes after a successful run
    continuation: Continuation | None = None  # --continue: the branch's last run, its session
    on_start: tuple[Callable[[], None], ...] = ()  # called once the task has started


@dataclass(frozen=True)
class Supervised:
    """How the task ended, as the host saw it."""

    started: bool = False
    exit: ExitInfo | None = None
    timed_out: bool = False
    interrupted: bool = False
    over_cost: float | None = None  # the cost it had reported when --max-cost stopped it
    agent_tail: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    result: str | None = None  # the task's result line (JSON), when it came
    # what held the task's network outside it recorded, when no result line came to say it
    network: dict[str, Any] | None = None
    node: str | None = None  # the machine it ran on, where the engine has several
    runtime: str | None = None  # the engine runtime it ran under (runc, runsc)
    deadline: float = 0.0  # time.monotonic() at which the run's timeout passes (agent and check)


@dataclass(frozen=True)
class Collected:
    inside: Inside | None = None
    head: str | None = None
    import_error: str | None = None
    warnings: tuple[str, ...] = ()


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + os.urandom(4).hex()


# ---------------------------------------------------------------- the task's run


def open_run(
    cfg: Config,
    agent: BaseAgent,
    ws: Workspace,
    image: ImageResult,
    *,
    redactor: Redactor,
    runlog: RunLog,
    progress: ProgressSink,
    signals: Signals,
    journal: Journal,
    push_remote: str | None = None,
    continuation: Continuation | None = None,
    on_start: tuple[Callable[[], None], ...] = (),
) -> Context:
    """A new run id and its run directory (its log, task and build log): what run_task needs."""
    run_id = new_run_id()
    run_dir = ws.git_dir / "agent-worker" / "runs" / run_id
    run_dir.mkdir(parents=True)
    runlog.to_file(run_dir / "agent-worker.log", max_bytes=cfg.max_log_bytes)
    (run_dir / "task.md").write_text(cfg.task, encoding="utf-8")
    keep_build_logs(image, run_dir, max_bytes=cfg.max_log_bytes)
    parser = agent.parser()
    return Context(
        cfg,
        agent,
        parser,
        redactor,
        progress,
        signals,
        run_id,
        run_dir,
        journal,
        push_remote,
        continuation,
        on_start,
    )


def keep_build_logs(image: ImageResult, run_dir: Path, *, max_bytes: int) -> None:
    """The log of each layer this run built, in the run directory: build-<layer>.log (and
    build.log, all of them in order), each up to max_bytes (--max-log-size)."""
    built = [(layer.name, layer.log_path) for layer in image.layers if layer.built]
    if not image.layers and image.log_path is not None:  # a backend that reports no layers
        built = [("image", image.log_path)]
    if not built:
        return
    whole = capped_log.CappedFile(run_dir / "build.log", max_bytes)
    try:
        for name, path in built:
            if path is not None:
                layer_log = run_dir / f"build-{name.split()[0]}.log"
                capped_log.copy(path, layer_log, max_bytes)
                with layer_log.open("rb") as data:
                    while piece := data.read(1 << 16):
                        whole.write(piece)
    finally:
        whole.close()


def run_task(ctx: Context, backend: Backend, ws: Workspace, image: str) -> RunReport:
    """Branch, spec, supervise, collect; cleanup and a report on every path."""
    supervised, collected, error = Supervised(), Collected(), None
    checked: CheckRun | None = None
    task: Task | None = None
    created: Workspace | None = None
    try:
        session = None
        if ctx.continuation is None:
            ws = created = git_manager.create_branch(ws, branch_given=ctx.config.branch_given)
        else:
            session = resumed_session(ctx)
        ctx.progress.phase("Starting the agent container")
        prepared = task_spec.prepare(
            ctx.config,
            ctx.agent,
            ws,
            image=image,
            run_id=ctx.run_id,
            run_dir=ctx.run_dir,
            session=session,
        )
        runs.record_task(  # what a later run trusts if this one is lost, never the labels
            ctx.run_dir,
            branch=ws.branch,
            base=ws.base_commit,
            agent=ctx.config.agent_type,
            nonce=prepared.inputs.nonce,
            environment=ctx.config.environment.commit,
        )
        ctx.redactor.add(*prepared.secrets)
        ctx.journal.warnings.extend(prepared.warnings)
        for warning in prepared.warnings:
            ctx.progress.warn(warning)
        task = backend.create(prepared.spec, prepared.inputs)
        supervised = supervise(ctx, backend, task, ws)
        ctx.journal.mark("agent")
        with ctx.signals.protected():
            collected = collect(ctx, backend, task, ws, supervised)
        ctx.journal.mark("results")
        if collected.head is not None and wants_check(ctx, supervised, collected):
            with ctx.signals.protected():  # its work is on the branch: nothing left to recover
                remove_task(ctx, backend, task)
            task = None
            checked = check_branch(
                ctx, backend, ws, image, head=collected.head, deadline=supervised.deadline
            )
            ctx.journal.mark("check")
    except AgentWorkerError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 (a bug: reported with the log, not a traceback)
        log.error("internal error:\n%s", traceback.format_exc())
        error = internal_error(exc, ctx.run_dir / "agent-worker.log")
    outcome = combine(supervised, collected, error, check=ctx.config.check, checked=checked)
    with ctx.signals.protected():
        deleted = clean_up(ctx, backend, task, created, outcome)
    kept = ctx.continuation is not None or (created is not None and not deleted)
    return report(ctx, ws, outcome, branch=kept)


def resumed_session(ctx: Context) -> Session | None:
    """The session a continuing run resumes, saying so (or why there is none)."""
    assert ctx.continuation is not None
    previous, session = ctx.continuation.previous, ctx.continuation.session
    ctx.progress.note(f"continuing branch {previous.branch} after run {previous.run_id}")
    if session is not None:
        ctx.progress.note(f"resuming the agent's session {session.session_id}")
    elif ctx.agent.session_dir is not None:
        ctx.progress.note(f"no earlier {ctx.config.agent_type} session on this branch: a new one")
    return session


def wants_check(ctx: Context, supervised: Supervised, collected: Collected) -> bool:
    """Whether the check is to run: configured, and the run a success so far (the agent
    succeeded and its work is on the branch); on any other run its verdict changes nothing."""
    if ctx.config.check is None:
        return False
    so_far = combine(supervised, collected, None)
    result = ctx.parser.result() if so_far.started else None
    cfg = ctx.config
    status, *_ = decide_status(
        so_far, result, timeout_s=cfg.timeout_s, memory=cfg.memory, max_cost=cfg.max_cost_usd
    )
    return status == "success"


def check_branch(
    ctx: Context, backend: Backend, ws: Workspace, image: str, *, head: str, deadline: float
) -> CheckRun:
    """The check, in a fresh container of its own on the branch's final commit, in what is
    left of the run's timeout."""
    cfg = ctx.config
    assert cfg.check is not None, "wants_check() said so"
    left = deadline - time.monotonic()
    if left <= 0:
        return CheckRun(CheckOutcome(command=cfg.check), timed_out=True)
    spec, inputs = check_task.prepare(
        cfg, ws, head=head, image=image, run_id=ctx.run_id, run_dir=ctx.run_dir, timeout_s=left
    )
    return check_task.run(
        backend,
        spec,
        inputs,
        command=cfg.check,
        deadline=deadline,
        run_dir=ctx.run_dir,
        progress=ctx.progress,
        signals=ctx.signals,
        redactor=ctx.redactor,
    )


def combine(
    supervised: Supervised,
    collected: Collected,
    error: AgentWorkerError | None,
    *,
    check: str | None = None,
    checked: CheckRun | None = None,
) -> Outcome:
    """How the run ended: its agent's task, the import of its work, the check's own task."""
    inside = collected.inside
    setup_error = inside.error if inside is not None and inside.phase == "setup" else None
    check_outcome = checked.check if checked is not None else None
    if check is not None and check_outcome is None:  # configured, and it never ran
        check_outcome = CheckOutcome(command=check)
    blocked, meter = parse_network(supervised.network)
    if inside is not None:
        blocked, meter = inside.blocked, inside.meter
    over_cost = supervised.over_cost
    if over_cost is None and meter is not None and meter.refused:  # the gate held the budget
        over_cost = meter.cost_usd
    return Outcome(
        exit=supervised.exit,
        timed_out=supervised.timed_out or (checked is not None and checked.timed_out),
        interrupted=supervised.interrupted or (checked is not None and checked.interrupted),
        over_cost=over_cost,
        started=supervised.started,
        node=supervised.node,
        runtime=supervised.runtime,
        head=collected.head,
        import_error=collected.import_error,
        error=error,
        agent_tail=list(supervised.agent_tail),
        container_error=setup_error,
        warnings=[
            *supervised.warnings,
            *collected.warnings,
            *(checked.warnings if checked is not None else ()),
        ],
        check=check_outcome,
        blocked=list(blocked),
        meter=meter,
    )


def clean_up(
    ctx: Context, backend: Backend, task: Task | None, created: Workspace | None, outcome: Outcome
) -> bool:
    """Remove the task; delete the branch this run made if the agent never started. True when
    the branch was deleted."""
    if task is not None:
        remove_task(ctx, backend, task)
    (ctx.run_dir / "source.pack").unlink(missing_ok=True)
    if created is not None and not outcome.agent_started and git_manager.delete_branch(created):
        log.info("deleted branch %s: the agent never started", created.branch)
        return True
    return False


def remove_task(ctx: Context, backend: Backend, task: Task) -> None:
    """Remove the task; a refusal is a warning of the run's."""
    try:
        backend.remove(task)
    except AgentWorkerError as exc:
        ctx.journal.warnings.append(str(exc))


# ---------------------------------------------------------------- supervise


def supervise(ctx: Context, backend: Backend, task: Task, ws: Workspace) -> Supervised:
    """Start the task and stream the agent's output until it ends, the timeout passes or a
    signal arrives; it has stopped when this returns."""
    output = AgentOutput(
        ctx.run_dir, ctx.parser.feed, ctx.progress, ctx.redactor, max_bytes=ctx.config.max_log_bytes
    )
    started, exit_info, timed_out, interrupted, warnings = False, None, False, False, []
    over_cost, node, runtime, result, deadline = None, None, None, None, 0.0
    try:
        stream = backend.start(task, output.stdout.feed, output.stderr.feed)
        started, node, runtime = True, backend.node(task), backend.runtime(task)
        ctx.journal.mark("container")
        for hook in ctx.on_start:
            hook()
        ctx.progress.phase(f"Agent at work on branch {ws.branch}")
        deadline = time.monotonic() + ctx.config.timeout_s
        try:
            while exit_info is None and (left := deadline - time.monotonic()) > 0:
                ctx.signals.check()
                if (over_cost := cost_passed(ctx)) is not None:
                    break
                if stream.is_alive():
                    stream.join(min(left, 1.0))
                else:  # the output ended: the task is stopping (or the stream broke)
                    exit_info = backend.wait(task, min(left, 5.0))
            timed_out = exit_info is None and over_cost is None
        except Interrupted:
            interrupted = True
        why = "timed out" if timed_out else "interrupted" if interrupted else "over --max-cost"
        with ctx.signals.protected():
            exit_info = stop(ctx, backend, task, exit_info, why=why)
            stream.join(10.0)
        if stream.error is not None:
            warnings.append(f"reading the agent's output failed: {stream.error}")
        result = stream.result  # the task's own account (channel.ResultReader), if it came
        # a task that died without its account (gVisor's sandbox, killed whole by a limit):
        # its network companion still knows what it blocked and what the gate counted
        network = stream.network_record() if result is None else None
    finally:
        output.close()
    warnings.extend(output.warnings)
    return Supervised(
        started=started,
        exit=exit_info,
        timed_out=timed_out,
        interrupted=interrupted,
        over_cost=over_cost,
        agent_tail=tuple(output.tail),
        warnings=tuple(warnings),
        result=result,
        network=network,
        node=node,
        runtime=runtime,
        deadline=deadline,
    )


def cost_passed(ctx: Context) -> float | None:
    """The cost the agent has reported so far, once it passes --max-cost; else None."""
    limit = ctx.config.max_cost_usd
    cost = ctx.parser.cost_so_far() if limit is not None else None
    return cost if cost is not None and limit is not None and cost > limit else None


def stop(
    ctx: Context, backend: Backend, task: Task, exit_info: ExitInfo | None, *, why: str
) -> ExitInfo:
    """See the task stopped; after a timeout, a signal or --max-cost, politely first, so that
    it can commit and bundle what the agent did."""
    if exit_info is None:
        ctx.progress.phase(f"Agent {why}: stopping it and saving its commits")
        backend.signal(task, "SIGTERM")
        exit_info = wait_exit(ctx, backend, task, GRACE_S)
    if exit_info is None:
        backend.signal(task, "SIGKILL")
        exit_info = backend.wait(task, 60.0)
    if exit_info is None:
        raise DockerError("the agent container does not stop: check the Docker engine")
    return exit_info


def wait_exit(ctx: Context, backend: Backend, task: Task, grace: float) -> ExitInfo | None:
    """Wait up to grace seconds for the task to exit; another signal cuts it short."""
    end = time.monotonic() + grace
    signals_seen = max(ctx.signals.count, 1)
    while time.monotonic() < end and ctx.signals.count <= signals_seen:
        exit_info = backend.wait(task, 1.0)
        if exit_info is not None:
            return exit_info
    return None


# ---------------------------------------------------------------- collect


def collect(
    ctx: Context, backend: Backend, task: Task, ws: Workspace, supervised: Supervised
) -> Collected:
    """Read the task's account of its end and bring its commits onto the branch."""
    ctx.progress.phase("Bringing the agent's commits back")
    inside, problem = parse_inside(supervised.result)
    warnings = [problem] if problem else []
    if inside is not None:
        warnings.extend(inside.warnings)
        if inside.stopped:
            warnings.append(f"{inside.stopped}: the task stopped its agent by itself")
    bundle = ctx.run_dir / "out" / "result.bundle"
    wanted = inside is not None and (inside.bundle or ctx.agent.session_dir is not None)
    fetched, too_large = fetch(ctx, backend, task) if wanted else (False, "")
    if fetched:
        keep_session(ctx)
    tail = ctx.run_dir / "out" / "agent-tail.jsonl"  # the agent's last lines, as it wrote them
    if tail.is_file():
        tail.write_bytes(ctx.redactor.data(tail.read_bytes()))
    warnings.extend([too_large] if too_large and bundle.is_file() else [])  # the rest was cut
    if inside is not None and inside.bundle and fetched and bundle.is_file():
        imported = import_result(ws, bundle, expected=inside.head)
        return Collected(inside, *imported, tuple(warnings))
    head = git_manager.branch_head(ws)
    import_error = None
    if inside is None:
        import_error = (
            "the container did not hand back the agent's work (see container.log in the run "
            "directory): the branch stays at the base"
        )
        if supervised.exit is not None and supervised.exit.error:
            import_error = (
                f"the task ended without handing back the agent's work "
                f"({supervised.exit.error}): the branch stays at the base"
            )
    elif inside.phase == "agent" and inside.error:
        import_error = f"the container {inside.error}: the branch stays at the base"
    elif inside.bundle and too_large:
        import_error = f"{too_large}: the agent's commits were not brought back"
    elif inside.bundle:
        import_error = "the container's result bundle could not be copied out"
    elif inside.phase == "agent" and inside.head and inside.head != ws.base_commit:
        import_error = (
            f"the agent left HEAD at {inside.head[:12]}, which does not "
            f"descend from the base {ws.base_commit[:12]}: nothing imported"
        )
    return Collected(inside, head, import_error, tuple(warnings))


def fetch(ctx: Context, backend: Backend, task: Task) -> tuple[bool, str]:
    """(whether the task's files came, and why not all of them did: --max-result-size passed,
    the files that came whole before it kept; "" when all came)."""
    try:
        return backend.fetch_result(task, ctx.run_dir, max_bytes=ctx.config.max_result_bytes), ""
    except ResultTooLargeError as exc:
        return True, str(exc)


def keep_session(ctx: Context) -> None:
    """The agent's session files, out of the container, into the run directory's session/
    (secrets masked, as in every file of a run), for a later --continue."""
    out = ctx.run_dir / "out" / "session"
    if not out.is_dir():
        return
    kept = ctx.run_dir / "session"
    kept.mkdir(exist_ok=True)
    for path in out.iterdir():
        if path.is_file() and not path.is_symlink():
            (kept / path.name).write_bytes(ctx.redactor.data(path.read_bytes()))
    shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------- report


def report(ctx: Context, ws: Workspace, outcome: Outcome, *, branch: bool) -> RunReport:
    """The report of the run from everything known about it; written to the run directory."""
    cfg = ctx.config
    result: AgentResult | None = ctx.parser.result() if outcome.started else None
    session_cost = result.cost_usd if result is not None else None
    if result is not None:
        result = replace(result, cost_usd=own_cost(ctx, result.cost_usd))
        if result.cost_usd is None and outcome.meter is not None:  # the gate's price of its count
            result = replace(result, cost_usd=outcome.meter.cost_usd)
    status, code, message, warnings = decide_status(
        outcome, result, timeout_s=cfg.timeout_s, memory=cfg.memory, max_cost=cfg.max_cost_usd
    )
    ctx.journal.warnings.extend([*outcome.warnings, *warnings])
    differ = outcome.meter.disagreement(result) if outcome.meter and result else ""
    if differ:
        ctx.journal.warnings.append(
            f"the agent's own token figures differ from what the credential gate counted: {differ}"
        )
    try:
        files = git_manager.diff_stats(ws, outcome.head) if outcome.head else []
    except GitError as exc:
        files = []
        ctx.journal.warnings.append(f"no change statistics: {exc}")
    result = result or AgentResult()
    pushed_to = None
    if status == "success" and branch and ctx.push_remote is not None:
        pushed_to = publish(ctx, ws, ctx.push_remote)
    made = RunReport(
        run_id=ctx.run_id,
        status=status,
        exit_code=code,
        branch=ws.branch if branch else None,
        base_commit=ws.base_commit,
        head_commit=outcome.head,
        duration_s=time.monotonic() - ctx.journal.started,
        agent=AgentInfo.of(cfg.agent_type, result, ctx.agent.version(), session_cost),
        tokens=Tokens.of(result),
        cost_usd=result.cost_usd,
        turns=result.turns,
        files=files,
        run_dir=str(ctx.run_dir),
        error=ctx.redactor.text(message) if message else None,
        firewall=cfg.firewall,
        warnings=[ctx.redactor.text(w) for w in ctx.journal.warnings],
        timings=ctx.journal.timings,
        metered=ctx.agent.metered,
        pushed_to=pushed_to,
        node=outcome.node,
        runtime=outcome.runtime,
        check=outcome.check,
        blocked=outcome.blocked,
        meter=outcome.meter,
    )
    if ctx.continuation is not None:
        made.continued_from = ctx.continuation.previous.run_id
        made.branch_totals = branch_totals(ctx.continuation.before, made)
    (ctx.run_dir / "report.json").write_text(render_json(made), encoding="utf-8")
    log.info("run %s ended: %s (exit %d)", ctx.run_id, status, code)
    return made


def own_cost(ctx: Context, reported: float | None) -> float | None:
    """This run's own cost. An agent whose cost spans its session (cost_spans_session) reports,
    for a resumed session, what every run of it cost: the session's cost before this run (as
    its last run reported it) is taken off. A figure below that is a session that did not
    resume after all: all of it this run's."""
    session = ctx.continuation.session if ctx.continuation is not None else None
    if reported is None or session is None or not ctx.agent.cost_spans_session:
        return reported
    before = session.cost_usd
    if before is None or reported < before:
        return reported
    return reported - before


def publish(ctx: Context, ws: Workspace, remote: str) -> str | None:
    """--push: the branch to remote, from the host with the user's own credentials; the remote
    when pushed. The push asks the server to start no CI for it (ci.skip) unless --push-ci: a
    pipeline would run the agent's CI files with the job's unprotected secrets. A failed push
    is a warning with the command to retry: the branch stays local and the run's exit code is
    unchanged."""
    ctx.progress.phase(f"Pushing branch {ws.branch} to {remote}")
    skip_ci = not ctx.config.push_ci
    pushed = git_manager.push(ws, remote, skip_ci=skip_ci)
    if skip_ci and not pushed.skip_ci:
        ctx.progress.note(
            f"{remote} takes no push options: pushed without {SKIP_CI}, "
            "so its CI may run the branch's pipeline"
        )
    if pushed.problem is None:
        ctx.progress.note(f"pushed branch {ws.branch} to {remote}")
        return remote
    retry = shlex.join(git_manager.push_command(ws, remote, skip_ci=pushed.skip_ci))
    hint = f" (leave out -o {SKIP_CI} for a server that takes no push options)"
    warning = (
        f"the push to {remote} failed ({pushed.problem}); the branch is only local"
        f"{hint if pushed.skip_ci else ''}: retry with {retry}"
    )
    ctx.progress.warn(warning)
    ctx.journal.warnings.append(warning)
    return None


def branch_totals(before: BranchTotals, this: RunReport) -> BranchTotals:
    """The branch's figures over its runs, this one included."""
    tokens = this.tokens.total if this.metered else None
    both_tokens = [t for t in (before.tokens_total, tokens) if t is not None]
    both_costs = [c for c in (before.cost_usd, this.cost_usd) if c is not None]
    return BranchTotals(
        runs=before.runs + 1,
        duration_s=before.duration_s + this.duration_s,
        tokens_total=sum(both_tokens) if both_tokens else None,
        cost_usd=sum(both_costs) if both_costs else None,
    )
