"""A whole run on a real terminal (util-linux `script` gives it a pty): names the agent chose are
shown as data, never as rich markup or terminal control, and the JSON report keeps them exactly."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, git, require, run_cli
from fake_anthropic import Turn, bash, write

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
# Names the agent leaves behind, as git stores them (str, with surrogateescape for the byte that
# is not UTF-8), and as the terminal report must show them.
NAMES = {
    "app/[slug]/page.tsx": "app/[slug]/page.tsx",
    "docs/[/x].md": "docs/[/x].md",
    "[bold]loud[/bold].md": "[bold]loud[/bold].md",
    "evil\nStatus   success": '"evil\\nStatus   success"',
    "esc\x1b]2;pwned\x07\x1b[2J.txt": '"esc\\033]2;pwned\\a\\033[2J.txt"',
    "bad\udcff.txt": '"bad\\377.txt"',
}


def run_on_a_terminal(args: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[int, bytes]:
    """./agent_worker.py with stdout and stderr on a pty, as at a user's terminal: (exit code,
    everything the terminal received)."""
    if shutil.which("script") is None:
        require("util-linux `script` is missing: it gives the run a terminal")
    empty_env = cwd.parent / "empty.env"
    empty_env.touch()
    argv = [sys.executable, str(ROOT / "agent_worker.py"), "--env-file", str(empty_env), *args]
    done = subprocess.run(
        ["script", "-qec", shlex.join(argv), "/dev/null"],
        cwd=cwd,
        env=env | {"COLUMNS": "160", "TERM": "xterm-256color"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout


def script_odd_names(fake_api: Any) -> None:
    """The agent's turns: each name of NAMES, by the Write tool or by bash."""
    fake_api.add_turns(
        Turn.tool_use(write("/workspace/app/[slug]/page.tsx", "export default 1\n")),
        Turn.tool_use(write("/workspace/docs/[/x].md", "# x\n")),
        Turn.tool_use(write("/workspace/[bold]loud[/bold].md", "loud\n")),
        Turn.tool_use(bash("printf 'x\\n' > \"$(printf 'evil\\nStatus   success')\"")),
        Turn.tool_use(write("/workspace/esc\x1b]2;pwned\x07\x1b[2J.txt", "y\n")),
        Turn.tool_use(bash("printf 'z\\n' > \"$(printf 'bad\\377.txt')\"")),
        Turn.text("Wrote the files."),
    )


def test_names_are_data_on_a_real_terminal(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    script_odd_names(fake_api)
    report_file = tmp_path / "report.json"
    code, shown = run_on_a_terminal(
        ["--task", "Write odd names", "--branch", "odd-names", "--report-file", str(report_file)],
        cwd=repo,
        env=run_env(),
    )
    text = shown.decode("utf-8", "replace")
    assert code == 0, text

    report = json.loads(report_file.read_text(encoding="utf-8"))
    assert report["status"] == "success"
    assert sorted(f["path"] for f in report["changes"]["files"]) == sorted(NAMES)
    assert report["changes"]["files_changed"] == len(NAMES)
    assert git(repo, "show", "odd-names:docs/[/x].md") == "# x\n"

    # nothing the agent named reached the terminal as control: no title, no cleared screen, no
    # bell, no byte that is not UTF-8
    for raw in (b"\x1b]2;", b"\x1b[2J", b"\x07", b"\xff"):
        assert raw not in shown, raw
    screen = ANSI.sub(b"", shown).decode("utf-8")
    assert "\x1b" not in screen
    lines = re.split(r"[\r\n]+", screen)
    # the names in the report panel, literally: no markup read, every control escaped
    for name in NAMES.values():
        assert any(f" A {name} " in line for line in lines), (name, screen)
    # the live progress lines too
    assert any("Write app/[slug]/page.tsx" in line for line in lines), screen
    assert any("Write esc\\033]2;pwned\\a\\033[2J.txt" in line for line in lines), screen
    # no name forged a row of its own; the one Status is on the Branch row
    assert not [line for line in lines if re.match(r"[\s\u2502]*Status\b", line)], screen
    assert sum("Status" in line for line in lines if "success (exit 0)" in line) == 1
    assert any(
        re.match(r"\u2502 Branch\s+odd-names\s+Status\s+success \(exit 0\)", line) for line in lines
    )


def test_names_are_data_in_the_plain_report(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    script_odd_names(fake_api)
    result = run_cli(["--task", "Write odd names"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert sorted(f["path"] for f in result.report["changes"]["files"]) == sorted(NAMES)
    for stream in (result.stdout, result.stderr):
        for raw in ("\x1b", "\x07", "\udcff", "\ufffd"):
            assert raw not in stream, (raw, stream)
    lines = result.stdout.splitlines()
    assert lines[0] == "AGENT EXECUTION REPORT"
    labels = [line[:10].strip() for line in lines[1:] if not line.startswith("  ")]
    assert labels == ["Branch", "Duration", "Tokens", "Cost", "Metered", "Changes", "Run data"]
    listed = [line for line in lines if line.startswith("  A ")]
    assert len(listed) == len(NAMES)  # every file, one line each
    for name in NAMES.values():
        assert any(line.startswith(f"  A {name} ") for line in listed), (name, result.stdout)
    assert "Write esc\\033]2;pwned\\a\\033[2J.txt" in result.stderr
