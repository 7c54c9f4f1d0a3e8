"""Egress by name: the agent's TCP connections to allowed addresses pass here, and leave only
when the name they ask for is allowed.

Runs as root in the agent's container, started by init-firewall.sh, whose nat rule redirects
every TCP connection of every other user to an allowed address (and port) here; root's own
connections (this proxy's, the credential gate's) are not redirected. The agent user can neither
signal it, read its memory nor write its files (another user's, with no capability to cross that).

For each connection it takes the original destination from the kernel (SO_ORIGINAL_DST) and
reads what the client sends first:
- a TLS ClientHello: its server name (SNI);
- an HTTP request: its Host, its absolute URL's host, a CONNECT's target; every request of the
  connection, each framed strictly (a body the server would read otherwise is refused);
- anything else (a raw protocol): no name, allowed by address as the nat rule already found it.
A host name must be one of the allowed names, for that port; a connection that names no host, or
an IP address, must go to an address allowed as itself (an address in --allow-host). Allowed: it
connects to the original destination and passes the bytes both ways. Refused: the client gets a
reset, the upstream nothing, and the refusal is counted in REFUSED (root's alone: lines "count
protocol address port [name]", the name sanitized) for `init-firewall.sh --report`. A client
that stays silent (a protocol whose server speaks first) is connected after a moment, and its
first bytes are judged when they come.

    python3 -I -S egress-proxy.py LISTEN-PORT RULES REFUSED

RULES: lines "name NAME PORT", "address IP PORT", "literal IP PORT" (PORT "*": any) and
"probe IP PORT" (the firewall's self-test: answered here, never connected). Standard library
only (the image's Debian python3), for any python3 from 3.8.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import sys
import threading

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
QUIET = 0.5  # seconds a client may keep silent before its server is connected
HEAD_MAX = 64 * 1024  # an HTTP request's head, a TLS ClientHello: at most
NAME_MAX = 253  # a name as recorded: at most (a DNS name's length)
RECORD_MAX = 4096  # distinct refusals recorded (as the firewall's own record)
CONNECTIONS_MAX = 1024
PROBE_ANSWER = b"agent-worker egress proxy\n"
METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE")
TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
HEX = frozenset(b"0123456789abcdefABCDEF")


class RefusedError(Exception):
    """The connection is refused: its protocol and the name it asked for (None: no name)."""

    def __init__(self, protocol: str, name: str | None) -> None:
        super().__init__(protocol)
        self.protocol = protocol
        self.name = name


class ClientEndedError(Exception):
    """The client closed before a whole message."""


def digits(text: str, most: int) -> bool:
    """ASCII digits only, at most most of them (str.isdigit takes others too)."""
    return 0 < len(text) <= most and all("0" <= c <= "9" for c in text)


def is_address(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 4 and all(digits(p, 3) and int(p) < 256 for p in parts)


class Rules:
    def __init__(self, path: str) -> None:
        self.names: dict[str, set[int]] = {}  # port 0: any
        self.addresses: set[tuple[str, int]] = set()
        self.literal: set[tuple[str, int]] = set()
        self.probe: tuple[str, int] | None = None
        with open(path) as file:
            for line in file:
                kind, value, port_text = line.split()
                port = 0 if port_text == "*" else int(port_text)
                if kind == "name":
                    self.names.setdefault(value.lower(), set()).add(port)
                elif kind == "address":
                    self.addresses.add((value, port))
                elif kind == "literal":
                    self.literal.add((value, port))
                elif kind == "probe":
                    self.probe = (value, port)

    def reachable(self, address: str, port: int) -> bool:
        return (address, 0) in self.addresses or (address, port) in self.addresses

    def allows(self, name: str | None, port: int, destination: tuple[str, int]) -> bool:
        """A host name by the allowed names; no name, or an address, by the allowed addresses."""
        if name is None:
            address, port = destination
        elif is_address(name):
            address = name
        else:
            ports = self.names.get(name)
            return ports is not None and (0 in ports or port in ports)
        return (address, 0) in self.literal or (address, port) in self.literal


class Record:
    """The refusals, counted; rewritten whole after each (a file only root can read)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.counts: dict[tuple[str, str, int, str], int] = {}
        self.lock = threading.Lock()
        self.write()

    def refuse(self, protocol: str, destination: tuple[str, int], name: str | None) -> None:
        shown = "".join(c if "!" <= c <= "~" else "?" for c in (name or "")[:NAME_MAX])
        key = (protocol, destination[0], destination[1], shown)
        with self.lock:
            if key in self.counts:
                self.counts[key] += 1
            elif len(self.counts) < RECORD_MAX:
                self.counts[key] = 1
            else:
                return
            self.write()

    def write(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as out:
            for (protocol, address, port, name), count in self.counts.items():
                out.write(f"{count} {protocol} {address} {port} {name}".rstrip() + "\n")
        os.replace(tmp, self.path)


class Reader:
    """The client's bytes, buffered: what was read is forwarded as it was read."""

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        self.sock = sock
        self.data = data

    def more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ClientEndedError
        self.data += data

    def take(self, size: int) -> bytes:
        while len(self.data) < size:
            self.more()
        taken, self.data = self.data[:size], self.data[size:]
        return taken

    def until(self, end: bytes, limit: int, protocol: str) -> bytes:
        """The bytes up to and including end, which must come within limit bytes."""
        while True:
            at = self.data.find(end)
            if at >= 0 and at + len(end) <= limit:
                return self.take(at + len(end))
            if at >= 0 or len(self.data) >= limit:
                raise RefusedError(protocol, None)
            self.more()


def client_hello(reader: Reader) -> tuple[bytes, str | None]:
    """A TLS ClientHello's bytes (its records, whole) and its server name."""
    kept = b""
    handshake = b""
    while True:
        head = reader.take(5)
        kind, _, _, length = struct.unpack("!BBBH", head)
        if kind != 22 or not 0 < length <= 16384:
            raise RefusedError("tls", None)
        body = reader.take(length)
        kept += head + body
        handshake += body
        if len(handshake) >= 4:
            kind, high, low = struct.unpack("!BBH", handshake[:4])
            size = high << 16 | low
            if kind != 1 or size > HEAD_MAX:
                raise RefusedError("tls", None)
            if len(handshake) >= 4 + size:
                try:
                    return kept, server_name(handshake[4 : 4 + size])
                except (IndexError, struct.error, ValueError):
                    raise RefusedError("tls", None) from None


def sslv2_hello(reader: Reader) -> bool:
    """Whether the client starts with an SSLv2-style ClientHello (which older servers still
    take for TLS): a two-byte length, message type 1, a version of SSL 2 or 3 and up."""
    while len(reader.data) < 4:
        reader.more()
    return reader.data[2] == 1 and reader.data[3] in (0, 3)


def server_name(hello: bytes) -> str | None:
    """The host_name of a ClientHello's server_name extension (RFC 6066), or None without one.
    Malformed, repeated extensions or several names: ValueError."""
    at = 2 + 32  # version, random
    at += 1 + hello[at]  # session id
    at += 2 + struct.unpack_from("!H", hello, at)[0]  # cipher suites
    at += 1 + hello[at]  # compression methods
    if at == len(hello):
        return None
    (size,) = struct.unpack_from("!H", hello, at)
    at += 2
    if at + size != len(hello):
        raise ValueError("extensions")
    name = None
    seen = set()
    while at < len(hello):
        kind, size = struct.unpack_from("!HH", hello, at)
        at += 4
        data = hello[at : at + size]
        at += size
        if len(data) != size or kind in seen:
            raise ValueError("an extension")
        seen.add(kind)
        if kind == 0:
            listed, name_type, length = struct.unpack_from("!HBH", data)
            if listed != len(data) - 2 or name_type != 0 or 5 + length != len(data):
                raise ValueError("server_name")
            name = data[5:].decode("latin-1")
    return name


def host_of(authority: str, default_port: int) -> tuple[str, int]:
    """An authority's host (lower-case, no trailing dot) and port; malformed: ValueError."""
    host, _, port = (
        authority.rpartition("@")[2].partition(":") if "[" not in authority else ("", "", "")
    )
    if not host or (port and not (digits(port, 5) and 0 < int(port) < 65536)):
        raise ValueError(authority)
    return host.lower().rstrip("."), int(port) if port else default_port


def names_of(
    method: bytes, target: str, hosts: list[str], version: bytes, port: int
) -> tuple[list[tuple[str | None, int]], int]:
    """The (name, port) pairs a request asks for: its Host, its absolute URL's host; a
    CONNECT's target (its Host repeats it), and then the target's port too (0 otherwise)."""
    wanted: list[tuple[str | None, int]] = []
    shown = None
    tunnel = 0
    try:
        if len(hosts) > 1 or (version == b"HTTP/1.1" and not hosts):
            raise ValueError("host")
        if method == b"CONNECT":
            shown = target
            host, tunnel = host_of(target, 0)
            if not tunnel:
                raise ValueError(target)
            return [(host, tunnel)], tunnel
        if hosts:
            shown = hosts[0]
            wanted.append((host_of(hosts[0], port)[0], port))
        if not target.startswith("/") and target != "*":
            shown = target
            scheme, sep, rest = target.partition("://")
            if not sep or scheme.lower() not in ("http", "https"):
                raise ValueError(target)
            authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
            wanted.append(host_of(authority, 443 if scheme.lower() == "https" else 80))
    except ValueError:
        raise RefusedError("http", shown) from None
    return wanted, tunnel


def request(head: bytes, port: int) -> tuple[list[tuple[str | None, int]], int | None, int]:
    """An HTTP request head: the (name, port) pairs it asks for (a CONNECT: its target), its
    body's length (None: chunked), and a CONNECT's target port (0: no tunnel). Anything a server
    might read otherwise than this does: RefusedError."""
    lines = head[:-4].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line or b"\0" in line for line in lines):
        raise RefusedError("http", None)
    parts = lines[0].split(b" ")
    if (
        len(parts) != 3
        or not parts[0]
        or not set(parts[0]) <= TOKEN
        or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0")
    ):
        raise RefusedError("http", None)
    method, target = parts[0], parts[1].decode("latin-1")
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not set(name) <= TOKEN:
            raise RefusedError("http", None)  # obs-fold and odd names are read otherwise by some
        if any((c < 32 and c != 9) or c == 127 for c in value):
            raise RefusedError("http", None)
        fields.setdefault(name.decode().lower(), []).append(value.decode("latin-1").strip())
    wanted, tunnel = names_of(method, target, fields.get("host", []), parts[2], port)
    for host, _ in wanted:
        if host is not None and not set(host) <= HOST_CHARS:
            raise RefusedError("http", host)
    if not wanted:
        wanted.append((None, port))  # HTTP/1.0 without a Host
    coding = fields.get("transfer-encoding", [])
    length = fields.get("content-length", [])
    if "upgrade" in fields or len(coding) > 1 or len(length) > 1 or (coding and length):
        raise RefusedError("http", wanted[0][0])  # (an upgraded connection cannot be read on)
    if coding:
        if coding[0].lower() != "chunked":
            raise RefusedError("http", wanted[0][0])
        return wanted, None, tunnel
    if length and not digits(length[0], 18):
        raise RefusedError("http", wanted[0][0])
    return wanted, int(length[0]) if length else 0, tunnel


