"""The agent plugin API: everything agent-specific lives in one BaseAgent subclass.

A plugin distribution registers its class under the entry-point group "agent_worker.agents":

    [project.entry-points."agent_worker.agents"]
    mine = "my_package.my_agent:MyAgent"

and imports this module as ``agent_worker_app.agents.base_agent``. agents/command_agent.py is the
smallest complete example, agents/claude_agent.py a full one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit


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


class OutputParser(ABC):
    """Reads the agent's stdout as it arrives: each line is fed once, in order."""

    @abstractmethod
    def feed(self, line: str) -> ProgressEvent | None:
        """A live progress event for one line of output, or None. Odd lines never raise."""

    @abstractmethod
    def result(self) -> AgentResult:
        """What the output said, once it has ended (or been cut off)."""

    def cost_so_far(self) -> float | None:
        """The cost in USD the output has reported up to now, for an agent that reports it as
        it goes (the run stops it once it passes --max-cost); None when it does not."""
        return None


@dataclass(frozen=True)
class Credential:
    """One way to authenticate the agent: a secret variable, chosen by its method name."""

    variable: str  # e.g. ANTHROPIC_API_KEY
    method: str  # the name --auth takes, e.g. "api-key"
    help: str


@dataclass(frozen=True)
class Setting:
    """One of the agent's own documented variables (never a secret).

    ``option`` names the generic command-line option that also sets it: "model", "max_turns",
    "base_url" or "agent_version" (--model, --max-turns, --base-url, --agent-version).
    """

    variable: str
    help: str
    default: str | None = None
    option: str | None = None


@dataclass(frozen=True)
class ImageLayer:
    """The agent's part of the image: the agent layer (image_layers.agent_layer), hashed
    into its tag.

    ``stages`` are build stages on the system layer (each starts with ``FROM system AS
    <name>``; Docker's cache keeps them when only the project's environment changes);
    ``final`` are instructions run as root on the environment layer, where the agent user
    exists; ``build_args`` are their ARG values (the pin).
    """

    stages: str = ""
    final: str = ""
    build_args: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentSettings:
    """What a run gives its agent: its settings resolved (command line > environment >
    settings files > the Setting's default), the one credential chosen, and --agent-arg."""

    values: Mapping[str, str] = field(default_factory=dict)
    credential: Credential | None = None
    secret: str | None = field(default=None, repr=False)
    args: tuple[str, ...] = ()
    max_cost_usd: float | None = None  # --max-cost: the agent caps its spending where it can

    def get(self, variable: str) -> str | None:
        value = self.values.get(variable)
        return value if value else None


# The credential gate's address in the agent's container (agent_inside.sh's GATE_PORT): root's
# proxy that holds the credential and sends the agent's API requests on with it.
GATE_URL = "http://127.0.0.1:7358"


def api_host(base_url: str | None, default: str) -> str:
    """The HOST:PORT the firewall must let through for an API at base_url (default: none given)."""
    if not base_url:
        return default
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class BaseAgent(ABC):
    """An agent backend. Subclasses set the class attributes and implement command() and
    parser(); the rest has defaults."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    credentials: ClassVar[tuple[Credential, ...]] = ()  # empty: the agent needs no credential
    settings: ClassVar[tuple[Setting, ...]] = ()
    metered: ClassVar[bool] = True  # it reports tokens (and maybe cost); False: not applicable
    # Where the agent keeps its sessions in the container (a directory of files, for the agent
    # user), if it can resume one: saved into the run directory after a run, brought back in
    # for a run that continues the branch (--continue). None: every run starts afresh.
    session_dir: ClassVar[str | None] = None
    # Whether the cost it reports for a resumed session counts the session's earlier runs too
    # (Claude Code restores a session's cost with it): a continuing run's own cost is then what
    # it reports less what the session had cost before (pipeline.own_cost).
    cost_spans_session: ClassVar[bool] = False
    # USD per million tokens (input, output, cache read, cache write) by model name prefix, for
    # the credential gate's meter: it prices what it counts (the longest prefix that matches; a
    # model not listed at the dearest of each) and refuses requests past --max-cost.
    prices: ClassVar[Mapping[str, tuple[float, float, float, float]]] = {}
    # The agent's API base URL when --base-url gives none, for an agent that can be pointed at
    # the credential gate (gate_upstream()); None: it cannot, and gets its credential itself.
    api_url: ClassVar[str | None] = None

    def __init__(self, settings: AgentSettings) -> None:
        self.config = settings

    def image_layer(self) -> ImageLayer:
        """What the image needs for this agent (its binary, pinned)."""
        return ImageLayer()

    def version(self) -> str | None:
        """The version the image has, for the report: the setting tied to --agent-version (its
        default is the pin), if the agent has one."""
        for setting in self.settings:
            if setting.option == "agent_version":
                return self.config.get(setting.variable) or setting.default
        return None

    def api_hosts(self) -> list[str]:
        """HOST[:PORT] entries the agent must reach; the firewall allows them."""
        return []

    @abstractmethod
    def command(self) -> list[str]:
        """The argv run as the agent user in /workspace; the task arrives on its stdin."""

    def resume_args(self, session_id: str) -> list[str]:
        """Arguments added to command() to resume the session session_id (its files are back
        in session_dir)."""
        return []

    def container_env(self) -> dict[str, str]:
        """Plain variables for the agent (visible in docker inspect: never secrets)."""
        return {}

    def gate_upstream(self) -> str | None:
        """The API base URL the credential gate sends the agent's requests to, for an agent that
        can be pointed at the gate (gate_url()): its --base-url setting, else api_url; None (no
        api_url): the agent gets its credential itself."""
        if self.api_url is None:
            return None
        variable = next((s.variable for s in self.settings if s.option == "base_url"), None)
        given = self.config.get(variable) if variable is not None else None
        return (given or self.api_url).rstrip("/")

    @property
    def gated(self) -> bool:
        """Whether the run's credential goes to the gate, and the agent gets a placeholder."""
        return self.gate_upstream() is not None and bool(self.secret_env())

    def gate_url(self) -> str:
        """The base URL the agent is given for its API: the gate, with the upstream's path."""
        return GATE_URL + urlsplit(self.gate_upstream() or "").path.rstrip("/")

    def secret_env(self) -> dict[str, str]:
        """Variables delivered without appearing in the container's configuration: by default
        the chosen credential, and only that one."""
        chosen = self.config.credential
        if chosen is None or not self.config.secret:
            return {}
        return {chosen.variable: self.config.secret}

    @abstractmethod
    def parser(self) -> OutputParser:
        """A new parser for one run's output."""
