"""The egress proxy's reading of what a client asks for (container/egress-proxy.py): the server
name of a real ClientHello, the names of HTTP requests, and the refusal of anything a server
might read otherwise. The proxy itself, in a container with its redirect, is tested in
tests/integration/test_egress_names.py."""

from __future__ import annotations

import importlib.util
import ssl
from pathlib import Path
from types import ModuleType

import pytest

PROXY = Path(__file__).parents[2] / "agent_worker_app" / "container" / "egress-proxy.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("egress_proxy", PROXY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


proxy = load()


def client_hello(name: str | None) -> bytes:
    """The first flight of a real TLS client (Python's OpenSSL) asking for name."""
    context = ssl.create_default_context()
    if name is None:
        context.check_hostname = False
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


class Buffered:
    """A socket that has sent data and then ended."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, size: int) -> bytes:
        taken, self.data = self.data[:size], self.data[size:]
        return taken


def hello_of(data: bytes) -> tuple[bytes, str | None]:
    return proxy.client_hello(proxy.Reader(Buffered(data), b""))


A_TEST = b"GET / HTTP/1.1\r\nHost: a.test\r\n"


def refused(head: bytes, port: int = 80) -> tuple[str, str | None]:
    with pytest.raises(proxy.RefusedError) as caught:
        proxy.request(head, port)
    return caught.value.protocol, caught.value.name


def test_the_server_name_of_a_real_client_hello() -> None:
    data = client_hello("PyPI.org")
    assert hello_of(data + b"rest") == (data, "PyPI.org")  # its records whole, the rest left
    assert hello_of(client_hello(None))[1] is None  # an address: no server name


def test_a_client_hello_split_over_records_is_read_whole() -> None:
    data = client_hello("files.pythonhosted.org")
    body = data[5:]
    split = b"".join(
        bytes([22, 3, 1]) + len(part).to_bytes(2, "big") + part for part in (body[:40], body[40:])
    )
    assert hello_of(split) == (split, "files.pythonhosted.org")


def test_a_malformed_client_hello_is_refused() -> None:
    data = client_hello("pypi.org")
    name_at = data.index(b"pypi.org")
    for bad in (
        b"\x17" + data[1:],  # not a handshake record
        data[:5] + b"\x02" + data[6:],  # not a ClientHello
        data[: name_at - 3] + b"\x01" + data[name_at - 2 :],  # a name type other than host_name
    ):
        with pytest.raises(proxy.RefusedError) as caught:
            hello_of(bad)
        assert caught.value.protocol == "tls"
    with pytest.raises(proxy.ClientEndedError):
        hello_of(data[:-1])  # the client ended within it


def test_an_http_request_asks_for_its_host_at_the_connection_s_port() -> None:
    head = b"GET /simple/ HTTP/1.1\r\nHost: PyPI.org.:8080\r\nAccept: */*\r\n\r\n"
    assert proxy.request(head, 80) == ([("pypi.org", 80)], 0, 0)
    post = b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 12\r\n\r\n"
    assert proxy.request(post, 80) == ([("a.test", 80)], 12, 0)
    chunked = b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: Chunked\r\n\r\n"
    assert proxy.request(chunked, 80) == ([("a.test", 80)], None, 0)


def test_an_absolute_url_and_a_connect_ask_for_their_own_hosts() -> None:
    absolute = b"GET https://user@b.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n"
    assert proxy.request(absolute, 3128) == ([("a.test", 3128), ("b.test", 443)], 0, 0)
    connect = b"CONNECT c.test:8443 HTTP/1.1\r\nHost: c.test:8443\r\n\r\n"
    assert proxy.request(connect, 3128) == ([("c.test", 8443)], 0, 8443)
    old = b"GET / HTTP/1.0\r\n\r\n"
    assert proxy.request(old, 80) == ([(None, 80)], 0, 0)  # no name: by address alone


@pytest.mark.parametrize(
    ("head", "name"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", None),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: a.test\r\n X: folded\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: a.test\nX: y\r\n\r\n", None),  # a bare LF
        (b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n", None),
        (b"GET /  HTTP/1.1\r\nHost: a.test\r\n\r\n", None),
        (b"GET / HTTP/2\r\nHost: a.test\r\n\r\n", None),
        (A_TEST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n", "a.test"),
        (A_TEST + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "a.test"),
        (b"GET / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "a.test"),
        (b"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: \xb2\r\n\r\n", "a.test"),
        (b"GET / HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\n\r\n", "a.test"),
        (b"GET ftp://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n", "ftp://b.test/"),
        (b"CONNECT c.test HTTP/1.1\r\nHost: c.test\r\n\r\n", "c.test"),
        (b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", "[::1]"),
        (b"GET / HTTP/1.1\r\nHost: a\x7f.test\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: a!.test\r\n\r\n", "a!.test"),
    ],
)
def test_a_request_a_server_might_read_otherwise_is_refused(head: bytes, name: str | None) -> None:
    assert refused(head) == ("http", name)


def test_names_and_addresses_are_allowed_by_their_own_rules(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules"
    rules_file.write_text(
        "name pypi.org 443\nname any.test *\naddress 10.0.0.1 443\n"
        "literal 10.0.0.9 8080\nprobe 192.0.2.2 9\n"
    )
    rules = proxy.Rules(str(rules_file))
    shared = ("10.0.0.1", 443)
    assert rules.allows("pypi.org", 443, shared)
    assert not rules.allows("pypi.org", 80, shared)  # its port only
    assert not rules.allows("evil.test", 443, shared)  # another name on the same address
    assert rules.allows("any.test", 5432, shared)
    assert not rules.allows(None, 443, shared)  # no name: an address allowed as itself only
    assert rules.allows(None, 8080, ("10.0.0.9", 8080))
    assert rules.allows("10.0.0.9", 8080, shared)
    assert not rules.allows("evil.test", 8080, ("10.0.0.9", 8080))  # a name, whatever address
    assert rules.reachable("10.0.0.1", 443)
    assert not rules.reachable("10.0.0.1", 80)
    assert rules.probe == ("192.0.2.2", 9)


def test_the_record_counts_refusals_with_their_names_sanitized(tmp_path: Path) -> None:
    path = tmp_path / "refused"
    record = proxy.Record(str(path))
    assert path.read_text() == ""
    for _ in range(2):
        record.refuse("tls", ("10.0.0.1", 443), "evil.test")
    record.refuse("http", ("10.0.0.1", 80), "x y\n\x1b[31m" + "a" * 400)
    record.refuse("tls", ("10.0.0.1", 443), None)
    lines = path.read_text().splitlines()
    assert lines[0] == "2 tls 10.0.0.1 443 evil.test"
    assert lines[1] == "1 http 10.0.0.1 80 x?y??[31m" + "a" * (proxy.NAME_MAX - 9)
    assert lines[2] == "1 tls 10.0.0.1 443"


def test_an_sslv2_style_hello_is_told_from_a_binary_protocol() -> None:
    hello = bytes([0x80, 0x2E, 0x01, 0x03, 0x01]) + b"\0" * 45
    assert proxy.sslv2_hello(proxy.Reader(Buffered(b""), hello))
    binary = bytes([0xC8, 0x00, 0x00, 0x00, 0xD4, 0x07])  # a length-prefixed message
    assert not proxy.sslv2_hello(proxy.Reader(Buffered(b""), binary))
