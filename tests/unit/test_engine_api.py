"""api.EngineAPI's HTTP over its transports, against a scripted server (each behaviour that
needs the engine itself is in tests/integration/test_containers.py and the e2e runs, which all
go through it) and container_config against docker-py's own conversion of the same container."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_worker_app.engines.base import TaskSpec
from agent_worker_app.engines.docker.api import (
    EngineAPI,
    EngineError,
    TCPTransport,
    UnixTransport,
    _take_head,
)
from agent_worker_app.engines.docker.container_config import container_config
from agent_worker_app.engines.profile import Profile


class Server:
    """Answers each connection with the next canned answer; keeps the requests it got."""

    def __init__(self, path: Path, answers: list[bytes]) -> None:
        self.requests: list[bytes] = []
        self._answers = answers
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for answer in self._answers:
            conn, _ = self._sock.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                head, _, body = request.partition(b"\r\n\r\n")
                length = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                while length and len(body) < length[0]:
                    body += conn.recv(4096)
                self.requests.append(head + b"\r\n\r\n" + body)
                conn.sendall(answer)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[Path, list[Server]]]:
    servers: list[Server] = []
    yield tmp_path / "engine.sock", servers
    for server in servers:
        server.close()


def _api(serve: tuple[Path, list[Server]], *answers: bytes) -> tuple[EngineAPI, Server]:
    path, servers = serve
    servers.append(Server(path, list(answers)))
    return EngineAPI(UnixTransport(str(path)), timeout=10), servers[-1]


def test_a_json_answer_with_a_length(serve: tuple[Path, list[Server]]) -> None:
    body = json.dumps({"Id": "sha256:abc"}).encode()
    api, server = _api(
        serve, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert api.image_id("agent-worker:1a2b") == "sha256:abc"
    assert server.requests[0].startswith(b"GET /images/agent-worker:1a2b/json HTTP/1.1\r\n")


def test_a_chunked_answer_and_a_body_sent(serve: tuple[Path, list[Server]]) -> None:
    chunks = b'7\r\n{"Id": \r\n8\r\n"c0ffee"\r\n1\r\n}\r\n0\r\n\r\n'
    api, server = _api(
        serve, b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    )
    assert api.create("aw-run", {"Image": "x"}) == "c0ffee"
    request = server.requests[0]
    assert request.startswith(b"POST /containers/create?name=aw-run HTTP/1.1\r\n")
    assert request.endswith(b'{"Image": "x"}')


def test_an_answer_that_ends_with_the_connection(serve: tuple[Path, list[Server]]) -> None:
    api, _ = _api(serve, b'HTTP/1.1 200 OK\r\n\r\n[{"Id": "1", "Names": ["/a"]}]')
    assert api.containers(["agent-worker.run-id"]) == [{"Id": "1", "Names": ["/a"]}]


def test_an_error_status_is_the_engines_own_words(serve: tuple[Path, list[Server]]) -> None:
    body = b'{"message": "No such image: nope:1"}'
    answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    api, _ = _api(serve, answer, answer)
    assert api.image_id("nope:1") is None  # a missing image is an answer, not an error
    with pytest.raises(EngineError) as raised:
        api.start("nope")
    assert (raised.value.status, raised.value.message) == (404, "No such image: nope:1")


def test_an_archive_goes_to_a_file(serve: tuple[Path, list[Server]], tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    api, server = _api(serve, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    with (tmp_path / "out.tar").open("w+b") as into:
        api.archive("c1", "/agent-worker/out", into)
    assert (tmp_path / "out.tar").read_bytes() == data
    assert b"GET /containers/c1/archive?path=%2Fagent-worker%2Fout " in server.requests[0]


def test_no_engine_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        EngineAPI(UnixTransport(str(tmp_path / "none.sock"))).ping()


def test_the_attach_head_is_taken_and_not_a_byte_of_the_stream() -> None:
    """The engine's answer to an attach and the first output can come in one read."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        head = b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        theirs.sendall(head[:20])
        threading.Timer(0.05, lambda: theirs.sendall(head[20:] + b"\x01\x00\x00\x00")).start()
        assert _take_head(ours) == head
        assert ours.recv(16) == b"\x01\x00\x00\x00"