def looks_like_http(data: bytes) -> bool:
    """Whether a server could read the start of data (leading blank lines skipped, as servers
    do) as an HTTP request: its first line has an HTTP version, or starts with a method."""
    line = data.lstrip(b"\r\n\t ").split(b"\n", 1)[0].upper()
    return b"HTTP/" in line or line.startswith(tuple(m + b" " for m in METHODS))


class Connection:
    def __init__(self, client: socket.socket, destination: tuple[str, int], rules: Rules) -> None:
        self.client = client
        self.destination = destination
        self.rules = rules
        self.up: socket.socket | None = None
        self.pump: threading.Thread | None = None

    def connect(self) -> socket.socket:
        if self.up is None:
            self.up = socket.create_connection(self.destination, timeout=30)
            self.up.settimeout(None)
            self.pump = threading.Thread(target=self.answers, args=(self.up,), daemon=True)
            self.pump.start()
        return self.up

    def answers(self, up: socket.socket) -> None:
        """The server's bytes to the client, as they come."""
        try:
            while True:
                data = up.recv(65536)
                if not data:
                    self.client.shutdown(socket.SHUT_WR)
                    return
                self.client.sendall(data)
        except OSError:
            for sock in (self.client, up):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def send(self, data: bytes) -> None:
        if data:
            self.connect().sendall(data)

    def check(self, protocol: str, name: str | None, port: int, *, tunnel: bool) -> None:
        """Refused unless allowed; in a tunnel, whose target was judged, no name is no news."""
        if name is not None:
            name = name.lower().rstrip(".")
        if not (tunnel and name is None) and not self.rules.allows(name, port, self.destination):
            raise RefusedError(protocol, name)

    def run(self) -> None:
        if not select.select([self.client], [], [], QUIET)[0]:
            self.connect()  # a protocol whose server speaks first
        self.judge(Reader(self.client, b""), self.destination[1], tunnel=False)

    def judge(self, reader: Reader, port: int, *, tunnel: bool) -> None:
        """What the client sends first, judged, then passed on with the rest (for port)."""
        if not reader.data:
            try:
                reader.more()
            except ClientEndedError:
                self.ended()
                return
        while not reader.data.lstrip(b"\r\n\t "):
            if len(reader.data) >= HEAD_MAX:
                raise RefusedError("http", None)
            reader.more()
        if reader.data[0] == 0x16:  # a TLS record
            hello, name = client_hello(reader)
            self.check("tls", name, port, tunnel=tunnel)
            self.send(hello)
        elif reader.data[0] >= 0x80 and sslv2_hello(reader):  # no server name in one
            self.check("tls", None, port, tunnel=tunnel)
        elif reader.data.lstrip(b"\r\n\t ")[:1].isalpha():
            while b"\n" not in reader.data and len(reader.data) < HEAD_MAX:
                reader.more()
            if looks_like_http(reader.data):
                self.requests(reader, port, tunnel=tunnel)
                return
        self.send(reader.data)  # a raw protocol: allowed by address
        self.splice()

    def requests(self, reader: Reader, port: int, *, tunnel: bool) -> None:
        """HTTP requests, each judged before it is sent on, until the client ends."""
        while True:
            try:
                head = reader.until(b"\r\n\r\n", HEAD_MAX, "http")
            except ClientEndedError:
                if reader.data:
                    raise RefusedError("http", None) from None
                self.ended()
                return
            skipped = len(head) - len(head.lstrip(b"\r\n"))
            wanted, length, target_port = request(head[skipped:], port)
            for name, wanted_port in wanted:
                self.check("http", name, wanted_port, tunnel=tunnel)
            self.send(head)
            if length is None:
                self.chunks(reader)
            else:
                self.body(reader, length)
            if target_port:  # what goes through the tunnel is judged in turn
                self.judge(reader, target_port, tunnel=True)
                return

    def body(self, reader: Reader, length: int) -> None:
        while length > 0:
            if not reader.data:
                reader.more()
            data = reader.take(min(length, len(reader.data)))
            self.send(data)
            length -= len(data)

    def chunks(self, reader: Reader) -> None:
        """A chunked body, sent on as it was read, through its trailer."""
        while True:
            line = reader.until(b"\r\n", 4096, "http")
            size_text = line[:-2].split(b";", 1)[0]
            if (
                not 0 < len(size_text) <= 16
                or not set(size_text) <= HEX
                or any((c < 32 and c != 9) or c == 127 for c in line[:-2])
            ):
                raise RefusedError("http", None)
            self.send(line)
            size = int(size_text, 16)
            if size == 0:
                while True:  # the trailer: header lines, then a blank one
                    line = reader.until(b"\r\n", HEAD_MAX, "http")
                    if b"\r" in line[:-2] or b"\n" in line[:-2]:
                        raise RefusedError("http", None)
                    if line != b"\r\n" and b":" not in line:
                        raise RefusedError("http", None)
                    self.send(line)
                    if line == b"\r\n":
                        return
            self.body(reader, size)
            if reader.take(2) != b"\r\n":
                raise RefusedError("http", None)
            self.send(b"\r\n")

    def splice(self) -> None:
        """The client's bytes to the server, as they come, to the end."""
        up = self.connect()
        while True:
            data = self.client.recv(65536)
            if not data:
                self.ended()
                return
            up.sendall(data)

    def ended(self) -> None:
        """The client is done sending: so is the server's side, once it has answered."""
        if self.up is not None:
            self.up.shutdown(socket.SHUT_WR)
            if self.pump is not None:
                self.pump.join()

    def close(self, *, reset: bool) -> None:
        """Both sockets closed; reset: the client gets a reset, and the server too."""
        for sock in (self.up, self.client):
            if sock is None:
                continue
            try:
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RD)  # wakes the thread that waits on it
            except OSError:
                pass
            sock.close()


