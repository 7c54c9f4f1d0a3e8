"""The pure parts of writing an environment quickly: a command's output made readable (colour
codes out, redraws resolved, a tool's noise left out), Docker's step transcript told apart from
a command's output and each setup command timed, setup_inputs patterns, --try-environment's
options and exit codes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from agent_worker_app.errors import UsageError
from agent_worker_app.images import setup_inputs
from agent_worker_app.images.build_output import StepWatch, is_transcript
from agent_worker_app.output_text import (
    OUTPUT_MARK,
    clean_line,
    clean_message,
    strip_ansi,
    telling_lines,
)
from agent_worker_app.report import RunReport
from agent_worker_app.try_environment import exit_code, try_options

# npm 9 as Docker's classic builder streams it: stderr wrapped in red, the reason mid-way
NPM = [
    "\x1b[91mnpm ERR! code ETARGET\n\x1b[0m",
    "\x1b[91mnpm ERR! notarget No matching version found for top-sites@1.1.89.\n\x1b[0m",
    "\x1b[91mnpm ERR! notarget In most cases you or one of your dependencies are requesting\n",
    "npm ERR! notarget a package version that doesn't exist.\n\x1b[0m",
    "\x1b[91m\nnpm ERR! A complete log of this run can be found in:\n",
    "npm ERR!     /home/agent/.npm/_logs/2026-12-07T17_00_00_000Z-debug-0.log\n\x1b[0m",
]
PIP = [
    "  \u00d7 Getting requirements to build editable did not run successfully.",
    "  \u2502 exit code: 1",
    "  \u2570\u2500> [3 lines of output]",
    "      FileNotFoundError: [Errno 2] No such file or directory: 'README.rst'",
    "      [end of output]",
    "  ",
    "  note: This error originates from a subprocess, and is likely not a problem with pip.",
    "\x1b[1;31merror\x1b[0m: \x1b[1msubprocess-exited-with-error\x1b[0m",
    "",
    "\u00d7 Getting requirements to build editable did not run successfully.",
    "\u2502 exit code: 1",
    "\u2570\u2500> See above for output.",
    "",
    "note: This error originates from a subprocess, and is likely not a problem with pip.",
]


def test_escape_sequences_are_taken_out_not_escaped() -> None:
    assert strip_ansi("\x1b[91mred\x1b[0m \x1b[1;31mbold\x1b[m") == "red bold"
    assert strip_ansi("\x1b]0;title\x07text\x1b]8;;http://x\x1b\\link") == "textlink"
    assert strip_ansi("\x9b2Jclear \x1b(Bcharset \x1b7saved") == "clear charset saved"
    assert strip_ansi("plain [91m text") == "plain [91m text"  # no ESC: nothing taken
    # what is left that is not an escape sequence stays, for escape_text to show
    assert clean_message("a\x1b[31m\x07b\r\nc") == "a\x07b\nc"


def test_a_redrawn_line_is_what_the_terminal_ends_up_showing() -> None:
    assert clean_line("progress 10%\rprogress 50%\rdone   \r\n") == "done"
    assert clean_line("\x1b[2K\rDownloading x\r") == "Downloading x"
    assert clean_line("\r\r") == ""


def test_npm_s_reason_is_among_the_telling_lines() -> None:
    said = telling_lines(NPM)
    assert said[0] == "npm ERR! notarget No matching version found for top-sites@1.1.89."
    assert not any("\x1b" in line or "[91m" in line or "complete log" in line for line in said)
    assert not any(line.endswith(".log") for line in said)


def test_pip_s_reason_is_among_the_telling_lines() -> None:
    said = telling_lines(PIP)
    assert "FileNotFoundError: [Errno 2] No such file or directory: 'README.rst'" in said
    assert not any("See above" in line or "originates" in line for line in said)
    assert "error: subprocess-exited-with-error" in said


def test_docker_s_transcript_is_told_apart_from_a_command_s_output() -> None:
    transcript = [
        "Step 5/15 : RUN npm ci",
        " ---> Running in 0123456789ab",
        "Removing intermediate container 0123456789ab",
        " ---> 4567890abcde",
        " ---> Using cache",
        "Successfully built 4567890abcde",
        "Successfully tagged agent-worker-env:0123",
    ]
    assert all(is_transcript(line) for line in transcript)
    for output in ("added 12 packages", "Step into it", "--> not docker", "npm ERR! x"):
        assert not is_transcript(output)


def test_each_setup_command_gets_one_timed_line_and_the_transcript_none() -> None:
    lines: list[str] = []
    ticks = iter([0.0, 1.0, 3.5, 4.0, 18.2])
    watch = StepWatch(
        "environment", ("true", "npm ci\n--quiet"), (5, 6), lines.append, clock=lambda: next(ticks)
    )
    for line in [
        "Step 4/6 : WORKDIR /workspace\n",
        " ---> Running in aaa\n",
        "Step 5/6 : RUN true\n",
        " ---> Using cache\n",
        "Step 6/6 : RUN npm ci\n",
        " ---> Running in bbb\n",
        "\x1b[91mnpm warn deprecated x\n\x1b[0m",
        "added 3 packages\n",
        "Removing intermediate container bbb\n",
        "Successfully built ccc\n",
    ]:
        watch.feed(line)
    watch.finish()
    assert lines == [
        "image: environment: setup 1/2 `true` 2.5 s (cached)",
        f"{OUTPUT_MARK}npm warn deprecated x",
        f"{OUTPUT_MARK}added 3 packages",
        "image: environment: setup 2/2 `npm ci …` 14.2 s",
    ]
    assert watch.timings == [("true", 2.5), ("npm ci\n--quiet", pytest.approx(14.2))]


def test_a_failing_step_keeps_its_own_output_only() -> None:
    watch = StepWatch("environment", ("a", "b"), (3, 4), lambda line: None)
    for line in ["Step 3/4 : RUN a", "from a", "Step 4/4 : RUN b", " ---> Running in x", "from b"]:
        watch.feed(line)
    assert watch.setup_index == 1
    assert list(watch.output) == ["from b"]


@pytest.mark.parametrize(
    ("pattern", "path", "matched"),
    [
        ("src/*/__init__.py", "src/pkg/__init__.py", True),
        ("src/*/__init__.py", "src/pkg/sub/__init__.py", False),
        ("src/**/__init__.py", "src/pkg/sub/__init__.py", True),
        ("**/package.json", "package.json", True),
        ("**/package.json", "a/b/package.json", True),
        ("README*", "README.rst", True),
        ("README*", "docs/README.md", False),
        ("LICENSE?", "LICENSE", False),
        ("req[s-]*.txt", "reqs.txt", True),
        ("req[!s]*.txt", "reqs.txt", False),
        ("pyproject.toml", "pyproject.toml", True),
        ("a.b", "axb", False),
    ],
)
def test_setup_inputs_patterns(pattern: str, path: str, matched: bool) -> None:
    assert setup_inputs.matches(pattern, path) is matched


def test_setup_inputs_select_keeps_order_and_refuses_a_pattern_matching_nothing() -> None:
    files = ["README.rst", "src/pkg/__init__.py", "src/pkg/core.py", "pyproject.toml", "LICENSE"]
    chosen = setup_inputs.select(
        ["pyproject.toml", "src/*/__init__.py", "README*", "LICENSE*", "pyproject.toml"],
        files,
        source="env.toml",
        commit="0123456789abcdef",
    )
    assert chosen == ["pyproject.toml", "src/pkg/__init__.py", "README.rst", "LICENSE"]
    with pytest.raises(UsageError, match=r"the pattern docs/\*\.md matches no file"):
        setup_inputs.select(["docs/*.md"], files, source="env.toml", commit="0" * 40)


def _options(**given: Any) -> dict[str, Any]:
    keys = ("task", "task_file", "branch", "push", "agent_arg", "api_key", "jobs", "project")
    return dict.fromkeys(keys) | {"agent_arg": (), "task": ()} | given


def test_try_options_run_the_no_op_command_agent_on_a_branch_of_its_own() -> None:
    one = try_options(_options(project=("/p",)), now=datetime(2026, 12, 7, 17, 0, 0))
    assert one["agent_type"] == "command"
    assert one["task"] == ("true",)
    assert one["branch"].startswith("agent-worker-try-20261207-170000-")
    assert one["branch"] != try_options(_options())["branch"]


@pytest.mark.parametrize(
    ("given", "flag"),
    [
        ({"task": ("x",)}, "--task"),
        ({"branch": "b"}, "--branch"),
        ({"push": ""}, "--push"),
        ({"api_key": "k"}, "--api-key"),
        ({"agent_type": "claude"}, "--agent-type"),
    ],
)
def test_try_options_refuse_what_asks_for_an_agent(given: dict[str, Any], flag: str) -> None:
    with pytest.raises(UsageError, match=f"leave out {flag}$"):
        try_options(_options(**given))
    with pytest.raises(UsageError, match="give --project once"):
        try_options(_options(project=("/a", "/b")))


def _report(code: int, error: str | None, status: str = "error") -> RunReport:
    from agent_worker_app.report import AgentInfo

    return RunReport(
        run_id="r",
        status=status,
        exit_code=code,
        branch=None,
        base_commit=None,
        head_commit=None,
        duration_s=1.0,
        agent=AgentInfo(type="command"),
        error=error,
    )


def test_try_exit_codes() -> None:
    assert exit_code(_report(0, None, "success")) == 0
    assert exit_code(_report(1, "the check 'x' failed (exit status 1)", "failed")) == 1
    failed = 'maintenance command 2 of 2 failed (exit status 3): "x" (the agent did not start)'
    assert exit_code(_report(3, failed)) == 1
    assert exit_code(_report(3, "cannot check out the task branch in the container: x")) == 3


def test_plain_progress_shows_the_build_s_own_lines_and_not_the_commands_output() -> None:
    import io

    from agent_worker_app.console import Env, Progress, Redactor

    stderr = io.StringIO()
    progress = Progress(Env(stdout=io.StringIO(), stderr=stderr, plain=True), Redactor())
    progress.build_line("image: environment layer: building (agent-worker-env:0123)")
    progress.build_line(f"{OUTPUT_MARK}Collecting pytest==8.3.4")
    progress.build_line("image: environment: setup 1/1 `pip install` 3.2 s")
    progress.build_line("The push refers to repository [10.0.0.2:5000/agent-worker]")
    progress.close()
    shown = [line.split("]", 1)[1].strip() for line in stderr.getvalue().splitlines()]
    assert shown == [
        "image: environment layer: building (agent-worker-env:0123)",
        "image: environment: setup 1/1 `pip install` 3.2 s",
        "The push refers to repository [10.0.0.2:5000/agent-worker]",  # a push's: stays
    ]


@pytest.mark.parametrize(
    ("present", "kind", "has"),
    [
        (
            {"pyproject.toml", "package.json"},
            "Python",
            '"/workspace/.venv/bin/pip install -e . pytest"',
        ),
        ({"setup.py"}, "Python", 'setup_inputs = ["setup.py"]'),
        ({"requirements.txt"}, "Python", "pip install -r requirements.txt"),
        ({"package.json", "package-lock.json"}, "Node", 'setup = ["npm ci --no-audit --no-fund"]'),
        ({"package.json"}, "Node", 'setup = ["npm install --no-audit --no-fund"]'),
        ({"go.mod", "go.sum"}, "Go", 'setup_inputs = ["go.mod", "go.sum"]'),
        ({"Cargo.toml"}, "Rust", "cargo fetch"),
    ],
)
def test_a_plain_project_gets_a_suggested_environment_file_that_parses(
    present: set[str], kind: str, has: str
) -> None:
    from agent_worker_app import environment, environment_hint

    hint = environment_hint.detect(frozenset(present))
    assert hint is not None
    assert hint.kind == kind
    assert has in hint.text
    parsed = environment.parse_toml(hint.text, "suggested")  # valid TOML, known keys only
    assert parsed.setup
    assert hint.marker in environment_hint.note(hint)
    assert environment_hint.detect(frozenset({"README.md", "Makefile"})) is None


def test_a_line_cut_into_pieces_by_the_engine_is_put_together() -> None:
    """Docker sends each write of a command as a piece of its own, stderr's in red: npm's
    reason came as "npm", then " ERR! notarget ...", each wrapped in colour codes."""
    lines: list[str] = []
    watch = StepWatch("environment", ("npm install",), (3,), lines.append)
    for piece in [
        "Step 3/3 : RUN npm install\n",
        " ---> Running in 1fdb288abc09\n",
        "\x1b[91mnpm\x1b[0m",
        "\x1b[91m ERR! notarget No matching version found for left-pad@99.99.99.\n"
        "npm ERR! notarget\x1b[0m",
        "\x1b[91m a package version that doesn't exist.\n\x1b[0m",
        "\x1b[91mhalf a line\x1b[0m",
        "Removing intermediate container 1fdb288abc09\n",
    ]:
        watch.feed_text(piece)
    watch.flush()
    assert list(watch.output) == [
        "npm ERR! notarget No matching version found for left-pad@99.99.99.",
        "npm ERR! notarget a package version that doesn't exist.",
        "half a line",
    ]


def test_the_readme_s_environment_files_parse() -> None:
    """Every environment file the README shows is one agent-worker reads (its keys, its types,
    its setup_inputs patterns)."""
    import re
    from pathlib import Path

    from agent_worker_app import environment

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## The project's environment\n")[1].split("\n## ")[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) >= 7
    for block in blocks:
        parsed = environment.parse_toml(block, "README")
        assert parsed.setup or parsed.check or parsed.maintenance, block
    patterns = [p for b in blocks for p in environment.parse_toml(b, "README").setup_inputs]
    assert "src/*/__init__.py" in patterns
