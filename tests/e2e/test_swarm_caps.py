"""--max-result-size on a swarm, whose result comes back framed in the service's log: the host
stops reading the frames at the cap (issue 19, point 8). The same attack as test_caps.py's, on
the tests' swarm, next to the same run without it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from test_swarm import cluster, command_env, swarm_args  # noqa: F401 (the swarm's fixtures)

from conftest import git, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def test_an_oversized_result_on_the_swarm_fails_clearly_and_keeps_what_it_can(
    repo: Path,
    command_env: Callable[..., dict[str, str]],  # noqa: F811 (the swarm's, imported above)
    swarm_args: list[str],  # noqa: F811
) -> None:
    def run(task: str, branch: str) -> tuple[int, dict[str, object], str]:
        options = ["--agent-type", "command", "--task", task, "--branch", branch]
        result = run_cli(
            [*swarm_args, *options, "--max-result-size", "1m"],
            cwd=repo,
            env=command_env(),
            timeout=900,
        )
        assert result.report is not None, result.stderr
        return result.code, result.report, result.stderr

    code, report, stderr = run(
        "echo working; head -c 3000000 /dev/urandom > big.bin && git add big.bin", "too-big"
    )
    assert code == 1, stderr
    assert "--max-result-size (1m)" in str(report["error"])
    assert git(repo, "rev-parse", "too-big") == git(repo, "rev-parse", "main")
    out = Path(str(report["run_dir"])) / "out"
    assert not (out / "result.bundle").exists()
    assert "working" in (out / "agent-tail.jsonl").read_text()
    # without the attack
    code, report, stderr = run("head -c 100000 /dev/urandom > small.bin", "small-enough")
    assert code == 0, stderr
    assert git(repo, "cat-file", "-s", "small-enough:small.bin").strip() == "100000"
