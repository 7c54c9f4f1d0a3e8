"""Tests of the scripted fake OpenAI Responses API (tests/fake_openai.py), stdlib clients only."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

import fake_http
from fake_openai import (
    CustomToolCall,
    FakeOpenAI,
    FunctionCall,
    RecordedRequest,
    Turn,
    Usage,
    add_file,
    apply_patch,
    code,
    code_apply_patch,
    code_exec_command,
    default_is_main_loop,
    exec_command,
    patch,
    update_file,
)

KEY = "sk-test-unit-openai"
TOOLS = [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}]
# How Codex 0.169's default models are offered their tools: an input item, no "tools" key.
ADDITIONAL_TOOLS = {
    "type": "additional_tools",
    "role": "developer",
    "tools": [
        {
            "type": "namespace",
            "name": "functions",
            "tools": [
                {"type": "custom", "name": "exec", "format": {"type": "grammar"}},
                {"type": "function", "name": "wait", "parameters": {"type": "object"}},
            ],
        },
        {"type": "namespace", "name": "clock", "tools": [{"type": "function", "name": "sleep"}]},
    ],
}


def body(*, stream: bool, tools: bool = True, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": "gpt-test-model",
        "stream": stream,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text"}]}],
    }
    if tools:
        payload["tools"] = TOOLS
    payload.update(extra)
    return payload


def post(
    fake: FakeOpenAI,
    payload: Any,
    *,
    path: str = "/v1/responses",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    auth = {"authorization": f"Bearer {KEY}", **(headers or {})}
    return fake_http.post(fake.port, path, payload, auth)


def sse_events(data: bytes) -> list[dict[str, Any]]:
    """Each event's data, checked against its event name and numbered in order."""
    events = [payload for _, payload in fake_http.sse_events(data)]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def assemble(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Rebuild the response from the stream the way a client does, checking each item's deltas
    add up to its done event; the result is response.completed's response."""
    items: dict[int, dict[str, Any]] = {}
    streamed: dict[int, str] = {}
    completed: dict[str, Any] = {}
    for event in events:
        kind = event["type"]
        if kind == "response.output_item.added":
            items[event["output_index"]] = event["item"]
            streamed[event["output_index"]] = ""
        elif kind.endswith(".delta"):
            streamed[event["output_index"]] += event["delta"]
        elif kind == "response.output_item.done":
            item, text = event["item"], streamed[event["output_index"]]
            assert item["id"] == items[event["output_index"]]["id"]
            if item["type"] == "message":
                assert text == item["content"][0]["text"]
            elif item["type"] == "reasoning":
                assert text == item["summary"][0]["text"]
            elif item["type"] == "function_call":
                assert text == item["arguments"]
            else:
                assert text == item["input"]
            items[event["output_index"]] = item
        elif kind == "response.completed":
            completed = event["response"]
    assert completed["output"] == [items[i] for i in sorted(items)]
    return completed


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(host="127.0.0.1") as server:
        yield server


def test_streaming_text_turn_sends_the_full_event_sequence(fake: FakeOpenAI) -> None:
    usage = Usage(input_tokens=50, cached_tokens=6, cache_write_tokens=7, output_tokens=8)
    fake.add_turns(Turn.text("Hello there, world.", usage=usage))
    status, headers, data = post(fake, body(stream=True))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = sse_events(data)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress"
    response = assemble(events)
    assert response["status"] == "completed"
    assert response["model"] == "gpt-test-model"
    (message,) = response["output"]
    assert message["role"] == "assistant"
    assert message["content"][0]["text"] == "Hello there, world."
    assert response["usage"] == {
        "input_tokens": 50,
        "input_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 7},
        "output_tokens": 8,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 58,
    }
    assert fake.main_usage_total == usage


def test_tool_calls_turn_with_reasoning_message_and_several_calls(fake: FakeOpenAI) -> None:
    calls: list[FunctionCall | CustomToolCall] = [
        exec_command("ls -la", workdir="/w"),
        apply_patch(patch(add_file("a.txt", "one\ntwo\n"))),
        code_exec_command("git status"),
        FunctionCall("wait", {"cell_id": "1"}, call_id="call_given"),
    ]
    fake.add_turns(Turn.tool_calls(*calls, text="Working.", reasoning="Thinking it over."))
    response = assemble(sse_events(post(fake, body(stream=True))[2]))
    kinds = [(i["type"], i.get("name")) for i in response["output"]]
    assert kinds == [
        ("reasoning", None),
        ("message", None),
        ("function_call", "exec_command"),
        ("custom_tool_call", "apply_patch"),
        ("custom_tool_call", "exec"),
        ("function_call", "wait"),
    ]
    reasoning, message, ls, patched, coded, wait = response["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Thinking it over."}]
    assert message["content"][0]["text"] == "Working."
    assert json.loads(ls["arguments"]) == {"cmd": "ls -la", "workdir": "/w"}
    assert patched["input"] == "*** Begin Patch\n*** Add File: a.txt\n+one\n+two\n*** End Patch"
    assert coded["input"] == (
        'const r = await tools.exec_command({"cmd": "git status"});\ntext(r.output);'
    )
    assert wait["call_id"] == "call_given"
    call_ids = [i["call_id"] for i in response["output"][2:]]
    assert len(set(call_ids)) == 4
    assert len({i["id"] for i in response["output"]}) == 6


