"""Everything agent-worker asks of Docker: the only package that imports docker. This module
holds the engine connection, images and containers (DockerBackend); other engines on Docker's API
(a Swarm) get modules of their own beside it."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import docker
import docker.errors
import docker.tls
import requests
import requests.adapters
import requests.exceptions
import urllib3.connection
import urllib3.connectionpool
from docker.models.containers import Container
from docker.types import LogConfig, Mount
from docker.utils import parse_repository_tag
from docker.utils.socket import STDOUT
from urllib3.exceptions import InsecureRequestWarning

from agent_worker_app.agents.base_agent import ImageLayer
from agent_worker_app.backend import (
    ACCOUNT_FILE,
    RESULT_DIR,
    ExitInfo,
    FileEntry,
    ImageResult,
    LostTask,
    Task,
    TaskSpec,
)
from agent_worker_app.docker_manager.swarm_io import FramedStderr, ResultFrames, nonce_of
from agent_worker_app.errors import DockerError, ImageBuildError
from agent_worker_app.task_spec import LABEL, process_start

if TYPE_CHECKING:
    from requests.sessions import _Settings

    from agent_worker_app.image_layers import ProjectImage

IMAGE_REPO = "agent-worker"
AGENT_UID = 1000
_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
log = logging.getLogger("agent_worker")


# ---------------------------------------------------------------- the engine


# The engine's values are NamedTuples, not dataclasses: made at import on every run, they cost
# a tenth (0.1 ms against 1.5 ms each).


class EngineTLS(NamedTuple):
    """TLS to a tcp:// engine: its certificate verified (against ca, else the system's CAs) or
    not; a client certificate and key when there are both."""

    verify: bool
    ca: str | None = None
    cert: tuple[str, str] | None = None


class Engine(NamedTuple):
    """The Docker engine a run uses, chosen as the docker CLI chooses it."""

    url: str | None  # None: the local socket
    tls: EngineTLS | None = None
    context: str | None = None  # the Docker context it comes from, if any
    chosen_by: str = ""  # what named that context

    @property
    def local(self) -> bool:
        """Whether it shares this machine's filesystem: its socket is a local file."""
        return self.url is None or self.url.startswith("unix://")

    @property
    def ssh(self) -> bool:
        return bool(self.url and self.url.startswith("ssh://"))

    def describe(self) -> str:
        where = self.url or "the local socket"
        if self.tls is not None:
            where += " over TLS" if self.tls.verify else " over unverified TLS"
        if self.context is not None:
            where += f" of Docker context {self.context!r} ({self.chosen_by})"
        return where


def resolve_engine(docker_host: str | None, environ: Mapping[str, str] = os.environ) -> Engine:
    """docker_host (--remote-docker or DOCKER_HOST) with the DOCKER_TLS* variables; else the
    current Docker context (DOCKER_CONTEXT, else currentContext in $DOCKER_CONFIG/config.json);
    else the local socket. A context named "default" is the local socket."""
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    config_dir = Path(environ.get("DOCKER_CONFIG") or home / ".docker")
    if docker_host:
        tcp = docker_host.startswith(("tcp://", "https://"))
        return Engine(docker_host, _env_tls(environ, config_dir) if tcp else None)
    name, chosen_by = environ.get("DOCKER_CONTEXT", ""), "DOCKER_CONTEXT"
    if not name:
        config_file = config_dir / "config.json"
        name, chosen_by = _current_context(config_file), f"currentContext in {config_file}"
    if not name or name == "default":
        return Engine(None)
    return _context_engine(name, chosen_by, config_dir)


def _env_tls(environ: Mapping[str, str], config_dir: Path) -> EngineTLS | None:
    """TLS as the docker CLI reads it: DOCKER_TLS_VERIFY (verified) or DOCKER_TLS (not), with
    ca.pem, cert.pem and key.pem in DOCKER_CERT_PATH (by default the Docker config directory)."""
    verify = bool(environ.get("DOCKER_TLS_VERIFY"))
    if not (verify or environ.get("DOCKER_TLS")):
        return None
    cert_path = environ.get("DOCKER_CERT_PATH")
    if cert_path and not Path(cert_path).is_dir():
        raise DockerError(
            f"DOCKER_CERT_PATH={cert_path} is not a directory: point it at the directory of the "
            "engine's ca.pem and your cert.pem and key.pem"
        )
    return _tls_files(Path(cert_path) if cert_path else config_dir, verify=verify)


