"""Several runs in one invocation (batch_plan.py says which), at most --jobs at once.

Each run is pipeline.run_task in a worker thread of its own: the runs wait on the engine and
on git, not on this process's CPU, and threads share the engine connection and the images.
Everything that is shared happens once, in the main thread, before any task starts: the
configurations (a bad one stops the batch before anything), each repository's checks, the
engine, each distinct image. Python runs signal handlers in the main thread only: the batch
loop counts SIGINT and SIGTERM there and each task, in its thread, sees them through
pipeline.TaskSignals, stops its container politely and keeps its commits; no task starts
after a signal, or once the finished ones have spent --max-cost.

Nothing here knows the engine: it calls the pipeline with a Backend.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_worker_app import batch_plan, pipeline
from agent_worker_app.batch_view import BatchView, Entry
from agent_worker_app.errors import (
    EXIT_AGENT_FAILED,
    EXIT_INTERRUPTED,
    AgentWorkerError,
    PreconditionError,
    UsageError,
    internal_error,
    worst_exit,
)
from agent_worker_app.report import AgentInfo, RunReport
from agent_worker_app.totals import Totals

if TYPE_CHECKING:
    from agent_worker_app.agents.base_agent import BaseAgent
    from agent_worker_app.backend import Backend, ImageResult
    from agent_worker_app.config import Config
    from agent_worker_app.console import Env, Redactor
    from agent_worker_app.git_manager import Workspace
    from agent_worker_app.image_layers import ProjectImage

log = logging.getLogger("agent_worker")
WAIT_S = 0.25  # how often the batch loop looks at signals while tasks run


@dataclass
class Run:
    """One run of the batch as it goes: what it was asked, then its checked repository and its
    image, then its report."""

    planned: batch_plan.Planned
    cfg: Config
    agent: BaseAgent
    ws: Workspace | None = None
    push_remote: str | None = None  # --push: where its branch goes after it succeeds
    image: ImageResult | None = None
    report: RunReport | None = None
    project: ProjectImage | None = None  # its environment, read from its base commit

    @property
    def number(self) -> int:
        return self.planned.number


@dataclass(frozen=True)
class Outcome:
    entries: list[Entry]
    totals: Totals


def load(
    options: Mapping[str, Any],
    *,
    read_stdin: Callable[[], str],
    load_config: Callable[[Mapping[str, Any]], Config],
) -> list[Run]:
    """Every run's configuration, checked before anything starts (UsageError)."""
    from agent_worker_app import agents

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
    return runs


def execute(
    runs: list[Run],
    connect: Callable[[], Backend],
    *,
    view: BatchView,
    signals: pipeline.Signals,
    redactor: Redactor,
    env: Env,
    cache_dir: Path,
) -> Outcome:
    """Check, prepare, then run the runs; a report for each, started or not."""
    started = time.monotonic()
    connecting = pipeline.Background(connect)
    for run in runs:
        _preflight(run, redactor, cache_dir)
    backend: Backend = connecting.outcome()
    orphans = pipeline.Background(backend.remove_orphans)
    checked = {run.ws.root: run.ws for run in runs if run.ws is not None}
    lost = {root: pipeline.Background(backend.lost_tasks, str(root)) for root in checked}
    try:
        _prepare_images(runs, backend, view, cache_dir)
        _Scheduler(backend, view, signals, redactor, env).run_all(runs)
    finally:
        with signals.protected():
            pipeline.report_orphans(orphans, view)
            for root, ws in checked.items():
                pipeline.recover_lost(backend, ws, lost[root], view)
    entries = [_entry(run) for run in runs]
    code = worst_exit([entry.report.exit_code for entry in entries])
    duration = time.monotonic() - started
    reports = [entry.report for entry in entries]
    return Outcome(entries, Totals.of(reports, exit_code=code, duration_s=duration))


def _report(run: Run) -> RunReport:
    assert run.report is not None, "every run ends with a report"
    return run.report


def _preflight(run: Run, redactor: Redactor, cache_dir: Path) -> None:
    """The repository's checks, as a single run makes them; a run that fails them gets its
    report now (a usage error stops the whole batch)."""
    from agent_worker_app import git_manager, project_image

    try:
        run.ws = git_manager.preflight(
            run.cfg.project, run.cfg.branch, branch_given=run.cfg.branch_given
        )
        run.push_remote = pipeline.check_push(run.cfg, run.ws)
        cfg, run.project = project_image.load(run.cfg, run.ws, cache_dir / "contexts")
        run.cfg = replace(cfg, warnings=(*cfg.warnings, *cfg.environment.warnings))
    except UsageError:
        raise
    except PreconditionError as exc:
        run.report = not_run(run, "error", exc.exit_code, redactor.text(str(exc)))


def _prepare_images(runs: list[Run], backend: Backend, view: BatchView, cache_dir: Path) -> None:
    """Each distinct image once, before any task starts."""
    images: dict[tuple[object, ...], ImageResult] = {}
    for run in runs:
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
        if key not in images:
            view.phase(f"Preparing the image of the {run.cfg.agent_type} agent")
            images[key] = pipeline.prepare_image(
                backend, run.agent, run.cfg, cache_dir, view, project=run.project
            )
        run.image = images[key]