def original_destination(sock: socket.socket) -> tuple[str, int]:
    data = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, address = struct.unpack_from("!2xH4s", data)
    return socket.inet_ntoa(address), port


def serve(client: socket.socket, rules: Rules, record: Record, slots: threading.Semaphore) -> None:
    connection = None
    destination = ("", 0)
    reset = True
    try:
        destination = original_destination(client)
        if destination == rules.probe:
            client.sendall(PROBE_ANSWER)
            reset = False
        elif rules.reachable(*destination):  # otherwise not redirected: a caller of the proxy's own
            connection = Connection(client, destination, rules)
            connection.run()
            reset = False
    except RefusedError as refused:
        record.refuse(refused.protocol, destination, refused.name)
    except (OSError, ClientEndedError):
        pass
    finally:
        try:
            if connection is not None:
                connection.close(reset=reset)
            else:
                client.close()
        except OSError:
            pass
        slots.release()


def main(argv: list[str]) -> int:
    os.umask(0o077)
    port, rules_path, refused_path = argv[1:4]
    rules = Rules(rules_path)
    record = Record(refused_path)
    threading.stack_size(256 * 1024)
    slots = threading.Semaphore(CONNECTIONS_MAX)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen(128)
    while True:
        client, _ = listener.accept()
        if not slots.acquire(blocking=False):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            continue
        threading.Thread(target=serve, args=(client, rules, record, slots), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
