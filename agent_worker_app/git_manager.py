"""Everything agent-worker does with git on the host: the only module that runs git.

It calls the git binary directly. (GitPython, which does the same underneath, took 80 ms to
import: a quarter of a whole run's overhead budget, spent before the agent could start.)

The user's checkout (HEAD, index, working tree) is only ever read: the run's branch is made and
moved with ref updates, and results arrive as a fetched bundle, never a checkout.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from agent_worker_app.errors import GitError, PreconditionError, UsageError
from agent_worker_app.report import FileChange

_STATUS = {
    "A": "added",
    "M": "modified",
    "D": "deleted",
    "R": "renamed",
    "C": "copied",
    "T": "type-changed",
}
_MAX_LISTED = 10
_CREATE_TRIES = 50


@dataclass(frozen=True)
class Workspace:
    """The repository a run works on, as found by preflight."""

    root: Path  # the working tree
    git_dir: Path  # the common git directory (shared by worktrees): holds objects and run data
    base_commit: str
    branch: str
    object_format: str = "sha1"  # or sha256

    @property
    def zero_id(self) -> str:
        """The all-zero object id of this repository's format: "the ref must not exist"."""
        return "0" * len(self.base_commit)


@dataclass(frozen=True)
class Source:
    """What a container needs to build its own repository of the task branch, and no more: the
    object directories (packed to the branch's history, or shared read-only, every object in
    them, only with an explicit --workspace mount), the shallow boundary,
    and the user's ignore rules that live outside the tree. Never config, hooks, refs or run data.
    """

    object_dirs: tuple[Path, ...]  # the repository's objects, then what it borrows (alternates)
    partial: bool  # a partial clone: objects are missing until fetched from its promisor remote
    shallow: bytes  # the .git/shallow file: commits whose parents are not in the repository
    exclude: bytes  # .git/info/exclude and core.excludesFile, for the container's commit


def _run(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """git in cwd without optional locks (status never rewrites the user's index); env: more
    variables for it."""
    try:
        return subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
            check=False,
            env=os.environ | env if env else None,
        )
    except FileNotFoundError:
        raise PreconditionError("git is not installed (or not on PATH): install git") from None


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """git's stdout; GitError naming the command and git's own reason when it fails."""
    done = _run(cwd, *args, env=env)
    if done.returncode != 0:
        command = next(
            (a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1 : i] != ("-c",)),
            "",
        )
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise GitError(f"git {command} failed: {reason}")
    return done.stdout


def _succeeds(cwd: Path, *args: str, env: dict[str, str] | None = None) -> bool:
    return _run(cwd, *args, env=env).returncode == 0


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