def _budget_spent(runs: list[Run], limit: float | None) -> float | None:
    """What the finished runs have spent, once it reaches limit; else None."""
    if limit is None:
        return None
    spent = sum(
        run.report.cost_usd or 0.0 for run in runs if run.report is not None and run.report.run_id
    )
    return spent if spent >= limit else None


@dataclass
class _Scheduler:
    """Starts runs, at most --jobs at once, each in a thread of its own, until every run has a
    report; what the threads share."""

    backend: Backend
    view: BatchView
    signals: pipeline.Signals
    redactor: Redactor
    env: Env

    def __post_init__(self) -> None:
        self.finished: queue.Queue[Run] = queue.Queue()
        self.running: dict[int, threading.Thread] = {}

    def run_all(self, runs: list[Run]) -> None:
        for run in runs:
            if run.report is not None:
                self.view.done(_entry(run))
        pending = [run for run in runs if run.report is None]
        if not pending:
            return
        jobs, limit = pending[0].cfg.jobs, pending[0].cfg.max_cost_usd
        # Signals are counted, never raised, in this thread while tasks run: each task sees
        # them (TaskSignals) and stops; none starts after one.
        with self.signals.protected():
            try:
                while pending or self.running:
                    while pending and len(self.running) < jobs and self._may_start(runs, limit):
                        self._start(pending.pop(0))
                    if not self.running:
                        break
                    self._wait()
            finally:
                self._stop_all()
        for run in pending:
            run.report = self._not_started(run, runs, limit)
            self.view.done(_entry(run))

    def _may_start(self, runs: list[Run], limit: float | None) -> bool:
        return not self.signals.count and _budget_spent(runs, limit) is None

    def _not_started(self, run: Run, runs: list[Run], limit: float | None) -> RunReport:
        spent = _budget_spent(runs, limit)
        if self.signals.count or spent is None or limit is None:
            return not_run(run, "skipped", EXIT_INTERRUPTED, "not started: interrupted")
        return not_run(
            run,
            "skipped",
            EXIT_AGENT_FAILED,
            f"not started: the finished tasks spent ${spent:.4f} of --max-cost ${limit:g}",
        )

    def _start(self, run: Run) -> None:
        thread = threading.Thread(target=self._work, args=(run,), name=f"task-{run.number}")
        thread.daemon = True
        self.running[run.number] = thread
        thread.start()

    def _wait(self) -> None:
        try:
            done = self.finished.get(timeout=WAIT_S)
        except queue.Empty:
            return
        self.running.pop(done.number).join()
        self.view.done(_entry(done))

    def _stop_all(self) -> None:
        """After a bug in this loop: the tasks still running stop as on a signal."""
        if self.running:
            self.signals.stop_tasks()
            for thread in self.running.values():
                thread.join()

    def _work(self, run: Run) -> None:
        """One run, in its own thread; it always ends with a report and tells the loop."""
        from agent_worker_app.console import RunLog

        assert run.ws is not None, "checked first"
        assert run.image is not None, "prepared first"
        progress = self.view.task(run.number, run.cfg.branch)
        runlog = RunLog(self.redactor, debug=False, stderr=self.env.stderr, this_thread=True)
        try:
            ctx = pipeline.open_run(
                run.cfg,
                run.agent,
                run.ws,
                run.image,
                redactor=self.redactor,
                runlog=runlog,
                progress=progress,
                signals=pipeline.TaskSignals(self.signals),
                journal=pipeline.Journal(warnings=list(run.cfg.warnings)),
                push_remote=run.push_remote,
            )
            run.report = pipeline.run_task(ctx, self.backend, run.ws, run.image.tag)
        except AgentWorkerError as exc:
            run.report = not_run(run, "error", exc.exit_code, self.redactor.text(str(exc)))
        except Exception as exc:  # noqa: BLE001 (a bug: this run's report says so, the rest go on)
            log.error("internal error:\n%s", self.redactor.text(traceback.format_exc()))
            crash = runlog.path or Path(os.devnull)
            run.report = not_run(run, "error", 4, str(internal_error(exc, crash)))
        finally:
            progress.close()
            runlog.close()
            self.finished.put(run)


def _entry(run: Run) -> Entry:
    return Entry(run.number, run.cfg.project, run.cfg.task, run.cfg.branch, _report(run))


def not_run(run: Run, status: str, code: int, message: str) -> RunReport:
    """The report of a run whose task never started: its repository's checks failed, or the
    batch was stopped or its budget spent before its turn (status "skipped")."""
    return RunReport(
        run_id="",
        status=status,
        exit_code=code,
        branch=None,
        base_commit=run.ws.base_commit if run.ws is not None else None,
        head_commit=None,
        duration_s=0.0,
        agent=AgentInfo(run.cfg.agent_type, run.agent.version()),
        error=message,
        firewall=run.cfg.firewall,
        metered=run.agent.metered,
    )
