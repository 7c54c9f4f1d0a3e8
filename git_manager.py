"""Everything agent-worker does with git on the host: the only module that imports git.

The user's checkout (HEAD, index, working tree) is only ever read: the run's branch is made and
moved with ref updates, and results arrive as a fetched bundle, never a checkout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import git

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


def _repo(path: Path) -> git.Repo:
    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise PreconditionError(
            f"{path} is not a git repository: run agent-worker inside one, or pass --project"
        ) from None


def _git(repo: git.Repo, *args: str) -> str:
    """Run git in the repository without taking optional locks (status never rewrites the index)."""
    try:
        out: str = repo.git.execute(
            ["git", "--no-optional-locks", *args],
            strip_newline_in_stdout=False,
        )
        return out
    except git.GitCommandError as exc:
        command = next(
            (
                a
                for i, a in enumerate(args)
                if not a.startswith("-") and (i == 0 or args[i - 1] != "-c")
            ),
            "",
        )
        raise GitError(f"git {command} failed: {_stderr(exc)}") from None


def _stderr(exc: git.GitCommandError) -> str:
    """git's own last words, without GitPython's framing."""
    text = str(exc.stderr or "").strip().removeprefix("stderr:").strip().strip("'").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {exc.status}"


def _branch_exists(repo: git.Repo, branch: str) -> bool:
    try:
        repo.git.execute(["git", "show-ref", "--verify", "--quiet", f"refs/heads/{branch}"])
        return True
    except git.GitCommandError:
        return False


def check_branch_name(repo: git.Repo, branch: str) -> None:
    """git's own rules for a branch name (check-ref-format --branch)."""
    try:
        repo.git.execute(["git", "check-ref-format", "--branch", branch])
    except git.GitCommandError:
        raise UsageError(f"--branch: {branch!r} is not a valid git branch name") from None
    if branch.startswith("-"):
        raise UsageError(f"--branch: {branch!r} is not a valid git branch name")


def dirty_paths(repo: git.Repo) -> list[str]:
    """Modified, staged and untracked (not ignored) paths, as git status shows them."""
    out = _git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    entries = out.split("\0")
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


def preflight(project: Path, branch: str, *, branch_given: bool) -> Workspace:
    """Check the repository can take a run on this branch; change nothing."""
    repo = _repo(project)
    try:
        if not repo.head.is_valid():
            raise PreconditionError(
                f"{repo.working_tree_dir or project} has no commits yet: make a first commit"
            )
        check_branch_name(repo, branch)
        dirty = dirty_paths(repo)
        if dirty:
            listed = ", ".join(dirty[:_MAX_LISTED])
            more = f" and {len(dirty) - _MAX_LISTED} more" if len(dirty) > _MAX_LISTED else ""
            raise PreconditionError(
                f"the working tree has uncommitted changes ({listed}{more}): commit or stash them"
            )
        if _branch_exists(repo, branch):
            if branch_given:
                raise PreconditionError(
                    f"branch {branch!r} already exists: choose another --branch or delete it"
                )
            branch = _unused_name(repo, branch)
        common = Path(_git(repo, "rev-parse", "--git-common-dir").strip())
        git_dir = (Path(repo.working_tree_dir or project) / common).resolve()
        return Workspace(
            root=Path(repo.working_tree_dir or project).resolve(),
            git_dir=git_dir,
            base_commit=repo.head.commit.hexsha,
            branch=branch,
        )
    finally:
        repo.close()


def _unused_name(repo: git.Repo, branch: str) -> str:
    n = 2
    while _branch_exists(repo, f"{branch}-{n}"):
        n += 1
    return f"{branch}-{n}"


def create_branch(ws: Workspace) -> None:
    """refs/heads/<branch> at the base commit; fails if someone made it meanwhile."""
    with git.Repo(ws.root) as repo:
        _git(
            repo,
            "update-ref",
            "-m",
            "agent-worker: task branch",
            f"refs/heads/{ws.branch}",
            ws.base_commit,
            "0" * 40,
        )


def delete_branch(ws: Workspace) -> bool:
    """Delete the run's branch if it still points at the base; True when deleted."""
    with git.Repo(ws.root) as repo:
        try:
            repo.git.execute(["git", "update-ref", "-d", f"refs/heads/{ws.branch}", ws.base_commit])
            return True
        except git.GitCommandError:
            return False


def branch_head(ws: Workspace) -> str:
    with git.Repo(ws.root) as repo:
        return _git(repo, "rev-parse", "--verify", f"refs/heads/{ws.branch}^{{commit}}").strip()


def bundle_branch(ws: Workspace, dest: Path) -> None:
    """A bundle of the task branch, for a container that cannot mount the repository."""
    with git.Repo(ws.root) as repo:
        _git(repo, "bundle", "create", "--quiet", str(dest), f"refs/heads/{ws.branch}")


def import_bundle(ws: Workspace, bundle: Path) -> str:
    """Fast-forward the task branch to the bundle's HEAD (fsck'd); returns the new head.

    Only objects and that one ref come in: no hooks, config or other refs of the container's.
    """
    with git.Repo(ws.root) as repo:
        _git(
            repo,
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


def is_ancestor(ws: Workspace, commit: str) -> bool:
    with git.Repo(ws.root) as repo:
        try:
            repo.git.execute(["git", "merge-base", "--is-ancestor", ws.base_commit, commit])
            return True
        except git.GitCommandError:
            return False


def diff_stats(ws: Workspace, head: str) -> list[FileChange]:
    """Per-file status and line counts of base..head, renames detected (-M)."""
    with git.Repo(ws.root) as repo:
        numstat = _git(repo, "diff", "--numstat", "-z", "-M", ws.base_commit, head)
        names = _git(repo, "diff", "--name-status", "-z", "-M", ws.base_commit, head)
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
    repo = _repo(project)
    try:
        reader = repo.config_reader()
        name = reader.get_value("user", "name", default="")
        email = reader.get_value("user", "email", default="")
    finally:
        repo.close()
    return (str(name), str(email)) if name and email else None
