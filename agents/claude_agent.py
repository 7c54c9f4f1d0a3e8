"""Claude Code, run headless: `claude -p` with stream-json output."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from agents.base_agent import AgentResult, BaseAgent, ProgressEvent
from errors import UsageError

if TYPE_CHECKING:
    from config import Config

WORKSPACE = "/workspace/"
# Headless, every event as a JSON line, no permission prompts (the container is the sandbox).
HEADLESS_ARGV = (
    "claude",
    "-p",
    "--output-format",
    "stream-json",
    "--verbose",
    "--dangerously-skip-permissions",
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


class ClaudeAgent(BaseAgent):
    name: ClassVar[str] = "claude"
    api_key_env: ClassVar[str] = "ANTHROPIC_API_KEY"
    default_api_host: ClassVar[str] = "api.anthropic.com:443"

    def check_credentials(self, config: Config) -> None:
        if not config.api_key:
            raise UsageError(
                "no API key for Claude Code: set ANTHROPIC_API_KEY in the environment, in "
                "~/.config/agent-worker/.env or in a file given with --env-file (a project's "
                "own .env is read only for AGENT_WORKER_* settings)"
            )

    def container_command(self, config: Config) -> list[str]:
        argv = list(HEADLESS_ARGV)
        if config.model:
            argv += ["--model", config.model]
        if config.max_turns:
            argv += ["--max-turns", str(config.max_turns)]
        return argv

    def secret_env(self, config: Config) -> dict[str, str]:
        return {"ANTHROPIC_API_KEY": config.api_key} if config.api_key else {}

    def container_env(self, config: Config) -> dict[str, str]:
        return {"ANTHROPIC_BASE_URL": config.base_url} if config.base_url else {}

    def api_hosts(self, config: Config) -> list[str]:
        if not config.base_url:
            return [self.default_api_host]
        parts = urlsplit(config.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
        return [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]

    def version(self, config: Config) -> str | None:
        return config.claude_version

    def image_build_args(self, config: Config) -> dict[str, str]:
        return {"CLAUDE_CODE_VERSION": config.claude_version}

    def on_output_line(self, line: str) -> ProgressEvent | None:
        event = _event(line)
        if event is None:
            return None
        if event.get("type") == "system" and event.get("subtype") == "init":
            return ProgressEvent(
                "info",
                f"Claude Code {event.get('claude_code_version', '')} "
                f"started, model {event.get('model', '?')}",
            )
        if event.get("type") != "assistant":
            return None
        for block in _blocks(event, "tool_use"):
            return ProgressEvent(
                "tool", describe_tool(str(block.get("name")), _dict(block.get("input")))
            )
        return None

    def parse_result(self, lines: Iterable[str]) -> AgentResult:
        init: dict[str, Any] = {}
        result: dict[str, Any] | None = None
        turns = 0
        last_text = None
        for line in lines:
            event = _event(line)
            if event is None:
                continue
            kind = event.get("type")
            if kind == "system" and event.get("subtype") == "init":
                init = event
            elif kind == "assistant":
                turns += 1
                for block in _blocks(event, "text"):
                    last_text = str(block.get("text", ""))
            elif kind == "result":
                result = event
        if result is None:
            return AgentResult(
                found=False,
                is_error=True,
                turns=turns or None,
                session_id=_str(init.get("session_id")),
                model=_str(init.get("model")),
                version=_str(init.get("claude_code_version")),
                error="Claude Code ended without a result"
                + (f"; its last words: {_short(last_text)}" if last_text else ""),
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
