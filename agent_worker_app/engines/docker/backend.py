"""DockerBackend: base.Backend on one Docker engine, local or remote. The run's inputs go in on
the container's stdin, its output comes through an attach made before it starts, its result
files framed in that output (or copied out of the stopped container when large).

Every call goes to the engine through api.EngineAPI, over the engine's transport (its socket,
TCP, TLS, ssh), and docker-py is imported only to build or pull an image (client.py,
images/build.py): a run whose image is there spends no 0.2 s of CPU importing it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from agent_worker_app.engines import channel
from agent_worker_app.engines.base import ExitInfo, LostTask, Task, TaskSpec
from agent_worker_app.engines.channel import (
    ACCOUNT_FILE,
    DEFAULT_MAX_RESULT,
    RESULT_DIR,
    Inputs,
    ResultReader,
)
from agent_worker_app.engines.docker import companion
from agent_worker_app.engines.docker.api import EngineAPI, EngineError, reach
from agent_worker_app.engines.docker.container_io import ContainerIO
from agent_worker_app.engines.docker.containers import Container, Containers
from agent_worker_app.engines.docker.disk_watch import DiskWatch
from agent_worker_app.errors import DockerError
from agent_worker_app.images import layers as image_layers
from agent_worker_app.images.layers import (
    ImageResult,
    Layer,
    LayerResult,
    MissingImageError,
    ProjectImage,
)

if TYPE_CHECKING:
    import docker

    from agent_worker_app.agents.base_agent import ImageLayer

log = logging.getLogger("agent_worker")

FRAME_MAX = 4 << 20  # result files up to this size come back in the output, not copied out
# what the output's frames may come to (a tar of FRAME_MAX bytes of files, with its headers):
# more is not how the task frames its result, which is then copied out instead
FRAMES_READ_MAX = 2 * FRAME_MAX
COMPANION_ENV = {"AW_FIREWALL": "companion"}  # agent_inside.sh: the companion's firewall
# The cgroup's backstop under a kernel of the runtime's own (own_kernel_limits): gVisor's ptrace
# platform takes about six host tasks for each process of its sandbox, and its own besides
# (measured: 64 processes held by RLIMIT_NPROC live under a cgroup limit of 800, not of 400)
HOST_TASKS_EACH = 10
HOST_TASKS_OWN = 512


def connect(docker_host: str | None) -> DockerBackend:
    """The Backend on the engine resolve_engine() chooses."""
    where, api = reach(docker_host)

    def make_client() -> docker.DockerClient:
        from agent_worker_app.engines.docker import client  # docker-py: only to build or pull

        return client.client_for(where)

    return DockerBackend(api, local=where.local, make_client=make_client)


def own_kernel_limits(spec: TaskSpec) -> TaskSpec:
    """A task under a runtime with a kernel of its own (gVisor): a pids cgroup limit there kills
    the whole sandbox (to the host it is one process tree) instead of refusing one fork. That
    kernel holds the agent user's processes itself (AW_PROC_LIMIT, RLIMIT_NPROC: a fork past it
    fails and the run goes on); the cgroup's limit stays, with room for the host tasks that
    many need, as the backstop."""
    limit = spec.profile.pids_limit
    backstop = HOST_TASKS_EACH * limit + HOST_TASKS_OWN
    return replace(
        spec,
        env=spec.env | {"AW_PROC_LIMIT": str(limit)},
        profile=replace(spec.profile, pids_limit=backstop),
    )


def _present(image_id: str | None) -> str:
    if image_id is None:
        raise MissingImageError
    return image_id


def _reused(layer: Layer, api: EngineAPI, said: list[str]) -> LayerResult:
    """A layer below the image's own that is there (MissingImageError when not)."""
    _present(api.image_id(layer.tag))
    said.append(f"image: {layer.name} layer reused ({layer.tag})")
    return LayerResult(layer.name, layer.tag, built=False, log_path=None)


