"""Tests of what the scripted fake APIs share (tests/fake_http.py), run against both fakes
(tests/fake_anthropic.py, tests/fake_openai.py) with stdlib clients only. What each API's
answers look like is tested in test_fake_anthropic.py and test_fake_openai.py."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import fake_anthropic
import fake_openai
from fake_http import TokenCounts, bearer_token, halves, post, sse_events


@dataclass(frozen=True)
class Api:
    """One fake and how a client talks to it."""

    name: str
    fake_class: Callable[..., Any]
    turn: Any  # the fake's Turn class
    path: str  # of main-loop requests
    auth: dict[str, str]  # headers carrying KEY
    base_path: str  # what url() appends
    body: Callable[..., dict[str, Any]]  # body(stream=...) of a main-loop request
    text: Callable[[bytes, bool], str]  # the answer's text (streamed or not)
    stream_events: tuple[str, str]  # the first and the last event of a whole stream

    def post(self, fake: Any, *, stream: bool = True, **kwargs: Any) -> tuple[int, bytes]:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        status, _, data = post(fake.port, self.path, self.body(stream=stream), headers, **kwargs)
        return status, data

    def answer(self, fake: Any, *, stream: bool = True) -> str:
        status, data = self.post(fake, stream=stream)
        assert status == 200
        return self.text(data, stream)


KEY = "sk-test-unit-shared"


def anthropic_body(*, stream: bool) -> dict[str, Any]:
    return {
        "model": "claude-test-model",
        "max_tokens": 1000,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
    }


def anthropic_text(data: bytes, stream: bool) -> str:
    if not stream:
        return str(json.loads(data)["content"][0]["text"])
    deltas = [e["delta"] for name, e in sse_events(data) if name == "content_block_delta"]
    return "".join(d["text"] for d in deltas if d["type"] == "text_delta")


def openai_body(*, stream: bool) -> dict[str, Any]:
    return {
        "model": "gpt-test-model",
        "stream": stream,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text"}]}],
        "tools": [{"type": "function", "name": "exec_command"}],
    }


def openai_text(data: bytes, stream: bool) -> str:
    if not stream:
        return str(json.loads(data)["output"][0]["content"][0]["text"])
    events = sse_events(data)
    return "".join(e["delta"] for name, e in events if name == "response.output_text.delta")


APIS = [
    Api(
        "anthropic",
        fake_anthropic.FakeAnthropic,
        fake_anthropic.Turn,
        "/v1/messages?beta=true",
        {"x-api-key": KEY},
        "",
        anthropic_body,
        anthropic_text,
        ("message_start", "message_stop"),
    ),
    Api(
        "openai",
        fake_openai.FakeOpenAI,
        fake_openai.Turn,
        "/v1/responses",
        {"authorization": f"Bearer {KEY}"},
        "/v1",
        openai_body,
        openai_text,
        ("response.created", "response.completed"),
    ),
]


@pytest.fixture(params=APIS, ids=[api.name for api in APIS])
def api(request: pytest.FixtureRequest) -> Api:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def fake(api: Api) -> Iterator[Any]:
    with api.fake_class(host="127.0.0.1") as server:
        yield server


def test_recording(api: Api, fake: Any) -> None:
    turn_a, turn_b = api.turn.text("a"), api.turn.text("b")
    fake.add_turns(turn_a, turn_b)
    api.post(fake, headers={"X-Custom": "1"})
    api.post(fake, stream=False)
    first, second = fake.requests
    assert first.method == "POST"
    assert f"{first.path}?{first.query}".rstrip("?") == api.path
    assert first.headers["x-custom"] == "1"  # names lower-cased
    assert first.client.startswith("127.0.0.1:")
    assert first.body == api.body(stream=True)
    assert first.raw_body == json.dumps(api.body(stream=True)).encode()
    assert first.model == first.body["model"]
    assert first.stream
    assert not second.stream
    assert first.kind == second.kind == "main"
    assert first.turn_index == 0
    assert first.turn == turn_a
    assert second.turn_index == 1
    assert second.turn == turn_b
    assert first.status == second.status == 200
    assert first.time <= second.time
    assert fake.main_requests == [first, second]
    assert fake.requests_of("other") == []
    assert fake.saw_api_key(KEY)
    assert not fake.saw_api_key("sk-other")
    assert fake.credentials_seen() == {KEY}


def test_no_request_is_no_api_key_seen(fake: Any) -> None:
    assert not fake.saw_api_key(KEY)
    assert fake.credentials_seen() == set()


def test_a_chunked_request_body_is_read_whole(api: Api, fake: Any) -> None:
    fake.add_turns(api.turn.text("chunked"))
    payload = json.dumps(api.body(stream=True)).encode()
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    chunks = (payload[i : i + 7] for i in range(0, len(payload), 7))
    conn.request("POST", api.path, body=chunks, headers=api.auth, encode_chunked=True)
    resp = conn.getresponse()
    assert api.text(resp.read(), True) == "chunked"
    conn.close()
    (req,) = fake.requests
    assert req.headers["transfer-encoding"] == "chunked"
    assert req.raw_body == payload
    assert req.kind == "main"


def test_disconnect_mid_stream(api: Api, fake: Any) -> None:
    fake.add_turns(api.turn.disconnect(text="half"), api.turn.text("after"))
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    conn.request("POST", api.path, body=json.dumps(api.body(stream=True)))
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    conn.close()
    partial = info.value.partial.decode()
    first, last = api.stream_events
    assert first in partial
    assert "half" in partial
    assert last not in partial
    assert api.answer(fake) == "after"  # the next request gets the next turn
    assert fake.main_usage_total == api.turn.text().usage  # the disconnect's usage: none
    assert [r.status for r in fake.requests] == [200, 200]


def test_disconnect_non_streaming(api: Api, fake: Any) -> None:
    fake.add_turns(api.turn.disconnect())
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    conn.request("POST", api.path, body=json.dumps(api.body(stream=False)))
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()


def test_delay_before_answering(api: Api, fake: Any) -> None:
    fake.add_turns(api.turn.text("slow", delay=0.6))
    start = time.monotonic()
    assert api.answer(fake) == "slow"
    assert time.monotonic() - start >= 0.6


def test_a_delay_lets_a_client_time_out_and_stop_cuts_it_short(api: Api) -> None:
    server = api.fake_class([api.turn.text("never seen", delay=30)], host="127.0.0.1").start()
    try:
        with pytest.raises(TimeoutError):
            api.post(server, timeout=0.3)
    finally:
        start = time.monotonic()
        server.stop()  # returns without answering the delayed request
    assert time.monotonic() - start < 25  # well short of the 30 s delay: stop cut it short
    assert server.requests[0].status == 0


def test_exhausted_script_answers_done(api: Api, fake: Any) -> None:
    fake.add_turns(api.turn.text("one"))
    assert [api.answer(fake) for _ in range(3)] == ["one", "Done.", "Done."]
    assert fake.turns_used == 1
    assert fake.turns_left == 0
    assert [r.turn_index for r in fake.requests] == [0, None, None]
    assert [r.turn for r in fake.requests][1:] == [fake.when_exhausted] * 2


def test_turns_can_be_added_while_running(api: Api, fake: Any) -> None:
    fake.add_turns(api.turn.text("one"))
    assert fake.turns_left == 1
    assert api.answer(fake) == "one"
    fake.add_turns(api.turn.text("two"), api.turn.text("three"))
    assert (fake.turns_used, fake.turns_left) == (1, 2)
    assert [api.answer(fake, stream=False) for _ in range(2)] == ["two", "three"]


@pytest.mark.parametrize("status", [500, 529])
def test_when_exhausted_can_be_an_error(api: Api, status: int) -> None:
    with api.fake_class(host="127.0.0.1", when_exhausted=api.turn.error(status)) as fake:
        assert [api.post(fake)[0] for _ in range(3)] == [status] * 3
        assert fake.turns_used == 0


def test_unknown_status_200_answers_empty_object(api: Api) -> None:
    with api.fake_class(host="127.0.0.1", unknown_status=200) as fake:
        conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
        conn.request("GET", "/anything")
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (200, {})
        conn.request("HEAD", "/anything")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"")  # HEAD: headers only
        conn.close()
        assert [(r.kind, r.status) for r in fake.requests] == [("other", 200)] * 2


def test_concurrent_requests_each_get_one_turn(api: Api) -> None:
    n = 12
    script = [api.turn.text(f"turn {i}") for i in range(n)]
    with api.fake_class(script, host="127.0.0.1") as fake:
        texts: list[str] = []
        lock = threading.Lock()

        def worker() -> None:
            text = api.answer(fake)
            with lock:
                texts.append(text)

        threads = [threading.Thread(target=worker) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(texts) == sorted(f"turn {i}" for i in range(n))
        assert sorted(r.turn_index or 0 for r in fake.requests) == list(range(n))
        assert fake.main_usage_total == script[0].usage * n


def test_keep_alive_connection_serves_several_requests(api: Api, fake: Any) -> None:
    fake.add_turns(api.turn.text("one"), api.turn.text("two"))
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    texts = []
    for stream in (True, False):
        conn.request("POST", api.path, body=json.dumps(api.body(stream=stream)))
        texts.append(api.text(conn.getresponse().read(), stream))
    conn.close()
    assert texts == ["one", "two"]
    first, second = fake.requests
    assert first.client == second.client


def test_lifecycle_port_and_url(api: Api) -> None:
    fake = api.fake_class()
    with pytest.raises(RuntimeError):
        _ = fake.port
    with fake:
        port = fake.port
        assert port > 0
        assert fake.host == "0.0.0.0"
        assert fake.url("127.0.0.1") == f"http://127.0.0.1:{port}{api.base_path}"
        assert fake.url() == f"http://127.0.0.1:{port}{api.base_path}"
        assert fake.url("host.docker.internal") == (
            f"http://host.docker.internal:{port}{api.base_path}"
        )
        assert fake.url("::1") == f"http://[::1]:{port}{api.base_path}"
        with pytest.raises(RuntimeError):
            fake.start()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=2),
    ):
        pass
    fake.stop()  # idempotent


def test_quiet_by_default(api: Api, fake: Any, capsys: pytest.CaptureFixture[str]) -> None:
    fake.add_turns(api.turn.text("x"))
    api.post(fake)
    captured = capsys.readouterr()
    assert (captured.err, captured.out) == ("", "")


def test_verbose_logs_each_request(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    with api.fake_class(host="127.0.0.1", verbose=True) as fake:
        api.post(fake)
    assert f"POST {api.path}" in capsys.readouterr().err


def test_token_counts_add_and_multiply_field_by_field() -> None:
    @dataclass(frozen=True)
    class Counts(TokenCounts):
        a: int = 0
        b: int = 0
        c: int = 0

    assert Counts(1, 2, 3) + Counts(10, 20, 30) == Counts(11, 22, 33)
    assert Counts(1, 2, 3) * 3 == Counts(3, 6, 9)
    assert Counts(1, 2, 3) * 0 == Counts()
    total = sum([Counts(1, 0, 0)] * 4, Counts())
    assert total == Counts(4, 0, 0)
    assert type(total) is Counts


def test_bearer_token_and_halves() -> None:
    assert bearer_token("Bearer tok-1 ") == "tok-1"
    assert bearer_token("bearer tok-2") == "tok-2"
    assert bearer_token("Token abc") == "Token abc"
    assert bearer_token("") == ""
    assert list(halves("abcde")) == ["ab", "cde"]
    assert list(halves("a")) == ["a"]
    assert list(halves("")) == [""]
