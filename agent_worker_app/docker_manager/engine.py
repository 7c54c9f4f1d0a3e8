"""docker-py's side of a Docker engine: the connection (the local socket, TLS, ssh) and images.
DockerBackend (docker_backend.py) builds and pulls images through it; the Swarm backend
(swarm.py) uses it for services. A task's container never goes through docker-py: api.py."""

from __future__ import annotations

import fcntl
import logging
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import docker.tls
import requests
import requests.adapters
import requests.exceptions
import urllib3.connection
import urllib3.connectionpool
from docker.utils import parse_repository_tag
from urllib3.exceptions import InsecureRequestWarning

from agent_worker_app.agents.base_agent import ImageLayer
from agent_worker_app.docker_manager.api import SSHTransport, ssh_command
from agent_worker_app.docker_manager.endpoint import Engine, advice, resolve_engine
from agent_worker_app.errors import DockerError, ImageBuildError

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


class _SSHConnection(urllib3.connection.HTTPConnection):
    """One HTTP connection to the engine through its own ssh process (api.SSHTransport)."""

    def __init__(self, ssh: SSHTransport, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._ssh = ssh

    def connect(self) -> None:
        self.sock = self._ssh.open(self.timeout if isinstance(self.timeout, int | float) else 120)


class _SSHPool(urllib3.connectionpool.HTTPConnectionPool):
    def __init__(self, ssh: SSHTransport, timeout: int) -> None:
        super().__init__("localhost", timeout=timeout, maxsize=10)
        self._ssh = ssh
        self._seconds = timeout

    def _new_conn(self) -> _SSHConnection:
        return _SSHConnection(self._ssh, self._seconds)


class _SSHAdapter(requests.adapters.HTTPAdapter):
    """Every request to an ssh:// engine goes through one pool of ssh connections."""

    def __init__(self, url: str, *, timeout: int) -> None:
        self._ssh = SSHTransport(ssh_command(url))
        self._pool = _SSHPool(self._ssh, timeout)
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
        self._ssh.close()

    def failure(self) -> str | None:
        """What the last ssh that failed said."""
        return self._ssh.failure()


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


def client_for(engine: Engine) -> docker.DockerClient:
    """docker-py's client for an engine already reached (api.EngineAPI's ping): no ping of its
    own. Only images are built, pulled and pushed through it."""
    ssh = _SSHAdapter(str(engine.url), timeout=120) if engine.ssh else None
    return _Client(_EngineAPI(engine, ssh, timeout=120))
