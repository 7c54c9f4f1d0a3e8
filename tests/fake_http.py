"""What the scripted fake API servers (tests/fake_anthropic.py, tests/fake_openai.py) share.

``FakeServer`` is a threaded HTTP server answering *main agent loop* requests from a script of
turns: lifecycle (context manager, ``port``, ``url``), the script (``add_turns``, ``turns_used``,
``turns_left``, ``when_exhausted``), the record of every request with lower-cased headers
(``requests``, ``main_requests``, ``credentials_seen``, ``saw_api_key``), usage totals, delays
that ``stop`` cuts short, and the fallback answer to unknown routes. A fake says how to classify
a request (``_kind``), what a route outside the script answers (``_fixed_answer``), how to
answer a turn (``_answer_turn``) and its error bodies.

``Handler`` reads request bodies (also chunked) and writes the answers: JSON, a JSON body cut
in half followed by a dropped connection, and server-sent events in a chunked stream.

``TokenCounts`` gives a frozen dataclass of token counts field-wise ``+`` and ``* n``.

``post`` and ``sse_events`` are the stdlib client side, for the fakes' own tests.
"""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Generic, NoReturn, Self, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "DroppedError",
    "FakeServer",
    "Handler",
    "RecordedRequestBase",
    "TokenCounts",
    "bearer_token",
    "halves",
    "post",
    "sse_events",
]


class TokenCounts:
    """Field-wise ``+`` and ``* n`` for a (frozen) dataclass whose fields are all int counts."""

    def __add__(self, other: Self) -> Self:
        names = [f.name for f in fields(self)]  # type: ignore[arg-type]
        return type(self)(*(getattr(self, n) + getattr(other, n) for n in names))

    def __mul__(self, n: int) -> Self:
        names = [f.name for f in fields(self)]  # type: ignore[arg-type]
        return type(self)(*(getattr(self, name) * n for name in names))


UsageT = TypeVar("UsageT", bound=TokenCounts)
TurnT = TypeVar("TurnT")


def bearer_token(authorization: str) -> str:
    """The token of an ``authorization: Bearer ...`` value; any other value as it is."""
    return (
        authorization[7:].strip() if authorization.lower().startswith("bearer ") else authorization
    )


@dataclass
class RecordedRequestBase:
    """One request a fake received, and what it did with it."""

    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or None
    raw_body: bytes
    kind: str
    time: float
    client: str = ""  # "host:port" of the client's end of the connection
    turn_index: int | None = None  # index into the script; None: not a script turn
    turn: Any = None  # the turn answered (also the fallback when exhausted)
    status: int = 0

    @property
    def model(self) -> str | None:
        if isinstance(self.body, dict):
            model = self.body.get("model")
            return model if isinstance(model, str) else None
        return None

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True

    @property
    def credential(self) -> str | None:
        raise NotImplementedError


RecordT = TypeVar("RecordT", bound=RecordedRequestBase)