def _tls_files(directory: Path, *, verify: bool) -> EngineTLS:
    ca, cert, key = (directory / name for name in ("ca.pem", "cert.pem", "key.pem"))
    return EngineTLS(
        verify=verify,
        ca=str(ca) if verify and ca.is_file() else None,
        cert=(str(cert), str(key)) if cert.is_file() and key.is_file() else None,
    )


def _current_context(config_file: Path) -> str:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""  # none, or one the docker CLI too only warns about
    name = config.get("currentContext") if isinstance(config, dict) else None
    return name if isinstance(name, str) else ""


def _context_engine(name: str, chosen_by: str, config_dir: Path) -> Engine:
    """A context as `docker context create` stores it: contexts/meta/<sha256 of the name>/meta.json
    and its TLS material in contexts/tls/<the same>/docker/."""
    key = hashlib.sha256(name.encode()).hexdigest()
    meta_file = config_dir / "contexts" / "meta" / key / "meta.json"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DockerError(
            f"there is no Docker context {name!r} ({chosen_by}): `docker context ls` lists them; "
            "choose one with `docker context use` or DOCKER_CONTEXT"
        ) from None
    except (OSError, ValueError) as exc:
        raise DockerError(f"cannot read Docker context {name!r} ({meta_file}): {exc}") from None
    endpoints = meta.get("Endpoints") if isinstance(meta, dict) else None
    endpoint = endpoints.get("docker") if isinstance(endpoints, dict) else None
    if not isinstance(endpoint, dict):
        raise DockerError(f"Docker context {name!r} ({meta_file}) has no Docker endpoint")
    host = str(endpoint.get("Host") or "") or None
    skip_verify = bool(endpoint.get("SkipTLSVerify"))
    tls_dir = config_dir / "contexts" / "tls" / key / "docker"
    tls = None
    if host and host.startswith(("tcp://", "https://")) and (skip_verify or tls_dir.is_dir()):
        tls = _tls_files(tls_dir, verify=not skip_verify)
    return Engine(host, tls, context=name, chosen_by=chosen_by)


def connect(docker_host: str | None) -> docker.DockerClient:
    """A client for the engine resolve_engine() chooses, checked with a ping."""
    engine = resolve_engine(docker_host)
    ssh = None
    try:
        if engine.ssh:
            ssh = _SSHAdapter(str(engine.url), timeout=120)
        api = _EngineAPI(engine, ssh, timeout=120)
        api.ping()
    except _DOCKER_ERRORS as exc:
        reason = (ssh.failure() if ssh else None) or _reason(exc)
        if "HTTP request to an HTTPS server" in reason:
            reason += (
                "; the engine speaks TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to the "
                "directory of its ca.pem and your cert.pem and key.pem"
            )
        raise DockerError(
            f"cannot reach the Docker engine at {engine.describe()} ({reason}): {_advice(engine)}"
        ) from None
    return _Client(api)


def _advice(engine: Engine) -> str:
    if engine.ssh:
        return (
            "check that `ssh HOST docker version` works from here "
            "(with a key or an agent, and the host's key known)"
        )
    if engine.context is not None:
        return (
            "start that engine, or choose another Docker context (`docker context use`, "
            "DOCKER_CONTEXT) or engine (--remote-docker / DOCKER_HOST)"
        )
    return "start Docker, or point --remote-docker / DOCKER_HOST at a running engine"


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__


def is_local(docker_host: str | None) -> bool:
    """True when the engine shares this machine's filesystem: its socket is a local file."""
    try:
        return resolve_engine(docker_host).local
    except DockerError:
        return False