def _find_repository(project: Path, *, head: bool = False) -> tuple[Workspace, str | None]:
    """The repository (working tree, common git directory, object format) and, with head, its
    HEAD commit (None when it has none yet), in one call of git; a clear reason when there is
    no repository to work on."""
    args = ["rev-parse", "--show-toplevel", "--git-common-dir", "--show-object-format"]
    if head:
        args += ["--verify", "--quiet", "HEAD^{commit}"]
    found = _run(project, *args)
    lines = found.stdout.splitlines()
    if found.returncode in (0, 1) and len(lines) >= 3:  # 1: --verify found no HEAD commit
        top, common, object_format = lines[:3]
        repo = Workspace(
            root=Path(top).resolve(),
            git_dir=(project / common).resolve(),
            base_commit="",
            branch="",
            object_format=object_format or "sha1",
        )
        return repo, lines[3].strip() if found.returncode == 0 and len(lines) > 3 else None
    reason = _last_line(found.stderr)
    if "dubious ownership" in found.stderr:
        raise PreconditionError(
            f"git refuses to work in {project}: it belongs to another user (dubious ownership); "
            f"if you trust it: git config --global --add safe.directory {project}"
        )
    if _run(project, "rev-parse", "--is-bare-repository").stdout.strip() == "true":
        raise PreconditionError(
            f"{project} is a bare repository: agent-worker needs a working tree; "
            "run it in a clone (git clone) or a worktree (git worktree add)"
        )
    if "not a git repository" in reason:
        raise PreconditionError(
            f"{project} is not a git repository: run agent-worker inside one, or pass --project"
        )
    raise PreconditionError(f"git cannot use {project}: {reason}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1].removeprefix("fatal: ") if lines else "unknown reason"


def repository(project: Path) -> Workspace:
    """The repository alone, for work on its past runs (no branch, no base)."""
    return _find_repository(project)[0]


def preflight(project: Path, branch: str, *, branch_given: bool) -> Workspace:
    """Check the repository can take a run on this branch; change nothing."""
    repo, head = _find_repository(project, head=True)
    root = repo.root
    if head is None:
        raise PreconditionError(f"{root} has no commits yet: make a first commit")
    check_branch_name(root, branch)
    _check_dirty(root)
    if branch_given:
        _check_free(root, branch)
    else:
        branch = _unused_name(root, branch)
    return replace(repo, base_commit=head, branch=branch)


def branch_tip(root: Path, branch: str) -> str | None:
    done = _run(root, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")
    return done.stdout.strip() if done.returncode == 0 else None


def checked_out(root: Path, branch: str) -> Path | None:
    """The worktree that has branch checked out, if one does."""
    current: Path | None = None
    for line in _git(root, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            current = Path(line.removeprefix("worktree "))
        elif line == f"branch refs/heads/{branch}":
            return current
    return None


def preflight_continue(project: Path, branch: str) -> Workspace:
    """The repository for a run that continues an existing branch, based on its tip. The
    working tree does not matter (the agent never sees it), but the branch must not be
    checked out: its files would change under the user."""
    repo = repository(project)
    tip = branch_tip(repo.root, branch)
    if tip is None:
        raise UsageError(f"--continue: there is no branch {branch!r} in {repo.root}")
    where = checked_out(repo.root, branch)
    if where is not None:
        raise PreconditionError(
            f"branch {branch!r} is checked out in {where}: switch that checkout to another "
            "branch first (the run moves the branch)"
        )
    return replace(repo, base_commit=tip, branch=branch)


def _check_dirty(root: Path) -> None:
    dirty = dirty_paths(root)
    if not dirty:
        return
    listed = ", ".join(dirty[:_MAX_LISTED])
    more = f" and {len(dirty) - _MAX_LISTED} more" if len(dirty) > _MAX_LISTED else ""
    untracked = any(path.startswith("??") for path in dirty)
    advice = (
        "commit them, ignore them, or stash them with git stash -u (plain git stash "
        "leaves untracked files)"
        if untracked
        else "commit or stash them"
    )
    raise PreconditionError(f"the working tree has uncommitted changes ({listed}{more}): {advice}")


def _clash(root: Path, branch: str) -> str | None:
    """Why refs/heads/<branch> cannot be created now, or None. One look at the branches: the
    name itself, its folders (a/b needs no branch a) and what lies under it (nor a/b/c)."""
    parts = branch.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts))]
    listed = _git(
        root,
        "for-each-ref",
        "--format=%(refname)",
        *(f"refs/heads/{name}" for name in (branch, *prefixes)),
    )
    names = {line.removeprefix("refs/heads/") for line in listed.splitlines()}
    if branch in names:
        return f"branch {branch!r} already exists"
    for prefix in prefixes:
        if prefix in names:
            return (
                f"branch {prefix!r} exists, and a branch name cannot also be a folder of "
                f"other branches ({branch!r})"
            )
    inside = sorted(name for name in names if name.startswith(f"{branch}/"))
    if inside:
        return (
            f"branch {inside[0]!r} exists, so {branch!r} is a folder of branches "
            "and cannot be a branch too"
        )
    return None


def _check_free(root: Path, branch: str) -> None:
    clash = _clash(root, branch)
    if clash is not None:
        raise PreconditionError(f"{clash}: choose another --branch (or delete it)")


def _unused_name(root: Path, branch: str) -> str:
    """The generated name, or the first of name-2, name-3, ... that can be created."""
    clash = _clash(root, branch)
    if clash is None:
        return branch
    for n in range(2, 1000):
        if _clash(root, f"{branch}-{n}") is None:
            return f"{branch}-{n}"
    raise PreconditionError(f"{clash}, and so do its numbered variants: choose a --branch")


