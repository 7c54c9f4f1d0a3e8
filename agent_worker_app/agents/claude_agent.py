"""Claude Code, run headless: `claude -p` with stream-json output."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
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

VERSION = "2.1.331"  # pinned and tested (tests/fixtures/claude/FINDINGS.md)
DEFAULT_API_HOST = "api.anthropic.com:443"
DEFAULT_API_URL = "https://api.anthropic.com"

WORKSPACE = "/workspace/"
# Headless, every event as a JSON line, no permission prompts (the container is the sandbox);
# the user's settings only: a repository's .claude/settings.json (its env, hooks, helpers) and
# .mcp.json servers are the repository's, not the user's say.
HEADLESS_ARGV = (
    "claude",
    "-p",
    "--output-format",
    "stream-json",
    "--verbose",
    "--dangerously-skip-permissions",
    "--setting-sources",
    "user",
    "--strict-mcp-config",
)
_MAX_ARG = 80
# The input field that says most about a call of each built-in tool.
_MAIN_ARG = {
    "Read": "file_path",
    "Write": "file_path",
    "Edit": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
    "Glob": "pattern",
    "Grep": "pattern",
    "WebFetch": "url",
    "WebSearch": "query",
    "Task": "description",
    "Agent": "description",
}


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ARG else text[: _MAX_ARG - 1] + "\u2026"


def describe_tool(name: str, args: dict[str, Any]) -> str:
    """`Edit src/app.py`, `Bash: pytest -q`: a tool call in a few words."""
    if name == "Bash":
        return f"Bash: {_short(str(args.get('command', '')))}"
    value = args.get(_MAIN_ARG.get(name, ""), "")
    if not isinstance(value, str) or not value:
        return name
    return f"{name} {_short(value.removeprefix(WORKSPACE))}"


def _event(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _blocks(event: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The content blocks of one kind in an assistant event, whatever shape it arrived in."""
    content = _dict(event.get("message")).get("content")
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == kind]


