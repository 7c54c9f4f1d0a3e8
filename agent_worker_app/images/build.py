"""Building the agent image's layers (image_layers.py says what they are) on a Docker engine:
each reused when its tag exists, the ones above the nearest existing layer built, each with its
own log and progress lines ("image: environment: 2/3 setup commands: ...")."""

from __future__ import annotations

import fcntl
import io
import logging
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import docker
from docker.utils import parse_repository_tag

from agent_worker_app import capped_log
from agent_worker_app.agents.base_agent import ImageLayer
from agent_worker_app.engines.docker.client import DOCKER_ERRORS, reason
from agent_worker_app.errors import DockerError, ImageBuildError
from agent_worker_app.images import layers as image_layers
from agent_worker_app.images.build_output import OUTPUT_SHOWN, StepWatch, seconds, shown_command
from agent_worker_app.images.layers import ImageResult, Layer, LayerResult, ProjectImage
from agent_worker_app.output_text import clean_line, telling_lines

IMAGE_REPO = "agent-worker"
_log = logging.getLogger("agent_worker")
_CODE = re.compile(r"returned a non-zero code: (\d+)")


def prepare(
    client: docker.DockerClient,
    agent: ImageLayer,
    *,
    base_image: str,
    ca_certs: tuple[Path, ...],
    force: bool,
    log_dir: Path,
    on_line: Callable[[str], None],
    project: ProjectImage | None = None,
    scripts_dir: Path = image_layers.CONTAINER_DIR,
    tag_latest: bool = True,
) -> ImageResult:
    """The agent image for these inputs: the layers above the nearest existing one built."""
    project = project or ProjectImage()
    log_dir.mkdir(parents=True, exist_ok=True)
    results: list[LayerResult] = []
    chain, top = plan(
        client,
        agent,
        base_image=base_image,
        ca_certs=ca_certs,
        force=force,
        log_dir=log_dir,
        on_line=on_line,
        project=project,
        scripts_dir=scripts_dir,
        results=results,
    )
    present = len(chain) if not force and image_exists(client, top.tag) else -1
    made: list[LayerResult] = []
    if present < 0:
        # Another agent-worker on this machine may be building the same image: one builds,
        # the others wait for it here and then reuse what it built.
        with build_lock(log_dir, top.tag):
            present = 0 if force else _nearest(client, chain)
            made = [
                _locked_build(client, layer, force, log_dir, on_line) for layer in chain[present:]
            ]
    for layer in chain[:present]:
        on_line(f"image: {layer.name} layer reused ({layer.tag})")
        results.append(LayerResult(layer.name, layer.tag, built=False, log_path=None))
    results.extend(made)
    if tag_latest and results[-1].built:
        with suppress(*DOCKER_ERRORS):
            client.api.tag(top.tag, IMAGE_REPO, "latest", force=True)
    built = [r for r in results if r.built]
    return ImageResult(
        tag=top.tag,
        built=bool(built),
        log_path=built[-1].log_path if built else None,
        layers=tuple(results),
    )


def plan(
    client: docker.DockerClient,
    agent: ImageLayer,
    *,
    base_image: str,
    ca_certs: tuple[Path, ...],
    force: bool,
    log_dir: Path,
    on_line: Callable[[str], None],
    project: ProjectImage,
    scripts_dir: Path = image_layers.CONTAINER_DIR,
    results: list[LayerResult] | None = None,
) -> tuple[list[Layer], Layer]:
    """image_layers.plan on this engine: base images pulled, the layers below built, if missing."""
    return image_layers.plan(
        agent,
        base_image=base_image,
        ca_certs=ca_certs,
        project=project,
        image_id=lambda ref: _base_image_id(client, ref, log_dir, on_line),
        ensure=lambda layer: _ensure(client, layer, force, log_dir, on_line),
        scripts_dir=scripts_dir,
        results=results,
    )


def _nearest(client: docker.DockerClient, chain: list[Layer]) -> int:
    """How many layers from the bottom need no build: up to the highest one that exists."""
    for index in range(len(chain), 0, -1):
        if image_exists(client, chain[index - 1].tag):
            return index
    return 0


