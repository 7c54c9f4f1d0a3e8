"""Two agent plugins that import but cannot be used: one leaves parser() unimplemented, the
other's constructor raises. agent-worker refuses each in one line naming it (exit 2) and
--list-agents lists each with its problem."""

from __future__ import annotations

from typing import ClassVar

from agent_worker_app.agents.base_agent import AgentSettings, BaseAgent, OutputParser


class Abstract(BaseAgent):
    name: ClassVar[str] = "abstract"

    def command(self) -> list[str]:
        return ["true"]


class Raising(BaseAgent):
    name: ClassVar[str] = "raising"

    def __init__(self, settings: AgentSettings) -> None:
        raise ValueError("RAISING_MODE must be set")

    def command(self) -> list[str]:
        return ["true"]

    def parser(self) -> OutputParser:
        raise NotImplementedError
