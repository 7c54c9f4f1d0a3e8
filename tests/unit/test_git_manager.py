"""git_manager.py against real git repositories: preflight, the task branch, diff statistics and
the import of the container's bundle, leaving the user's checkout exactly as it was."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from push_remote import recording_remote, sent

from agent_worker_app import git_manager
from agent_worker_app.errors import GitError, PreconditionError, UsageError
from agent_worker_app.git_manager import Workspace
from conftest import git, make_repo, snapshot


def head(repo: Path, rev: str = "HEAD") -> str:
    return git(repo, "rev-parse", rev).strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return head(repo)


def refs(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname)").split()


def task_workspace(repo: Path, branch: str = "task") -> Workspace:
    ws = git_manager.preflight(repo, branch, branch_given=True)
    return git_manager.create_branch(ws, branch_given=True)


# ---------------------------------------------------------------- preflight


def test_preflight_of_a_clean_repository(repo: Path) -> None:
    before = snapshot(repo)
    ws = git_manager.preflight(repo, "work", branch_given=True)
    assert ws.root == repo.resolve()
    assert ws.git_dir == (repo / ".git").resolve()
    assert ws.base_commit == head(repo)
    assert ws.branch == "work"
    assert snapshot(repo) == before
    assert refs(repo) == ["refs/heads/main"]


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(PreconditionError, match="is not a git repository") as caught:
        git_manager.preflight(plain, "b", branch_given=True)
    assert str(plain) in str(caught.value)
    assert caught.value.exit_code == 3
    assert list(plain.iterdir()) == []


def test_a_subdirectory_of_a_repository(repo: Path) -> None:
    ws = git_manager.preflight(repo / "src", "b", branch_given=True)
    assert ws.root == repo.resolve()
    assert ws.git_dir == (repo / ".git").resolve()
    assert ws.base_commit == head(repo)


def test_a_repository_without_commits(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(PreconditionError, match="has no commits yet"):
        git_manager.preflight(empty, "b", branch_given=True)


@pytest.mark.parametrize("kind", ["modified", "staged", "untracked", "deleted", "staged rename"])
def test_a_dirty_tree_is_refused(repo: Path, kind: str) -> None:
    if kind == "modified":
        (repo / "README.md").write_text("changed\n")
        name = "README.md"
    elif kind == "staged":
        (repo / "new file.txt").write_text("new\n")
        git(repo, "add", "new file.txt")
        name = "new file.txt"
    elif kind == "untracked":
        (repo / "src" / "stray.py").write_text("stray\n")
        name = "src/stray.py"
    elif kind == "deleted":
        (repo / "README.md").unlink()
        name = "README.md"
    else:
        git(repo, "mv", "README.md", "READ.md")
        name = "READ.md"
    before = snapshot(repo)
    with pytest.raises(PreconditionError, match="uncommitted changes") as caught:
        git_manager.preflight(repo, "b", branch_given=True)
    assert name in str(caught.value)
    assert ("git stash -u" if kind == "untracked" else "commit or stash them") in str(caught.value)
    assert snapshot(repo) == before


def test_at_most_ten_dirty_paths_are_listed(repo: Path) -> None:
    for n in range(13):
        (repo / f"f{n:02}.txt").write_text("x\n")
    with pytest.raises(PreconditionError) as caught:
        git_manager.preflight(repo, "b", branch_given=True)
    message = str(caught.value)
    listed = [n for n in range(13) if f"f{n:02}.txt" in message]
    assert len(listed) == 10
    assert "and 3 more" in message


def test_exactly_ten_dirty_paths_have_no_more(repo: Path) -> None:
    for n in range(10):
        (repo / f"f{n:02}.txt").write_text("x\n")
    with pytest.raises(PreconditionError) as caught:
        git_manager.preflight(repo, "b", branch_given=True)
    assert all(f"f{n:02}.txt" in str(caught.value) for n in range(10))
    assert "more" not in str(caught.value)


def test_ignored_files_do_not_count(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {".gitignore": "build/\n*.log\n", "a.txt": "a\n"})
    (repo / "build").mkdir()
    (repo / "build" / "out.o").write_bytes(b"\0obj")
    (repo / "debug.log").write_text("log\n")
    (repo / ".git" / "info" / "exclude").write_text("local-only/\n")
    (repo / "local-only").mkdir()
    (repo / "local-only" / "x").write_text("x\n")
    ws = git_manager.preflight(repo, "b1", branch_given=True)
    assert ws.branch == "b1"


@pytest.mark.parametrize(
    "branch",
    ["a..b", "-x", "with space", "end.lock", "x~1", "a:b", "trailing/", "ques?", "x.", "a//b"],
)
def test_invalid_branch_names(repo: Path, branch: str) -> None:
    with pytest.raises(UsageError, match="is not a valid git branch name") as caught:
        git_manager.preflight(repo, branch, branch_given=True)
    assert repr(branch) in str(caught.value)
    assert caught.value.exit_code == 2
    assert refs(repo) == ["refs/heads/main"]


@pytest.mark.parametrize("branch", ["feature/x", "agent-task-20261124-101500", "ü-branch"])
def test_valid_branch_names(repo: Path, branch: str) -> None:
    assert git_manager.preflight(repo, branch, branch_given=True).branch == branch


def test_an_existing_given_branch_is_refused(repo: Path) -> None:
    git(repo, "branch", "taken")
    with pytest.raises(PreconditionError, match="branch 'taken' already exists"):
        git_manager.preflight(repo, "taken", branch_given=True)


def test_an_existing_generated_name_gets_a_suffix(repo: Path) -> None:
    name = "agent-task-20261124-101500"
    assert git_manager.preflight(repo, name, branch_given=False).branch == name
    git(repo, "branch", name)
    assert git_manager.preflight(repo, name, branch_given=False).branch == f"{name}-2"
    git(repo, "branch", f"{name}-2")
    assert git_manager.preflight(repo, name, branch_given=False).branch == f"{name}-3"
    git(repo, "branch", f"{name}-3")
    git(repo, "branch", f"{name}-5")
    assert git_manager.preflight(repo, name, branch_given=False).branch == f"{name}-4"
    assert sorted(refs(repo)) == sorted(
        ["refs/heads/main"] + [f"refs/heads/{name}{s}" for s in ("", "-2", "-3", "-5")]
    )


def test_detached_head_is_allowed(repo: Path) -> None:
    first = head(repo)
    (repo / "second.txt").write_text("2\n")
    second = commit_all(repo, "second")
    git(repo, "checkout", "-q", "--detach", first)
    ws = git_manager.preflight(repo, "b", branch_given=True)
    assert ws.base_commit == first != second


def test_a_linked_worktree(repo: Path, tmp_path: Path) -> None:
    (repo / "more.txt").write_text("more\n")
    main_head = commit_all(repo, "more")
    wt = tmp_path / "worktree"
    git(repo, "worktree", "add", "-q", "-b", "wt-branch", str(wt), "HEAD~1")
    ws = git_manager.preflight(wt, "b", branch_given=True)
    assert ws.root == wt.resolve()
    assert ws.git_dir == (repo / ".git").resolve()
    assert ws.base_commit == head(wt) != main_head
    sub = git_manager.preflight(wt / "src", "b", branch_given=True)
    assert sub.git_dir == ws.git_dir
    (wt / "dirty.txt").write_text("x\n")
    with pytest.raises(PreconditionError, match=r"dirty\.txt"):
        git_manager.preflight(wt, "b", branch_given=True)


# ---------------------------------------------------------------- create and delete the branch


def test_create_and_delete_branch(repo: Path) -> None:
    before = snapshot(repo)
    ws = git_manager.preflight(repo, "task", branch_given=True)
    assert git_manager.create_branch(ws, branch_given=True) == ws
    assert head(repo, "refs/heads/task") == ws.base_commit
    assert git_manager.branch_head(ws) == ws.base_commit
    assert git(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert snapshot(repo) == before
    assert git_manager.delete_branch(ws) is True
    assert refs(repo) == ["refs/heads/main"]
    assert git_manager.delete_branch(ws) is False
    assert snapshot(repo) == before


def test_create_fails_when_the_branch_exists(repo: Path) -> None:
    ws = git_manager.preflight(repo, "task", branch_given=True)
    git(repo, "branch", "task")  # made by someone else meanwhile
    (repo / "x.txt").write_text("x\n")
    commit_all(repo, "x")
    git(repo, "branch", "-f", "task", "HEAD")
    moved = head(repo, "task")
    with pytest.raises(PreconditionError, match="branch 'task' already exists"):
        git_manager.create_branch(ws, branch_given=True)
    assert head(repo, "task") == moved


def test_create_twice_fails(repo: Path) -> None:
    ws = task_workspace(repo)
    with pytest.raises(PreconditionError):
        git_manager.create_branch(ws, branch_given=True)
    assert head(repo, "task") == ws.base_commit


def test_a_branch_that_moved_is_not_deleted(repo: Path) -> None:
    ws = task_workspace(repo)
    (repo / "x.txt").write_text("x\n")
    new = commit_all(repo, "x")
    git(repo, "update-ref", "refs/heads/task", new)
    assert git_manager.delete_branch(ws) is False
    assert head(repo, "refs/heads/task") == new


# ---------------------------------------------------------------- diff statistics


def numstat(repo: Path, base: str, head_: str) -> dict[str, tuple[str, str, str | None]]:
    """path -> (added, removed, old path) from git's own -z output, parsed here."""
    out = subprocess.run(
        ["git", "-C", str(repo), "diff", "--numstat", "-z", "-M", base, head_],
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8")
    fields = out.split("\0")
    found: dict[str, tuple[str, str, str | None]] = {}
    i = 0
    while i < len(fields) and fields[i]:
        added, removed, path = fields[i].split("\t")
        if path:
            found[path] = (added, removed, None)
            i += 1
        else:
            found[fields[i + 2]] = (added, removed, fields[i + 1])
            i += 3
    return found


def test_diff_stats(tmp_path: Path) -> None:
    long_text = "".join(f"line {n}\n" for n in range(40))
    repo = make_repo(
        tmp_path / "project",
        {
            "keep.txt": "a\nb\nc\n",
            "gone.txt": "1\n2\n3\n4\n",
            "old name.txt": long_text,
            "image.bin": b"\x89PNG\r\n\x1a\n\x00\x01\x02" * 10,
            "dir with space/ünïcode €.md": "hello\n",
        },
    )
    ws = git_manager.preflight(repo, "task", branch_given=True)
    (repo / "keep.txt").write_text("a\nB\nc\nd\n")
    (repo / "gone.txt").unlink()
    (repo / "new dir").mkdir()
    (repo / "old name.txt").rename(repo / "new dir" / "new name.txt")
    (repo / "new dir" / "new name.txt").write_text(long_text.replace("line 7\n", "line seven\n"))
    (repo / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x03\x04" * 12)
    (repo / "added.dat").write_bytes(bytes(range(256)))
    (repo / "dir with space" / "ünïcode €.md").write_text("hello\nworld\n")
    (repo / "añadido ü.txt").write_text("uno\ndos\n")
    (repo / "empty.txt").write_text("")
    new_head = commit_all(repo, "changes")
    changes = git_manager.diff_stats(ws, new_head)
    by_path = {c.path: c for c in changes}
    expected = numstat(repo, ws.base_commit, new_head)
    assert set(by_path) == set(expected)
    assert len(changes) == len(expected) == 8
    for path, (added, removed, old_path) in expected.items():
        change = by_path[path]
        assert change.old_path == old_path, path
        if added == "-":
            assert change.binary, path
            assert (change.added, change.removed) == (None, None), path
        else:
            assert not change.binary, path
            assert (change.added, change.removed) == (int(added), int(removed)), path
    statuses = {path: c.status for path, c in by_path.items()}
    assert statuses == {
        "keep.txt": "modified",
        "gone.txt": "deleted",
        "new dir/new name.txt": "renamed",
        "image.bin": "modified",
        "added.dat": "added",
        "dir with space/ünïcode €.md": "modified",
        "añadido ü.txt": "added",
        "empty.txt": "added",
    }
    assert by_path["new dir/new name.txt"].old_path == "old name.txt"
    renamed = by_path["new dir/new name.txt"]
    assert (renamed.added, renamed.removed) == (1, 1)
    assert (by_path["keep.txt"].added, by_path["keep.txt"].removed) == (2, 1)
    assert (by_path["gone.txt"].added, by_path["gone.txt"].removed) == (0, 4)
    assert by_path["added.dat"].binary
    assert by_path["image.bin"].binary
    assert (by_path["empty.txt"].added, by_path["empty.txt"].removed) == (0, 0)


def test_diff_stats_of_no_change(repo: Path) -> None:
    ws = git_manager.preflight(repo, "task", branch_given=True)
    assert git_manager.diff_stats(ws, ws.base_commit) == []


def test_diff_stats_with_a_renamed_binary_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 8
    repo = make_repo(tmp_path / "p", {"a.bin": data, "b.txt": "x\n"})
    ws = git_manager.preflight(repo, "task", branch_given=True)
    git(repo, "mv", "a.bin", "moved bin.bin")
    git(repo, "mv", "b.txt", "c.txt")
    new_head = commit_all(repo, "renames")
    changes = {c.path: c for c in git_manager.diff_stats(ws, new_head)}
    assert (
        set(changes)
        == set(numstat(repo, ws.base_commit, new_head))
        == {
            "moved bin.bin",
            "c.txt",
        }
    )
    assert changes["moved bin.bin"].status == "renamed"
    assert changes["moved bin.bin"].old_path == "a.bin"
    assert changes["moved bin.bin"].binary
    assert changes["c.txt"].status == "renamed"
    assert changes["c.txt"].old_path == "b.txt"
    assert (changes["c.txt"].added, changes["c.txt"].removed) == (0, 0)


# ---------------------------------------------------------------- import of the result bundle


def agent_clone(repo: Path, dest: Path, branch: str = "task") -> Path:
    """What the container does: its own clone of the task branch, with its own identity."""
    subprocess.run(
        ["git", "clone", "-q", "--branch", branch, str(repo), str(dest)],
        check=True,
        capture_output=True,
    )
    git(dest, "config", "user.name", "agent-worker")
    git(dest, "config", "user.email", "agent-worker@localhost")
    return dest


def test_import_bundle_fast_forwards_the_task_branch(repo: Path, tmp_path: Path) -> None:
    ws = task_workspace(repo)
    before = snapshot(repo)
    clone = agent_clone(repo, tmp_path / "clone")
    (clone / "hello.py").write_text("print('hello')\n")
    commit_all(clone, "add hello")
    (clone / "src" / "app.py").write_text("def greet():\n    return 'hi'\n")
    agent_head = commit_all(clone, "edit app")
    bundle = tmp_path / "b.bundle"
    git(clone, "bundle", "create", "-q", str(bundle), f"{ws.base_commit}..HEAD")

    new_head = git_manager.import_bundle(ws, bundle)

    assert new_head == agent_head
    assert head(repo, "refs/heads/task") == agent_head
    assert git(repo, "rev-list", f"{ws.base_commit}..task") == git(
        clone, "rev-list", f"{ws.base_commit}..HEAD"
    )
    assert snapshot(repo) == before
    assert git(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert not (repo / ".git" / "FETCH_HEAD").exists()
    assert sorted(refs(repo)) == ["refs/heads/main", "refs/heads/task"]


def has_object(repo: Path, oid: str) -> bool:
    done = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", oid], check=False)
    return done.returncode == 0


def test_nothing_but_the_branch_comes_back(repo: Path, tmp_path: Path) -> None:
    ws = task_workspace(repo)
    before = snapshot(repo)
    clone = agent_clone(repo, tmp_path / "clone")
    hook = clone / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\ntouch /tmp/pwned\n")
    hook.chmod(0o755)
    git(clone, "config", "core.hooksPath", "/tmp/evil-hooks")
    git(clone, "config", "agentworker.evil", "true")
    (clone / "work.txt").write_text("work\n")
    agent_head = commit_all(clone, "work")
    git(clone, "tag", "v-evil")
    git(clone, "tag", "-a", "-m", "annotated", "v-annotated")
    git(clone, "branch", "other")
    git(clone, "checkout", "-q", "other")
    (clone / "other.txt").write_text("objects of another branch\n")
    other_head = commit_all(clone, "other")
    other_blob = git(clone, "rev-parse", "other:other.txt").strip()
    git(clone, "checkout", "-q", "task")
    bundle = tmp_path / "b.bundle"
    git(
        clone,
        "bundle",
        "create",
        "-q",
        str(bundle),
        f"{ws.base_commit}..HEAD",
        "other",
        "v-evil",
        "v-annotated",
    )
    assert len(git(clone, "bundle", "list-heads", str(bundle)).splitlines()) == 4

    assert git_manager.import_bundle(ws, bundle) == agent_head

    assert sorted(refs(repo)) == ["refs/heads/main", "refs/heads/task"]
    assert git(repo, "tag", "--list") == ""
    config = (repo / ".git" / "config").read_text()
    assert "evil" not in config
    assert "hooksPath" not in config
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()
    assert snapshot(repo) == before
    assert not (repo / ".git" / "FETCH_HEAD").exists()
    assert has_object(repo, agent_head)
    for only_the_others in (other_head, other_blob):  # in the bundle's pack, not in the repo
        assert not has_object(repo, only_the_others)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("import-")] == []


def test_a_bundle_whose_head_is_not_the_reported_one_is_refused(repo: Path, tmp_path: Path) -> None:
    ws = task_workspace(repo)
    clone = agent_clone(repo, tmp_path / "clone")
    (clone / "work.txt").write_text("work\n")
    agent_head = commit_all(clone, "work")
    bundle = tmp_path / "b.bundle"
    git(clone, "bundle", "create", "-q", str(bundle), f"{ws.base_commit}..HEAD")
    with pytest.raises(GitError, match="not the head the task reported"):
        git_manager.import_bundle(ws, bundle, expected=ws.base_commit)
    assert head(repo, "refs/heads/task") == ws.base_commit
    assert not has_object(repo, agent_head)
    assert git_manager.import_bundle(ws, bundle, expected=agent_head) == agent_head


@pytest.mark.parametrize("how", ["orphan", "amended base"])
def test_a_bundle_that_does_not_descend_from_base_is_refused(
    repo: Path, tmp_path: Path, how: str
) -> None:
    ws = task_workspace(repo)
    before = snapshot(repo)
    clone = agent_clone(repo, tmp_path / "clone")
    if how == "orphan":
        git(clone, "checkout", "-q", "--orphan", "elsewhere")
        (clone / "other.txt").write_text("unrelated history\n")
        commit_all(clone, "unrelated")
    else:
        (clone / "README.md").write_text("# rewritten\n")
        git(clone, "add", "-A")
        git(clone, "commit", "-q", "--amend", "-m", "rewritten base")
    assert head(clone) != ws.base_commit
    bundle = tmp_path / "b.bundle"
    git(clone, "bundle", "create", "-q", str(bundle), "HEAD")
    with pytest.raises(GitError):
        git_manager.import_bundle(ws, bundle)
    assert head(repo, "refs/heads/task") == ws.base_commit
    assert snapshot(repo) == before
    assert not (repo / ".git" / "FETCH_HEAD").exists()


def test_an_import_refusal_names_the_git_command(repo: Path, tmp_path: Path) -> None:
    ws = task_workspace(repo)
    clone = agent_clone(repo, tmp_path / "clone")
    git(clone, "checkout", "-q", "--orphan", "elsewhere")
    commit_all(clone, "unrelated")
    bundle = tmp_path / "b.bundle"
    git(clone, "bundle", "create", "-q", str(bundle), "HEAD")
    with pytest.raises(GitError, match="does not descend from the base"):
        git_manager.import_bundle(ws, bundle)
    assert head(repo, "refs/heads/task") == ws.base_commit


def test_an_import_never_overwrites_a_branch_moved_meanwhile(repo: Path, tmp_path: Path) -> None:
    ws = task_workspace(repo)
    clone = agent_clone(repo, tmp_path / "clone")
    (clone / "agent.txt").write_text("agent\n")
    commit_all(clone, "the agent's")
    bundle = tmp_path / "b.bundle"
    git(clone, "bundle", "create", "-q", str(bundle), f"{ws.base_commit}..HEAD")
    (repo / "user.txt").write_text("user\n")
    git(repo, "add", "user.txt")
    moved = git(
        repo, "commit-tree", "-p", ws.base_commit, "-m", "user's", git(repo, "write-tree").strip()
    ).strip()
    git(repo, "reset", "-q")
    (repo / "user.txt").unlink()
    git(repo, "update-ref", "refs/heads/task", moved)
    with pytest.raises(GitError, match="moved while the agent worked"):
        git_manager.import_bundle(ws, bundle)
    assert head(repo, "refs/heads/task") == moved


def test_a_damaged_bundle_is_refused(repo: Path, tmp_path: Path) -> None:
    ws = task_workspace(repo)
    bundle = tmp_path / "b.bundle"
    bundle.write_bytes(b"# v2 git bundle\nnot really\n")
    with pytest.raises(GitError):
        git_manager.import_bundle(ws, bundle)
    assert head(repo, "refs/heads/task") == ws.base_commit


# ---------------------------------------------------------------- identity


@pytest.fixture
def no_global_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    return home


def test_user_identity_from_the_repository(repo: Path, no_global_config: Path) -> None:
    assert git_manager.user_identity(repo) == ("Test User", "test@example.com")
    assert git_manager.user_identity(repo / "src") == ("Test User", "test@example.com")


def test_user_identity_missing(repo: Path, no_global_config: Path) -> None:
    git(repo, "config", "--unset", "user.name")
    git(repo, "config", "--unset", "user.email")
    assert git_manager.user_identity(repo) is None


def test_user_identity_needs_both(repo: Path, no_global_config: Path) -> None:
    git(repo, "config", "--unset", "user.email")
    assert git_manager.user_identity(repo) is None


def test_user_identity_from_the_global_config(repo: Path, no_global_config: Path) -> None:
    git(repo, "config", "--unset", "user.name")
    (no_global_config / ".gitconfig").write_text("[user]\n\tname = Global Name\n")
    assert git_manager.user_identity(repo) == ("Global Name", "test@example.com")


# ---------------------------------------------------------------- repositories as users have them


def test_a_generated_name_lost_to_a_concurrent_run_moves_on(repo: Path) -> None:
    ws = git_manager.preflight(repo, "agent-task-1", branch_given=False)
    git(repo, "branch", "agent-task-1")  # the other run, started in the same second, won
    mine = git_manager.create_branch(ws, branch_given=False)
    assert mine.branch == "agent-task-1-2"
    assert head(repo, "refs/heads/agent-task-1-2") == ws.base_commit
    # cleaning up deletes only the branch this run made, never the winner's
    assert git_manager.delete_branch(mine) is True
    assert refs(repo) == ["refs/heads/agent-task-1", "refs/heads/main"]


def test_a_given_name_lost_to_a_concurrent_run_is_an_error(repo: Path) -> None:
    ws = git_manager.preflight(repo, "mine", branch_given=True)
    git(repo, "branch", "mine")
    with pytest.raises(PreconditionError, match=r"'mine' already exists \(made meanwhile\)"):
        git_manager.create_branch(ws, branch_given=True)
    assert "refs/heads/mine" in refs(repo)


@pytest.mark.parametrize(
    ("existing", "wanted", "message"),
    [
        ("a", "a/b", "branch 'a' exists, and a branch name cannot also be a folder"),
        ("a/b/c", "a/b", "branch 'a/b/c' exists, so 'a/b' is a folder of branches"),
    ],
)
def test_a_branch_that_clashes_with_a_folder_is_refused_in_preflight(
    repo: Path, existing: str, wanted: str, message: str
) -> None:
    git(repo, "branch", existing)
    with pytest.raises(PreconditionError, match=message):
        git_manager.preflight(repo, wanted, branch_given=True)
    if existing == "a/b/c":  # a numbered variant of a generated name is free
        assert git_manager.preflight(repo, wanted, branch_given=False).branch == f"{wanted}-2"
    else:  # no numbered variant is: "a" stays a branch
        with pytest.raises(PreconditionError, match="numbered variants: choose a --branch"):
            git_manager.preflight(repo, wanted, branch_given=False)


def test_a_bare_repository_says_so(tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    with pytest.raises(PreconditionError, match="is a bare repository: agent-worker needs a"):
        git_manager.preflight(bare, "task", branch_given=True)


def test_a_repository_of_another_user_says_why(repo: Path) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root to give the repository to another user")
    subprocess.run(["chown", "-R", "65534:65534", str(repo)], check=True)
    with pytest.raises(PreconditionError, match=r"belongs to another user \(dubious ownership\)"):
        git_manager.preflight(repo, "task", branch_given=True)


def test_untracked_files_get_the_stash_u_advice(repo: Path) -> None:
    (repo / "new.txt").write_text("x\n")
    with pytest.raises(PreconditionError, match=r"git stash -u \(plain git stash leaves"):
        git_manager.preflight(repo, "task", branch_given=True)
    (repo / "new.txt").unlink()
    (repo / "README.md").write_text("changed\n")
    with pytest.raises(PreconditionError, match=r"\(M README.md\): commit or stash them$"):
        git_manager.preflight(repo, "task", branch_given=True)


def test_a_sha256_repository(tmp_path: Path) -> None:
    repo = tmp_path / "sha256"
    repo.mkdir()
    git(repo, "init", "-q", "--object-format=sha256", "-b", "main")
    (repo / "f.txt").write_text("x\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=T", "-c", "user.email=t@e", "commit", "-qm", "one")
    ws = git_manager.preflight(repo, "task", branch_given=True)
    assert ws.object_format == "sha256"
    assert len(ws.base_commit) == 64
    assert ws.zero_id == "0" * 64
    ws = git_manager.create_branch(ws, branch_given=True)
    assert head(repo, "refs/heads/task") == ws.base_commit
    assert git_manager.delete_branch(ws) is True


def fresh_checkout(ws: Workspace, src: git_manager.Source, pack: Path | None, dest: Path) -> Path:
    """What container/agent_inside.sh does with a Source, done here on the host."""
    dest.mkdir()
    git(dest, "init", "-q", f"--object-format={ws.object_format}", f"--initial-branch={ws.branch}")
    if pack is not None:
        subprocess.run(
            ["git", "-C", str(dest), "index-pack", "--stdin"],
            stdin=pack.open("rb"),
            capture_output=True,
            check=True,
        )
    else:
        (dest / ".git" / "objects" / "info" / "alternates").write_text(
            "".join(f"{d}\n" for d in src.object_dirs)
        )
    if src.shallow:
        (dest / ".git" / "shallow").write_bytes(src.shallow)
    git(dest, "update-ref", f"refs/heads/{ws.branch}", ws.base_commit)
    git(dest, "reset", "-q", "--hard")
    return dest


def test_a_shallow_repository_packs_and_checks_out(tmp_path: Path) -> None:
    origin = make_repo(tmp_path / "origin", {"a.txt": "1\n"})
    for n in range(2, 5):
        (origin / "a.txt").write_text(f"{n}\n")
        commit_all(origin, f"c{n}")
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(shallow))
    ws = git_manager.create_branch(
        git_manager.preflight(shallow, "task", branch_given=True), branch_given=True
    )
    src = git_manager.source(ws)
    assert src.shallow.decode().strip() == ws.base_commit
    pack = tmp_path / "source.pack"
    git_manager.pack_branch(ws, pack)
    inside = fresh_checkout(ws, src, pack, tmp_path / "inside")
    assert (inside / "a.txt").read_text() == "4\n"
    assert git(inside, "rev-list", "--count", "HEAD").strip() == "1"
    assert git(inside, "fsck", "--connectivity-only", check=False) is not None


def test_a_pack_holds_the_branch_and_nothing_else(repo: Path, tmp_path: Path) -> None:
    git(repo, "checkout", "-q", "-b", "secret-work")
    (repo / "secret.txt").write_text("the other branch's secret\n")
    secret = commit_all(repo, "secret")
    git(repo, "checkout", "-q", "main")
    ws = task_workspace(repo)
    pack = tmp_path / "source.pack"
    git_manager.pack_branch(ws, pack)
    inside = fresh_checkout(ws, git_manager.source(ws), pack, tmp_path / "inside")
    assert git(inside, "cat-file", "-e", secret, check=False) == ""
    missing = subprocess.run(["git", "-C", str(inside), "cat-file", "-e", secret], check=False)
    assert missing.returncode != 0
    assert (inside / "src" / "app.py").is_file()


def test_borrowed_objects_are_part_of_the_source(tmp_path: Path) -> None:
    origin = make_repo(tmp_path / "origin", {"a.txt": "1\n"})
    borrowing = tmp_path / "borrowing"
    git(tmp_path, "clone", "-q", "--shared", str(origin), str(borrowing))
    ws = task_workspace(borrowing)
    src = git_manager.source(ws)
    assert src.object_dirs == (ws.git_dir / "objects", (origin / ".git" / "objects").resolve())
    inside = fresh_checkout(ws, src, None, tmp_path / "inside")
    assert (inside / "a.txt").read_text() == "1\n"


def test_a_partial_clone_is_packed(tmp_path: Path) -> None:
    origin = make_repo(tmp_path / "origin", {"a.txt": "1\n"})
    git(origin, "config", "uploadpack.allowFilter", "true")
    partial = tmp_path / "partial"
    git(tmp_path, "clone", "-q", "--filter=blob:none", f"file://{origin}", str(partial))
    ws = task_workspace(partial)
    src = git_manager.source(ws)
    assert src.partial
    pack = tmp_path / "source.pack"
    git_manager.pack_branch(ws, pack)  # fetches what the pack needs from the promisor remote
    inside = fresh_checkout(ws, src, pack, tmp_path / "inside")
    assert (inside / "a.txt").read_text() == "1\n"


def test_ignore_rules_outside_the_tree_are_part_of_the_source(repo: Path, tmp_path: Path) -> None:
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("build/\n")
    user_ignore = tmp_path / "global-ignore"
    user_ignore.write_text("*.log\n.idea/\n")
    git(repo, "config", "core.excludesFile", str(user_ignore))
    ws = task_workspace(repo)
    exclude = git_manager.source(ws).exclude.decode()
    assert "build/" in exclude
    assert "*.log" in exclude
    assert ".idea/" in exclude


def test_an_excludes_file_under_home_is_found_and_a_plain_clone_is_not_partial(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "ignore-rules").write_text("*.swp\n")
    monkeypatch.setenv("HOME", str(home))
    git(repo, "config", "core.excludesFile", "~/ignore-rules")
    src = git_manager.source(task_workspace(repo))
    assert "*.swp" in src.exclude.decode()
    assert not src.partial


# ---------------------------------------------------------------- --push


def test_push_to_a_bare_repository_and_to_one_that_is_not_there(repo: Path, tmp_path: Path) -> None:
    ws = task_workspace(repo, "agent/pushed")
    (repo / "new.txt").write_text("x\n")
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    assert git_manager.push(ws, str(bare)).problem is None
    assert head(bare, "refs/heads/agent/pushed") == head(repo, "agent/pushed")
    assert git(bare, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/agent/pushed"]
    problem = git_manager.push(ws, str(tmp_path / "missing.git")).problem
    assert problem is not None
    assert "does not appear to be a git repository" in problem
    command = git_manager.push_command(ws, str(tmp_path / "later.git"))
    recording_remote(tmp_path / "later.git", advertise=True)
    subprocess.run(command, check=True, capture_output=True)  # the retry command, as printed
    assert head(tmp_path / "later.git", "refs/heads/agent/pushed") == head(repo, "agent/pushed")
    assert sent(tmp_path / "later.git") == (["ci.skip"], ["1"])


def test_a_push_asks_the_server_to_skip_ci_unless_told_not_to(repo: Path, tmp_path: Path) -> None:
    ws = task_workspace(repo, "agent/ci")
    remote = recording_remote(tmp_path / "gitlab-like.git", advertise=True)
    assert git_manager.push(ws, str(remote)) == git_manager.Pushed(None, skip_ci=True)
    assert sent(remote) == (["ci.skip"], ["1"])
    assert head(remote, "refs/heads/agent/ci") == head(repo, "agent/ci")
    other = task_workspace(repo, "agent/ci-runs")
    assert git_manager.push(other, str(remote), skip_ci=False) == git_manager.Pushed(None, False)
    assert sent(remote) == (["ci.skip"], ["1", "0"])  # the second push: no options at all
    assert head(remote, "refs/heads/agent/ci-runs") == head(repo, "agent/ci-runs")
    assert "-o" not in git_manager.push_command(other, str(remote), skip_ci=False)


def test_a_server_that_takes_no_push_options_still_gets_the_branch(
    repo: Path, tmp_path: Path
) -> None:
    ws = task_workspace(repo, "agent/plain")
    remote = recording_remote(tmp_path / "plain.git", advertise=False)
    # git itself refuses the option before sending anything, so the push goes again without
    command = git_manager.push_command(ws, str(remote))
    refused = subprocess.run(command, capture_output=True, text=True, check=False)
    assert refused.returncode != 0
    assert "does not support push options" in refused.stderr
    assert sent(remote) == ([], [])
    assert git_manager.push(ws, str(remote)) == git_manager.Pushed(None, skip_ci=False)
    assert sent(remote) == ([], ["0"])
    assert head(remote, "refs/heads/agent/plain") == head(repo, "agent/plain")


def test_the_default_remote(repo: Path) -> None:
    ws = task_workspace(repo, "agent/x")
    assert git_manager.default_remote(ws) == "origin"
    git(repo, "config", "branch.main.remote", "upstream")
    assert git_manager.default_remote(ws) == "upstream"  # that of the branch checked out
    git(repo, "config", "branch.agent/x.remote", "mine")
    assert git_manager.default_remote(ws) == "mine"  # the task branch's own, first


@pytest.mark.parametrize("remote", ["nosuch", "-x", "--upload-pack=evil"])
def test_a_push_remote_that_is_not_one_is_refused(repo: Path, remote: str) -> None:
    with pytest.raises(UsageError, match="--push"):
        git_manager.check_remote(repo, remote)


@pytest.mark.parametrize("remote", ["origin", "../remote.git", "/srv/x.git", "git@host:x.git"])
def test_a_push_remote_may_be_a_name_a_path_or_a_url(repo: Path, remote: str) -> None:
    git(repo, "remote", "add", "origin", "/nowhere.git")
    git_manager.check_remote(repo, remote)


def test_files_trees_and_archives_at_a_commit(tmp_path: Path) -> None:
    import tarfile

    repo = make_repo(tmp_path / "r", {"d/f.txt": "one\n", "top.txt": "top\n"})
    commit = git(repo, "rev-parse", "HEAD").strip()
    (repo / "d" / "f.txt").write_text("changed in the working tree\n")
    assert git_manager.file_at(repo, commit, "d/f.txt") == b"one\n"
    assert git_manager.file_at(repo, commit, "d") is None
    assert git_manager.file_at(repo, commit, "missing") is None
    tree = git_manager.tree_id(repo, commit, "d")
    assert tree == git(repo, "rev-parse", f"{commit}:d").strip()
    assert git_manager.tree_id(repo, commit, ".") == git(repo, "rev-parse", "HEAD^{tree}").strip()
    assert git_manager.tree_id(repo, commit, "top.txt") is None
    assert git_manager.tree_id(repo, commit, "nowhere") is None
    git_manager.archive(repo, commit, "d", tmp_path / "d.tar")
    with tarfile.open(tmp_path / "d.tar") as tar:
        member = tar.extractfile("f.txt")
        assert member is not None
        assert member.read() == b"one\n"


def test_blobs_at_names_the_files_a_commit_has(repo: Path) -> None:
    (repo / ".devcontainer").mkdir()
    (repo / ".devcontainer" / "devcontainer.json").write_text("{}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "devcontainer")
    head = git(repo, "rev-parse", "HEAD").strip()
    asked = (".agent-worker/environment.toml", ".devcontainer/devcontainer.json", ".devcontainer")
    assert git_manager.blobs_at(repo, head, asked) == {".devcontainer/devcontainer.json"}
    assert git_manager.blobs_at(repo, f"{head}~1", asked) == set()
