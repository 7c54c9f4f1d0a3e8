"""The sandbox profile: what every backend gives a task, as values each translates into its
engine's terms (engines/docker/container_config.py, and each other backend's own).

The task starts as root with no capability but those listed here (the firewall's, and what it
needs to drop to the agent user for good), under an init that passes a stop signal on, with no
new privileges, and its limits; the agent itself runs as AGENT_UID with none of them."""

from __future__ import annotations

from dataclasses import dataclass

AGENT_UID = 1000  # the agent user's uid and gid in the image
USER = "root"  # the task's first stage: the firewall, then the drop to AGENT_UID
WORKDIR = "/workspace"
# written by anyone, kept by nobody: tmpfs in the container, never the engine's disk
SCRATCH = ("/tmp", "/var/tmp")  # noqa: S108 (the container's own, not this machine's)
INIT = True  # an init as pid 1, passing a stop signal on to the task
NO_NEW_PRIVILEGES = True
# SETUID/SETGID/SETPCAP to drop to the agent user for good; KILL so the init (root) can pass a
# stop signal on to it. The agent itself keeps none of them.
BASE_CAPABILITIES = ("SETUID", "SETGID", "SETPCAP", "KILL")
FIREWALL_CAPABILITIES = ("NET_ADMIN", "NET_RAW")


@dataclass(frozen=True)
class Profile:
    """A task's limits and whether its firewall is set up."""

    memory_bytes: int
    cpus: float | None
    pids_limit: int
    firewall: bool
    # /workspace as a tmpfs (fast, empty); False when the image's environment prepared it
    # (a .venv, node_modules made by setup), which a tmpfs would hide
    workspace_tmpfs: bool = True
    # the engine's runtime for the task (Docker's --runtime: runsc for gVisor); None: its default
    runtime: str | None = None
    # --disk: the most the task's own files outside /workspace may take (its home, setup's
    # paths, the inputs); its scratch directories (SCRATCH) are tmpfs of this size at most
    disk_bytes: int | None = None
    # no network at all (the check's task): an engine that can gives it none; where one cannot
    # (a swarm service), the task's root closes it (the firewall's capabilities, root's only)
    offline: bool = False

    @property
    def capabilities(self) -> list[str]:
        """The task's capabilities (all others dropped)."""
        network = self.firewall or self.offline
        return [*BASE_CAPABILITIES, *(FIREWALL_CAPABILITIES if network else ())]

    @property
    def nano_cpus(self) -> int | None:
        return int(self.cpus * 1e9) if self.cpus else None

    @property
    def workspace_tmpfs_options(self) -> str:
        """The workspace tmpfs's mount options: as large as the memory limit, the agent's."""
        return f"size={self.memory_bytes},uid={AGENT_UID},gid={AGENT_UID},mode=0755,exec"

    @property
    def scratch_bytes(self) -> int:
        """A scratch tmpfs's size: --disk and memory both bound it (tmpfs is memory)."""
        return min(self.disk_bytes or self.memory_bytes, self.memory_bytes)

    @property
    def scratch_tmpfs_options(self) -> str:
        return f"size={self.scratch_bytes},mode=1777,exec"