def create_branch(ws: Workspace, *, branch_given: bool) -> Workspace:
    """Create refs/heads/<branch> at the base commit, atomically (it must not exist).

    A generated name lost to a concurrent run (another agent-worker started in the same second)
    moves on to the next free name; a given one is an error. Returns the workspace with the
    branch actually made: the only branch this run may ever delete.
    """
    branch = ws.branch
    for _ in range(_CREATE_TRIES):
        done = _run(
            ws.root,
            "update-ref",
            "-m",
            "agent-worker: task branch",
            f"refs/heads/{branch}",
            ws.base_commit,
            ws.zero_id,
        )
        if done.returncode == 0:
            return replace(ws, branch=branch)
        clash = _clash(ws.root, branch)
        if clash is None:  # not a race: git's own reason
            raise GitError(f"git update-ref failed: {_last_line(done.stderr)}")
        if branch_given:
            raise PreconditionError(f"{clash} (made meanwhile): choose another --branch")
        branch = _unused_name(ws.root, ws.branch)
    raise GitError(f"could not find a free branch name after {ws.branch!r}: too many runs at once")


def delete_branch(ws: Workspace, *, at: str | None = None) -> bool:
    """Delete the run's branch if it still points at the base, or at `at` (where its run left
    it): compare and delete; True when deleted. Call it only for a branch a run made."""
    return _succeeds(ws.root, "update-ref", "-d", f"refs/heads/{ws.branch}", at or ws.base_commit)


def branch_head(ws: Workspace) -> str:
    return _git(ws.root, "rev-parse", "--verify", f"refs/heads/{ws.branch}^{{commit}}").strip()


def source(ws: Workspace) -> Source:
    """What a container needs of the repository to work on the task branch (see Source)."""
    objects = ws.git_dir / "objects"
    settings = _config(ws.root, r"extensions\.partialclone|remote\..*\.promisor|core\.excludesfile")
    return Source(
        object_dirs=(objects, *_alternates(objects)),
        # a promisor remote (git clone --filter): objects may be missing until fetched from it
        partial=any(key != "core.excludesfile" for key in settings),
        shallow=_read(ws.git_dir / "shallow"),
        exclude=_read(ws.git_dir / "info" / "exclude")
        + b"\n"
        + _read(_excludes_file(settings.get("core.excludesfile"))),
    )


def _config(root: Path, keys: str) -> dict[str, str]:
    """The settings whose (lower-case) names match the regular expression keys, in one call of
    git; the last value of a key wins, as in git."""
    listed = _run(root, "config", "-z", "--get-regexp", f"^({keys})$").stdout
    found: dict[str, str] = {}
    for entry in filter(None, listed.split("\0")):
        key, _, value = entry.partition("\n")
        found[key] = value
    return found


def _alternates(objects: Path, depth: int = 0) -> list[Path]:
    """The object directories a repository borrows from (git clone --shared / --reference),
    their own alternates included, as absolute paths; git follows five levels, and so do we."""
    found: list[Path] = []
    if depth >= 5:
        return found
    listed = _read(objects / "info" / "alternates").decode(errors="replace").splitlines()
    for entry in (line.strip() for line in listed):
        if not entry or entry.startswith("#"):
            continue
        path = (objects / entry.strip('"')).resolve()
        if path.is_dir() and path not in found:
            found += [path, *(p for p in _alternates(path, depth + 1) if p not in found)]
    return found


def _excludes_file(configured: str | None) -> Path:
    """core.excludesFile (~ expanded, as git --path does), or git's default
    $XDG_CONFIG_HOME/git/ignore."""
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "git" / "ignore"


def _read(path: Path | None) -> bytes:
    try:
        return path.read_bytes() if path is not None else b""
    except OSError:
        return b""


def pack_branch(ws: Workspace, dest: Path) -> None:
    """A pack of every object of the task branch (down to a shallow boundary), and no other,
    for a container that cannot share the repository's object directories."""
    _pack_objects(ws.root, f"refs/heads/{ws.branch}\n", dest)


