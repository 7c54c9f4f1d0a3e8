#!/usr/bin/env python3
"""agent-worker: put an AI coding agent to work on a new branch of a git repository, inside a
Docker container, and report what it did. The click entry point and the AgentWorker pipeline.

docker-py and rich are imported only once a run needs them, so --help and --version stay fast.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

# The sibling modules import by their plain names, from a checkout and when installed (where
# they live together in agent_worker_app/), so their directory goes first on the path.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from agents.base_agent import AgentResult
from config import ENV_KEYS, OPTIONS  # after the path is set
from errors import AgentWorkerError, DockerError, GitError, InternalError, Interrupted
from report import (
    SCHEMA_VERSION,
    AgentInfo,
    Outcome,
    RunReport,
    Tokens,
    decide_status,
    render_json,
    render_rich,
    render_text,
)

if TYPE_CHECKING:
    from agents.base_agent import BaseAgent
    from config import Config
    from console import Env, Progress, Redactor, RunLog
    from docker_manager import ContainerSpec, ExitInfo, FileEntry
    from git_manager import Workspace

__version__ = "0.1.0"
TOOL_DIR = Path(__file__).resolve().parent
STOP_GRACE_S = 30.0  # after a timeout or a signal: time for the container to commit and bundle
AGENT_IDENTITY = ("agent-worker", "agent-worker@localhost")
log = logging.getLogger("agent_worker")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agent-worker"


class Signals:
    """SIGINT and SIGTERM raise Interrupted in the main thread, once; while protected (cleanup)
    they are only counted, and one more means "stop waiting"."""

    def __init__(self) -> None:
        self.count = 0
        self._protected = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1 and not self._protected:
            raise Interrupted(f"interrupted by {signal.Signals(signum).name}")

    @contextmanager
    def protected(self) -> Iterator[None]:
        self._protected += 1
        try:
            yield
        finally:
            self._protected -= 1


class Background(threading.Thread):
    """A call run on the side; outcome() waits for it and returns (or raises) what it did."""

    def __init__(self, call: Callable[..., Any], *args: Any) -> None:
        super().__init__(daemon=True)
        self._call = call
        self._args = args
        self._value: Any = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._value = self._call(*self._args)
        except BaseException as exc:  # noqa: BLE001 (raised again in the caller's thread)
            self._error = exc

    def outcome(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


class AgentWorker:
    """One run: preflight, image, branch, container, results, report."""

    def __init__(
        self,
        config: Config,
        *,
        redactor: Redactor,
        runlog: RunLog,
        progress: Progress,
        signals: Signals,
    ) -> None:
        import agents

        self.config = config
        self.redactor = redactor
        self.runlog = runlog
        self.progress = progress
        self.signals = signals
        self.agent: BaseAgent = agents.get(config.agent_type)
        self.run_id = datetime.now().strftime("%Y%m%d-%H%M%S-") + os.urandom(4).hex()
        self.started = time.monotonic()
        self.run_dir = Path()
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = list(config.warnings)
        self.orphans: Background | None = None
        self.branch_deleted = False
        self._last = self.started

    def _mark(self, name: str) -> None:
        now = time.monotonic()
        self.timings[name] = now - self._last
        self._last = now

    def run(self) -> RunReport:
        """Everything up to the image changes nothing; after that, a report is always written."""
        cfg = self.config
        self.agent.check_credentials(cfg)
        # Importing docker-py and reaching the engine overlap the git checks, which mostly wait
        # on git; a failed check still comes first, and none of it changes anything.
        connecting = Background(_connect, cfg.docker_host)
        import git_manager

        ws = git_manager.preflight(cfg.project, cfg.branch, branch_given=cfg.branch_given)
        client = connecting.outcome()
        import docker_manager

        # Cleaning up after runs that were killed is nobody's critical path: it happens while
        # this run goes on, and is reported at its end.
        self.orphans = Background(docker_manager.remove_orphans, client)
        self._mark("preflight")
        self.progress.phase("Preparing the agent image")
        image = docker_manager.ensure_image(
            client,
            build_args=self.agent.image_build_args(cfg) | {"BASE_IMAGE": cfg.base_image},
            ca_certs=cfg.ca_certs,
            force=cfg.force_rebuild,
            log_dir=cache_dir() / "builds",
            on_line=self.progress.build_line,
        )
        self._mark("image")
        log.info("image %s (%s)", image.tag, "built" if image.built else "reused")
        self.run_dir = ws.git_dir / "agent-worker" / "runs" / self.run_id
        self.run_dir.mkdir(parents=True)
        self.runlog.to_file(self.run_dir / "agent-worker.log")
        (self.run_dir / "task.md").write_text(cfg.task, encoding="utf-8")
        if image.log_path is not None:
            (self.run_dir / "build.log").write_bytes(image.log_path.read_bytes())
        return self._run(client, ws, image.tag)

    def _run(self, client: Any, ws: Workspace, tag: str) -> RunReport:
        import docker_manager
        import git_manager

        outcome = Outcome()
        container = None
        created: Workspace | None = None
        try:
            ws = created = git_manager.create_branch(ws, branch_given=self.config.branch_given)
            self.progress.phase("Starting the agent container")
            spec, files = self._spec(ws, tag)
            container = docker_manager.create_container(client, spec)
            self._supervise(container, files, ws, outcome)
            self._mark("agent")
            with self.signals.protected():
                self._collect(container, ws, outcome)
            self._mark("results")
        except AgentWorkerError as exc:
            outcome.error = exc
        except Exception as exc:  # noqa: BLE001 (a bug: reported with the log, not a traceback)
            log.error("internal error:\n%s", traceback.format_exc())
            outcome.error = internal_error(exc, self.run_dir / "agent-worker.log")
        finally:
            with self.signals.protected():
                self._clean_up(container, created, outcome)
        return self._report(ws, outcome, branch=created is not None)

    def _clean_up(self, container: Any, created: Workspace | None, outcome: Outcome) -> None:
        """Remove the container; delete the branch this run made if the agent never started."""
        import docker_manager
        import git_manager

        try:
            if container is not None:
                docker_manager.remove(container)
        except AgentWorkerError as exc:
            self.warnings.append(str(exc))
        if created is not None and not outcome.agent_started and git_manager.delete_branch(created):
            log.info("deleted branch %s: the agent never started", created.branch)
            self.branch_deleted = True
        (self.run_dir / "source.pack").unlink(missing_ok=True)
        self._report_orphans()

    def _report_orphans(self) -> None:
        if self.orphans is None:
            return
        try:
            removed = self.orphans.outcome()
        except AgentWorkerError as exc:
            self.progress.warn(str(exc))
            return
        for name in removed:
            self.progress.warn(f"removed container {name}, left by an agent-worker that is gone")

    def _spec(self, ws: Workspace, tag: str) -> tuple[ContainerSpec, list[FileEntry]]:
        """The container's settings, and the files it gets on its stdin."""
        import docker_manager
        import git_manager
        from docker_manager import FileEntry

        cfg = self.config
        secret_env = self.agent.secret_env(cfg)
        self.redactor.add(*secret_env.values())
        files = [
            FileEntry("/agent-worker/task.md", cfg.task.encode("utf-8")),
            FileEntry("/agent-worker/secrets", None, 0o700),
            *(
                FileEntry(f"/agent-worker/secrets/{k}", v.encode(), 0o600)
                for k, v in secret_env.items()
            ),
        ]
        source = git_manager.source(ws)
        mount = cfg.workspace == "mount" or (
            cfg.workspace == "auto"
            and docker_manager.is_local(cfg.docker_host)
            and source.mountable()
        )
        if not mount:
            pack = self.run_dir / "source.pack"
            git_manager.pack_branch(ws, pack)
            files.append(FileEntry("/agent-worker/source.pack", pack))
        if source.shallow:
            files.append(FileEntry("/agent-worker/shallow", source.shallow))
        if source.exclude.strip():
            files.append(FileEntry("/agent-worker/exclude", source.exclude))
        name, email = AGENT_IDENTITY
        if cfg.git_identity == "user":
            name, email = git_manager.user_identity(ws.root) or AGENT_IDENTITY
        env = {
            "AW_BRANCH": ws.branch,
            "AW_BASE": ws.base_commit,
            "AW_OBJECT_FORMAT": ws.object_format,
            "AW_FIREWALL": "1" if cfg.firewall else "0",
            "AW_ALLOW_HOSTS": ",".join(self._allowlist()),
            "TZ": cfg.timezone,
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        } | self.agent.container_env(cfg)
        spec = docker_manager.ContainerSpec(
            image=tag,
            name=f"agent-worker-{self.run_id}",
            command=["/usr/local/bin/agent_inside.sh", "--", *self.agent.container_command(cfg)],
            env=env,
            labels=docker_manager.process_labels(self.run_id, ws.root),
            memory_bytes=cfg.memory_bytes,
            cpus=cfg.cpus,
            pids_limit=cfg.pids_limit,
            firewall=cfg.firewall,
            object_dirs=source.object_dirs if mount else (),
        )
        return spec, files

    def _allowlist(self) -> list[str]:
        hosts: list[str] = []
        for host in [*self.agent.api_hosts(self.config), *self.config.allow_hosts]:
            if host in hosts:
                self.progress.warn(f"allowed host {host} is listed twice")
            else:
                hosts.append(host)
        return hosts

    def _supervise(
        self, container: Any, files: list[FileEntry], ws: Workspace, outcome: Outcome
    ) -> None:
        """Start the container and stream the agent's output until the container ends, the
        timeout passes or a signal arrives; it has stopped when this returns."""
        import docker_manager
        from console import AgentOutput

        output = AgentOutput(self.run_dir, self.agent.on_output_line, self.progress, self.redactor)
        try:
            pump = docker_manager.ContainerIO(
                container, files, output.stdout.feed, output.stderr.feed
            )
            docker_manager.start(container)
            outcome.started = True
            self._mark("container")
            self.progress.phase(f"Agent at work on branch {ws.branch}")
            deadline = time.monotonic() + self.config.timeout_s
            pump.start()
            try:
                while outcome.exit is None and (left := deadline - time.monotonic()) > 0:
                    if pump.is_alive():
                        pump.join(min(left, 1.0))
                    else:  # the output ended: the container is stopping (or the stream broke)
                        outcome.exit = docker_manager.wait(container, min(left, 5.0))
                outcome.timed_out = outcome.exit is None
            except Interrupted:
                outcome.interrupted = True
            with self.signals.protected():
                self._stop(container, outcome)
                pump.join(10.0)
            if pump.error is not None:
                self.warnings.append(f"reading the agent's output failed: {pump.error}")
        finally:
            output.close()
            self.warnings += output.warnings
            outcome.agent_tail = list(output.tail)
            outcome.inside = output.result
            outcome.container_error = output.error

    def _stop(self, container: Any, outcome: Outcome) -> None:
        """See the container stopped; after a timeout or a signal, politely first, so that it
        can commit and bundle what the agent did."""
        import docker_manager

        if outcome.exit is None and (outcome.timed_out or outcome.interrupted):
            why = "timed out" if outcome.timed_out else "interrupted"
            self.progress.phase(f"Agent {why}: stopping it and saving its commits")
            docker_manager.signal(container, "SIGTERM")
            outcome.exit = self._wait_exit(container, STOP_GRACE_S)
        if outcome.exit is None:
            docker_manager.signal(container, "SIGKILL")
            outcome.exit = docker_manager.wait(container, 60.0)
        if outcome.exit is None:
            raise DockerError("the agent container does not stop: check the Docker engine")

    def _wait_exit(self, container: Any, grace: float) -> ExitInfo | None:
        """Wait up to grace seconds for the container to exit; another signal cuts it short."""
        import docker_manager

        end = time.monotonic() + grace
        signals_seen = max(self.signals.count, 1)
        while time.monotonic() < end and self.signals.count <= signals_seen:
            exit_info = docker_manager.wait(container, 1.0)
            if exit_info is not None:
                return exit_info
        return None

    def _collect(self, container: Any, ws: Workspace, outcome: Outcome) -> None:
        """Copy the container's results out and bring its commits onto the branch."""
        import docker_manager
        import git_manager

        self.progress.phase("Bringing the agent's commits back")
        inside = outcome.inside or {}
        if inside.get("bundle") != "0":  # a bundle was made, or the container could not say
            docker_manager.copy_out(container, "/agent-worker/out", self.run_dir)
        bundle = self.run_dir / "out" / "result.bundle"
        if bundle.is_file():
            try:
                outcome.head = git_manager.import_bundle(ws, bundle)
                bundle.unlink()
            except GitError as exc:
                outcome.import_error = f"{exc}; the agent's commits are kept in {bundle}"
                outcome.head = git_manager.branch_head(ws)
            return
        outcome.head = git_manager.branch_head(ws)
        inner = inside.get("head")
        if outcome.inside is None:
            outcome.import_error = (
                "the container did not hand back the agent's work (see container.log in the "
                "run directory): the branch stays at the base"
            )
        elif inner and inner != ws.base_commit:
            outcome.import_error = (
                f"the agent left HEAD at {inner[:12]}, which does not "
                f"descend from the base {ws.base_commit[:12]}: nothing imported"
            )

    def _report(self, ws: Workspace, outcome: Outcome, *, branch: bool) -> RunReport:
        import git_manager

        cfg = self.config
        started = outcome.started
        result = self._agent_result() if started else None
        status, code, message, warnings = decide_status(
            outcome, result, timeout_s=cfg.timeout_s, memory=cfg.memory
        )
        self.warnings += warnings
        result = result or AgentResult()
        try:
            files = git_manager.diff_stats(ws, outcome.head) if outcome.head else []
        except GitError as exc:
            files = []
            self.warnings.append(f"no change statistics: {exc}")
        report = RunReport(
            run_id=self.run_id,
            status=status,
            exit_code=code,
            branch=ws.branch if branch and not self.branch_deleted else None,
            base_commit=ws.base_commit,
            head_commit=outcome.head,
            duration_s=time.monotonic() - self.started,
            agent=AgentInfo(
                type=cfg.agent_type,
                version=result.version or self.agent.version(cfg),
                model=result.model or cfg.model,
                session_id=result.session_id,
            ),
            tokens=Tokens(
                result.input_tokens,
                result.output_tokens,
                result.cache_read_tokens,
                result.cache_creation_tokens,
            ),
            cost_usd=result.cost_usd,
            turns=result.turns,
            files=files,
            run_dir=str(self.run_dir),
            error=self.redactor.text(message) if message else None,
            firewall=cfg.firewall,
            warnings=[self.redactor.text(w) for w in self.warnings],
            timings=self.timings,
        )
        (self.run_dir / "report.json").write_text(render_json(report), encoding="utf-8")
        log.info("run %s ended: %s (exit %d)", self.run_id, status, code)
        return report

    def _agent_result(self) -> AgentResult:
        path = self.run_dir / "agent.jsonl"
        if not path.is_file():
            return AgentResult()
        with path.open(encoding="utf-8", errors="replace") as lines:
            return self.agent.parse_result(lines)


