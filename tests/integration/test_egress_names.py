"""Egress by name, in a real container: behind a resolver that gives every name one address (as
on the test machines, where a proxy answers for every external name), allowing @pypi must not
allow any other name on that address. The agent tries it every way a client can name a host (TLS
server name, HTTP Host, a later request on a kept connection, CONNECT, a request through an
allowed tunnel, a request after a silent start); each is refused and reported, never reaches
the peer, and the same requests naming allowed hosts go through the same path. The peer is a
container of the test's own on the bridge, which prints every name it is asked for."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_firewall import AS_AGENT, as_root_with_firewall_caps, dns_server_for

from agent_worker_app import presets

PEER = r"""
import socket, ssl, sys, threading

with open("/tmp/peer.pem", "w") as out:
    out.write(sys.argv[1])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("/tmp/peer.pem")
context.sni_callback = lambda sock, name, _: said("tls", name)


def said(*words):
    print(*words, flush=True)


def http(conn):
    reader = conn.makefile("rb")
    while True:
        line = reader.readline()
        if not line:
            return
        host = ""
        for header in iter(reader.readline, b"\r\n"):
            if not header:
                return
            if header.lower().startswith(b"host:"):
                host = header[5:].strip().decode()
        said("http", line.decode().strip(), "host=" + host)
        if line.startswith(b"CONNECT "):  # a tunnel to itself
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\npeer says hi")


def tls(conn):
    try:
        http(context.wrap_socket(conn, server_side=True))
    except OSError as e:
        said("tls failed", type(e).__name__)


def greet(conn):  # a protocol whose server speaks first
    conn.sendall(b"greetings\n")
    for line in conn.makefile("rb"):
        said("raw", line.decode(errors="replace").strip())


def serve(server, handle):
    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


threads = []
for port, handle in ((443, tls), (8080, http), (2222, greet)):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("", port))
    server.listen(16)
    threads.append(threading.Thread(target=serve, args=(server, handle)))
for thread in threads:
    thread.start()
said("ready")
"""


@pytest.fixture(scope="module")
def certificate(docker_client: Any, command_image: str) -> str:
    """A self-signed key and certificate (PEM), made in a container."""
    return str(
        docker_client.containers.run(
            command_image,
            [
                "bash",
                "-c",
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
                " -subj /CN=peer -days 2 -keyout /tmp/k -out /tmp/c 2>/dev/null"
                " && cat /tmp/k /tmp/c",
            ],
            remove=True,
        ).decode()
    )


@pytest.fixture
def peer(docker_client: Any, peer_image: str, certificate: str) -> Iterator[Any]:
    """The peer: TLS on 443, HTTP on 8080 (CONNECT tunnels to itself), a greeting on 2222."""
    server = docker_client.containers.run(
        peer_image,
        ["python3", "-c", PEER, certificate],
        detach=True,
        labels={"agent-worker-test": "egress-peer"},
    )
    try:
        for _ in range(200):  # up within 20 s, as a rule well within one
            if b"ready" in server.logs():
                break
            time.sleep(0.1)
        server.reload()
        yield server
    finally:
        server.remove(force=True)


# What the agent does (as the agent user, no capabilities): allowed names first, then each way
# of naming another host on the same address; c prints the body and curl's exit status.
AGENT = r"""
c() { curl -sk --max-time 5 "$@"; echo " exit=$?"; }
echo "pypi: $(c https://pypi.org/simple/)"
echo "files: $(c https://files.pythonhosted.org/)"
echo "sni: $(c --resolve sni.evil.example:443:$PEER https://sni.evil.example/)"
echo "plain: $(c http://registry.aw.test:8080/plain)"
echo "host: $(c -H 'Host: host.evil.example' http://registry.aw.test:8080/host)"
echo "kept: $(c http://registry.aw.test:8080/first --next -sk --max-time 5 \
  -H 'Host: kept.evil.example' http://registry.aw.test:8080/second)"
echo "tunnel: $(c -p -x http://registry.aw.test:8080 http://pypi.org:443/tunnelled)"
echo "connect: $(c -p -x http://registry.aw.test:8080 http://connect.evil.example:443/)"
echo "inside: $(c -p -x http://registry.aw.test:8080 -H 'Host: inside.evil.example' \
  http://pypi.org:443/inside)"