def test_patch_helpers_write_codex_patch_texts() -> None:
    text = patch(update_file("src/app.py", "    return 1", "    return 2"), add_file("n.md", "x\n"))
    assert text == (
        "*** Begin Patch\n"
        "*** Update File: src/app.py\n@@\n-    return 1\n+    return 2\n"
        "*** Add File: n.md\n+x\n"
        "*** End Patch"
    )
    assert code_apply_patch(text) == CustomToolCall(
        "exec", f"text(await tools.apply_patch({json.dumps(text)}));"
    )
    assert code("exit();") == CustomToolCall("exec", "exit();")
    assert exec_command("true") == FunctionCall("exec_command", {"cmd": "true"})


def test_non_streaming_answers_a_json_response(fake: FakeOpenAI) -> None:
    fake.add_turns(Turn.tool_calls(exec_command("true")), Turn.text("Final."))
    status, headers, data = post(fake, body(stream=False))
    assert status == 200
    assert headers["content-type"] == "application/json"
    first = json.loads(data)
    assert first["object"] == "response"
    assert first["status"] == "completed"
    assert first["output"][0]["type"] == "function_call"
    assert first["usage"] == Usage.default().as_dict()
    second = json.loads(post(fake, body(stream=False))[2])
    assert second["output"][0]["content"][0]["text"] == "Final."


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "invalid_request"),
        (401, "invalid_api_key"),
        (429, "rate_limit_exceeded"),
        (500, "server_error"),
    ],
)
def test_error_turns(fake: FakeOpenAI, status: int, code: str) -> None:
    fake.add_turns(Turn.error(status, headers={"retry-after": "0"}))
    got, headers, data = post(fake, body(stream=True))
    assert got == status
    assert headers["retry-after"] == "0"
    error = json.loads(data)["error"]
    assert error["code"] == code
    assert str(status) in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fake.main_usage_total == Usage()
    assert fake.requests[0].status == status


def test_error_turn_with_custom_type_code_and_message(fake: FakeOpenAI) -> None:
    fake.add_turns(Turn.error(400, error_type="invalid_request_error", code="x", message="bad"))
    status, _, data = post(fake, body(stream=False))
    assert status == 400
    assert json.loads(data)["error"] == {
        "message": "bad",
        "type": "invalid_request_error",
        "param": None,
        "code": "x",
    }


def test_failed_turn_streams_response_failed(fake: FakeOpenAI) -> None:
    fake.add_turns(Turn.failed(code="context_length_exceeded", message="too long"))
    status, _, data = post(fake, body(stream=True))
    assert status == 200
    events = sse_events(data)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "context_length_exceeded", "message": "too long"}
    fake.add_turns(Turn.failed())
    plain = json.loads(post(fake, body(stream=False))[2])
    assert (plain["status"], plain["error"]["code"]) == ("failed", "server_error")
    assert fake.main_usage_total == Usage()


def test_codex_additional_tools_make_a_request_main_loop(fake: FakeOpenAI) -> None:
    fake.add_turns(Turn.text("main"))
    lite = body(stream=True, tools=False)
    lite["input"] = [ADDITIONAL_TOOLS, *lite["input"]]
    response = assemble(sse_events(post(fake, lite)[2]))
    assert response["output"][0]["content"][0]["text"] == "main"
    (req,) = fake.requests
    assert req.kind == "main"
    assert req.tool_names == ["functions.exec", "functions.wait", "clock.sleep"]
    assert default_is_main_loop(lite)
    assert default_is_main_loop(body(stream=True))
    assert not default_is_main_loop(body(stream=True, tools=False))
    assert not default_is_main_loop({**body(stream=True), "tools": []})
    assert not default_is_main_loop([1, 2])


def test_auxiliary_requests_do_not_consume_turns(fake: FakeOpenAI) -> None:
    fake.add_turns(Turn.text("main answer"))
    status, _, data = post(fake, body(stream=False, tools=False))
    assert status == 200
    aux = json.loads(data)
    assert aux["output"][0]["content"][0]["text"] == "Fake title"
    assert aux["usage"] == Usage.aux_default().as_dict()
    aux_stream = assemble(
        sse_events(post(fake, body(stream=True, tools=False), path="/responses")[2])
    )
    assert aux_stream["output"][0]["content"][0]["text"] == "Fake title"
    assert fake.turns_used == 0
    main = assemble(sse_events(post(fake, body(stream=True))[2]))
    assert main["output"][0]["content"][0]["text"] == "main answer"
    assert [r.kind for r in fake.requests] == ["aux", "aux", "main"]
    assert fake.main_usage_total == Usage.default()
    assert fake.all_usage_total == Usage.default() + Usage.aux_default() * 2


