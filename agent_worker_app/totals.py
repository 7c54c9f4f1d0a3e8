"""The figures of several runs (a batch): sums over their reports, the batch's exit code and
wall-clock duration. One definition for the batch's summary and --json (batch_view.py) and for a
CI job's outputs and summary (ci_outputs.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent_worker_app.report import RunReport


@dataclass(frozen=True)
class Totals:
    """tokens_total and cost_usd are None when no run reported any."""

    tasks: int
    succeeded: int
    skipped: int
    exit_code: int
    duration_s: float
    tokens_total: int | None
    cost_usd: float | None
    lines_added: int
    lines_removed: int
    files_changed: int

    @classmethod
    def of(
        cls,
        reports: Sequence[RunReport],
        *,
        exit_code: int | None = None,
        duration_s: float | None = None,
    ) -> Totals:
        """The totals of reports. exit_code: the batch's (default: the first run's that is not
        0, else 0); duration_s: its wall clock (default: the longest run, as if they ran side
        by side)."""
        tokens = [r.tokens.total for r in reports if r.metered and r.tokens.total is not None]
        costs = [r.cost_usd for r in reports if r.cost_usd is not None]
        if exit_code is None:
            exit_code = next((r.exit_code for r in reports if r.exit_code != 0), 0)
        if duration_s is None:
            duration_s = max((r.duration_s for r in reports), default=0.0)
        return cls(
            tasks=len(reports),
            succeeded=sum(r.status == "success" for r in reports),
            skipped=sum(r.status == "skipped" for r in reports),
            exit_code=exit_code,
            duration_s=duration_s,
            tokens_total=sum(tokens) if tokens else None,
            cost_usd=sum(costs) if costs else None,
            lines_added=sum(r.lines_added for r in reports),
            lines_removed=sum(r.lines_removed for r in reports),
            files_changed=sum(len(r.files) for r in reports),
        )

    @property
    def status(self) -> str:
        return "success" if self.succeeded == self.tasks else "failed"

    def to_json(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "succeeded": self.succeeded,
            "failed": self.tasks - self.succeeded - self.skipped,
            "skipped": self.skipped,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
            "tokens_total": self.tokens_total,
            "cost_usd": self.cost_usd,
            "lines_added": self.lines_added,
            "lines_removed": self.lines_removed,
            "files_changed": self.files_changed,
        }
