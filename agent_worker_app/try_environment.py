"""agent-worker --try-environment: the project's environment tried without an agent. A run of
the `command` agent whose task does nothing (`true`), on a branch of its own at HEAD that is
deleted again afterwards: the same driver and pipeline as every run, so the image's layers,
the maintenance commands and the check are what a real run gets, with no credential asked
for or passed (the command agent takes none). Then what each step did and how long it took.

Exit codes as for a run: 0 every step passed, 1 a maintenance command or the check failed,
3 the image could not be built (or another precondition), 2 a usage error. The run's data
stays in the git directory (agent-worker/runs), like any run's; no branch does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_worker_app import environment_hint
from agent_worker_app.errors import EXIT_AGENT_FAILED, UsageError

if TYPE_CHECKING:
    from agent_worker_app.batch import Run
    from agent_worker_app.config import Config
    from agent_worker_app.console import Env
    from agent_worker_app.report import RunReport

NO_OP = "true"
BRANCH_PREFIX = "agent-worker-try"
# What a try has no use for: an agent, its task and credential, a branch to keep or push.
REFUSED = {
    "task": "--task",
    "task_file": "--task-file",
    "tasks_file": "--tasks-file",
    "continue_from": "--continue",
    "branch": "--branch",
    "push": "--push",
    "push_ci": "--push-ci",
    "agent_arg": "--agent-arg",
    "api_key": "--api-key",
    "auth": "--auth",
    "base_url": "--base-url",
    "model": "--model",
    "max_turns": "--max-turns",
    "agent_version": "--agent-version",
    "max_cost": "--max-cost",
    "jobs": "--jobs",
}
_MAINTENANCE_PASSED = re.compile(r"agent-worker: maintenance (\d+)/(\d+): passed in ([0-9.]+) s$")
_KEPT = "; the agent's work is kept on the branch"  # report.check_failure's ending
_MAINTENANCE_FAILED = re.compile(r"maintenance command (\d+) of (\d+) failed")


@dataclass(frozen=True)
class Step:
    """One step of the environment, as the try saw it."""

    kind: str  # layer, setup, maintenance, check
    name: str  # "environment layer", "setup 1/2 `pip install -e .`", ...
    status: str  # built, reused, passed, failed, not run
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        took = round(self.seconds, 3) if self.seconds is not None else None
        return {"kind": self.kind, "name": self.name, "status": self.status, "seconds": took}


def try_options(options: Mapping[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
    """The options of the try's run: the command agent, the no-op task, a branch of its own;
    UsageError for an option that asks for an agent, a task or a branch."""
    for key, flag in REFUSED.items():
        if options.get(key) not in (None, (), False):
            raise UsageError(
                f"--try-environment runs no agent and keeps no branch: leave out {flag}"
            )
    if options.get("agent_type") not in (None, "command"):
        raise UsageError("--try-environment runs no agent: leave out --agent-type")
    projects = options.get("project") or ()
    if not isinstance(projects, str) and len(projects) > 1:
        raise UsageError("--try-environment tries one project: give --project once")
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return dict(options) | {
        "agent_type": "command",
        "task": (NO_OP,),
        "branch": f"{BRANCH_PREFIX}-{stamp}-{os.urandom(3).hex()}",
        "try_environment": None,
    }


def remove_branch(run: Run) -> None:
    """The try's branch gone, wherever the run left it (its name is this try's alone)."""
    from agent_worker_app import git_manager  # git's machinery: loaded by the run already

    ws = run.ws
    if ws is None:
        return
    tip = git_manager.branch_tip(ws.root, ws.branch)
    if tip is not None:
        git_manager.delete_branch(replace(ws, base_commit=tip))


def exit_code(report: RunReport) -> int:
    """A run's exit code, but a failed maintenance command is the environment's failure (1),
    as a failed check is, not a precondition of the run's."""
    if report.error and _MAINTENANCE_FAILED.match(report.error):
        return EXIT_AGENT_FAILED
    return report.exit_code


