"""The agent container as the engine's API describes it: the body of POST /containers/create,
the sandbox profile (profile.py) in Docker's terms."""

from __future__ import annotations

from typing import Any

from agent_worker_app.engines import profile
from agent_worker_app.engines.base import TaskSpec


def storage_size(spec: TaskSpec) -> dict[str, Any]:
    """The HostConfig part that caps the container's writable layer at --disk: only engines
    whose storage can (overlay2 on xfs with pquota, btrfs, zfs) take it; others refuse it."""
    size = spec.profile.disk_bytes
    return {"StorageOpt": {"size": str(size)}} if size else {}


# A container whose stdin stays open for agent-worker's attach (StdinOnce: the end of the
# attach is the end of its stdin) and whose output is read through it.
ATTACHED: dict[str, Any] = {
    "Tty": False,
    "OpenStdin": True,
    "StdinOnce": True,
    "AttachStdin": True,
    "AttachStdout": True,
    "AttachStderr": True,
}


def container_config(spec: TaskSpec, network_of: str | None = None) -> dict[str, Any]:
    """Its limits, root to start with (the firewall), and its stdin open for the run's inputs:
    StdinOnce, so that the end of agent-worker's attach is the end of the container's stdin.
    network_of: the network companion whose namespace it joins (companion.py), which holds its
    firewall: no capability of the network's for it then."""
    limits = spec.profile
    host: dict[str, Any] = {
        "Init": profile.INIT,
        "CapDrop": ["ALL"],
        "CapAdd": list(profile.BASE_CAPABILITIES) if network_of else limits.capabilities,
        "SecurityOpt": ["no-new-privileges"] if profile.NO_NEW_PRIVILEGES else [],
        "Memory": limits.memory_bytes,
        "MemorySwap": limits.memory_bytes,
        "PidsLimit": limits.pids_limit,
        "NetworkMode": (
            f"container:{network_of}" if network_of else "none" if limits.offline else "bridge"
        ),
        # agent-worker keeps the output itself (agent.jsonl, container.log); the engine's
        # json-file copy doubled the disk use and capped output at a fifth of the speed.
        "LogConfig": {"Type": "none", "Config": {}},
        "Mounts": [
            {
                "Target": f"/source/objects-{i}",
                "Source": str(path),
                "Type": "bind",
                "ReadOnly": True,
            }
            for i, path in enumerate(spec.object_dirs)
        ],
    }
    if limits.runtime is not None:
        host["Runtime"] = limits.runtime
    if limits.nano_cpus:
        host["NanoCpus"] = limits.nano_cpus
    tmpfs = dict.fromkeys(profile.SCRATCH, limits.scratch_tmpfs_options)
    if limits.workspace_tmpfs:
        tmpfs[profile.WORKDIR] = limits.workspace_tmpfs_options
    host["Tmpfs"] = tmpfs
    return {
        "Image": spec.image,
        "Cmd": list(spec.command),
        "User": profile.USER,
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "Labels": dict(spec.labels),
        "WorkingDir": profile.WORKDIR,
        **ATTACHED,
        "NetworkDisabled": False,
        "HostConfig": host,
    }
