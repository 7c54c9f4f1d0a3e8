"""The docker backend as the backend list (engines/__init__.py) sees it: its help, its own
options and their check, connect(). Imports nothing heavy: --help reads it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_worker_app.engines import Getter, Option
    from agent_worker_app.engines.base import Backend

HELP = "a container on the Docker engine (--remote-docker, DOCKER_HOST, the Docker context)"
OPTIONS: tuple[Option, ...] = ()


def settings(get: Getter, workspace: str) -> dict[str, str]:
    return {}


def connect(docker_host: str | None, settings: Mapping[str, str]) -> Backend:
    # here, not at the top: --help imports this package, and needs none of the engine's code
    from agent_worker_app.engines.docker import backend

    return backend.connect(docker_host)
