"""Which Docker engine a run uses, chosen as the docker CLI chooses it (--remote-docker /
DOCKER_HOST with the DOCKER_TLS* variables, else the current Docker context, else the local
socket): plain values, no client, so that choosing imports nothing of docker-py."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from agent_worker_app.errors import DockerError

LOCAL_SOCKET = "/var/run/docker.sock"

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
    def socket_path(self) -> str | None:
        """The local socket's path, for a unix:// engine (or none named)."""
        if self.url is None:
            return LOCAL_SOCKET
        return self.url.removeprefix("unix://") if self.url.startswith("unix://") else None

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


def advice(engine: Engine) -> str:
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


def is_local(docker_host: str | None) -> bool:
    """True when the engine shares this machine's filesystem: its socket is a local file."""
    try:
        return resolve_engine(docker_host).local
    except DockerError:
        return False
