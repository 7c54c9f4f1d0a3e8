"""Whole runs on repositories as users have them: concurrent runs, shallow CI checkouts, borrowed
objects, SHA-256, ignore rules outside the tree, submodules, and what the agent may see."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, containers_of, git, make_repo, run_cli, snapshot, tool_outputs
from fake_anthropic import FakeAnthropic, Turn, bash, write

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def branch_files(repo: Path, branch: str) -> list[str]:
    return git(repo, "ls-tree", "-r", "--name-only", branch).split()


def test_runs_started_in_the_same_second_each_get_their_own_branch(
    repo: Path, run_env: Callable[..., dict[str, str]], gateway: str, docker_client: Any
) -> None:
    """Shell loops and CI matrices start runs at once: three without --branch, at the same
    moment, all succeed on three branches, and none deletes another's."""
    fakes = [FakeAnthropic(host=gateway).__enter__() for _ in range(3)]
    try:
        procs = []
        empty = repo.parent / "empty.env"
        empty.touch()
        for i, fake in enumerate(fakes):
            fake.add_turns(
                Turn.tool_use(write(f"/workspace/run{i}.txt", f"{i}\n")), Turn.text("ok")
            )
            report = repo.parent / f"race-{i}.json"
            env = run_env(ANTHROPIC_BASE_URL=fake.url(gateway))
            argv = [sys.executable, str(ROOT / "agent_worker.py"), "--env-file", str(empty)]
            argv += ["--task", f"race {i}", "--json", "--report-file", str(report)]
            procs.append(
                subprocess.Popen(argv, cwd=repo, env=env, stdout=subprocess.PIPE, text=True)
            )
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for fake in fakes:
            fake.__exit__(None, None, None)
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    reports = [json.loads((repo.parent / f"race-{i}.json").read_text()) for i in range(3)]
    branches = [r["branch"] for r in reports]
    assert len(set(branches)) == 3
    for i, report in enumerate(reports):
        assert f"run{i}.txt" in branch_files(repo, report["branch"])
        assert containers_of(docker_client, report["run_id"]) == []


@pytest.mark.parametrize("workspace", ["copy", "auto"])
def test_a_shallow_ci_checkout(
    tmp_path: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], workspace: str
) -> None:
    origin = make_repo(tmp_path / "origin", {"app.py": "v = 1\n"})
    for n in range(2, 6):
        (origin / "app.py").write_text(f"v = {n}\n")
        commit_all(origin, f"v{n}")
    project = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(project))
    assert git(project, "rev-parse", "--is-shallow-repository").strip() == "true"
    fake_api.add_turns(
        Turn.tool_use(bash("git log --oneline | wc -l; cat app.py")),
        Turn.tool_use(write("/workspace/app.py", "v = 6\n")),
        Turn.text("bumped"),
    )
    before = snapshot(project)
    result = run_cli(
        ["--task", "bump", "--branch", "bump", "--workspace", workspace], cwd=project, env=run_env()
    )
    assert result.code == 0, result.stderr
    assert tool_outputs(fake_api)[0].split() == ["1", "v", "=", "5"]
    assert git(project, "show", "bump:app.py") == "v = 6\n"
    assert git(project, "rev-list", "--count", "bump").strip() == "2"
    assert snapshot(project) == before


