"""The first step of a run's task: what it runs, with which settings and inputs (TaskSpec plus
FileEntry list), from the configuration, the workspace and the agent. Changes nothing."""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent_worker_app.engines.base import GRACE_S, OWN_DEADLINE_S, FileEntry, TaskSpec

if TYPE_CHECKING:
    from agent_worker_app.agents.base_agent import BaseAgent
    from agent_worker_app.config import Config
    from agent_worker_app.git_manager import Workspace

AGENT_IDENTITY = ("agent-worker", "agent-worker@localhost")
LABEL = "agent-worker"


@dataclass(frozen=True)
class Session:
    """An agent's earlier session to resume: its id and the files it keeps it in."""

    session_id: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class Prepared:
    spec: TaskSpec
    inputs: list[FileEntry]
    secrets: tuple[str, ...]  # values to redact everywhere
    warnings: tuple[str, ...]
    nonce: str  # marks the task's result line; only its root stage knows it


def prepare(
    cfg: Config,
    agent: BaseAgent,
    ws: Workspace,
    *,
    image: str,
    run_id: str,
    run_dir: Path,
    local_engine: bool,
    session: Session | None = None,
) -> Prepared:
    """The task's spec and inputs; in copy mode, a pack of the branch is written to run_dir.
    With a session (--continue), the agent resumes it."""
    from agent_worker_app import git_manager

    secret_env = agent.secret_env()
    nonce = secrets.token_hex(16)
    inputs = [
        FileEntry("/agent-worker/task.md", cfg.task.encode("utf-8")),
        FileEntry("/agent-worker/nonce", nonce.encode(), 0o600),
        FileEntry("/agent-worker/secrets", None, 0o700),
        *(
            FileEntry(f"/agent-worker/secrets/{k}", v.encode(), 0o600)
            for k, v in secret_env.items()
        ),
    ]
    if cfg.maintenance:
        inputs.append(FileEntry("/agent-worker/maintenance", None, 0o755))
        inputs.extend(
            FileEntry(f"/agent-worker/maintenance/{n}", command.encode("utf-8", "surrogateescape"))
            for n, command in enumerate(cfg.maintenance, 1)
        )
    if cfg.check is not None:
        inputs.append(
            FileEntry("/agent-worker/check", cfg.check.encode("utf-8", "surrogateescape"))
        )
    resume: list[str] = []
    if session is not None and agent.session_dir:
        inputs.append(FileEntry("/agent-worker/session", None, 0o755))
        inputs += [FileEntry(f"/agent-worker/session/{f.name}", f) for f in session.files]
        resume = agent.resume_args(session.session_id)
    source = git_manager.source(ws)
    mount = cfg.workspace == "mount" or (
        cfg.workspace == "auto" and local_engine and source.mountable()
    )
    if not mount:
        pack = run_dir / "source.pack"
        git_manager.pack_branch(ws, pack)
        inputs.append(FileEntry("/agent-worker/source.pack", pack))
    if source.shallow:
        inputs.append(FileEntry("/agent-worker/shallow", source.shallow))
    if source.exclude.strip():
        inputs.append(FileEntry("/agent-worker/exclude", source.exclude))
    name, email = AGENT_IDENTITY
    if cfg.git_identity == "user":
        name, email = git_manager.user_identity(ws.root) or AGENT_IDENTITY
    hosts, warnings = allowlist([*agent.api_hosts(), *cfg.allow_hosts])
    # The project's plain variables first: agent-worker's own and the agent's win over them
    # (config.validate_env already refuses their names).
    env = (
        dict(cfg.env)
        | {
            "AW_BRANCH": ws.branch,
            "AW_BASE": ws.base_commit,
            "AW_OBJECT_FORMAT": ws.object_format,
            "AW_FIREWALL": "1" if cfg.firewall else "0",
            "AW_ALLOW_HOSTS": ",".join(hosts),
            # the task stops its agent by itself then, even with no agent-worker left to do it
            "AW_DEADLINE": str(int(time.time() + cfg.timeout_s + OWN_DEADLINE_S)),
            "AW_SESSION_DIR": agent.session_dir or "",
            "TZ": cfg.timezone,
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        | agent.container_env()
    )
    spec = TaskSpec(
        image=image,
        name=f"agent-worker-{run_id}",
        command=["/usr/local/bin/agent_inside.sh", "--", *agent.command(), *resume],
        env=env,
        labels=labels(run_id, ws.root, deadline=time.time() + cfg.timeout_s + 2 * GRACE_S)
        | {
            f"{LABEL}.branch": ws.branch,
            f"{LABEL}.base": ws.base_commit,
            f"{LABEL}.agent": cfg.agent_type,
        },
        memory_bytes=cfg.memory_bytes,
        cpus=cfg.cpus,
        pids_limit=cfg.pids_limit,
        firewall=cfg.firewall,
        object_dirs=source.object_dirs if mount else (),
        workspace_tmpfs=not cfg.environment.prepares_workspace,
    )
    return Prepared(spec, inputs, tuple(secret_env.values()), tuple(warnings), nonce)


def allowlist(entries: list[str]) -> tuple[list[str], list[str]]:
    """The firewall's allowlist without repeats, and a warning for each repeat."""
    hosts: list[str] = []
    warnings = []
    for host in entries:
        if host in hosts:
            warnings.append(f"allowed host {host} is listed twice")
        else:
            hosts.append(host)
    return hosts, warnings


def labels(run_id: str, project: Path, *, deadline: float) -> dict[str, str]:
    """Labels that let a later run, from this host or any other, tell whether the task's
    orchestrator is still there: its host, process and that process's start time, and the
    moment after which nobody waits for the task any more."""
    return {
        f"{LABEL}.run-id": run_id,
        f"{LABEL}.project": str(project),
        f"{LABEL}.host": socket.gethostname(),
        f"{LABEL}.pid": str(os.getpid()),
        f"{LABEL}.pid-start": process_start(os.getpid()),
        f"{LABEL}.deadline": str(int(deadline)),
    }


def process_start(pid: int) -> str:
    """A process's start time in clock ticks since boot: with the pid, it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]
