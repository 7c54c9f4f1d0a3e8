"""The Docker engine's HTTP API with the standard library, over whichever transport reaches the
engine: its unix socket, TCP, TCP with TLS, or ssh to `docker system dial-stdio`. Every call of
a task's container (create, attach, start, wait, kill, its files, remove, listing) goes through
here, on every engine: docker-py (with requests and urllib3, 0.2 s of CPU to import) only
builds and pulls images. Unversioned paths: the engine's own API version, which docker-py also
negotiates.

Connections are kept for the next call (an ssh connection is a process; a TLS one a
handshake); a kept connection the engine closed meanwhile is replaced once."""

from __future__ import annotations

import io
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import urllib.parse
from contextlib import suppress
from typing import IO, Any, Protocol

from agent_worker_app.engines.docker.endpoint import Engine, EngineTLS, advice, resolve_engine
from agent_worker_app.errors import DockerError

_HEAD_MAX = 64 << 10
_KEEP_MAX = 8  # idle connections kept


class Writer(Protocol):
    """Where an answer's bytes go (a file, or one that stops at a size)."""

    def write(self, data: bytes, /) -> int: ...


class EngineError(Exception):
    """The engine answered with an error status; message is its own words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


# ---------------------------------------------------------------- transports


class Transport(Protocol):
    """How a connection to the engine is made: a connected socket (plain or TLS)."""

    def open(self, timeout: float) -> socket.socket: ...

    def failure(self) -> str | None:
        """Why the last connection failed, in the transport's own words (ssh's), if it knows."""

    def close(self) -> None: ...


class UnixTransport:
    def __init__(self, path: str) -> None:
        self.path = path

    def open(self, timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        return sock

    def failure(self) -> str | None:
        return None

    def close(self) -> None:
        pass


class TCPTransport:
    """tcp://HOST:PORT, with TLS when context is given (its certificate checked for host)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.context = host, port, context

    def open(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if self.context is None:
            return sock
        try:
            return self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def failure(self) -> str | None:
        return None

    def close(self) -> None:
        pass


class SSHTransport:
    """One ssh process per connection, running `docker system dial-stdio` on the host; its stdin
    and stdout are the other end of a socket pair, so this end is an ordinary socket (timeouts,
    the attach stream). The end of this socket is the end of ssh's input: it exits then."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self._lock = threading.Lock()
        self._running: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self._failures: list[str] = []

    def open(self, timeout: float) -> socket.socket:
        self._reap(block=False)
        ours, theirs = socket.socketpair()
        errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed when the process is reaped)
        with theirs:
            # In its own session: a Ctrl-C at the terminal is agent-worker's to handle (it stops
            # the container through these very connections), not ssh's.
            process = subprocess.Popen(
                self.command,
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=errors,
                start_new_session=True,
            )
        with self._lock:
            self._running.append((process, errors))
        ours.settimeout(timeout)
        return ours

    def failure(self) -> str | None:
        self._reap(block=True)
        with self._lock:
            return self._failures[-1] if self._failures else None

    def close(self) -> None:
        self._reap(block=True)

    def _reap(self, *, block: bool) -> None:
        """Collect the ssh processes that ended (block: wait a second for each that runs, then
        kill it; only once its connection was closed or broke) and what a failed one said."""
        with self._lock:
            running, self._running = self._running, []
        for process, errors in running:
            try:
                code = process.wait(1.0) if block else process.poll()
            except subprocess.TimeoutExpired:
                code = None
            if code is None and not block:
                with self._lock:
                    self._running.append((process, errors))
                continue
            if code is None:
                process.kill()
                code = process.wait()
            if code > 0:
                errors.seek(0)
                said = errors.read().decode(errors="replace").strip().splitlines()
                failure = f"ssh: {said[-1].strip()}" if said else f"ssh exit {code}"
                with self._lock:
                    self._failures.append(failure)
            errors.close()


def ssh_command(url: str) -> list[str]:
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


def transport(engine: Engine) -> Transport:
    """The transport for an engine as endpoint.resolve_engine() chose it."""
    if engine.socket_path is not None:
        return UnixTransport(engine.socket_path)
    url = str(engine.url)
    if engine.ssh:
        return SSHTransport(ssh_command(url))
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("tcp", "http", "https") or not parts.hostname:
        raise DockerError(
            f"{url} is not a Docker engine address: use unix://PATH, tcp://HOST:PORT or "
            "ssh://[USER@]HOST[:PORT]"
        )
    tls = engine.tls
    if tls is None and parts.scheme == "https":
        tls = EngineTLS(verify=True)
    try:
        port = parts.port or (2376 if tls is not None else 2375)
    except ValueError:
        raise DockerError(f"{url} has no valid port") from None
    return TCPTransport(parts.hostname, port, None if tls is None else _tls_context(tls))


def _tls_context(tls: EngineTLS) -> ssl.SSLContext:
    """The engine's certificate checked against its CA (else the system's), or not at all when
    the user chose so (DOCKER_TLS, SkipTLSVerify); the client certificate where there is one."""
    if tls.verify:
        context = ssl.create_default_context(cafile=tls.ca)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert is not None:
        context.load_cert_chain(*tls.cert)
    return context


# ---------------------------------------------------------------- reaching it


def reach(docker_host: str | None) -> tuple[Engine, EngineAPI]:
    """The engine resolve_engine() chooses and its API over its transport, checked with a ping
    (DockerError saying why it cannot be reached, and what to do)."""
    where = resolve_engine(docker_host)
    api = EngineAPI(transport(where))
    try:
        api.ping()
    except (OSError, EngineError) as exc:
        api.close()
        raise DockerError(
            f"cannot reach the Docker engine at {where.describe()} ({reason(exc, api)}): "
            f"{advice(where)}"
        ) from None
    return where, api


def reason(exc: OSError | EngineError, api: EngineAPI) -> str:
    """Why the engine cannot be reached, with what to do where it is plain."""
    if isinstance(exc, EngineError):
        text = exc.message
    else:
        text = api.transport.failure() or exc.strerror or str(exc) or type(exc).__name__
    if "HTTP request to an HTTPS server" in text:
        text += (
            "; the engine speaks TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to the "
            "directory of its ca.pem and your cert.pem and key.pem"
        )
    return text


# ---------------------------------------------------------------- the API


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class EngineAPI:
    """HTTP/1.1 to the engine over its transport; thread-safe (a batch's tasks share one)."""

    def __init__(self, transport: Transport, timeout: float = 120.0) -> None:
        self.transport = transport
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        self.transport.close()

    def _take(self) -> tuple[_Connection, bool]:
        """A kept connection (True) or a new one (False)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return _Connection(self.transport.open(self.timeout)), False

    def _keep(self, connection: _Connection) -> None:
        with self._lock:
            if len(self._idle) < _KEEP_MAX:
                connection.sock.settimeout(self.timeout)
                self._idle.append(connection)
                return
        connection.close()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float | None = None,
        into: Writer | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """(status, the decoded JSON answer or None), or with into the answer's bytes written
        there; EngineError for an error status, OSError when the connection fails
        (TimeoutError after timeout seconds, by default the API's)."""
        data = b"" if body is None else json.dumps(body).encode()
        request = _request(method, path, query or {}, data, upgrade=False)
        while True:
            connection, kept = self._take()
            try:
                connection.sock.settimeout(self.timeout if timeout is None else timeout)
                connection.sock.sendall(request)
                status, headers = _read_head(connection.reader)
            except (ConnectionError, _ClosedError):
                connection.close()
                if kept:
                    continue  # closed by the engine while it was kept: once more, on a new one
                raise
            except BaseException:
                connection.close()
                raise
            break
        try:
            if into is not None and status < 400:
                _copy_body(connection.reader, status, headers, into)
                raw = None
            else:
                raw = _read_body(connection.reader, status, headers)
        except BaseException:
            connection.close()
            raise
        if headers.get("connection", "").lower() == "close" or not _delimited(status, headers):
            connection.close()
        else:
            self._keep(connection)
        if raw is None:
            return status, None
        if status >= 400:
            raise _engine_error(status, raw)
        return status, _json(raw)

    def ping(self) -> None:
        self.call("GET", "/_ping")

    def runtimes(self) -> tuple[list[str], str]:
        """The engine's runtimes (their names) and its default one."""
        _, info = self.call("GET", "/info")
        info = info if isinstance(info, dict) else {}
        return sorted(info.get("Runtimes") or {}), str(info.get("DefaultRuntime") or "runc")

    def stream(self, path: str, query: dict[str, str] | None = None) -> Streamed:
        """A GET whose answer is read as it comes (a followed log), on a connection of its own
        with no timeout; EngineError for an error status."""
        sock = self.transport.open(self.timeout)
        connection = _Connection(sock)
        try:
            sock.sendall(_request("GET", path, query or {}, b"", upgrade=False))
            status, headers = _read_head(connection.reader)
            if status >= 400:
                raise _engine_error(status, _read_body(connection.reader, status, headers))
            sock.settimeout(None)
        except BaseException:
            connection.close()
            raise
        return Streamed(connection, _Body(connection.reader, status, headers))

    def image_id(self, name: str) -> str | None:
        """The image's id, or None when the engine does not have it."""
        try:
            _, info = self.call("GET", f"/images/{quote(name)}/json")
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
        stream), the connection taken over from HTTP as `docker attach` does: a connection of
        its own, never kept."""
        sock = self.transport.open(self.timeout)
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
        return {"result": result or {}, "state": self.inspect(container_id).get("State") or {}}

    def inspect(self, container_id: str, *, size: bool = False) -> dict[str, Any]:
        """The container's state; with size, its writable layer's (SizeRw: the engine walks
        it, which takes a while for many files)."""
        query = {"size": "1"} if size else None
        _, info = self.call("GET", f"/containers/{container_id}/json", query=query)
        return info if isinstance(info, dict) else {}

    def kill(self, container_id: str, signal: str) -> None:
        self.call("POST", f"/containers/{container_id}/kill", query={"signal": signal})

    def remove(self, container_id: str) -> None:
        self.call("DELETE", f"/containers/{container_id}", query={"force": "1", "v": "1"})

    def archive(self, container_id: str, path: str, into: Writer) -> None:
        """A tar of path in the container, written into into."""
        self.call("GET", f"/containers/{container_id}/archive", into=into, query={"path": path})

    def containers(self, labels: list[str]) -> list[dict[str, Any]]:
        """Every container (running or not) with these labels (key or key=value)."""
        query = {"all": "1", "filters": json.dumps({"label": labels})}
        _, found = self.call("GET", "/containers/json", query=query)
        return [c for c in found or [] if isinstance(c, dict)]


class Streamed:
    """An answer's body as it comes: read(n) waits for n bytes, fewer only at its end (or once
    the connection ended early); close(), from any thread, cuts it (a read waiting then ends)."""

    def __init__(self, connection: _Connection, body: _Body) -> None:
        self._connection = connection
        self._body = body

    def read(self, size: int) -> bytes:
        data = b""
        with suppress(_EndedEarlyError):  # cut by close(), or by the engine: the end
            while len(data) < size and (piece := self._body.read(size - len(data))):
                data += piece
        return data

    def close(self) -> None:
        with suppress(OSError):
            self._connection.sock.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            self._connection.close()


class _Body:
    """An answer's body from its reader, as its headers delimit it (chunks, a length, or the
    connection's end): read(n) gives up to n bytes, b"" at the end; _EndedEarlyError when the
    connection ends before the length or the last chunk. Its last byte is read, and no more:
    a kept connection's next answer starts right after it."""

    def __init__(self, reader: IO[bytes], status: int, headers: dict[str, str]) -> None:
        self._reader = reader
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        length = headers.get("content-length")
        # left: of the current chunk; of the length; -1 to the connection's end
        self._left = 0 if self._chunked else int(length) if length is not None else -1
        self._done = _bodiless(status) or (self._left == 0 and not self._chunked)

    def read(self, size: int) -> bytes:
        if self._done:
            return b""
        if self._chunked and self._left == 0:
            line = self._reader.readline(_HEAD_MAX)
            if not line:
                raise _EndedEarlyError("the engine's answer ended before its last chunk")
            self._left = int(line.split(b";")[0].strip() or b"0", 16)
            if self._left == 0:
                self._reader.readline(_HEAD_MAX)  # the blank line after the last chunk
                self._done = True
                return b""
        piece = self._reader.read(size if self._left < 0 else min(size, self._left))
        if self._left < 0:
            self._done = not piece
            return piece
        if not piece:
            raise _EndedEarlyError("the engine's answer ended early")
        self._left -= len(piece)
        if self._chunked and self._left == 0:
            self._reader.readline(_HEAD_MAX)  # the chunk's line end
        self._done = not self._chunked and self._left == 0
        return piece


