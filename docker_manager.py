"""Everything agent-worker asks of Docker: the only module that imports docker."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import tarfile
import tempfile
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import LogConfig, Mount
from docker.utils import parse_repository_tag
from docker.utils.socket import STDOUT, frames_iter

from errors import DockerError, ImageBuildError

CONTAINER_DIR = Path(__file__).resolve().parent / "container"
IMAGE_REPO = "agent-worker"
LABEL = "agent-worker"
AGENT_UID = 1000
_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def connect(docker_host: str | None) -> docker.DockerClient:
    """A client for the given engine (or the environment's), checked with a ping."""
    where = docker_host or os.environ.get("DOCKER_HOST") or "the local socket"
    try:
        client = (
            docker.DockerClient(base_url=docker_host, timeout=120)
            if docker_host
            else docker.from_env(timeout=120)
        )
        client.ping()
    except _DOCKER_ERRORS as exc:
        raise DockerError(
            f"cannot reach the Docker engine at {where} ({_reason(exc)}): "
            "start Docker, or point --remote-docker / DOCKER_HOST at a running engine"
        ) from None
    return client


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__


def is_local(docker_host: str | None) -> bool:
    """True when the engine shares this machine's filesystem: its socket is a local file."""
    url = docker_host or os.environ.get("DOCKER_HOST") or "unix://"
    return url.startswith("unix://")


def bridge_gateway(client: docker.DockerClient) -> str:
    """The host's address on the default bridge, as containers see it."""
    config = client.api.inspect_network("bridge")["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    import ipaddress

    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


# ---------------------------------------------------------------- image


@dataclass(frozen=True)
class ImageResult:
    tag: str
    built: bool
    log_path: Path | None


def _context_files(context_dir: Path, ca_certs: tuple[Path, ...]) -> list[tuple[str, bytes, int]]:
    files = []
    for path in sorted(p for p in context_dir.rglob("*") if p.is_file()):
        mode = 0o755 if os.access(path, os.X_OK) else 0o644
        files.append((path.relative_to(context_dir).as_posix(), path.read_bytes(), mode))
    for i, cert in enumerate(ca_certs):
        files.append((f"ca-certs/{i:02d}-{cert.stem}.crt", cert.read_bytes(), 0o644))
    return files


def image_tag(files: list[tuple[str, bytes, int]], build_args: Mapping[str, str]) -> str:
    """agent-worker:<hash of the context files, modes and build arguments>."""
    digest = hashlib.sha256()
    for name, data, mode in files:
        digest.update(f"{name}\0{mode:o}\0{len(data)}\0".encode())
        digest.update(data)
    for key in sorted(build_args):
        digest.update(f"arg\0{key}\0{build_args[key]}\0".encode())
    return f"{IMAGE_REPO}:{digest.hexdigest()[:16]}"


def _context_tar(files: list[tuple[str, bytes, int]]) -> IO[bytes]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        dir_info = tarfile.TarInfo("ca-certs")
        dir_info.type, dir_info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(dir_info)
        for name, data, mode in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"cannot list images: {_reason(exc)}") from None


def ensure_image(
    client: docker.DockerClient,
    *,
    build_args: Mapping[str, str],
    ca_certs: tuple[Path, ...],
    force: bool,
    log_dir: Path,
    on_line: Callable[[str], None],
    context_dir: Path = CONTAINER_DIR,
    tag_latest: bool = True,
) -> ImageResult:
    """The agent image for these inputs: reused when its content tag exists, else built.

    The tag hashes the context, the build arguments and the base image's id, so a base image
    pulled or imported anew under the same name builds a new agent image too.
    """
    files = _context_files(context_dir, ca_certs)
    log_dir.mkdir(parents=True, exist_ok=True)
    base = build_args.get("BASE_IMAGE", "")
    base_id = _base_image_id(client, base, log_dir, on_line) if base else ""
    tag = image_tag(files, {**build_args, "base image id": base_id})
    if not force and image_exists(client, tag):
        return ImageResult(tag=tag, built=False, log_path=None)
    log_path = log_dir / f"build-{tag.split(':')[1]}.log"
    tail: list[str] = []
    error = None
    with log_path.open("w", encoding="utf-8") as log:
        try:
            stream = client.api.build(
                fileobj=_context_tar(files),
                custom_context=True,
                tag=tag,
                buildargs=dict(build_args),
                rm=True,
                forcerm=True,
                nocache=force,
                pull=False,
                decode=True,
            )
            for chunk in stream:
                text = _build_text(chunk)
                if "error" in chunk:
                    error = str(chunk["error"]).strip()
                for line in text.splitlines():
                    log.write(line + "\n")
                    if line.strip():
                        tail = [*tail[-4:], line]
                        on_line(line)
        except _DOCKER_ERRORS as exc:
            error = _reason(exc)
            log.write(f"error: {error}\n")
    if error is not None:
        error = error.splitlines()[-1] if error else "unknown error"
        raise ImageBuildError(
            f"the agent image build failed: {error} (full log: {log_path})", details=tail
        )
    if tag_latest:
        with suppress(*_DOCKER_ERRORS):
            client.api.tag(tag, IMAGE_REPO, "latest", force=True)
    return ImageResult(tag=tag, built=True, log_path=log_path)


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
        except _DOCKER_ERRORS as exc:
            error = _reason(exc) if error == "not found" else error
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


# ---------------------------------------------------------------- containers


@dataclass(frozen=True)
class FileEntry:
    """A file (or, with data None, a directory) sent to the container on its stdin."""

    path: str
    data: bytes | Path | None
    mode: int = 0o644
    uid: int = 0


@dataclass
class ContainerSpec:
    image: str
    name: str
    command: list[str]
    env: dict[str, str]
    labels: dict[str, str]
    memory_bytes: int
    cpus: float | None
    pids_limit: int
    firewall: bool
    source_dir: Path | None  # the repository's git directory, mounted read-only at /source


def process_labels(run_id: str, project: Path) -> dict[str, str]:
    """Labels that let a later run tell whether this run's orchestrator is still alive."""
    return {
        f"{LABEL}.run-id": run_id,
        f"{LABEL}.project": str(project),
        f"{LABEL}.host": socket.gethostname(),
        f"{LABEL}.pid": str(os.getpid()),
        f"{LABEL}.pid-start": _process_start(os.getpid()),
    }


def _process_start(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _orchestrator_alive(labels: Mapping[str, str]) -> bool:
    try:
        pid = int(labels.get(f"{LABEL}.pid", ""))
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return _process_start(pid) == labels.get(f"{LABEL}.pid-start", _process_start(pid))


def remove_orphans(client: docker.DockerClient) -> list[str]:
    """Remove containers of this host's runs whose agent-worker process is gone; their names."""
    removed = []
    try:
        found = client.containers.list(
            all=True, filters={"label": [f"{LABEL}.host={socket.gethostname()}"]}
        )
        for container in found:
            if not _orchestrator_alive(container.labels):
                container.remove(force=True, v=True)
                removed.append(str(container.name))
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"cannot list or remove old agent containers: {_reason(exc)}") from None
    return removed


def create_container(client: docker.DockerClient, spec: ContainerSpec) -> Container:
    """Create (not start) the agent container with its limits; its stdin stays open for input."""
    # SETUID/SETGID/SETPCAP to drop to the agent user for good; KILL so docker-init (root) can
    # pass a stop signal on to it. The agent itself keeps none of them.
    caps = ["SETUID", "SETGID", "SETPCAP", "KILL"]
    caps += ["NET_ADMIN", "NET_RAW"] if spec.firewall else []
    mounts = []
    if spec.source_dir is not None:
        mounts.append(Mount("/source", str(spec.source_dir), type="bind", read_only=True))
    try:
        return client.containers.create(
            spec.image,
            spec.command,
            name=spec.name,
            user="root",
            init=True,
            stdin_open=True,  # with StdinOnce, which docker-py sets: EOF after our input
            environment=spec.env,
            labels=spec.labels,
            working_dir="/workspace",
            cap_drop=["ALL"],
            cap_add=caps,
            security_opt=["no-new-privileges"],
            mem_limit=spec.memory_bytes,
            memswap_limit=spec.memory_bytes,
            nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
            pids_limit=spec.pids_limit,
            tmpfs={
                "/workspace": f"size={spec.memory_bytes},uid={AGENT_UID},gid={AGENT_UID},"
                "mode=0755,exec"
            },
            mounts=mounts,
            network_mode="bridge",
            # agent-worker keeps the output itself (agent.jsonl, container.log); the engine's
            # json-file copy doubled the disk use and capped output at a fifth of the speed.
            log_config=LogConfig(type=LogConfig.types.NONE),
        )
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"Docker refused to create the agent container: {_reason(exc)}") from None


