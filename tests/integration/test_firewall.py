"""init-firewall.sh in a real container: what it blocks is recorded, with the names the
lookups gave, in state only root can read. The names come from a DNS server of the test's own
(a peer container), never from a public resolver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

DNS_SERVER = r"""
import socket, struct, sys

address = sys.argv[1]
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("", 53))
while True:
    query, peer = server.recvfrom(512)
    at, labels = 12, []
    while query[at]:
        labels.append(query[at + 1 : at + 1 + query[at]].decode())
        at += query[at] + 1
    qtype = struct.unpack("!H", query[at + 1 : at + 3])[0]
    question = query[12 : at + 5]
    known = ".".join(labels).lower() == "registry.aw.test"
    answer = b""
    if known and qtype == 1:
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    head = struct.pack(
        "!HHHHHH", struct.unpack("!H", query[:2])[0], 0x8180 | (0 if known else 3), 1,
        1 if answer else 0, 0, 0,
    )
    server.sendto(head + question + answer, peer)
"""


@pytest.fixture
def dns_server(docker_client: Any, peer_image: str, target: str) -> Iterator[str]:
    """A DNS server of the test's own: registry.aw.test is the target's address."""
    server = docker_client.containers.run(
        peer_image,
        ["python3", "-c", DNS_SERVER, target],
        user="nobody",
        detach=True,
        labels={"agent-worker-test": "dns"},
    )
    try:
        server.reload()
        yield server.attrs["NetworkSettings"]["IPAddress"]
    finally:
        server.remove(force=True)


AS_AGENT = "setpriv --reuid=agent --regid=agent --init-groups --no-new-privs"


def test_blocked_destinations_are_recorded_with_the_names_looked_up(
    docker_client: Any, command_image: str, dns_server: str, target: str
) -> None:
    script = f"""
        /usr/local/bin/init-firewall.sh 2>/dev/null
        # the recorder is not waited for (a run's agent starts well after it listens): here,
        # wait until it listens
        for i in $(seq 200); do ss -Hlun | grep -q '127.0.0.1:53 ' && break; sleep 0.05; done
        {AS_AGENT} bash -c '
          for i in 1 2; do curl -s --max-time 5 http://registry.aw.test:8080/; echo "curl=$?"; done
          getent hosts nowhere.aw.test; echo "unknown=$?"
          cat /run/agent-worker-names; echo "read=$?"
          ipset save aw-blocked; echo "ipset=$?"
          echo "1.2.3.4 forged.example" >> /run/agent-worker-names; echo "write=$?"
        ' 2>&1
        echo "report: $(/usr/local/bin/init-firewall.sh --report)"
    """
    output = docker_client.containers.run(
        command_image,
        ["bash", "-c", script],
        user="root",
        cap_drop=["ALL"],
        cap_add=["SETUID", "SETGID", "NET_ADMIN", "NET_RAW"],
        dns=[dns_server],
        remove=True,
    ).decode()
    assert output.count("curl=7") == 2, output  # refused at once
    assert "unknown=2" in output  # NXDOMAIN passed on as it came
    assert "read=1" in output  # the record is root's
    assert "ipset=1" in output
    assert "write=1" in output
    report = json.loads(output.split("report: ", 1)[1])
    assert report == [
        {
            "address": target,
            "protocol": "tcp",
            "port": 8080,
            "count": 2,
            "names": ["registry.aw.test"],
        }
    ]
