"""Everything agent-worker asks of Docker: the only package that talks to a Docker engine.

- endpoint: which engine a run uses (plain values; imports nothing of docker-py)
- local_api: the few calls a run makes before its container starts, straight to the local
  engine's socket (docker-py, with requests and urllib3, takes 0.17 s to import: it is imported
  on the side, while the engine starts the container)
- container_io: a container's streams over its attach socket, and its input tar
- engine: docker-py: the connection (local, TLS, ssh), images, containers
- docker_backend: DockerBackend, the Backend on one engine
- layers: building the image's layers; swarm, swarm_io: the Swarm backend

Importing this package imports no docker-py: each name below is looked up in its module when
first used (docker_manager.connect, docker_manager.DockerBackend, ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent_worker_app.docker_manager.container_io import ContainerIO
    from agent_worker_app.docker_manager.docker_backend import FRAME_MAX, DockerBackend
    from agent_worker_app.docker_manager.endpoint import Engine, EngineTLS, is_local, resolve_engine
    from agent_worker_app.docker_manager.engine import (
        IMAGE_REPO,
        agent_image_tag,
        bridge_gateway,
        build_lock,
        build_lock_path,
        connect,
        copy_out,
        create_container,
        image_exists,
        remove,
        remove_orphans,
        signal,
        start,
        wait,
    )
    from agent_worker_app.docker_manager.orphans import KEEP_LOST_S

_ENGINE = (
    "IMAGE_REPO",
    "agent_image_tag",
    "bridge_gateway",
    "build_lock",
    "build_lock_path",
    "connect",
    "copy_out",
    "create_container",
    "image_exists",
    "remove",
    "remove_orphans",
    "signal",
    "start",
    "wait",
)
_HOMES = {
    "ContainerIO": "container_io",
    "DockerBackend": "docker_backend",
    "FRAME_MAX": "docker_backend",
    "Engine": "endpoint",
    "EngineTLS": "endpoint",
    "KEEP_LOST_S": "orphans",
    "is_local": "endpoint",
    "resolve_engine": "endpoint",
    **dict.fromkeys(_ENGINE, "engine"),
}
__all__ = [
    "FRAME_MAX",
    "IMAGE_REPO",
    "KEEP_LOST_S",
    "ContainerIO",
    "DockerBackend",
    "Engine",
    "EngineTLS",
    "agent_image_tag",
    "bridge_gateway",
    "build_lock",
    "build_lock_path",
    "connect",
    "copy_out",
    "create_container",
    "image_exists",
    "is_local",
    "remove",
    "remove_orphans",
    "resolve_engine",
    "signal",
    "start",
    "wait",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:  # a submodule not imported yet, or no such name
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
