"""Tests of the scripted fake Anthropic API (tests/fake_anthropic.py), with stdlib clients only."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fake_anthropic import (
    FakeAnthropic,
    ToolUse,
    Turn,
    Usage,
    bash,
    edit,
    write,
)

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
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    try:
        hdrs = {"content-type": "application/json", "x-api-key": KEY}
        hdrs.update(headers or {})
        conn.request("POST", path, body=json.dumps(payload).encode(), headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def sse_events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        payload = json.loads(lines["data"])
        assert payload["type"] == lines["event"]
        events.append((lines["event"], payload))
    return events


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


def test_disconnect_mid_stream(fake: FakeAnthropic) -> None:
    fake.add_turns(Turn.disconnect(text="half"), Turn.text("after"))
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    conn.request("POST", "/v1/messages", body=json.dumps(body(stream=True)))
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    conn.close()
    partial = info.value.partial.decode()
    assert "message_start" in partial
    assert "half" in partial
    assert "message_stop" not in partial
    # The next request gets the next turn.
    message = assemble(sse_events(post(fake, body(stream=True))[2]))
    assert message["content"][0]["text"] == "after"
    assert fake.main_usage_total == Usage.default()


def test_disconnect_non_streaming(fake: FakeAnthropic) -> None:
    fake.add_turns(Turn.disconnect())
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    conn.request("POST", "/v1/messages", body=json.dumps(body(stream=False)))
    resp = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()


def test_delay_before_answering(fake: FakeAnthropic) -> None:
    fake.add_turns(Turn.text("slow", delay=0.6))
    start = time.monotonic()
    status, _, _ = post(fake, body(stream=True))
    assert status == 200
    assert time.monotonic() - start >= 0.6


def test_delay_lets_a_client_time_out_and_stop_does_not_wait_for_it() -> None:
    server = FakeAnthropic([Turn.text("never seen", delay=30)], host="127.0.0.1").start()
    try:
        with pytest.raises(TimeoutError):
            post(server, body(stream=True), timeout=0.3)
    finally:
        start = time.monotonic()
        server.stop()
    assert time.monotonic() - start < 25  # well short of the 30 s delay: stop cut it short


def test_exhausted_script_answers_done(fake: FakeAnthropic) -> None:
    fake.add_turns(Turn.text("one"))
    texts = [
        assemble(sse_events(post(fake, body(stream=True))[2]))["content"][0]["text"]
        for _ in range(3)
    ]
    assert texts == ["one", "Done.", "Done."]
    assert fake.turns_used == 1
    assert fake.turns_left == 0
    assert [r.turn_index for r in fake.requests] == [0, None, None]


def test_when_exhausted_can_be_an_error() -> None:
    with FakeAnthropic(host="127.0.0.1", when_exhausted=Turn.error(529)) as fake:
        assert [post(fake, body(stream=True))[0] for _ in range(3)] == [529, 529, 529]


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


def test_unknown_status_200_answers_empty_object() -> None:
    with FakeAnthropic(host="127.0.0.1", unknown_status=200) as fake:
        conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
        conn.request("GET", "/anything")
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (200, {})
        conn.close()


def test_recording_and_credentials(fake: FakeAnthropic) -> None:
    fake.add_turns(Turn.text("a"), Turn.text("b"))
    post(fake, body(stream=True), headers={"X-Custom": "1"})
    assert fake.saw_api_key(KEY)
    assert not fake.saw_api_key("sk-ant-other")
    post(
        fake,
        body(stream=True),
        headers={"x-api-key": "", "authorization": "Bearer tok-123"},
    )
    reqs = fake.requests
    first, second = reqs
    assert first.method == "POST"
    assert first.path == "/v1/messages"
    assert first.query == "beta=true"
    assert first.headers["x-custom"] == "1"
    assert first.client.startswith("127.0.0.1:")
    assert first.body == body(stream=True)
    assert first.model == "claude-test-model"
    assert first.stream
    assert first.tool_names == ["Bash"]
    assert first.turn_index == 0
    assert first.turn == Turn.text("a")
    assert second.turn_index == 1
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


def test_concurrent_requests_each_get_one_turn() -> None:
    n = 12
    script = [Turn.text(f"turn {i}") for i in range(n)]
    with FakeAnthropic(script, host="127.0.0.1") as fake:
        texts: list[str] = []
        lock = threading.Lock()

        def worker() -> None:
            text = assemble(sse_events(post(fake, body(stream=True))[2]))["content"][0]["text"]
            with lock:
                texts.append(text)

        threads = [threading.Thread(target=worker) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(texts) == sorted(f"turn {i}" for i in range(n))
        assert sorted(r.turn_index or 0 for r in fake.requests) == list(range(n))
        assert fake.main_usage_total == Usage.default() * n


def test_keep_alive_connection_serves_several_requests(fake: FakeAnthropic) -> None:
    fake.add_turns(Turn.text("one"), Turn.text("two"))
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    texts = []
    for stream in (True, False):
        conn.request("POST", "/v1/messages", body=json.dumps(body(stream=stream)))
        resp = conn.getresponse()
        data = resp.read()
        message = assemble(sse_events(data)) if stream else json.loads(data)
        texts.append(message["content"][0]["text"])
    conn.close()
    assert texts == ["one", "two"]


def test_lifecycle_port_and_url() -> None:
    fake = FakeAnthropic()
    with pytest.raises(RuntimeError):
        _ = fake.port
    with fake:
        port = fake.port
        assert port > 0
        assert fake.host == "0.0.0.0"
        assert fake.url("127.0.0.1") == f"http://127.0.0.1:{port}"
        assert fake.url("host.docker.internal") == f"http://host.docker.internal:{port}"
        assert fake.url("::1") == f"http://[::1]:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=2),
    ):
        pass
    fake.stop()  # idempotent


def test_quiet_by_default(fake: FakeAnthropic, capsys: pytest.CaptureFixture[str]) -> None:
    fake.add_turns(Turn.text("x"))
    post(fake, body(stream=True))
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""