class ClaudeParser(OutputParser):
    """Claude Code's stream-json events: tool calls as they happen, the final result event."""

    def __init__(self) -> None:
        self._init: dict[str, Any] = {}
        self._result: dict[str, Any] | None = None
        self._turns = 0
        self._last_text: str | None = None

    def feed(self, line: str) -> ProgressEvent | None:
        event = _event(line)
        if event is None:
            return None
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            self._init = event
            return ProgressEvent(
                "info",
                f"Claude Code {event.get('claude_code_version', '')} "
                f"started, model {event.get('model', '?')}",
            )
        if kind == "result":
            self._result = event
            return None
        if kind != "assistant":
            return None
        self._turns += 1
        for block in _blocks(event, "text"):
            self._last_text = str(block.get("text", ""))
        for block in _blocks(event, "tool_use"):
            name = block.get("name")
            return ProgressEvent(
                "tool",
                describe_tool(name if isinstance(name, str) else "tool", _dict(block.get("input"))),
            )
        return None

    def result(self) -> AgentResult:
        init, result = self._init, self._result
        if result is None:
            return AgentResult(
                found=False,
                is_error=True,
                turns=self._turns or None,
                session_id=_str(init.get("session_id")),
                model=_str(init.get("model")),
                version=_str(init.get("claude_code_version")),
                error="Claude Code ended without a result"
                + (f"; its last words: {_short(self._last_text)}" if self._last_text else ""),
            )
        usage = _dict(result.get("usage"))
        is_error = bool(result.get("is_error")) or result.get("subtype") != "success"
        text = _str(result.get("result"))
        error = None
        if is_error:
            listed = result.get("errors")
            errors = [str(e) for e in listed if e] if isinstance(listed, list) else []
            detail = text or "; ".join(errors)
            error = f"Claude Code reported an error: {detail or result.get('subtype', 'error')}"
        cost = result.get("total_cost_usd")
        return AgentResult(
            found=True,
            is_error=is_error,
            subtype=_str(result.get("subtype")),
            input_tokens=_int(usage.get("input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
            cache_read_tokens=_int(usage.get("cache_read_input_tokens")),
            cache_creation_tokens=_int(usage.get("cache_creation_input_tokens")),
            cost_usd=float(cost) if isinstance(cost, (int, float)) else None,
            turns=_int(result.get("num_turns")),
            duration_ms=_int(result.get("duration_ms")),
            session_id=_str(result.get("session_id")) or _str(init.get("session_id")),
            model=_str(init.get("model")),
            version=_str(init.get("claude_code_version")),
            result_text=text,
            error=error,
        )


# Claude Code from the npm registry, in a stage of its own: its postinstall puts a native binary
# in place, and only that one file reaches the image (no Node.js needed to run it).
_STAGES = """FROM system AS claude
ARG CLAUDE_CODE_VERSION
RUN apt-get update \\
 && apt-get install -y --no-install-recommends nodejs npm \\
 && rm -rf /var/lib/apt/lists/* \\
 && npm install --global --no-audit --no-fund "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \\
 && cp "$(readlink -f "$(command -v claude)")" /claude \\
 && /claude --version
"""
_FINAL = """COPY --from=claude /claude /usr/local/bin/claude
ENV CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \\
    DISABLE_AUTOUPDATER=1
RUN claude --version
"""


class ClaudeAgent(BaseAgent):
    """Anthropic's Claude Code, headless (claude -p, stream-json)."""

    name: ClassVar[str] = "claude"
    description: ClassVar[str] = "Anthropic's Claude Code, headless"
    credentials: ClassVar[tuple[Credential, ...]] = (
        Credential("ANTHROPIC_API_KEY", "api-key", "an Anthropic API key (billed per token)"),
        Credential(
            "CLAUDE_CODE_OAUTH_TOKEN",
            "oauth-token",
            "a subscription's token, from `claude setup-token`",
        ),
        Credential(
            "ANTHROPIC_AUTH_TOKEN", "auth-token", "a bearer token for a gateway (with --base-url)"
        ),
    )
    settings: ClassVar[tuple[Setting, ...]] = (
        Setting("ANTHROPIC_BASE_URL", "API base URL", option="base_url"),
        Setting("ANTHROPIC_MODEL", "model", option="model"),
        Setting("AGENT_MAX_TURNS", "turn limit", option="max_turns"),
        Setting(
            "CLAUDE_CODE_VERSION", "Claude Code version in the image", VERSION, "agent_version"
        ),
    )

    # ~/.claude/projects/<the working directory with each / as ->/<session id>.jsonl: the whole
    # transcript, which is all `--resume <id>` needs
    session_dir: ClassVar[str | None] = "/home/agent/.claude/projects/-workspace"
    cost_spans_session: ClassVar[bool] = True  # --resume restores the session's cost

    def resume_args(self, session_id: str) -> list[str]:
        return ["--resume", session_id]

    def image_layer(self) -> ImageLayer:
        return ImageLayer(
            stages=_STAGES,
            final=_FINAL,
            build_args={"CLAUDE_CODE_VERSION": self.version() or VERSION},
        )

    def api_hosts(self) -> list[str]:
        return [api_host(self.config.get("ANTHROPIC_BASE_URL"), DEFAULT_API_HOST)]

    def command(self) -> list[str]:
        argv = list(HEADLESS_ARGV)
        if model := self.config.get("ANTHROPIC_MODEL"):
            argv += ["--model", model]
        if max_turns := self.config.get("AGENT_MAX_TURNS"):
            argv += ["--max-turns", max_turns]
        if self.config.max_cost_usd is not None:  # Claude Code stops itself (print mode only)
            amount = format(Decimal(repr(self.config.max_cost_usd)), "f")  # never 1e-05
            argv += ["--max-budget-usd", amount]
        return argv + list(self.config.args)

    api_url: ClassVar[str | None] = DEFAULT_API_URL
    # Anthropic's list prices (cache writes: the 5-minute kind)
    prices: ClassVar[Mapping[str, tuple[float, float, float, float]]] = {
        "claude-opus-4-5": (5.0, 25.0, 0.5, 6.25),
        "claude-opus-4": (15.0, 75.0, 1.5, 18.75),
        "claude-sonnet-4": (3.0, 15.0, 0.3, 3.75),
        "claude-3-7-sonnet": (3.0, 15.0, 0.3, 3.75),
        "claude-haiku-4-5": (1.0, 5.0, 0.1, 1.25),
        "claude-3-5-haiku": (0.8, 4.0, 0.08, 1.0),
    }

    def container_env(self) -> dict[str, str]:
        if self.gated:
            return {"ANTHROPIC_BASE_URL": self.gate_url()}
        base_url = self.config.get("ANTHROPIC_BASE_URL")
        return {"ANTHROPIC_BASE_URL": base_url.rstrip("/")} if base_url else {}

    def parser(self) -> ClaudeParser:
        return ClaudeParser()
