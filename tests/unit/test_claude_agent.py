"""agents/claude_agent.py against Claude Code's real recorded output (tests/fixtures/claude)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent_worker_app import config
from agent_worker_app.agents.base_agent import AgentResult, ProgressEvent
from agent_worker_app.agents.claude_agent import HEADLESS_ARGV, ClaudeAgent, ClaudeParser
from agent_worker_app.errors import UsageError
from fake_anthropic import Usage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude"
INDEX: dict[str, dict[str, Any]] = json.loads((FIXTURES / "index.json").read_text())
NAMES = sorted(p.stem for p in FIXTURES.glob("*.jsonl"))
API_ERRORS = [
    "api_error_400",
    "api_error_401",
    "api_error_401_default_retries",
    "api_error_429",
    "api_error_500",
    "api_error_529",
    "connection_closed",
    "timeout",
    "no_api_key",
]
SUCCESSES = [
    "text_answer",
    "tools_session",
    "parallel_tools",
    "api_retry_recovered",
    "connection_closed_recovered",
    "root_with_is_sandbox",
]


def lines_of(name: str) -> list[str]:
    return (FIXTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)


def events_of(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines_of(name) if line.strip()]


def parse_lines(lines: list[str]) -> AgentResult:
    """What the streaming parser gives after being fed each line once."""
    parser = ClaudeParser()
    for line in lines:
        parser.feed(line)
    return parser.result()


def parse(name: str) -> AgentResult:
    return parse_lines(lines_of(name))


KEY = "sk-ant-test-0123456789abcdef"


def load(tmp_path: Path, environ: dict[str, str] | None = None) -> config.Config:
    settings = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "ANTHROPIC_API_KEY": KEY}
    return config.load({"task": "do it"}, environ=settings | (environ or {}), cwd=tmp_path)


def agent(tmp_path: Path, environ: dict[str, str] | None = None) -> ClaudeAgent:
    return ClaudeAgent(load(tmp_path, environ).agent)


# ---------------------------------------------------------------- parse_result on the fixtures


def test_every_fixture_is_in_the_index() -> None:
    assert set(NAMES) == set(INDEX)
    assert len(NAMES) >= 20


@pytest.mark.parametrize("name", NAMES)
def test_parse_result_matches_the_fixture_events(name: str) -> None:
    events = events_of(name)
    init = next((e for e in events if e["type"] == "system" and e["subtype"] == "init"), None)
    final = next((e for e in reversed(events) if e["type"] == "result"), None)
    result = parse(name)
    if init is not None:
        assert result.model == init["model"]
        assert result.version == init["claude_code_version"]
    else:
        assert result.model is None
        assert result.version is None
    if final is None:
        assert not result.found
        assert result.is_error
        assert result.input_tokens is None
        assert result.cost_usd is None
        assert result.error
        assert result.session_id == (init["session_id"] if init else None)
        return
    usage = final["usage"]
    assert result.found
    assert result.is_error == (final["is_error"] or final["subtype"] != "success")
    assert result.subtype == final["subtype"]
    assert result.input_tokens == usage["input_tokens"]
    assert result.output_tokens == usage["output_tokens"]
    assert result.cache_read_tokens == usage["cache_read_input_tokens"]
    assert result.cache_creation_tokens == usage["cache_creation_input_tokens"]
    assert result.turns == final["num_turns"]
    assert result.duration_ms == final["duration_ms"]
    assert result.cost_usd == pytest.approx(final["total_cost_usd"])
    assert result.session_id == final["session_id"]
    if result.is_error:
        assert result.error
    else:
        assert result.error is None
        assert result.result_text == final["result"]


@pytest.mark.parametrize("name", NAMES)
def test_is_error_agrees_with_the_recorded_exit_code(name: str) -> None:
    result = parse(name)
    if INDEX[name]["exit_code"] != 0 or name == "sigint_during_bash":
        assert result.is_error
    else:
        assert not result.is_error
        assert name in SUCCESSES


@pytest.mark.parametrize(
    ("name", "turns", "cost", "steps"),
    [
        ("text_answer", 1, 0.0026008, 1),
        ("root_with_is_sandbox", 1, 0.0026008, 1),
        ("api_retry_recovered", 1, 0.0026008, 1),
        ("connection_closed_recovered", 1, 0.0026008, 1),
        ("parallel_tools", 4, 0.0052016, 2),
        ("tools_session", 4, 0.0104032, 4),
        ("max_turns", 3, 0.0052016, 2),
    ],
)
def test_known_figures_from_the_findings(name: str, turns: int, cost: float, steps: int) -> None:
    """result.usage is the sum of the fake's default usage over the successful answers."""
    result = parse(name)
    one = Usage.default()
    assert (
        result.input_tokens,
        result.output_tokens,
        result.cache_read_tokens,
        result.cache_creation_tokens,
    ) == (
        one.input_tokens * steps,
        one.output_tokens * steps,
        one.cache_read_input_tokens * steps,
        one.cache_creation_input_tokens * steps,
    )
    assert result.turns == turns
    assert result.cost_usd == pytest.approx(cost)
    assert result.model == "claude-opus-5-5"
    assert result.version == "2.1.331"


