"""base.Backend on a Docker Swarm: each task a replicated service of one replica that is
never restarted, on whichever node has room. DOCKER_HOST is a manager; the agent image is built
there and pushed to a registry every node pulls from.

A service has no stdin and no file copy: the inputs arrive as configs and secrets (io.py), the
output and the result files come back through the service's log. The engine cannot signal a
service's container: a short helper job on its node does, which talks to the node's own engine
through its socket and removes its own container last (node_job): agent-worker's own image of
one static program (helper_image.py), never the task's, whose image is named by digest too.
The node removes the task's container when its service is removed (within a second, while
nobody waits). Not a job's (moby 42789, 44312): the services of runs made as replicated-jobs,
by an earlier agent-worker, have their containers removed by a helper job too.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import (
    ConfigReference,
    ContainerSpec,
    DriverConfig,
    Resources,
    RestartPolicy,
    SecretReference,
    ServiceMode,
    TaskTemplate,
)

from agent_worker_app.agents.base_agent import ImageLayer
from agent_worker_app.engines import channel, profile, sweep
from agent_worker_app.engines.base import ExitInfo, LostTask, Task, TaskSpec
from agent_worker_app.engines.channel import (
    ACCOUNT_FILE,
    DEFAULT_MAX_RESULT,
    NONCE_FILE,
    Inputs,
    ResultReader,
    files_tar,
    result_line,
)
from agent_worker_app.engines.docker import client as docker_client
from agent_worker_app.engines.docker.api import EngineAPI, EngineError, reach
from agent_worker_app.engines.docker.client import DOCKER_ERRORS as _DOCKER_ERRORS
from agent_worker_app.engines.docker.client import reason as _reason
from agent_worker_app.engines.swarm import helper_image, node_jobs
from agent_worker_app.engines.swarm.io import (
    CONFIG_DIR,
    CONFIG_PIECE,
    ENDED,
    POLL_S,
    SECRET_PIECE,
    SECRET_PREFIX,
    STDERR,
    LogStream,
    log_messages,
    pauses,
    pieces,
)
from agent_worker_app.engines.swarm.registry import Registry
from agent_worker_app.errors import DockerError
from agent_worker_app.images import build as layers
from agent_worker_app.images.build import IMAGE_REPO
from agent_worker_app.images.layers import ImageResult, ProjectImage

log = logging.getLogger("agent_worker")

START_LIMIT_S = 900.0  # pulling the image on a node that has none may take a while
LOG_GRACE_S = 10.0  # after the task ended: time for the rest of its log to arrive


@dataclass
class Service:
    """A task on the swarm: the service and everything made for it."""

    run_id: str
    image: str
    nonce: str
    spec: TaskSpec | None = None
    service_id: str | None = None
    configs: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)  # where its task ran
    reader: ResultReader | None = None
    lost: str | None = None  # why it can no longer be followed (its node went down)
    job: bool = False  # a replicated-job: its containers stay on their node when it is removed
    stream: LogStream | None = None
    marks: dict[str, float] = field(default_factory=dict)  # its timeline (monotonic), for --debug

    def timeline(self) -> str:
        """When each step of its life came, counted from its service's creation."""
        made = self.marks.get("made")
        if made is None:
            return "no service made"
        marks = dict(self.marks)
        if self.stream is not None and self.stream.result_at is not None:
            marks["result line read"] = self.stream.result_at
        steps = sorted((t, name) for name, t in marks.items() if name != "made")
        return ", ".join(f"{name} +{t - made:.2f}s" for t, name in steps)


def connect_swarm(docker_host: str | None, registry: str) -> SwarmBackend:
    """The manager at docker_host, checked to be one, and the registry, checked to answer it."""
    where, engine = reach(docker_host)
    client = docker_client.client_for(where)
    try:
        swarm = client.info().get("Swarm") or {}
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"cannot ask the Docker engine about its swarm: {_reason(exc)}") from None
    if not swarm.get("ControlAvailable"):
        raise DockerError(
            "--backend swarm needs a swarm manager: point --remote-docker / DOCKER_HOST at one "
            f"(this engine's swarm state: {swarm.get('LocalNodeState') or 'unknown'})"
        )
    backend = SwarmBackend(client, engine, registry)
    backend.registry.has(f"{registry}/{IMAGE_REPO}:reachable")  # raises when unreachable
    return backend


