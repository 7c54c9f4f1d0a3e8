"""The registry every node of a swarm pulls the agent image from, as the manager sees it: whether
it has an image (and answers at all), and publishing one there, named by the digest the registry
returned: a node pulls exactly the bytes that were built, whatever a tag points to by then."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import docker.errors

from agent_worker_app.engines.docker.client import DOCKER_ERRORS, reason
from agent_worker_app.errors import DockerError, ImageBuildError

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


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

    def publish(
        self, local: str, repository: str, *, force: bool, on_line: Callable[[str], None]
    ) -> str:
        """The local image (NAME:TAG) in the registry as repository@sha256:...: the digest this
        engine pushed it under, when the registry still has it, else pushed now."""
        if not force:
            for ref in self.pushed(local, repository):
                if self.has(ref):
                    return ref
        return f"{repository}@{self.push(local, repository, local.split(':', 1)[1], on_line)}"

    def pushed(self, local: str, repository: str) -> list[str]:
        """repository@digest of each push of the local image from this engine."""
        try:
            found = self.api.inspect_image(local).get("RepoDigests") or []
        except DOCKER_ERRORS:
            return []
        return [
            str(ref)
            for ref in found
            if str(ref).startswith(f"{repository}@") and DIGEST.fullmatch(str(ref).split("@", 1)[1])
        ]

    def push(self, local: str, repository: str, tag: str, on_line: Callable[[str], None]) -> str:
        """Tag the local image repository:tag and push it; the digest the registry returned
        (sha256:...), or ImageBuildError saying why not."""
        error = None
        digest = None
        try:
            self.api.tag(local, repository, tag, force=True)
            for chunk in self.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in chunk:
                    error = str(chunk["error"]).strip()
                elif isinstance(chunk.get("aux"), dict) and chunk["aux"].get("Digest"):
                    digest = str(chunk["aux"]["Digest"])
                elif chunk.get("status") and not chunk.get("progressDetail"):
                    on_line(" ".join(str(chunk[k]) for k in ("id", "status") if chunk.get(k)))
        except DOCKER_ERRORS as exc:
            error = reason(exc)
        if error is None and (digest is None or not DIGEST.fullmatch(digest)):
            error = f"the registry returned no digest ({digest or 'none'})"
        if error is not None:
            raise ImageBuildError(f"cannot push {local} to {self.host}: {error}")
        assert digest is not None
        return digest
