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

if TYPE_CHECKING:  # the names below, as mypy sees them ("X as X": exported)
    from agent_worker_app.docker_manager.container_io import ContainerIO as ContainerIO
    from agent_worker_app.docker_manager.docker_backend import FRAME_MAX as FRAME_MAX
    from agent_worker_app.docker_manager.docker_backend import DockerBackend as DockerBackend
    from agent_worker_app.docker_manager.endpoint import Engine as Engine
    from agent_worker_app.docker_manager.endpoint import EngineTLS as EngineTLS
    from agent_worker_app.docker_manager.endpoint import is_local as is_local
    from agent_worker_app.docker_manager.endpoint import resolve_engine as resolve_engine
    from agent_worker_app.docker_manager.engine import IMAGE_REPO as IMAGE_REPO
    from agent_worker_app.docker_manager.engine import agent_image_tag as agent_image_tag
    from agent_worker_app.docker_manager.engine import bridge_gateway as bridge_gateway
    from agent_worker_app.docker_manager.engine import build_lock as build_lock
    from agent_worker_app.docker_manager.engine import build_lock_path as build_lock_path
    from agent_worker_app.docker_manager.engine import connect as connect
    from agent_worker_app.docker_manager.engine import copy_out as copy_out
    from agent_worker_app.docker_manager.engine import create_container as create_container
    from agent_worker_app.docker_manager.engine import image_exists as image_exists
    from agent_worker_app.docker_manager.engine import remove as remove
    from agent_worker_app.docker_manager.engine import remove_orphans as remove_orphans
    from agent_worker_app.docker_manager.engine import signal as signal
    from agent_worker_app.docker_manager.engine import start as start
    from agent_worker_app.docker_manager.engine import wait as wait
    from agent_worker_app.docker_manager.orphans import KEEP_LOST_S as KEEP_LOST_S

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:  # a submodule not imported yet, or no such name
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
