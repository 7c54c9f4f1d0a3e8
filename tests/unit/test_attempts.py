"""attempts.winner: the check first, then the smaller change, then the lower cost."""

from __future__ import annotations

from dataclasses import replace

from test_report import make_report

from agent_worker_app import attempts
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