class DroppedError(Exception):
    """The client went away, or a disconnect turn dropped the connection."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeServer[Any, Any, Any]


class Handler(BaseHTTPRequestHandler):
    """Hands every request to the fake; reads bodies and writes answers for it."""

    server: _Server
    protocol_version = "HTTP/1.1"
    sys_version = ""

    def version_string(self) -> str:
        return self.server.fake.server_version + " " + self.sys_version

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.fake.verbose:
            super().log_message(format, *args)

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    def do_HEAD(self) -> None:
        self.server.fake._handle(self)

    def do_PUT(self) -> None:
        self.server.fake._handle(self)

    def do_DELETE(self) -> None:
        self.server.fake._handle(self)

    def do_PATCH(self) -> None:
        self.server.fake._handle(self)

    def do_OPTIONS(self) -> None:
        self.server.fake._handle(self)

    def read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_json(
        self,
        status: int,
        payload: Mapping[str, Any],
        *,
        extra_headers: Mapping[str, str] | None = None,
        head: bool = False,
    ) -> None:
        """A whole JSON answer (only its headers for HEAD); errors carry a request id."""
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if status >= 400:
            self.send_header(self.server.fake.request_id_header, "req_fake_error")
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)
        self.wfile.flush()

    def send_json_cut(self, payload: Mapping[str, Any]) -> NoReturn:
        """A 200 JSON answer of which only the first half arrives: the connection drops."""
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.drop()

    def start_event_stream(self, request_id: str) -> None:
        """The status line and headers of a 200 server-sent event stream, sent chunked."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header(self.server.fake.request_id_header, request_id)
        self.end_headers()

    def write_event(self, name: str, data: Mapping[str, Any]) -> None:
        """One server-sent event, in a chunk of its own."""
        self.write_chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

    def write_chunk(self, data: bytes) -> None:
        """One chunk of a chunked answer; ``b""`` ends it."""
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError as exc:
            raise DroppedError from exc

    def drop(self) -> NoReturn:
        """Flush what was written and drop the connection."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True
        raise DroppedError


class FakeServer(Generic[TurnT, UsageT, RecordT]):
    """A threaded fake API server answering main-loop requests from a script of turns."""

    server_version: ClassVar[str] = "Fake/1.0"
    request_id_header: ClassVar[str] = "request-id"
    base_path: ClassVar[str] = ""  # what url() appends to the origin

    def __init__(
        self,
        script: Iterable[TurnT],
        *,
        record_type: type[RecordT],
        no_usage: UsageT,
        host: str,
        port: int,
        when_exhausted: TurnT,
        aux_text: str,
        aux_usage: UsageT,
        unknown_status: int,
        is_main_loop: Callable[[Any], bool],
        verbose: bool,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.when_exhausted = when_exhausted
        self.aux_text = aux_text
        self.aux_usage = aux_usage
        self.unknown_status = unknown_status
        self.is_main_loop = is_main_loop
        self.verbose = verbose
        self._record_type = record_type
        self._lock = threading.Lock()
        self._script: list[TurnT] = list(script)
        self._next = 0
        self._requests: list[RecordT] = []
        self._main_usage = no_usage
        self._all_usage = no_usage
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.tls: ssl.SSLContext | None = None  # set before start(): serve HTTPS with it

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        server = _Server((self.host, self._requested_port), Handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes delayed answers
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return int(self._server.server_address[1])

    def url(self, host: str = "127.0.0.1") -> str:
        """The base URL to give the client (its ``*_BASE_URL``), as seen from ``host``."""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}{self.base_path}"

    # -- script -------------------------------------------------------------------------------

    def add_turns(self, *turns: TurnT) -> None:
        """Append turns to the script (also while running)."""
        with self._lock:
            self._script.extend(turns)

    @property
    def turns_used(self) -> int:
        """How many script turns main-loop requests consumed."""
        with self._lock:
            return self._next

    @property
    def turns_left(self) -> int:
        with self._lock:
            return len(self._script) - self._next

    # -- what happened ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordT]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def requests_of(self, kind: str) -> list[RecordT]:
        return [r for r in self.requests if r.kind == kind]

    @property
    def main_requests(self) -> list[RecordT]:
        return self.requests_of("main")

    @property
    def main_usage_total(self) -> UsageT:
        """Sum of the usage returned to main-loop requests."""
        with self._lock:
            return self._main_usage

    @property
    def all_usage_total(self) -> UsageT:
        """Sum of the usage returned to every request (main loop and auxiliary)."""
        with self._lock:
            return self._all_usage

    def credentials_seen(self) -> set[str]:
        """Every credential (see the fake's ``RecordedRequest.credential``) any request carried."""
        return {r.credential for r in self.requests if r.credential is not None}

    def saw_api_key(self, key: str) -> bool:
        """True iff at least one request arrived and every request carried exactly ``key``."""
        requests = self.requests
        return bool(requests) and all(r.credential == key for r in requests)

    # -- what a fake says ---------------------------------------------------------------------

    def _kind(self, method: str, path: str, body: Any) -> str:
        """ "main" or "aux" (script requests) or another kind of request."""
        raise NotImplementedError

    def _aux_turn(self) -> TurnT:
        """The answer to an auxiliary request."""
        raise NotImplementedError

    def _fixed_answer(self, record: RecordT) -> Mapping[str, Any] | None:
        """The 200 JSON answer of a known route outside the script; None: an unknown route."""
        return None

    def _not_found_body(self, message: str) -> Mapping[str, Any]:
        raise NotImplementedError

    def _answer_turn(self, handler: Handler, record: RecordT, turn: TurnT) -> None:
        raise NotImplementedError

    # -- serving ------------------------------------------------------------------------------

    def _handle(self, handler: Handler) -> None:
        record = self._record(handler)
        turn = self._take_turn(record)
        try:
            if turn is not None:
                self._answer_turn(handler, record, turn)
            elif (payload := self._fixed_answer(record)) is not None:
                record.status = 200
                handler.send_json(200, payload)
            else:
                record.status = self.unknown_status
                answer: Mapping[str, Any] = {}
                if self.unknown_status != 200:
                    message = f"Fake: no route for {record.method} {record.path}"
                    answer = self._not_found_body(message)
                handler.send_json(self.unknown_status, answer, head=record.method == "HEAD")
        except (DroppedError, OSError):
            handler.close_connection = True

    def _record(self, handler: Handler) -> RecordT:
        split = urlsplit(handler.path)
        raw = handler.read_body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        return self._record_type(
            method=handler.command,
            path=split.path,
            query=split.query,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            raw_body=raw,
            kind=self._kind(handler.command, split.path, body),
            time=time.time(),
            client=f"{handler.client_address[0]}:{handler.client_address[1]}",
        )

    def _take_turn(self, record: RecordT) -> TurnT | None:
        """Store the record; the turn that answers it (None: not a script request)."""
        turn: TurnT | None = None
        with self._lock:
            if record.kind == "main":
                if self._next < len(self._script):
                    turn = self._script[self._next]
                    record.turn_index = self._next
                    self._next += 1
                else:
                    turn = self.when_exhausted
            elif record.kind == "aux":
                turn = self._aux_turn()
            record.turn = turn
            self._requests.append(record)
        return turn

    def _count_usage(self, record: RecordT, usage: UsageT) -> None:
        with self._lock:
            if record.kind == "main":
                self._main_usage = self._main_usage + usage
            self._all_usage = self._all_usage + usage

    def _delay(self, seconds: float) -> None:
        """Wait before answering; ``stop`` cuts the wait short and drops the request."""
        if seconds > 0 and self._stopping.wait(seconds):
            raise DroppedError


def halves(text: str) -> Iterator[str]:
    """The text in two pieces (one when it is shorter than two characters)."""
    if len(text) < 2:
        yield text
        return
    mid = len(text) // 2
    yield text[:mid]
    yield text[mid:]


# -- the client side, for the fakes' own tests ----------------------------------------------------


def post(
    port: int,
    path: str,
    payload: Any,
    headers: Mapping[str, str],
    *,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """POST a JSON payload (bytes as they are) to 127.0.0.1:port; status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = {"content-type": "application/json", **headers}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        conn.request("POST", path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def sse_events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Each server-sent event's name and data, checked to name the data's ``type``."""
    events: list[tuple[str, dict[str, Any]]] = []
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        payload = json.loads(lines["data"])
        assert payload["type"] == lines["event"]
        events.append((lines["event"], payload))
    return events