exec 3<>/dev/tcp/registry.aw.test/2222 && read -r line <&3 && echo "greeting: $line"
echo hello >&3; exec 3<&-
exec 3<>/dev/tcp/registry.aw.test/2222 && read -r line <&3
printf 'GET / HTTP/1.1\r\nHost: silent.evil.example\r\n\r\n' >&3
read -r -t 5 answer <&3; echo "silent: read=$? ${answer}"; exec 3<&-
echo "forged: $(c --resolve forged.example:15001:127.0.0.1 https://forged.example:15001/)"
cat /run/agent-worker-egress-refused; echo "read=$?"
echo "1 tls 10.0.0.1 443 forged.example" >>/run/agent-worker-egress-refused; echo "write=$?"
cat /run/agent-worker-egress-rules; echo "read rules=$?"
kill -KILL $(pgrep -f egress-proxy.py) 2>/dev/null; echo "kill=$?"
echo "after: $(c https://pypi.org/after)"
"""


def test_an_unallowed_name_on_an_allowed_address_is_refused(
    docker_client: Any, command_image: str, peer_image: str, peer: Any
) -> None:
    address = peer.attrs["NetworkSettings"]["IPAddress"]
    allowed = [*presets.expand(("@pypi",), "test"), "registry.aw.test:8080"]
    allowed.append("registry.aw.test:2222")
    with dns_server_for(docker_client, peer_image, address, "*") as dns:
        resolver = dns.attrs["NetworkSettings"]["IPAddress"]
        script = f"""
            AW_ALLOW_HOSTS={",".join(allowed)} /usr/local/bin/init-firewall.sh \
              2>/dev/null || echo "firewall failed"
            cat >/tmp/agent.sh <<'AGENT'
            {AGENT}
AGENT
            {AS_AGENT} env PEER={address} bash /tmp/agent.sh 2>&1
            echo "report: $(/usr/local/bin/init-firewall.sh --report)"
        """
        output = as_root_with_firewall_caps(docker_client, command_image, script, dns=[resolver])
    seen = peer.logs().decode()
    said = dict(line.split(": ", 1) for line in output.splitlines() if ": " in line)
    assert "firewall failed" not in output, output
    # The allowed names, through the same proxy, to the same address: through.
    for allowed_way in ("pypi", "files", "plain", "tunnel", "after"):
        assert said[allowed_way] == "peer says hi exit=0", output
    assert said["kept"].startswith("peer says hi"), output  # the first request of the two
    assert said["greeting"] == "greetings", output  # a server that speaks first
    for line in (
        "tls pypi.org",
        "tls files.pythonhosted.org",
        "http GET /plain HTTP/1.1 host=registry.aw.test:8080",
        "http GET /first HTTP/1.1 host=registry.aw.test:8080",
        "http CONNECT pypi.org:443 HTTP/1.1 host=pypi.org:443",
        "http GET /tunnelled HTTP/1.1 host=pypi.org:443",
        "raw hello",
    ):
        assert line in seen, seen
    # Every other name: refused before it left the container.
    for refused_way in ("sni", "host", "connect", "inside", "forged"):
        assert not said[refused_way].endswith("exit=0"), output
    assert "peer says hi exit=0" not in said["kept"], output  # the second request never answered
    assert said["silent"].startswith("read=1"), output  # reset, no answer
    assert "evil" not in seen, seen
    assert "forged" not in seen, seen
    # The record is root's: the agent can neither read nor write it, nor stop the proxy.
    for line in ("read=1", "write=1", "read rules=1", "kill=1"):
        assert line in output, output
    report = json.loads(output.split("report: ", 1)[1])
    found = {
        (e["address"], e["protocol"], e["port"], tuple(e["names"]))
        for e in report
        if e["protocol"] in ("tls", "http")
    }
    assert found == {
        (address, "tls", 443, ("sni.evil.example",)),
        (address, "http", 8080, ("host.evil.example",)),
        (address, "http", 8080, ("kept.evil.example",)),
        (address, "http", 8080, ("connect.evil.example",)),
        (address, "http", 8080, ("inside.evil.example",)),
        (address, "http", 2222, ("silent.evil.example",)),
    }, report
    assert all(e["count"] >= 1 for e in report)
