"""OpenAI's Codex CLI, run headless: `codex exec --json`, the task on stdin.

What the pinned version does, and how that was checked, is in tests/fixtures/codex/FINDINGS.md:
one native binary (static, musl) plus its code-mode host, no Node.js at run time; JSON Lines
events on stdout (thread.started, item.*, turn.completed with the turn's summed usage,
turn.failed); no cost, model or version in its output.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any, ClassVar

from agent_worker_app.agents.base_agent import (
    AgentResult,
    BaseAgent,
    Credential,
    ImageLayer,
    OutputParser,
    ProgressEvent,
    Setting,
    api_host,
)

VERSION = "0.169.0"  # pinned and tested (tests/fixtures/codex/FINDINGS.md)
DEFAULT_API_HOST = "api.openai.com:443"
DEFAULT_API_URL = "https://api.openai.com/v1"
# Codex exec takes its key from CODEX_API_KEY (OPENAI_API_KEY only after `codex login`); the
# container gets the chosen credential under this name and no other.
KEY_VARIABLE = "CODEX_API_KEY"
PROVIDER = "agent_worker"  # the model provider defined for a --base-url

WORKSPACE = "/workspace/"
# Headless: JSON Lines events, no approvals and no sandbox of its own (the container is the
# sandbox; Codex's bubblewrap sandbox cannot run without capabilities anyway). A dead or blocked
# endpoint fails after the usual retries instead of "waiting for network" for ever; plugins
# (GitHub, chatgpt.com) and analytics (ab.chatgpt.com) stay off, so the API host is the only one
# it contacts; commands the model runs do not see the key.
HEADLESS_ARGV = (
    "codex",
    "exec",
    "--json",
    "--dangerously-bypass-approvals-and-sandbox",
    "--skip-git-repo-check",
    "--disable",
    "unbounded_connection_retries",
    "--disable",
    "plugins",
    "-c",
    "analytics.enabled=false",
    "-c",
    f'shell_environment_policy.exclude=["{KEY_VARIABLE}"]',
)
_MAX_ARG = 80
_SHELLS = ("/bin/bash", "/bin/sh", "bash", "sh", "/usr/bin/bash", "/bin/zsh", "zsh")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ARG else text[: _MAX_ARG - 1] + "\u2026"


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text)


def shell_command(command: str) -> str:
    """The script inside `/bin/bash -lc '...'`, as Codex reports a command; else the whole."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return command
    if len(argv) == 3 and argv[0] in _SHELLS and argv[1] in ("-lc", "-c"):
        return argv[2]
    return command


def describe_item(item: dict[str, Any]) -> str | None:
    """`Shell: pytest -q`, `Patch: M src/app.py, A notes.md`: a tool item in a few words."""
    kind = item.get("type")
    if kind == "command_execution":
        return f"Shell: {_short(shell_command(str(item.get('command', ''))))}"
    if kind == "file_change":
        changes = item.get("changes")
        marks = {"add": "A", "delete": "D", "update": "M"}
        listed = [
            f"{marks.get(str(c.get('kind')), '?')} {str(c.get('path', '')).removeprefix(WORKSPACE)}"
            for c in (changes if isinstance(changes, list) else [])
            if isinstance(c, dict)
        ]
        return f"Patch: {_short(', '.join(listed))}" if listed else "Patch"
    if kind == "mcp_tool_call":
        return f"MCP {item.get('server', '?')}.{item.get('tool', '?')}"
    if kind == "web_search":
        return f"Search: {_short(str(item.get('query', '')))}"
    if kind == "collab_tool_call":
        return f"Agents: {item.get('tool', '?')}"
    return None


