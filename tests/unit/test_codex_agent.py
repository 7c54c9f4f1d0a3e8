"""agents/codex_agent.py against Codex CLI's real recorded output (tests/fixtures/codex)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from agent_worker_app import config
from agent_worker_app.agents.base_agent import AgentResult, AgentSettings, ProgressEvent
from agent_worker_app.agents.codex_agent import (
    HEADLESS_ARGV,
    VERSION,
    CodexAgent,
    CodexParser,
    describe_item,
    shell_command,
)
from agent_worker_app.errors import UsageError
from fake_openai import Usage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "codex"
INDEX: dict[str, dict[str, Any]] = json.loads((FIXTURES / "index.json").read_text())
NAMES = sorted(p.stem for p in FIXTURES.glob("*.jsonl"))
FAILURES = [
    "api_error_400",
    "api_error_401",
    "api_error_429",
    "api_error_500",
    "response_failed",
    "connection_closed",
    "connection_refused",
    "fail_after_tool",
    "no_api_key",
]
SUCCESSES = [
    "text_answer",
    "tools_session",
    "classic_tools",
    "parallel_calls",
    "api_retry_recovered",
    "connection_closed_recovered",
    "unknown_model",
    "builtin_provider",
]
# Main-loop responses each successful fixture got (all with the fake's default usage).
STEPS = {
    "text_answer": 1,
    "tools_session": 4,
    "classic_tools": 4,
    "parallel_calls": 2,
    "api_retry_recovered": 1,
    "connection_closed_recovered": 1,
    "unknown_model": 1,
    "builtin_provider": 1,
}
KEY = "sk-test-codex-unit-0123456789"


def lines_of(name: str) -> list[str]:
    return (FIXTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)


def parse_lines(lines: list[str], **kwargs: str | None) -> AgentResult:
    """What the streaming parser gives after being fed each line once."""
    parser = CodexParser(**kwargs)
    for line in lines:
        parser.feed(line)
    return parser.result()


def parse(name: str) -> AgentResult:
    return parse_lines(lines_of(name))


def events(name: str) -> list[ProgressEvent]:
    parser = CodexParser(version=VERSION)
    return [e for e in map(parser.feed, lines_of(name)) if e is not None]


def load(tmp_path: Path, environ: dict[str, str] | None = None, **cli: Any) -> config.Config:
    settings = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "OPENAI_API_KEY": KEY}
    return config.load(
        {"task": "do it", "agent_type": "codex", **cli},
        environ=settings | (environ or {}),
        cwd=tmp_path,
        agent_class=lambda name: CodexAgent,
    )


def agent(tmp_path: Path, environ: dict[str, str] | None = None, **cli: Any) -> CodexAgent:
    return CodexAgent(load(tmp_path, environ, **cli).agent)


# ---------------------------------------------------------------- the recorded runs


def test_every_fixture_is_in_the_index() -> None:
    assert set(NAMES) == set(INDEX)
    assert set(NAMES) >= set(FAILURES) | set(SUCCESSES)


@pytest.mark.parametrize("name", NAMES)
def test_is_error_agrees_with_the_recorded_exit_code(name: str) -> None:
    result = parse(name)
    assert result.is_error == (INDEX[name]["exit"] != 0)
    if not result.is_error:
        assert result.found
        assert result.error is None


@pytest.mark.parametrize("name", SUCCESSES)
def test_tokens_are_the_fake_usage_summed(name: str) -> None:
    served = Usage.default() * STEPS[name]
    result = parse(name)
    assert result.found
    assert result.input_tokens == served.uncached_input_tokens
    assert result.output_tokens == served.output_tokens
    assert result.cache_read_tokens == served.cache_read_input_tokens
    assert result.cache_creation_tokens == served.cache_creation_input_tokens
    assert result.cost_usd is None  # Codex reports no cost
    assert result.turns is None  # nor how many model requests it made


def test_tools_session_hard_figures() -> None:
    result = parse_lines(lines_of("tools_session"), version=VERSION, model="gpt-x")
    assert result == AgentResult(
        found=True,
        input_tokens=4 * (1201 - 1024 - 64),
        output_tokens=4 * 53,
        cache_read_tokens=4 * 1024,
        cache_creation_tokens=4 * 64,
        session_id="01a212b0-c221-7252-9b57-5d92d27b32e4",
        model="gpt-x",
        version=VERSION,
        result_text="All done.",
    )
    assert INDEX["tools_session"]["commits"] == ["Add hello and notes", "initial"]


@pytest.mark.parametrize("name", FAILURES)
def test_failures_carry_codex_error_text(name: str) -> None:
    result = parse(name)
    assert result.found
    assert result.is_error
    assert result.error is not None
    assert result.error.startswith("Codex reported an error: ")
    failed = [json.loads(line) for line in lines_of(name) if '"turn.failed"' in line]
    assert result.error.endswith(failed[-1]["error"]["message"])
    # A failed turn reports no usage: unknown, never a made-up zero.
    assert (result.input_tokens, result.output_tokens, result.cache_read_tokens) == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("api_error_401", "unexpected status 401 Unauthorized: Fake invalid_request_error (401)"),
        ("api_error_429", "exceeded retry limit, last status: 429 Too Many Requests"),
        ("api_error_500", "experiencing high demand"),
        ("connection_refused", "Connection failed: error sending request"),
        ("no_api_key", "Missing environment variable: `CODEX_API_KEY`."),
        ("fail_after_tool", "Fake invalid_request_error (400)"),
    ],
)
def test_error_messages(name: str, text: str) -> None:
    assert text in (parse(name).error or "")


@pytest.mark.parametrize("name", ["sigint_during_command", "sigterm_during_command"])
def test_a_run_cut_off_by_a_signal_is_not_found_and_an_error(name: str) -> None:
    result = parse(name)
    assert not result.found
    assert result.is_error
    assert result.error == "Codex ended without finishing its turn"
    assert result.session_id is not None
    assert result.input_tokens is None


def test_retries_in_a_successful_run_are_not_errors() -> None:
    lines = lines_of("api_retry_recovered")
    assert any('"type":"error"' in line for line in lines)
    result = parse_lines(lines)
    assert not result.is_error
    assert result.result_text == "Recovered."


def test_last_error_is_told_when_no_turn_ends() -> None:
    lines = lines_of("api_error_401")
    cut = [line for line in lines if "turn.failed" not in line]
    result = parse_lines(cut)
    assert not result.found
    assert result.error is not None
    assert "its last error: unexpected status 401" in result.error
    words = parse_lines(lines_of("tools_session")[:5])
    assert (
        words.error == "Codex ended without finishing its turn; its last words: Creating hello.txt."
    )


@pytest.mark.parametrize("name", ["empty_task"])
def test_empty_output_is_not_found(name: str) -> None:
    assert lines_of(name) == []
    result = parse(name)
    assert (result.found, result.is_error) == (False, True)
    assert result.error == "Codex ended without finishing its turn"


def test_usage_of_several_turns_adds_up() -> None:
    turn = (
        '{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":30,'
        '"cache_write_input_tokens":5,"output_tokens":7,"reasoning_output_tokens":2}}\n'
    )
    result = parse_lines([turn, turn, turn])
    assert (result.input_tokens, result.cache_read_tokens, result.cache_creation_tokens) == (
        195,
        90,
        15,
    )
    assert result.output_tokens == 21
    # Older versions report no cache-write field; a count above input never goes negative.
    old = parse_lines(
        ['{"type":"turn.completed","usage":{"input_tokens":5,"cached_input_tokens":9}}']
    )
    assert (old.input_tokens, old.cache_read_tokens, old.cache_creation_tokens) == (0, 9, 0)
    assert old.output_tokens == 0


def test_a_failed_turn_after_a_completed_one_is_an_error() -> None:
    lines = [
        '{"type":"turn.completed","usage":{"input_tokens":10,"output_tokens":1}}\n',
        '{"type":"turn.failed","error":{"message":"boom"}}\n',
    ]
    result = parse_lines(lines)
    assert (result.found, result.is_error, result.error) == (
        True,
        True,
        "Codex reported an error: boom",
    )
    assert result.input_tokens == 10


def test_non_json_lines_change_nothing() -> None:
    lines = lines_of("tools_session")
    noisy: list[str] = []
    for line in lines:
        noisy += ["Reading prompt from stdin...\n", "\n", "   \n", "not json {\n", line]
    assert parse_lines(noisy) == parse_lines(lines)


NOT_FOUND = AgentResult(is_error=True, error="Codex ended without finishing its turn")
ZERO_TOKENS = AgentResult(
    found=True, input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_creation_tokens=0
)
FAILED = AgentResult(found=True, is_error=True, error="Codex reported an error: turn failed")
# A line of a shape the parser cannot use: (the event it gives, the result of it alone).
WRONG_LINES: list[tuple[str, ProgressEvent | None, AgentResult]] = [
    ("[]", None, NOT_FOUND),
    ("null", None, NOT_FOUND),
    ("42", None, NOT_FOUND),
    ('"text"', None, NOT_FOUND),
    ('{"type": 5}', None, NOT_FOUND),
    ("{" + '"a":' * 5, None, NOT_FOUND),
    ('{"type": "turn.completed", "usage": "lots"}', None, ZERO_TOKENS),
    (
        '{"type": "turn.completed", "usage": {"input_tokens": "many", "output_tokens": true}}',
        None,
        ZERO_TOKENS,
    ),
    ('{"type": "turn.failed", "error": "flat"}', None, FAILED),
    ('{"type": "turn.failed"}', None, FAILED),
    (
        '{"type": "thread.started", "thread_id": 7}',
        ProgressEvent("info", "Codex started, model its default"),
        NOT_FOUND,
    ),
    ('{"type": "item.started", "item": "x"}', None, NOT_FOUND),
    (
        '{"type": "item.started", "item": {"type": "file_change", "changes": "x"}}',
        ProgressEvent("tool", "Patch"),
        NOT_FOUND,
    ),
    ('{"type": "item.completed", "item": {"type": "agent_message", "text": 3}}', None, NOT_FOUND),
    ('{"type": "item.completed", "item": {"type": "error"}}', None, NOT_FOUND),
    ('{"type": "error", "message": null}', ProgressEvent("info", "error"), NOT_FOUND),
]


@pytest.mark.parametrize(("line", "event", "alone"), WRONG_LINES)
def test_wrongly_shaped_events_never_raise(
    line: str, event: ProgressEvent | None, alone: AgentResult
) -> None:
    parser = CodexParser()
    assert parser.feed(line) == event
    assert parser.result() == alone
    if alone in (NOT_FOUND,) and "thread.started" not in line:
        # Nothing it says about the run: amid a real session it changes nothing.
        clean = lines_of("tools_session")
        mixed = [*clean[:3], line + "\n", *clean[3:]]
        assert parse_lines(mixed) == parse_lines(clean)


# ---------------------------------------------------------------- live progress


def test_progress_events_of_the_recorded_sessions() -> None:
    assert [(e.kind, e.text) for e in events("tools_session")] == [
        ("info", f"Codex {VERSION} started, model its default"),
        ("tool", "Shell: printf 'hello\\n' > hello.txt && cat hello.txt"),
        ("tool", "Patch: M hello.txt, A notes.md"),  # once, though started and completed
        (
            "tool",
            "Shell: git add -A && git commit -qm 'Add hello and notes' && git log --oneline -1",
        ),
    ]
    assert [e.text for e in events("parallel_calls")[1:]] == [
        "Shell: echo one > one.txt",
        "Shell: echo two > two.txt",
    ]
    retries = [e for e in events("api_error_401") if e.kind == "info"][1:]
    assert len(retries) == 6
    assert retries[0].text.startswith("Reconnecting... 1/5 (unexpected status 401")
    assert len(retries[0].text) <= 80
    warnings = [e.text for e in events("builtin_provider") if e.text.startswith("warning: ")]
    fallback = "Falling back from WebSockets to HTTPS transport. unexpected status 404 Not Foun"
    assert warnings == [f"warning: {fallback}\u2026"]
    model = [e.text for e in events("unknown_model") if e.text.startswith("warning: ")]
    missing = "Model metadata for `fake-model-x` not found. Defaulting to fallback metadata; t"
    assert model == [f"warning: {missing}\u2026"]


@pytest.mark.parametrize(
    ("item", "text"),
    [
        ({"type": "command_execution", "command": "/bin/bash -lc 'pytest -q'"}, "Shell: pytest -q"),
        ({"type": "command_execution", "command": "bash -c ls"}, "Shell: ls"),
        ({"type": "command_execution", "command": "git status"}, "Shell: git status"),
        (
            {"type": "command_execution", "command": "/bin/sh -lc 'unbalanced"},
            "Shell: /bin/sh -lc 'unbalanced",
        ),
        (
            {
                "type": "file_change",
                "changes": [
                    {"path": "/workspace/src/a.py", "kind": "update"},
                    {"path": "/workspace/old.txt", "kind": "delete"},
                    {"path": "/elsewhere/b.txt", "kind": "add"},
                    {"path": "c", "kind": "renamed?"},
                ],
            },
            "Patch: M src/a.py, D old.txt, A /elsewhere/b.txt, ? c",
        ),
        ({"type": "file_change", "changes": []}, "Patch"),
        ({"type": "mcp_tool_call", "server": "docs", "tool": "search"}, "MCP docs.search"),
        ({"type": "web_search", "query": "codex exec json"}, "Search: codex exec json"),
        ({"type": "collab_tool_call", "tool": "spawn_agent"}, "Agents: spawn_agent"),
        ({"type": "agent_message", "text": "hi"}, None),
        ({"type": "reasoning", "text": "hmm"}, None),
    ],
)
def test_describe_item(item: dict[str, Any], text: str | None) -> None:
    assert describe_item(item) == text


def test_long_commands_are_shortened() -> None:
    text = describe_item(
        {"type": "command_execution", "command": shlex.join(["bash", "-lc", "x" * 300])}
    )
    assert text is not None
    assert len(text) == len("Shell: ") + 80
    assert text.endswith("\u2026")
    assert shell_command("/bin/bash -lc 'a\n  b'") == "a\n  b"


def test_file_changes_reported_only_once_done_still_show() -> None:
    parser = CodexParser()
    done = {
        "id": "item_9",
        "type": "file_change",
        "changes": [{"path": "/workspace/x", "kind": "add"}],
    }
    event = parser.feed(json.dumps({"type": "item.completed", "item": done}))
    assert event == ProgressEvent("tool", "Patch: A x")


# ---------------------------------------------------------------- configuration


GATE_PROVIDER = (
    'model_providers.agent_worker={name="agent-worker", base_url="http://127.0.0.1:7358/v1", '
    'env_key="CODEX_API_KEY", wire_api="responses"}'
)


def test_with_a_key_codex_talks_to_the_credential_gate(tmp_path: Path) -> None:
    codex = agent(tmp_path)
    assert codex.gated
    assert codex.gate_upstream() == "https://api.openai.com/v1"
    argv = codex.command()
    assert argv == [*HEADLESS_ARGV, "-c", 'model_provider="agent_worker"', "-c", GATE_PROVIDER, "-"]
    with_url = agent(tmp_path, {"OPENAI_BASE_URL": "http://172.17.0.1:8080/v1/"})
    assert with_url.gate_upstream() == "http://172.17.0.1:8080/v1"
    assert GATE_PROVIDER in with_url.command()


def test_command_without_options() -> None:
    argv = CodexAgent(AgentSettings()).command()  # no credential, so no gate
    assert argv == [*HEADLESS_ARGV, "-"]
    assert argv[:3] == ["codex", "exec", "--json"]
    assert "--dangerously-bypass-approvals-and-sandbox" in argv
    assert "--model" not in argv
    assert not any(a.startswith("model_provider") for a in argv)


def test_command_with_base_url_model_and_agent_args(tmp_path: Path) -> None:
    argv = CodexAgent(  # no credential, so no gate: the base URL as given
        AgentSettings(
            {"OPENAI_BASE_URL": "http://172.17.0.1:8080/v1/", "CODEX_MODEL": "gpt-5.5"},
            args=("-c", 'model_reasoning_effort="high"'),
        )
    ).command()
    fixed = len(HEADLESS_ARGV)
    assert argv[:fixed] == list(HEADLESS_ARGV)
    assert argv[fixed:] == [
        "--model",
        "gpt-5.5",
        "-c",
        'model_provider="agent_worker"',
        "-c",
        'model_providers.agent_worker={name="agent-worker", base_url="http://172.17.0.1:8080/v1", '
        'env_key="CODEX_API_KEY", wire_api="responses"}',
        "-c",
        'model_reasoning_effort="high"',
        "-",
    ]
    from_cli = agent(tmp_path, {"CODEX_MODEL": "from-env"}, model="from-cli").command()
    assert from_cli[from_cli.index("--model") + 1] == "from-cli"


def test_the_recorded_runs_used_this_command_line() -> None:
    settings = AgentSettings({"OPENAI_BASE_URL": "{base_url}"})
    assert INDEX["tools_session"]["argv"] == CodexAgent(settings).command()
    assert INDEX["builtin_provider"]["argv"][: len(HEADLESS_ARGV)] == list(HEADLESS_ARGV)


def test_a_base_url_is_a_toml_string_whatever_it_holds() -> None:
    url = 'http://h:1/v1?a="b"\\c'
    argv = CodexAgent(AgentSettings({"OPENAI_BASE_URL": url})).command()
    provider = next(a for a in argv if a.startswith("model_providers."))
    assert f"base_url={json.dumps(url)}" in provider


@pytest.mark.parametrize(
    ("base_url", "hosts"),
    [
        (None, ["api.openai.com:443"]),
        ("http://172.17.0.1/v1", ["172.17.0.1:80"]),
        ("https://gateway.example.com/v1", ["gateway.example.com:443"]),
        ("http://172.17.0.1:8080/v1/", ["172.17.0.1:8080"]),
        ("HTTPS://Gateway.Example.COM:8443/", ["gateway.example.com:8443"]),
        ("http://[fd00::1]:9000/v1", ["[fd00::1]:9000"]),
    ],
)
def test_api_hosts(tmp_path: Path, base_url: str | None, hosts: list[str]) -> None:
    environ = {"OPENAI_BASE_URL": base_url} if base_url else {}
    assert agent(tmp_path, environ).api_hosts() == hosts


def test_the_key_reaches_codex_as_codex_api_key_only(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    assert cfg.agent.credential is not None
    assert cfg.agent.credential.variable == "OPENAI_API_KEY"
    codex = CodexAgent(cfg.agent)
    assert codex.secret_env() == {"CODEX_API_KEY": KEY}
    assert codex.container_env() == {}
    assert KEY not in " ".join(codex.command())
    assert CodexAgent(AgentSettings()).secret_env() == {}


def test_no_credential_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no credential for codex: set OPENAI_API_KEY"):
        config.load(
            {"task": "t", "agent_type": "codex"},
            environ={"XDG_CONFIG_HOME": str(tmp_path / "xdg")},
            cwd=tmp_path,
            agent_class=lambda name: CodexAgent,
        )


def test_max_turns_is_not_a_codex_setting(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--max-turns: the codex agent has no such setting"):
        load(tmp_path, max_turns="3")


def test_the_version_pin_is_the_image_layers(tmp_path: Path) -> None:
    layer = agent(tmp_path).image_layer()
    assert layer.build_args == {"CODEX_VERSION": VERSION}
    assert agent(tmp_path).version() == VERSION
    assert layer.stages.startswith("FROM system AS codex\n")
    assert '"@openai/codex@${CODEX_VERSION}"' in layer.stages
    assert "COPY --from=codex" in layer.final
    pinned = agent(tmp_path, {"CODEX_VERSION": "0.168.0"})
    assert pinned.image_layer().build_args == {"CODEX_VERSION": "0.168.0"}
    assert pinned.parser().result().version == "0.168.0"
    assert agent(tmp_path, agent_version="0.160.0").version() == "0.160.0"
