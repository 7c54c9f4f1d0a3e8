"""The real Claude Code binary in the built image answers the suite's fake API."""

from __future__ import annotations

import json
from typing import Any

from conftest import TEST_KEY
from fake_anthropic import Turn


def test_claude_in_the_image_answers_one_turn_as_the_agent_user(
    docker_client: Any, agent_image: str, fake_api: Any, gateway: str
) -> None:
    fake_api.add_turns(Turn.text("Hello from the fake."))
    output = docker_client.containers.run(
        agent_image,
        [
            "bash",
            "-c",
            "id -un; claude -p 'Say hello' --output-format stream-json --verbose "
            "--dangerously-skip-permissions",
        ],
        user="agent",
        environment={"ANTHROPIC_BASE_URL": fake_api.url(gateway), "ANTHROPIC_API_KEY": TEST_KEY},
        remove=True,
    ).decode()
    lines = output.splitlines()
    assert lines[0] == "agent"
    events = [json.loads(line) for line in lines[1:] if line.startswith("{")]
    result = next(e for e in events if e["type"] == "result")
    assert result["is_error"] is False
    assert result["result"] == "Hello from the fake."
    served = fake_api.main_usage_total
    usage = result["usage"]
    assert usage["input_tokens"] == served.input_tokens
    assert usage["output_tokens"] == served.output_tokens
    assert usage["cache_read_input_tokens"] == served.cache_read_input_tokens
    assert usage["cache_creation_input_tokens"] == served.cache_creation_input_tokens
    assert fake_api.saw_api_key(TEST_KEY)