def test_the_container_is_the_one_docker_py_would_make() -> None:
    """Both transports send container_config; it says what docker-py's own create says."""
    import docker
    from docker.models.containers import _create_container_args
    from docker.types import LogConfig, Mount

    spec = TaskSpec(
        image="agent-worker:1",
        name="aw-1",
        command=["/usr/local/bin/agent_inside.sh", "--", "claude"],
        env={"AW_BRANCH": "b", "AW_FIREWALL": "1"},
        labels={"agent-worker.run-id": "r"},
        timeout_s=3600,
        profile=Profile(memory_bytes=4 << 30, cpus=1.5, pids_limit=512, firewall=True),
        object_dirs=(Path("/repo/.git/objects"),),
    )
    kwargs = {
        "image": spec.image,
        "command": spec.command,
        "name": spec.name,
        "user": "root",
        "init": True,
        "stdin_open": True,
        "environment": spec.env,
        "labels": spec.labels,
        "working_dir": "/workspace",
        "cap_drop": ["ALL"],
        "cap_add": ["SETUID", "SETGID", "SETPCAP", "KILL", "NET_ADMIN", "NET_RAW"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": spec.profile.memory_bytes,
        "memswap_limit": spec.profile.memory_bytes,
        "nano_cpus": 1_500_000_000,
        "pids_limit": 512,
        "tmpfs": {
            "/tmp": f"size={4 << 30},mode=1777,exec",
            "/var/tmp": f"size={4 << 30},mode=1777,exec",
            "/workspace": f"size={4 << 30},uid=1000,gid=1000,mode=0755,exec",
        },
        "mounts": [Mount("/source/objects-0", "/repo/.git/objects", type="bind", read_only=True)],
        "network_mode": "bridge",
        "log_config": LogConfig(type=LogConfig.types.NONE),
        "version": "1.41",
    }
    args = _create_container_args(kwargs)
    args.pop("name")
    api = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
    theirs = api.create_container_config(**args)
    drop_none = json.loads(json.dumps(theirs, default=dict))
    drop_none = {k: v for k, v in drop_none.items() if v is not None}
    assert container_config(spec) == drop_none


def test_an_offline_task_gets_no_network_and_root_the_means_to_close_one() -> None:
    """The check's task: Docker gives it no network at all ("none"); root keeps the
    firewall's capabilities only to close a network an engine could not withhold (a swarm
    service), and the check itself runs with none of them."""
    from agent_worker_app.engines.base import TaskSpec
    from agent_worker_app.engines.profile import Profile

    limits = Profile(memory_bytes=1 << 30, cpus=None, pids_limit=64, firewall=False, offline=True)
    spec = TaskSpec("img", "n", ["true"], {}, {}, 60.0, limits)
    host = container_config(spec)["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert "NET_ADMIN" in host["CapAdd"]
    online = Profile(memory_bytes=1 << 30, cpus=None, pids_limit=64, firewall=False)
    assert "NET_ADMIN" not in online.capabilities


def test_the_docker_backend_imports_no_docker_py() -> None:
    """The registry, the Docker backend's package and every module a run on an engine uses
    import nothing of docker-py (a run whose image is there needs none)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from agent_worker_app import engines\n"
        "engines.options()\n"
        "from agent_worker_app.engines.docker import api, backend, containers, container_io\n"
        "print(sorted(m for m in ('docker', 'requests', 'urllib3') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n", done.stderr


def _found(image_id: str) -> bytes:
    body = json.dumps({"Id": image_id}).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


NOT_FOUND = b'HTTP/1.1 404 Not Found\r\nContent-Length: 24\r\n\r\n{"message": "not found"}'


def test_an_image_whose_layers_are_all_there_is_reused_from_the_socket(
    serve: tuple[Path, list[Server]], tmp_path: Path
) -> None:
    """The usual run: the base image's id, then the top layer's tag, asked of the socket; the
    progress lines say each layer reused, and nothing is built (no docker-py)."""
    from agent_worker_app.agents.base_agent import ImageLayer
    from agent_worker_app.engines.docker.backend import DockerBackend

    api, server = _api(serve, _found("sha256:base"), _found("sha256:top"))
    backend = DockerBackend(api, local=True, make_client=lambda: pytest.fail("no docker-py"))
    lines: list[str] = []
    image = backend.prepare_image(
        ImageLayer(final="RUN true"),
        base_image="debian:bookworm-slim",
        ca_certs=(),
        force=False,
        log_dir=tmp_path / "builds",
        on_line=lines.append,
    )
    assert image.built is False
    assert [(layer.name, layer.built) for layer in image.layers] == [
        ("system", False),
        ("agent", False),
    ]
    assert lines == [f"image: {layer.name} layer reused ({layer.tag})" for layer in image.layers]
    assert image.tag == image.layers[-1].tag
    assert server.requests[0].startswith(b"GET /images/debian:bookworm-slim/json ")
    assert server.requests[1].startswith(f"GET /images/{image.tag}/json ".encode())


def test_a_missing_layer_goes_to_docker_py_and_the_socket_said_nothing(
    serve: tuple[Path, list[Server]], tmp_path: Path
) -> None:
    from agent_worker_app.agents.base_agent import ImageLayer
    from agent_worker_app.engines.docker.backend import DockerBackend
    from agent_worker_app.environment import Environment
    from agent_worker_app.images.layers import ProjectImage

    class DockerPyWantedError(Exception):
        pass

    def docker_py() -> Any:
        raise DockerPyWantedError

    # the base (twice: the project's system layer, and the default one the agent's stages build
    # on, found too), then the image's own tag: missing
    found = _found("sha256:base")
    api, server = _api(serve, found, found, _found("sha256:stages"), NOT_FOUND)
    backend = DockerBackend(api, local=True, make_client=docker_py)
    lines: list[str] = []
    with pytest.raises(DockerPyWantedError):
        backend.prepare_image(
            ImageLayer(stages="FROM system AS tool\nRUN true\n", final="RUN true"),
            base_image="debian:bookworm-slim",
            ca_certs=(),
            force=False,
            log_dir=tmp_path / "builds",
            on_line=lines.append,
            project=ProjectImage(environment=Environment(apt=("python3",))),
        )
    assert len(server.requests) == 4
    assert lines == []  # docker-py's path says what it reuses and builds


class KeepingServer:
    """A TCP server that answers every request of a connection in turn (HTTP keep-alive), the
    way the engine does; counts the connections it accepted."""

    def __init__(self, answer: bytes) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self._answer = answer
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            while line := reader.readline():
                head = [line]
                while (line := reader.readline()) not in (b"\r\n", b""):
                    head.append(line)
                self.requests.append(b"".join(head))
                conn.sendall(self._answer)

    def close(self) -> None:
        self._sock.close()


def test_connections_are_kept_for_the_next_call_over_tcp() -> None:
    """An ssh connection is a process and a TLS one a handshake: a run's many calls (a wait a
    second) reuse one connection, and a 204 without a length does not wait for its end."""
    server = KeepingServer(b"HTTP/1.1 204 No Content\r\nServer: Docker\r\n\r\n")
    try:
        api = EngineAPI(TCPTransport("127.0.0.1", server.port), timeout=10)
        for _ in range(5):
            api.start("c1")
        api.close()
    finally:
        server.close()
    assert server.connections == 1
    assert len(server.requests) == 5
    assert all(r.startswith(b"POST /containers/c1/start HTTP/1.1\r\n") for r in server.requests)


def test_a_kept_connection_the_engine_closed_is_replaced_once(
    serve: tuple[Path, list[Server]],
) -> None:
    """The scripted server closes each connection after its answer: every call after the
    first finds its kept connection closed, and goes again on a new one."""
    body = b'{"Id": "sha256:abc"}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    api, server = _api(serve, answer, answer, answer)
    assert [api.image_id("a:1"), api.image_id("a:2"), api.image_id("a:3")] == ["sha256:abc"] * 3
    assert len(server.requests) == 3


def test_tls_cannot_peek_and_takes_the_attach_head_byte_by_byte() -> None:
    """An attach over TLS (an SSLSocket cannot MSG_PEEK): the head, and not a byte more."""
    import ssl

    class Fake(ssl.SSLSocket):
        def __init__(self, data: bytes) -> None:  # no real socket: only recv is used
            self.data = data

        def recv(self, size: int = 1024, flags: int = 0) -> bytes:
            assert flags == 0
            taken, self.data = self.data[:size], self.data[size:]
            return taken

    head = b"HTTP/1.1 101 UPGRADED\r\nUpgrade: tcp\r\n\r\n"
    fake = Fake(head + b"\x01\x00\x00\x00")
    assert _take_head(fake) == head
    assert fake.data == b"\x01\x00\x00\x00"


def test_a_streamed_answer_comes_as_it_is_sent_and_close_cuts_it(
    serve: tuple[Path, list[Server]],
) -> None:
    """A followed log: chunked, read as it comes (read(n) waits for n bytes, not for the end),
    and cut from another thread while a read waits."""
    path, _ = serve
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    more = threading.Event()

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            while b"\r\n\r\n" not in conn.recv(4096):
                pass
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            conn.sendall(b"5\r\nhello\r\n3\r\n wo\r\n")
            more.wait(10)  # then nothing more: a follow that waits for the task

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    api = EngineAPI(UnixTransport(str(path)), timeout=10)
    body = api.stream("/services/s1/logs", {"follow": "1"})
    assert body.read(7) == b"hello w"  # across two chunks, before the answer ends
    assert body.read(1) == b"o"
    threading.Timer(0.2, body.close).start()
    assert body.read(4) == b""  # cut while waiting: the end
    more.set()
    thread.join(5)
    listener.close()


def test_a_streamed_error_status_is_the_engines_own_words(
    serve: tuple[Path, list[Server]],
) -> None:
    body = b'{"message": "service s1 not found"}'
    api, _ = _api(
        serve, b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with pytest.raises(EngineError) as raised:
        api.stream("/services/s1/logs")
    assert (raised.value.status, raised.value.message) == (404, "service s1 not found")
