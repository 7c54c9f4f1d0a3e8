"""A task's container on any engine, through api.EngineAPI (no docker-py): create, attach,
start, wait, signal, copy out, remove; and the containers of runs that are gone (sweep.py
decides which). The one lifecycle of a container, whatever the transport to its engine."""

from __future__ import annotations

import socket
import tarfile
import tempfile
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from agent_worker_app.engines import sweep
from agent_worker_app.engines.base import ExitInfo, LostTask, TaskSpec
from agent_worker_app.engines.channel import (
    DEFAULT_MAX_RESULT,
    Capped,
    ResultTooLargeError,
    extract_results,
)
from agent_worker_app.engines.docker.api import EngineAPI, EngineError
from agent_worker_app.engines.docker.companion import Companion
from agent_worker_app.engines.docker.container_config import container_config, storage_size
from agent_worker_app.errors import DockerError


class Container(NamedTuple):
    id: str
    name: str
    runtime: str | None = None  # the runtime it was created with; None: the engine's default
    disk_watch: int | None = None  # --disk, to be watched: the engine could not cap it itself
    network: Companion | None = None  # the network companion whose namespace it joined


def _failure(what: str, exc: OSError | EngineError) -> DockerError:
    return DockerError(f"{what}: {exc.message if isinstance(exc, EngineError) else exc}")


class Containers:
    """A task's container on the engine api reaches; each call raises DockerError with a
    sentence for the user when the engine refuses or cannot be reached."""

    def __init__(self, api: EngineAPI) -> None:
        self.api = api
        # whether the engine's storage caps a container's writable layer (--storage-opt size):
        # None until a container was made with it or refused
        self.storage_opt: bool | None = None

    def create(self, spec: TaskSpec, network: Companion | None = None) -> Container:
        """Create (not start) the task's container, labelled with its deadline: started next,
        it ends by then (sweep.deadline_label); in the network companion's namespace, if
        given."""
        spec = replace(spec, labels=spec.labels | sweep.deadline_label(spec.timeout_s))
        config = container_config(spec, network.id if network is not None else None)
        sized = storage_size(spec)
        try:
            if sized and self.storage_opt is not False:
                try:
                    made = self.api.create(
                        spec.name, config | {"HostConfig": config["HostConfig"] | sized}
                    )
                    self.storage_opt = True
                    return Container(made, spec.name, spec.profile.runtime, network=network)
                except EngineError as exc:
                    if self.storage_opt or "storage" not in exc.message.lower():
                        raise
                    self.storage_opt = False  # its storage cannot: the disk is watched instead
            made = self.api.create(spec.name, config)
            return Container(
                made, spec.name, spec.profile.runtime, spec.profile.disk_bytes, network
            )
        except (OSError, EngineError) as exc:
            raise _failure("Docker refused to create the agent container", exc) from None

    def disk_used(self, container: Container) -> tuple[int, bool] | None:
        """(the bytes its writable layer holds, whether it runs); None when it is gone or the
        engine does not say."""
        try:
            info = self.api.inspect(container.id, size=True)
        except (OSError, EngineError):
            return None
        size = info.get("SizeRw")
        running = bool((info.get("State") or {}).get("Running"))
        return (size, running) if isinstance(size, int) else None

    def attach(self, container: Container) -> socket.socket:
        try:
            return self.api.attach(container.id)
        except (OSError, EngineError) as exc:
            raise _failure("cannot attach to the agent container", exc) from None

    def start(self, container: Container) -> None:
        try:
            self.api.start(container.id)
        except (OSError, EngineError) as exc:
            raise _failure("Docker could not start the agent container", exc) from None

    def wait(self, container: Container, timeout_s: float) -> ExitInfo | None:
        try:
            ended = self.api.wait(container.id, timeout_s)
        except (OSError, EngineError) as exc:
            raise _failure("lost track of the agent container", exc) from None
        if ended is None:
            return None
        result, state = ended["result"], ended["state"]
        return ExitInfo(
            status_code=int(result.get("StatusCode", -1)),
            oom_killed=bool(state.get("OOMKilled")),
            error=(result.get("Error") or {}).get("Message") or state.get("Error") or None,
        )

    def signal(self, container: Container, name: str) -> None:
        """A container that already stopped (or is gone) is no error."""
        with suppress(OSError, EngineError):
            self.api.kill(container.id, name)

    def copy_out(
        self, container: Container, path: str, dest: Path, *, max_bytes: int = DEFAULT_MAX_RESULT
    ) -> bool:
        """Extract path of the (stopped) container into dest; False when it is not there. The
        copy stops at max_bytes: the files that came whole are extracted, then
        ResultTooLargeError."""
        with tempfile.TemporaryFile() as buffer:
            over: ResultTooLargeError | None = None
            try:
                self.api.archive(container.id, path, Capped(buffer, max_bytes))
            except ResultTooLargeError as exc:
                over = exc
            except EngineError as exc:
                if exc.status == 404:
                    return False
                raise _failure("cannot copy results out of the container", exc) from None
            except OSError as exc:
                raise _failure("cannot copy results out of the container", exc) from None
            try:
                extract_results(buffer, dest, end=max_bytes if over else None)
            except tarfile.TarError as exc:
                raise DockerError(
                    f"cannot read the results copied out of the container: {exc}"
                ) from None
            if over is not None:
                raise over
        return True

    def remove(self, container: Container) -> None:
        """Remove the container, running or not; one already gone is fine."""
        try:
            self._remove_if_there(container.id)
        except (OSError, EngineError) as exc:
            raise _failure(f"cannot remove container {container.name}", exc) from None

    def lost_tasks(self, project: str) -> list[LostTask]:
        try:
            found = self.api.containers([f"{sweep.PROJECT}={project}"])
        except (OSError, EngineError) as exc:
            raise _failure("cannot list old agent containers", exc) from None
        return sweep.lost(
            [(Container(c["Id"], _name(c)), c.get("Labels") or {}, _exited(c)) for c in found],
            lambda container: self.wait(container, 5.0),
        )

    def remove_orphans(self, now: float | None = None, *, project: str | None = None) -> list[str]:
        """Remove the containers of runs that are gone (sweep.note), of one project's runs
        when given; a line for each."""
        try:
            found = self.api.containers(sweep.scope(project))
            return sweep.sweep(
                [(_name(c), c.get("Labels") or {}, c.get("State") == "running") for c in found],
                self._remove_if_there,
                now,
            )
        except (OSError, EngineError) as exc:
            raise _failure("cannot list or remove old agent containers", exc) from None

    def _remove_if_there(self, name: str) -> bool:
        """Another agent-worker may remove the same container meanwhile: gone, or its removal
        under way, is no error (False: not ours to report)."""
        try:
            self.api.remove(name)
        except EngineError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True


def _name(container: dict[str, Any]) -> str:
    names = container.get("Names") or [container.get("Id", "?")]
    return str(names[0]).lstrip("/")


def _exited(container: dict[str, Any]) -> bool:
    return container.get("State") in ("exited", "dead")