class _Client(docker.DockerClient):
    """docker-py's friendly client around an API client made here."""

    def __init__(self, api: docker.APIClient) -> None:  # the parent's would make another
        self.api = api


class _EngineAPI(docker.APIClient):
    """docker-py's API client for an Engine: ssh:// through the system's ssh client, and the
    engine's own CA winning over REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE, which requests otherwise
    puts before a session's CA (a proxy's CA bundle there failed every TLS engine)."""

    def __init__(self, engine: Engine, ssh: _SSHAdapter | None, *, timeout: int) -> None:
        self._ssh = ssh
        tls: bool | docker.tls.TLSConfig = False
        if engine.tls is not None:
            if not engine.tls.verify:  # chosen by the user (DOCKER_TLS, SkipTLSVerify)
                warnings.filterwarnings("ignore", category=InsecureRequestWarning)
            tls = docker.tls.TLSConfig(
                client_cert=engine.tls.cert, ca_cert=engine.tls.ca, verify=engine.tls.verify
            )
        # For ssh, docker-py sets up an adapter for this socket which get_adapter never hands out.
        base_url = "unix:///var/run/docker.sock" if ssh else engine.url
        super().__init__(base_url=base_url, tls=tls, timeout=timeout)

    def get_adapter(self, url: str) -> requests.adapters.BaseAdapter:
        return self._ssh if self._ssh is not None else super().get_adapter(url)

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: MutableMapping[str, str] | None,
        stream: bool | None,
        verify: bool | str | None,
        cert: str | tuple[str, str] | None,
    ) -> _Settings:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if isinstance(self.verify, str):  # the engine's CA file
            settings["verify"] = self.verify
        return settings

    def close(self) -> None:
        super().close()
        if self._ssh is not None:
            self._ssh.close()


def _ssh_command(url: str) -> list[str]:
    """The docker CLI's command for an ssh:// engine: `docker system dial-stdio` on the host,
    the user's own ssh configuration, keys, agent and known hosts deciding the rest."""
    if shutil.which("ssh") is None:
        raise DockerError(
            f"{url} needs the OpenSSH client, ssh, on PATH: install it "
            "(Debian and Ubuntu: apt-get install openssh-client)"
        )
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or parts.path not in ("", "/") or parts.query:
        raise DockerError(f"{url} is not an ssh engine address: use ssh://[USER@]HOST[:PORT]")
    if parts.password is not None:
        raise DockerError(
            f"a password in {parts.scheme}:// is not supported: use a key or an agent"
        )
    command = ["ssh", "-T", "-o", "ConnectTimeout=30"]
    command += ["-l", parts.username] if parts.username else []
    command += ["-p", str(port)] if port else []
    return [*command, "--", parts.hostname, "docker", "system", "dial-stdio"]


