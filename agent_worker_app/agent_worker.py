"""agent-worker: put an AI coding agent to work on a new branch of a git repository, inside a
Docker container, and report what it did. The click entry point: one driver runs what the
command line asks for (driver.py; a single run is the batch of one), and _emit renders it.

--help and --version load only click, errors, options and presets. Everything else is imported
inside the function that needs it, and says what that saves: measured on top of --help's own
0.08 s, the driver and what a run needs cost about 110 ms, config 37 ms, the console 17 ms,
the renderers 35-50 ms. docker-py (150-200 ms) is imported only by what builds or pulls an
image, and by the swarm backend (engines/).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent_worker_app import engines, presets
from agent_worker_app.errors import AgentWorkerError, DockerError, internal_error
from agent_worker_app.options import ENV_KEYS, OPTIONS, REPEATABLE

if TYPE_CHECKING:
    from agent_worker_app import driver
    from agent_worker_app.agents.base_agent import BaseAgent
    from agent_worker_app.config import Config
    from agent_worker_app.console import Env, Redactor
    from agent_worker_app.engines.base import Backend
    from agent_worker_app.images.layers import ImageResult
    from agent_worker_app.report import RunReport
    from agent_worker_app.totals import Totals

__version__ = "0.1.0"
CHECKOUT = Path(__file__).resolve().parents[1]  # a checkout's top, when run from one
log = logging.getLogger("agent_worker")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agent-worker"


def connect_docker(
    docker_host: str | None,
    backend: str = engines.DEFAULT,
    settings: Mapping[str, str] | None = None,
) -> Backend:
    """The backend (engines.BACKENDS) on the Docker engine chosen, reached and checked."""
    return engines.connect(backend, docker_host, settings or {})


def prepare_image(
    agent: BaseAgent,
    *,
    base_image: str,
    ca_certs: tuple[Path, ...],
    force: bool = False,
    on_line: Callable[[str], None] = lambda line: None,
    log_dir: Path | None = None,
    docker_host: str | None = None,
) -> ImageResult:
    """The image a run of this agent uses on the engine (as a run chooses it), built or reused
    by its content tag (the tests and benchmarks get theirs the same way)."""
    return connect_docker(docker_host).prepare_image(
        agent.image_layer(),
        base_image=base_image,
        ca_certs=ca_certs,
        force=force,
        log_dir=log_dir or cache_dir() / "builds",
        on_line=on_line,
    )


# ---------------------------------------------------------------- command line


def main(options: Mapping[str, Any], env: Env) -> int:
    """Run agent-worker with parsed options; returns the exit code. One run or several, the
    same driver (driver.py): a single run is the batch of one, with its own report."""
    # a run's modules (config, git, the pipeline, the report): about 110 ms, not for --help
    from agent_worker_app import agents, batch_plan, driver
    from agent_worker_app import config as config_module
    from agent_worker_app.console import Redactor, RunLog
    from agent_worker_app.pipeline import Signals

    for flag, command in _COMMANDS.items():  # the options that do something else than a run
        if options.get(flag):
            return command(batch_plan.single(options), env)
    redactor = Redactor()
    signals = Signals()
    signals.install()
    runlog = None
    trying = bool(options.get("try_environment"))
    plan = None
    try:
        if trying:  # a run of the no-op command agent (try_environment.py: about 5 ms)
            from agent_worker_app import try_environment

            options = try_environment.try_options(options)
        plan = driver.load(
            options,
            read_stdin=env.stdin.read,
            load_config=lambda one: config_module.load(
                one,
                environ=os.environ,
                cwd=Path.cwd(),
                tool_dir=_tool_dir(),
                agent_class=agents.agent_class,
                stdin_text=env.stdin.read,
            ),
        )
        redactor.add(*(run.cfg.agent.secret or "" for run in plan.runs))
        first = plan.runs[0].cfg
        runlog = RunLog(redactor, debug=first.debug, stderr=env.stderr)
        what = first if plan.one else f"a batch of {len(plan.runs)} runs"
        log.debug("agent-worker %s, %s", __version__, what)
        outcome = driver.execute(
            plan,
            lambda: connect_docker(first.docker_host, first.backend, first.backend_settings),
            signals=signals,
            redactor=redactor,
            runlog=runlog,
            env=env,
            cache_dir=cache_dir(),
        )
        if trying:
            return try_environment.emit(plan.runs[0], outcome.entries[0].report, first, env)
        _emit(outcome, first, env)
        return outcome.exit_code
    except Exception as exc:  # noqa: BLE001 (the single top-level handler: _failed)
        return _failed(exc, options, env, redactor)
    finally:
        if trying and plan is not None:
            try_environment.remove_branch(plan.runs[0])
        signals.restore()
        if runlog is not None:
            runlog.close()


def _failed(exc: Exception, options: Mapping[str, Any], env: Env, redactor: Redactor) -> int:
    """A run's (or a batch's) end by an exception: the user's error with its exit code, or a bug
    pointing to its crash log; the exit code."""
    if isinstance(exc, AgentWorkerError):
        details = [redactor.text(d) for d in exc.details]
        _fail(env, options, redactor.text(str(exc)), exc.exit_code, details)
        return exc.exit_code
    error = internal_error(exc, _crash_log(redactor.text(traceback.format_exc())))
    _fail(env, options, redactor.text(str(error)), error.exit_code, [])
    return error.exit_code


def recover_command(options: Mapping[str, Any], env: Env) -> int:
    """--recover: bring back the work of this repository's runs whose agent-worker is gone."""
    # config, git and the recovery of runs: about 100 ms, not for --help
    from agent_worker_app import config as config_module
    from agent_worker_app import git_manager, recovery
    from agent_worker_app.console import escape_text

    try:
        where = config_module.load_location(
            options, environ=os.environ, cwd=Path.cwd(), tool_dir=_tool_dir()
        )
        ws = git_manager.repository(where.project)
        backend = connect_docker(where.docker_host, where.backend, where.backend_settings)
        lines = recovery.recover(backend, ws)
    except AgentWorkerError as exc:
        _fail(env, options, str(exc), exc.exit_code, list(exc.details))
        return exc.exit_code
    if all(said.warning for said in lines):
        lines.append(recovery.Said("nothing to recover: no run of this repository was lost"))
    for said in lines:
        if said.warning:  # a container not recovered (a forged one, say): why, on stderr
            env.stderr.write(f"agent-worker: warning: {escape_text(said.text)}\n")
        else:
            env.stdout.write(f"agent-worker: {escape_text(said.text)}\n")
    return 0