def _files_tar(files: list[FileEntry]) -> IO[bytes]:
    """A tar of the run's input files, spooled to disk (a repository bundle can be large)."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it)
    with tarfile.open(fileobj=spool, mode="w") as tar:
        for entry in files:
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            info.mode, info.uid, info.gid = entry.mode, entry.uid, entry.uid
            if entry.data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(entry.data, Path):
                info.size = entry.data.stat().st_size
                with entry.data.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    spool.seek(0)
    return spool


def start(container: Container) -> None:
    try:
        container.start()
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"Docker could not start the agent container: {_reason(exc)}") from None


class ContainerIO(threading.Thread):
    """The container's standard streams, attached before it starts (a late attach misses what
    it prints first). The run's input files go in on stdin as one tar archive, which also keeps
    secrets out of the container's configuration and spares an archive upload (about 50 ms);
    stdout and stderr go to the callbacks until the container ends."""

    def __init__(
        self,
        container: Container,
        files: list[FileEntry],
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
    ) -> None:
        super().__init__(name="container-io", daemon=True)
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self.error: BaseException | None = None
        self._input = _files_tar(files)
        try:
            self._socket = _api(container).attach_socket(
                _id(container), params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
        except _DOCKER_ERRORS as exc:
            self._input.close()
            raise DockerError(f"cannot attach to the agent container: {_reason(exc)}") from None

    def _send(self) -> None:
        raw = getattr(self._socket, "_sock", self._socket)  # a SocketIO wraps the socket
        try:
            while chunk := self._input.read(1 << 16):
                raw.sendall(chunk)
            with suppress(OSError, AttributeError):
                raw.shutdown(socket.SHUT_WR)  # end of input; tar stops at its end marker anyway
        except OSError as exc:
            self.error = self.error or exc

    def run(self) -> None:
        sender = threading.Thread(target=self._send, name="container-stdin", daemon=True)
        sender.start()
        try:
            frames = frames_iter(self._socket, tty=False)  # type: ignore[no-untyped-call]  # untyped in types-docker
            for stream, data in frames:
                (self._on_stdout if stream == STDOUT else self._on_stderr)(data)
        except Exception as exc:  # noqa: BLE001 (handed to the main thread, which reports it)
            self.error = exc
        finally:
            sender.join(5.0)
            self._input.close()
            with suppress(OSError):
                self._socket.close()


def _api(container: Container) -> docker.APIClient:
    assert container.client is not None, "containers here always come from a client"
    return container.client.api


def _id(container: Container) -> str:
    assert container.id is not None, "a created container has an id"
    return container.id


def signal(container: Container, name: str) -> None:
    """Send a signal; a container that already stopped is not an error."""
    with suppress(*_DOCKER_ERRORS):
        container.kill(signal=name)


@dataclass(frozen=True)
class ExitInfo:
    status_code: int
    oom_killed: bool
    error: str | None


def wait(container: Container, timeout_s: float) -> ExitInfo | None:
    """The container's exit, or None if it is still running after timeout_s."""
    try:
        result: Mapping[str, Any] = dict(container.wait(timeout=timeout_s))
        state = _api(container).inspect_container(_id(container))["State"]
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
        return None  # a read timeout: still running
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"lost track of the agent container: {_reason(exc)}") from None
    return ExitInfo(
        status_code=int(result.get("StatusCode", -1)),
        oom_killed=bool(state.get("OOMKilled")),
        error=(result.get("Error") or {}).get("Message") or state.get("Error") or None,
    )


def copy_out(container: Container, path: str, dest: Path) -> bool:
    """Extract a directory of a (stopped) container into dest; False when it is not there."""
    try:
        stream, _ = container.get_archive(path)
        with tempfile.TemporaryFile() as buffer:
            for chunk in stream:
                buffer.write(chunk)
            buffer.seek(0)
            with tarfile.open(fileobj=buffer) as tar:
                tar.extractall(dest, filter="data")
    except docker.errors.NotFound:
        return False
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"cannot copy results out of the container: {_reason(exc)}") from None
    return True


def remove(container: Container) -> None:
    """Remove the container, running or not; a container already gone is fine."""
    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        pass
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"cannot remove container {container.name}: {_reason(exc)}") from None
