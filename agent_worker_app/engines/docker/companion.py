"""The network companion: the agent's egress firewall, egress proxy, DNS forwarder and credential
gate in a container of their own, whose network namespace the agent's container joins, for a
runtime whose network stack is not the kernel's (gVisor's runsc). Rules made inside such a
sandbox do not act on its network; rules in the namespace it joins do, and the credential then
never enters the agent's container at all (container/network-companion.sh).

The companion runs under runc from the run's image (which has the firewall's tools), root with
the capabilities its rules and its drop to a uid of its own need; it lives as long as
agent-worker's attach to its stdin (AutoRemove): removed with the task, or by the engine once
agent-worker is gone. Its record of blocked destinations and its meter are read from it when
the agent's container has ended, and take the place of the (empty) ones the agent's container
reports."""

from __future__ import annotations

import json
import socket
import time
from contextlib import suppress
from dataclasses import replace
from typing import Any

from agent_worker_app.engines import channel, sweep
from agent_worker_app.engines.base import OutputStream, TaskSpec
from agent_worker_app.engines.channel import Demux, FileEntry, Inputs
from agent_worker_app.engines.docker.api import EngineAPI, EngineError
from agent_worker_app.engines.docker.container_config import ATTACHED
from agent_worker_app.engines.profile import Profile
from agent_worker_app.errors import DockerError

ROLE = "network"  # its sweep.ROLE label: no task of its own to recover
# The uid of its firewall's own processes (egress proxy, DNS forwarder, credential gate): no
# uid of the image's, and none a gVisor sandbox's sockets have in the kernel's eyes (root's).
NET_UID = 15000
COMMAND = ["/bin/bash", "-p", "/usr/local/bin/network-companion.sh"]
# NET_ADMIN/NET_RAW: its rules; SETUID/SETGID/SETPCAP: the drop to NET_UID; CHOWN: that uid's
# files; DAC_READ_SEARCH: root reads their records; KILL: root sees that the gate still runs.
CAPABILITIES = [
    *("NET_ADMIN", "NET_RAW", "SETUID", "SETGID", "SETPCAP", "CHOWN", "DAC_READ_SEARCH", "KILL")
]
MEMORY = 256 << 20
PIDS = 64
READY_S = 60.0  # its firewall resolves the allowed names: a slow resolver takes its time
REPORT_S = 10.0
REPORT_MARK = b"agent-worker-network "
# runtimes whose network stack is the kernel's: the firewall is set inside the agent's container
KERNEL_NETWORK = frozenset({"runc", "io.containerd.runc.v2", "io.containerd.runtime.v1.linux"})
FIREWALL_LOG = "agent-worker/firewall.log"  # what the companion's firewall said, for the task


def needed(profile: Profile, runtime: str) -> bool:
    """Whether the task's network is to be held by a companion: a firewall, under a runtime
    whose network stack is not the kernel's."""
    return profile.firewall and not profile.offline and runtime not in KERNEL_NETWORK


def _secret(spec: TaskSpec, inputs: Inputs) -> tuple[bytes, Inputs]:
    """The credential for the companion's gate (b"" without a gate), and the task's inputs with
    it blanked: the agent's container gets the variable's name only (the gate's placeholder)."""
    if not spec.env.get("AW_GATE_UPSTREAM"):
        return b"", inputs
    found: list[bytes] = []
    files: list[FileEntry] = []
    for entry in inputs.files:
        if entry.path.startswith(channel.SECRETS + "/") and isinstance(entry.data, bytes):
            found.append(entry.data)
            files.append(replace(entry, data=b""))
        else:
            files.append(entry)
    if len(found) > 1:
        raise DockerError("the credential gate takes one credential, not several")
    secret = found[0] if found else b""
    if b"\n" in secret or b"\r" in secret:
        raise DockerError("the agent's credential holds a line break: it cannot be passed on")
    return secret, replace(inputs, files=tuple(files))


