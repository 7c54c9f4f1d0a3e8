"""--attempts N: N attempts at the same task on the same base, each on its own branch
(NAME-a1, NAME-a2, ...), run as a batch under --jobs; then a winner, chosen by the check.

The winner: a succeeded attempt (with a check command, success means the check passed), then
the smaller change (lines added and removed), then the lower cost, then the earlier attempt.
No attempt succeeded: no winner, every branch kept. --keep winner deletes the other attempts'
branches (each only while it still points where its run left it; their run data stays);
--pr opens one pull request, for the winner, listing the others. The set exits 0 when an
attempt succeeded. --max-cost bounds the whole set: each attempt gets an equal share of it,
held as a single run's limit is (the gate, Claude Code's own budget), so all of them together
never spend more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_worker_app import agents, batch_plan, git_manager, pull_request
from agent_worker_app.batch import Run
from agent_worker_app.errors import UsageError, worst_exit
from agent_worker_app.report import Attempt, RunReport, render_json

if TYPE_CHECKING:
    from agent_worker_app.config import Config
    from agent_worker_app.console import ProgressSink, Redactor

KEEP = ("all", "winner")
MAX_ATTEMPTS = 20


def count(options: Mapping[str, Any]) -> int:
    """--attempts (1 when not given), and --keep checked with it (UsageError)."""
    given = options.get("attempts")
    keep = options.get("keep")
    if keep is not None and keep not in KEEP:
        raise UsageError(f"--keep must be one of {', '.join(KEEP)}, got {keep!r}")
    if given is None:
        if keep is not None:
            raise UsageError("--keep goes with --attempts N")
        return 1
    try:
        n = int(str(given).strip())
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_ATTEMPTS:
        raise UsageError(
            f"--attempts must be a whole number from 1 to {MAX_ATTEMPTS}, got {given!r}"
        )
    if n > 1 and batch_plan.is_batch(options):
        raise UsageError(
            "--attempts runs one task on one project several times: give a single --task, "
            "without --tasks-file or several --project"
        )
    if n > 1 and options.get("continue_from"):
        raise UsageError("--attempts and --continue: a continued branch takes one run at a time")
    return n


def plan(
    options: Mapping[str, Any], n: int, load_config: Callable[[Mapping[str, Any]], Config]
) -> list[Run]:
    """The attempts' runs: the task's configuration, each on branch NAME-aK, with an equal
    share of --max-cost."""
    cfg = load_config(batch_plan.single(options))
    share = cfg.max_cost_usd / n if cfg.max_cost_usd is not None else None
    cfg = replace(cfg, max_cost_usd=share, agent=replace(cfg.agent, max_cost_usd=share))
    runs = []
    for k in range(1, n + 1):
        branch = f"{cfg.branch}-a{k}"
        git_manager.check_branch_name(cfg.project, branch)
        entry = batch_plan.Entry(cfg.task, f"attempt {k}")
        planned = batch_plan.Planned(k, entry, None, branch, cfg.branch_given)
        one = replace(cfg, branch=branch)
        runs.append(Run(planned, one, agents.get(one.agent_type, one.agent)))
    return runs


def budget(runs: Sequence[Run]) -> float | None:
    """The set's --max-cost: its attempts' shares together (None: no limit)."""
    shares = [run.cfg.max_cost_usd for run in runs]
    return sum(s for s in shares if s is not None) if all(s is not None for s in shares) else None


def keeps_winner(options: Mapping[str, Any]) -> bool:
    return options.get("keep") == "winner"


def hold_pull_request(runs: Sequence[Run]) -> pull_request.Target | None:
    """--pr's target, taken off the attempts (none opens its own: the winner's comes after)."""
    target = next((run.pr for run in runs if run.pr is not None), None)
    for run in runs:
        run.pr = None
    return target


def winner(reports: Sequence[RunReport]) -> int | None:
    """The index of the winning report, or None when no attempt succeeded."""
    ranked = [
        (r.lines_added + r.lines_removed, math.inf if r.cost_usd is None else r.cost_usd, i)
        for i, r in enumerate(reports)
        if r.status == "success" and (r.check is None or r.check.passed)
    ]
    return min(ranked)[2] if ranked else None


def conclude(
    runs: Sequence[Run],
    *,
    keep_winner: bool,
    target: pull_request.Target | None,
    progress: ProgressSink,
    redactor: Redactor,
    environ: Mapping[str, str],
) -> None:
    """The winner marked in every attempt's report; the others' branches deleted with --keep
    winner; the winner's pull request with --pr; each report written again."""
    reports = [run.report for run in runs if run.report is not None]
    assert len(reports) == len(runs), "every run ends with a report"
    won = winner(reports)
    if won is None:
        progress.warn(f"no attempt of {len(runs)} succeeded: no winner, every branch kept")
    else:
        progress.note(f"attempt {won + 1} of {len(runs)} won: branch {reports[won].branch}")
    for i, (run, report) in enumerate(zip(runs, reports, strict=True)):
        kept = report.branch is not None
        if keep_winner and won is not None and i != won and report.branch is not None:
            kept = not _delete(run, report, progress)
        report.attempt = Attempt(i + 1, len(runs), i == won, kept)
        _write(report)
    best = runs[won] if won is not None else None
    if target is not None and best is not None and best.ws is not None:
        others = [r for r in reports if r is not best.report]
        best.report = pull_request.finish(
            target,
            reports[won or 0],
            best.ws,
            progress=progress,
            redactor=redactor,
            environ=environ,
            push_ci=best.cfg.push_ci,
            others=others,
        )


def _delete(run: Run, report: RunReport, progress: ProgressSink) -> bool:
    """The attempt's branch deleted, if it still points where its run left it."""
    assert run.ws is not None
    assert report.branch is not None
    where = report.head_commit or report.base_commit or run.ws.base_commit
    if git_manager.delete_branch(replace(run.ws, branch=report.branch), at=where):
        progress.note(f"deleted branch {report.branch} (attempt {run.number}; run {report.run_id})")
        return True
    progress.warn(f"kept branch {report.branch}: it moved since its attempt left it")
    return False


def _write(report: RunReport) -> None:
    if report.run_dir:
        (Path(report.run_dir) / "report.json").write_text(render_json(report), encoding="utf-8")


def exit_code(reports: Sequence[RunReport]) -> int:
    """0 when an attempt succeeded; else the worst attempt's."""
    if winner(reports) is not None:
        return 0
    return worst_exit([r.exit_code for r in reports])
