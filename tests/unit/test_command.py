"""agents/command_agent.py: the task as a bash script, its output as throttled progress."""

from __future__ import annotations

import subprocess

from agent_worker_app.agents.base_agent import AgentSettings, ProgressEvent
from agent_worker_app.agents.command_agent import CommandAgent, CommandParser


def test_the_task_runs_as_one_bash_script_with_the_agent_args() -> None:
    argv = CommandAgent(AgentSettings(args=("one", "two words"))).command()
    task = 'echo "[$1] [$2]"\nprintf "%s\\n" "$(cat)"'  # stdin of the script is at EOF
    done = subprocess.run(argv, input=task, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[one] [two words]\n\n"


def test_the_scripts_exit_status_is_the_commands() -> None:
    argv = CommandAgent(AgentSettings()).command()
    done = subprocess.run(argv, input=b"false || exit 7", capture_output=True, check=False)
    assert done.returncode == 7


def test_it_needs_nothing_and_spends_nothing() -> None:
    agent = CommandAgent(AgentSettings())
    assert CommandAgent.credentials == ()
    assert not CommandAgent.metered
    assert agent.api_hosts() == []
    assert agent.secret_env() == {}
    assert agent.image_layer().stages == ""


def test_a_flood_of_output_is_shown_in_samples_and_kept_whole() -> None:
    parser = CommandParser()
    events = [parser.feed(f"line {n}\n") for n in range(10_000)]
    shown = [e for e in events if e is not None]
    assert shown[0] == ProgressEvent("text", "line 0")
    assert len(shown) < 100  # a few per 50 ms, not ten thousand
    result = parser.result()
    assert result.found
    assert result.result_text == "line 9999"
    assert parser.feed("   \n") is None
