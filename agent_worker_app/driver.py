"""The one driver of a command line's runs, a single run being the batch of one: each run's
configuration, each repository's checks, the engine, each project's environment, each distinct
image, the tasks, then the engine's housekeeping. Nothing before the tasks changes the user's
repository.

Where a single run (one task on one project) and a batch part ways, it is here:
- a single run's failed check ends the command with that check's error and exit code; in a
  batch, a run whose checks fail gets a report saying so and the others go on (a usage error
  stops either before anything starts);
- a single run's task runs in this thread, under the process's signals, and an error its task
  cannot report ends the command; a batch's tasks run in worker threads, at most --jobs at
  once, and each ends with a report (batch.Scheduler);
- a single run's report times the whole command, its checks and image included; a batch's
  run times its own task;
- a single run shows one status line (console.Progress) and is rendered as its own report; a
  batch shows a line per task and a summary (batch_view.py; agent_worker._emit renders both).

Reaching the engine (and importing its client) overlaps the git checks, which mostly wait on
git; a failed check still comes first. Removing what runs that are gone left behind, and
finding the runs of these repositories whose agent-worker died, are nobody's critical path:
they begin once the first task has started, and end after the last, the lost runs' work
brought back then.

Nothing here knows the engine: it calls the pipeline with a Backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_worker_app import (
    agents,
    attempts,
    batch_plan,
    environment_hint,
    follow_up,
    git_manager,
    pipeline,
    pull_request,
    recovery,
)
from agent_worker_app.batch import Run, Scheduler, entry, not_run
from agent_worker_app.batch_view import BatchView, Entry
from agent_worker_app.console import Progress
from agent_worker_app.errors import (
    AgentWorkerError,
    Interrupted,
    PreconditionError,
    UsageError,
    worst_exit,
)
from agent_worker_app.images import project as project_image
from agent_worker_app.totals import Totals

if TYPE_CHECKING:
    from agent_worker_app.agents.base_agent import BaseAgent
    from agent_worker_app.config import Config
    from agent_worker_app.console import Env, ProgressSink, Redactor, RunLog
    from agent_worker_app.engines.base import Backend
    from agent_worker_app.git_manager import Workspace
    from agent_worker_app.images.layers import ImageResult, ProjectImage

log = logging.getLogger("agent_worker")


@dataclass(frozen=True)
class Plan:
    """The runs a command line asks for. one: it asks for a single run, which keeps its own
    ways (the module's docstring)."""

    runs: list[Run]
    one: bool
    attempts: bool = False  # --attempts N: the runs are attempts at one task (attempts.py)
    keep_winner: bool = False  # --keep winner


@dataclass(frozen=True)
class Outcome:
    """What the runs came to: each one's entry (its report) and their totals."""

    entries: list[Entry]
    totals: Totals
    one: bool  # a single run: its report is rendered as it is, not as a batch's summary

    @property
    def exit_code(self) -> int:
        return self.totals.exit_code


class Background(threading.Thread):
    """A call run on the side; outcome() waits for it and returns (or raises) what it did.
    later: it starts when begin() (or outcome()) is called, not now."""

    def __init__(self, call: Callable[..., Any], *args: Any, later: bool = False) -> None:
        super().__init__(daemon=True)
        self._call = call
        self._args = args
        self._value: Any = None
        self._error: BaseException | None = None
        self._beginning = threading.Lock()  # a batch's tasks may all call begin() at once
        if not later:
            self.start()

    def begin(self) -> None:
        with self._beginning:
            if self.ident is None:
                self.start()

    def run(self) -> None:
        try:
            self._value = self._call(*self._args)
        except BaseException as exc:  # noqa: BLE001 (raised again in the caller's thread)
            self._error = exc

    def outcome(self) -> Any:
        self.begin()
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


# ---------------------------------------------------------------- the runs


def load(
    options: Mapping[str, Any],
    *,
    read_stdin: Callable[[], str],
    load_config: Callable[[Mapping[str, Any]], Config],
) -> Plan:
    """Every run's configuration, checked before anything starts (UsageError)."""
    if (n := attempts.count(options)) > 1:
        tries = attempts.plan(options, n, load_config)
        return Plan(tries, one=False, attempts=True, keep_winner=attempts.keeps_winner(options))
    if not batch_plan.is_batch(options):
        cfg = load_config(batch_plan.single(options))
        entry = batch_plan.Entry(cfg.task, "--task")
        planned = batch_plan.Planned(1, entry, None, cfg.branch, cfg.branch_given)
        return Plan([Run(planned, cfg, agents.get(cfg.agent_type, cfg.agent))], one=True)
    if options.get("continue_from"):
        raise UsageError(
            "--continue runs one task on one branch: give it a single --task, without "
            "--tasks-file or several --project"
        )
    runs: list[Run] = []
    made: dict[tuple[Path, str], str] = {}
    for planned in batch_plan.plan(options, read_stdin=read_stdin):
        cfg = load_config(batch_plan.run_options(options, planned))
        cfg = replace(cfg, branch=planned.branch, branch_given=planned.branch_given)
        key = (cfg.project, cfg.branch)
        if key in made:
            raise UsageError(
                f"{made[key]} and {planned.entry.where} would both make branch "
                f"{cfg.branch!r} in {cfg.project}: give one of them another branch"
            )
        made[key] = planned.entry.where
        runs.append(Run(planned, cfg, agents.get(cfg.agent_type, cfg.agent)))
    return Plan(runs, one=False)


def execute(
    plan: Plan,
    connect: Callable[[], Backend],
    *,
    signals: pipeline.Signals,
    redactor: Redactor,
    runlog: RunLog,
    env: Env,
    cache_dir: Path,
) -> Outcome:
    """Check, prepare, then run the runs; a report for each, started or not (a single run's
    failed check, or an error that cuts its task short, raises instead)."""
    view = None if plan.one else BatchView(env, redactor, len(plan.runs))
    show: ProgressSink = Progress(env, redactor) if view is None else view
    started = time.monotonic()
    try:
        for warning in dict.fromkeys(w for run in plan.runs for w in run.cfg.warnings):
            show.warn(warning)
        backend = _prepare(plan, connect, show, redactor=redactor, cache_dir=cache_dir)
        orphans = Background(backend.remove_orphans, later=True)
        checked = {run.ws.root: run.ws for run in plan.runs if run.ws is not None}
        lost = {root: Background(backend.lost_tasks, str(root), later=True) for root in checked}
        on_start = (orphans.begin, *(found.begin for found in lost.values()))
        _prepare_images(plan, backend, show, cache_dir)
        try:
            if view is None:
                _run_here(
                    plan.runs[0],
                    backend,
                    progress=show,
                    signals=signals,
                    redactor=redactor,
                    runlog=runlog,
                    on_start=on_start,
                )
            else:
                target = attempts.hold_pull_request(plan.runs) if plan.attempts else None
                budget = attempts.budget(plan.runs) if plan.attempts else None
                scheduler = Scheduler(backend, view, signals, redactor, env, on_start, budget)
                scheduler.run_all(plan.runs)
                if plan.attempts:
                    with signals.protected():
                        attempts.conclude(
                            plan.runs,
                            keep_winner=plan.keep_winner,
                            target=target,
                            progress=show,
                            redactor=redactor,
                            environ=os.environ,
                        )
        finally:
            with signals.protected():  # every report is in hand: a signal must not lose them
                report_orphans(orphans, show)
                for root, ws in checked.items():
                    recover_lost(backend, ws, lost[root], show)
    finally:
        show.close()
    entries = [entry(run) for run in plan.runs]
    reports = [e.report for e in entries]
    code = (
        attempts.exit_code(reports) if plan.attempts else worst_exit([r.exit_code for r in reports])
    )
    duration = time.monotonic() - started
    return Outcome(entries, Totals.of(reports, exit_code=code, duration_s=duration), plan.one)


def _prepare(
    plan: Plan,
    connect: Callable[[], Backend],
    show: ProgressSink,
    *,
    redactor: Redactor,
    cache_dir: Path,
) -> Backend:
    """Each repository checked, the engine reached, each project's environment read; the
    engine."""
    for run in plan.runs:
        run.journal = pipeline.Journal(warnings=list(run.cfg.warnings))
    connecting = Background(connect)
    for run in plan.runs:
        with _checking(run, one=plan.one, redactor=redactor):
            _check(run)
    backend: Backend = connecting.outcome()
    for run in plan.runs:
        if run.report is None:
            with _checking(run, one=plan.one, redactor=redactor):
                _read_environment(run, cache_dir)
    ready = [run for run in plan.runs if run.report is None]
    for warning in dict.fromkeys(w for run in ready for w in run.cfg.environment.warnings):
        show.warn(warning)
    for run in ready:  # no environment file where one plainly helps: say so, apply nothing
        if (hint := environment_hint.detect(run.cfg.environment.markers)) is not None:
            show.note(environment_hint.note(hint))
    for run in plan.runs:
        run.journal.mark("preflight")
    return backend


@contextlib.contextmanager
def _checking(run: Run, *, one: bool, redactor: Redactor) -> Iterator[None]:
    """A run's check: its failure ends a single run's command, and is a batch's run's report;
    a usage error stops either."""
    try:
        yield
    except UsageError:
        raise
    except PreconditionError as exc:
        if one:
            raise
        run.report = not_run(run, "error", exc.exit_code, redactor.text(str(exc)))


def _check(run: Run) -> None:
    """The run's repository as it is now: its new branch can be made (--continue: the branch
    goes on from where its last run left it); --push's remote answers."""
    cfg = run.cfg
    if cfg.continue_from is not None:
        run.ws, run.continuation = follow_up.prepare(cfg.project, cfg.continue_from, cfg.agent_type)
    else:
        run.ws = git_manager.preflight(cfg.project, cfg.branch, branch_given=cfg.branch_given)
    run.push_remote = check_push(cfg, run.ws)
    if cfg.pull_request is not None and run.push_remote is not None:
        run.pr = pull_request.prepare(
            cfg, run.ws, run.push_remote, environ=os.environ, continuation=run.continuation
        )


def check_push(cfg: Config, ws: Workspace) -> str | None:
    """--push (and --pr, which pushes): the remote the branch goes to after a successful run,
    checked now."""
    if cfg.push is None and cfg.pull_request is None:
        return None
    remote = cfg.push or git_manager.default_remote(ws)
    try:
        git_manager.check_remote(ws.root, remote)
    except UsageError as exc:
        if cfg.push is not None:
            raise
        raise UsageError(
            f"--pr pushes the branch first, and {exc}".replace("--push: ", "")
        ) from None
    return remote


def _read_environment(run: Run, cache_dir: Path) -> None:
    """The project's environment, from the base commit: the run's configuration with its
    values, and the project's part of the image."""
    assert run.ws is not None, "checked first"
    at = run.continuation.environment if run.continuation is not None else None
    run.cfg, run.project = project_image.load(run.cfg, run.ws, cache_dir / "contexts", at=at)
    run.journal.warnings.extend(run.cfg.environment.warnings)


# ---------------------------------------------------------------- images and tasks


def _prepare_images(plan: Plan, backend: Backend, show: ProgressSink, cache_dir: Path) -> None:
    """Each distinct image once, before any task starts."""
    images: dict[tuple[object, ...], ImageResult] = {}
    for run in plan.runs:
        if run.report is not None:
            continue
        layer = run.agent.image_layer()
        key = (
            layer.stages,
            layer.final,
            tuple(sorted(layer.build_args.items())),
            run.cfg.base_image,
            run.cfg.ca_certs,
            run.cfg.force_rebuild,
            run.project.identity() if run.project is not None else "",
        )
        if key not in images:  # a batch may hold several agents: it says whose image it is
            what = "the agent image" if plan.one else f"the image of the {run.cfg.agent_type} agent"
            show.phase(f"Preparing {what}")
            images[key] = prepare_image(
                backend, run.agent, run.cfg, cache_dir, show, project=run.project
            )
        run.image = images[key]
        run.journal.mark("image")


def prepare_image(
    backend: Backend,
    agent: BaseAgent,
    cfg: Config,
    cache_dir: Path,
    progress: ProgressSink,
    *,
    project: ProjectImage | None = None,
) -> ImageResult:
    """The run's image: the agent's layer on the project's environment (project_image.load)."""
    image = backend.prepare_image(
        agent.image_layer(),
        base_image=cfg.base_image,
        ca_certs=cfg.ca_certs,
        force=cfg.force_rebuild,
        log_dir=cache_dir / "builds",
        on_line=progress.build_line,
        project=project,
    )
    for layer in image.layers:
        log.info(
            "image layer %s: %s (%s)", layer.name, layer.tag, "built" if layer.built else "reused"
        )
    log.info("image %s (%s)", image.tag, "built" if image.built else "reused")
    return image


def _run_here(
    run: Run,
    backend: Backend,
    *,
    progress: ProgressSink,
    signals: pipeline.Signals,
    redactor: Redactor,
    runlog: RunLog,
    on_start: tuple[Callable[[], None], ...],
) -> None:
    """A single run's task, in this thread, timed from the command's start."""
    assert run.ws is not None, "checked first"
    assert run.image is not None, "prepared first"
    ctx = pipeline.open_run(
        run.cfg,
        run.agent,
        run.ws,
        run.image,
        redactor=redactor,
        runlog=runlog,
        progress=progress,
        signals=signals,
        journal=run.journal,
        push_remote=None if run.pr is not None else run.push_remote,  # --pr pushes after
        continuation=run.continuation,
        on_start=on_start,
    )
    run.report = pipeline.run_task(ctx, backend, run.ws, run.image.tag)
    if run.pr is not None:
        with signals.protected():
            run.report = pull_request.finish(
                run.pr,
                run.report,
                run.ws,
                progress=progress,
                redactor=redactor,
                environ=os.environ,
                push_ci=run.cfg.push_ci,
            )


# ---------------------------------------------------------------- the engine's housekeeping


def report_orphans(orphans: Background, progress: ProgressSink) -> None:
    """What the sweep of orphaned tasks removed, or why it could not."""
    try:
        removed = orphans.outcome()
    except AgentWorkerError as exc:
        progress.warn(str(exc))
        return
    for line in removed:
        progress.warn(line)


def recover_lost(backend: Backend, ws: Workspace, lost: Background, progress: ProgressSink) -> None:
    """Bring back the work of this repository's runs whose agent-worker died."""
    with contextlib.suppress(Interrupted):  # a second Ctrl-C: leave it to the next run
        try:
            for said in recovery.recover_found(backend, ws, lost.outcome()):
                (progress.warn if said.warning else progress.note)(said.text)
        except AgentWorkerError as exc:  # never a reason to fail this run
            progress.warn(f"could not look for lost runs to recover: {exc}")
