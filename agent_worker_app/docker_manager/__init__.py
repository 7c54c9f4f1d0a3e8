"""Everything agent-worker asks of Docker: the only package that talks to a Docker engine.

- endpoint: which engine a run uses (plain values; imports nothing of docker-py)
- api: the engine's HTTP API with the standard library over every transport (its socket, TCP,
  TLS, ssh): every call a task's container needs (docker-py, with requests and urllib3, takes
  0.17 s to import, and is imported only to build or pull an image)
- containers: a task's container's one lifecycle (create ... remove, orphans, lost runs)
- container_io: a container's streams over its attach socket, and its input tar
- engine: docker-py: its client (local, TLS, ssh), images
- docker_backend: DockerBackend, the Backend on one engine
- layers: building the image's layers; swarm, swarm_io: the Swarm backend

Importing this package imports no docker-py: each name below is looked up in its module when
first used (docker_manager.connect, docker_manager.DockerBackend, ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, as mypy sees them ("X as X": exported)
    from agent_worker_app.docker_manager.api import EngineAPI as EngineAPI
    from agent_worker_app.docker_manager.container_io import ContainerIO as ContainerIO
    from agent_worker_app.docker_manager.containers import Containers as Containers
    from agent_worker_app.docker_manager.docker_backend import FRAME_MAX as FRAME_MAX
    from agent_worker_app.docker_manager.docker_backend import DockerBackend as DockerBackend
    from agent_worker_app.docker_manager.docker_backend import connect as connect
    from agent_worker_app.docker_manager.endpoint import Engine as Engine
    from agent_worker_app.docker_manager.endpoint import EngineTLS as EngineTLS
    from agent_worker_app.docker_manager.endpoint import is_local as is_local
    from agent_worker_app.docker_manager.endpoint import resolve_engine as resolve_engine
    from agent_worker_app.docker_manager.engine import IMAGE_REPO as IMAGE_REPO
    from agent_worker_app.docker_manager.engine import agent_image_tag as agent_image_tag
    from agent_worker_app.docker_manager.engine import bridge_gateway as bridge_gateway
    from agent_worker_app.docker_manager.engine import build_lock as build_lock
    from agent_worker_app.docker_manager.engine import build_lock_path as build_lock_path
    from agent_worker_app.docker_manager.engine import image_exists as image_exists
    from agent_worker_app.docker_manager.orphans import KEEP_LOST_S as KEEP_LOST_S

_ENGINE = (
    "IMAGE_REPO",
    "agent_image_tag",
    "bridge_gateway",
    "build_lock",
    "build_lock_path",
    "image_exists",
)
_HOMES = {
    "ContainerIO": "container_io",
    "Containers": "containers",
    "DockerBackend": "docker_backend",
    "EngineAPI": "api",
    "FRAME_MAX": "docker_backend",
    "Engine": "endpoint",
    "EngineTLS": "endpoint",
    "KEEP_LOST_S": "orphans",
    "connect": "docker_backend",
    "is_local": "endpoint",
    "resolve_engine": "endpoint",
    **dict.fromkeys(_ENGINE, "engine"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:  # a submodule not imported yet, or no such name
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