def list_runs(options: Mapping[str, Any], env: Env) -> int:
    """--list-runs: this repository's past runs from their run directories, newest first."""
    # config, git and the run directories' reader: about 80 ms, not for --help
    from agent_worker_app import config as config_module
    from agent_worker_app import git_manager, runs

    try:
        where = config_module.load_location(
            options, environ=os.environ, cwd=Path.cwd(), tool_dir=_tool_dir()
        )
        found = runs.past_runs(git_manager.repository(where.project).git_dir)
    except AgentWorkerError as exc:
        _fail(env, options, str(exc), exc.exit_code, list(exc.details))
        return exc.exit_code
    env.stdout.write(
        runs.render_json(found) if options.get("json_output") else runs.render_text(found)
    )
    env.stdout.flush()
    return 0


def list_presets(options: Mapping[str, Any], env: Env) -> int:
    """--list-presets: the --allow-host presets and their hosts."""
    env.stdout.write(presets.listing())
    env.stdout.flush()
    return 0


def list_runtimes(options: Mapping[str, Any], env: Env) -> int:
    """--list-runtimes: the Docker engine's runtimes (what --runtime takes), its default marked."""
    # config and the engine's API: about 60 ms, not for --help
    from agent_worker_app import config as config_module
    from agent_worker_app.engines.docker.api import EngineError, reach

    try:
        where = config_module.load_location(
            options, environ=os.environ, cwd=Path.cwd(), tool_dir=_tool_dir()
        )
        _, api = reach(where.docker_host)
        try:
            known, default = api.runtimes()
        except (OSError, EngineError) as exc:
            raise DockerError(f"cannot ask the Docker engine for its runtimes: {exc}") from None
        finally:
            api.close()
    except AgentWorkerError as exc:
        _fail(env, options, str(exc), exc.exit_code, list(exc.details))
        return exc.exit_code
    for name in known:
        env.stdout.write(f"{name}{'  (default)' if name == default else ''}\n")
    env.stdout.flush()
    return 0