def pack_commit(ws: Workspace, commit: str, dest: Path) -> None:
    """A pack of every object of one commit's history (down to a shallow boundary), for the
    check's container: the commit the run imported, whatever the branch points at meanwhile."""
    _pack_objects(ws.root, f"{commit}\n", dest)


def _pack_objects(root: Path, revs: str, dest: Path, env: dict[str, str] | None = None) -> None:
    """A pack of the objects of revs (git rev-list's stdin: one a line, ^ to exclude) in dest;
    env: more variables for git (an object directory of its own, say)."""
    with dest.open("wb") as out:
        try:
            done = subprocess.run(
                ["git", "pack-objects", "--revs", "--stdout", "-q"],
                cwd=root,
                input=revs.encode(),
                stdout=out,
                stderr=subprocess.PIPE,
                env=os.environ | env if env else None,
                check=False,
            )
        except FileNotFoundError:
            raise PreconditionError("git is not installed (or not on PATH): install git") from None
    if done.returncode != 0:
        reason = _last_line(done.stderr.decode(errors="replace"))
        raise GitError(f"git pack-objects failed: {reason}")


def import_bundle(ws: Workspace, bundle: Path, *, expected: str | None = None) -> str:
    """Move the task branch from the base to the bundle's HEAD (fsck'd, a descendant of the
    base, and expected, the head the task reported, when given); returns the new head.

    Only that head and the objects it adds to the base come in: no hooks, config or other refs
    of the container's, nor their objects. The bundle is fetched into a quarantine (an object
    directory of its own, next to the bundle, that borrows the repository's), and only the
    objects of base..HEAD are copied from there. Then the ref moves compare-and-swap: only from
    the base, so a branch moved meanwhile (by the user, or by another run continuing it) is
    never overwritten.
    """
    with tempfile.TemporaryDirectory(prefix="import-", dir=bundle.parent) as scratch:
        quarantine = {
            "GIT_OBJECT_DIRECTORY": scratch,
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(ws.git_dir / "objects"),
        }
        _git(
            ws.root,
            "-c",
            "fetch.fsckObjects=true",
            "-c",
            "gc.auto=0",
            "fetch",
            "--no-progress",
            "--no-tags",
            "--no-write-fetch-head",
            str(bundle),
            "HEAD",
            env=quarantine,
        )
        heads = _git(ws.root, "bundle", "list-heads", str(bundle), "HEAD").split()
        if not heads:
            raise GitError("the container's bundle has no HEAD")
        head = heads[0]
        if expected is not None and head != expected:
            raise GitError(
                f"the bundle's head {head[:12]} is not the head the task reported, {expected[:12]}"
            )
        if not _succeeds(
            ws.root, "merge-base", "--is-ancestor", ws.base_commit, head, env=quarantine
        ):
            raise GitError(f"the agent's head {head[:12]} does not descend from the base")
        if head != ws.base_commit:
            _copy_objects(ws, head, quarantine, Path(scratch) / "import.pack")
    done = _run(
        ws.root,
        "update-ref",
        "-m",
        "agent-worker: the agent's commits",
        f"refs/heads/{ws.branch}",
        head,
        ws.base_commit,
    )
    if done.returncode != 0:
        raise GitError(
            f"branch {ws.branch!r} moved while the agent worked (it is no longer at "
            f"{ws.base_commit[:12]}), so the agent's commits were not put on it"
        )
    return head


def _copy_objects(ws: Workspace, head: str, quarantine: dict[str, str], pack: Path) -> None:
    """The objects of base..head, out of the quarantine into the repository, as one pack."""
    _pack_objects(ws.root, f"{head}\n^{ws.base_commit}\n", pack, env=quarantine)
    try:
        with pack.open("rb") as data:
            stored = subprocess.run(
                ["git", "index-pack", "--stdin"],
                cwd=ws.root,
                stdin=data,
                capture_output=True,
                check=False,
            )
    except FileNotFoundError:
        raise PreconditionError("git is not installed (or not on PATH): install git") from None
    if stored.returncode != 0:
        raise GitError(
            f"git index-pack failed: {_last_line(stored.stderr.decode(errors='replace'))}"
        )


