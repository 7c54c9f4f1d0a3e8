"""The driver (driver.py) through a fake Backend (no engine) on real git repositories: a single
run is the batch of one that keeps its own ways (its failed check ends the command, its
journal times the checks and the image), and a batch's run that fails its checks gets a
report while the others go on."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_pipeline import FakeBackend

from agent_worker_app import config, driver, pipeline
from agent_worker_app.console import Env, Redactor, RunLog
from agent_worker_app.engines.base import LostTask
from agent_worker_app.errors import PreconditionError
from conftest import git, make_repo

SUCCESS = {"phase": "agent", "bundle": False}  # the agent ran and left nothing to import


@dataclass
class Engine(FakeBackend):
    """FakeBackend, with the housekeeping calls a driver makes noted in order."""

    calls: list[str] = field(default_factory=list)

    def prepare_image(self, *args: Any, **kw: Any) -> Any:
        self.calls.append("image")
        return super().prepare_image(*args, **kw)

    def create(self, *args: Any, **kw: Any) -> Any:
        self.calls.append("create")
        return super().create(*args, **kw)

    def remove_orphans(self) -> list[str]:
        self.calls.append("orphans")
        return ["removed an orphan"]

    def lost_tasks(self, project: str) -> list[LostTask]:
        self.calls.append(f"lost {Path(project).name}")
        return []


@dataclass
class Driven:
    outcome: driver.Outcome | None
    stderr: str
    error: PreconditionError | None = None  # what ended the command, when something did


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[Any]:
    runlogs: list[RunLog] = []

    def run(options: dict[str, Any], engine: Engine, *, cwd: Path) -> Driven:
        env = Env(stdout=io.StringIO(), stderr=io.StringIO(), stdin=io.StringIO())
        plan = driver.load(
            {"agent_type": "command", **options},
            read_stdin=lambda: "",
            load_config=lambda one: config.load(
                one, environ={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, cwd=cwd
            ),
        )
        redactor = Redactor()
        runlogs.append(RunLog(redactor, debug=False, stderr=env.stderr))
        try:
            outcome = driver.execute(
                plan,
                lambda: engine,
                signals=pipeline.Signals(),
                redactor=redactor,
                runlog=runlogs[-1],
                env=env,
                cache_dir=tmp_path / "cache",
            )
        except PreconditionError as exc:
            return Driven(None, env.stderr.getvalue(), exc)
        return Driven(outcome, env.stderr.getvalue())

    yield run
    for runlog in runlogs:
        runlog.close()


def test_a_single_run_is_the_batch_of_one_with_its_own_ways(tmp_path: Path, drive: Any) -> None:
    project = make_repo(tmp_path / "project", {"a.txt": "a\n"})
    engine = Engine(result=SUCCESS)
    done = drive({"task": ("echo hi",), "branch": "one"}, engine, cwd=project)
    assert done.outcome is not None
    assert done.outcome.one
    [entry] = done.outcome.entries
    report = entry.report
    assert (report.status, report.exit_code, report.branch) == ("success", 0, "one")
    assert done.outcome.exit_code == 0
    # its journal runs from the command's start: the checks and the image are timed too
    assert list(report.timings) == ["preflight", "image", "container", "agent", "results"]
    # the housekeeping waits for the task to start (its two calls, side by side)
    assert engine.calls[:2] == ["image", "create"]
    assert sorted(engine.calls[2:]) == ["lost project", "orphans"]
    assert "Preparing the agent image" in done.stderr
    assert "agent-worker: warning: removed an orphan" in done.stderr
    on_disk = json.loads((Path(report.run_dir or "") / "report.json").read_text())
    assert on_disk["status"] == "success"


def test_a_single_runs_failed_check_ends_the_command(tmp_path: Path, drive: Any) -> None:
    project = make_repo(tmp_path / "project", {"a.txt": "a\n"})
    (project / "a.txt").write_text("changed\n")
    engine = Engine(result=SUCCESS)
    done = drive({"task": "x"}, engine, cwd=project)
    assert done.outcome is None
    assert "the working tree has uncommitted changes (M a.txt)" in str(done.error)
    assert done.error is not None
    assert done.error.exit_code == 3
    assert engine.calls == []  # no image, no task, no housekeeping
    assert git(project, "branch", "--list") == "* main\n"


def test_a_batch_run_that_fails_its_checks_is_reported_and_the_others_go_on(
    tmp_path: Path, drive: Any
) -> None:
    clean = make_repo(tmp_path / "clean", {"a.txt": "a\n"})
    dirty = make_repo(tmp_path / "dirty", {"a.txt": "a\n"})
    (dirty / "a.txt").write_text("changed\n")
    engine = Engine(result=SUCCESS)
    options = {"task": ("echo hi",), "project": (str(clean), str(dirty)), "branch": "b"}
    done = drive(options, engine, cwd=clean)
    assert done.outcome is not None
    assert not done.outcome.one
    got = [(e.project.name, e.report.status, e.report.exit_code) for e in done.outcome.entries]
    assert got == [("clean", "success", 0), ("dirty", "error", 3)]
    assert "uncommitted changes" in (done.outcome.entries[1].report.error or "")
    assert done.outcome.exit_code == 3  # the worst run's
    assert done.outcome.totals.tasks == 2
    # one image for both; the housekeeping once a task starts; lost runs of the checked project
    assert engine.calls[:2] == ["image", "create"]
    assert sorted(engine.calls[2:]) == ["lost clean", "orphans"]
    assert "Preparing the image of the command agent" in done.stderr
    assert "[1/2 b] success (exit 0)" in done.stderr
    # a batch's run times its own task, not the checks and images it shared
    assert list(done.outcome.entries[0].report.timings) == ["container", "agent", "results"]


def test_an_environment_warning_is_shown_and_reported(tmp_path: Path, drive: Any) -> None:
    project = make_repo(
        tmp_path / "project", {".devcontainer.json": '{"features": {}, "image": "debian"}'}
    )
    done = drive({"task": "echo hi"}, Engine(result=SUCCESS), cwd=project)
    assert done.outcome is not None
    warning = ".devcontainer.json: not supported, ignored: features"
    assert f"agent-worker: warning: {warning}" in done.stderr
    assert any(w.startswith(warning) for w in done.outcome.entries[0].report.warnings)


def test_housekeeping_begins_once_however_many_tasks_start_at_once() -> None:
    calls: list[int] = []
    sweep = driver.Background(lambda: calls.append(1) or 7, later=True)
    starters = [threading.Thread(target=sweep.begin) for _ in range(8)]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join()
    assert sweep.outcome() == 7
    assert calls == [1]
