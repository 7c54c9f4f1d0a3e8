"""Registry of agent types: the entry points of group "agent_worker.agents".

agent-worker's own entry points (pyproject.toml) are the built-ins, found the same way as a
plugin's; FALLBACK stands in for them only when the group has none of agent-worker's (run from
a checkout that was never installed). A plugin cannot take a built-in's name, nor a name an
earlier plugin took: it is listed with why, and ignored.

The scan runs once per process, only when a run needs its agent (never for --help or
--version). It costs a local run about 19 ms that the constant alone did not: nothing else in
such a run imports importlib.metadata (nor the email, csv and zipfile modules it brings),
about 16 ms on top of what the run has loaded by then, and entry_points(group=...) takes
3.3 ms on a venv of 29 distributions (medians of 15 runs timed with time.perf_counter;
python -X importtime of a real run agrees).
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass

from agent_worker_app.agents.base_agent import AgentSettings, BaseAgent
from agent_worker_app.errors import UsageError

ENTRY_POINT_GROUP = "agent_worker.agents"
DISTRIBUTION = "agent-worker"
BUILT_IN = "built-in"
# The built-ins when the installed metadata has none (keep it equal to pyproject.toml's
# entry points; tests/unit/test_agents.py checks that it is).
FALLBACK = {
    "claude": "agent_worker_app.agents.claude_agent:ClaudeAgent",
    "codex": "agent_worker_app.agents.codex_agent:CodexAgent",
    "command": "agent_worker_app.agents.command_agent:CommandAgent",
}


@dataclass(frozen=True)
class Listed:
    """One agent type for --list-agents: its class, or why it cannot be used."""

    name: str
    origin: str  # "built-in", or the distribution that provides it
    cls: type[BaseAgent] | None
    problem: str | None = None


@dataclass(frozen=True)
class _Entry:
    """One entry point: the name, "module:Class", where it comes from, and why it is ignored
    (None: it is not)."""

    name: str
    target: str
    origin: str
    ignored: str | None = None

    @property
    def plugin(self) -> bool:
        return self.origin != BUILT_IN

    def describe(self) -> str:
        if self.plugin:
            return f"agent plugin {self.target} (from {self.origin})"
        return f"built-in agent {self.target}"


@functools.cache
def _entry_points() -> tuple[tuple[str, str, str | None], ...]:
    """(name, "module:Class", distribution or None) of each entry point in the group, in the
    order importlib.metadata finds them (sys.path's)."""
    from importlib.metadata import entry_points

    return tuple(
        (ep.name, ep.value, ep.dist.name if ep.dist is not None else None)
        for ep in entry_points(group=ENTRY_POINT_GROUP)
    )


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()  # PEP 503: agent_worker is agent-worker


def _entries() -> tuple[dict[str, _Entry], list[_Entry]]:
    """The usable entries by name, built-ins first; and the ignored ones."""
    found = _entry_points()
    ours = [(n, t) for n, t, dist in found if dist is not None and _normal(dist) == DISTRIBUTION]
    usable = {n: _Entry(n, t, BUILT_IN) for n, t in (ours or FALLBACK.items())}
    ignored: list[_Entry] = []
    for name, target, dist in found:
        if dist is not None and _normal(dist) == DISTRIBUTION:
            continue
        origin = dist or "an unknown distribution"
        taken = usable.get(name)
        if taken is None:
            usable[name] = _Entry(name, target, origin)
        elif taken.target != target:  # the same class again is no conflict
            why = (
                f"{name} is a built-in agent's name"
                if not taken.plugin
                else f"{name} is already the name of {taken.describe()}"
            )
            ignored.append(_Entry(name, target, origin, ignored=why))
    return usable, ignored


def _load(entry: _Entry) -> type[BaseAgent]:
    """The entry's class, checked without making an agent; UsageError saying what is wrong."""
    module_name, _, attr = entry.target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # noqa: BLE001 (a broken plugin is the user's to hear about)
        raise UsageError(
            f"{entry.describe()} cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, BaseAgent)):
        raise UsageError(
            f"{entry.describe()} is not a subclass of agent_worker_app.agents.base_agent.BaseAgent"
        )
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise UsageError(
            f"{entry.describe()} cannot be used: it does not implement " + ", ".join(missing)
        )
    return cls


def _make(entry: _Entry, cls: type[BaseAgent], settings: AgentSettings) -> BaseAgent:
    """A new agent. A plugin's constructor that raises is a UsageError naming it; a
    built-in's is a bug (an internal error, with its traceback in the crash log)."""
    if not entry.plugin:
        return cls(settings)
    try:
        return cls(settings)
    except Exception as exc:  # noqa: BLE001 (whatever a plugin raises, the user hears whose)
        raise UsageError(
            f"{entry.describe()} cannot be used: its constructor raised {type(exc).__name__}: {exc}"
        ) from None


def _entry(name: str) -> _Entry:
    usable, _ = _entries()
    if name not in usable:
        raise UsageError(f"unknown agent type {name!r}; known: {', '.join(sorted(usable))}")
    return usable[name]


def agent_class(name: str) -> type[BaseAgent]:
    """The class of an agent type; UsageError naming the known ones, or saying why the type
    cannot be used."""
    return _load(_entry(name))


def get(name: str, settings: AgentSettings) -> BaseAgent:
    """A new agent of the given type; UsageError as agent_class, or when a plugin's
    constructor raises."""
    entry = _entry(name)
    return _make(entry, _load(entry), settings)


def listing() -> list[Listed]:
    """Every agent type, built-ins first, then the plugins by name; one that cannot be used
    (or is ignored) is listed with why. A plugin is made once, with no settings, to find a
    constructor that raises."""
    usable, ignored = _entries()
    builtins = [e for e in usable.values() if not e.plugin]
    plugins = sorted((e for e in usable.values() if e.plugin), key=lambda e: e.name)
    found = []
    for entry in builtins + plugins:
        try:
            cls = _load(entry)
            if entry.plugin:
                _make(entry, cls, AgentSettings())
            found.append(Listed(entry.name, entry.origin, cls))
        except UsageError as exc:
            found.append(Listed(entry.name, entry.origin, None, str(exc)))
    for entry in sorted(ignored, key=lambda e: (e.name, e.origin)):
        problem = f"{entry.describe()} is ignored: {entry.ignored}"
        found.append(Listed(entry.name, entry.origin, None, problem))
    return found
