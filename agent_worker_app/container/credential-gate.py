"""The credential gate: the agent's API requests pass here, and only here get the credential.

Runs as root in the agent's container, started by agent_inside.sh before the agent stage; the
agent user can neither read its memory, environment or files nor signal it (another user's, with
no capability to cross that: setpriv drops them all). The agent holds a placeholder in place of
its credential and the gate's address as its API base URL; the gate sends each request on to the
one upstream it was given (never where the request says), with the placeholder in its headers
replaced by the real value, which it read on stdin and keeps in memory only.

It is also the run's meter: it counts the requests, the error answers, the retries (requests that
follow an error answer) and the tokens of every
answer (Anthropic's Messages API and OpenAI's Responses and Chat Completions APIs, streamed or
not), and rewrites METER (JSON, root's alone) after each. With PRICES (JSON: {"prices": {MODEL
PREFIX: [input, output, cache read, cache write] in USD per million tokens}, "limit_usd": N or
null}) it prices each answer by its model (the longest prefix that matches; a model it does not
know at the dearest of each), and with a limit (--max-cost) it refuses every request once what
it counted costs that much: no agent spends past it.

    python3 -I -S credential-gate.py LISTEN-PORT UPSTREAM-URL PLACEHOLDER METER [PRICES] <secret

Standard library only (the image's Debian python3), for any python3 from 3.7.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

# Not passed on: hop-by-hop fields, and Expect (the gate has the whole body before it sends)
HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade"}
HOP |= {"expect"}
HEAD_MAX = 256 * 1024  # request or answer headers, at most
JSON_MAX = 16 * 1024 * 1024  # an answer kept whole for its usage, at most
FRAMING = {"host", "content-length", "transfer-encoding"}  # the gate sets its own
BODY_MAX = 64 * 1024 * 1024  # a request's body, at most (kept whole: it may be sent twice)
TOKEN_KEYS = ("input", "output", "cache_read", "cache_write")


class Meter:
    """What the gate counted, written to a root-only file after every answer."""

    def __init__(self, path: str, prices: dict[str, Any] | None) -> None:
        self.path = path
        self.prices: dict[str, list[float]] | None = None
        limit = None
        if prices is not None:
            self.prices = {str(k): [float(x) for x in v] for k, v in prices["prices"].items()}
            limit = prices.get("limit_usd")
        self.lock = threading.Lock()
        self.after_error = False  # the last answer was an error: the next request is a retry
        self.figures: dict[str, Any] = {
            "requests": 0,
            "errors": 0,
            "retries": 0,
            "refused": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "cost_usd": None if self.prices is None else 0.0,
            "limit_usd": None if limit is None else float(limit),
        }
        self.write()

    def begin(self) -> None:
        """A request arrives: a retry when it follows an error answer."""
        with self.lock:
            if self.after_error:
                self.figures["retries"] += 1
                self.after_error = False

    def spent(self) -> bool:
        with self.lock:
            limit = self.figures["limit_usd"]
            return limit is not None and (self.figures["cost_usd"] or 0) >= limit

    def price(self, model: str) -> list[float]:
        """USD per million tokens of each kind for a model."""
        assert self.prices is not None
        known = [prefix for prefix in self.prices if model.startswith(prefix)]
        if known:
            return self.prices[max(known, key=len)]
        return [max(p[i] for p in self.prices.values()) for i in range(len(TOKEN_KEYS))]

    def count(
        self, status: int | None, usage: dict[str, int], model: str = "", *, refused: bool = False
    ) -> None:
        with self.lock:
            f = self.figures
            f["requests"] += 1
            failed = not refused and (status is None or status >= 400)
            if refused:
                f["refused"] += 1
            elif failed:
                f["errors"] += 1
            self.after_error = failed
            for key in TOKEN_KEYS:
                f[key + "_tokens"] += usage.get(key, 0)
            if self.prices is not None and usage:
                rates = self.price(model)
                cost = sum(usage.get(k, 0) * rates[i] for i, k in enumerate(TOKEN_KEYS)) / 1e6
                f["cost_usd"] = round(f["cost_usd"] + cost, 8)
            self.write()

    def write(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as out:
            json.dump(self.figures, out)
        os.replace(tmp, self.path)


def usage_of(event: Any) -> dict[str, int]:
    """The token counts an API event or answer carries, by kind (input: not read from a cache)."""
    if not isinstance(event, dict):
        return {}
    found: dict[str, Any] | None = None
    for holder in (event, event.get("message"), event.get("response")):
        if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
            found = holder["usage"]
            break
    if found is None:
        return {}

    def number(*path: str) -> int:
        value: Any = found
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, int) and value >= 0 else 0

    if "prompt_tokens" in found:  # Chat Completions: the prompt counts its cached part too
        cached = number("prompt_tokens_details", "cached_tokens")
        return {
            "input": max(number("prompt_tokens") - cached, 0),
            "output": number("completion_tokens"),
            "cache_read": cached,
        }
    if "input_tokens_details" in found:  # Responses: input_tokens counts its cached parts too
        cached = number("input_tokens_details", "cached_tokens")
        written = number("input_tokens_details", "cache_write_tokens")
        return {
            "input": max(number("input_tokens") - cached - written, 0),
            "output": number("output_tokens"),
            "cache_read": cached,
            "cache_write": written,
        }
    return {  # Anthropic: each kind apart; a stream's figures grow, the last are the total
        "input": number("input_tokens"),
        "output": number("output_tokens"),
        "cache_read": number("cache_read_input_tokens"),
        "cache_write": number("cache_creation_input_tokens"),
    }


def model_of(event: Any) -> str:
    """The model an API event or answer names, if it names one."""
    if not isinstance(event, dict):
        return ""
    for holder in (event, event.get("message"), event.get("response")):
        if isinstance(holder, dict) and isinstance(holder.get("model"), str):
            return str(holder["model"])
    return ""


class Usage:
    """The usage of one answer, from its body as it passes (a stream's events, or the whole)."""

    def __init__(self, content_type: str, on_end: Callable[[dict[str, int], str], None]) -> None:
        self.on_end = on_end
        self.model = ""
        self.ended = False
        self.stream = "text/event-stream" in content_type
        self.json = "json" in content_type
        self.pending = b""
        self.kept: list[bytes] = []
        self.size = 0
        self.found: dict[str, int] = {}

    def feed(self, data: bytes) -> None:
        if self.stream:
            self.pending += data
            *lines, self.pending = self.pending.split(b"\n")
            for line in lines:
                if line.startswith(b"data:"):
                    self.event(line[5:])
        elif self.json and self.size + len(data) <= JSON_MAX:
            self.kept.append(data)
            self.size += len(data)

    def event(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        usage = usage_of(event)
        self.model = self.model or model_of(event)
        for key, value in usage.items():  # a stream says its figures so far: the largest
            self.found[key] = max(self.found.get(key, 0), value)

    def finish(self) -> None:
        """The answer is whole: counted (before its last bytes are passed on, so that whoever
        has the whole answer finds it counted)."""
        if self.ended:
            return
        self.ended = True
        if self.stream and self.pending.startswith(b"data:"):
            self.event(self.pending[5:])
        elif self.kept:
            self.event(b"".join(self.kept))
        self.on_end(self.found, self.model)


def read_head(reader: io.BufferedReader) -> list[bytes] | None:
    """A message's start line and header lines; None at the end of the connection."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = reader.readline(HEAD_MAX)
        if not line:
            if lines:
                raise ValueError("the connection ended within a message's head")
            return None
        size += len(line)
        if size > HEAD_MAX:
            raise ValueError("a message's head is too large")
        line = line.rstrip(b"\r\n")
        if not line:
            if lines:
                return lines
            continue  # blank lines before a request are allowed
        lines.append(line)


def headers_of(lines: list[bytes]) -> list[tuple[str, str]]:
    fields = []
    for line in lines:
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise ValueError("a malformed header line")
        fields.append((name, value.strip()))
    return fields


def field(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in headers if k.lower() == name]
    return ", ".join(values) if values else None


def read_body(reader: io.BufferedReader, headers: list[tuple[str, str]]) -> bytes:
    """A request's body, whole (a request without framing has none)."""
    if field(headers, "transfer-encoding") is not None:
        kept = io.BytesIO()
        copy_body(reader, kept, headers, None)
        chunks: list[bytes] = []
        data = kept.getvalue()
        if len(data) > BODY_MAX:
            raise ValueError("a request body too large")
        while True:  # the chunks' data, without their framing
            line, _, data = data.partition(b"\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                return b"".join(chunks)
            chunks.append(data[:size])
            data = data[size + 2 :]
    length = field(headers, "content-length")
    if length is None:
        return b""
    try:
        size = int(length)
    except ValueError:
        raise ValueError("a malformed content length") from None
    if not 0 <= size <= BODY_MAX:
        raise ValueError("a request body too large")
    return exactly(reader, size)


def copy_body(
    reader: io.BufferedReader,
    writer: io.BufferedIOBase,
    headers: list[tuple[str, str]],
    usage: Usage | None,
) -> bool:
    """The body the headers frame, from reader to writer as it arrives (chunks as chunks);
    False when it runs to the connection's end (no framing)."""
    coding = (field(headers, "transfer-encoding") or "").lower()
    if coding:
        if coding.split(",")[-1].strip() != "chunked":
            raise ValueError("an unsupported transfer coding")
        copy_chunks(reader, writer, usage)
        return True
    length = field(headers, "content-length")
    if length is not None:
        try:
            left = int(length.split(",")[0])
        except ValueError:
            raise ValueError("a malformed content length") from None
        while left > 0:
            data = reader.read1(min(left, 65536))
            if not data:
                raise ValueError("the connection ended within a body")
            left -= len(data)
            if usage is not None:
                usage.feed(data)
                if left == 0:
                    usage.finish()
            writer.write(data)
            writer.flush()
        return True
    return False


def copy_chunks(reader: io.BufferedReader, writer: io.BufferedIOBase, usage: Usage | None) -> None:
    """A chunked body, chunk by chunk as it arrives, through its trailer."""
    while True:
        size_line = reader.readline(4096)
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            raise ValueError("a malformed chunk") from None
        if size == 0 and usage is not None:
            usage.finish()
        writer.write(size_line)
        if size == 0:
            while True:  # the trailer, up to its blank line
                line = reader.readline(HEAD_MAX)
                writer.write(line)
                if line in (b"\r\n", b"\n", b""):
                    writer.flush()
                    return
        data = exactly(reader, size + 2)
        writer.write(data)
        writer.flush()
        if usage is not None:
            usage.feed(data[:-2])


def exactly(reader: io.BufferedReader, size: int) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise ValueError("the connection ended within a chunk")
    return data


class Gate:
    def __init__(self, upstream: str, placeholder: str, secret: str, meter: Meter) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the upstream must be an http or https URL")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        default = 443 if self.tls else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = name if self.port == default else f"{name}:{self.port}"
        self.placeholder = placeholder
        self.secret = secret
        self.meter = meter
        self.context: Any = None  # prepare() makes it, once the port is open

    def prepare(self) -> None:
        """TLS for an https upstream, with the system's CA certificates: made once the gate
        listens, so that the agent's start never waits on loading ssl (about 30 ms)."""
        if self.tls:
            import ssl

            self.context = ssl.create_default_context()

    def connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=600)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            wrapped: socket.socket = self.context.wrap_socket(sock, server_hostname=self.host)
            return wrapped
        return sock

    def request_head(self, lines: list[bytes]) -> tuple[bytes, list[tuple[str, str]], bool]:
        """The head sent upstream: the request's own path, the upstream's host, the credential
        in place of the placeholder; and whether the request asks to close after."""
        parts = lines[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ValueError("a malformed request line")
        method, target, version = parts
        if not target.startswith("/"):  # an absolute form: its path only, never its host
            target = urlsplit(target).path or "/"
            target += "?" + urlsplit(parts[1]).query if urlsplit(parts[1]).query else ""
        headers = headers_of(lines[1:])
        close = (field(headers, "connection") or "").lower() == "close" or version == "HTTP/1.0"
        out = [f"{method} {target} HTTP/1.1", f"Host: {self.authority}"]
        for name, value in headers:
            if name.lower() in HOP or name.lower() in FRAMING:
                continue
            out.append(f"{name}: {value.replace(self.placeholder, self.secret)}")
        out.append("Connection: keep-alive")
        return ("\r\n".join(out) + "\r\n").encode("latin-1"), headers, close

    def refuse(self, client: io.BufferedIOBase, status: int, message: str) -> None:
        body = json.dumps(
            {"type": "error", "error": {"type": "agent_worker_gate", "message": message}}
        ).encode()
        head = (
            f"HTTP/1.1 {status} {'Forbidden' if status == 403 else 'Bad Gateway'}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        client.write(head.encode() + body)
        client.flush()

    def serve(self, conn: socket.socket) -> None:
        client_in = conn.makefile("rb")
        client_out = conn.makefile("wb")
        up: Upstream | None = None
        try:
            while True:
                lines = read_head(client_in)
                if lines is None:
                    return
                head, headers, close = self.request_head(lines)
                body = read_body(client_in, headers)
                self.meter.begin()
                if self.meter.spent():
                    self.meter.count(403, {}, refused=True)
                    self.refuse(client_out, 403, "the run's budget (--max-cost) is spent")
                    if close:
                        return
                    continue
                sent = head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
                up, answer = self.exchange(up, sent)
                if up is None or isinstance(answer, str):
                    self.meter.count(None, {})
                    self.refuse(client_out, 502, f"{self.authority}: {answer}")
                    return
                if not self.answer(lines[0], answer, up, client_out) or close:
                    return
                if up.closing:
                    up.close()
                    up = None
        except (OSError, ValueError):
            return
        finally:
            for stream in (client_in, client_out):
                with contextlib.suppress(OSError):
                    stream.close()
            conn.close()
            if up is not None:
                up.close()

    def exchange(
        self, up: Upstream | None, sent: bytes
    ) -> tuple[Upstream | None, list[bytes] | str]:
        """The request sent, the answer's head read (or why not): on the kept connection, and
        once more on a new one when the upstream had closed the kept one (a request that
        failed on a new connection is not sent again: the API may have taken it)."""
        failure = "the connection closed before an answer"
        for _ in (1, 2) if up is not None else (1,):
            if up is None:
                try:
                    up = Upstream(self.connect())
                except OSError as e:
                    return None, f"cannot connect: {e}"
            try:
                up.writer.write(sent)
                up.writer.flush()
                answer = read_head(up.reader)
            except (OSError, ValueError) as e:
                failure, answer = str(e), None
            if answer is not None:
                return up, answer
            up.close()
            up = None
        return None, failure

    def answer(
        self, request: bytes, answer: list[bytes], up: Upstream, client: io.BufferedIOBase
    ) -> bool:
        """The upstream's answer passed on to the client, its usage counted; whether the
        client's connection can carry another request."""
        status_line = answer[0].decode("latin-1")
        try:
            status = int(status_line.split(" ")[1])
        except (IndexError, ValueError):
            raise ValueError("a malformed status line") from None
        headers = headers_of(answer[1:])
        bodiless = status in (204, 304) or 100 <= status < 200 or request.startswith(b"HEAD ")
        framed = bodiless or any(
            field(headers, name) is not None for name in ("transfer-encoding", "content-length")
        )
        kept = [(k, v) for k, v in headers if k.lower() not in HOP]
        kept.append(("Connection", "keep-alive" if framed else "close"))
        out = "\r\n".join([status_line, *(f"{k}: {v}" for k, v in kept)]) + "\r\n\r\n"
        client.write(out.encode("latin-1"))
        client.flush()
        usage = Usage(field(headers, "content-type") or "", partial(self.meter.count, status))
        up.closing = (field(headers, "connection") or "").lower() == "close"
        try:
            if not bodiless and not copy_body(up.reader, client, headers, usage):
                while True:  # to the connection's end
                    data = up.reader.read1(65536)
                    if not data:
                        break
                    client.write(data)
                    client.flush()
                    usage.feed(data)
                up.closing = True
        except (OSError, ValueError):
            if not usage.ended:  # cut short: an error, with what of its usage came through
                usage.on_end = partial(self.meter.count, None)
                usage.finish()
            raise
        usage.finish()
        return framed


class Upstream:
    """A connection to the upstream, kept between requests while it lasts."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.writer = sock.makefile("wb")
        self.closing = False

    def close(self) -> None:
        for stream in (self.reader, self.writer):
            with contextlib.suppress(OSError):
                stream.close()
        self.sock.close()


def main(argv: list[str]) -> int:
    port, upstream, placeholder, meter_path = argv[1:5]
    prices = json.loads(argv[5]) if len(argv) > 5 else None
    secret = sys.stdin.read()
    sys.stdin.close()
    if not secret or not placeholder or placeholder in secret:
        print("credential-gate: no credential given", file=sys.stderr)
        return 2
    gate = Gate(upstream, placeholder, secret, Meter(meter_path, prices))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen(64)
    gate.prepare()
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=gate.serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
