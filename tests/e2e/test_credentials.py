"""Claude Code's three credential methods end to end: the fake API records which header each
request carried, and only the chosen credential ever reaches the container."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import git, run_cli, runtime_env
from credential_hunt import SEARCH, assert_found_nothing, search_command
from fake_anthropic import Turn, bash

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

KEY = "sk-ant-api03-credential-test-Q7xv93Lk"
OAUTH = "sk-ant-oat01-credential-test-Hq27xv93"
GATEWAY = "gateway-bearer-credential-test-Zr84kQw0"


def without_key(run_env: Callable[..., dict[str, str]], **extra: str) -> dict[str, str]:
    env = run_env(**extra)
    env.pop("ANTHROPIC_API_KEY", None)
    return env | extra


@pytest.mark.parametrize(
    ("variable", "secret", "header", "runtime"),
    [
        ("ANTHROPIC_API_KEY", KEY, "x-api-key", "runc"),
        ("CLAUDE_CODE_OAUTH_TOKEN", OAUTH, "authorization", "runc"),
        ("ANTHROPIC_AUTH_TOKEN", GATEWAY, "authorization", "runc"),
        # under gVisor the credential goes to the network companion's gate, whichever kind
        ("ANTHROPIC_API_KEY", KEY, "x-api-key", "runsc"),
    ],
)
def test_the_credential_reaches_the_api_and_never_the_agent(
    repo: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    variable: str,
    secret: str,
    header: str,
    runtime: str,
    request: pytest.FixtureRequest,
) -> None:
    """The agent and a maintenance command search everything they can read for the credential
    (the attack) and find only the placeholder; the API receives the real credential."""
    if runtime == "runsc":
        request.getfixturevalue("runsc")  # registered with the engine
    (repo / "credential_search.py").write_bytes(SEARCH.read_bytes())
    git(repo, "add", "credential_search.py")
    git(repo, "commit", "-qm", "the search")
    fake_api.add_turns(
        Turn.tool_use(bash(search_command("/workspace/found-agent.json", secret))),
        Turn.text("done"),
    )
    branch = f"cred-{header}-{len(secret)}"
    maintenance = search_command("/workspace/found-maintenance.json", secret)
    result = run_cli(
        ["--task", "t", "--branch", branch, "--maintenance", maintenance],
        cwd=repo,
        env=without_key(run_env, **{variable: secret}, **runtime_env(runtime)),
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert result.report["status"] == "success"
    found = json.loads(git(repo, "show", f"{branch}:found-agent.json"))
    assert_found_nothing(found, memory=runtime != "runsc")
    during_maintenance = json.loads(git(repo, "show", f"{branch}:found-maintenance.json"))
    assert "environment" not in during_maintenance["placeholder"]  # run without the agent's
    assert {
        k: v for k, v in during_maintenance.items() if k not in ("placeholder", "unreadable") and v
    } == {}
    main = fake_api.main_requests
    assert len(main) == 2
    for sent in main:
        value = sent.headers.get(header, "")
        assert secret in value, (header, sent.headers)
        other = "authorization" if header == "x-api-key" else "x-api-key"
        assert other not in sent.headers  # one credential, never two
    # the meter counted what the API answered, as the agent reported it
    assert result.report["meter"]["requests"] == len(fake_api.requests)
    assert result.report["meter"]["tokens"]["output"] == fake_api.all_usage_total.output_tokens
    for path in Path(result.report["run_dir"]).rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    assert secret not in result.stdout + result.stderr


def test_an_api_key_and_a_subscription_token_need_a_choice(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    env = without_key(run_env, ANTHROPIC_API_KEY=KEY, CLAUDE_CODE_OAUTH_TOKEN=OAUTH)
    refused = run_cli(["--task", "t", "--branch", "both"], cwd=repo, env=env)
    assert refused.code == 2
    assert "several credentials for claude are set" in refused.stderr
    assert "--auth api-key | oauth-token | auth-token" in refused.stderr
    assert git(repo, "branch", "--list", "both") == ""
    assert fake_api.main_requests == []

    fake_api.add_turns(Turn.text("done"))
    chosen = run_cli(
        ["--task", "t", "--branch", "both", "--auth", "oauth-token"], cwd=repo, env=env
    )
    assert chosen.code == 0, chosen.stderr
    for request in fake_api.main_requests:
        assert OAUTH in request.headers.get("authorization", "")
        assert "x-api-key" not in request.headers  # the key never reached Claude Code
