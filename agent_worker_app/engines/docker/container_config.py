"""The agent container as the engine's API describes it: the body of POST /containers/create,
as api.EngineAPI sends it to any engine."""

from __future__ import annotations

from typing import Any

from agent_worker_app.engines.base import TaskSpec

AGENT_UID = 1000


def container_config(spec: TaskSpec) -> dict[str, Any]:
    """Its limits, root to start with (the firewall), and its stdin open for the run's inputs:
    StdinOnce, so that the end of agent-worker's attach is the end of the container's stdin."""
    # SETUID/SETGID/SETPCAP to drop to the agent user for good; KILL so docker-init (root) can
    # pass a stop signal on to it. The agent itself keeps none of them.
    caps = ["SETUID", "SETGID", "SETPCAP", "KILL"]
    caps += ["NET_ADMIN", "NET_RAW"] if spec.firewall else []
    host: dict[str, Any] = {
        "Init": True,
        "CapDrop": ["ALL"],
        "CapAdd": caps,
        "SecurityOpt": ["no-new-privileges"],
        "Memory": spec.memory_bytes,
        "MemorySwap": spec.memory_bytes,
        "PidsLimit": spec.pids_limit,
        "NetworkMode": "bridge",
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
    if spec.cpus:
        host["NanoCpus"] = int(spec.cpus * 1e9)
    if spec.workspace_tmpfs:
        host["Tmpfs"] = {
            "/workspace": f"size={spec.memory_bytes},uid={AGENT_UID},gid={AGENT_UID},mode=0755,exec"
        }
    return {
        "Image": spec.image,
        "Cmd": list(spec.command),
        "User": "root",
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "Labels": dict(spec.labels),
        "WorkingDir": "/workspace",
        "Tty": False,
        "OpenStdin": True,
        "StdinOnce": True,
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "NetworkDisabled": False,
        "HostConfig": host,
    }