def test_a_repository_that_borrows_its_objects(
    tmp_path: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    """git clone --shared / --reference, as CI runners with caches make them."""
    cache = make_repo(tmp_path / "cache", {"lib.py": "x = 1\n"})
    project = tmp_path / "borrowing"
    git(tmp_path, "clone", "-q", "--shared", str(cache), str(project))
    assert (project / ".git" / "objects" / "info" / "alternates").is_file()
    fake_api.add_turns(Turn.tool_use(write("/workspace/lib.py", "x = 2\n")), Turn.text("done"))
    result = run_cli(["--task", "edit", "--branch", "edited"], cwd=project, env=run_env())
    assert result.code == 0, result.stderr
    assert git(project, "show", "edited:lib.py") == "x = 2\n"


def test_a_sha256_repository(
    tmp_path: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    project = tmp_path / "sha256"
    project.mkdir()
    git(project, "init", "-q", "--object-format=sha256", "-b", "main")
    git(project, "config", "user.name", "T")
    git(project, "config", "user.email", "t@example.com")
    (project / "a.txt").write_text("a\n")
    base = commit_all(project, "one")
    fake_api.add_turns(Turn.tool_use(write("/workspace/b.txt", "b\n")), Turn.text("done"))
    for workspace in ("mount", "copy"):
        result = run_cli(
            ["--task", "add b", "--branch", f"b-{workspace}", "--workspace", workspace],
            cwd=project,
            env=run_env(),
        )
        assert result.code == 0, result.stderr
        assert result.report is not None
        assert len(result.report["head_commit"]) == 64
        assert git(project, "rev-parse", f"b-{workspace}~1").strip() == base
        assert git(project, "show", f"b-{workspace}:b.txt") == "b\n"
        fake_api.add_turns(Turn.tool_use(write("/workspace/b.txt", "b\n")), Turn.text("done"))


def test_ignore_rules_outside_the_tree_apply_to_the_agents_leftovers(
    repo: Path, tmp_path: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("build/\n")
    user_ignore = tmp_path / "user-ignore"
    user_ignore.write_text("*.log\n.idea/\n")
    git(repo, "config", "core.excludesFile", str(user_ignore))
    make = "mkdir -p build .idea && echo o > build/out.o && echo l > debug.log && echo i > .idea/ws"
    fake_api.add_turns(
        Turn.tool_use(bash(make)),
        Turn.tool_use(write("/workspace/src/real.py", "real = True\n")),
        Turn.text("done"),
    )
    result = run_cli(["--task", "build", "--branch", "built"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    assert branch_files(repo, "built") == ["README.md", "src/app.py", "src/real.py"]


def test_the_agent_sees_nothing_of_the_repository_but_its_branch(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    """Nothing of the host's git directory but objects: no config (CI keeps tokens there), hooks,
    other refs, stashes or earlier runs' data, whichever way the source is delivered."""
    git(repo, "config", "http.extraheader", "AUTHORIZATION: basic CONFIG" + "SECRET")
    hook = repo / ".git" / "hooks" / "pre-push"
    hook.write_text("#!/bin/sh\n# HOOK" + "SECRET\n")
    hook.chmod(0o755)
    git(repo, "branch", "other-BRANCH" + "SECRET")
    (repo / "README.md").write_text("stashed STASH" + "SECRET\n")
    git(repo, "stash", "-q")
    old_run = repo / ".git" / "agent-worker" / "runs" / "old"
    old_run.mkdir(parents=True)
    (old_run / "task.md").write_text("earlier RUN" + "SECRET\n")
    # the markers are put together inside, so the command itself does not contain them
    look = (
        "S=SECRET; for m in CONFIG HOOK BRANCH STASH RUN; do "
        "grep -rsl --exclude-dir=proc --exclude-dir=sys --exclude-dir=usr --exclude-dir=.claude "
        '"$m$S" / && echo "found $m"; done; '
        "git for-each-ref --format='%(refname)'; git stash list | wc -l; "
        "ls -A /source 2>&1; cat /source/config 2>&1 | head -1"
    )
    for workspace in ("mount", "copy"):
        fake_api.add_turns(Turn.tool_use(bash(look)), Turn.text("looked"))
        result = run_cli(
            ["--task", "look", "--branch", f"look-{workspace}", "--workspace", workspace],
            cwd=repo,
            env=run_env(),
        )
        assert result.code == 0, result.stderr
        seen = tool_outputs(fake_api)[0]
        assert "found" not in seen, seen
        assert "SECRET" not in seen, seen
        lines = seen.splitlines()
        assert lines[0] == f"refs/heads/look-{workspace}"
        assert lines[1] == "0"
        if workspace == "mount":
            assert lines[2] == "objects-0"  # the object store alone
        else:
            assert "No such file or directory" in lines[2]
        assert "No such file or directory" in lines[-1]


def test_changes_under_a_submodule_are_not_lost_silently(
    tmp_path: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    lib = make_repo(tmp_path / "lib", {"lib.py": "x = 1\n"})
    project = make_repo(tmp_path / "project", {"main.py": "main = 1\n"})
    git(project, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor")
    commit_all(project, "add the submodule")
    fake_api.add_turns(
        Turn.tool_use(bash("mkdir -p vendor && echo y > vendor/new.py && echo t > top.txt")),
        Turn.text("done"),
    )
    result = run_cli(["--task", "edit both", "--branch", "both"], cwd=project, env=run_env())
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert "top.txt" in branch_files(project, "both")
    assert not any(f.startswith("vendor/") for f in branch_files(project, "both"))
    warnings = " ".join(result.report["warnings"])
    assert "submodule vendor" in warnings
    assert "not kept" in warnings
