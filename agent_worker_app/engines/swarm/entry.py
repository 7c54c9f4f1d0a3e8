"""The swarm backend as the backend list (engines/__init__.py) sees it: its help, its own
options and their check, connect(). Imports nothing heavy: --help reads it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from agent_worker_app import hostport
from agent_worker_app.engines import Option
from agent_worker_app.errors import UsageError

if TYPE_CHECKING:
    from agent_worker_app.engines import Getter
    from agent_worker_app.engines.base import Backend

HELP = "a Docker Swarm whose manager is that engine (needs --registry)"
OPTIONS = (
    Option(
        "--registry",
        "HOST[:PORT]",
        "With --backend swarm: the registry every node pulls the agent image from.",
        "AGENT_WORKER_REGISTRY",
    ),
)


def settings(get: Getter, workspace: str) -> dict[str, str]:
    """The registry, which a swarm needs; a workspace to mount, which it cannot have."""
    text, source = get("registry")
    if text is None:
        raise UsageError(
            "--backend swarm needs --registry HOST[:PORT] (or AGENT_WORKER_REGISTRY): a registry "
            "every node of the swarm can pull from"
        )
    if not hostport.valid(text.strip()):
        raise UsageError(f"{source} must be a registry's HOST or HOST:PORT, got {text!r}")
    if workspace == "mount":
        raise UsageError(
            f"{get('workspace')[1]} mount: a swarm's nodes cannot mount this machine's files "
            "(use auto or copy)"
        )
    return {"registry": text.strip()}


def connect(docker_host: str | None, settings: Mapping[str, str]) -> Backend:
    # here, not at the top: docker-py (0.2 s), which --help and a Docker run never need
    from agent_worker_app.engines.swarm import backend

    return backend.connect_swarm(docker_host, settings["registry"])
