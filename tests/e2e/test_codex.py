"""Whole runs of the codex agent: the real CLI, the real image with the pinned Codex CLI from
npm, and the suite's fake Responses API (tests/fake_openai.py) on the Docker bridge, answering
with real tool calls that Codex carries out in the container."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent_worker_app.agents.codex_agent import CodexAgent
from conftest import clean_env, containers_of, git, run_cli, snapshot
from credential_hunt import SEARCH, assert_found_nothing, search_command
from fake_openai import (
    FakeOpenAI,
    Turn,
    add_file,
    apply_patch,
    code_apply_patch,
    code_exec_command,
    exec_command,
    patch,
    update_file,
)

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

OPENAI_KEY = "sk-test-codex-Hq27xv93LkPz0aBc"
VERSION = "0.169.0"
BASE_IMAGE_GREETING = "def greet():\n    return 'hello'\n"


@pytest.fixture
def codex_env(
    fake_openai: FakeOpenAI,
    gateway: str,
    base_image: str,
    codex_image: str,
    ca_certs: tuple[Path, ...],
) -> Callable[..., dict[str, str]]:
    """A run's environment: the key, the fake as base URL, the suite's image settings."""

    def make(**extra: str) -> dict[str, str]:
        settings = {
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": fake_openai.url(gateway),
            "AGENT_WORKER_BASE_IMAGE": base_image,
            "AGENT_WORKER_CA_CERT": ":".join(str(p) for p in ca_certs),
        }
        return clean_env(**(settings | extra))

    return make


def list_price(model: str, served: Any) -> float:
    """What the tokens served cost at CodexAgent's prices for the model (longest prefix)."""
    known = [prefix for prefix in CodexAgent.prices if model.startswith(prefix)]
    rates = (
        CodexAgent.prices[max(known, key=len)]
        if known
        else tuple(max(p[i] for p in CodexAgent.prices.values()) for i in range(4))
    )
    counts = (
        served.uncached_input_tokens,
        served.output_tokens,
        served.cached_tokens,
        served.cache_write_tokens,
    )
    return sum(n * rate for n, rate in zip(counts, rates, strict=True)) / 1e6


def assert_no_key_anywhere(result: Any, report: dict[str, Any]) -> None:
    assert OPENAI_KEY not in result.stdout + result.stderr + json.dumps(report)
    for path in Path(report["run_dir"]).rglob("*"):
        if path.is_file():
            assert OPENAI_KEY.encode() not in path.read_bytes(), path


