"""docker-py's client of a Docker engine (the local socket, TLS, ssh): what images are built,
pulled and pushed with (images/build.py), and what other backends on Docker use.
A task's container never goes through docker-py: api.py."""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
import warnings
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING

import docker
import docker.errors
import docker.tls
import requests
import requests.adapters
import requests.exceptions
import urllib3.connection
import urllib3.connectionpool
from urllib3.exceptions import InsecureRequestWarning

from agent_worker_app.engines.docker.api import SSHTransport, reach, ssh_command
from agent_worker_app.engines.docker.endpoint import Engine

if TYPE_CHECKING:
    from requests.sessions import _Settings


DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


# ---------------------------------------------------------------- the engine


def connect(docker_host: str | None) -> docker.DockerClient:
    """docker-py's client for the engine resolve_engine() chooses, reached and checked as a run
    reaches it (backend.reach)."""
    where, api = reach(docker_host)
    api.close()
    return client_for(where)


def reason(exc: BaseException) -> str:
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
        self.engine = engine
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


def bridge_gateway(client: docker.DockerClient) -> str:
    """The host's address on the default bridge, as containers see it."""
    config = client.api.inspect_network("bridge")["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


def engine_addresses(engine: Engine | None) -> tuple[str, ...]:
    """The addresses of the engine's own host, for an engine reached over the network (tcp://,
    ssh://): what a build's steps must never reach (its port is root on that host). None for a
    local socket, which no container reaches by address."""
    url = urllib.parse.urlsplit(engine.url) if engine is not None and engine.url else None
    if url is None or url.scheme not in ("tcp", "ssh", "http", "https") or not url.hostname:
        return ()
    try:
        found = socket.getaddrinfo(url.hostname, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return ()
    return tuple(sorted({str(info[4][0]).split("%")[0] for info in found}))


def client_for(engine: Engine) -> docker.DockerClient:
    """docker-py's client for an engine already reached (api.EngineAPI's ping): no ping of its
    own. Only images are built, pulled and pushed through it."""
    ssh = _SSHAdapter(str(engine.url), timeout=120) if engine.ssh else None
    return _Client(_EngineAPI(engine, ssh, timeout=120))
