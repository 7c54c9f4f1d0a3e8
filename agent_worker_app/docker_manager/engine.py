"""docker-py's side of a Docker engine: the connection (the local socket, TLS, ssh), images, and
containers. DockerBackend (docker_backend.py) uses it; the Swarm backend (swarm.py) too."""

from __future__ import annotations

import fcntl
import logging
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import docker
import docker.errors
import docker.tls
import requests
import requests.adapters
import requests.exceptions
import urllib3.connection
import urllib3.connectionpool
from docker.models.containers import Container
from docker.utils import parse_repository_tag
from urllib3.exceptions import InsecureRequestWarning

from agent_worker_app.agents.base_agent import ImageLayer
from agent_worker_app.backend import (
    ExitInfo,
    LostTask,
    TaskSpec,
)
from agent_worker_app.docker_manager import orphans
from agent_worker_app.docker_manager.container_config import container_config
from agent_worker_app.docker_manager.endpoint import Engine, advice, resolve_engine
from agent_worker_app.errors import DockerError, ImageBuildError
from agent_worker_app.task_spec import LABEL

if TYPE_CHECKING:
    from requests.sessions import _Settings


IMAGE_REPO = "agent-worker"
_DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
log = logging.getLogger("agent_worker")


# ---------------------------------------------------------------- the engine


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
            f"cannot reach the Docker engine at {engine.describe()} ({reason}): {advice(engine)}"
        ) from None
    return _Client(api)


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__


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


def remove_orphans(
    client: docker.DockerClient, now: float | None = None, *, project: str | None = None
) -> list[str]:
    """Remove the containers of runs that are gone (orphans.note), of one project's runs when
    given; a line for each."""
    try:
        found = client.containers.list(
            all=True, filters={"label": orphans.scope(project)}, ignore_removed=True
        )
        return orphans.sweep(
            [(c.name or str(c.id), c.labels, c.status == "running") for c in found],
            lambda name: _remove_if_there(client, name),
            now,
        )
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"cannot list or remove old agent containers: {_reason(exc)}") from None


def _remove_if_there(client: docker.DockerClient, name: str) -> bool:
    """Another agent-worker may remove the same container meanwhile: gone, or its removal
    under way, is no error (False: not ours to report)."""
    try:
        client.api.remove_container(name, force=True, v=True)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            return False
        raise
    return True


def create_container(client: docker.DockerClient, spec: TaskSpec) -> Container:
    """Create (not start) the agent container (container_config: its limits, its stdin open)."""
    try:
        # the same body local_api sends (docker-py's create_container would make its own)
        made = client.api.create_container_from_config(  # type: ignore[no-untyped-call]
            container_config(spec), name=spec.name
        )
        return client.containers.get(made["Id"])
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"Docker refused to create the agent container: {_reason(exc)}") from None


def start(container: Container) -> None:
    try:
        container.start()
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"Docker could not start the agent container: {_reason(exc)}") from None


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


def lost_tasks(client: docker.DockerClient, project: str) -> list[LostTask]:
    """This project's containers, from this host, whose agent-worker is gone."""
    try:
        found = client.containers.list(  # one removed meanwhile is no error
            all=True, filters={"label": [f"{LABEL}.project={project}"]}, ignore_removed=True
        )
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"cannot list old agent containers: {_reason(exc)}") from None
    return orphans.lost(
        [(c, dict(c.labels), c.status in ("exited", "dead")) for c in found],
        lambda container: wait(container, 5.0),
    )


def attach(container: Container) -> Any:
    """The container's attach socket (stdin, stdout, stderr), made before it starts."""
    try:
        return _api(container).attach_socket(
            _id(container), params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        )
    except _DOCKER_ERRORS as exc:
        raise DockerError(f"cannot attach to the agent container: {_reason(exc)}") from None


def client_for(engine: Engine) -> docker.DockerClient:
    """A client for an engine already reached (local_api's ping): no ping of its own."""
    return _Client(_EngineAPI(engine, None, timeout=120))


class EngineContainers:
    """A task's container through docker-py, on any engine (local_containers.LocalContainers
    does the same on the local socket without it)."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def create(self, spec: TaskSpec) -> Container:
        return create_container(self.client, spec)

    def attach(self, container: Container) -> Any:
        return attach(container)

    def start(self, container: Container) -> None:
        start(container)

    def wait(self, container: Container, timeout_s: float) -> ExitInfo | None:
        return wait(container, timeout_s)

    def signal(self, container: Container, name: str) -> None:
        signal(container, name)

    def copy_out(self, container: Container, path: str, dest: Path) -> bool:
        return copy_out(container, path, dest)

    def remove(self, container: Container) -> None:
        remove(container)

    def lost_tasks(self, project: str) -> list[LostTask]:
        return lost_tasks(self.client, project)

    def remove_orphans(self) -> list[str]:
        return remove_orphans(self.client)