def test_codex_works_on_the_branch_and_reports_the_fake_usage(
    repo: Path,
    fake_openai: FakeOpenAI,
    codex_env: Callable[..., dict[str, str]],
    docker_client: Any,
) -> None:
    fake_openai.add_turns(
        Turn.tool_calls(
            code_exec_command(
                "printf 'def add(a, b):\\n    return a + b\\n' > src/util.py"
                " && git add src/util.py && git commit -q -m 'Add util' && id -u"
            ),
            text="Adding a helper first.",
            reasoning="Plan: helper, greeting, notes.",
        ),
        Turn.tool_calls(
            code_apply_patch(
                patch(
                    update_file("src/app.py", "    return 'hello'", "    return 'hello, world'"),
                    add_file("notes.txt", "one\ntwo\nthree\n"),
                )
            )
        ),
        Turn.text("Added util, changed the greeting, left notes."),
    )
    before = snapshot(repo)
    base = git(repo, "rev-parse", "HEAD").strip()

    result = run_cli(
        ["--agent-type", "codex", "--task", "Improve the app", "--branch", "codex/improve"],
        cwd=repo,
        env=codex_env(),
    )

    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "success"
    assert report["exit_code"] == 0
    assert report["error"] is None
    assert report["warnings"] == []  # nothing blocked: Codex asked for no host but the API
    assert report["agent"]["type"] == "codex"
    assert report["agent"]["version"] == VERSION
    assert report["agent"]["model"] is None  # Codex's default; its output does not name it
    assert report["agent"]["session_id"]
    head = git(repo, "rev-parse", "codex/improve").strip()
    assert report["head_commit"] == head
    log = git(repo, "log", "--format=%s", f"{base}..codex/improve").splitlines()
    assert log == ["agent-worker: work the agent left uncommitted", "Add util"]
    assert git(repo, "show", "codex/improve:src/util.py") == "def add(a, b):\n    return a + b\n"
    assert (
        git(repo, "show", "codex/improve:src/app.py") == "def greet():\n    return 'hello, world'\n"
    )
    assert git(repo, "show", "codex/improve:notes.txt") == "one\ntwo\nthree\n"
    changes = report["changes"]
    assert (changes["files_changed"], changes["lines_added"], changes["lines_removed"]) == (
        3,
        2 + 1 + 3,
        1,
    )
    assert snapshot(repo) == before

    # Every answer the fake gave is in the report's tokens, in the report's meaning of each.
    served = fake_openai.main_usage_total
    assert fake_openai.turns_used == 3
    assert report["tokens"] == {
        "input": served.uncached_input_tokens,
        "output": served.output_tokens,
        "cache_read": served.cached_tokens,
        "cache_creation": served.cache_write_tokens,
        "total": served.uncached_input_tokens + served.output_tokens,
    }
    assert report["turns"] is None
    # The credential gate counted the same, and priced it (Codex reports no cost of its own).
    main = fake_openai.main_requests
    assert report["meter"]["tokens"] == report["tokens"]
    assert report["meter"]["requests"] == 3
    assert report["cost_usd"] == pytest.approx(list_price(main[0].model or "", served))
    assert report["cost_usd"] > 0

    # Real tool calls, carried out by Codex as the agent user, with the key the gate added.
    assert [r.path for r in main] == ["/v1/responses"] * 3
    assert all(r.stream for r in main)
    assert "functions.exec" in main[0].tool_names  # code mode: Codex's default models
    outputs = main[-1].tool_outputs()
    assert outputs[0].endswith("Output:\n1000\n")
    assert fake_openai.saw_api_key(OPENAI_KEY)
    assert [r.kind for r in fake_openai.requests] == ["main"] * 3
    assert "Shell: printf" in result.stderr  # the live progress
    assert "Patch: A notes.txt, M src/app.py" in result.stderr
    assert_no_key_anywhere(result, report)
    assert containers_of(docker_client, report["run_id"]) == []


