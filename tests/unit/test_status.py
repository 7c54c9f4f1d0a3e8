"""report.decide_status: one status, exit code, message and warnings for every ending."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from agent_worker_app.agents.base_agent import AgentResult
from agent_worker_app.engines.base import ExitInfo
from agent_worker_app.errors import (
    AgentWorkerError,
    DockerError,
    GitError,
    ImageBuildError,
    Interrupted,
    PreconditionError,
    UsageError,
)
from agent_worker_app.report import Outcome, decide_status
from agent_worker_app.sandbox_report import CheckOutcome

OK = AgentResult(found=True, is_error=False, subtype="success", turns=3)
AGENT_ERROR = "Claude Code reported an error: API Error: 500 Internal server error"
FAILED = AgentResult(found=True, is_error=True, subtype="success", error=AGENT_ERROR)
NO_RESULT = AgentResult(found=False, is_error=True, error="Claude Code ended without a result")
EXIT_0 = ExitInfo(0, False, None)
EXIT_1 = ExitInfo(1, False, None)
OOM_137 = ExitInfo(137, True, None)
OOM_0 = ExitInfo(0, True, None)
IMPORT = "git fetch failed: rejected (non-fast-forward); the agent's commits are kept in x"
TAIL = ["line 1", "line 2", "line 3", "line 4"]
EXIT_3 = ExitInfo(status_code=3, oom_killed=False, error=None)


def started(**kw: object) -> Outcome:
    return Outcome(started=True, head="b" * 40, **kw)  # type: ignore[arg-type]


@dataclass
class Case:
    outcome: Outcome
    result: AgentResult | None
    status: str
    code: int
    message: str | None  # expected to be in the message; None: no message at all
    warnings: list[str] = field(default_factory=list)  # each expected in one warning
    memory: str = "4g"


PASSED = CheckOutcome("pytest -q", ran=True, exit_code=0, duration_s=1.5)
FAILED_CHECK = CheckOutcome(
    "pytest -q", ran=True, exit_code=1, duration_s=2.0, output_tail=("E  assert 1 == 2", "1 failed")
)

CASES = {
    "success": Case(started(exit=EXIT_0), OK, "success", 0, None),
    "success, check passed": Case(started(exit=EXIT_0, check=PASSED), OK, "success", 0, None),
    "check failed": Case(
        started(exit=EXIT_0, check=FAILED_CHECK, agent_tail=TAIL),
        OK,
        "failed",
        1,
        "the check 'pytest -q' failed (exit status 1); its last output: E  assert 1 == 2 | "
        "1 failed; the agent's work is kept on the branch",
    ),
    "check never ran": Case(
        started(exit=EXIT_0, check=CheckOutcome("make test")),
        OK,
        "failed",
        1,
        "the check 'make test' did not run",
    ),
    "check stopped": Case(
        started(
            exit=EXIT_0,
            check=CheckOutcome("make test", ran=True, stopped="the task's deadline passed"),
        ),
        OK,
        "failed",
        1,
        "the check 'make test' was stopped (the task's deadline passed)",
    ),
    "agent failed, check failed too: the agent's failure is the message": Case(
        started(exit=EXIT_1, check=FAILED_CHECK), FAILED, "failed", 1, AGENT_ERROR
    ),
    "timed out with a check": Case(
        started(timed_out=True, check=CheckOutcome("make test")), OK, "timeout", 124, "--timeout"
    ),
    "success, no exit info": Case(started(), OK, "success", 0, None),
    "agent error": Case(started(exit=EXIT_1), FAILED, "failed", 1, AGENT_ERROR),
    "agent error, exit 0 (SIGINT)": Case(started(exit=EXIT_0), FAILED, "failed", 1, AGENT_ERROR),
    "agent error without text": Case(
        started(exit=EXIT_1),
        AgentResult(found=True, is_error=True),
        "failed",
        1,
        "the agent reported an error",
    ),
    "no result event": Case(
        started(exit=ExitInfo(143, False, None)),
        NO_RESULT,
        "failed",
        1,
        "Claude Code ended without a result",
    ),
    "empty output": Case(started(exit=EXIT_1), AgentResult(), "failed", 1, "reported an error"),
    "nonzero exit despite a success": Case(
        started(exit=ExitInfo(2, False, None)), OK, "failed", 1, "status 2"
    ),
    "out of memory": Case(
        started(exit=OOM_137), NO_RESULT, "failed", 1, "ran out of memory (--memory 4g)"
    ),
    "out of memory, other limit": Case(
        started(exit=OOM_137),
        OK,
        "failed",
        1,
        "ran out of memory (--memory 512m)",
        memory="512m",
    ),
    "a process ran out of memory but the agent succeeded": Case(
        started(exit=OOM_0),
        OK,
        "success",
        0,
        None,
        warnings=["ran out of memory (--memory 4g)"],
    ),
    "timed out, agent ok": Case(
        started(exit=ExitInfo(143, False, None), timed_out=True),
        OK,
        "timeout",
        124,
        "did not finish within 3600s (--timeout)",
    ),
    "timed out, agent failed": Case(
        started(exit=EXIT_1, timed_out=True), FAILED, "timeout", 124, "3600s"
    ),
    "timed out, no result": Case(started(timed_out=True), NO_RESULT, "timeout", 124, "--timeout"),
    "timed out and out of memory": Case(
        started(exit=OOM_137, timed_out=True), NO_RESULT, "timeout", 124, "--timeout"
    ),
    "interrupted": Case(
        started(exit=ExitInfo(143, False, None), interrupted=True),
        NO_RESULT,
        "interrupted",
        130,
        "interrupted",
    ),
    "interrupted, agent ok": Case(
        started(interrupted=True), OK, "interrupted", 130, "interrupted by a signal"
    ),
    "docker error": Case(
        Outcome(error=DockerError("lost track of the agent container: gone")),
        None,
        "error",
        3,
        "lost track of the agent container: gone",
    ),
    "image build error": Case(
        Outcome(error=ImageBuildError("the image build failed")), None, "error", 3, "build"
    ),
    "git error after the agent": Case(
        started(exit=EXIT_0, error=GitError("git fetch failed")),
        OK,
        "error",
        3,
        "git fetch failed",
    ),
    "precondition": Case(
        Outcome(error=PreconditionError("not ready")), None, "error", 3, "not ready"
    ),
    "usage": Case(Outcome(error=UsageError("--cpus too many")), None, "error", 2, "--cpus"),
    "the container could not run the agent": Case(
        started(exit=EXIT_3, container_error="cannot clone the task branch: denied"),
        NO_RESULT,
        "error",
        3,
        "cannot clone the task branch",
    ),
    "internal": Case(
        Outcome(error=AgentWorkerError("internal error (KeyError: 'x')")),
        None,
        "error",
        4,
        "internal error",
    ),
    "interrupted error": Case(
        Outcome(error=Interrupted("interrupted by SIGTERM")),
        None,
        "interrupted",
        130,
        "interrupted by SIGTERM",
    ),
    "error beats timeout": Case(
        started(timed_out=True, error=DockerError("engine gone")), OK, "error", 3, "engine gone"
    ),
    "import error turns a success into a failure": Case(
        started(exit=EXIT_0, import_error=IMPORT), OK, "failed", 1, IMPORT, warnings=[IMPORT]
    ),
    "import error after an agent failure": Case(
        started(exit=EXIT_1, import_error=IMPORT),
        FAILED,
        "failed",
        1,
        AGENT_ERROR,
        warnings=[IMPORT],
    ),
    "import error after a timeout": Case(
        started(timed_out=True, import_error=IMPORT),
        OK,
        "timeout",
        124,
        "--timeout",
        warnings=[IMPORT],
    ),
    "the engine lost the task (its node went down)": Case(
        started(
            exit=ExitInfo(-1, False, "its node worker2 went down"),
            import_error="the task ended without handing back the agent's work",
        ),
        OK,
        "failed",
        1,
        "the agent's task was lost: its node worker2 went down",
        warnings=["without handing back"],
    ),
    "import error after an interruption": Case(
        started(interrupted=True, import_error=IMPORT),
        OK,
        "interrupted",
        130,
        "interrupted by a signal",
        warnings=[IMPORT],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide_status(name: str) -> None:
    case = CASES[name]
    status, code, message, warnings = decide_status(
        case.outcome, case.result, timeout_s=3600, memory=case.memory
    )
    assert (status, code) == (case.status, case.code)
    if case.message is None:  # only a success has no message
        assert status == "success"
        assert message is None
    else:
        assert message is not None
        assert case.message in message
    assert len(warnings) == len(case.warnings), warnings
    for expected, warning in zip(case.warnings, warnings, strict=True):
        assert expected in warning


def test_exit_codes_come_from_the_error_class() -> None:
    for error in (DockerError("x"), ImageBuildError("x"), GitError("x"), UsageError("x")):
        _, code, _, _ = decide_status(Outcome(error=error), None, timeout_s=1, memory="4g")
        assert code == type(error).exit_code


def test_the_import_error_is_always_a_warning_and_the_message_of_a_success() -> None:
    status, code, message, warnings = decide_status(
        started(exit=EXIT_0, import_error=IMPORT), OK, timeout_s=60, memory="4g"
    )
    assert (status, code, message) == ("failed", 1, IMPORT)
    assert warnings == [IMPORT]


def test_timeout_message_uses_the_configured_timeout() -> None:
    _, _, message, _ = decide_status(started(timed_out=True), OK, timeout_s=90, memory="4g")
    assert message == "the agent did not finish within 90s (--timeout)"
    _, _, message, _ = decide_status(started(timed_out=True), OK, timeout_s=1.5, memory="4g")
    assert message is not None
    assert "1.5s" in message


@pytest.mark.parametrize(
    ("outcome", "result"),
    [
        (started(exit=EXIT_1, agent_tail=TAIL), FAILED),
        (started(exit=EXIT_1, agent_tail=TAIL), NO_RESULT),
        (started(exit=OOM_137, agent_tail=TAIL), OK),
        (started(timed_out=True, agent_tail=TAIL), OK),
        (started(exit=EXIT_0, import_error=IMPORT, agent_tail=TAIL), OK),
    ],
)
def test_the_agent_tail_is_appended_to_failures_and_timeouts(
    outcome: Outcome, result: AgentResult
) -> None:
    status, _, message, _ = decide_status(outcome, result, timeout_s=60, memory="4g")
    assert status in ("failed", "timeout")
    assert message is not None
    assert message.endswith("; the agent's last output: line 2 | line 3 | line 4")
    assert "line 1" not in message


@pytest.mark.parametrize(
    "outcome",
    [
        started(exit=EXIT_0, agent_tail=TAIL),
        started(interrupted=True, agent_tail=TAIL),
        started(error=DockerError("engine gone"), agent_tail=TAIL),
    ],
)
def test_no_tail_for_other_endings(outcome: Outcome) -> None:
    _, _, message, _ = decide_status(outcome, OK, timeout_s=60, memory="4g")
    assert "last output" not in (message or "")


def test_a_short_tail_is_appended_whole() -> None:
    _, _, message, _ = decide_status(
        started(exit=EXIT_1, agent_tail=["only line"]), FAILED, timeout_s=60, memory="4g"
    )
    assert message is not None
    assert message.startswith(AGENT_ERROR)
    assert message.endswith("; the agent's last output: only line")
