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

Both fakes are built on tests/fake_http.py and share its API (context manager, ``url``,
``add_turns``, ``requests``, ``main_requests``, ``turns_used``, ``main_usage_total``,
``credentials_seen``, ``saw_api_key``), and ``Usage`` also answers to the Anthropic fake's field
names (``cache_read_input_tokens``, ``cache_creation_input_tokens``, and ``uncached_input_tokens``
for its ``input_tokens``), so fixtures can treat both fakes alike.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fake_http import FakeServer, Handler, RecordedRequestBase, TokenCounts, bearer_token, halves

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
class Usage(TokenCounts):
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
class RecordedRequest(RecordedRequestBase):
    """One request the fake received, and what it did with it."""

    kind: RequestKind
    turn: Turn | None = None  # the turn answered (also the fallback when exhausted)

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
            return bearer_token(auth)
        return self.headers.get("api-key") or self.headers.get("x-api-key")


def _route(path: str) -> str:
    """The API route of a path, without the /v1 prefix and trailing slashes."""
    route = path.rstrip("/")
    return route.removeprefix("/v1") if route.startswith("/v1/") else route


class FakeOpenAI(FakeServer[Turn, Usage, RecordedRequest]):
    """A threaded fake Responses API server answering main-loop requests from a script.

    ``url(host)`` is the base URL to give OPENAI_BASE_URL (with /v1), as seen from ``host``.
    """

    server_version = "FakeOpenAI/1.0"
    request_id_header = "x-request-id"
    base_path = "/v1"

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
        super().__init__(
            script,
            record_type=RecordedRequest,
            no_usage=Usage(),
            host=host,
            port=port,
            when_exhausted=when_exhausted or Turn.text("Done."),
            aux_text=aux_text,
            aux_usage=aux_usage or Usage.aux_default(),
            unknown_status=unknown_status,
            is_main_loop=is_main_loop,
            verbose=verbose,
        )

    # -- serving ------------------------------------------------------------------------------

    def _kind(self, method: str, path: str, body: Any) -> RequestKind:
        route = _route(path)
        if method == "POST" and route == "/responses":
            return "main" if self.is_main_loop(body) else "aux"
        if method == "GET" and route == "/models":
            return "models"
        return "other"

    def _aux_turn(self) -> Turn:
        return Turn.text(self.aux_text, usage=self.aux_usage)

    def _fixed_answer(self, record: RecordedRequest) -> Mapping[str, Any] | None:
        if record.kind == "models":
            return {"object": "list", "data": [], "models": []}
        return None

    def _not_found_body(self, message: str) -> Mapping[str, Any]:
        return _error_body("invalid_request_error", "not_found", message)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake_{next(self._ids):04d}"

    def _answer_turn(self, handler: Handler, record: RecordedRequest, turn: Turn) -> None:
        self._delay(turn.delay)
        if turn.kind == "error":
            record.status = turn.status
            handler.send_json(
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
                handler.send_json_cut(response)
            if turn.kind == "failed":
                response = _response(response_id, model, "failed", [], None)
                response["error"] = {"code": turn.error_code, "message": turn.error_message}
            handler.send_json(200, response)
            return
        self._stream(handler, record, turn, response_id, model, items)

    def _stream(
        self,
        handler: Handler,
        record: RecordedRequest,
        turn: Turn,
        response_id: str,
        model: str,
        items: list[dict[str, Any]],
    ) -> None:
        handler.start_event_stream(f"req_{response_id}")
        seq = itertools.count()

        def event(name: str, data: dict[str, Any]) -> None:
            handler.write_event(name, {"type": name, "sequence_number": next(seq), **data})

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
            handler.drop()
        if turn.kind == "failed":
            failed = _response(response_id, model, "failed", [], None)
            failed["error"] = {"code": turn.error_code, "message": turn.error_message}
            event("response.failed", {"response": failed})
            handler.write_chunk(b"")
            return
        for index, item in enumerate(items):
            self._stream_item(event, index, item)
        self._count_usage(record, turn.usage)
        event(
            "response.completed",
            {"response": _response(response_id, model, "completed", items, turn.usage)},
        )
        handler.write_chunk(b"")

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
            for piece in halves(text):
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
            for piece in halves(text):
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
            for piece in halves(item["arguments"]):
                event("response.function_call_arguments.delta", {**at, "delta": piece})
            event("response.function_call_arguments.done", {**at, "arguments": item["arguments"]})
        else:  # custom_tool_call
            event(
                "response.output_item.added",
                {"output_index": index, "item": {**item, "input": "", "status": "in_progress"}},
            )
            for piece in halves(item["input"]):
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
