"""The echo agent: an agent-worker plugin in one file, as the README describes.

It writes ECHO_GREETING (a setting) into echo.txt, proves it received its credential without
printing it, and prints one JSON line of usage that its parser turns into the report's figures.
"""

from __future__ import annotations

import json
from typing import ClassVar

from agent_worker_app.agents.base_agent import (
    AgentResult,
    BaseAgent,
    Credential,
    ImageLayer,
    OutputParser,
    ProgressEvent,
    Setting,
)

SCRIPT = r"""
test -n "$ECHO_TOKEN" || { echo "no token" >&2; exit 9; }
test -f /etc/echo-layer || { echo "no image layer" >&2; exit 8; }
printf '%s\n' "$ECHO_GREETING" > echo.txt
printf 'task: %s\n' "$(cat)" >> echo.txt
echo '{"event": "usage", "input": 11, "output": 7, "cost": 0.25}'
"""


class EchoParser(OutputParser):
    def __init__(self) -> None:
        self.usage: dict[str, float] | None = None

    def feed(self, line: str) -> ProgressEvent | None:
        try:
            event = json.loads(line)
        except ValueError:
            return None
        if isinstance(event, dict) and event.get("event") == "usage":
            self.usage = event
            return ProgressEvent("info", "echo reported its usage")
        return None

    def result(self) -> AgentResult:
        if self.usage is None:
            return AgentResult(found=False, is_error=True, error="echo printed no usage")
        return AgentResult(
            found=True,
            input_tokens=int(self.usage["input"]),
            output_tokens=int(self.usage["output"]),
            cost_usd=float(self.usage["cost"]),
            turns=1,
        )


class EchoAgent(BaseAgent):
    name: ClassVar[str] = "echo"
    description: ClassVar[str] = "writes a greeting (a test plugin)"
    credentials: ClassVar[tuple[Credential, ...]] = (
        Credential("ECHO_TOKEN", "token", "any secret"),
    )
    settings: ClassVar[tuple[Setting, ...]] = (
        Setting("ECHO_GREETING", "what to write", "hello", option="model"),
    )

    def image_layer(self) -> ImageLayer:
        return ImageLayer(final='RUN echo "echo layer" > /etc/echo-layer')

    def version(self) -> str | None:
        return "1.0"

    def command(self) -> list[str]:
        return ["bash", "-c", SCRIPT]

    def container_env(self) -> dict[str, str]:
        return {"ECHO_GREETING": self.config.get("ECHO_GREETING") or "hello"}

    def parser(self) -> EchoParser:
        return EchoParser()
