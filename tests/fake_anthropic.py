"""A scripted fake of the Anthropic Messages API, for tests that run the real Claude Code CLI.

Usage::

    script = [
        Turn.tool_use(write("/workspace/hello.txt", "hi\\n"), text="Creating it."),
        Turn.tool_use(edit("/workspace/hello.txt", "hi", "hello")),
        Turn.tool_use(bash("cat /workspace/hello.txt")),
        Turn.text("All done."),
    ]
    with FakeAnthropic(script) as fake:  # binds 0.0.0.0 on an ephemeral port
        env = {"ANTHROPIC_BASE_URL": fake.url("127.0.0.1"), "ANTHROPIC_API_KEY": "sk-ant-test-1"}
        ...  # run claude -p ... --output-format stream-json --verbose
        assert fake.turns_used == 4
        assert fake.main_usage_total == Usage.default() * 4  # == the result event's usage
        assert fake.saw_api_key("sk-ant-test-1")

Turns are consumed in order by *main agent loop* requests only; when the script runs out,
main-loop requests get ``when_exhausted`` (by default a harmless final text turn, "Done.";
``when_exhausted=Turn.error(500)`` makes every further request fail). Any turn may ``delay`` its
answer (for timeout tests); error turns answer an HTTP status with an Anthropic-style error body;
disconnect turns start a stream and then drop the connection.

What Claude Code 2.1.331 sends in ``-p`` mode (observed; see tests/fixtures/claude/FINDINGS.md):

* With CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1: only ``POST /v1/messages?beta=true``, one per
  agent-loop step, each with ``stream: true`` and the full ``tools`` list (12 tool definitions).
  No title/topic request, no count_tokens, no quota probe was seen. Without that variable it also
  sends ``HEAD /api/hello`` to the base URL (the 404 answered here does not bother it).
* Retries of a failed step (429/5xx/401/timeouts/dropped connections: api_retry events), the
  non-streaming fallback it sends after repeated stream failures (``stream: false``,
  ``max_tokens: 64000``) and the up-to-6 attempts with fewer betas after a 400 are all ordinary
  main-loop requests: each consumes a turn. Sub-agents (the Agent tool) would too.

So a ``POST /v1/messages`` is main-loop iff its JSON body has a non-empty ``tools`` list
(``is_main_loop`` replaces the rule). Anything else is kept away from the script:

* ``POST /v1/messages`` without tools (what a title generation or quota check would look like) is
  "aux": answered with ``aux_text`` and ``aux_usage`` (streaming or not, as asked).
* ``POST /v1/messages/count_tokens`` is answered ``{"input_tokens": count_tokens}``.
* Any other method or path is "other": answered ``unknown_status`` (404 with an Anthropic-style
  ``not_found_error`` body by default; 200 answers ``{}``).

Every request is recorded (``requests``) with its method, path, query, lower-cased headers, parsed
JSON body, kind and the turn it got. The server is quiet unless ``verbose=True``.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

__all__ = [
    "FakeAnthropic",
    "RecordedRequest",
    "ToolUse",
    "Turn",
    "Usage",
    "bash",
    "default_is_main_loop",
    "edit",
    "write",
]

TurnKind = Literal["text", "tool_use", "error", "disconnect"]
RequestKind = Literal["main", "aux", "count_tokens", "other"]

ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Usage:
    """Token usage as the API reports it. Defaults differ per field so that sums are checkable."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    @staticmethod
    def default() -> Usage:
        """The usage every main-loop turn returns unless its script says otherwise."""
        return Usage(
            input_tokens=101,
            output_tokens=23,
            cache_read_input_tokens=1009,
            cache_creation_input_tokens=307,
        )

    @staticmethod
    def aux_default() -> Usage:
        """The usage auxiliary (non-main-loop) answers return unless configured otherwise."""
        return Usage(
            input_tokens=7,
            output_tokens=3,
            cache_read_input_tokens=0,
            cache_creation_input_tokens=0,
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
        )

    def __mul__(self, n: int) -> Usage:
        return Usage(
            self.input_tokens * n,
            self.output_tokens * n,
            self.cache_read_input_tokens * n,
            self.cache_creation_input_tokens * n,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass(frozen=True)
class ToolUse:
    """One tool_use block: the tool's name and its input. The id is generated when not given."""

    name: str
    input: Mapping[str, Any]
    id: str | None = None


def write(file_path: str, content: str) -> ToolUse:
    """A Write tool call."""
    return ToolUse("Write", {"file_path": file_path, "content": content})


def edit(file_path: str, old_string: str, new_string: str) -> ToolUse:
    """An Edit tool call."""
    return ToolUse(
        "Edit",
        {"file_path": file_path, "old_string": old_string, "new_string": new_string},
    )


def bash(command: str, description: str | None = None) -> ToolUse:
    """A Bash tool call."""
    tool_input: dict[str, Any] = {"command": command}
    if description is not None:
        tool_input["description"] = description
    return ToolUse("Bash", tool_input)


@dataclass(frozen=True)
class Turn:
    """One scripted answer. Build with Turn.text / tool_use / error / disconnect."""

    kind: TurnKind
    reply_text: str = ""
    tool_uses: tuple[ToolUse, ...] = ()
    status: int = 200
    error_type: str = ""
    error_message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage.default)
    delay: float = 0.0
    stop_reason: str = "end_turn"

    @staticmethod
    def text(
        text: str = "Done.",
        *,
        usage: Usage | None = None,
        delay: float = 0.0,
        stop_reason: str = "end_turn",
    ) -> Turn:
        """A final (or any) text answer."""
        return Turn(
            "text",
            reply_text=text,
            usage=usage or Usage.default(),
            delay=delay,
            stop_reason=stop_reason,
        )

    @staticmethod
    def tool_use(
        *tool_uses: ToolUse,
        text: str = "",
        usage: Usage | None = None,
        delay: float = 0.0,
    ) -> Turn:
        """An answer calling one or more tools, optionally preceded by a text block."""
        if not tool_uses:
            raise ValueError("a tool_use turn needs at least one ToolUse")
        return Turn(
            "tool_use",
            reply_text=text,
            tool_uses=tuple(tool_uses),
            usage=usage or Usage.default(),
            delay=delay,
            stop_reason="tool_use",
        )

    @staticmethod
    def error(
        status: int,
        *,
        error_type: str | None = None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> Turn:
        """An HTTP error with an Anthropic-style body, e.g. 401, 429, 500, 529.

        ``headers`` are added to the response (e.g. ``{"retry-after": "0"}`` or
        ``{"x-should-retry": "false"}``). Error turns report no usage.
        """
        etype = error_type or ERROR_TYPES.get(status, "api_error")
        return Turn(
            "error",
            status=status,
            error_type=etype,
            error_message=message or f"Fake {etype} ({status})",
            headers=dict(headers or {}),
            usage=Usage(),
            delay=delay,
        )

    @staticmethod
    def disconnect(
        *, text: str = "Partial ans", usage: Usage | None = None, delay: float = 0.0
    ) -> Turn:
        """Start answering (message_start, a text block with ``text``) and drop the connection.

        A non-streaming request gets the status line, headers and part of the body. ``usage``
        (zero by default) goes into message_start and counts as returned: Claude Code counts
        such partial usage inconsistently, so keep it zero when checking totals.
        """
        return Turn(
            "disconnect",
            reply_text=text,
            usage=usage or Usage(),
            delay=delay,
            stop_reason="",
        )


def default_is_main_loop(body: Any) -> bool:
    """A /v1/messages request belongs to the agent loop iff it offers a non-empty tools list."""
    if not isinstance(body, dict):
        return False
    tools = body.get("tools")
    return isinstance(tools, list) and len(tools) > 0


@dataclass
class RecordedRequest:
    """One request the fake received, and what it did with it."""

    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or None
    raw_body: bytes
    kind: RequestKind
    time: float
    client: str = ""  # "host:port" of the client's end of the connection
    turn_index: int | None = None  # index into the script; None: not a script turn
    turn: Turn | None = None  # the turn answered (also the fallback when exhausted)
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
    def tool_names(self) -> list[str]:
        if not isinstance(self.body, dict) or not isinstance(self.body.get("tools"), list):
            return []
        return [str(t.get("name")) for t in self.body["tools"] if isinstance(t, dict)]

    @property
    def credential(self) -> str | None:
        """The x-api-key header, else the Bearer token of the authorization header."""
        key = self.headers.get("x-api-key")
        if key is not None:
            return key
        auth = self.headers.get("authorization")
        if auth is not None and auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return auth


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeAnthropic


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "FakeAnthropic/1.0"
    sys_version = ""

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


class _DroppedError(Exception):
    """The client went away, or a disconnect turn dropped the connection."""


class FakeAnthropic:
    """A threaded fake Messages API server answering main-loop requests from a script."""

    def __init__(
        self,
        script: Iterable[Turn] = (),
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        when_exhausted: Turn | None = None,
        aux_text: str = "Fake title",
        aux_usage: Usage | None = None,
        count_tokens: int = 42,
        unknown_status: int = 404,
        is_main_loop: Callable[[Any], bool] = default_is_main_loop,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.when_exhausted = when_exhausted or Turn.text("Done.")
        self.aux_text = aux_text
        self.aux_usage = aux_usage or Usage.aux_default()
        self.count_tokens = count_tokens
        self.unknown_status = unknown_status
        self.is_main_loop = is_main_loop
        self.verbose = verbose
        self._lock = threading.Lock()
        self._script: list[Turn] = list(script)
        self._next = 0
        self._requests: list[RecordedRequest] = []
        self._main_usage = Usage()
        self._all_usage = Usage()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        server = _Server((self.host, self._requested_port), _Handler)
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
        """The base URL to give ANTHROPIC_BASE_URL, as seen from ``host``."""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # -- script -------------------------------------------------------------------------------

    def add_turns(self, *turns: Turn) -> None:
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
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    def requests_of(self, kind: RequestKind) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == kind]

    @property
    def main_requests(self) -> list[RecordedRequest]:
        return self.requests_of("main")

    @property
    def main_usage_total(self) -> Usage:
        """Sum of the usage returned to main-loop requests."""
        with self._lock:
            return self._main_usage

    @property
    def all_usage_total(self) -> Usage:
        """Sum of the usage returned to every request (main loop and auxiliary)."""
        with self._lock:
            return self._all_usage

    def credentials_seen(self) -> set[str]:
        """Every x-api-key value (or Bearer token) any request carried."""
        return {r.credential for r in self.requests if r.credential is not None}

    def saw_api_key(self, key: str) -> bool:
        """True iff at least one request arrived and every request carried exactly ``key``."""
        requests = self.requests
        return bool(requests) and all(r.credential == key for r in requests)

    # -- serving ------------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        record = self._record(handler)
        turn = self._take_turn(record)
        try:
            if turn is not None:
                self._answer_turn(handler, record, turn)
            elif record.kind == "count_tokens":
                record.status = 200
                self._send_json(handler, 200, {"input_tokens": self.count_tokens})
            else:
                record.status = self.unknown_status
                payload: Mapping[str, Any] = {}
                if self.unknown_status != 200:
                    message = f"Fake: no route for {record.method} {record.path}"
                    payload = _error_body("not_found_error", message)
                self._send_json(handler, self.unknown_status, payload, head=record.method == "HEAD")
        except (_DroppedError, OSError):
            handler.close_connection = True

    def _record(self, handler: _Handler) -> RecordedRequest:
        split = urlsplit(handler.path)
        raw = handler.read_body()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        method = handler.command
        route = split.path.rstrip("/")
        kind: RequestKind = "other"
        if method == "POST" and route == "/v1/messages":
            kind = "main" if self.is_main_loop(body) else "aux"
        elif method == "POST" and route == "/v1/messages/count_tokens":
            kind = "count_tokens"
        return RecordedRequest(
            method=method,
            path=split.path,
            query=split.query,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            raw_body=raw,
            kind=kind,
            time=time.time(),
            client=f"{handler.client_address[0]}:{handler.client_address[1]}",
        )

    def _take_turn(self, record: RecordedRequest) -> Turn | None:
        """Store the record; the turn that answers it (None: not a Messages request)."""
        turn: Turn | None = None
        with self._lock:
            if record.kind == "main":
                if self._next < len(self._script):
                    turn = self._script[self._next]
                    record.turn_index = self._next
                    self._next += 1
                else:
                    turn = self.when_exhausted
            elif record.kind == "aux":
                turn = Turn.text(self.aux_text, usage=self.aux_usage)
            record.turn = turn
            self._requests.append(record)
        return turn

    def _count_usage(self, record: RecordedRequest, usage: Usage) -> None:
        with self._lock:
            if record.kind == "main":
                self._main_usage = self._main_usage + usage
            self._all_usage = self._all_usage + usage

    def _answer_turn(self, handler: _Handler, record: RecordedRequest, turn: Turn) -> None:
        if turn.delay > 0 and self._stopping.wait(turn.delay):
            raise _DroppedError
        model = record.model or "claude-fake"
        if turn.kind == "error":
            record.status = turn.status
            self._send_json(
                handler,
                turn.status,
                _error_body(turn.error_type, turn.error_message),
                extra_headers=turn.headers,
            )
            return
        record.status = 200
        msg_id = f"msg_fake_{next(self._ids):04d}"
        content = self._content(turn)
        if not record.stream:
            self._count_usage(record, turn.usage)
            message = {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": turn.stop_reason,
                "stop_sequence": None,
                "usage": turn.usage.as_dict(),
            }
            if turn.kind == "disconnect":
                data = json.dumps(message).encode()
                handler.send_response(200)
                handler.send_header("content-type", "application/json")
                handler.send_header("content-length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data[: len(data) // 2])
                self._drop(handler)
            self._send_json(handler, 200, message)
            return

        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream; charset=utf-8")
        handler.send_header("cache-control", "no-cache")
        handler.send_header("transfer-encoding", "chunked")
        handler.send_header("request-id", f"req_fake_{msg_id}")
        handler.end_headers()
        start_usage = turn.usage.as_dict()
        start_usage["output_tokens"] = min(1, turn.usage.output_tokens)
        self._event(
            handler,
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
        self._count_usage(record, turn.usage)
        self._event(handler, "ping", {"type": "ping"})
        if turn.kind == "disconnect":
            self._event(
                handler,
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            self._event(
                handler,
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": turn.reply_text},
                },
            )
            self._drop(handler)
        for index, block in enumerate(content):
            if block["type"] == "text":
                self._event(
                    handler,
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                for piece in _halves(str(block["text"])):
                    self._event(
                        handler,
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                    )
            else:
                self._event(
                    handler,
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": block["id"],
                            "name": block["name"],
                            "input": {},
                        },
                    },
                )
                for piece in _halves(json.dumps(block["input"])):
                    self._event(
                        handler,
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {
                                "type": "input_json_delta",
                                "partial_json": piece,
                            },
                        },
                    )
            self._event(
                handler,
                "content_block_stop",
                {"type": "content_block_stop", "index": index},
            )
        self._event(
            handler,
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": turn.stop_reason, "stop_sequence": None},
                "usage": turn.usage.as_dict(),
            },
        )
        self._event(handler, "message_stop", {"type": "message_stop"})
        self._write_chunk(handler, b"")

    def _content(self, turn: Turn) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if turn.reply_text and turn.kind != "disconnect":
            content.append({"type": "text", "text": turn.reply_text})
        for tool in turn.tool_uses:
            tool_id = tool.id or f"toolu_fake_{next(self._ids):04d}"
            content.append(
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": tool.name,
                    "input": dict(tool.input),
                }
            )
        if turn.kind == "disconnect":
            content.append({"type": "text", "text": turn.reply_text})
        return content

    def _event(self, handler: _Handler, name: str, data: Mapping[str, Any]) -> None:
        payload = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        self._write_chunk(handler, payload)

    @staticmethod
    def _write_chunk(handler: _Handler, data: bytes) -> None:
        try:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            handler.wfile.flush()
        except OSError as exc:
            raise _DroppedError from exc

    @staticmethod
    def _drop(handler: _Handler) -> None:
        try:
            handler.wfile.flush()
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        handler.close_connection = True
        raise _DroppedError

    @staticmethod
    def _send_json(
        handler: _Handler,
        status: int,
        payload: Mapping[str, Any],
        *,
        extra_headers: Mapping[str, str] | None = None,
        head: bool = False,
    ) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        if status >= 400:
            handler.send_header("request-id", "req_fake_error")
        for name, value in (extra_headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        if not head:
            handler.wfile.write(data)
        handler.wfile.flush()


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": "req_fake_error",
    }


def _halves(text: str) -> Iterator[str]:
    """The text in two pieces (one when it is shorter than two characters)."""
    if len(text) < 2:
        yield text
        return
    mid = len(text) // 2
    yield text[:mid]
    yield text[mid:]