def _connect(docker_host: str | None) -> Any:
    import docker_manager

    return docker_manager.connect(docker_host)


def internal_error(exc: BaseException, log_path: Path) -> InternalError:
    return InternalError(
        f"internal error ({type(exc).__name__}: {exc}); please report it with the log {log_path}"
    )


# ---------------------------------------------------------------- command line


def main(options: Mapping[str, Any], env: Env) -> int:
    """Run agent-worker with parsed options; returns the exit code."""
    import agents
    import config as config_module
    from console import Progress, Redactor, RunLog, escape_text

    redactor = Redactor()
    signals = Signals()
    signals.install()
    runlog = None
    try:
        cfg = config_module.load(
            options,
            environ=os.environ,
            cwd=Path.cwd(),
            tool_dir=TOOL_DIR if (TOOL_DIR / "pyproject.toml").is_file() else None,
            key_variable=lambda name: agents.agent_class(name).api_key_env,
            stdin_text=env.stdin.read,
        )
        redactor.add(cfg.api_key or "")
        runlog = RunLog(redactor, debug=cfg.debug, stderr=env.stderr)
        log.debug("agent-worker %s, %s", __version__, cfg)
        progress = Progress(env, redactor)
        for warning in cfg.warnings:
            progress.warn(warning)
        try:
            worker = AgentWorker(
                cfg, redactor=redactor, runlog=runlog, progress=progress, signals=signals
            )
            report = worker.run()
        finally:
            progress.close()
        _emit(report, cfg, env)
        if report.error:
            env.stderr.write(f"agent-worker: {report.status}: {escape_text(report.error)}\n")
        return report.exit_code
    except AgentWorkerError as exc:
        _fail(
            env,
            options,
            redactor.text(str(exc)),
            exc.exit_code,
            [redactor.text(d) for d in exc.details],
        )
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 (the single top-level handler for bugs)
        error = internal_error(exc, _crash_log(redactor.text(traceback.format_exc())))
        _fail(env, options, redactor.text(str(error)), error.exit_code, [])
        return error.exit_code
    finally:
        signals.restore()
        if runlog is not None:
            runlog.close()