class _EndedEarlyError(OSError):
    """The connection ended before the answer's length or its last chunk."""


class _ClosedError(OSError):
    """The engine closed the connection before answering."""


def _take_head(sock: socket.socket) -> bytes:
    """The answer's head, and not a byte of the stream after it. On a plain socket what has
    come is looked at first (MSG_PEEK) and taken up to the head's end (not byte by byte: each
    read gives up the interpreter's lock, and a thread importing docker-py meanwhile keeps it
    up to 5 ms a time); TLS cannot peek, and reads it byte by byte."""
    if not isinstance(sock, ssl.SSLSocket):
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
    head = b""
    while not head.endswith(b"\r\n\r\n") and len(head) <= _HEAD_MAX:
        head += _recv_exactly(sock, 1)
    return head


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("the engine closed the attach before answering")
        data += chunk
    return data


def quote(name: str) -> str:
    return urllib.parse.quote(name, safe="/:@")


def _request(method: str, path: str, query: dict[str, str], data: bytes, *, upgrade: bool) -> bytes:
    target = path + ("?" + urllib.parse.urlencode(query) if query else "")
    lines = [f"{method} {target} HTTP/1.1", "Host: docker", "User-Agent: agent-worker"]
    if upgrade:
        lines += ["Connection: Upgrade", "Upgrade: tcp"]
    if data or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def _read_head(answer: IO[bytes]) -> tuple[int, dict[str, str]]:
    status_line = answer.readline(_HEAD_MAX)
    if not status_line:
        raise _ClosedError("the engine closed the connection before answering")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise OSError(f"not an HTTP answer from the engine: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    while (line := answer.readline(_HEAD_MAX)) not in (b"\r\n", b"\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _delimited(status: int, headers: dict[str, str]) -> bool:
    """Whether the answer's end is known without the connection's end (so it can be kept)."""
    return (
        _bodiless(status)
        or headers.get("transfer-encoding", "").lower() == "chunked"
        or "content-length" in headers
    )


def _bodiless(status: int) -> bool:
    return status in (204, 304) or 100 <= status < 200


def _read_body(answer: IO[bytes], status: int, headers: dict[str, str]) -> bytes:
    body = io.BytesIO()
    _copy_body(answer, status, headers, body)
    return body.getvalue()


def _copy_body(answer: IO[bytes], status: int, headers: dict[str, str], into: Writer) -> None:
    body = _Body(answer, status, headers)
    while piece := body.read(1 << 16):
        into.write(piece)


def _json(raw: bytes) -> Any:
    """The answer's JSON, or None when it is not an object or a list."""
    return json.loads(raw) if raw.strip() and raw.lstrip()[:1] in (b"{", b"[") else None


def _engine_error(status: int, raw: bytes) -> EngineError:
    """An error answer as the engine words it: its message, or its text."""
    value = _json(raw)
    message = value.get("message") if isinstance(value, dict) else None
    return EngineError(status, str(message or raw.decode(errors="replace").strip()))
