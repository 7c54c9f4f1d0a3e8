"""The Docker backend: each task a container on one Docker engine, local or remote (the local
socket, tcp:// with or without TLS, ssh://, a Docker context).

- endpoint: which engine a run uses (plain values)
- api: the engine's HTTP API with the standard library, over every transport (its socket, TCP,
  TLS, ssh): every call a task's container needs
- containers: a task's container's one lifecycle (create ... remove, orphans, lost runs)
- container_config: the sandbox profile (profile.py) as the engine's create body
- container_io: the container's streams over its attach socket, and the input tar on its stdin
- backend: DockerBackend, the Backend on one engine
- client: docker-py's client (with requests and urllib3, 0.2 s of CPU to import), for building
  and pulling images only: a run whose image is there never imports it
"""

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
