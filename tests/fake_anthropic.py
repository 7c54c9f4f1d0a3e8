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

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fake_http import FakeServer, Handler, RecordedRequestBase, TokenCounts, bearer_token, halves

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
class Usage(TokenCounts):
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
class RecordedRequest(RecordedRequestBase):
    """One request the fake received, and what it did with it."""

    kind: RequestKind
    turn: Turn | None = None  # the turn answered (also the fallback when exhausted)

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
        return bearer_token(auth) if auth is not None else None


class FakeAnthropic(FakeServer[Turn, Usage, RecordedRequest]):
    """A threaded fake Messages API server answering main-loop requests from a script.

    ``url(host)`` is the base URL to give ANTHROPIC_BASE_URL, as seen from ``host``.
    """

    server_version = "FakeAnthropic/1.0"
    request_id_header = "request-id"

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
        self.count_tokens = count_tokens

    # -- serving ------------------------------------------------------------------------------

    def _kind(self, method: str, path: str, body: Any) -> RequestKind:
        route = path.rstrip("/")
        if method == "POST" and route == "/v1/messages":
            return "main" if self.is_main_loop(body) else "aux"
        if method == "POST" and route == "/v1/messages/count_tokens":
            return "count_tokens"
        return "other"

    def _aux_turn(self) -> Turn:
        return Turn.text(self.aux_text, usage=self.aux_usage)

    def _fixed_answer(self, record: RecordedRequest) -> Mapping[str, Any] | None:
        return {"input_tokens": self.count_tokens} if record.kind == "count_tokens" else None

    def _not_found_body(self, message: str) -> Mapping[str, Any]:
        return _error_body("not_found_error", message)

    def _answer_turn(self, handler: Handler, record: RecordedRequest, turn: Turn) -> None:
        self._delay(turn.delay)
        model = record.model or "claude-fake"
        if turn.kind == "error":
            record.status = turn.status
            handler.send_json(
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
                handler.send_json_cut(message)
            handler.send_json(200, message)
            return

        handler.start_event_stream(f"req_fake_{msg_id}")
        start_usage = turn.usage.as_dict()
        start_usage["output_tokens"] = min(1, turn.usage.output_tokens)
        handler.write_event(
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
        handler.write_event("ping", {"type": "ping"})
        if turn.kind == "disconnect":
            handler.write_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            handler.write_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": turn.reply_text},
                },
            )
            handler.drop()
        for index, block in enumerate(content):
            if block["type"] == "text":
                handler.write_event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                for piece in halves(str(block["text"])):
                    handler.write_event(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                    )
            else:
                handler.write_event(
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
                for piece in halves(json.dumps(block["input"])):
                    handler.write_event(
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
            handler.write_event(
                "content_block_stop",
                {"type": "content_block_stop", "index": index},
            )
        handler.write_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": turn.stop_reason, "stop_sequence": None},
                "usage": turn.usage.as_dict(),
            },
        )
        handler.write_event("message_stop", {"type": "message_stop"})
        handler.write_chunk(b"")

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


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": "req_fake_error",
    }
