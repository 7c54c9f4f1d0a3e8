"""Registry of agent types: the built-ins plus entry-point group "agent_worker.agents".

A built-in is found without scanning the installed distributions (importing
importlib.metadata alone costs about 20 ms); plugins are looked up only for other names.
"""

from __future__ import annotations

import importlib

from agents.base_agent import BaseAgent
from errors import UsageError

ENTRY_POINT_GROUP = "agent_worker.agents"
_BUILTIN = {"claude": "agents.claude_agent:ClaudeAgent"}


def _plugins() -> dict[str, str]:
    """Name -> "module:Class" of installed plugins; a built-in name cannot be taken over."""
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {name: target for name, target in found.items() if name not in _BUILTIN}


def _load(target: str) -> type[BaseAgent]:
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, BaseAgent)):
        raise UsageError(f"agent plugin {target} is not a BaseAgent subclass")
    return cls


def agent_class(name: str) -> type[BaseAgent]:
    """The class of an agent type; UsageError naming the known ones otherwise."""
    if name in _BUILTIN:
        return _load(_BUILTIN[name])
    plugins = _plugins()
    if name not in plugins:
        known = ", ".join(sorted([*_BUILTIN, *plugins]))
        raise UsageError(f"unknown agent type {name!r}; known: {known}")
    return _load(plugins[name])


def get(name: str) -> BaseAgent:
    """A new agent of the given type."""
    return agent_class(name)()
