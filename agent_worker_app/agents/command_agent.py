"""The `command` agent: the task is a shell command, run as the agent user in the same sandbox.

    agent-worker --agent-type command --task "ruff check --fix ."

No credential, no API, no tokens: a sandboxed codemod with the same branch, automatic commit,
statistics and report as any agent. It is also the smallest complete agent, the example to copy
for a new one: class attributes, command() and parser() are all an agent must provide.
"""

from __future__ import annotations

import time
from typing import ClassVar

from agent_worker_app.agents.base_agent import AgentResult, BaseAgent, OutputParser, ProgressEvent

_MAX_SHOWN = 200
_EVERY_S = 0.05  # a command printing a flood shows 20 lines a second; agent.jsonl keeps all


class CommandParser(OutputParser):
    """The lines the command prints are its progress; its exit status, not its output, decides."""

    def __init__(self) -> None:
        self._last: str | None = None
        self._shown = 0.0

    def feed(self, line: str) -> ProgressEvent | None:
        text = line.rstrip("\n")
        if not text.strip():
            return None
        self._last = text
        now = time.monotonic()
        if now - self._shown < _EVERY_S:
            return None
        self._shown = now
        return ProgressEvent("text", text[:_MAX_SHOWN])

    def result(self) -> AgentResult:
        # The command's exit status is the run's verdict (report.decide_status); found=True
        # says nothing more is expected from its output.
        return AgentResult(found=True, result_text=self._last)


class CommandAgent(BaseAgent):
    """A shell command (bash) instead of an AI agent."""

    name: ClassVar[str] = "command"
    description: ClassVar[str] = "the task is a shell command, run in the sandbox"
    metered: ClassVar[bool] = False

    def command(self) -> list[str]:
        # The task arrives on stdin; read whole, it runs as one bash script with stdin at EOF,
        # and each --agent-arg is one of its positional parameters ($1, $2, ...).
        run = 'script=$(cat) && exec bash -c "$script" agent-worker-task "$@"'
        return ["bash", "-c", run, "bash", *self.config.args]

    def parser(self) -> CommandParser:
        return CommandParser()
