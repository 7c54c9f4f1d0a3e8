"""The credential gate (container/credential-gate.py) as a process of its own, against the fake
APIs on loopback: the real credential reaches the API, the caller never sees it, the meter counts
what the API answered, and a spent budget refuses further requests."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_anthropic import FakeAnthropic, Turn, Usage
from fake_openai import FakeOpenAI
from fake_openai import Turn as OpenAITurn
from fake_openai import Usage as OpenAIUsage

GATE = Path(__file__).parents[2] / "agent_worker_app" / "container" / "credential-gate.py"
SECRET = "sk-ant-api03-gate-test-secret-Zq81xv"
PLACEHOLDER = "agent-worker-credential-placeholder"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gate:
    def __init__(
        self,
        upstream: str,
        tmp: Path,
        prices: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.meter = tmp / "meter.json"
        argv = [sys.executable, "-I", "-S", str(GATE), str(self.port), upstream, PLACEHOLDER]
        argv.append(str(self.meter))
        if prices is not None:
            argv.append(json.dumps(prices))
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        assert self.process.stdin is not None
        self.process.stdin.write(SECRET.encode())
        self.process.stdin.close()
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)

    def figures(self) -> dict[str, Any]:
        return dict(json.loads(self.meter.read_text()))

    def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str], target: str | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", target or path, json.dumps(body), headers)
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(host="127.0.0.1") as fake:
        yield fake


@pytest.fixture
def gate(anthropic: FakeAnthropic, tmp_path: Path) -> Iterator[Gate]:
    gate = Gate(anthropic.url(), tmp_path)
    yield gate
    gate.process.kill()
    gate.process.wait()


MAIN = {"model": "claude-x", "max_tokens": 10, "messages": [], "tools": [{"name": "t"}]}


def test_the_credential_replaces_the_placeholder_on_the_way_to_the_api(
    gate: Gate, anthropic: FakeAnthropic
) -> None:
    anthropic.add_turns(Turn.text("one"), Turn.text("two"))
    headers = {"x-api-key": PLACEHOLDER, "content-type": "application/json"}
    status, body = gate.post("/v1/messages", {**MAIN, "stream": True}, headers)
    assert status == 200
    assert SECRET not in body.decode()
    # a request naming another host still goes to the gate's upstream, and only there
    status, _ = gate.post("/v1/messages", MAIN, headers, target="http://elsewhere.test/v1/messages")
    assert status == 200
    assert [r.headers["x-api-key"] for r in anthropic.main_requests] == [SECRET, SECRET]
    assert [r.path for r in anthropic.main_requests] == ["/v1/messages"] * 2
    assert anthropic.main_requests[0].headers["host"] == anthropic.url().split("//")[1]


def test_the_meter_counts_what_the_api_answered_streamed_or_not(
    gate: Gate, anthropic: FakeAnthropic
) -> None:
    anthropic.add_turns(Turn.text("one"), Turn.text("two"), Turn.error(529))
    headers = {"x-api-key": PLACEHOLDER}
    assert gate.post("/v1/messages", {**MAIN, "stream": True}, headers)[0] == 200
    assert gate.post("/v1/messages", MAIN, headers)[0] == 200
    assert gate.post("/v1/messages", MAIN, headers)[0] == 529
    figures = gate.figures()
    assert anthropic.main_usage_total == Usage.default() * 2
    assert figures["requests"] == 3
    assert figures["errors"] == 1
    assert figures["retries"] == 0
    anthropic.add_turns(Turn.text("three"))  # the request after the error answer: a retry
    assert gate.post("/v1/messages", MAIN, headers)[0] == 200
    figures = gate.figures()
    assert figures["retries"] == 1
    total = anthropic.main_usage_total
    assert total == Usage.default() * 3
    assert figures["input_tokens"] == total.input_tokens
    assert figures["output_tokens"] == total.output_tokens
    assert figures["cache_read_tokens"] == total.cache_read_input_tokens
    assert figures["cache_write_tokens"] == total.cache_creation_input_tokens


def test_the_meter_reads_openai_responses_too(tmp_path: Path) -> None:
    with FakeOpenAI(host="127.0.0.1") as fake:
        fake.add_turns(OpenAITurn.text("one"))
        gate = Gate(fake.url(), tmp_path)
        try:
            headers = {"authorization": f"Bearer {PLACEHOLDER}"}
            body = {"model": "gpt-x", "input": [], "tools": [{"type": "function"}], "stream": True}
            status, _ = gate.post(f"{fake.base_path}/responses", body, headers)
            assert status == 200
            assert fake.main_requests[0].headers["authorization"] == f"Bearer {SECRET}"
            usage = OpenAIUsage.default()
            figures = gate.figures()
            assert figures["output_tokens"] == usage.output_tokens
            assert figures["cache_read_tokens"] == usage.cached_tokens
            assert figures["input_tokens"] == (
                usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens
            )
        finally:
            gate.process.kill()
            gate.process.wait()


def test_a_spent_budget_refuses_the_next_request(anthropic: FakeAnthropic, tmp_path: Path) -> None:
    # 101 input tokens at $10 per million and the rest at 0: 0.00101 spent, past 0.001 (the
    # fake answers with the model asked for; an unknown one is priced at the dearest)
    prices = {"claude-x": [10.0, 0, 0, 0], "claude-y": [1.0, 0, 0, 0]}
    gate = Gate(anthropic.url(), tmp_path, {"prices": prices, "limit_usd": 0.001})
    try:
        anthropic.add_turns(Turn.text("one"), Turn.text("two"))
        headers = {"x-api-key": PLACEHOLDER}
        assert gate.post("/v1/messages", MAIN, headers)[0] == 200
        status, body = gate.post("/v1/messages", MAIN, headers)
        assert status == 403
        assert "budget" in json.loads(body)["error"]["message"]
        assert len(anthropic.main_requests) == 1
        figures = gate.figures()
        assert figures["refused"] == 1
        assert figures["cost_usd"] == pytest.approx(0.00101)
    finally:
        gate.process.kill()
        gate.process.wait()


def test_no_credential_no_gate(tmp_path: Path) -> None:
    argv = [sys.executable, "-I", "-S", str(GATE), "1", "http://127.0.0.1:9", PLACEHOLDER, "m"]
    done = subprocess.run(argv, input=b"", capture_output=True, check=False, cwd=tmp_path)
    assert done.returncode == 2
    assert b"no credential given" in done.stderr


def test_an_https_upstream_is_verified_with_the_systems_certificates(tmp_path: Path) -> None:
    """TLS to the API as in real use: the gate trusts the system's CA certificates (here a test
    CA, through OpenSSL's SSL_CERT_FILE) and checks the API's name; an upstream whose
    certificate it cannot verify gets no request, and no credential."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with FakeAnthropic(host="127.0.0.1") as plain:
        port = plain.port
    fake = FakeAnthropic(host="127.0.0.1", port=port)
    fake.tls = context
    with fake:
        fake.add_turns(Turn.text("over TLS"))
        upstream = fake.url("localhost")
        assert upstream.startswith("https://localhost:")
        trusting = Gate(upstream, tmp_path, env={"SSL_CERT_FILE": str(cert)})
        try:
            assert trusting.post("/v1/messages", MAIN, {"x-api-key": PLACEHOLDER})[0] == 200
            assert [r.headers["x-api-key"] for r in fake.main_requests] == [SECRET]
        finally:
            trusting.process.kill()
            trusting.process.wait()
        (tmp_path / "other").mkdir()
        doubting = Gate(upstream, tmp_path / "other", env={"SSL_CERT_FILE": "/dev/null"})
        try:
            status, body = doubting.post("/v1/messages", MAIN, {"x-api-key": PLACEHOLDER})
            assert status == 502
            assert b"CERTIFICATE_VERIFY_FAILED" in body
            assert len(fake.main_requests) == 1  # nothing more arrived
        finally:
            doubting.process.kill()
            doubting.process.wait()


def test_an_answer_cut_short_is_counted_as_an_error(gate: Gate, anthropic: FakeAnthropic) -> None:
    """A stream the API drops midway reaches the client cut short, and the meter counts the
    request as an error (with the usage the stream had said so far), never as nothing."""
    anthropic.add_turns(Turn.disconnect(), Turn.text("two"))
    headers = {"x-api-key": PLACEHOLDER}
    with pytest.raises((http.client.HTTPException, OSError)):
        gate.post("/v1/messages", {**MAIN, "stream": True}, headers)
    assert gate.post("/v1/messages", MAIN, headers)[0] == 200  # the next one: a retry
    figures = gate.figures()  # (the cut one was counted before the gate closed on its client)
    assert (figures["requests"], figures["errors"], figures["retries"]) == (2, 1, 1)
    assert figures["output_tokens"] == Usage.default().output_tokens  # the whole second answer
