"""The agent registry (agents/__init__.py) on a made-up list of entry points: built-ins found
like plugins, the fallback without metadata, a built-in's name kept from plugins, and a plugin
that loads but cannot be used refused in one line, exit 2. tests/e2e/test_plugin.py does the
same with real distributions."""

from __future__ import annotations

import io
import sys
import tomllib
import types
from pathlib import Path

import pytest

from agent_worker_app import agent_worker, agents
from agent_worker_app.agents.base_agent import AgentSettings, BaseAgent, OutputParser
from agent_worker_app.agents.claude_agent import ClaudeAgent
from agent_worker_app.agents.command_agent import CommandAgent
from agent_worker_app.console import Env
from agent_worker_app.errors import EXIT_USAGE, UsageError
from conftest import ROOT, git

MODULE = "aw_fake_agents"
OURS = "agent-worker"
PLUGIN = "agent-worker-fake-plugin"


class Good(BaseAgent):
    name = "good"

    def command(self) -> list[str]:
        return ["true"]

    def parser(self) -> OutputParser:
        return CommandAgent(AgentSettings()).parser()


class Abstract(BaseAgent):  # implements neither command() nor parser()
    name = "abstract"


class Raising(Good):
    def __init__(self, settings: AgentSettings) -> None:
        raise ValueError("no ECHO_TOKEN\nat all")


class NotAnAgent:
    pass


@pytest.fixture(autouse=True)
def fake_module(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType(MODULE)
    for cls in (Good, Abstract, Raising, NotAnAgent):
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


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        (
            f"{MODULE}:Abstract",
            f"agent plugin {MODULE}:Abstract (from {PLUGIN}) cannot be used: it does not "
            "implement command, parser",
        ),
        (
            f"{MODULE}:Raising",
            f"agent plugin {MODULE}:Raising (from {PLUGIN}) cannot be used: its constructor "
            "raised ValueError: no ECHO_TOKEN\nat all",
        ),
        (
            f"{MODULE}:NotAnAgent",
            f"agent plugin {MODULE}:NotAnAgent (from {PLUGIN}) is not a subclass of "
            "agent_worker_app.agents.base_agent.BaseAgent",
        ),
        (
            f"{MODULE}:Missing",
            f"agent plugin {MODULE}:Missing (from {PLUGIN}) cannot be loaded: AttributeError: ",
        ),
        (
            "aw_no_such_module:Agent",
            f"agent plugin aw_no_such_module:Agent (from {PLUGIN}) cannot be loaded: "
            "ModuleNotFoundError: No module named 'aw_no_such_module'",
        ),
    ],
)
def test_a_plugin_that_cannot_be_used_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, target: str, problem: str
) -> None:
    installed(monkeypatch, *BUILT_INS, ("bad", target, PLUGIN))
    with pytest.raises(UsageError) as raised:
        agents.get("bad", AgentSettings())
    assert raised.value.exit_code == EXIT_USAGE
    assert str(raised.value).startswith(problem)
    listed = agents.listing()
    assert names(listed)[-1] == ("bad", PLUGIN, False)
    assert (listed[-1].problem or "").startswith(problem)


def test_abstract_methods_are_found_without_making_an_agent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed(monkeypatch, *BUILT_INS, ("abstract", f"{MODULE}:Abstract", PLUGIN))
    with pytest.raises(UsageError, match="it does not implement command, parser"):
        agents.agent_class("abstract")  # what config.load() asks, before anything starts


def test_a_built_ins_raising_constructor_is_a_bug_not_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed(monkeypatch, ("claude", f"{MODULE}:Raising", OURS))
    with pytest.raises(ValueError, match="no ECHO_TOKEN"):
        agents.get("claude", AgentSettings())


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("Abstract", "cannot be used: it does not implement command, parser"),
        ("Raising", r"cannot be used: its constructor raised ValueError: no ECHO_TOKEN\nat all"),
    ],
)
def test_a_run_of_an_unusable_plugin_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo: Path, target: str, message: str
) -> None:
    installed(monkeypatch, *BUILT_INS, ("bad", f"{MODULE}:{target}", PLUGIN))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(repo)
    out, err = io.StringIO(), io.StringIO()
    env = Env(stdout=out, stderr=err, stdin=io.StringIO())
    code = agent_worker.main({"task": "x", "agent_type": "bad"}, env)
    assert code == EXIT_USAGE
    assert err.getvalue() == (
        f"agent-worker: error: agent plugin {MODULE}:{target} (from {PLUGIN}) {message}\n"
    )
    assert git(repo, "branch", "--list") == "* main\n"


def test_list_agents_shows_an_unusable_plugin_with_its_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed(
        monkeypatch,
        *BUILT_INS,
        ("abstract", f"{MODULE}:Abstract", PLUGIN),
        ("good", f"{MODULE}:Good", PLUGIN),
        ("raising", f"{MODULE}:Raising", PLUGIN),
    )
    out, err = io.StringIO(), io.StringIO()
    assert agent_worker.list_agents(Env(stdout=out, stderr=err, stdin=io.StringIO())) == 0
    headings = [line for line in out.getvalue().splitlines() if not line.startswith(" ")]
    assert headings == [
        "claude  (built-in)",
        "codex  (built-in)",
        "command  (built-in)",
        f"abstract  ({PLUGIN})",
        f"good  ({PLUGIN})",
        f"raising  ({PLUGIN})",
    ]
    assert err.getvalue().splitlines() == [
        f"agent-worker: warning: agent plugin {MODULE}:Abstract (from {PLUGIN}) cannot be used: "
        "it does not implement command, parser",
        f"agent-worker: warning: agent plugin {MODULE}:Raising (from {PLUGIN}) cannot be used: "
        r"its constructor raised ValueError: no ECHO_TOKEN\nat all",
    ]