def test_tools_session_hard_figures() -> None:
    result = parse("tools_session")
    assert result.found
    assert not result.is_error
    assert result.subtype == "success"
    assert (
        result.input_tokens,
        result.output_tokens,
        result.cache_read_tokens,
        result.cache_creation_tokens,
    ) == (404, 92, 4036, 1228)
    assert result.turns == 4
    assert result.duration_ms == 680
    assert result.session_id == "8f25c456-8bb3-4ac4-92b2-35d462ce26d1"
    assert result.result_text is not None
    assert result.result_text.startswith("Created hello.py")


@pytest.mark.parametrize("name", API_ERRORS)
def test_api_errors_carry_the_agent_error_text(name: str) -> None:
    final = events_of(name)[-1]
    assert final["type"] == "result"
    result = parse(name)
    assert result.found
    assert result.is_error
    assert result.subtype == "success"  # Claude Code says success even then
    assert result.error is not None
    assert final["result"] in result.error
    assert (result.input_tokens, result.output_tokens) == (0, 0)
    assert result.cost_usd == 0


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("api_error_401", "Invalid API key"),
        ("api_error_429", "Request rejected (429)"),
        ("api_error_500", "API Error: 500 Internal server error"),
        ("api_error_529", "Repeated 529 Overloaded errors"),
        ("api_error_400", "text content blocks must be non-empty"),
        ("connection_closed", "ECONNRESET"),
        ("timeout", "Request timed out"),
        ("no_api_key", "Not logged in"),
    ],
)
def test_api_error_messages(name: str, text: str) -> None:
    assert text in (parse(name).error or "")


def test_max_turns_is_an_error() -> None:
    result = parse("max_turns")
    assert result.found
    assert result.is_error
    assert result.subtype == "error_max_turns"
    assert "Reached maximum number of turns" in (result.error or "")
    assert "(2)" in (result.error or "")
    assert result.turns == 3


def test_sigint_result_is_an_error_though_claude_exits_0() -> None:
    result = parse("sigint_during_bash")
    assert result.found
    assert result.is_error
    assert result.subtype == "error_during_execution"
    assert result.error


def test_no_result_event_is_not_found_and_an_error() -> None:
    result = parse("sigterm_during_bash")
    assert not result.found
    assert result.is_error
    assert result.session_id == "935a848d-6958-4c57-b28f-8c70e60a35d7"
    assert result.model == "claude-opus-5-5"
    assert result.version == "2.1.331"
    assert result.turns == 1  # one assistant event seen
    assert "without a result" in (result.error or "")


@pytest.mark.parametrize("name", ["root_refused", "stream_json_without_verbose"])
def test_empty_output_is_not_found(name: str) -> None:
    assert lines_of(name) == []
    result = parse(name)
    assert not result.found
    assert result.is_error
    assert result.turns is None
    assert result.session_id is None
    assert result.error


