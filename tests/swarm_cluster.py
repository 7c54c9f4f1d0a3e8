"""A real Docker Swarm for the swarm backend's tests and benchmark: a manager and two workers, each
a Docker engine in a container of the suite's engine (the recipe of DESIGN.md's remote engine),
and a registry from Debian's docker-registry package every node trusts. The suite's engine stays
out of swarm mode; the manager is drained, so tasks run on the workers."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import docker
from docker.types import Mount

NODE_DOCKERFILE = b"""ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      docker.io iptables ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
"""

REGISTRY_DOCKERFILE = b"""ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry \\
 && rm -rf /var/lib/apt/lists/* \\
 && printf '%s\\n' 'version: 0.1' 'storage:' '  filesystem:' \\
      '    rootdirectory: /var/lib/docker-registry' 'http:' '  addr: :5000' \\
      >/etc/docker/registry/config.yml
CMD ["docker-registry", "serve", "/etc/docker/registry/config.yml"]
"""

LABEL = "agent-worker-test"  # value: swarm


@dataclass(frozen=True)
class Node:
    name: str
    ip: str
    container: Any  # the container of the suite's engine that runs this node's engine

    @property
    def url(self) -> str:
        return f"tcp://{self.ip}:2375"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=300)


@dataclass(frozen=True)
class Swarm:
    manager: Node
    workers: tuple[Node, ...]
    registry: str  # HOST:PORT
    registry_container: Any

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.manager, *self.workers)

    def node_names(self) -> dict[str, str]:
        """Node id -> the node (its engine's host name)."""
        return {
            n.id: n.attrs["Description"]["Hostname"] for n in self.manager.client().nodes.list()
        }

    def leftovers(self) -> list[str]:
        """Everything agent-worker made that is still there, on any node."""
        manager = self.manager.client()
        found = [f"service {s.name}" for s in manager.services.list()]
        found += [f"config {c.name}" for c in manager.configs.list()]
        found += [f"secret {s.name}" for s in manager.secrets.list()]
        for node in self.nodes:
            found += [
                f"container {c.name} on {node.name}"
                for c in node.client().containers.list(all=True)
            ]
        return found


def _build(client: Any, dockerfile: bytes, tag: str, base_image: str) -> str:
    client.images.build(
        fileobj=io.BytesIO(dockerfile), tag=tag, buildargs={"BASE_IMAGE": base_image}, rm=True
    )
    return tag


def _wait(what: str, check: Any, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except docker.errors.DockerException:
            pass
        assert time.monotonic() < end, f"the swarm fixture: {what} never happened"
        time.sleep(0.5)


def _start_node(client: Any, name: str, image: str, registry: str, driver: str) -> Node:
    container = client.containers.run(
        image,
        [
            "dockerd",
            "-H",
            "unix:///var/run/docker.sock",
            "-H",
            "tcp://0.0.0.0:2375",
            "--tls=false",
            f"--storage-driver={driver}",
            f"--insecure-registry={registry}",
        ],
        name=f"agent-worker-test-swarm-{name}-{time.time_ns() % 10**8}",
        mounts=[Mount("/var/lib/docker", None, type="volume")],  # removed with the node
        detach=True,
        cap_add=["SYS_ADMIN", "NET_ADMIN", "MKNOD", "SYS_PTRACE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        cgroupns="host",
        volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
        labels={LABEL: "swarm"},
    )
    container.reload()
    node = Node(name, container.attrs["NetworkSettings"]["IPAddress"], container)
    _wait(f"the engine of {name} answering", lambda: node.client().ping())
    return node


@contextmanager
def swarm(client: Any, base_image: str, images: list[str]) -> Iterator[Swarm]:
    """A swarm whose manager holds images (loaded from the suite's engine: the runs push them);
    removed, every node and the registry with it, on the way out."""
    node_image = _build(client, NODE_DOCKERFILE, "agent-worker-test/swarm-node", base_image)
    registry_image = _build(client, REGISTRY_DOCKERFILE, "agent-worker-test/registry", base_image)
    driver = "overlay2" if client.info()["Driver"] == "overlay2" else "vfs"
    started: list[Any] = []
    try:
        registry = client.containers.run(
            registry_image,
            detach=True,
            labels={LABEL: "swarm"},
            name=f"agent-worker-test-registry-{time.time_ns() % 10**8}",
        )
        started.append(registry)
        registry.reload()
        address = f"{registry.attrs['NetworkSettings']['IPAddress']}:5000"
        nodes = []
        for name in ("manager", "worker1", "worker2"):
            nodes.append(_start_node(client, name, node_image, address, driver))
            started.append(nodes[-1].container)
        manager, *workers = nodes
        manager_client = manager.client()
        manager_client.swarm.init(
            advertise_addr=manager.ip,
            listen_addr="0.0.0.0:2377",
            dispatcher_heartbeat_period=1_000_000_000,  # a node killed is seen down sooner
        )
        token = manager_client.swarm.attrs["JoinTokens"]["Worker"]
        for worker in workers:
            worker.client().swarm.join(remote_addrs=[f"{manager.ip}:2377"], join_token=token)
        _wait(
            "the workers joining",
            lambda: (
                sum(n.attrs["Status"]["State"] == "ready" for n in manager_client.nodes.list()) == 3
            ),
        )
        for node in manager_client.nodes.list(filters={"role": "manager"}):
            spec = dict(node.attrs["Spec"]) | {"Availability": "drain"}
            node.update(spec)
        for image in images:
            manager_client.api.load_image(client.images.get(image).save(named=True))
        yield Swarm(manager, tuple(workers), address, registry)
    finally:
        for container in reversed(started):
            with suppress(docker.errors.DockerException):
                container.remove(force=True, v=True)
