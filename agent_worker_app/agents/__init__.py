"""Registry of agent types: the built-ins plus entry-point group "agent_worker.agents".

A built-in is found without scanning the installed distributions (importing
importlib.metadata alone costs about 20 ms); plugins are looked up only for other names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from agent_worker_app.agents.base_agent import AgentSettings, BaseAgent
from agent_worker_app.errors import UsageError

ENTRY_POINT_GROUP = "agent_worker.agents"
_BUILTIN = {
    "claude": "agent_worker_app.agents.claude_agent:ClaudeAgent",
    "codex": "agent_worker_app.agents.codex_agent:CodexAgent",
    "command": "agent_worker_app.agents.command_agent:CommandAgent",
}


@dataclass(frozen=True)
class Listed:
    """One agent type for --list-agents: its class, or why it could not be loaded."""

    name: str
    origin: str  # "built-in", or the distribution that provides it
    cls: type[BaseAgent] | None
    problem: str | None = None


def _plugins() -> dict[str, tuple[str, str]]:
    """Name -> ("module:Class", distribution) of installed plugins; a built-in name cannot be
    taken over."""
    from importlib.metadata import entry_points

    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
        if ep.name not in _BUILTIN:
            found[ep.name] = (ep.value, dist)
    return found


def _load(target: str, origin: str) -> type[BaseAgent]:
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # noqa: BLE001 (a broken plugin is the user's to hear about)
        raise UsageError(
            f"agent plugin {target} (from {origin}) cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, BaseAgent)):
        raise UsageError(
            f"agent plugin {target} (from {origin}) is not a subclass of "
            "agent_worker_app.agents.base_agent.BaseAgent"
        )
    return cls


def agent_class(name: str) -> type[BaseAgent]:
    """The class of an agent type; UsageError naming the known ones otherwise."""
    if name in _BUILTIN:
        return _load(_BUILTIN[name], "built-in")
    plugins = _plugins()
    if name not in plugins:
        known = ", ".join(sorted([*_BUILTIN, *plugins]))
        raise UsageError(f"unknown agent type {name!r}; known: {known}")
    return _load(*plugins[name])


def get(name: str, settings: AgentSettings) -> BaseAgent:
    """A new agent of the given type."""
    return agent_class(name)(settings)


def listing() -> list[Listed]:
    """Every agent type, built-ins first; a plugin that fails to load is listed with why."""
    found = [
        Listed(name, "built-in", _load(target, "built-in")) for name, target in _BUILTIN.items()
    ]
    for name, (target, dist) in sorted(_plugins().items()):
        try:
            found.append(Listed(name, dist, _load(target, dist)))
        except UsageError as exc:
            found.append(Listed(name, dist, None, str(exc)))
    return found