class Companion:
    """A started companion (see the module's docstring), until close()."""

    def __init__(self, api: EngineAPI, ident: str, name: str, attach: socket.socket) -> None:
        self.api = api
        self.id = ident
        self.name = name
        self._socket = attach
        self._demux = Demux()
        self._out = b""
        self._err = b""
        self._report: dict[str, Any] | None = None
        self._asked = False

    @classmethod
    def start(cls, api: EngineAPI, spec: TaskSpec, inputs: Inputs) -> tuple[Companion, Inputs]:
        """The companion of spec's task, ready (its firewall and gate up); the task's inputs
        with the credential taken out and the firewall's words put in. DockerError (exit 3)
        when it cannot be made, naming why."""
        secret, inputs = _secret(spec, inputs)
        name = f"{spec.name}-network"
        try:
            ident = api.create(name, _config(spec, gated=bool(secret)))
        except (OSError, EngineError) as exc:
            raise DockerError(
                f"Docker refused to create the network companion: {_why(exc)}"
            ) from None
        attach: socket.socket | None = None
        try:
            attach = api.attach(ident)
            api.start(ident)
            companion = cls(api, ident, name, attach)
            attach.sendall(secret + b"\n")
            companion._wait_ready()
        except BaseException as exc:
            if attach is not None:
                with suppress(OSError):
                    attach.close()
            with suppress(OSError, EngineError):
                api.remove(ident)
            if isinstance(exc, (OSError, EngineError)):
                raise DockerError(f"cannot start the network companion: {_why(exc)}") from None
            raise
        said = FileEntry(FIREWALL_LOG, companion._err, 0o644)
        return companion, replace(inputs, files=(*inputs.files, said))

    def _read(self, until: bytes, stream: int, timeout: float) -> bool:
        """Read its output until stream (1 stdout, 2 stderr) holds until; False when it ended
        first or the time passed."""
        end = time.monotonic() + timeout
        while until not in (self._out if stream == 1 else self._err):
            left = end - time.monotonic()
            if left <= 0:
                return False
            self._socket.settimeout(left)
            try:
                chunk = self._socket.recv(1 << 16)
            except OSError:
                return False
            if not chunk:
                return False
            for which, data in self._demux.feed(chunk):
                if which == 1:
                    self._out += data
                else:
                    self._err += data
        return True

    def _wait_ready(self) -> None:
        if self._read(b"ready\n", 1, READY_S):
            self._out = self._out.split(b"ready\n", 1)[1]
            return
        last = self._err.decode("utf-8", "replace").strip().splitlines()
        why = last[-1].removeprefix("agent-worker: error: ") if last else "it ended"
        raise DockerError(f"the firewall could not be set up: {why} (network companion)")

    def report(self) -> dict[str, Any] | None:
        """Its record of blocked destinations and its meter ({"blocked": [...], "meter": ...}),
        asked once; None when it does not answer."""
        if self._asked:
            return self._report
        self._asked = True
        try:
            self._socket.sendall(b"report\n")
        except OSError:
            return None
        if not self._read(b"\n", 1, REPORT_S) or not self._out.startswith(REPORT_MARK):
            return None
        line = self._out.split(b"\n", 1)[0][len(REPORT_MARK) :]
        with suppress(ValueError):
            found = json.loads(line)
            if isinstance(found, dict):
                self._report = found
        return self._report

    def close(self) -> None:
        """Let go of it: the end of its stdin ends it, and the engine removes it."""
        with suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            self._socket.close()
        with suppress(OSError, EngineError):
            self.api.remove(self.id)


def _why(exc: OSError | EngineError) -> str:
    return exc.message if isinstance(exc, EngineError) else str(exc)


def _config(spec: TaskSpec, *, gated: bool) -> dict[str, Any]:
    env = {
        "AW_ALLOW_HOSTS": spec.env.get("AW_ALLOW_HOSTS", ""),
        "AW_NET_UID": str(NET_UID),
    }
    if gated:
        env["AW_GATE_UPSTREAM"] = spec.env.get("AW_GATE_UPSTREAM", "")
        env["AW_GATE_PRICES"] = spec.env.get("AW_GATE_PRICES", "")
    labels = spec.labels | sweep.deadline_label(spec.timeout_s) | {sweep.ROLE: ROLE}
    return {
        "Image": spec.image,
        "Cmd": COMMAND,
        "User": "root",
        "Env": [f"{key}={value}" for key, value in channel.root_safe(env).items()],
        "Labels": labels,
        **ATTACHED,
        "HostConfig": {
            "Init": True,
            "AutoRemove": True,
            "CapDrop": ["ALL"],
            "CapAdd": CAPABILITIES,
            "SecurityOpt": ["no-new-privileges"],
            "Memory": MEMORY,
            "MemorySwap": MEMORY,
            "PidsLimit": PIDS,
            "NetworkMode": "bridge",
            # its rules act on the namespace only under a runtime whose network is the kernel's
            "Runtime": "runc",
            # the DNS forwarder (NET_UID's) answers on port 53
            "Sysctls": {"net.ipv4.ip_unprivileged_port_start": "53"},
            "LogConfig": {"Type": "none", "Config": {}},
        },
    }


class Networked:
    """The agent's output stream (an OutputStream) with the companion's word in its result:
    the blocked destinations and the meter are the companion's record, not the container's."""

    def __init__(self, stream: OutputStream, companion: Companion) -> None:
        self._stream = stream
        self._companion = companion

    @property
    def error(self) -> BaseException | None:
        return self._stream.error

    @error.setter
    def error(self, value: BaseException | None) -> None:
        self._stream.error = value

    @property
    def result(self) -> str | None:
        return with_record(self._stream.result, self._companion.report())

    def network_record(self) -> dict[str, Any] | None:
        return self._companion.report()

    def is_alive(self) -> bool:
        return self._stream.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._stream.join(timeout)


def with_record(result: str | None, record: dict[str, Any] | None) -> str | None:
    """The task's result line (JSON text) with the companion's record in it; a record that did
    not come is a warning of the run's, never an empty record passed off as the truth."""
    if result is None:
        return None
    try:
        data = json.loads(result)
    except ValueError:
        return result
    if not isinstance(data, dict):
        return result
    if record is None:
        warnings = data.get("warnings")
        data["warnings"] = [
            *(warnings if isinstance(warnings, list) else []),
            "the network companion did not say what it blocked or metered: not reported",
        ]
        data["blocked"], data["meter"] = [], None
    else:
        data["blocked"], data["meter"] = record.get("blocked"), record.get("meter")
    return json.dumps(data)