def _event(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _message(value: Any) -> str | None:
    message = _dict(value).get("message")
    return message if isinstance(message, str) and message else None


class CodexParser(OutputParser):
    """Codex's JSON Lines events: tool items as they start, usage and failure of each turn.

    Tokens follow the report's (Anthropic's) meaning: ``input`` is what was neither read from
    nor written to the prompt cache. Codex reports ``input_tokens`` with its cached and
    cache-written parts inside, so those are taken out. A failed turn reports no usage at all:
    its tokens are unknown (None), not zero.
    """

    def __init__(self, *, version: str | None = None, model: str | None = None) -> None:
        self._version = version
        self._model = model
        self._thread_id: str | None = None
        self._completed = 0
        self._failure: str | None = None
        self._last_error: str | None = None
        self._last_text: str | None = None
        self._usage: dict[str, int] = {}
        self._started: set[str] = set()

    def feed(self, line: str) -> ProgressEvent | None:
        event = _event(line)
        if event is None:
            return None
        kind = event.get("type")
        item = _dict(event.get("item"))
        if kind == "thread.started":
            thread_id = event.get("thread_id")
            self._thread_id = thread_id if isinstance(thread_id, str) else None
            name = f"Codex {self._version}" if self._version else "Codex"
            return ProgressEvent("info", f"{name} started, model {self._model or 'its default'}")
        if kind == "turn.completed":
            self._completed += 1
            for key, value in _dict(event.get("usage")).items():
                self._usage[key] = self._usage.get(key, 0) + _int(value)
        elif kind == "turn.failed":
            self._failure = _message(event.get("error")) or "turn failed"
        elif kind == "error":
            # Also each retry ("Reconnecting... 2/5 (...)"): news, not yet a failure.
            self._last_error = _message(event) or self._last_error
            return ProgressEvent("info", _short(self._last_error or "error"))
        elif kind == "item.started":
            self._started.add(str(item.get("id")))
            return self._tool(item)
        elif kind == "item.completed":
            return self._completed_item(item)
        return None

    @staticmethod
    def _tool(item: dict[str, Any]) -> ProgressEvent | None:
        text = describe_item(item)
        return ProgressEvent("tool", text) if text else None

    def _completed_item(self, item: dict[str, Any]) -> ProgressEvent | None:
        kind = item.get("type")
        if kind == "agent_message" and isinstance(item.get("text"), str):
            self._last_text = item["text"]
        elif kind == "error":  # not fatal: e.g. the fallback from WebSockets to HTTPS
            message = _message(item)
            return ProgressEvent("info", f"warning: {_short(message)}") if message else None
        elif str(item.get("id")) not in self._started:  # a tool item reported only once done
            return self._tool(item)
        return None

    def result(self) -> AgentResult:
        found = self._completed > 0 or self._failure is not None
        error = None
        if self._failure is not None:
            error = f"Codex reported an error: {self._failure}"
        elif not found:
            error = "Codex ended without finishing its turn" + (
                f"; its last error: {_short(self._last_error)}"
                if self._last_error
                else (f"; its last words: {_short(self._last_text)}" if self._last_text else "")
            )
        usage = self._usage if self._completed else None
        return AgentResult(
            found=found,
            is_error=error is not None,
            input_tokens=_uncached_input(usage) if usage is not None else None,
            output_tokens=usage.get("output_tokens", 0) if usage is not None else None,
            cache_read_tokens=usage.get("cached_input_tokens", 0) if usage is not None else None,
            cache_creation_tokens=(
                usage.get("cache_write_input_tokens", 0) if usage is not None else None
            ),
            session_id=self._thread_id,
            model=self._model,
            version=self._version,
            result_text=self._last_text,
            error=error,
        )


def _uncached_input(usage: dict[str, int]) -> int:
    parts = usage.get("cached_input_tokens", 0) + usage.get("cache_write_input_tokens", 0)
    return max(usage.get("input_tokens", 0) - parts, 0)


# Codex from the npm registry, in a stage of its own: npm puts the platform's native binaries
# (an optional dependency) under vendor/<target>/bin; only codex and the code-mode host it
# spawns from its own directory reach the image (no Node.js needed to run them).
_STAGES = """FROM system AS codex
ARG CODEX_VERSION
RUN apt-get update \\
 && apt-get install -y --no-install-recommends nodejs npm \\
 && rm -rf /var/lib/apt/lists/* \\
 && npm install --global --no-audit --no-fund "@openai/codex@${CODEX_VERSION}" \\
 && bin=$(find "$(npm root --global)/@openai" -path '*/vendor/*/bin/codex' -type f | head -n 1) \\
 && test -n "$bin" \\
 && mkdir /codex \\
 && cp "$bin" "$bin-code-mode-host" /codex/ \\
 && /codex/codex --version
"""
_FINAL = """COPY --from=codex /codex/ /usr/local/bin/
RUN codex --version && rm -rf /root/.codex
"""


class CodexAgent(BaseAgent):
    """OpenAI's Codex CLI, headless (codex exec --json)."""

    name: ClassVar[str] = "codex"
    description: ClassVar[str] = "OpenAI's Codex CLI, headless"
    credentials: ClassVar[tuple[Credential, ...]] = (
        Credential("OPENAI_API_KEY", "api-key", "an OpenAI API key (billed per token)"),
    )
    settings: ClassVar[tuple[Setting, ...]] = (
        Setting(
            "OPENAI_BASE_URL",
            "API base URL, with /v1 (an OpenAI-compatible Responses API)",
            option="base_url",
        ),
        Setting("CODEX_MODEL", "model", option="model"),
        Setting("CODEX_VERSION", "Codex CLI version in the image", VERSION, "agent_version"),
    )

    def image_layer(self) -> ImageLayer:
        return ImageLayer(
            stages=_STAGES,
            final=_FINAL,
            build_args={"CODEX_VERSION": self.version() or VERSION},
        )

    def api_hosts(self) -> list[str]:
        return [api_host(self.config.get("OPENAI_BASE_URL"), DEFAULT_API_HOST)]

    def command(self) -> list[str]:
        argv = list(HEADLESS_ARGV)
        if model := self.config.get("CODEX_MODEL"):
            argv += ["--model", model]
        base_url = self.gate_url() if self.gated else self.config.get("OPENAI_BASE_URL")
        if base_url:
            # Codex ignores OPENAI_BASE_URL. A provider of its own rather than the built-in one
            # with `openai_base_url`: that one tries WebSockets first (7 failed upgrades, ~8 s,
            # against a plain HTTP server) and sends no key when CODEX_API_KEY is missing.
            provider = (
                f"{{name={_toml_string('agent-worker')}, "
                f"base_url={_toml_string(base_url.rstrip('/'))}, "
                f'env_key="{KEY_VARIABLE}", wire_api="responses"}}'
            )
            argv += [
                "-c",
                f'model_provider="{PROVIDER}"',
                "-c",
                f"model_providers.{PROVIDER}={provider}",
            ]
        # "-": the prompt is read from stdin, byte for byte.
        return [*argv, *self.config.args, "-"]

    api_url: ClassVar[str | None] = DEFAULT_API_URL
    # OpenAI's list prices (a cache write is billed as input)
    prices: ClassVar[Mapping[str, tuple[float, float, float, float]]] = {
        "gpt-5": (1.25, 10.0, 0.125, 1.25),
        "gpt-5-mini": (0.25, 2.0, 0.025, 0.25),
        "gpt-5-nano": (0.05, 0.4, 0.005, 0.05),
        "gpt-4.1": (2.0, 8.0, 0.5, 2.0),
        "o3": (2.0, 8.0, 0.5, 2.0),
        "o4-mini": (1.1, 4.4, 0.275, 1.1),
    }

    def secret_env(self) -> dict[str, str]:
        return {KEY_VARIABLE: self.config.secret} if self.config.secret else {}

    def parser(self) -> CodexParser:
        return CodexParser(version=self.version(), model=self.config.get("CODEX_MODEL"))
