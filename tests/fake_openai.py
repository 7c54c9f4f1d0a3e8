"""A scripted fake of the OpenAI Responses API, for tests that run the real Codex CLI.

Usage::

    script = [
        Turn.tool_calls(code_exec_command("printf 'hi\\n' > hello.txt"), text="Creating it."),
        Turn.tool_calls(code_apply_patch(patch(add_file("notes.md", "# notes\\n")))),
        Turn.tool_calls(code_exec_command("git add -A && git commit -qm 'Add files'")),
        Turn.text("All done."),
    ]
    with FakeOpenAI(script) as fake:  # binds 0.0.0.0 on an ephemeral port
        ...  # codex exec --json with a model provider whose base_url is fake.url("127.0.0.1")
        assert fake.turns_used == 4
        assert fake.main_usage_total == Usage.default() * 4  # == turn.completed's usage
        assert fake.saw_api_key("sk-test-1")

``url(host)`` is a base URL *with* ``/v1``, as OpenAI base URLs are written; ``/v1/responses``
and ``/responses`` are both served, as a streaming (SSE) or plain JSON answer as the request
asks. What Codex CLI 0.169 sends and how it reads the answers is written up in
tests/fixtures/codex/FINDINGS.md; the tool-call helpers follow it:

* ``code_exec_command``, ``code_apply_patch``, ``code``: the code-mode tool ``exec`` (JavaScript
  calling nested tools), the only tool Codex's default models are offered;
* ``exec_command``, ``apply_patch``: the classic direct tools (models such as gpt-5.5);
* ``patch(add_file(...), update_file(...))``: apply_patch texts.

Turns are consumed in order by *main agent loop* requests only: a ``POST .../responses`` that
offers at least one tool, in its ``tools`` list or in an ``additional_tools`` input item
(``is_main_loop`` replaces the rule). When the script runs out, main-loop requests get
``when_exhausted`` (by default a harmless final message, "Done."; ``Turn.error(500)`` makes every
further request fail). Any turn may ``delay`` its answer; error turns answer an HTTP status with
an OpenAI-style error body; failed turns stream ``response.failed``; disconnect turns start a
stream and then drop the connection. Usage counts as returned once the answer carries it (the
``response.completed`` event); error and failed turns return none.

Anything else is kept away from the script:

* ``POST .../responses`` offering no tools is "aux": answered with ``aux_text``, ``aux_usage``.
* ``GET .../models`` is "models": answered with an empty model list.
* Any other method or path is "other" (a WebSocket upgrade too): answered ``unknown_status``
  (404 with an OpenAI-style error body by default; 200 answers ``{}``).

Every request is recorded (``requests``) with its method, path, query, lower-cased headers, parsed
JSON body, kind and the turn it got. The server is quiet unless ``verbose=True``.

The API mirrors tests/fake_anthropic.py (context manager, ``url``, ``add_turns``, ``requests``,
``main_requests``, ``turns_used``, ``main_usage_total``, ``credentials_seen``, ``saw_api_key``),
and ``Usage`` also answers to the Anthropic fake's field names (``cache_read_input_tokens``,
``cache_creation_input_tokens``, and ``uncached_input_tokens`` for its ``input_tokens``), so
fixtures can treat both fakes alike.
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
    "CustomToolCall",
    "FakeOpenAI",
    "FunctionCall",
    "RecordedRequest",
    "Turn",
    "Usage",
    "add_file",
    "apply_patch",
    "code",
    "code_apply_patch",
    "code_exec_command",
    "default_is_main_loop",
    "exec_command",
    "offered_tools",
    "patch",
    "update_file",
]

TurnKind = Literal["text", "tool_calls", "error", "failed", "disconnect"]
RequestKind = Literal["main", "aux", "models", "other"]

ERROR_TYPES: Mapping[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", "server_error"),
    503: ("server_error", "server_is_overloaded"),
}


@dataclass(frozen=True)
class Usage:
    """Token usage as the Responses API reports it. Defaults differ per field (sums checkable).

    The ``input_tokens_details`` (cached, cache-write) are parts *of* ``input_tokens``, and
    reasoning tokens part of ``output_tokens``; ``total_tokens`` is input + output.
    """

    input_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @staticmethod
    def default() -> Usage:
        """The usage every main-loop turn returns unless its script says otherwise."""
        return Usage(
            input_tokens=1201,
            cached_tokens=1024,
            cache_write_tokens=64,
            output_tokens=53,
            reasoning_tokens=11,
        )

    @staticmethod
    def aux_default() -> Usage:
        """The usage auxiliary (non-main-loop) answers return unless configured otherwise."""
        return Usage(input_tokens=7, output_tokens=3)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        """Input neither read from nor written to the cache (Anthropic's ``input_tokens``)."""
        return self.input_tokens - self.cached_tokens - self.cache_write_tokens

    # The Anthropic fake's names, for fixtures shared by both fakes.
    @property
    def cache_read_input_tokens(self) -> int:
        return self.cached_tokens

    @property
    def cache_creation_input_tokens(self) -> int:
        return self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def __mul__(self, n: int) -> Usage:
        return Usage(
            self.input_tokens * n,
            self.cached_tokens * n,
            self.cache_write_tokens * n,
            self.output_tokens * n,
            self.reasoning_tokens * n,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens,
            },
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class FunctionCall:
    """A ``function_call`` output item: a JSON-arguments tool such as ``exec_command``."""

    name: str
    arguments: Mapping[str, Any]
    call_id: str | None = None

    def arguments_json(self) -> str:
        return json.dumps(dict(self.arguments))


@dataclass(frozen=True)
class CustomToolCall:
    """A ``custom_tool_call`` output item: a freeform tool such as ``apply_patch``."""

    name: str
    input: str
    call_id: str | None = None


ToolCall = FunctionCall | CustomToolCall


def exec_command(cmd: str, *, workdir: str | None = None) -> FunctionCall:
    """A direct call of Codex's ``exec_command`` function tool (classic tool mode, which Codex
    0.169 uses for models such as gpt-5.5 and unknown model names)."""
    arguments: dict[str, Any] = {"cmd": cmd}
    if workdir is not None:
        arguments["workdir"] = workdir
    return FunctionCall("exec_command", arguments)


def apply_patch(patch: str) -> CustomToolCall:
    """A direct call of Codex's freeform ``apply_patch`` tool (classic tool mode)."""
    return CustomToolCall("apply_patch", patch)


def code(source: str) -> CustomToolCall:
    """A call of the code-mode tool ``exec``: JavaScript run by codex-code-mode-host, calling
    nested tools as ``await tools.<name>(...)``. Codex 0.169's default models offer only this."""
    return CustomToolCall("exec", source)


def code_exec_command(cmd: str, *, workdir: str | None = None) -> CustomToolCall:
    """Code mode: run one shell command through the nested ``exec_command``; its output is the
    tool result."""
    arguments: dict[str, Any] = {"cmd": cmd}
    if workdir is not None:
        arguments["workdir"] = workdir
    return code(f"const r = await tools.exec_command({json.dumps(arguments)});\ntext(r.output);")


def code_apply_patch(patch: str) -> CustomToolCall:
    """Code mode: apply one patch through the nested ``apply_patch``."""
    return code(f"text(await tools.apply_patch({json.dumps(patch)}));")


def add_file(path: str, content: str) -> str:
    """A patch hunk adding one file (``content`` ends with a newline); see ``patch``."""
    return f"*** Add File: {path}\n" + "".join(f"+{line}\n" for line in content.splitlines())


def update_file(path: str, old: str, new: str) -> str:
    """A patch hunk replacing the line ``old`` of a file with ``new``; see ``patch``."""
    return f"*** Update File: {path}\n@@\n-{old}\n+{new}\n"


def patch(*hunks: str) -> str:
    """A whole apply_patch text of the given hunks (``add_file``, ``update_file``)."""
    return "*** Begin Patch\n" + "".join(hunks) + "*** End Patch"


@dataclass(frozen=True)
class Turn:
    """One scripted answer. Build with Turn.text / tool_calls / error / failed / disconnect."""

    kind: TurnKind
    reply_text: str = ""
    reasoning: str = ""
    calls: tuple[ToolCall, ...] = ()
    status: int = 200
    error_type: str = ""
    error_code: str = ""
    error_message: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage.default)
    delay: float = 0.0

    @staticmethod
    def text(
        text: str = "Done.",
        *,
        reasoning: str = "",
        usage: Usage | None = None,
        delay: float = 0.0,
    ) -> Turn:
        """A final (or any) assistant message, optionally after a reasoning summary."""
        return Turn(
            "text",
            reply_text=text,
            reasoning=reasoning,
            usage=usage or Usage.default(),
            delay=delay,
        )

    @staticmethod
    def tool_calls(
        *calls: ToolCall,
        text: str = "",
        reasoning: str = "",
        usage: Usage | None = None,
        delay: float = 0.0,
    ) -> Turn:
        """An answer calling one or more tools, optionally preceded by a message."""
        if not calls:
            raise ValueError("a tool_calls turn needs at least one call")
        return Turn(
            "tool_calls",
            reply_text=text,
            reasoning=reasoning,
            calls=tuple(calls),
            usage=usage or Usage.default(),
            delay=delay,
        )

    @staticmethod
    def error(
        status: int,
        *,
        error_type: str | None = None,
        code: str | None = None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> Turn:
        """An HTTP error with an OpenAI-style body, e.g. 400, 401, 429, 500. No usage."""
        etype, ecode = ERROR_TYPES.get(status, ("server_error", "server_error"))
        etype = error_type or etype
        return Turn(
            "error",
            status=status,
            error_type=etype,
            error_code=code or ecode,
            error_message=message or f"Fake {etype} ({status})",
            headers=dict(headers or {}),
            usage=Usage(),
            delay=delay,
        )

    @staticmethod
    def failed(
        *, code: str = "server_error", message: str | None = None, delay: float = 0.0
    ) -> Turn:
        """A 200 stream that ends in ``response.failed`` with ``{code, message}``. No usage."""
        return Turn(
            "failed",
            error_code=code,
            error_message=message or f"Fake response failure ({code})",
            usage=Usage(),
            delay=delay,
        )

    @staticmethod
    def disconnect(
        *, text: str = "Partial ans", usage: Usage | None = None, delay: float = 0.0
    ) -> Turn:
        """Start answering (response.created, part of a message) and drop the connection.

        ``usage`` (zero by default) counts as returned although no response.completed carries it.
        """
        return Turn("disconnect", reply_text=text, usage=usage or Usage(), delay=delay)


def offered_tools(body: Any) -> list[dict[str, Any]]:
    """The tools a responses request offers: its ``tools`` list, else ``additional_tools`` items.

    Codex 0.169 sends its tools as an ``{"type": "additional_tools", "tools": [...]}`` input
    item (namespaces of function/custom tools) and no ``tools`` key; older clients (and OpenAI's
    SDKs) send a top-level ``tools`` list.
    """
    if not isinstance(body, dict):
        return []
    found: list[dict[str, Any]] = []
    if isinstance(body.get("tools"), list):
        found += [t for t in body["tools"] if isinstance(t, dict)]
    items = body.get("input")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            tools = item.get("tools")
            found += [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
    return found


def default_is_main_loop(body: Any) -> bool:
    """A responses request belongs to the agent loop iff it offers at least one tool."""
    return bool(offered_tools(body))


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
    def tools(self) -> list[dict[str, Any]]:
        """The tools offered (see ``offered_tools``), namespaces as they are."""
        return offered_tools(self.body)

    @property
    def tool_names(self) -> list[str]:
        """Every tool offered by name, namespaced ones as ``namespace.name``; built-ins by type."""
        names: list[str] = []

        def walk(tools: list[Any], prefix: str) -> None:
            for tool in tools:
                if not isinstance(tool, dict):
                    continue
                name = str(tool.get("name") or tool.get("type"))
                if tool.get("type") == "namespace" and isinstance(tool.get("tools"), list):
                    walk(tool["tools"], f"{prefix}{name}.")
                else:
                    names.append(prefix + name)

        walk(self.tools, "")
        return names

    @property
    def input_items(self) -> list[dict[str, Any]]:
        if not isinstance(self.body, dict) or not isinstance(self.body.get("input"), list):
            return []
        return [i for i in self.body["input"] if isinstance(i, dict)]

    def tool_outputs(self) -> list[str]:
        """The output text of every tool call result this request sends back, in order."""
        outputs = []
        for item in self.input_items:
            if item.get("type") not in ("function_call_output", "custom_tool_call_output"):
                continue
            output = item.get("output")
            if isinstance(output, list):  # content items
                output = "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))
            elif isinstance(output, dict):
                output = str(output.get("content", ""))
            outputs.append(str(output))
        return outputs

    @property
    def credential(self) -> str | None:
        """The Bearer token of the authorization header, else an api-key header."""
        auth = self.headers.get("authorization")
        if auth is not None:
            return auth[7:].strip() if auth.lower().startswith("bearer ") else auth
        return self.headers.get("api-key") or self.headers.get("x-api-key")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeOpenAI


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "FakeOpenAI/1.0"
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


def _route(path: str) -> str:
    """The API route of a path, without the /v1 prefix and trailing slashes."""
    route = path.rstrip("/")
    return route.removeprefix("/v1") if route.startswith("/v1/") else route


class FakeOpenAI:
    """A threaded fake Responses API server answering main-loop requests from a script."""

    def __init__(
        self,
        script: Iterable[Turn] = (),
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        when_exhausted: Turn | None = None,
        aux_text: str = "Fake title",
        aux_usage: Usage | None = None,
        unknown_status: int = 404,
        is_main_loop: Callable[[Any], bool] = default_is_main_loop,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.when_exhausted = when_exhausted or Turn.text("Done.")
        self.aux_text = aux_text
        self.aux_usage = aux_usage or Usage.aux_default()
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
        """The base URL to give OPENAI_BASE_URL (with /v1), as seen from ``host``."""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

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
        """Every Bearer token (or api-key header) any request carried."""
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
            elif record.kind == "models":
                record.status = 200
                self._send_json(handler, 200, {"object": "list", "data": [], "models": []})
            else:
                record.status = self.unknown_status
                payload: Mapping[str, Any] = {}
                if self.unknown_status != 200:
                    message = f"Fake: no route for {record.method} {record.path}"
                    payload = _error_body("invalid_request_error", "not_found", message)
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
        route = _route(split.path)
        kind: RequestKind = "other"
        if method == "POST" and route == "/responses":
            kind = "main" if self.is_main_loop(body) else "aux"
        elif method == "GET" and route == "/models":
            kind = "models"
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
        """Store the record; the turn that answers it (None: not a responses request)."""
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

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake_{next(self._ids):04d}"

    def _answer_turn(self, handler: _Handler, record: RecordedRequest, turn: Turn) -> None:
        if turn.delay > 0 and self._stopping.wait(turn.delay):
            raise _DroppedError
        if turn.kind == "error":
            record.status = turn.status
            self._send_json(
                handler,
                turn.status,
                _error_body(turn.error_type, turn.error_code, turn.error_message),
                extra_headers=turn.headers,
            )
            return
        record.status = 200
        response_id = self._new_id("resp")
        model = record.model or "gpt-fake"
        items = self._items(turn)
        if not record.stream:
            self._count_usage(record, turn.usage)
            response = _response(response_id, model, "completed", items, turn.usage)
            if turn.kind == "disconnect":
                data = json.dumps(response).encode()
                handler.send_response(200)
                handler.send_header("content-type", "application/json")
                handler.send_header("content-length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data[: len(data) // 2])
                self._drop(handler)
            if turn.kind == "failed":
                response = _response(response_id, model, "failed", [], None)
                response["error"] = {"code": turn.error_code, "message": turn.error_message}
            self._send_json(handler, 200, response)
            return
        self._stream(handler, record, turn, response_id, model, items)

    def _stream(
        self,
        handler: _Handler,
        record: RecordedRequest,
        turn: Turn,
        response_id: str,
        model: str,
        items: list[dict[str, Any]],
    ) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream; charset=utf-8")
        handler.send_header("cache-control", "no-cache")
        handler.send_header("transfer-encoding", "chunked")
        handler.send_header("x-request-id", f"req_{response_id}")
        handler.end_headers()
        seq = itertools.count()

        def event(name: str, data: dict[str, Any]) -> None:
            payload = {"type": name, "sequence_number": next(seq), **data}
            self._write_chunk(handler, f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())

        in_progress = _response(response_id, model, "in_progress", [], None)
        event("response.created", {"response": in_progress})
        event("response.in_progress", {"response": in_progress})
        if turn.kind == "disconnect":
            self._count_usage(record, turn.usage)
            item_id = self._new_id("msg")
            event(
                "response.output_item.added",
                {"output_index": 0, "item": _message(item_id, "", "in_progress")},
            )
            event(
                "response.output_text.delta",
                {
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": turn.reply_text,
                },
            )
            self._drop(handler)
        if turn.kind == "failed":
            failed = _response(response_id, model, "failed", [], None)
            failed["error"] = {"code": turn.error_code, "message": turn.error_message}
            event("response.failed", {"response": failed})
            self._write_chunk(handler, b"")
            return
        for index, item in enumerate(items):
            self._stream_item(event, index, item)
        self._count_usage(record, turn.usage)
        event(
            "response.completed",
            {"response": _response(response_id, model, "completed", items, turn.usage)},
        )
        self._write_chunk(handler, b"")

    @staticmethod
    def _stream_item(
        event: Callable[[str, dict[str, Any]], None], index: int, item: dict[str, Any]
    ) -> None:
        kind = item["type"]
        item_id = item["id"]
        at = {"item_id": item_id, "output_index": index}
        if kind == "message":
            text = item["content"][0]["text"]
            event(
                "response.output_item.added",
                {"output_index": index, "item": _message(item_id, "", "in_progress", empty=True)},
            )
            part = {"type": "output_text", "text": "", "annotations": []}
            event("response.content_part.added", {**at, "content_index": 0, "part": part})
            for piece in _halves(text):
                event("response.output_text.delta", {**at, "content_index": 0, "delta": piece})
            event("response.output_text.done", {**at, "content_index": 0, "text": text})
            event(
                "response.content_part.done",
                {**at, "content_index": 0, "part": item["content"][0]},
            )
        elif kind == "reasoning":
            text = item["summary"][0]["text"]
            event(
                "response.output_item.added",
                {"output_index": index, "item": {**item, "summary": []}},
            )
            part = {"type": "summary_text", "text": ""}
            event("response.reasoning_summary_part.added", {**at, "summary_index": 0, "part": part})
            for piece in _halves(text):
                event(
                    "response.reasoning_summary_text.delta",
                    {**at, "summary_index": 0, "delta": piece},
                )
            event("response.reasoning_summary_text.done", {**at, "summary_index": 0, "text": text})
            event(
                "response.reasoning_summary_part.done",
                {**at, "summary_index": 0, "part": item["summary"][0]},
            )
        elif kind == "function_call":
            event(
                "response.output_item.added",
                {"output_index": index, "item": {**item, "arguments": "", "status": "in_progress"}},
            )
            for piece in _halves(item["arguments"]):
                event("response.function_call_arguments.delta", {**at, "delta": piece})
            event("response.function_call_arguments.done", {**at, "arguments": item["arguments"]})
        else:  # custom_tool_call
            event(
                "response.output_item.added",
                {"output_index": index, "item": {**item, "input": "", "status": "in_progress"}},
            )
            for piece in _halves(item["input"]):
                event("response.custom_tool_call_input.delta", {**at, "delta": piece})
            event("response.custom_tool_call_input.done", {**at, "input": item["input"]})
        event("response.output_item.done", {"output_index": index, "item": item})

    def _items(self, turn: Turn) -> list[dict[str, Any]]:
        """The output items of a text or tool_calls turn, in the order they are streamed."""
        items: list[dict[str, Any]] = []
        if turn.kind not in ("text", "tool_calls"):
            return items
        if turn.reasoning:
            items.append(
                {
                    "type": "reasoning",
                    "id": self._new_id("rs"),
                    "summary": [{"type": "summary_text", "text": turn.reasoning}],
                }
            )
        if turn.reply_text:
            items.append(_message(self._new_id("msg"), turn.reply_text, "completed"))
        for call in turn.calls:
            call_id = call.call_id or self._new_id("call")
            if isinstance(call, FunctionCall):
                items.append(
                    {
                        "type": "function_call",
                        "id": self._new_id("fc"),
                        "call_id": call_id,
                        "name": call.name,
                        "arguments": call.arguments_json(),
                        "status": "completed",
                    }
                )
            else:
                items.append(
                    {
                        "type": "custom_tool_call",
                        "id": self._new_id("ctc"),
                        "call_id": call_id,
                        "name": call.name,
                        "input": call.input,
                        "status": "completed",
                    }
                )
        return items

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
            handler.send_header("x-request-id", "req_fake_error")
        for name, value in (extra_headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        if not head:
            handler.wfile.write(data)
        handler.wfile.flush()


def _message(item_id: str, text: str, status: str, *, empty: bool = False) -> dict[str, Any]:
    content = [] if empty else [{"type": "output_text", "text": text, "annotations": []}]
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _response(
    response_id: str, model: str, status: str, output: list[dict[str, Any]], usage: Usage | None
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "model": model,
        "output": output,
        "usage": usage.as_dict() if usage is not None else None,
    }


def _error_body(error_type: str, code: str, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _halves(text: str) -> Iterator[str]:
    """The text in two pieces (one when it is shorter than two characters)."""
    if len(text) < 2:
        yield text
        return
    mid = len(text) // 2
    yield text[:mid]
    yield text[mid:]