def test_codex_with_a_model_that_calls_tools_directly(
    repo: Path,
    fake_openai: FakeOpenAI,
    codex_env: Callable[..., dict[str, str]],
) -> None:
    fake_openai.add_turns(
        Turn.tool_calls(apply_patch(patch(add_file("CHANGES.md", "- greeting\n")))),
        Turn.tool_calls(exec_command("git add -A && git commit -q -m 'Note the change'")),
        Turn.text("Noted."),
    )
    result = run_cli(
        ["--agent-type", "codex", "--model", "gpt-5.5", "--task", "Note it", "--branch", "noted"],
        cwd=repo,
        env=codex_env(),
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["agent"]["model"] == "gpt-5.5"
    assert {r.model for r in fake_openai.requests} == {"gpt-5.5"}
    assert {"exec_command", "apply_patch"} <= set(fake_openai.main_requests[0].tool_names)
    assert git(repo, "log", "--format=%s", "main..noted").splitlines() == ["Note the change"]
    assert git(repo, "show", "noted:CHANGES.md") == "- greeting\n"
    served = fake_openai.main_usage_total
    assert (report["tokens"]["input"], report["tokens"]["output"]) == (
        served.uncached_input_tokens,
        served.output_tokens,
    )


def test_codex_failing_on_the_api_exits_1_with_its_error(
    repo: Path,
    fake_openai: FakeOpenAI,
    codex_env: Callable[..., dict[str, str]],
    docker_client: Any,
) -> None:
    fake_openai.when_exhausted = Turn.error(401, message="Incorrect API key provided")
    base = git(repo, "rev-parse", "HEAD").strip()
    result = run_cli(
        ["--agent-type", "codex", "--task", "Try", "--branch", "refused"], cwd=repo, env=codex_env()
    )
    assert result.code == 1, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "failed"
    assert report["error"].startswith("Codex reported an error: unexpected status 401")
    assert "Incorrect API key provided" in report["error"]
    assert "Incorrect API key provided" in result.stderr
    assert report["tokens"]["input"] is None  # a failed turn reports no usage: unknown
    # the credential gate saw six refusals and no tokens: nothing was spent
    assert report["meter"]["errors"] == 6
    assert report["meter"]["retries"] == 5
    assert report["meter"]["tokens"]["total"] == 0
    assert report["cost_usd"] == 0.0
    assert report["head_commit"] == base
    # Codex retries a 401 within its stream retries (5), then gives up.
    assert [r.status for r in fake_openai.requests] == [401] * 6
    assert fake_openai.saw_api_key(OPENAI_KEY)
    assert_no_key_anywhere(result, report)
    assert containers_of(docker_client, report["run_id"]) == []


def test_codex_work_before_a_failure_is_kept(
    repo: Path,
    fake_openai: FakeOpenAI,
    codex_env: Callable[..., dict[str, str]],
) -> None:
    fake_openai.add_turns(
        Turn.tool_calls(code_exec_command("echo started > partial.txt")),
        Turn.error(400, message="the fake backend refused this one"),
    )
    result = run_cli(
        ["--agent-type", "codex", "--task", "Try", "--branch", "broken"], cwd=repo, env=codex_env()
    )
    assert result.code == 1, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "failed"
    assert "the fake backend refused this one" in report["error"]
    assert git(repo, "show", "broken:partial.txt") == "started\n"
    assert len(fake_openai.requests) == 2  # a 400 is not retried


def test_codex_never_holds_its_key(
    repo: Path, fake_openai: FakeOpenAI, codex_env: Callable[..., dict[str, str]]
) -> None:
    """The agent searches everything it can read for the key and its encodings (the attack) and
    finds only its placeholder; the fake API receives the real key."""
    (repo / "credential_search.py").write_bytes(SEARCH.read_bytes())
    git(repo, "add", "credential_search.py")
    git(repo, "commit", "-qm", "the search")
    search = search_command("/workspace/found.json", OPENAI_KEY)
    fake_openai.add_turns(Turn.tool_calls(code_exec_command(search)), Turn.text("searched"))
    result = run_cli(
        ["--agent-type", "codex", "--task", "look", "--branch", "codex/look"],
        cwd=repo,
        env=codex_env(),
    )
    assert result.code == 0, result.stderr
    assert_found_nothing(json.loads(git(repo, "show", "codex/look:found.json")))
    assert [r.credential for r in fake_openai.main_requests] == [OPENAI_KEY] * 2
    assert result.report is not None
    assert_no_key_anywhere(result, result.report)


def test_max_cost_is_held_by_the_gate(
    repo: Path, fake_openai: FakeOpenAI, codex_env: Callable[..., dict[str, str]]
) -> None:
    """An agent that keeps calling the API (Codex stops at no budget of its own) gets no answer
    once what the gate counted costs --max-cost: the run fails, saying so, and the API saw no
    request past it."""
    fake_openai.add_turns(*[Turn.tool_calls(code_exec_command("true")) for _ in range(20)])
    result = run_cli(
        [
            "--agent-type", "codex", "--task", "loop", "--branch", "codex/loop",
            "--max-cost", "0.002",
        ],
        cwd=repo,
        env=codex_env(),
    )  # fmt: skip
    assert result.code == 1, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "failed"
    assert "--max-cost $0.002" in report["error"]
    meter = report["meter"]
    assert meter["refused"] >= 1
    assert meter["limit_usd"] == 0.002
    served = fake_openai.main_usage_total
    spent = list_price(fake_openai.main_requests[0].model or "", served)
    # each answer costs less than the limit; the last one it let through passed it
    assert spent >= 0.002
    assert meter["cost_usd"] == pytest.approx(spent)
    assert len(fake_openai.main_requests) < 20
    assert meter["requests"] == len(fake_openai.main_requests) + meter["refused"]