def _emit(report: RunReport, cfg: Config, env: Env) -> None:
    if cfg.report_file is not None:
        try:
            cfg.report_file.parent.mkdir(parents=True, exist_ok=True)
            cfg.report_file.write_text(render_json(report), encoding="utf-8")
        except OSError as exc:
            from console import escape_text

            env.stderr.write(
                f"agent-worker: warning: cannot write --report-file: {escape_text(str(exc))}\n"
            )
    if cfg.json_output:
        env.stdout.write(render_json(report))
    elif env.stdout_tty:
        render_rich(report, env.stdout)
    else:
        env.stdout.write(render_text(report))
    env.stdout.flush()


def _fail(
    env: Env, options: Mapping[str, Any], message: str, code: int, details: list[str]
) -> None:
    """One line saying what went wrong and what to do; a JSON report too, where asked for."""
    from console import escape_text

    env.stderr.write(f"agent-worker: error: {escape_text(message)}\n")
    for line in details:
        env.stderr.write(f"  | {escape_text(line)}\n")
    if not (options.get("json_output") or options.get("report_file")):
        return
    import json

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
build failed), 124 timed out, 130 interrupted, 4 internal error (the message names a log)."""


def _with_options(command: Callable[..., None]) -> Callable[..., None]:
    for flag, metavar, summary, default in reversed(OPTIONS):
        key = flag.removeprefix("--").replace("-", "_")
        notes = [f"env {ENV_KEYS[key]}"] if key in ENV_KEYS else []
        notes += [f"default: {default}"] if default else []
        text = summary + (f" [{'; '.join(notes)}]" if notes else "")
        dest = "json_output" if key == "json" else key
        if metavar is None:
            # default None, not False: an absent --debug lets DEBUG from the environment count
            command = click.option(flag, dest, is_flag=True, default=None, help=text)(command)
        else:
            command = click.option(
                flag, dest, metavar=metavar, help=text, multiple=key in ("ca_cert", "allow_host")
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
    from console import Env

    sys.exit(main(options, Env()))


if __name__ == "__main__":
    cli(prog_name="agent-worker")
