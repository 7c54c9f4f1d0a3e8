"""Registry of agent types: the built-ins plus entry-point group "agent_worker.agents"."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from agents.base_agent import BaseAgent
from errors import UsageError

ENTRY_POINT_GROUP = "agent_worker.agents"
_BUILTIN = {"claude": "agents.claude_agent:ClaudeAgent"}


def _targets() -> dict[str, str]:
    """Name -> "module:Class"; a built-in name cannot be taken over by a plugin."""
    targets = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    targets.update(_BUILTIN)
    return targets


def _load(target: str) -> type[BaseAgent]:
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, BaseAgent)):
        raise UsageError(f"agent plugin {target} is not a BaseAgent subclass")
    return cls


def available() -> dict[str, type[BaseAgent]]:
    """Every agent type that can be used, by name."""
    return {name: _load(target) for name, target in sorted(_targets().items())}


def get(name: str) -> BaseAgent:
    """A new agent of the given type; UsageError naming the known ones otherwise."""
    targets = _targets()
    if name not in targets:
        raise UsageError(f"unknown agent type {name!r}; known: {', '.join(sorted(targets))}")
    return _load(targets[name])()
