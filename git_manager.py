"""Everything agent-worker does with git on the host: the only module that runs git.

It calls the git binary directly. (GitPython, which does the same underneath, took 80 ms to
import: a quarter of a whole run's overhead budget, spent before the agent could start.)

The user's checkout (HEAD, index, working tree) is only ever read: the run's branch is made and
moved with ref updates, and results arrive as a fetched bundle, never a checkout.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from errors import GitError, PreconditionError, UsageError
from report import FileChange

_STATUS = {
    "A": "added",
    "M": "modified",
    "D": "deleted",
    "R": "renamed",
    "C": "copied",
    "T": "type-changed",
}
_MAX_LISTED = 10


@dataclass(frozen=True)
class Workspace:
    """The repository a run works on, as found by preflight."""

    root: Path  # the working tree
    git_dir: Path  # the common git directory (shared by worktrees): mounted, and holds run data
    base_commit: str
    branch: str


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """git in cwd without optional locks (status never rewrites the user's index)."""
    try:
        return subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
            check=False,
        )
    except FileNotFoundError:
        raise PreconditionError("git is not installed (or not on PATH): install git") from None


def _git(cwd: Path, *args: str) -> str:
    """git's stdout; GitError naming the command and git's own reason when it fails."""
    done = _run(cwd, *args)
    if done.returncode != 0:
        command = next(
            (a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1 : i] != ("-c",)),
            "",
        )
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise GitError(f"git {command} failed: {reason}")
    return done.stdout


def _succeeds(cwd: Path, *args: str) -> bool:
    return _run(cwd, *args).returncode == 0


def check_branch_name(root: Path, branch: str) -> None:
    """git's own rules for a branch name (check-ref-format --branch), and no leading dash."""
    if branch.startswith("-") or not _succeeds(root, "check-ref-format", "--branch", branch):
        raise UsageError(f"--branch: {branch!r} is not a valid git branch name")


def dirty_paths(root: Path) -> list[str]:
    """Modified, staged and untracked (not ignored) paths, as git status shows them."""
    entries = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all").split("\0")
    paths: list[str] = []
    i = 0
    while i < len(entries):
        entry = entries[i]
        if len(entry) > 3:
            paths.append(f"{entry[:2].strip() or '?'} {entry[3:]}")
            if entry[0] in "RC":
                i += 1  # a rename's second field is its old path
        i += 1
    return paths


def _branch_exists(root: Path, branch: str) -> bool:
    return _succeeds(root, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}")


def preflight(project: Path, branch: str, *, branch_given: bool) -> Workspace:
    """Check the repository can take a run on this branch; change nothing."""
    found = _run(project, "rev-parse", "--show-toplevel", "--git-common-dir")
    if found.returncode != 0:
        raise PreconditionError(
            f"{project} is not a git repository: run agent-worker inside one, or pass --project"
        )
    top, common = found.stdout.splitlines()[:2]
    root = Path(top).resolve()
    head = _run(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if head.returncode != 0:
        raise PreconditionError(f"{root} has no commits yet: make a first commit")
    check_branch_name(root, branch)
    dirty = dirty_paths(root)
    if dirty:
        listed = ", ".join(dirty[:_MAX_LISTED])
        more = f" and {len(dirty) - _MAX_LISTED} more" if len(dirty) > _MAX_LISTED else ""
        raise PreconditionError(
            f"the working tree has uncommitted changes ({listed}{more}): commit or stash them"
        )
    if _branch_exists(root, branch):
        if branch_given:
            raise PreconditionError(
                f"branch {branch!r} already exists: choose another --branch or delete it"
            )
        branch = _unused_name(root, branch)
    return Workspace(
        root=root,
        git_dir=(Path(project) / common).resolve(),
        base_commit=head.stdout.strip(),
        branch=branch,
    )


def _unused_name(root: Path, branch: str) -> str:
    n = 2
    while _branch_exists(root, f"{branch}-{n}"):
        n += 1
    return f"{branch}-{n}"


def create_branch(ws: Workspace) -> None:
    """refs/heads/<branch> at the base commit; fails if someone made it meanwhile."""
    _git(
        ws.root,
        "update-ref",
        "-m",
        "agent-worker: task branch",
        f"refs/heads/{ws.branch}",
        ws.base_commit,
        "0" * 40,
    )


def delete_branch(ws: Workspace) -> bool:
    """Delete the run's branch if it still points at the base; True when deleted."""
    return _succeeds(ws.root, "update-ref", "-d", f"refs/heads/{ws.branch}", ws.base_commit)


def branch_head(ws: Workspace) -> str:
    return _git(ws.root, "rev-parse", "--verify", f"refs/heads/{ws.branch}^{{commit}}").strip()


def bundle_branch(ws: Workspace, dest: Path) -> None:
    """A bundle of the task branch, for a container that cannot mount the repository."""
    _git(ws.root, "bundle", "create", "--quiet", str(dest), f"refs/heads/{ws.branch}")


def import_bundle(ws: Workspace, bundle: Path) -> str:
    """Fast-forward the task branch to the bundle's HEAD (fsck'd); returns the new head.

    Only objects and that one ref come in: no hooks, config or other refs of the container's.
    """
    _git(
        ws.root,
        "-c",
        "fetch.fsckObjects=true",
        "fetch",
        "--no-progress",
        "--no-tags",
        "--no-write-fetch-head",
        str(bundle),
        f"HEAD:refs/heads/{ws.branch}",
    )
    return branch_head(ws)


def diff_stats(ws: Workspace, head: str) -> list[FileChange]:
    """Per-file status and line counts of base..head, renames detected (-M)."""
    if head == ws.base_commit:
        return []
    numstat = _git(ws.root, "diff", "--numstat", "-z", "-M", ws.base_commit, head)
    names = _git(ws.root, "diff", "--name-status", "-z", "-M", ws.base_commit, head)
    statuses = _name_status(names)
    changes = []
    for (added, removed, path, old_path), (code, _) in zip(
        _numstat(numstat), statuses, strict=True
    ):
        binary = added == "-"
        changes.append(
            FileChange(
                path=path,
                status=_STATUS.get(code[0], "modified"),
                added=None if binary else int(added),
                removed=None if binary else int(removed),
                old_path=old_path,
                binary=binary,
            )
        )
    return changes


def _numstat(out: str) -> list[tuple[str, str, str, str | None]]:
    fields = out.split("\0")
    rows: list[tuple[str, str, str, str | None]] = []
    i = 0
    while i < len(fields) and fields[i]:
        added, removed, path = fields[i].split("\t", 2)
        if path:
            rows.append((added, removed, path, None))
            i += 1
        else:  # a rename: the old and new paths follow as their own fields
            rows.append((added, removed, fields[i + 2], fields[i + 1]))
            i += 3
    return rows


def _name_status(out: str) -> list[tuple[str, str]]:
    fields = out.split("\0")
    rows = []
    i = 0
    while i < len(fields) and fields[i]:
        code = fields[i]
        step = 3 if code[0] in "RC" else 2
        rows.append((code, fields[i + step - 1]))
        i += step
    return rows


def user_identity(project: Path) -> tuple[str, str] | None:
    """The user's git name and email, when both are configured."""
    name = _run(project, "config", "user.name").stdout.strip()
    email = _run(project, "config", "user.email").stdout.strip()
    return (name, email) if name and email else None