_COMMANDS: dict[str, Callable[[Mapping[str, Any], Env], int]] = {
    "list_agents": lambda options, env: list_agents(env),
    "list_presets": list_presets,
    "list_runtimes": list_runtimes,
    "recover": recover_command,
    "list_runs": list_runs,
}


def _tool_dir() -> Path | None:
    return CHECKOUT if (CHECKOUT / "pyproject.toml").is_file() else None


def list_agents(env: Env) -> int:
    """--list-agents: each type, where it comes from, the credentials it takes; a plugin that
    cannot be loaded is listed with why (a warning, exit 0: the others still work)."""
    # the agent registry and the console: about 30 ms, not for --help
    from agent_worker_app import agents
    from agent_worker_app.console import escape_text

    for listed in agents.listing():
        env.stdout.write(f"{listed.name}  ({escape_text(listed.origin)})\n")
        if listed.cls is None:
            env.stderr.write(f"agent-worker: warning: {escape_text(listed.problem or '')}\n")
            continue
        if listed.cls.description:
            env.stdout.write(f"    {listed.cls.description}\n")
        creds = listed.cls.credentials
        if not creds:
            env.stdout.write("    credentials: none\n")
        for cred in creds:
            env.stdout.write(
                f"    credential: {cred.variable} (--auth {cred.method}): {cred.help}\n"
            )
        for setting in listed.cls.settings:
            flag = f", --{setting.option.replace('_', '-')}" if setting.option else ""
            default = f" [default: {setting.default}]" if setting.default else ""
            env.stdout.write(f"    setting: {setting.variable}{flag}: {setting.help}{default}\n")
    env.stdout.flush()
    return 0


def _emit(outcome: driver.Outcome, cfg: Config, env: Env) -> None:
    """The runs' report on stdout (a single run's own, or a batch's summary; JSON with --json)
    and in --report-file, and a CI job's outputs; a single run's error on stderr too."""
    # the renderers (report, batch_view, console): about 50 ms, not for --help
    from agent_worker_app import batch_view, report
    from agent_worker_app.console import escape_text

    reports = [entry.report for entry in outcome.entries]
    if outcome.one:
        text = report.render_json(reports[0])
    else:
        text = batch_view.render_batch_json(outcome.entries, outcome.totals)
    if cfg.report_file is not None:
        try:
            cfg.report_file.parent.mkdir(parents=True, exist_ok=True)
            cfg.report_file.write_text(text, encoding="utf-8")
        except OSError as exc:
            env.stderr.write(
                f"agent-worker: warning: cannot write --report-file: {escape_text(str(exc))}\n"
            )
    if cfg.json_output:
        env.stdout.write(text)
    elif env.rich_stdout and outcome.one:
        report.render_rich(reports[0], env.stdout)
    elif env.rich_stdout:
        batch_view.render_summary_rich(outcome.entries, outcome.totals, env.stdout)
    elif outcome.one:
        env.stdout.write(report.render_text(reports[0]))
    else:
        env.stdout.write(batch_view.render_summary_text(outcome.entries, outcome.totals))
    env.stdout.flush()
    # a single run's outputs are its own; a batch's carry its exit code and wall clock
    _ci_outputs(reports, cfg.report_file, env, None if outcome.one else outcome.totals)
    first = reports[0]
    if outcome.one and first.error:
        env.stderr.write(f"agent-worker: {first.status}: {escape_text(first.error)}\n")


