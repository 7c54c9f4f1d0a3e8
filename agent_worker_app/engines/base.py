"""The Backend protocol: the few operations a run needs from an execution engine, and the plain
values that cross it. engines/docker (a local or remote Docker engine) is the first
implementation; an engine with no stdin and no file copy (a service, a Kubernetes Job)
implements the same operations with inputs as files and the result framed in its output. What
crosses into the task and back is channel.py's; the sandbox every backend gives it, profile.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent_worker_app.engines.channel import DEFAULT_MAX_RESULT, Inputs
from agent_worker_app.engines.profile import Profile
from agent_worker_app.images.layers import ImageResult

if TYPE_CHECKING:
    from agent_worker_app.agents.base_agent import ImageLayer
    from agent_worker_app.images.layers import ProjectImage

GRACE_S = 30.0  # after a timeout or a signal: time for the task to commit and bundle


@dataclass(frozen=True)
class TaskSpec:
    """Everything an engine needs to run one task, but its inputs."""

    image: str
    name: str
    command: list[str]
    env: dict[str, str]
    labels: dict[str, str]  # sweep.labels(): who made it; each backend adds its deadline
    timeout_s: float  # the run's timeout, counted by each backend from the task's start
    profile: Profile
    # the repository's object directories (its own, then those it borrows), shared read-only
    # at /source/objects-N where the engine shares this machine's files; nothing else is
    object_dirs: tuple[Path, ...] = ()
    max_result_bytes: int = DEFAULT_MAX_RESULT  # --max-result-size: what the host reads back


@dataclass(frozen=True)
class ExitInfo:
    status_code: int
    oom_killed: bool
    error: str | None
    stopped: str | None = None  # why the engine's side stopped it (its disk passed --disk)


@dataclass
class Task:
    """A created task: the engine's own handle and the inputs it still has to receive."""

    handle: Any
    inputs: Inputs = field(default_factory=lambda: Inputs((), ""))


@dataclass(frozen=True)
class LostTask:
    task: Task
    labels: dict[str, str]
    exit: ExitInfo | None  # None: still running (it stops by itself)


class OutputStream(Protocol):
    """A task's output being read on the side; error is set when reading it failed."""

    error: BaseException | None

    @property
    def result(self) -> str | None:
        """The task's result line (channel.ResultReader), once it came: JSON text."""

    def is_alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> None: ...

    def network_record(self) -> dict[str, Any] | None:
        """What holds the task's network outside its container recorded ({"blocked": [...],
        "meter": ...}: the Docker backend's network companion), asked once the task ended; None
        where the task's own root holds its network (its result line carries the record)."""


class Backend(Protocol):
    """An execution engine. Each call raises an AgentWorkerError subclass (DockerError for
    Docker) with a sentence for the user when the engine refuses or cannot be reached."""

    local: bool  # the engine shares this machine's files: bind mounts of local paths work

    def prepare_image(
        self,
        layer: ImageLayer,
        *,
        base_image: str,
        ca_certs: tuple[Path, ...],
        force: bool,
        log_dir: Path,
        on_line: Callable[[str], None],
        project: ProjectImage | None = None,
    ) -> ImageResult:
        """The agent's image on the project's environment (image_layers.py), its layers built
        (and pushed where nodes pull) or reused by content tag."""

    def create(self, spec: TaskSpec, inputs: Inputs) -> Task:
        """Create, not start, the task."""

    def start(
        self, task: Task, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]
    ) -> OutputStream:
        """Start it, deliver its inputs, and stream its output to the callbacks until it ends."""

    def wait(self, task: Task, timeout_s: float) -> ExitInfo | None:
        """Its exit, or None if it is still running after timeout_s."""

    def signal(self, task: Task, name: str) -> None:
        """Send a signal (SIGTERM, SIGKILL); a task that already ended is not an error."""

    def fetch_result(
        self, task: Task, dest: Path, *, account: bool = False, max_bytes: int = DEFAULT_MAX_RESULT
    ) -> bool:
        """Copy what the task left (RESULT_DIR) into dest/out, and with account its vouched
        result into dest/agent-worker-result.json; False when there is nothing. Reading stops
        at max_bytes: the files that came whole are kept, then channel.ResultTooLargeError."""

    def lost_tasks(self, project: str) -> list[LostTask]:
        """This project's tasks whose agent-worker is gone (from this host), running or not."""

    def node(self, task: Task) -> str | None:
        """The machine the task ran on where the engine has several (a node's name);
        None on one engine. Never raises."""

    def runtime(self, task: Task) -> str | None:
        """The engine runtime the task runs under (runc, runsc); None where the engine does
        not say. Never raises."""

    def remove(self, task: Task) -> None:
        """Remove it, running or not, with everything the engine keeps for it."""

    def remove_orphans(self) -> list[str]:
        """Remove tasks of runs that are gone (this host's dead processes; any host's past
        their deadline); their names."""