class DockerBackend:
    """See the module's docstring. api: the engine's API over its transport (every call of a
    task's container); make_client makes docker-py's client when an image is to be built."""

    def __init__(
        self,
        api: EngineAPI,
        *,
        local: bool,
        make_client: Callable[[], docker.DockerClient],
    ) -> None:
        self.local = local  # bind mounts of this machine's paths work
        self._api = api
        self._client: docker.DockerClient | None = None
        self._make_client = make_client
        self._lock = threading.Lock()
        self._readers: dict[int, ResultReader] = {}  # by id() of the Task
        self._watches: dict[int, DiskWatch] = {}  # by id() of the Task
        self._containers = Containers(api)
        self._known: tuple[list[str], str] | None = None  # the engine's runtimes, default

    @property
    def client(self) -> docker.DockerClient:
        """docker-py's client, made when first wanted."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    # ------------------------------------------------------------ images

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
        if not force:
            reused = self._reused_image(layer, base_image, ca_certs, project, on_line)
            if reused is not None:
                return reused
        from agent_worker_app.images import build as layers  # docker-py: 0.2 s, to build

        return layers.prepare(
            self.client,
            layer,
            base_image=base_image,
            ca_certs=ca_certs,
            force=force,
            log_dir=log_dir,
            on_line=on_line,
            project=project,
        )

    def _reused_image(
        self,
        layer: ImageLayer,
        base_image: str,
        ca_certs: tuple[Path, ...],
        project: ProjectImage | None,
        on_line: Callable[[str], None],
    ) -> ImageResult | None:
        """The image when every layer of it is there already (the usual run), asked of the
        engine's API; None when anything is to be built or pulled (docker-py does that)."""
        api = self._api
        results: list[LayerResult] = []
        said: list[str] = []  # said once it is sure that nothing is to be built
        try:
            chain, top = image_layers.plan(
                layer,
                base_image=base_image,
                ca_certs=ca_certs,
                project=project or ProjectImage(),
                image_id=lambda ref: _present(api.image_id(ref)),
                ensure=lambda below: _reused(below, api, said),
                results=results,
            )
            _present(api.image_id(top.tag))
        except (OSError, EngineError, MissingImageError):
            return None  # docker-py's path builds or pulls it, or says what is wrong
        for each in chain:
            said.append(f"image: {each.name} layer reused ({each.tag})")
            results.append(LayerResult(each.name, each.tag, built=False, log_path=None))
        for line in said:
            on_line(line)
        return ImageResult(tag=top.tag, built=False, log_path=None, layers=tuple(results))

    # ------------------------------------------------------------ a task's container

    def create(self, spec: TaskSpec, inputs: Inputs) -> Task:
        # Small result files come back framed in the output (channel.ResultReader), larger
        # ones are copied out of the stopped container.
        spec = replace(spec, env=spec.env | channel.frame_max(FRAME_MAX))
        runtime = self._runtime_named(spec.profile.runtime)
        if runtime not in companion.KERNEL_NETWORK:
            spec = own_kernel_limits(spec)
        if not companion.needed(spec.profile, runtime):
            return Task(self._containers.create(spec), inputs)
        # its firewall (and credential gate) in a namespace the agent's container joins
        spec = replace(spec, env=spec.env | COMPANION_ENV)
        network, inputs = companion.Companion.start(self._api, spec, inputs)
        try:
            made = self._containers.create(spec, network)
        except BaseException:
            network.close()
            raise
        return Task(made, inputs)

    def _runtimes(self) -> tuple[list[str], str]:
        """The engine's runtimes and its default, asked once (GET /info)."""
        if self._known is None:
            try:
                self._known = self._api.runtimes()
            except (OSError, EngineError) as exc:
                raise DockerError(f"cannot ask the Docker engine for its runtimes: {exc}") from None
        return self._known

    def _runtime_named(self, name: str | None) -> str:
        """The runtime a task runs under: name, or the engine's default; DockerError (exit 3)
        naming the engine's runtimes when it has no runtime name."""
        known, default = self._runtimes()
        if name is None:
            return default
        if name not in known:
            raise DockerError(
                f"the Docker engine has no runtime {name!r} (it has: {', '.join(known)}; "
                f"default {default}): register it in the engine's daemon.json, or choose "
                "another --runtime (--list-runtimes)"
            )
        return name

    def start(
        self, task: Task, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]
    ) -> ContainerIO | companion.Networked:
        reader = ResultReader(task.inputs.nonce, on_stderr, max_bytes=FRAMES_READ_MAX)
        self._readers[id(task)] = reader
        attach = self._containers.attach(task.handle)
        io_thread = ContainerIO(attach, task.inputs.files, on_stdout, reader)
        try:
            self._containers.start(task.handle)
        except DockerError:
            io_thread.close()
            raise
        io_thread.start()
        self._watch_disk(task)
        if task.handle.network is not None:
            return companion.Networked(io_thread, task.handle.network)
        return io_thread

    def _watch_disk(self, task: Task) -> None:
        container: Container = task.handle
        if container.disk_watch is None:
            return  # no --disk, or the engine caps the layer itself
        watch = DiskWatch(
            container.disk_watch,
            lambda: self._containers.disk_used(container),
            lambda name: self._containers.signal(container, name),
        )
        self._watches[id(task)] = watch
        watch.start()

    def wait(self, task: Task, timeout_s: float) -> ExitInfo | None:
        ended = self._containers.wait(task.handle, timeout_s)
        watch = self._watches.get(id(task))
        if ended is not None and watch is not None and watch.stopped:
            ended = replace(ended, stopped=watch.stopped)
        return ended

    def signal(self, task: Task, name: str) -> None:
        self._containers.signal(task.handle, name)

    def fetch_result(
        self, task: Task, dest: Path, *, account: bool = False, max_bytes: int = DEFAULT_MAX_RESULT
    ) -> bool:
        found = False
        reader = self._readers.get(id(task))
        if reader is not None and reader.complete and not reader.frames.over:
            found = reader.frames.extract(dest / "out", max_bytes)
            if found:
                log.info("result files: taken from the task's output")
            elif reader.frames.broken:
                log.warning("result files: their frames in the output were broken")
        if not found:
            log.info("result files: copied out of the stopped container")
            found = self._containers.copy_out(task.handle, RESULT_DIR, dest, max_bytes=max_bytes)
        if account:
            found = self._containers.copy_out(task.handle, ACCOUNT_FILE, dest) or found
        return found

    def remove(self, task: Task) -> None:
        watch = self._watches.pop(id(task), None)
        if watch is not None:
            watch.stop()
        reader = self._readers.pop(id(task), None)
        if reader is not None:
            reader.frames.close()
        try:
            self._containers.remove(task.handle)
        finally:
            if task.handle.network is not None:
                task.handle.network.close()

    def runtime(self, task: Task) -> str | None:
        if task.handle.runtime is not None:
            return str(task.handle.runtime)
        try:
            return self._runtimes()[1]
        except DockerError:
            return None

    def node(self, task: Task) -> str | None:
        return None  # one engine: the report names no machine

    def lost_tasks(self, project: str) -> list[LostTask]:
        return self._containers.lost_tasks(project)

    def remove_orphans(self) -> list[str]:
        return self._containers.remove_orphans()