def test_models_and_other_paths_are_recorded_and_answered_harmlessly(fake: FakeOpenAI) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    conn.request("GET", "/v1/models?client_version=1")
    resp = conn.getresponse()
    assert (resp.status, json.loads(resp.read())["data"]) == (200, [])
    # A WebSocket upgrade, as Codex's built-in OpenAI provider tries first: refused.
    conn.request("GET", "/v1/responses", headers={"upgrade": "websocket", "connection": "upgrade"})
    resp = conn.getresponse()
    assert resp.status == 404
    assert json.loads(resp.read())["error"]["code"] == "not_found"
    conn.request("HEAD", "/health")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 404
    conn.close()
    assert [(r.method, r.path, r.query, r.kind) for r in fake.requests] == [
        ("GET", "/v1/models", "client_version=1", "models"),
        ("GET", "/v1/responses", "", "other"),
        ("HEAD", "/health", "", "other"),
    ]
    assert fake.requests[1].headers["upgrade"] == "websocket"
    assert fake.turns_used == 0


def test_the_authorization_header_wins_over_an_api_key_header(fake: FakeOpenAI) -> None:
    fake.add_turns(Turn.text("a"), Turn.text("b"))
    post(fake, body(stream=True))
    assert fake.saw_api_key(KEY)
    assert not fake.saw_api_key("sk-other")
    post(fake, body(stream=True), headers={"authorization": "", "api-key": "azure-key"})
    first, second = fake.requests
    assert first.tool_names == ["exec_command"]
    assert first.credential == KEY
    assert second.credential == ""  # an empty authorization header still wins
    assert fake.credentials_seen() == {KEY, ""}
    assert not fake.saw_api_key(KEY)


def test_api_key_header_and_unparsable_body(fake: FakeOpenAI) -> None:
    post(fake, b"not json", headers={"authorization": "Token abc"})
    post(fake, b"", headers={"authorization": "", "api-key": "k2"})
    first, second = fake.requests
    assert first.credential == "Token abc"  # not a Bearer token: the whole header
    assert first.body is None
    assert first.raw_body == b"not json"
    assert first.kind == "aux"  # no tools: cannot be the agent loop
    assert second.headers["api-key"] == "k2"


def test_tool_outputs_of_a_request() -> None:
    record = RecordedRequest(
        method="POST",
        path="/v1/responses",
        query="",
        headers={},
        body={
            "input": [
                {"type": "function_call", "call_id": "c1"},
                {"type": "function_call_output", "call_id": "c1", "output": "plain"},
                {
                    "type": "custom_tool_call_output",
                    "output": [
                        {"type": "input_text", "text": "a"},
                        {"type": "input_text", "text": "b"},
                    ],
                },
                {"type": "function_call_output", "output": {"content": "in a dict"}},
                "not an item",
            ]
        },
        raw_body=b"",
        kind="main",
        time=0.0,
    )
    assert record.tool_outputs() == ["plain", "ab", "in a dict"]
    assert record.tool_names == []


def test_usage_totals_sum_main_loop_turns() -> None:
    u1 = Usage(10, 1, 2, 3, 4)
    u2 = Usage(100, 10, 20, 30, 40)
    script = [
        Turn.tool_calls(exec_command("x"), usage=u1),
        Turn.error(500),
        Turn.failed(),
        Turn.text("t", usage=u2),
    ]
    with FakeOpenAI(script, host="127.0.0.1", aux_usage=Usage(1000, 0, 0, 2000, 0)) as fake:
        post(fake, body(stream=True))
        post(fake, body(stream=True))
        post(fake, body(stream=True))
        post(fake, body(stream=False, tools=False))
        post(fake, body(stream=False))
        post(fake, body(stream=True))  # exhausted: the default "Done." usage
        assert fake.main_usage_total == Usage(110, 11, 22, 33, 44) + Usage.default()
        assert fake.all_usage_total == Usage(1110, 11, 22, 2033, 44) + Usage.default()


def test_usage_defaults_are_distinct_and_arithmetic_works() -> None:
    d = Usage.default()
    values = [
        d.input_tokens,
        d.cached_tokens,
        d.cache_write_tokens,
        d.output_tokens,
        d.reasoning_tokens,
    ]
    assert len(set(values)) == 5
    assert all(v > 0 for v in values)
    assert d.uncached_input_tokens == d.input_tokens - d.cached_tokens - d.cache_write_tokens > 0
    assert (d.cache_read_input_tokens, d.cache_creation_input_tokens) == (
        d.cached_tokens,
        d.cache_write_tokens,
    )
    assert d.total_tokens == d.input_tokens + d.output_tokens
    assert d + d == d * 2
    assert d * 2 != d * 3


def test_tool_calls_turn_needs_a_call() -> None:
    with pytest.raises(ValueError, match="at least one call"):
        Turn.tool_calls()
