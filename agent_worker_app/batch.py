"""Several tasks at once: a batch's runs, started at most --jobs at once until each has a report.

Each task is pipeline.run_task in a worker thread of its own: the tasks wait on the engine and
on git, not on this process's CPU, and threads share the engine connection and the images.
What the runs share happens once before any task starts, in the driver (driver.py: the
configurations, each repository's checks, the engine, each distinct image). Python runs
signal handlers in the main thread only: the batch loop counts SIGINT and SIGTERM there and
each task, in its thread, sees them through pipeline.TaskSignals, stops its container politely
and keeps its commits; no task starts after a signal, or once the finished ones have spent
--max-cost.

A Run is one run of the command line, whichever way it goes: a single run is the batch of one,
whose task the driver runs in the main thread, without a scheduler.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent_worker_app import batch_plan, pipeline, pull_request
from agent_worker_app.batch_view import BatchView, Entry
from agent_worker_app.console import RunLog
from agent_worker_app.errors import (
    EXIT_AGENT_FAILED,
    EXIT_INTERRUPTED,
    AgentWorkerError,
    internal_error,
)
from agent_worker_app.report import AgentInfo, RunReport

if TYPE_CHECKING:
    from agent_worker_app.agents.base_agent import BaseAgent
    from agent_worker_app.config import Config
    from agent_worker_app.console import Env, Redactor
    from agent_worker_app.engines.base import Backend
    from agent_worker_app.follow_up import Continuation
    from agent_worker_app.git_manager import Workspace
    from agent_worker_app.images.layers import ImageResult, ProjectImage

log = logging.getLogger("agent_worker")
WAIT_S = 0.25  # how often the batch loop looks at signals while tasks run


@dataclass
class Run:
    """One run of the command line as it goes: what it was asked, then its checked repository
    and its image, then its report."""

    planned: batch_plan.Planned
    cfg: Config
    agent: BaseAgent
    ws: Workspace | None = None
    push_remote: str | None = None  # --push: where its branch goes after it succeeds
    pr: pull_request.Target | None = None  # --pr: where its pull request goes (it pushes then)
    image: ImageResult | None = None
    report: RunReport | None = None
    project: ProjectImage | None = None  # its environment, read from its base commit
    continuation: Continuation | None = None  # --continue: the branch's last run, its session
    journal: pipeline.Journal = field(default_factory=pipeline.Journal)  # warnings, timings

    @property
    def number(self) -> int:
        return self.planned.number


def _budget_spent(runs: list[Run], limit: float | None) -> float | None:
    """What the finished runs have spent, once it reaches limit; else None."""
    if limit is None:
        return None
    spent = sum(
        run.report.cost_usd or 0.0 for run in runs if run.report is not None and run.report.run_id
    )
    return spent if spent >= limit else None


@dataclass
class Scheduler:
    """Starts runs, at most --jobs at once, each in a thread of its own, until every run has a
    report; what the threads share. on_start: called as each task starts (the driver's
    housekeeping begins with the first)."""

    backend: Backend
    view: BatchView
    signals: pipeline.Signals
    redactor: Redactor
    env: Env
    on_start: tuple[Callable[[], None], ...] = ()
    budget: float | None = None  # the batch's --max-cost, where not each task's (--attempts)

    def __post_init__(self) -> None:
        self.finished: queue.Queue[Run] = queue.Queue()
        self.running: dict[int, threading.Thread] = {}

    def run_all(self, runs: list[Run]) -> None:
        for run in runs:
            if run.report is not None:
                self.view.done(entry(run))
        pending = [run for run in runs if run.report is None]
        if not pending:
            return
        jobs, limit = pending[0].cfg.jobs, self.budget or pending[0].cfg.max_cost_usd
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
            self.view.done(entry(run))

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
        self.view.done(entry(done))

    def _stop_all(self) -> None:
        """After a bug in this loop: the tasks still running stop as on a signal."""
        if self.running:
            self.signals.stop_tasks()
            for thread in self.running.values():
                thread.join()

    def _work(self, run: Run) -> None:
        """One run, in its own thread; it always ends with a report and tells the loop."""
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
                # its own clock, from its task's start: the turns of others are not its time
                journal=pipeline.Journal(warnings=list(run.journal.warnings)),
                push_remote=None if run.pr is not None else run.push_remote,
                on_start=self.on_start,
            )
            run.report = pipeline.run_task(ctx, self.backend, run.ws, run.image.tag)
            if run.pr is not None:
                run.report = pull_request.finish(
                    run.pr,
                    run.report,
                    run.ws,
                    progress=progress,
                    redactor=self.redactor,
                    environ=os.environ,
                    push_ci=run.cfg.push_ci,
                )
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


def entry(run: Run) -> Entry:
    """The run as the summary shows it; it has its report by now."""
    assert run.report is not None, "every run ends with a report"
    return Entry(run.number, run.cfg.project, run.cfg.task, run.cfg.branch, run.report)


def not_run(run: Run, status: str, code: int, message: str) -> RunReport:
    """The report of a batch's run whose task never started: its repository's checks failed,
    or the batch was stopped or its budget spent before its turn (status "skipped")."""
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
