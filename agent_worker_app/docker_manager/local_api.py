"""The calls a run makes of the local engine (ping, image inspect, and a container's whole life:
create, attach, start, wait, kill, its files, remove, listing), straight to its socket with the
standard library: docker-py, with requests and urllib3, takes 0.2 s of CPU to import, and a run
whose image is there needs nothing else of it. Unversioned paths: the engine's own API version,
which docker-py also negotiates."""

from __future__ import annotations

import io
import json
import socket
import urllib.parse
from typing import IO, Any

from agent_worker_app.errors import DockerError

_HEAD_MAX = 64 << 10


class EngineError(Exception):
    """The engine answered with an error status; message is its own words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class LocalAPI:
    """HTTP/1.1 over the engine's unix socket, one connection a call (a connect costs
    microseconds)."""

    def __init__(self, path: str, timeout: float = 120.0) -> None:
        self.path = path
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        return sock

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        into: IO[bytes] | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, the decoded JSON answer or None), or with into the answer's bytes written
        there; EngineError for an error status, OSError when the socket fails (TimeoutError
        after timeout seconds, by default the API's)."""
        data = b"" if body is None else json.dumps(body).encode()
        with self._connect() as sock:
            if timeout is not None:
                sock.settimeout(timeout)
            sock.sendall(_request(method, path, query or {}, data, upgrade=False))
            with sock.makefile("rb") as answer:
                status, headers = _read_head(answer)
                if into is not None and status < 400:
                    _copy_body(answer, headers, into)
                    return status, None
                raw = _read_body(answer, headers)
        value = json.loads(raw) if raw.strip() and raw.lstrip()[:1] in (b"{", b"[") else None
        if status >= 400:
            message = value.get("message") if isinstance(value, dict) else None
            raise EngineError(status, str(message or raw.decode(errors="replace").strip()))
        return status, value

    def ping(self) -> None:
        self.call("GET", "/_ping")

    def image_id(self, name: str) -> str | None:
        """The image's id, or None when the engine does not have it."""
        try:
            _, info = self.call("GET", f"/images/{_quote(name)}/json")
        except EngineError as exc:
            if exc.status == 404:
                return None
            raise
        return str(info["Id"]) if isinstance(info, dict) and "Id" in info else None

    def create(self, name: str, config: dict[str, Any]) -> str:
        _, info = self.call("POST", "/containers/create", config, query={"name": name})
        if not isinstance(info, dict) or not isinstance(info.get("Id"), str):
            raise DockerError("the Docker engine created a container but did not say its id")
        return str(info["Id"])

    def attach(self, container_id: str) -> socket.socket:
        """The container's stdin, stdout and stderr as one raw socket (Docker's multiplexed
        stream), the connection taken over from HTTP as `docker attach` does."""
        sock = self._connect()
        try:
            query = {"stdin": "1", "stdout": "1", "stderr": "1", "stream": "1"}
            path = f"/containers/{container_id}/attach"
            sock.sendall(_request("POST", path, query, b"", upgrade=True))
            head = _take_head(sock)
            status = int(head.split(b" ", 2)[1])
            if status not in (101, 200):
                raise EngineError(status, head.decode(errors="replace").splitlines()[0])
        except BaseException:
            sock.close()
            raise
        return sock

    def start(self, container_id: str) -> None:
        self.call("POST", f"/containers/{container_id}/start")

    def wait(self, container_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The container's exit (StatusCode, Error) and its State, or None while it still runs
        after timeout_s."""
        try:
            _, result = self.call("POST", f"/containers/{container_id}/wait", timeout=timeout_s)
        except TimeoutError:
            return None
        _, info = self.call("GET", f"/containers/{container_id}/json")
        state = info.get("State") if isinstance(info, dict) else None
        return {"result": result or {}, "state": state or {}}

    def kill(self, container_id: str, signal: str) -> None:
        self.call("POST", f"/containers/{container_id}/kill", query={"signal": signal})

    def remove(self, container_id: str) -> None:
        self.call("DELETE", f"/containers/{container_id}", query={"force": "1", "v": "1"})

    def archive(self, container_id: str, path: str, into: IO[bytes]) -> None:
        """A tar of path in the container, written into into."""
        self.call("GET", f"/containers/{container_id}/archive", into=into, query={"path": path})

    def containers(self, labels: list[str]) -> list[dict[str, Any]]:
        """Every container (running or not) with these labels (key or key=value)."""
        query = {"all": "1", "filters": json.dumps({"label": labels})}
        _, found = self.call("GET", "/containers/json", query=query)
        return [c for c in found or [] if isinstance(c, dict)]


def _take_head(sock: socket.socket) -> bytes:
    """The answer's head, and not a byte of the stream after it: what has come is looked at
    first (MSG_PEEK), and taken up to the head's end. (Not byte by byte: each read gives up the
    interpreter's lock, and a thread importing docker-py meanwhile keeps it up to 5 ms a time.)"""
    head = b""
    while len(head) <= _HEAD_MAX:
        came = sock.recv(_HEAD_MAX, socket.MSG_PEEK)
        if not came:
            break
        end = (head + came).find(b"\r\n\r\n")
        if end >= 0:
            return head + _recv_exactly(sock, end + 4 - len(head))
        head += _recv_exactly(sock, len(came))  # all of it head: taken
    raise OSError("the engine closed the attach before answering")


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("the engine closed the attach before answering")
        data += chunk
    return data


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="/:@")


def _request(method: str, path: str, query: dict[str, str], data: bytes, *, upgrade: bool) -> bytes:
    target = path + ("?" + urllib.parse.urlencode(query) if query else "")
    lines = [f"{method} {target} HTTP/1.1", "Host: docker", "User-Agent: agent-worker"]
    if upgrade:
        lines += ["Connection: Upgrade", "Upgrade: tcp"]
    else:
        lines += ["Connection: close"]
    if data or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def _read_head(answer: IO[bytes]) -> tuple[int, dict[str, str]]:
    status_line = answer.readline(_HEAD_MAX)
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise OSError(f"not an HTTP answer from the engine: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    while (line := answer.readline(_HEAD_MAX)) not in (b"\r\n", b"\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _read_body(answer: IO[bytes], headers: dict[str, str]) -> bytes:
    body = io.BytesIO()
    _copy_body(answer, headers, body)
    return body.getvalue()


def _copy_body(answer: IO[bytes], headers: dict[str, str], into: IO[bytes]) -> None:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while size := int(answer.readline(_HEAD_MAX).split(b";")[0].strip() or b"0", 16):
            _copy(answer, size, into)
            answer.readline(_HEAD_MAX)
    elif "content-length" in headers:
        _copy(answer, int(headers["content-length"]), into)
    else:
        while chunk := answer.read(1 << 16):
            into.write(chunk)


def _copy(answer: IO[bytes], size: int, into: IO[bytes]) -> None:
    while size > 0:
        chunk = answer.read(min(size, 1 << 16))
        if not chunk:
            raise OSError("the engine's answer ended early")
        into.write(chunk)
        size -= len(chunk)