class SwarmBackend:
    """base.Backend on a swarm, through its manager."""

    local = False  # the nodes do not share this machine's files

    def __init__(self, client: docker.DockerClient, engine: EngineAPI, registry: str) -> None:
        self.client = client
        self.api: Any = client.api  # Any: docker-py's stubs leave the swarm calls untyped
        self.engine = engine  # the manager's API as api.py speaks it: a log, followed
        self.registry = Registry(self.api, registry)
        self._helper: str | None = None  # the helper jobs' image, repository@sha256:...
        self._helper_lock = threading.Lock()

    # ------------------------------------------------------------ image

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
        """Built on the manager (or reused there by its content tag), pushed under the same tag
        unless the registry has what this manager pushed, and named by the digest the registry
        returned (repository@sha256:...): a node pulls exactly the bytes that were built. The
        helper jobs' own image is made ready beside it (helper_image.py)."""
        built = layers.prepare(
            self.client,
            layer,
            base_image=base_image,
            ca_certs=ca_certs,
            force=force,
            log_dir=log_dir,
            on_line=on_line,
            project=project,
        )
        repository = f"{self.registry.host}/{IMAGE_REPO}"
        force_push = force or built.built
        name = self.registry.publish(built.tag, repository, force=force_push, on_line=on_line)
        with self._helper_lock:
            if self._helper is None:  # once a process; --force-rebuild rebuilds it too
                self._helper = helper_image.prepare(
                    self.client,
                    self.registry,
                    base_image=base_image,
                    force=force,
                    log_dir=log_dir,
                    on_line=on_line,
                )
        return dataclasses.replace(built, tag=name)

    # ------------------------------------------------------------ the task

    def create(self, spec: TaskSpec, inputs: Inputs) -> Task:
        """The task's configs and secrets; the service itself is made by start()."""
        if spec.object_dirs:
            raise DockerError("a swarm's nodes cannot mount this machine's files: --workspace copy")
        run_id = spec.labels[sweep.RUN_ID]
        # the task may start up to START_LIMIT_S late (an image pull): no sweep before then
        deadline = sweep.deadline_label(spec.timeout_s, START_LIMIT_S)
        spec = dataclasses.replace(spec, labels=spec.labels | deadline)
        service = Service(run_id, spec.image, inputs.nonce, spec)
        task = Task(service, inputs)
        public, private = inputs.split()
        try:
            with files_tar(public) as archive:
                for i, piece in enumerate(pieces(archive, CONFIG_PIECE)):
                    made = self.api.create_config(
                        f"{spec.name}-input-{i:03d}", piece, labels=spec.labels
                    )
                    service.configs.append(str(made["ID"]))
            with files_tar(private) as archive:
                for i, piece in enumerate(pieces(archive, SECRET_PIECE)):
                    made = self.api.create_secret(
                        f"{spec.name}-secret-{i:03d}", piece, labels=spec.labels
                    )
                    service.secrets.append(str(made["ID"]))
        except _DOCKER_ERRORS as exc:
            self.remove(task)
            raise DockerError(f"the swarm refused the task's inputs: {_reason(exc)}") from None
        return task

    def _task_template(self, spec: TaskSpec, service: Service) -> TaskTemplate:
        limits = spec.profile
        configs = [
            ConfigReference(
                cid, f"{spec.name}-input-{i:03d}", f"{CONFIG_DIR}/{i:03d}", "0", "0", 0o400
            )
            for i, cid in enumerate(service.configs)
        ]
        secret_refs = [
            SecretReference(
                sid, f"{spec.name}-secret-{i:03d}", f"{SECRET_PREFIX}{i:03d}", "0", "0", 0o400
            )
            for i, sid in enumerate(service.secrets)
        ]
        env = dict[str, str | bytes | None](spec.env | channel.INPUTS_FROM_FILES)
        container = ContainerSpec(
            spec.image,
            command=spec.command,
            env=env,
            labels=spec.labels,
            user=profile.USER,
            workdir=profile.WORKDIR,
            init=profile.INIT,
            configs=configs,
            secrets=secret_refs,
            cap_add=limits.capabilities,
            cap_drop=["ALL"],
            stop_grace_period=int(30e9),
        )
        resources = Resources(
            cpu_limit=limits.nano_cpus,
            mem_limit=limits.memory_bytes,
            mem_reservation=limits.memory_bytes,  # no node without room for it
        )
        resources.setdefault("Limits", {})["Pids"] = limits.pids_limit
        return TaskTemplate(
            container,
            resources=resources,
            restart_policy=RestartPolicy(condition="none", max_attempts=0),
            log_driver=DriverConfig("json-file"),  # what `service logs` reads
        )

    def start(
        self, task: Task, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]
    ) -> LogStream:
        """Create the service, see its task start (a clear error if it cannot), then follow its
        log."""
        service: Service = task.handle
        assert service.spec is not None, "create() keeps the spec"
        spec = service.spec
        try:
            made = self.api.create_service(
                self._task_template(spec, service),
                name=spec.name,
                labels=spec.labels,
                # not a replicated-job, whose containers outlive it (moby 42789, 44312): the
                # node removes this one's when it is removed, and no helper job has to
                mode=ServiceMode("replicated", replicas=1),
            )
        except _DOCKER_ERRORS as exc:
            raise DockerError(f"the swarm refused the agent's service: {_reason(exc)}") from None
        service.service_id = str(made["ID"])
        service.marks["made"] = time.monotonic()
        self._await_start(service)
        service.marks["task started"] = time.monotonic()
        cap = service.spec.max_result_bytes if service.spec else DEFAULT_MAX_RESULT
        service.reader = ResultReader(service.nonce, on_stderr, max_bytes=cap)
        stream = LogStream(lambda: self._open_log(service), service.reader, on_stdout)
        service.stream = stream
        stream.start()
        _Watch(self, service, stream).start()
        return stream

    def _await_start(self, service: Service) -> None:
        end = time.monotonic() + START_LIMIT_S
        waits = pauses()
        while time.monotonic() < end:
            state, error, node, container = self._state(service)
            if container or state in ("running", "complete") or (state == "failed" and node):
                return
            if state in ENDED or (state == "pending" and error and "no suitable node" in error):
                where = f" on node {self._node_name(node)}" if node else ""
                raise DockerError(
                    f"the swarm could not start the agent's task{where}: {error or state}"
                )
            time.sleep(next(waits))
        raise DockerError(f"the agent's task did not start within {START_LIMIT_S:g}s")

    def _tasks(self, service: Service) -> list[dict[str, Any]]:
        if service.service_id is None:
            return []
        try:
            return list(self.api.tasks(filters={"service": service.service_id}))
        except docker.errors.NotFound:
            return []
        except _DOCKER_ERRORS as exc:
            raise DockerError(f"lost track of the agent's service: {_reason(exc)}") from None

    def _state(self, service: Service) -> tuple[str, str | None, str | None, str | None]:
        """(state, error, node id, container id) of the service's newest task."""
        tasks = sorted(self._tasks(service), key=lambda t: str(t.get("CreatedAt", "")))
        if not tasks:
            return "new", None, None, None
        status = tasks[-1].get("Status") or {}
        node = tasks[-1].get("NodeID") or None
        if node:
            service.nodes.add(node)
        container = (status.get("ContainerStatus") or {}).get("ContainerID") or None
        return str(status.get("State", "new")), status.get("Err") or None, node, container

    def _node_name(self, node_id: str | None) -> str:
        if not node_id:
            return "?"
        with suppress(*_DOCKER_ERRORS):
            node = self.api.inspect_node(node_id)
            return str((node.get("Description") or {}).get("Hostname") or node_id[:12])
        return node_id[:12]

    def _node_down(self, node_id: str | None) -> bool:
        if not node_id:
            return False
        try:
            return str(self.api.inspect_node(node_id)["Status"]["State"]) != "ready"
        except docker.errors.NotFound:
            return True
        except _DOCKER_ERRORS:
            return False

    def _open_log(
        self, service: Service, *, follow: bool = True
    ) -> tuple[Iterator[tuple[int, bytes]], Callable[[], None]]:
        """The service's log, followed (or as it is): its messages, and what cuts the follow."""
        query = {"follow": str(int(follow)), "stdout": "1", "stderr": "1"}
        try:
            body = self.engine.stream(f"/services/{service.service_id}/logs", query)
        except EngineError as exc:
            raise DockerError(f"cannot read the agent's service log: {exc.message}") from None
        return log_messages(body.read), body.close

    def exit_info(self, service: Service) -> ExitInfo | None:
        """The task's exit, if it ended (or its node went down)."""
        if service.lost is not None:
            return ExitInfo(status_code=-1, oom_killed=False, error=service.lost)
        tasks = sorted(self._tasks(service), key=lambda t: str(t.get("CreatedAt", "")))
        if not tasks:
            return None if service.service_id else ExitInfo(-1, False, "the task is gone")
        status = tasks[-1].get("Status") or {}
        state = str(status.get("State", ""))
        node = tasks[-1].get("NodeID") or None
        # A node that goes down ends its task one of two ways, depending on who looks first:
        # still "running" on a node that is down, or ended by the manager ("assigned node no
        # longer meets constraints"). Either way the run says which node went down.
        if state != "complete" and self._node_down(node):
            service.lost = f"its node {self._node_name(node)} went down"
            return ExitInfo(status_code=-1, oom_killed=False, error=service.lost)
        if state not in ENDED:
            return None
        service.marks.setdefault(f"end seen ({state})", time.monotonic())
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        error = status.get("Err") or None
        if error and str(error).startswith("task: non-zero exit"):
            error = None  # the exit status says it
        return ExitInfo(
            status_code=-1 if code is None else int(code), oom_killed=False, error=error
        )

    def wait(self, task: Task, timeout_s: float) -> ExitInfo | None:
        end = time.monotonic() + timeout_s
        waits = pauses()
        while True:
            exit_info = self.exit_info(task.handle)
            if exit_info is not None or time.monotonic() >= end:
                return exit_info
            time.sleep(min(next(waits), max(end - time.monotonic(), 0.0)))

    def signal(self, task: Task, name: str) -> None:
        service: Service = task.handle
        if self.exit_info(service) is not None:
            return
        for node in sorted(service.nodes):
            self.node_job(node, name, service.run_id)

    def fetch_result(
        self, task: Task, dest: Path, *, account: bool = False, max_bytes: int = DEFAULT_MAX_RESULT
    ) -> bool:
        service: Service = task.handle
        if service.reader is None and account:  # a lost run's, from the log it left
            return self._result_from_log(service, dest, max_bytes)
        reader = service.reader
        return reader is not None and reader.frames.extract(dest / "out", max_bytes)

    def _result_from_log(self, service: Service, dest: Path, max_bytes: int) -> bool:
        """The result files and the vouched result line of an ended service, read back from its
        log with the run's nonce (kept in its run directory, dest); False when they are not
        all there."""
        nonce_file = dest / NONCE_FILE
        nonce = nonce_file.read_text(encoding="utf-8").strip() if nonce_file.is_file() else ""
        if not nonce:
            return False
        # only its frames and result matter
        reader = ResultReader(nonce, lambda line: None, max_bytes=max_bytes)
        try:
            messages, close = self._open_log(service, follow=False)
            try:
                for stream, data in messages:
                    if stream == STDERR:
                        reader.feed(data)
            finally:
                close()
            reader.end()
            text = reader.result
            if text is None or not reader.frames.extract(dest / "out", max_bytes):
                return False
        except (*_DOCKER_ERRORS, OSError, ValueError) as exc:
            raise DockerError(f"cannot read the log of run {service.run_id}: {exc}") from None
        finally:
            reader.frames.close()
        # as a container keeps it: the line, which recovery checks against the nonce it has
        (dest / Path(ACCOUNT_FILE).name).write_text(result_line(nonce, text), encoding="utf-8")
        return True

    def lost_tasks(self, project: str) -> list[LostTask]:
        """This project's services, made here by an agent-worker that is gone, that ended (one
        still at work stops its agent at its own deadline; a run after that recovers it)."""
        try:
            services = self.api.services(filters={"label": f"{sweep.PROJECT}={project}"})
        except _DOCKER_ERRORS as exc:
            raise DockerError(f"cannot list old agent services: {_reason(exc)}") from None
        candidates = []
        for found in services:
            labels = dict((found.get("Spec") or {}).get("Labels") or {})
            candidates.append((self._found(found, labels), labels, True))
        lost = [task for task in sweep.lost(candidates, self.exit_info) if task.exit is not None]
        for task in lost:
            self._own_inputs(task.task.handle)
        return lost

    def _found(self, found: Mapping[str, Any], labels: Mapping[str, str]) -> Service:
        image = str(found["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])
        job = "ReplicatedJob" in (found["Spec"].get("Mode") or {})  # made by an earlier version
        run_id = labels.get(sweep.RUN_ID, "")
        return Service(run_id, image, "", service_id=str(found["ID"]), job=job)

    def runtime(self, task: Task) -> str | None:
        return None  # a service runs on its node's default runtime, which the manager never says

    def node(self, task: Task) -> str | None:
        service: Service = task.handle
        if not service.nodes:
            with suppress(DockerError):
                self._state(service)
        return self._node_name(min(service.nodes)) if service.nodes else None

    def remove(self, task: Task) -> None:
        service: Service = task.handle
        service.marks["removal began"] = time.monotonic()
        problems = self._remove(service)
        service.marks["removed"] = time.monotonic()
        log.debug("swarm: run %s: service made, %s", service.run_id, service.timeline())
        if service.reader is not None:
            service.reader.frames.close()
        if problems:
            raise DockerError("; ".join(problems))

    def _remove(self, service: Service) -> list[str]:
        """Remove the service, its containers on the nodes, its configs and secrets; what could
        not be removed. Its nodes remove its containers as it goes, but a job's (node_job), and
        a node that is down cannot."""
        problems = []
        if service.service_id is not None:
            if not service.nodes:
                self._state(service)  # the node it ran on
            try:
                self.api.remove_service(service.service_id)
            except docker.errors.NotFound:
                pass
            except _DOCKER_ERRORS as exc:
                problems.append(f"cannot remove service {service.run_id}: {_reason(exc)}")
        for node in sorted(service.nodes):
            if self._node_down(node):
                problems.append(
                    f"the container of run {service.run_id} stays on node "
                    f"{self._node_name(node)}, which is down: remove it there"
                )
                continue
            if service.job and (problem := self.node_job(node, "remove", service.run_id)):
                problems.append(problem)
        problems += self._remove_inputs(service.secrets, self.api.remove_secret)
        problems += self._remove_inputs(service.configs, self.api.remove_config)
        return problems

    def _remove_inputs(self, ids: list[str], remove: Callable[[str], Any]) -> list[str]:
        """Configs or secrets; the service that used them may take a moment to let go."""
        left = list(ids)
        end = time.monotonic() + 20.0
        waits = pauses()
        while left:
            try:
                remove(left[0])
                left.pop(0)
            except docker.errors.NotFound:
                left.pop(0)
            except _DOCKER_ERRORS as exc:
                if time.monotonic() > end:
                    return [f"cannot remove the task's inputs: {_reason(exc)}"]
                time.sleep(next(waits))
        ids.clear()
        return []

    # ------------------------------------------------------------ helper jobs on a node

    def node_job(self, node: str, action: str, run_id: str) -> str:
        """A helper job on node that signals (action SIGTERM, SIGINT, SIGKILL) or removes
        ("remove") the run's containers there (node_jobs.run); a problem, or "" when it ran."""
        image = self._helper or helper_image.published(self.client, self.registry)
        if image is None:
            return (
                f"cannot {action} the containers of run {run_id} on node {self._node_name(node)}:"
                " the swarm's helper image is not made yet (a run on this swarm makes it)"
            )

        def state(service_id: str) -> tuple[str, str | None]:
            return self._state(Service(run_id, image, "", service_id=service_id))[:2]

        return node_jobs.run(
            self.api, node, image, action, run_id, state=state, node_name=self._node_name
        )

    # ------------------------------------------------------------ orphans

    def remove_orphans(self) -> list[str]:
        """Services (and their containers, configs, secrets) of runs that are gone: past their
        deadline, or made on this host by a process that is gone; helper jobs left over."""
        now = time.time()
        removed = []
        try:
            services = self.api.services(filters={"label": sweep.RUN_ID})
        except _DOCKER_ERRORS as exc:
            raise DockerError(f"cannot list old agent services: {_reason(exc)}") from None
        live = set()
        for found in services:
            labels = dict((found.get("Spec") or {}).get("Labels") or {})
            service = self._found(found, labels)
            if not sweep.gone(labels, now) or not self._swept(service, labels, now):
                live.add(service.run_id)
                continue
            self._own_inputs(service)
            self._remove(service)
            removed.append(f"removed service {found['Spec'].get('Name')} (its run is gone)")
        node_jobs.sweep_left_over(self.api, now)
        removed += self._remove_stray_inputs(live, now)
        return removed

    def _swept(self, service: Service, labels: Mapping[str, str], now: float) -> bool:
        """Whether the service of a run that is gone goes now, as a lost run's container
        would (orphans.note): one at work once past its deadline; one that ended after
        KEEP_LOST_S, the time a run on its host has to recover its work (lost_tasks)."""
        return sweep.note(labels, self.exit_info(service) is None, now) is not None

    def _own_inputs(self, service: Service) -> None:
        label = {"label": f"{sweep.RUN_ID}={service.run_id}"}
        with suppress(*_DOCKER_ERRORS):
            service.configs = [str(c["ID"]) for c in self.api.configs(filters=label)]
            service.secrets = [str(s["ID"]) for s in self.api.secrets(filters=label)]

    def _remove_stray_inputs(self, live: set[str], now: float) -> list[str]:
        """Configs and secrets of runs that died before their service was made."""
        removed = []
        label = {"label": sweep.RUN_ID}
        try:
            found = [(c, self.api.remove_config) for c in self.api.configs(filters=label)]
            found += [(s, self.api.remove_secret) for s in self.api.secrets(filters=label)]
        except _DOCKER_ERRORS as exc:
            raise DockerError(f"cannot list old agent inputs: {_reason(exc)}") from None
        for item, remove in found:
            labels = dict((item.get("Spec") or {}).get("Labels") or {})
            if labels.get(sweep.RUN_ID) in live or not sweep.gone(labels, now):
                continue
            with suppress(*_DOCKER_ERRORS):
                remove(item["ID"])
                removed.append(f"removed {item['Spec'].get('Name')} (its run is gone)")
        return removed


class _Watch:
    """Polls the task's state beside its log stream, and ends the stream once the task ended
    (after a grace for the rest of its log), or its node went down."""

    def __init__(self, backend: SwarmBackend, service: Service, stream: LogStream) -> None:
        self._thread = threading.Thread(target=self._run, name="service-watch", daemon=True)
        self._backend = backend
        self._service = service
        self._stream = stream

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while self._stream.is_alive():
                if self._backend.exit_info(self._service) is not None:
                    self._stream.ended.wait(LOG_GRACE_S)
                    break
                time.sleep(POLL_S)
        except Exception:  # noqa: BLE001, S110 (the stream is stopped all the same)
            pass
        self._stream.stop()