def commits_between(ws: Workspace, base: str, head: str) -> list[str]:
    """The commits of base..head, newest first."""
    return _git(ws.root, "rev-list", f"{base}..{head}").split()


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


# ---------------------------------------------------------------- publishing a branch


def _remote_names(root: Path) -> list[str]:
    return _git(root, "remote").split()


def default_remote(ws: Workspace) -> str:
    """Where --push without a name pushes: the task branch's upstream remote, else that of the
    branch checked out, else origin."""
    current = _run(ws.root, "symbolic-ref", "-q", "--short", "HEAD").stdout.strip()
    for branch in (ws.branch, current):
        if branch:
            remote = _run(ws.root, "config", "--get", f"branch.{branch}.remote").stdout.strip()
            if remote and remote != ".":
                return remote
    return "origin"


def current_branch(root: Path) -> str | None:
    """The branch checked out in root (the one a run starts from); None on a detached HEAD."""
    return _run(root, "symbolic-ref", "-q", "--short", "HEAD").stdout.strip() or None


def remote_urls(root: Path, remote: str) -> tuple[str, ...]:
    """The URLs a remote stands for: as configured, then as git fetches it (the user's
    url.*.insteadOf applied); a URL or path given as the remote, as it is."""
    if remote not in _remote_names(root):
        return (remote,)
    configured = _run(root, "config", "--get", f"remote.{remote}.url").stdout.strip()
    fetched = _git(root, "remote", "get-url", remote).strip()
    return tuple(dict.fromkeys(url for url in (configured, fetched) if url))


def check_remote(root: Path, remote: str) -> None:
    """--push's remote must be a configured remote, or a URL or path (what git push takes)."""
    if remote.startswith("-"):
        raise UsageError(f"--push: {remote!r} is not a remote")
    looks_like_location = "/" in remote or ":" in remote or remote.startswith(".")
    if not looks_like_location and remote not in _remote_names(root):
        known = ", ".join(_remote_names(root)) or "none"
        raise UsageError(
            f"--push: no remote named {remote!r} in this repository (its remotes: {known}); "
            "give a remote's name, a URL or a path"
        )


# The push option that asks the server not to start CI for the push (GitLab: no pipeline for
# the branch). Sent unless --push-ci: the pipeline a push starts runs the agent's CI files with
# the job's unprotected variables.
SKIP_CI_OPTION = "ci.skip"

# what git says when the server does not advertise push options (it then pushes nothing)
_NO_PUSH_OPTIONS = "the receiving end does not support push options"


@dataclass(frozen=True)
class Pushed:
    """How a push went: problem None when pushed; skip_ci whether ci.skip went with it (False
    when not asked, or when the server takes no push options and the push went without)."""

    problem: str | None
    skip_ci: bool
    options: tuple[str, ...] = ()  # the other push options that went with it
    remote_said: tuple[str, ...] = ()  # the server's "remote:" lines (a merge request's URL)


def push_command(
    ws: Workspace, remote: str, *, skip_ci: bool = True, options: tuple[str, ...] = ()
) -> list[str]:
    """The git command that pushes the task branch to remote, under the same name (with the
    push option ci.skip unless skip_ci is False, and each of options)."""
    ref = f"refs/heads/{ws.branch}"
    sent = [*([SKIP_CI_OPTION] if skip_ci else []), *options]
    flags = [flag for option in sent for flag in ("-o", option)]
    return ["git", "-C", str(ws.root), "push", *flags, "--", remote, f"{ref}:{ref}"]


def push(
    ws: Workspace, remote: str, *, skip_ci: bool = True, options: tuple[str, ...] = ()
) -> Pushed:
    """Push the task branch from the host, with the user's own git credentials and config.
    Nothing in the container takes part. With skip_ci, the push carries ci.skip, and options
    (GitLab's merge_request.*) go with it; a server that takes no push options (git then
    refuses before sending anything) gets the push without any: the branch still arrives, and
    Pushed says which options did not go."""
    problem, said = _push_once(push_command(ws, remote, skip_ci=skip_ci, options=options))
    if (skip_ci or options) and problem is not None and _NO_PUSH_OPTIONS in problem:
        problem, said = _push_once(push_command(ws, remote, skip_ci=False))
        return Pushed(problem, skip_ci=False, remote_said=said)
    return Pushed(problem, skip_ci=skip_ci, options=options, remote_said=said)


