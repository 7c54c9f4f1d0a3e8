"""The first step of a run's task: what it runs, with which settings and inputs (TaskSpec plus
FileEntry list), from the configuration, the workspace and the agent. Changes nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent_worker_app import git_manager
from agent_worker_app.engines import channel, sweep
from agent_worker_app.engines.base import TaskSpec
from agent_worker_app.engines.channel import FileEntry, Inputs
from agent_worker_app.engines.profile import Profile
from agent_worker_app.errors import PreconditionError

if TYPE_CHECKING:
    from agent_worker_app.agents.base_agent import BaseAgent
    from agent_worker_app.config import Config
    from agent_worker_app.git_manager import Workspace

AGENT_IDENTITY = ("agent-worker", "agent-worker@localhost")


@dataclass(frozen=True)
class Session:
    """An agent's earlier session to resume: its id and the files it keeps it in."""

    session_id: str
    files: tuple[Path, ...]
    cost_usd: float | None = None  # what the agent reported the session had cost so far


@dataclass(frozen=True)
class Prepared:
    spec: TaskSpec
    inputs: Inputs  # with the nonce that marks the task's result; only its root stage knows it
    secrets: tuple[str, ...]  # values to redact everywhere
    warnings: tuple[str, ...]


def prepare(
    cfg: Config,
    agent: BaseAgent,
    ws: Workspace,
    *,
    image: str,
    run_id: str,
    run_dir: Path,
    session: Session | None = None,
) -> Prepared:
    """The task's spec and inputs; in copy mode (auto's choice on every engine), a pack of exactly
    the branch's history is written to run_dir. With a session (--continue), the agent resumes it.

    Only an explicit --workspace mount shares the object directories, and with them every object
    in them: other branches', stashes', earlier runs', borrowed repositories'. A directory of the
    branch's objects alone would cost what the pack costs, so auto never mounts."""
    secret_env = agent.secret_env()
    inputs = [
        FileEntry(channel.TASK, cfg.task.encode("utf-8")),
        FileEntry(channel.SECRETS, None, 0o700),
        *(FileEntry(f"{channel.SECRETS}/{k}", v.encode(), 0o600) for k, v in secret_env.items()),
    ]
    if cfg.maintenance:
        inputs.append(FileEntry(channel.MAINTENANCE, None, 0o755))
        inputs.extend(
            FileEntry(f"{channel.MAINTENANCE}/{n}", command.encode("utf-8", "surrogateescape"))
            for n, command in enumerate(cfg.maintenance, 1)
        )
    resume: list[str] = []
    if session is not None and agent.session_dir:
        inputs.append(FileEntry(channel.SESSION, None, 0o755))
        inputs += [FileEntry(f"{channel.SESSION}/{f.name}", f) for f in session.files]
        resume = agent.resume_args(session.session_id)
    source = git_manager.source(ws)
    mount = cfg.workspace == "mount"
    if mount and source.partial:
        raise PreconditionError(
            "--workspace mount cannot share a partial clone's objects (some are missing from "
            "it): use --workspace copy"
        )
    if not mount:
        pack = run_dir / "source.pack"
        git_manager.pack_branch(ws, pack)
        inputs.append(FileEntry(channel.SOURCE_PACK, pack))
    if source.shallow:
        inputs.append(FileEntry(channel.SHALLOW, source.shallow))
    if source.exclude.strip():
        inputs.append(FileEntry(channel.EXCLUDE, source.exclude))
    name, email = AGENT_IDENTITY
    if cfg.git_identity == "user":
        name, email = git_manager.user_identity(ws.root) or AGENT_IDENTITY
    hosts, warnings = allowlist([*agent.api_hosts(), *cfg.allow_hosts])
    # The project's plain variables first: agent-worker's own and the agent's win over them
    # (config.validate_env already refuses their names).
    env = (
        dict(cfg.env)
        | channel.task_env(
            branch=ws.branch,
            base=ws.base_commit,
            object_format=ws.object_format,
            firewall=cfg.firewall,
            allow_hosts=hosts,
            timeout_s=cfg.timeout_s,
            session_dir=agent.session_dir or "",
        )
        | {
            "TZ": cfg.timezone,
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        | agent.container_env()
    )
    if agent.gated:  # root's credential gate takes the credential (agent_inside.sh)
        env["AW_GATE_UPSTREAM"] = agent.gate_upstream() or ""
        if agent.prices:  # it prices what it counts, and holds the agent to --max-cost
            prices = {"prices": dict(agent.prices), "limit_usd": cfg.max_cost_usd}
            env["AW_GATE_PRICES"] = json.dumps(prices, separators=(",", ":"))
    spec = TaskSpec(
        image=image,
        name=f"agent-worker-{run_id}",
        command=[*channel.COMMAND, *agent.command(), *resume],
        env=channel.root_safe(env),
        labels=sweep.labels(
            run_id, ws.root, branch=ws.branch, base=ws.base_commit, agent=cfg.agent_type
        ),
        timeout_s=cfg.timeout_s,
        profile=Profile(
            memory_bytes=cfg.memory_bytes,
            cpus=cfg.cpus,
            pids_limit=cfg.pids_limit,
            firewall=cfg.firewall,
            workspace_tmpfs=not cfg.environment.prepares_workspace,
            runtime=cfg.runtime,
            disk_bytes=cfg.disk_bytes,
        ),
        object_dirs=source.object_dirs if mount else (),
        max_result_bytes=cfg.max_result_bytes,
    )
    files = channel.inputs(inputs, channel.new_nonce())
    return Prepared(spec, files, tuple(secret_env.values()), tuple(warnings))


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
