"""The helper jobs' image (node_jobs.py): agent-worker's own, never the repository's. Its only
content is one static program (node_job.c), compiled in a stage FROM the user's --base-image
(never a project's base image, Dockerfile, setup or variables) and copied onto an empty image;
tagged by a hash of its Dockerfile (the base image's id in it) and source, like the agent
image's layers; pushed to the swarm's registry and named by the digest the registry returned."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import docker
import docker.errors
from docker.utils import parse_repository_tag

from agent_worker_app.engines.docker.client import DOCKER_ERRORS, reason
from agent_worker_app.engines.swarm.registry import Registry
from agent_worker_app.errors import ImageBuildError
from agent_worker_app.images import build
from agent_worker_app.images.layers import REPOSITORIES, Layer, layer_tag

log = logging.getLogger("agent_worker")

NAME = "node-job"
SOURCE = Path(__file__).with_name("node_job.c")
PROGRAM = "/node-job"


def layer(base_image: str, base_id: str) -> Layer:
    """The image's build: the compiler only in the first stage, the program alone in the last."""
    dockerfile = f"""FROM {base_image} AS build
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc musl-tools
COPY node_job.c /src/node_job.c
RUN musl-gcc -static -Os -s -Wall -Wextra -o {PROGRAM} /src/node_job.c
FROM scratch
COPY --from=build {PROGRAM} {PROGRAM}
USER 0:0
ENTRYPOINT ["{PROGRAM}"]
"""
    files = (("node_job.c", SOURCE.read_bytes(), 0o644),)
    return Layer(
        name=NAME,
        tag=layer_tag(NAME, dockerfile, files, {}, extra=base_id),
        dockerfile=dockerfile,
        files=files,
    )


def prepare(
    client: docker.DockerClient,
    registry: Registry,
    *,
    base_image: str,
    force: bool,
    log_dir: Path,
    on_line: Callable[[str], None],
) -> str:
    """The helper image on the manager (built once per base image and source) and in the
    registry: its repository@sha256:... reference."""
    made = layer(base_image, _base_id(client, base_image))
    log_dir.mkdir(parents=True, exist_ok=True)
    with build.build_lock(log_dir, made.tag):
        if force or not build.image_exists(client, made.tag):
            _build(client, made, log_dir, on_line)
        else:
            on_line(f"image: swarm helper reused ({made.tag})")
    repository = f"{registry.host}/{REPOSITORIES[NAME]}"
    return registry.publish(made.tag, repository, force=force, on_line=on_line)


def _base_id(client: docker.DockerClient, base_image: str) -> str:
    """The id of the base image on the manager, pulled there first if it is missing (a project
    with a base image of its own may not have needed it)."""
    try:
        with suppress(docker.errors.ImageNotFound):
            return str(client.images.get(base_image).id)
        repository, tag = parse_repository_tag(base_image)
        return str(client.images.pull(repository, tag=tag or "latest").id)
    except DOCKER_ERRORS as exc:
        raise ImageBuildError(
            f"base image {base_image} is not on the swarm manager and could not be pulled "
            f"({reason(exc)}): pull or load it there, or choose another --base-image"
        ) from None


def published(client: docker.DockerClient, registry: Registry) -> str | None:
    """A helper image this manager built and pushed before (for a sweep or --recover before any
    image is prepared), or None."""
    try:
        images = client.api.images(name=REPOSITORIES[NAME])
    except DOCKER_ERRORS:
        return None
    repository = f"{registry.host}/{REPOSITORIES[NAME]}"
    for image in sorted(images, key=lambda i: int(i.get("Created") or 0), reverse=True):
        for ref in registry.pushed(str(image["Id"]), repository):
            return ref
    return None


def _build(
    client: docker.DockerClient, made: Layer, log_dir: Path, on_line: Callable[[str], None]
) -> None:
    log_path = log_dir / f"build-{NAME}-{made.tag.split(':')[1]}.log"
    on_line(f"image: swarm helper: building ({made.tag})")
    error = None
    with log_path.open("w", encoding="utf-8") as out:
        try:
            for chunk in client.api.build(
                fileobj=build.context_tar(made),
                custom_context=True,
                tag=made.tag,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            ):
                if "error" in chunk:
                    error = str(chunk["error"]).strip() or "unknown error"
                out.write(str(chunk.get("stream") or chunk.get("error") or ""))
        except DOCKER_ERRORS as exc:
            error = reason(exc)
            out.write(f"error: {error}\n")
    if error is not None:
        raise ImageBuildError(
            f"the build of the swarm's helper image failed: {error.splitlines()[-1]} "
            f"(full log: {log_path})"
        )
    log.debug("swarm: helper image %s built", made.tag)