def _locked_build(
    client: docker.DockerClient,
    layer: Layer,
    force: bool,
    log_dir: Path,
    on_line: Callable[[str], None],
) -> LayerResult:
    """A layer another image may share (the agent's is locked by its caller already)."""
    if layer.name == "agent":
        return _build(client, layer, force, log_dir, on_line)
    with build_lock(log_dir, layer.tag):
        if not force and image_exists(client, layer.tag):
            on_line(f"image: {layer.name} layer reused ({layer.tag})")
            return LayerResult(layer.name, layer.tag, built=False, log_path=None)
        return _build(client, layer, force, log_dir, on_line)


def _ensure(
    client: docker.DockerClient,
    layer: Layer,
    force: bool,
    log_dir: Path,
    on_line: Callable[[str], None],
) -> LayerResult:
    if not force and image_exists(client, layer.tag):
        on_line(f"image: {layer.name} layer reused ({layer.tag})")
        return LayerResult(layer.name, layer.tag, built=False, log_path=None)
    return _locked_build(client, layer, force, log_dir, on_line)


def context_tar(layer: Layer) -> IO[bytes]:
    """The layer's build context: its Dockerfile and files (ca-certs/ always there, maybe
    empty, for the COPY that names it)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folder = tarfile.TarInfo("ca-certs")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        files = [("Dockerfile", layer.dockerfile.encode("utf-8"), 0o644), *layer.files]
        for name, data, mode in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _build(
    client: docker.DockerClient,
    layer: Layer,
    force: bool,
    log_dir: Path,
    on_line: Callable[[str], None],
) -> LayerResult:
    """Build one layer, its whole output (Docker's transcript included) logged to
    build-<layer>-<hash>.log; on on_line a line for the layer and one per setup command with
    its time, and the commands' own output (build_output.StepWatch). ImageBuildError (exit 3)
    quoting the failed setup command's own last lines and the log when setup fails."""
    log_path = log_dir / f"build-{layer.name.split()[0]}-{layer.tag.split(':')[1]}.log"
    on_line(f"image: {layer.name} layer: building ({layer.tag})")
    started = time.monotonic()
    watch = StepWatch(layer.name, layer.setup, layer.setup_steps, on_line)
    error: str | None = None
    # setup's output may be endless: the log stops at 256m (the run directory's copy at
    # --max-log-size)
    with capped_log.CappedFile(log_path) as log:
        try:
            fileobj: IO[bytes]
            if layer.context_tar is not None:
                fileobj = layer.context_tar.open("rb")
            else:
                fileobj = context_tar(layer)
            with fileobj, _network(client, layer) as network_mode:
                stream = client.api.build(
                    fileobj=fileobj,
                    custom_context=True,
                    dockerfile=layer.dockerfile_path,
                    tag=layer.tag,
                    buildargs=dict(layer.build_args),
                    rm=True,
                    forcerm=True,
                    nocache=force,
                    pull=False,
                    decode=True,
                    network_mode=network_mode,
                )
                for chunk in stream:
                    if (said := _chunk_error(chunk)) is not None:  # Docker's trailer
                        error = said
                        log.line(f"error: {said}")
                        continue
                    text = _build_text(chunk)
                    if text and "stream" not in chunk:  # (a status: a line of its own)
                        text += "\n"
                    log.write(text.encode("utf-8", "surrogateescape"))
                    _log.debug("build %s: %s", layer.name, text.rstrip("\n"))
                    watch.feed_text(text)
        except DOCKER_ERRORS as exc:
            error = reason(exc)
            log.line(f"error: {error}")
    if error is not None:
        watch.flush()
        raise _failure(layer, watch, error, log_path)
    watch.finish()
    took = time.monotonic() - started
    on_line(f"image: {layer.name} layer built in {seconds(took)}")
    return LayerResult(
        layer.name,
        layer.tag,
        built=True,
        log_path=log_path,
        duration_s=took,
        setup_times=tuple(watch.timings),
    )


@contextmanager
def _network(client: docker.DockerClient, layer: Layer) -> Iterator[str | None]:
    """The build's network mode: setup's closed network for a layer that runs setup, else the
    engine's default."""
    if layer.firewall_image is None:
        yield None
        return
    from agent_worker_app.images import setup_network  # only a layer with setup needs it

    with setup_network.firewalled(
        client, layer.firewall_image, allow=layer.setup_allow
    ) as network_mode:
        yield network_mode


def _chunk_error(chunk: Any) -> str | None:
    if isinstance(chunk, dict) and "error" in chunk:
        return str(chunk["error"]).strip() or "unknown error"
    return None


def _failure(layer: Layer, watch: StepWatch, error: str, log_path: Path) -> ImageBuildError:
    """The error of a failed build: for a setup command, its number, the command, its exit
    code and its own last lines (never Docker's trailer: "The command '/bin/sh -c ...'
    returned a non-zero code"); the log's path."""
    shown = list(watch.output)[-OUTPUT_SHOWN:]
    said = telling_lines(watch.output)
    last = f"; its last output: {' | '.join(said)}" if said else "; it printed nothing"
    code = _CODE.search(error)
    engine_said = clean_line((error.strip() or "unknown error").splitlines()[-1])
    exit_text = f"exit code {code.group(1)}" if code else engine_said
    index = watch.setup_index
    if index is not None:
        return ImageBuildError(
            f"setup command {index + 1}/{len(layer.setup)} of the environment failed "
            f"({exit_text}): {shown_command(layer.setup[index], width=200)}{last} "
            f"(full log: {log_path})",
            details=shown,
        )
    # a RUN of agent-worker's own Dockerfile (apt, the agent's install): what it printed says
    # why; anything else (a missing base image, a refused context) is the engine's own reason
    last_error = f"{exit_text}{last}" if code else engine_said
    what = {
        "base": "the project's Dockerfile",
        "system": "the system layer of the agent image",
        "environment": "the environment layer of the agent image",
        "agent": "the agent layer of the agent image",
    }.get(layer.name, f"the {layer.name} layer of the agent image")
    return ImageBuildError(
        f"the build of {what} failed: {last_error} (full log: {log_path})", details=shown
    )


def agent_image_tag(
    client: docker.DockerClient, layer: ImageLayer, *, base_image: str, ca_certs: tuple[Path, ...]
) -> str:
    """The tag prepare_image gives this agent's image on this base with no project environment
    (the base must be present)."""
    return plan(
        client,
        layer,
        base_image=base_image,
        ca_certs=ca_certs,
        force=False,
        log_dir=Path(tempfile.gettempdir()),
        on_line=lambda line: None,
        project=ProjectImage(),
    )[1].tag


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False
    except DOCKER_ERRORS as exc:
        raise DockerError(f"cannot list images: {reason(exc)}") from None


def build_lock_path(log_dir: Path, tag: str) -> Path:
    """The lock file of an image's build: beside the build logs' directory (the user's cache
    directory, for a run), in locks/, named after the image's content tag."""
    return log_dir.parent / "locks" / f"image-{tag.split(':')[1]}.lock"


@contextmanager
def build_lock(log_dir: Path, tag: str) -> Iterator[None]:
    """An exclusive lock on a file named after the image tag (flock: released by the kernel
    when its holder dies, so a killed build never blocks the next one)."""
    path = build_lock_path(log_dir, tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _base_image_id(
    client: docker.DockerClient, name: str, log_dir: Path, on_line: Callable[[str], None]
) -> str:
    """The id of the base image, pulled first when the engine does not have it."""
    with suppress(docker.errors.ImageNotFound):
        return str(client.images.get(name).id)
    log_path = log_dir / f"pull-{re.sub(r'[^A-Za-z0-9.-]+', '_', name)}.log"
    error = "not found"
    repository, tag = parse_repository_tag(name)
    with log_path.open("w", encoding="utf-8") as log:
        try:
            for chunk in client.api.pull(repository, tag or "latest", stream=True, decode=True):
                if "error" in chunk:
                    error = str(chunk["error"]).strip()
                if text := _build_text(chunk):
                    log.write(text + "\n")
                    on_line(text)
            return str(client.images.get(name).id)
        except DOCKER_ERRORS as exc:
            error = reason(exc) if error == "not found" else error
            log.write(f"error: {error}\n")
    raise ImageBuildError(
        f"base image {name} is not on the Docker engine and could not be pulled ({error}): "
        f"pull or import it, or choose another --base-image (log: {log_path})"
    )


def _build_text(chunk: Mapping[str, Any]) -> str:
    if "stream" in chunk:
        return str(chunk["stream"])
    if "error" in chunk:
        return f"error: {chunk['error']}"
    if "status" in chunk:
        return " ".join(str(chunk[k]) for k in ("id", "status", "progress") if chunk.get(k))
    return ""
