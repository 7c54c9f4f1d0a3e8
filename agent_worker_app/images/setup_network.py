"""The network of the setup commands (repository code, run by the environment layer's build):
open to the internet, as setup needs its package registries, but closed to private, loopback,
link-local and shared addresses (a cloud runner's metadata service, the host's services, the
engine's own TCP port) unless the user allows them (--setup-allow-net).

A container of agent-worker's own, root with NET_ADMIN, from the system layer (which has
iptables), closes its network namespace (container/setup-firewall.sh); the build runs its steps
in that namespace (network mode container:<id>), without the capability to change its rules. It
lives as long as agent-worker's attach to its stdin: closed when the build is over, or by the
kernel when agent-worker dies, and the engine then removes it."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import docker
from docker.utils.socket import frames_iter

from agent_worker_app.engines.docker.client import DOCKER_ERRORS, engine_addresses, reason
from agent_worker_app.errors import ImageBuildError
from agent_worker_app.images.layers import CONTAINER_DIR, SETUP_FIREWALL

SCRIPT = CONTAINER_DIR / SETUP_FIREWALL
LABEL = "agent-worker.setup-network"


@contextmanager
def firewalled(client: docker.DockerClient, image: str, *, allow: tuple[str, ...]) -> Iterator[str]:
    """The network mode for a build whose steps must not reach private addresses: a closed
    namespace held by a container from image (which has iptables) while the block runs."""
    # as networks (host bits cleared), which is what iptables takes
    allowed = [str(ipaddress.ip_network(cidr, strict=False)) for cidr in allow]
    args = [part for cidr in allowed for part in ("--allow", cidr)]
    args += [
        part
        for address in engine_addresses(getattr(client.api, "engine", None))
        for part in ("--deny", address)
    ]
    try:
        created = client.api.create_container(
            image,
            ["/bin/bash", "-c", SCRIPT.read_text(encoding="utf-8"), "setup-firewall", *args],
            user="0:0",
            stdin_open=True,  # and StdinOnce: the end of our attach is the end of its stdin
            labels={LABEL: "1"},
            host_config=client.api.create_host_config(
                auto_remove=True,
                cap_drop=["ALL"],
                cap_add=["NET_ADMIN", "NET_RAW"],
                security_opt=["no-new-privileges"],
                pids_limit=16,
                # its rules must act on the namespace: never under a runtime whose network is
                # not the kernel's (gVisor), whatever the engine's default
                runtime="runc",
            ),
        )
    except DOCKER_ERRORS as exc:
        raise ImageBuildError(
            f"cannot create the setup network's container: {reason(exc)}"
        ) from None
    ident = str(created["Id"])
    held: Any = None
    try:
        try:
            held = client.api.attach_socket(
                ident, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            client.api.start(ident)
        except DOCKER_ERRORS as exc:
            raise ImageBuildError(
                f"cannot start the setup network's container: {reason(exc)}"
            ) from None
        _wait_ready(held)
        yield f"container:{ident}"
    finally:
        if held is not None:
            _close(held)
        with suppress(*DOCKER_ERRORS):
            client.api.remove_container(ident, force=True)


def _wait_ready(held: Any) -> None:
    """Until the script says ready on stdout; its stderr's last line is the error otherwise."""
    out = err = b""
    for stream, data in frames_iter(held, tty=False):  # type: ignore[no-untyped-call]  # untyped docker-py
        if stream == 1:
            out += data
            if b"ready\n" in out:
                return
        else:
            err += data
    last = err.decode("utf-8", "replace").strip().splitlines()
    raise ImageBuildError(
        "the setup network could not be closed: "
        + (last[-1].removeprefix("agent-worker: error: ") if last else "its container ended")
    )


def _close(held: Any) -> None:
    raw = getattr(held, "_sock", held)
    with suppress(OSError):
        raw.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        held.close()