class _SSHConnection(urllib3.connection.HTTPConnection):
    """One HTTP connection to the engine through its own ssh process, whose stdin and stdout are
    the other end of a socket pair: this end is an ordinary socket (timeouts, half-close, the
    attach stream), with none of paramiko's import cost."""

    def __init__(self, command: list[str], timeout: float, failures: list[str]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._command = command
        self._failures = failures
        self._process: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None

    def connect(self) -> None:
        ours, theirs = socket.socketpair()
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        with theirs:
            # In its own session: a Ctrl-C at the terminal is agent-worker's to handle (it stops
            # the container through these very connections), not ssh's.
            self._process = subprocess.Popen(
                self._command,
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=self._errors,
                start_new_session=True,
            )
        ours.settimeout(self.timeout if isinstance(self.timeout, int | float) else None)
        self.sock = ours

    def close(self) -> None:
        super().close()  # the end of ssh's input: it ends, and the engine drops the connection
        process, self._process = self._process, None
        if process is not None:
            try:
                code = process.wait(1.0)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            if code > 0 and self._errors is not None:
                self._errors.seek(0)
                said = self._errors.read().decode(errors="replace").strip().splitlines()
                self._failures.append(f"ssh: {said[-1].strip()}" if said else f"ssh exit {code}")
        if self._errors is not None:
            self._errors.close()
            self._errors = None


class _SSHPool(urllib3.connectionpool.HTTPConnectionPool):
    def __init__(self, command: list[str], timeout: int, failures: list[str]) -> None:
        super().__init__("localhost", timeout=timeout, maxsize=10)
        self._command = command
        self._seconds = timeout
        self._failures = failures

    def _new_conn(self) -> _SSHConnection:
        return _SSHConnection(self._command, self._seconds, self._failures)


class _SSHAdapter(requests.adapters.HTTPAdapter):
    """Every request to an ssh:// engine goes through one pool of ssh connections."""

    def __init__(self, url: str, *, timeout: int) -> None:
        self._failures: list[str] = []
        self._pool = _SSHPool(_ssh_command(url), timeout, self._failures)
        super().__init__()

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: bool | str | None,
        proxies: Mapping[str, str] | None = None,
        cert: tuple[str, str] | str | None = None,
    ) -> urllib3.connectionpool.ConnectionPool:
        return self._pool

    def request_url(
        self, request: requests.PreparedRequest, proxies: Mapping[str, str] | None
    ) -> str:
        return request.path_url

    def close(self) -> None:
        super().close()
        self._pool.close()

    def failure(self) -> str | None:
        """What the last ssh that failed said."""
        return self._failures[-1] if self._failures else None


def bridge_gateway(client: docker.DockerClient) -> str:
    """The host's address on the default bridge, as containers see it."""
    config = client.api.inspect_network("bridge")["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    import ipaddress

    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


# ---------------------------------------------------------------- image


def agent_image_tag(
    client: docker.DockerClient, layer: ImageLayer, *, base_image: str, ca_certs: tuple[Path, ...]
) -> str:
    """The tag prepare_image gives this agent's image on this base with no project environment
    (the base must be present)."""
    from agent_worker_app.docker_manager import layers
    from agent_worker_app.image_layers import ProjectImage

    return layers.plan(
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
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"cannot list images: {_reason(exc)}") from None


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


def _orchestrator_alive(labels: Mapping[str, str]) -> bool:
    """Whether the agent-worker process that made a container (on this host) still runs."""
    try:
        pid = int(labels.get(f"{LABEL}.pid", ""))
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return process_start(pid) == labels.get(f"{LABEL}.pid-start", process_start(pid))


FRAME_MAX = 4 << 20  # result files up to this size come back in the output, not copied out
KEEP_LOST_S = 7 * 86400  # a lost run's container waits this long for its repository's next run


def _orphan_note(labels: Mapping[str, str], running: bool, now: float) -> str | None:
    """Why a container is to be removed, or None. A running one past its run's deadline is
    wedged (the task stops its agent by itself before then); an exited one of a lost run waits
    KEEP_LOST_S for its repository's next run to recover its work, then is given up."""
    try:
        deadline = float(labels.get(f"{LABEL}.deadline", "0"))
    except ValueError:
        deadline = 0.0
    if running:
        return "still running past its deadline" if deadline < now else None
    mine = labels.get(f"{LABEL}.host") == socket.gethostname()
    if mine and _orchestrator_alive(labels):
        return None
    if deadline + KEEP_LOST_S >= now:
        return None
    branch = labels.get(f"{LABEL}.branch", "?")
    project = labels.get(f"{LABEL}.project", "?")
    return (
        f"nobody recovered it within 7 days: the agent's work for branch {branch} of "
        f"{project} is lost"
    )


def remove_orphans(
    client: docker.DockerClient, now: float | None = None, *, project: str | None = None
) -> list[str]:
    """Remove the containers of runs that are gone (see _orphan_note), of one project's runs
    when given; a line for each."""
    removed = []
    now = time.time() if now is None else now
    scope = [f"{LABEL}.run-id"] + ([f"{LABEL}.project={project}"] if project else [])
    try:
        # Another agent-worker may remove the same containers meanwhile: one gone between the
        # listing and its removal is no error, and not ours to report.
        found = client.containers.list(all=True, filters={"label": scope}, ignore_removed=True)
        for container in found:
            note = _orphan_note(container.labels, container.status == "running", now)
            if note is not None:
                try:
                    container.remove(force=True, v=True)
                except docker.errors.NotFound:
                    continue
                except docker.errors.APIError as exc:
                    if exc.status_code == 409:  # its removal is under way already
                        continue
                    raise
                removed.append(f"removed container {container.name} ({note})")
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"cannot list or remove old agent containers: {_reason(exc)}") from None
    return removed


