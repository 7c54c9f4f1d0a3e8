"""Tests of the scripted fake Anthropic API (tests/fake_anthropic.py), with stdlib clients only."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

import fake_http
from fake_anthropic import (
    FakeAnthropic,
    ToolUse,
    Turn,
    Usage,
    bash,
    edit,
    write,
)
from fake_http import sse_events

TOOLS = [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]
KEY = "sk-ant-test-unit"


def body(*, stream: bool, tools: bool = True, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": "claude-test-model",
        "max_tokens": 1000,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    }
    if tools:
        payload["tools"] = TOOLS
    payload.update(extra)
    return payload


def post(
    fake: FakeAnthropic,
    payload: Any,
    *,
    path: str = "/v1/messages?beta=true",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    return fake_http.post(fake.port, path, payload, {"x-api-key": KEY, **(headers or {})})


def assemble(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Rebuild the final Message the way an SDK client would."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for name, event in events:
        if name == "message_start":
            message = dict(event["message"])
            message["content"] = []
        elif name == "content_block_start":
            assert event["index"] == len(message["content"])
            message["content"].append(dict(event["content_block"]))
        elif name == "content_block_delta":
            block = message["content"][event["index"]]
            delta = event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                assert delta["type"] == "input_json_delta"
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
        elif name == "content_block_stop":
            if event["index"] in partial:
                message["content"][event["index"]]["input"] = json.loads(partial[event["index"]])
        elif name == "message_delta":
            message["stop_reason"] = event["delta"]["stop_reason"]
            message["usage"] = {**message["usage"], **event["usage"]}
    return message


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(host="127.0.0.1") as server:
        yield server


def test_streaming_text_turn_sends_the_full_event_sequence(fake: FakeAnthropic) -> None:
    usage = Usage(
        input_tokens=5,
        output_tokens=6,
        cache_read_input_tokens=7,
        cache_creation_input_tokens=8,
    )
    fake.add_turns(Turn.text("Hello there, world.", usage=usage))
    status, headers, data = post(fake, body(stream=True))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = sse_events(data)
    names = [name for name, _ in events if name != "ping"]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 1
    message = assemble(events)
    assert message["model"] == "claude-test-model"
    assert message["content"] == [{"type": "text", "text": "Hello there, world."}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == usage.as_dict()
    delta = next(e for n, e in events if n == "message_delta")
    assert delta["usage"]["output_tokens"] == 6


def test_streaming_tool_use_turn_with_several_tools(fake: FakeAnthropic) -> None:
    tools = [
        write("/w/a.txt", 'line "1"\n'),
        edit("/w/a.txt", "1", "2"),
        bash("ls -la /w", "List"),
        ToolUse("Read", {"file_path": "/w/a.txt"}, id="toolu_given"),
    ]
    fake.add_turns(Turn.tool_use(*tools, text="Working."))
    _, _, data = post(fake, body(stream=True))
    message = assemble(sse_events(data))
    assert message["stop_reason"] == "tool_use"
    content = message["content"]
    assert content[0] == {"type": "text", "text": "Working."}
    assert [b["name"] for b in content[1:]] == ["Write", "Edit", "Bash", "Read"]
    assert content[1]["input"] == {"file_path": "/w/a.txt", "content": 'line "1"\n'}
    assert content[2]["input"] == {
        "file_path": "/w/a.txt",
        "old_string": "1",
        "new_string": "2",
    }
    assert content[3]["input"] == {"command": "ls -la /w", "description": "List"}
    assert content[4]["id"] == "toolu_given"
    ids = [b["id"] for b in content[1:]]
    assert len(set(ids)) == 4
    assert all(i.startswith("toolu_") for i in ids)


def test_non_streaming_answers_a_json_message(fake: FakeAnthropic) -> None:
    fake.add_turns(Turn.tool_use(bash("true")), Turn.text("Final."))
    status, headers, data = post(fake, body(stream=False))
    assert status == 200
    assert headers["content-type"] == "application/json"
    first = json.loads(data)
    assert first["type"] == "message"
    assert first["role"] == "assistant"
    assert first["stop_reason"] == "tool_use"
    assert first["content"][0]["input"] == {"command": "true"}
    assert first["usage"] == Usage.default().as_dict()
    second = json.loads(post(fake, body(stream=False))[2])
    assert second["content"] == [{"type": "text", "text": "Final."}]
    assert second["stop_reason"] == "end_turn"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_turns(fake: FakeAnthropic, status: int, error_type: str) -> None:
    fake.add_turns(Turn.error(status, headers={"retry-after": "0"}))
    got, headers, data = post(fake, body(stream=True))
    assert got == status
    assert headers["retry-after"] == "0"
    payload = json.loads(data)
    assert payload["type"] == "error"
    assert payload["error"]["type"] == error_type
    assert str(status) in payload["error"]["message"]
    assert fake.main_usage_total == Usage()
    assert fake.requests[0].status == status


def test_error_turn_with_custom_type_and_message(fake: FakeAnthropic) -> None:
    fake.add_turns(Turn.error(400, error_type="invalid_request_error", message="bad thing"))
    status, _, data = post(fake, body(stream=False))
    assert status == 400
    assert json.loads(data)["error"] == {
        "type": "invalid_request_error",
        "message": "bad thing",
    }


def test_auxiliary_requests_do_not_consume_turns(fake: FakeAnthropic) -> None:
    fake.add_turns(Turn.text("main answer"))
    status, _, data = post(fake, body(stream=False, tools=False, max_tokens=1))
    assert status == 200
    aux = json.loads(data)
    assert aux["content"] == [{"type": "text", "text": "Fake title"}]
    assert aux["usage"] == Usage.aux_default().as_dict()
    # An empty tools list is auxiliary too, streaming or not.
    aux_stream = assemble(
        sse_events(post(fake, {**body(stream=True, tools=False), "tools": []})[2])
    )
    assert aux_stream["content"][0]["text"] == "Fake title"
    status, _, data = post(
        fake, {"model": "m", "messages": []}, path="/v1/messages/count_tokens?beta=true"
    )
    assert status == 200
    assert json.loads(data) == {"input_tokens": 42}
    assert fake.turns_used == 0
    main = assemble(sse_events(post(fake, body(stream=True))[2]))
    assert main["content"][0]["text"] == "main answer"
    assert [r.kind for r in fake.requests] == ["aux", "aux", "count_tokens", "main"]
    assert fake.main_usage_total == Usage.default()
    assert fake.all_usage_total == Usage.default() + Usage.aux_default() * 2


def test_other_paths_are_recorded_and_answered_harmlessly(fake: FakeAnthropic) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    conn.request("HEAD", "/api/hello")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 404
    conn.request("GET", "/v1/models?limit=1")
    resp = conn.getresponse()
    assert resp.status == 404
    assert json.loads(resp.read())["error"]["type"] == "not_found_error"
    conn.close()
    reqs = fake.requests
    assert [(r.method, r.path, r.query, r.kind) for r in reqs] == [
        ("HEAD", "/api/hello", "", "other"),
        ("GET", "/v1/models", "limit=1", "other"),
    ]
    assert fake.turns_used == 0


def test_x_api_key_wins_over_a_bearer_token(fake: FakeAnthropic) -> None:
    fake.add_turns(Turn.text("a"), Turn.text("b"))
    post(fake, body(stream=True))
    assert fake.saw_api_key(KEY)
    assert not fake.saw_api_key("sk-ant-other")
    post(
        fake,
        body(stream=True),
        headers={"x-api-key": "", "authorization": "Bearer tok-123"},
    )
    first, second = fake.requests
    assert first.query == "beta=true"
    assert first.tool_names == ["Bash"]
    assert first.credential == KEY
    assert second.credential == ""  # an empty x-api-key header still wins
    assert fake.credentials_seen() == {KEY, ""}
    assert not fake.saw_api_key(KEY)


def test_bearer_credential(fake: FakeAnthropic) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    conn.request(
        "POST",
        "/v1/messages",
        body=b"not json",
        headers={"authorization": "Bearer tok-9"},
    )
    resp = conn.getresponse()
    resp.read()
    conn.close()
    (req,) = fake.requests
    assert req.credential == "tok-9"
    assert req.body is None
    assert req.raw_body == b"not json"
    assert req.kind == "aux"  # no tools: cannot be the agent loop
    assert fake.credentials_seen() == {"tok-9"}


def test_usage_totals_sum_main_loop_turns() -> None:
    u1 = Usage(1, 2, 3, 4)
    u2 = Usage(10, 20, 30, 40)
    script = [
        Turn.tool_use(bash("x"), usage=u1),
        Turn.error(500),
        Turn.text("t", usage=u2),
    ]
    with FakeAnthropic(script, host="127.0.0.1", aux_usage=Usage(100, 200, 0, 0)) as fake:
        post(fake, body(stream=True))
        post(fake, body(stream=True))
        post(fake, body(stream=False, tools=False))
        post(fake, body(stream=False))
        post(fake, body(stream=True))  # exhausted: the default "Done." usage
        assert fake.main_usage_total == Usage(11, 22, 33, 44) + Usage.default()
        assert fake.all_usage_total == Usage(111, 222, 33, 44) + Usage.default()


def test_usage_defaults_are_distinct_and_arithmetic_works() -> None:
    d = Usage.default()
    values = [
        d.input_tokens,
        d.output_tokens,
        d.cache_read_input_tokens,
        d.cache_creation_input_tokens,
    ]
    assert len(set(values)) == 4
    assert all(v > 0 for v in values)
    assert d + d == d * 2
    assert d * 2 != d * 3
    assert Usage(1, 2, 3, 4).as_dict() == {
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_read_input_tokens": 3,
        "cache_creation_input_tokens": 4,
    }


def test_tool_use_turn_needs_a_tool() -> None:
    with pytest.raises(ValueError, match="at least one ToolUse"):
        Turn.tool_use()
