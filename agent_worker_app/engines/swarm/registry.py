"""The registry every node of a swarm pulls the agent image from, as the manager sees it: whether
it has an image (and answers at all), and pushing one there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker.errors

from agent_worker_app.engines.docker.client import DOCKER_ERRORS, reason
from agent_worker_app.errors import DockerError, ImageBuildError


class Registry:
    """host: the registry's HOST[:PORT]; api: the manager's, docker-py's."""

    def __init__(self, api: Any, host: str) -> None:
        self.api = api
        self.host = host

    def has(self, name: str) -> bool:
        """Whether the registry has name, as the manager sees it; DockerError when it cannot
        be reached from there."""
        try:
            self.api.inspect_distribution(name)
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return False
            raise DockerError(
                f"the swarm manager cannot reach the registry {self.host} ({reason(exc)}): "
                "check --registry, that the registry runs, and that every node's engine "
                "trusts it (insecure-registries in daemon.json for plain HTTP)"
            ) from None
        except DOCKER_ERRORS as exc:
            raise DockerError(f"cannot ask the manager about the registry: {reason(exc)}") from None
        return True

    def push(self, local: str, repository: str, tag: str, on_line: Callable[[str], None]) -> None:
        """Tag the local image repository:tag and push it; ImageBuildError saying why not."""
        error = None
        try:
            self.api.tag(local, repository, tag, force=True)
            for chunk in self.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in chunk:
                    error = str(chunk["error"]).strip()
                elif chunk.get("status") and not chunk.get("progressDetail"):
                    on_line(" ".join(str(chunk[k]) for k in ("id", "status") if chunk.get(k)))
        except DOCKER_ERRORS as exc:
            error = reason(exc)
        if error is not None:
            raise ImageBuildError(f"cannot push the agent image to {self.host}: {error}")