def steps(run: Run, report: RunReport) -> list[Step]:
    """What each step of the environment did, in order."""
    found: list[Step] = []
    for layer in run.image.layers if run.image is not None else ():
        status = "built" if layer.built else "reused"
        found.append(Step("layer", f"{layer.name} layer", status, layer.duration_s))
        total = len(layer.setup_times)
        for i, (cmd, took) in enumerate(layer.setup_times, 1):
            found.append(Step("setup", f"setup {i}/{total} {_shown(cmd)}", "passed", took))
    passed = _maintenance_times(report)
    failed = _MAINTENANCE_FAILED.match(report.error or "")
    commands = run.cfg.maintenance
    for i, cmd in enumerate(commands, 1):
        status = "passed" if i in passed else "not run"
        if failed and int(failed.group(1)) == i:
            status = "failed"
        found.append(
            Step(
                "maintenance",
                f"maintenance {i}/{len(commands)} {_shown(cmd)}",
                status,
                passed.get(i),
            )
        )
    check = report.check
    if check is not None:
        status = "passed" if check.passed else "failed" if check.ran else "not run"
        found.append(Step("check", f"check {_shown(check.command)}", status, check.duration_s))
    return found


def _shown(command: str) -> str:
    from agent_worker_app.images.build_output import shown_command  # (a run loaded it)

    return shown_command(command)


def _maintenance_times(report: RunReport) -> dict[int, float]:
    """Each maintenance command that passed and its time, as the container said it."""
    if report.run_dir is None:
        return {}
    path = Path(report.run_dir) / "container.log"
    times: dict[int, float] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if match := _MAINTENANCE_PASSED.match(line):
                times[int(match.group(1))] = float(match.group(3))
    return times


def emit(run: Run, report: RunReport, cfg: Config, env: Env) -> int:
    """The steps on stdout (JSON with --json, and in --report-file); the error on stderr; the
    exit code."""
    from agent_worker_app.console import escape_text  # the console: about 17 ms
    from agent_worker_app.report import SCHEMA_VERSION  # the report's schema: about 20 ms

    code = exit_code(report)
    to = cfg.report_file
    found = steps(run, report)
    hint = environment_hint.detect(run.cfg.environment.markers)
    source = run.cfg.environment.source or "no environment file (the default image)"
    base = (report.base_commit or "")[:12]
    payload = {
        "schema_version": SCHEMA_VERSION,
        "try_environment": True,
        "environment": run.cfg.environment.source or None,
        "base_commit": report.base_commit,
        "status": "success" if code == 0 else "failed" if code == 1 else report.status,
        "exit_code": code,
        "error": report.error.replace(_KEPT, "") if report.error else None,
        "steps": [step.to_json() for step in found],
        "duration_s": round(report.duration_s, 3),
        "run_dir": report.run_dir,
        "suggested": hint.text if hint is not None else None,
    }
    text = json.dumps(payload, indent=2) + "\n"
    if to is not None:
        with suppress(OSError):
            to.parent.mkdir(parents=True, exist_ok=True)
            to.write_text(text, encoding="utf-8")
    if cfg.json_output:
        env.stdout.write(text)
    else:
        lines = [f"Environment: {source} at {base}"]
        labels = [("    " if step.kind == "setup" else "  ") + step.name for step in found]
        width = max((len(label) for label in labels), default=0)
        for label, step in zip(labels, found, strict=True):
            took = f"{step.seconds:6.1f} s" if step.seconds is not None else ""
            lines.append(f"{label:<{width}}  {step.status:<8} {took}".rstrip())
        verdict = "every step passed" if code == 0 else "failed"
        lines.append(f"Tried in {report.duration_s:.1f} s: {verdict}; no branch was kept")
        lines.append(f"Run data: {report.run_dir}")
        if hint is not None:
            lines.append(
                f"Suggested for this {hint.kind} project ({hint.marker}): read it, change it, "
                "commit it as .agent-worker/environment.toml and try it:"
            )
            lines.extend(["", *hint.text.splitlines()])
        env.stdout.write("".join(escape_text(line) + "\n" for line in lines))
    env.stdout.flush()
    if report.error:  # (no agent ran, and no branch is kept, whatever a run's message says)
        error = report.error.replace(_KEPT, "")
        env.stderr.write(f"agent-worker: {report.status}: {escape_text(error)}\n")
    return code