def test_a_truncated_result_line_counts_as_no_result() -> None:
    lines = lines_of("tools_session")
    truncated = [*lines[:-1], lines[-1][: len(lines[-1]) // 2]]
    result = parse_lines(truncated)
    assert not result.found
    assert result.is_error
    assert "Created hello.py" in (result.error or "")  # the agent's last words


GARBAGE_TEXT = [
    "",
    "\n",
    "not json at all\n",
    "{\n",
    '{"type": "result", "subtype": "succ\n',
    "[1, 2, 3]\n",
    "null\n",
    '"a string"\n',
    "42\n",
    "\ufffd\ufffd binary \x00 junk\n",
    "npm WARN something\n",
    "  {broken json}  \n",
]


def test_non_json_lines_change_nothing() -> None:
    clean = lines_of("tools_session")
    mixed: list[str] = []
    for n, line in enumerate(clean):
        mixed.append(GARBAGE_TEXT[n % len(GARBAGE_TEXT)])
        mixed.append(line)
    mixed += GARBAGE_TEXT
    parser = ClaudeParser()
    assert parse_lines(mixed) == parse_lines(clean)
    for line in GARBAGE_TEXT:
        assert parser.feed(line) is None


WRONG_SHAPES = [
    '{"type": "assistant"}',
    '{"type": "assistant", "message": null}',
    '{"type": "assistant", "message": "not an object"}',
    '{"type": "assistant", "message": {"content": 5}}',
    '{"type": "assistant", "message": {"content": [null, "x", 3, {"type": "tool_use"}]}}',
    '{"type": "assistant", "message": {"content": [{"type": "tool_use", "input": "x"}]}}',
    '{"type": "system", "subtype": "api_retry"}',
    '{"type": "user", "message": 7}',
    '{"type": 5}',
    "{}",
]
WRONG_RESULTS = [
    '{"type": "result"}',
    '{"type": "result", "usage": "none", "num_turns": "3", "total_cost_usd": "0.1"}',
    '{"type": "result", "is_error": true, "errors": 5}',
    '{"type": "result", "is_error": true, "errors": [null, ""], "result": 7}',
]


@pytest.mark.parametrize("line", WRONG_SHAPES)
def test_wrongly_shaped_events_never_raise(line: str) -> None:
    parser = ClaudeParser()
    clean = lines_of("tools_session")
    mixed = [*clean[:3], line + "\n", *clean[3:]]
    assert parse_lines(mixed) == parse_lines(clean)
    event = parser.feed(line)
    # a shape it cannot use gives no event; one it can (a tool call without input) its name
    assert event == (ProgressEvent("tool", "tool") if "tool_use" in line else None)


@pytest.mark.parametrize("line", WRONG_RESULTS)
def test_a_wrongly_shaped_result_never_raises(line: str) -> None:
    result = parse_lines([*lines_of("text_answer")[:-1], line + "\n"])
    assert result.found
    assert result.model == "claude-opus-5-5"
    assert result.is_error
    assert result.error


# ---------------------------------------------------------------- on_output_line


def assistant(*blocks: dict[str, Any]) -> str:
    return json.dumps({"type": "assistant", "message": {"content": list(blocks)}})


def tool(name: str, **args: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_1", "name": name, "input": args}


@pytest.mark.parametrize(
    ("block", "text"),
    [
        (tool("Write", file_path="/workspace/hello.txt", content="x"), "Write hello.txt"),
        (tool("Edit", file_path="/workspace/src/app.py", old_string="a"), "Edit src/app.py"),
        (tool("Read", file_path="/etc/hosts"), "Read /etc/hosts"),
        (tool("Bash", command="pytest -q", description="Run tests"), "Bash: pytest -q"),
        (tool("Bash", command="git status\n  --short"), "Bash: git status --short"),
        (tool("Grep", pattern="def main"), "Grep def main"),
        (tool("TodoWrite", todos=[]), "TodoWrite"),
    ],
)
def test_tool_calls_become_progress_events(block: dict[str, Any], text: str) -> None:
    assert ClaudeParser().feed(assistant(block) + "\n") == ProgressEvent("tool", text)


def test_long_commands_are_shortened() -> None:
    command = "python3 -c 'print(1)' && " + "echo word " * 40
    event = ClaudeParser().feed(assistant(tool("Bash", command=command)))
    assert event is not None
    assert event.kind == "tool"
    assert event.text.startswith("Bash: python3 -c 'print(1)' && echo word")
    assert event.text.endswith("\u2026")
    assert len(event.text) < len("Bash: " + command)
    assert len(event.text) <= len("Bash: ") + 80
    path = "/workspace/" + "deep/" * 30 + "file.py"
    event = ClaudeParser().feed(assistant(tool("Write", file_path=path)))
    assert event is not None
    assert event.text.startswith("Write deep/deep/")
    assert "/workspace/" not in event.text
    assert len(event.text) <= len("Write ") + 80


def test_lines_without_a_tool_call_give_no_tool_event() -> None:
    parser = ClaudeParser()
    assert parser.feed("plain text\n") is None
    assert parser.feed("") is None
    assert parser.feed(assistant({"type": "text", "text": "Thinking"})) is None
    assert parser.feed('{"type": "user", "message": {"content": []}}') is None


def test_progress_events_of_the_recorded_sessions() -> None:
    parser = ClaudeParser()

    def events(name: str) -> list[ProgressEvent]:
        found = (parser.feed(line) for line in lines_of(name))
        return [e for e in found if e is not None]

    session = events("tools_session")
    assert session[0].kind == "info"
    assert "2.1.331" in session[0].text
    assert "claude-opus-5-5" in session[0].text
    assert session[1:] == [
        ProgressEvent("tool", "Write hello.py"),
        ProgressEvent("tool", "Edit hello.py"),
        ProgressEvent("tool", "Bash: python3 hello.py"),
    ]
    assert [e.text for e in events("parallel_tools")[1:]] == [
        "Write a.txt",
        "Write b.txt",
        "Bash: ls /workspace && git -C /workspace status --short",
    ]
    assert [e.text for e in events("max_turns")[1:]] == ["Bash: echo one", "Bash: echo two"]


# ---------------------------------------------------------------- configuration


def test_container_command_without_options(tmp_path: Path) -> None:
    argv = agent(tmp_path).command()
    assert argv == [
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
        # the user's settings only: none of the repository's .claude/ or .mcp.json
        "--setting-sources",
        "user",
        "--strict-mcp-config",
    ]


def test_container_command_with_model_max_turns_and_agent_args(tmp_path: Path) -> None:
    argv = agent(
        tmp_path, {"ANTHROPIC_MODEL": "claude-sonnet-4-5", "AGENT_MAX_TURNS": "7"}
    ).command()
    assert argv[: len(HEADLESS_ARGV)] == agent(tmp_path).command()
    assert argv[argv.index("--model") + 1] == "claude-sonnet-4-5"
    assert argv[argv.index("--max-turns") + 1] == "7"
    only_model = agent(tmp_path, {"ANTHROPIC_MODEL": "m"}).command()
    assert "--max-turns" not in only_model
    assert only_model[-2:] == ["--model", "m"]
    only_turns = agent(tmp_path, {"AGENT_MAX_TURNS": "3"}).command()
    assert "--model" not in only_turns
    assert only_turns[-2:] == ["--max-turns", "3"]
    cfg = config.load(
        {"task": "t", "model": "from-cli", "agent_arg": ("--append-system-prompt", "be brief")},
        environ={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_MODEL": "from-env"},
        cwd=tmp_path,
    )
    argv = ClaudeAgent(cfg.agent).command()
    assert argv[len(HEADLESS_ARGV) :] == [
        "--model",
        "from-cli",
        "--append-system-prompt",
        "be brief",
    ]


@pytest.mark.parametrize(
    ("given", "passed"), [("5", "5.0"), ("$0.25", "0.25"), ("1e-5", "0.00001")]
)
def test_max_cost_is_claude_codes_own_budget(tmp_path: Path, given: str, passed: str) -> None:
    cfg = config.load(
        {"task": "t", "max_cost": given}, environ={"ANTHROPIC_API_KEY": KEY}, cwd=tmp_path
    )
    argv = ClaudeAgent(cfg.agent).command()
    assert argv[len(HEADLESS_ARGV) :] == ["--max-budget-usd", passed]
    assert cfg.max_cost_usd == float(passed)
    for bad in ("0", "-1", "lots", "inf", "nan"):
        with pytest.raises(UsageError, match="--max-cost must be a positive amount of US dollars"):
            config.load(
                {"task": "t", "max_cost": bad}, environ={"ANTHROPIC_API_KEY": KEY}, cwd=tmp_path
            )
    from_env = config.load(
        {"task": "t"},
        environ={"ANTHROPIC_API_KEY": KEY, "AGENT_WORKER_MAX_COST": "2"},
        cwd=tmp_path,
    )
    assert ClaudeAgent(from_env.agent).command()[len(HEADLESS_ARGV) :] == [
        "--max-budget-usd",
        "2.0",
    ]


@pytest.mark.parametrize(
    ("base_url", "hosts"),
    [
        (None, ["api.anthropic.com:443"]),
        ("http://172.17.0.1", ["172.17.0.1:80"]),
        ("https://gateway.example.com", ["gateway.example.com:443"]),
        ("http://172.17.0.1:8080/v1/", ["172.17.0.1:8080"]),
        ("https://gateway.example.com:8443", ["gateway.example.com:8443"]),
        ("HTTPS://Gateway.Example.COM/", ["gateway.example.com:443"]),
        ("http://[fd00::1]:9000", ["[fd00::1]:9000"]),
    ],
)
def test_api_hosts(tmp_path: Path, base_url: str | None, hosts: list[str]) -> None:
    environ = {"ANTHROPIC_BASE_URL": base_url} if base_url else {}
    assert agent(tmp_path, environ).api_hosts() == hosts


def test_no_credential_names_every_variable(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no credential for claude: set one of") as caught:
        config.load({"task": "t"}, environ={"XDG_CONFIG_HOME": str(tmp_path)}, cwd=tmp_path)
    assert caught.value.exit_code == 2
    for variable in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN"):
        assert variable in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "method"),
    [
        ("ANTHROPIC_API_KEY", "api-key"),
        ("CLAUDE_CODE_OAUTH_TOKEN", "oauth-token"),
        ("ANTHROPIC_AUTH_TOKEN", "auth-token"),
    ],
)
def test_each_credential_alone_is_delivered_as_a_secret(
    tmp_path: Path, variable: str, method: str
) -> None:
    secret = f"secret-for-{method}-0123456789"
    environ = {"XDG_CONFIG_HOME": str(tmp_path), variable: secret}
    environ["ANTHROPIC_BASE_URL"] = "http://10.0.0.1:80"
    cfg = config.load({"task": "t"}, environ=environ, cwd=tmp_path)
    claude = ClaudeAgent(cfg.agent)
    assert claude.secret_env() == {variable: secret}
    env = claude.container_env()
    assert secret not in json.dumps(env)
    # the agent's API is root's credential gate, which sends its requests on to the base URL
    assert env == {"ANTHROPIC_BASE_URL": "http://127.0.0.1:7358"}
    assert claude.gate_upstream() == "http://10.0.0.1:80"
    assert secret not in " ".join(claude.command())
    assert secret not in repr(cfg)


def test_several_credentials_need_auth_to_choose(tmp_path: Path) -> None:
    environ = {
        "XDG_CONFIG_HOME": str(tmp_path),
        "ANTHROPIC_API_KEY": "sk-ant-key-0123456789",
        "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat-0123456789",
    }
    with pytest.raises(UsageError, match=r"several credentials for claude are set") as caught:
        config.load({"task": "t"}, environ=environ, cwd=tmp_path)
    assert "--auth api-key | oauth-token | auth-token" in str(caught.value)
    cfg = config.load({"task": "t", "auth": "oauth-token"}, environ=environ, cwd=tmp_path)
    assert ClaudeAgent(cfg.agent).secret_env() == {
        "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat-0123456789"
    }  # only the chosen one: Claude Code would prefer the API key if both reached it
    by_variable = config.load(
        {"task": "t"}, environ=environ | {"AGENT_WORKER_AUTH": "api-key"}, cwd=tmp_path
    )
    assert ClaudeAgent(by_variable.agent).secret_env() == {
        "ANTHROPIC_API_KEY": "sk-ant-key-0123456789"
    }


def test_auth_naming_an_unset_or_unknown_method(tmp_path: Path) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path), "ANTHROPIC_API_KEY": "sk-ant-key-0123456789"}
    with pytest.raises(UsageError, match="--auth oauth-token: CLAUDE_CODE_OAUTH_TOKEN is not set"):
        config.load({"task": "t", "auth": "oauth-token"}, environ=environ, cwd=tmp_path)
    with pytest.raises(UsageError, match="--auth must be one of api-key"):
        config.load({"task": "t", "auth": "password"}, environ=environ, cwd=tmp_path)


def test_the_version_pin_is_the_image_layers(tmp_path: Path) -> None:
    layer = agent(tmp_path).image_layer()
    assert layer.build_args == {"CLAUDE_CODE_VERSION": "2.1.331"}
    assert "FROM system AS claude" in layer.stages
    assert "COPY --from=claude" in layer.final
    pinned = agent(tmp_path, {"CLAUDE_CODE_VERSION": "2.0.0"})
    assert pinned.image_layer().build_args == {"CLAUDE_CODE_VERSION": "2.0.0"}
    assert pinned.version() == "2.0.0"
