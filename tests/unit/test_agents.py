"""The agent registry (agents/__init__.py) on a made-up list of entry points: built-ins found
like plugins, the fallback without metadata, and a built-in's name kept from plugins.
tests/e2e/test_plugin.py does the same with real distributions."""

from __future__ import annotations

import sys
import tomllib
import types

import pytest

from agent_worker_app import agents
from agent_worker_app.agents.base_agent import AgentSettings, BaseAgent, OutputParser
from agent_worker_app.agents.claude_agent import ClaudeAgent
from agent_worker_app.agents.command_agent import CommandAgent
from agent_worker_app.errors import UsageError
from conftest import ROOT

MODULE = "aw_fake_agents"
OURS = "agent-worker"
PLUGIN = "agent-worker-fake-plugin"


class Good(BaseAgent):
    name = "good"

    def command(self) -> list[str]:
        return ["true"]

    def parser(self) -> OutputParser:
        return CommandAgent(AgentSettings()).parser()


@pytest.fixture(autouse=True)
def fake_module(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType(MODULE)
    for cls in (Good,):
        setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, MODULE, module)


def installed(monkeypatch: pytest.MonkeyPatch, *found: tuple[str, str, str | None]) -> None:
    """The entry points of group agent_worker.agents, as importlib.metadata would find them."""
    monkeypatch.setattr(agents, "_entry_points", lambda: found)


BUILT_INS = tuple((name, target, OURS) for name, target in agents.FALLBACK.items())


def names(listed: list[agents.Listed]) -> list[tuple[str, str, bool]]:
    return [(item.name, item.origin, item.cls is not None) for item in listed]


def test_the_fallback_is_pyprojects_entry_points() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"][agents.ENTRY_POINT_GROUP] == agents.FALLBACK


def test_the_built_ins_are_agent_workers_own_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(
        monkeypatch,
        ("claude", agents.FALLBACK["claude"], OURS),
        ("shout", agents.FALLBACK["command"], "agent_worker"),  # any spelling of the name
        ("good", f"{MODULE}:Good", PLUGIN),
    )
    assert names(agents.listing()) == [
        ("claude", "built-in", True),
        ("shout", "built-in", True),
        ("good", PLUGIN, True),
    ]
    assert agents.agent_class("shout") is CommandAgent
    with pytest.raises(UsageError, match="unknown agent type 'codex'; known: claude, good, shout"):
        agents.agent_class("codex")  # the constant is not consulted: the metadata is the truth


def test_without_metadata_the_built_ins_are_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, ("good", f"{MODULE}:Good", PLUGIN))
    assert names(agents.listing()) == [
        ("claude", "built-in", True),
        ("codex", "built-in", True),
        ("command", "built-in", True),
        ("good", PLUGIN, True),
    ]
    assert agents.agent_class("claude") is ClaudeAgent
    assert isinstance(agents.get("good", AgentSettings()), Good)
    installed(monkeypatch)
    assert [item.name for item in agents.listing()] == list(agents.FALLBACK)


def test_a_plugin_cannot_take_a_built_ins_name(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(
        monkeypatch,
        ("claude", f"{MODULE}:Good", PLUGIN),
        *BUILT_INS,
        ("command", agents.FALLBACK["command"], "repackaged"),  # the same class: no conflict
    )
    assert agents.agent_class("claude") is ClaudeAgent
    assert isinstance(agents.get("claude", AgentSettings()), ClaudeAgent)
    listed = agents.listing()
    assert names(listed) == [
        ("claude", "built-in", True),
        ("codex", "built-in", True),
        ("command", "built-in", True),
        ("claude", PLUGIN, False),
    ]
    assert listed[-1].problem == (
        f"agent plugin {MODULE}:Good (from {PLUGIN}) is ignored: claude is a built-in agent's name"
    )


def test_the_first_plugin_keeps_a_name_two_give(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, *BUILT_INS, ("good", f"{MODULE}:Good", PLUGIN), ("good", "x:Y", "b"))
    assert agents.agent_class("good") is Good
    listed = agents.listing()
    assert (listed[-1].name, listed[-1].origin, listed[-1].cls) == ("good", "b", None)
    assert listed[-1].problem == (
        f"agent plugin x:Y (from b) is ignored: good is already the name of agent plugin "
        f"{MODULE}:Good (from {PLUGIN})"
    )