def create_container(client: docker.DockerClient, spec: TaskSpec) -> Container:
    """Create (not start) the agent container with its limits; its stdin stays open for input."""
    # SETUID/SETGID/SETPCAP to drop to the agent user for good; KILL so docker-init (root) can
    # pass a stop signal on to it. The agent itself keeps none of them.
    caps = ["SETUID", "SETGID", "SETPCAP", "KILL"]
    caps += ["NET_ADMIN", "NET_RAW"] if spec.firewall else []
    mounts = [
        Mount(f"/source/objects-{i}", str(path), type="bind", read_only=True)
        for i, path in enumerate(spec.object_dirs)
    ]
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
            }
            if spec.workspace_tmpfs
            else {},
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
    stdout and stderr go to the callbacks until the container ends.

    Whether it still runs is its own event, not Thread.is_alive(): a Thread.join() cut short by
    Ctrl-C marks a running thread as finished (CPython 3.11), and the result line that follows
    the stop would be missed."""

    def __init__(
        self,
        container: Container,
        files: list[FileEntry],
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        on_end: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name="container-io", daemon=True)
        self._finished = threading.Event()
        self._on_end = on_end
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

    def is_alive(self) -> bool:
        return self.ident is not None and not self._finished.is_set()

    def join(self, timeout: float | None = None) -> None:
        self._finished.wait(timeout)

    def close(self) -> None:
        """Let go of the input and the attach of a container that never started."""
        self._input.close()
        with suppress(OSError):
            self._socket.close()

    def _send(self, raw: socket.socket) -> None:
        try:
            while chunk := self._input.read(1 << 16):
                raw.sendall(chunk)
            # No end of input: the container's tar stops at the archive's end marker, and the
            # rest of its stdin stays open for as long as this process holds the attach. Its
            # end tells the container that agent-worker is gone (killed, its host asleep), and
            # the container then stops the agent by itself. (On TLS a half-close would also
            # drop TLS itself, and the output would arrive as ciphertext.)
        except OSError as exc:
            self.error = self.error or exc

    def run(self) -> None:
        raw: socket.socket = getattr(self._socket, "_sock", self._socket)  # a SocketIO wraps it
        sender = None
        try:
            raw.settimeout(None)  # an agent may well be silent for longer than the API timeout
            if type(raw) is socket.socket:
                sender = threading.Thread(
                    target=self._send, args=(raw,), name="container-stdin", daemon=True
                )
                sender.start()
            else:  # TLS: one connection is never read and written by two threads at once; the
                self._send(raw)  # container prints nothing before it has read its input
            for stream, data in _frames(raw):
                (self._on_stdout if stream == STDOUT else self._on_stderr)(data)
        except Exception as exc:  # noqa: BLE001 (handed to the main thread, which reports it)
            self.error = self.error or exc
        finally:
            if sender is not None:
                sender.join(5.0)
            self._input.close()
            with suppress(OSError):
                self._socket.close()
            self._on_end()
            self._finished.set()


def _frames(raw: socket.socket) -> Iterator[tuple[int, bytes]]:
    """The (stream, data) frames of a non-TTY attach stream, as they arrive (a large frame in
    pieces). Read straight from the socket: a poll() before each read, as docker-py does, waits
    for the network while the TLS layer may already hold the rest of a record."""
    header = b""  # the start of a header cut between two reads
    stream, left = STDOUT, 0
    while chunk := raw.recv(1 << 16):
        if header:
            chunk, header = header + chunk, b""
        at, end = 0, len(chunk)
        while at < end:
            if left == 0:
                if end - at < 8:
                    header = chunk[at:]
                    break
                stream, left = chunk[at], int.from_bytes(chunk[at + 4 : at + 8], "big")
                at += 8
                continue
            take = min(left, end - at)
            yield stream, chunk[at : at + take]
            at, left = at + take, left - take


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


# ---------------------------------------------------------------- the Backend


class DockerBackend:
    """backend.Backend on a Docker engine, local or remote: inputs on the container's stdin,
    output through an attach made before it starts, the result copied out of it."""

    def __init__(self, client: docker.DockerClient, *, local: bool) -> None:
        self.client = client
        self.local = local  # bind mounts of this machine's paths work
        self._framed: dict[int, tuple[ResultFrames, FramedStderr]] = {}  # by id() of the Task

    def prepare_image(
        self,
        layer: ImageLayer,
        *,
        base_image: str,
        ca_certs: tuple[Path, ...],
        force: bool,
        log_dir: Path,
        on_line: Callable[[str], None],
        project: ProjectImage | None = None,
    ) -> ImageResult:
        from agent_worker_app.docker_manager import layers

        return layers.prepare(
            self.client,
            layer,
            base_image=base_image,
            ca_certs=ca_certs,
            force=force,
            log_dir=log_dir,
            on_line=on_line,
            project=project,
        )

    def create(self, spec: TaskSpec, inputs: list[FileEntry]) -> Task:
        # Small result files come back framed in the output (see FramedStderr), larger ones are
        # copied out of the stopped container.
        spec = replace(spec, env=spec.env | {"AW_FRAME_MAX": str(FRAME_MAX)})
        return Task(create_container(self.client, spec), list(inputs))

    def start(
        self, task: Task, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]
    ) -> ContainerIO:
        frames = ResultFrames(nonce_of(task.inputs))
        stderr = FramedStderr(frames, on_stderr)
        self._framed[id(task)] = (frames, stderr)
        io_thread = ContainerIO(task.handle, task.inputs, on_stdout, stderr.feed, stderr.end)
        try:
            start(task.handle)
        except DockerError:
            io_thread.close()
            raise
        io_thread.start()
        return io_thread

    def wait(self, task: Task, timeout_s: float) -> ExitInfo | None:
        return wait(task.handle, timeout_s)

    def signal(self, task: Task, name: str) -> None:
        signal(task.handle, name)

    def fetch_result(self, task: Task, dest: Path, *, account: bool = False) -> bool:
        found = False
        frames, stderr = self._framed.get(id(task), (None, None))
        if frames is not None and stderr is not None and stderr.complete:
            found = frames.extract(dest / "out")
            if found:
                log.info("result files: taken from the task's output")
            elif frames.broken:
                log.warning("result files: their frames in the output were broken")
        if not found:
            log.info("result files: copied out of the stopped container")
            found = copy_out(task.handle, RESULT_DIR, dest)
        if account:
            found = copy_out(task.handle, ACCOUNT_FILE, dest) or found
        return found

    def lost_tasks(self, project: str) -> list[LostTask]:
        lost = []
        try:
            found = self.client.containers.list(  # one removed meanwhile is no error
                all=True, filters={"label": [f"{LABEL}.project={project}"]}, ignore_removed=True
            )
        except _DOCKER_ERRORS as exc:
            raise DockerError(f"cannot list old agent containers: {_reason(exc)}") from None
        for container in found:
            labels = dict(container.labels)
            if labels.get(f"{LABEL}.host") != socket.gethostname() or _orchestrator_alive(labels):
                continue
            exit_info = None
            if container.status in ("exited", "dead"):
                exit_info = wait(container, 5.0)
            lost.append(LostTask(Task(container), labels, exit_info))
        return lost

    def node(self, task: Task) -> str | None:
        return None  # one engine: the report names no machine

    def remove(self, task: Task) -> None:
        frames, _ = self._framed.pop(id(task), (None, None))
        if frames is not None:
            frames.close()
        remove(task.handle)

    def remove_orphans(self) -> list[str]:
        return remove_orphans(self.client)
