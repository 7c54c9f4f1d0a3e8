"""attempts.winner: the check first, then the smaller change, then the lower cost."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from test_report import make_report

from agent_worker_app import attempts, config
from agent_worker_app.report import FileChange, RunReport
from agent_worker_app.sandbox_report import CheckOutcome


def attempt(
    status: str = "success", lines: int = 1, cost: float | None = 0.1, check: bool = True
) -> RunReport:
    report = make_report()
    return replace(
        report,
        status=status,
        files=[FileChange("a.py", "modified", lines, 0)],
        cost_usd=cost,
        check=CheckOutcome("make test", ran=True, exit_code=0 if check else 1),
        warnings=[],
    )


def test_the_check_then_the_change_then_the_cost_choose() -> None:
    assert attempts.winner([attempt("failed"), attempt(), attempt(lines=0)]) == 2
    assert attempts.winner([attempt(check=False), attempt(lines=50)]) == 1
    assert attempts.winner([attempt(cost=0.3), attempt(cost=0.2), attempt(cost=None)]) == 1
    assert attempts.winner([attempt(), attempt()]) == 0  # a tie: the earlier
    assert attempts.winner([attempt("failed"), attempt("timeout")]) is None


def test_an_attempt_that_succeeded_makes_the_set_exit_0() -> None:
    failed = replace(attempt("failed"), exit_code=1)
    timed_out = replace(attempt("timeout"), exit_code=124)
    assert attempts.exit_code([failed, attempt()]) == 0
    assert attempts.exit_code([failed, timed_out]) == 124


def test_each_attempt_gets_its_branch_and_a_share_of_max_cost(tmp_path: Path) -> None:
    from conftest import make_repo

    project = make_repo(tmp_path / "p")
    cfg = config.load(
        {"task": "t", "branch": "try", "max_cost": "0.9", "agent_type": "command"},
        environ={},
        cwd=project,
    )
    runs = attempts.plan({"task": "t"}, 3, lambda options: cfg)
    assert [run.cfg.branch for run in runs] == ["try-a1", "try-a2", "try-a3"]
    assert [run.number for run in runs] == [1, 2, 3]
    assert [run.cfg.max_cost_usd for run in runs] == pytest.approx([0.3] * 3)
    assert [run.cfg.agent.max_cost_usd for run in runs] == pytest.approx([0.3] * 3)
    assert attempts.budget(runs) == pytest.approx(0.9)
