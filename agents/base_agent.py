"""BaseAgent: what an agent runs in the container and how its output is read."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from config import Config


@dataclass(frozen=True)
class ProgressEvent:
    """One live line for the progress display: a tool call, a note, or the agent's words."""

    kind: str  # "tool", "text" or "info"
    text: str


@dataclass(frozen=True)
class AgentResult:
    """What the agent's own output says about the run; None where it said nothing."""

    found: bool = False  # a final result was seen at all
    is_error: bool = False
    subtype: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    cost_usd: float | None = None
    turns: int | None = None
    duration_ms: int | None = None
    session_id: str | None = None
    model: str | None = None
    version: str | None = None
    result_text: str | None = None
    error: str | None = None


class BaseAgent(ABC):
    """An agent backend: one file in agents/, registered by name."""

    name: ClassVar[str]
    api_key_env: ClassVar[str]  # the variable that holds its credential
    default_api_host: ClassVar[str]  # HOST:PORT the firewall lets through when no base URL is set

    @abstractmethod
    def check_credentials(self, config: Config) -> None:
        """Raise a UsageError naming the variable to set when a credential is missing."""

    @abstractmethod
    def container_command(self, config: Config) -> list[str]:
        """The argv agent_inside.sh runs as the agent user; the task arrives on its stdin."""

    @abstractmethod
    def secret_env(self, config: Config) -> dict[str, str]:
        """Variables delivered to the agent without appearing in the container configuration."""

    def container_env(self, config: Config) -> dict[str, str]:
        """Plain variables for the agent (visible in docker inspect: never secrets)."""
        return {}

    def api_hosts(self, config: Config) -> list[str]:
        """HOST[:PORT] entries the agent must reach; the firewall allows them."""
        return [self.default_api_host]

    def version(self, config: Config) -> str | None:
        """The agent's version as installed in the image."""
        return None

    def image_build_args(self, config: Config) -> dict[str, str]:
        """Build arguments for container/Dockerfile (part of the image's content hash)."""
        return {}

    @abstractmethod
    def on_output_line(self, line: str) -> ProgressEvent | None:
        """A live progress event for one line of the agent's output, or None."""

    @abstractmethod
    def parse_result(self, lines: Iterable[str]) -> AgentResult:
        """Tokens, cost, turns, status and session from the agent's whole output."""