def _push_once(command: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """None when git pushed, else its reason; and what the server said (its remote: lines)."""
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
            check=False,
        )
    except FileNotFoundError:
        return "git is not installed (or not on PATH)", ()
    lines = [line.strip() for line in done.stderr.splitlines()]
    remote = tuple(
        line.removeprefix("remote:").strip() for line in lines if line.startswith("remote:")
    )
    if done.returncode == 0:
        return None, remote
    said = [line.removeprefix("fatal: ") for line in lines if line.startswith(_PUSH_TROUBLE)]
    return "; ".join(said) or _last_line(done.stderr), remote


# the lines of git push's stderr that say why it failed (the rest is advice and progress)
_PUSH_TROUBLE = ("fatal:", "error:", "! ", "remote: error")


def blobs_at(root: Path, commit: str, paths: tuple[str, ...]) -> set[str]:
    """Which of the paths are files at the commit, in one call of git."""
    try:
        done = subprocess.run(
            ["git", "cat-file", "--batch-check"],
            cwd=root,
            input="".join(f"{commit}:{path}\n" for path in paths).encode(),
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        raise PreconditionError("git is not installed (or not on PATH): install git") from None
    answers = done.stdout.decode(errors="replace").splitlines()
    found = zip(paths, answers, strict=False)  # no answers at all when git failed: none found
    return {path for path, answer in found if answer.split(" ")[1:2] == ["blob"]}


def files_at(root: Path, commit: str) -> list[str]:
    """The paths of every file (blob) of the commit's tree, in git's order."""
    listed = _git(root, "ls-tree", "-r", "-z", "--full-tree", commit)
    files = []
    for entry in listed.split("\0"):
        meta, _, path = entry.partition("\t")
        if meta.split(" ")[1:2] == ["blob"]:
            files.append(path)
    return files


def file_at(root: Path, commit: str, path: str) -> bytes | None:
    """A file's bytes at a commit; None when the commit has no file there (a directory, a
    submodule or nothing)."""
    try:
        kind = subprocess.run(
            ["git", "cat-file", "-t", f"{commit}:{path}"],
            cwd=root,
            capture_output=True,
            check=False,
        )
        if kind.returncode != 0 or kind.stdout.strip() != b"blob":
            return None
        done = subprocess.run(
            ["git", "cat-file", "blob", f"{commit}:{path}"],
            cwd=root,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        raise PreconditionError("git is not installed (or not on PATH): install git") from None
    if done.returncode != 0:
        raise GitError(f"git cat-file failed: {_last_line(done.stderr.decode(errors='replace'))}")
    return done.stdout


def tree_id(root: Path, commit: str, path: str) -> str | None:
    """The id of a directory's tree at a commit (it names its whole content), or None."""
    spec = f"{commit}^{{tree}}" if path in ("", ".") else f"{commit}:{path}"
    found = _run_input(root, spec, "cat-file", "--batch-check=%(objectname) %(objecttype)")
    name, _, kind = found.strip().partition(" ")
    return name if kind == "tree" else None


def _run_input(root: Path, text: str, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, input=text + "\n", capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise PreconditionError("git is not installed (or not on PATH): install git") from None
    return done.stdout if done.returncode == 0 else ""


def archive(root: Path, commit: str, path: str, dest: Path) -> None:
    """A tar of a directory of the tree at a commit (a Docker build context)."""
    spec = f"{commit}^{{tree}}" if path in ("", ".") else f"{commit}:{path}"
    with dest.open("wb") as out:
        try:
            done = subprocess.run(
                ["git", "archive", "--format=tar", spec],
                cwd=root,
                stdout=out,
                stderr=subprocess.PIPE,
                check=False,
            )
        except FileNotFoundError:
            raise PreconditionError("git is not installed (or not on PATH): install git") from None
    if done.returncode != 0:
        raise GitError(f"git archive failed: {_last_line(done.stderr.decode(errors='replace'))}")