def _ci_outputs(
    reports: list[RunReport],
    report_file: Path | None,
    env: Env,
    totals: Totals | None = None,
) -> None:
    """GitHub Actions' step outputs, job summary and error annotation, where it asks for them
    (for a batch: with its totals, its exit code and wall clock)."""
    # CI's outputs and the reports' totals: about 45 ms, not for --help
    from agent_worker_app import ci_outputs
    from agent_worker_app.console import escape_text
    from agent_worker_app.totals import Totals

    if not ci_outputs.wanted(os.environ):
        return
    if totals is None:
        totals = Totals.of(reports)
    for warning in ci_outputs.emit(
        reports, totals, environ=os.environ, stderr=env.stderr, report_file=report_file
    ):
        env.stderr.write(f"agent-worker: warning: {escape_text(warning)}\n")


def _fail(
    env: Env, options: Mapping[str, Any], message: str, code: int, details: list[str]
) -> None:
    """One line saying what went wrong and what to do; a JSON report too, where asked for."""
    import json

    # the console, CI's outputs and the report's schema: about 45 ms, not for --help
    from agent_worker_app import ci_outputs
    from agent_worker_app.console import escape_text
    from agent_worker_app.report import SCHEMA_VERSION

    env.stderr.write(f"agent-worker: error: {escape_text(message)}\n")
    for line in details:
        env.stderr.write(f"  | {escape_text(line)}\n")
    if ci_outputs.wanted(os.environ):
        for warning in ci_outputs.emit_error(code, message, environ=os.environ, stderr=env.stderr):
            env.stderr.write(f"agent-worker: warning: {escape_text(warning)}\n")
    if not (options.get("json_output") or options.get("report_file")):
        return
    payload = json.dumps(
        {"schema_version": SCHEMA_VERSION, "status": "error", "exit_code": code, "error": message}
    )
    if options.get("json_output"):
        env.stdout.write(payload + "\n")
    if options.get("report_file"):
        with suppress(OSError):
            Path(options["report_file"]).write_text(payload + "\n", encoding="utf-8")


def _crash_log(text: str) -> Path:
    path = cache_dir() / "crash" / datetime.now().strftime("%Y%m%d-%H%M%S.log")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


EPILOG = """Exit codes: 0 success, 1 the agent ran and failed, 2 usage or configuration error,
3 a precondition failed (not a repository, dirty tree, branch exists, Docker unreachable, image
build failed), 124 timed out, 130 interrupted, 4 internal error (the message names a log).

Each agent's own variables (credentials, model, version) are listed by --list-agents."""


def _with_options(command: Callable[..., None]) -> Callable[..., None]:
    for flag, metavar, summary, default in reversed(OPTIONS):
        key = flag.removeprefix("--").replace("-", "_")
        notes = [f"env {ENV_KEYS[key]}"] if key in ENV_KEYS else []
        notes += [f"default: {default}"] if default else []
        text = summary + (f" [{'; '.join(notes)}]" if notes else "")
        dest = {"json": "json_output", "continue": "continue_from"}.get(key, key)
        if key == "push":  # an option whose value may be left out: --push [REMOTE]
            command = click.option(
                flag, dest, metavar=metavar, help=text, is_flag=False, flag_value="", default=None
            )(command)
        elif metavar is None:
            # default None, not False: an absent --debug lets DEBUG from the environment count
            command = click.option(flag, dest, is_flag=True, default=None, help=text)(command)
        else:
            command = click.option(
                flag,
                dest,
                metavar=metavar,
                help=text,
                multiple=key in REPEATABLE,
            )(command)
    return command


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EPILOG,
)
@_with_options
@click.version_option(__version__, "--version", prog_name="agent-worker")
def cli(**options: Any) -> None:
    """Run an AI coding agent on a new branch of this repository, in a Docker container.

    The agent works in its own clone; your checkout is never touched. Its commits come back on
    the new branch, and a report says what it did and what it cost.
    """
    from agent_worker_app.console import Env  # the console: about 17 ms, not for --help

    sys.exit(main(options, Env()))
