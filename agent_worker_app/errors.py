"""One root error, its kinds, and the exit code each maps to."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

EXIT_SUCCESS = 0
EXIT_AGENT_FAILED = 1
EXIT_USAGE = 2
EXIT_PRECONDITION = 3
EXIT_INTERNAL = 4
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130


class AgentWorkerError(Exception):
    """Root of every error agent-worker expects; the message tells the user what to do next."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = list(details)  # a few lines shown under the message (a build's last output)


class UsageError(AgentWorkerError):
    """A bad option, value or configuration: nothing was started."""

    exit_code = EXIT_USAGE


class PreconditionError(AgentWorkerError):
    """The world is not ready: not a repository, dirty tree, branch exists, Docker unreachable."""

    exit_code = EXIT_PRECONDITION


class DockerError(PreconditionError):
    """The Docker engine is unreachable or refused an operation."""


class ImageBuildError(PreconditionError):
    """The agent image could not be built."""


class GitError(PreconditionError):
    """A git operation on the user's repository failed."""


class InternalError(AgentWorkerError):
    """A bug: the message names the log to report it with."""

    exit_code = EXIT_INTERNAL


def internal_error(exc: BaseException, log_path: Path) -> InternalError:
    """A bug, as the user sees it: what it was, and the log to report it with."""
    return InternalError(
        f"internal error ({type(exc).__name__}: {exc}); please report it with the log {log_path}"
    )


class Interrupted(AgentWorkerError):  # noqa: N818 (InterruptedError is a builtin)
    """SIGINT or SIGTERM arrived."""

    exit_code = EXIT_INTERRUPTED


# A batch's exit code is its worst run's, worst first: an interrupted batch did not finish; a
# bug makes the rest doubtful; a usage or precondition error needs fixing before a retry; then a
# timeout; then an agent that ran and failed (or a task --max-cost kept from starting).
SEVERITY = (
    EXIT_INTERRUPTED,
    EXIT_INTERNAL,
    EXIT_USAGE,
    EXIT_PRECONDITION,
    EXIT_TIMEOUT,
    EXIT_AGENT_FAILED,
    EXIT_SUCCESS,
)


def worst_exit(codes: Sequence[int]) -> int:
    """The exit code of several runs: 0 only when every one is 0, else the worst (SEVERITY;
    a code it does not list counts as an internal error)."""

    def rank(code: int) -> int:
        return SEVERITY.index(code) if code in SEVERITY else SEVERITY.index(EXIT_INTERNAL)

    return min(codes, key=rank, default=EXIT_SUCCESS)
