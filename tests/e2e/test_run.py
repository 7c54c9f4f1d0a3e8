"""Whole runs: the real CLI, the real image and Claude Code, the suite's fake Anthropic API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import TEST_KEY, containers_of, git, run_cli, snapshot, tool_outputs
from fake_anthropic import Turn, bash, edit, write


def numstat(repo: Path, base: str, head: str) -> dict[str, tuple[int | None, int | None]]:
    """git's own per-file counts, renames shown by their new path."""
    out = git(repo, "diff", "--numstat", "-z", "-M", base, head).split("\0")
    counts: dict[str, tuple[int | None, int | None]] = {}
    i = 0
    while i < len(out) and out[i]:
        added, removed, path = out[i].split("\t", 2)
        if not path:
            path, i = out[i + 2], i + 2
        counts[path] = (
            None if added == "-" else int(added),
            None if removed == "-" else int(removed),
        )
        i += 1
    return counts


def report_counts(report: dict[str, Any]) -> dict[str, tuple[int | None, int | None]]:
    return {f["path"]: (f["added"], f["removed"]) for f in report["changes"]["files"]}


def test_multi_turn_session_comes_back_on_the_branch(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    fake_api.add_turns(
        Turn.tool_use(write("/workspace/src/util.py", "def add(a, b):\n    return a + b\n")),
        Turn.tool_use(bash("git add src/util.py && git commit -q -m 'Add util'")),
        Turn.tool_use(edit("/workspace/src/app.py", "return 'hello'", "return 'hello, world'")),
        Turn.tool_use(write("/workspace/notes.txt", "one\ntwo\nthree\n")),
        Turn.text("Added util, changed the greeting, left notes."),
    )
    before = snapshot(repo)
    base = git(repo, "rev-parse", "HEAD").strip()

    result = run_cli(
        ["--task", "Improve the app", "--branch", "agent/improve"], cwd=repo, env=run_env()
    )

    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "success"
    assert report["exit_code"] == 0
    assert report["branch"] == "agent/improve"
    assert report["base_commit"] == base
    head = git(repo, "rev-parse", "agent/improve").strip()
    assert report["head_commit"] == head
    log = git(repo, "log", "--format=%s|%an|%ae", f"{base}..agent/improve").splitlines()
    assert log == [
        "agent-worker: work the agent left uncommitted|agent-worker|agent-worker@localhost",
        "Add util|agent-worker|agent-worker@localhost",
    ]
    assert (
        git(repo, "show", "agent/improve:src/app.py") == "def greet():\n    return 'hello, world'\n"
    )
    assert snapshot(repo) == before

    assert report_counts(report) == numstat(repo, base, head)
    changes = report["changes"]
    assert changes["files_changed"] == 3
    assert changes["lines_added"] == 2 + 1 + 3
    assert changes["lines_removed"] == 1
    served = fake_api.main_usage_total
    assert report["tokens"]["input"] == served.input_tokens
    assert report["tokens"]["output"] == served.output_tokens
    assert report["tokens"]["cache_read"] == served.cache_read_input_tokens
    assert report["tokens"]["cache_creation"] == served.cache_creation_input_tokens
    assert report["tokens"]["total"] == served.input_tokens + served.output_tokens
    assert report["turns"] == 5
    assert report["cost_usd"] > 0
    assert report["agent"]["session_id"]
    assert fake_api.saw_api_key(TEST_KEY)
    assert containers_of(docker_client, report["run_id"]) == []
    run_dir = Path(report["run_dir"])
    assert run_dir.parent == repo / ".git" / "agent-worker" / "runs"
    assert {p.name for p in run_dir.iterdir()} >= {
        "task.md",
        "agent.jsonl",
        "report.json",
        "agent-worker.log",
    }
    assert json.loads((run_dir / "report.json").read_text()) == report


def test_deletion_rename_binary_and_unusual_paths_in_one_run(
    tmp_path: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    from conftest import make_repo

    repo = make_repo(
        tmp_path / "p",
        {
            "old name.txt": "".join(f"line {i}\n" for i in range(20)),
            "gone.txt": "bye\nbye\n",
            "logo.bin": bytes(range(256)) * 4,
            "keep.txt": "keep\n",
        },
    )
    base = git(repo, "rev-parse", "HEAD").strip()
    fake_api.add_turns(
        Turn.tool_use(
            bash(
                "git mv 'old name.txt' 'dossier é/nouveau nom ü.txt' 2>/dev/null || "
                "(mkdir -p 'dossier é' && git mv 'old name.txt' "
                "'dossier é/nouveau nom ü.txt')"
            )
        ),
        Turn.tool_use(bash("git rm -q gone.txt && printf '\\x00\\x01\\x02' >> logo.bin")),
        Turn.tool_use(write("/workspace/naïve file.md", "accents ok\n")),
        Turn.text("Moved, deleted, changed a binary, added a file."),
    )
    result = run_cli(["--task", "Reorganise"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    head = report["head_commit"]
    files = {f["path"]: f for f in report["changes"]["files"]}
    assert files["dossier é/nouveau nom ü.txt"]["status"] == "renamed"
    assert files["dossier é/nouveau nom ü.txt"]["old_path"] == "old name.txt"
    assert files["gone.txt"]["status"] == "deleted"
    assert files["gone.txt"]["removed"] == 2
    assert files["logo.bin"]["binary"] is True
    assert files["logo.bin"]["added"] is None
    assert files["naïve file.md"]["status"] == "added"
    assert report_counts(report) == numstat(repo, base, head)
    assert report["changes"]["files_changed"] == 4
    assert "R old name.txt -> dossier é/nouveau nom ü.txt" in result.stdout
    assert "logo.bin" in result.stdout
    assert "binary" in result.stdout


def test_an_agent_that_changes_nothing(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    fake_api.add_turns(Turn.text("Nothing to do."))
    base = git(repo, "rev-parse", "HEAD").strip()
    result = run_cli(["--task", "Look around", "--branch", "idle"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert result.report["status"] == "success"
    assert result.report["head_commit"] == base
    assert result.report["changes"]["files_changed"] == 0
    assert git(repo, "rev-parse", "idle").strip() == base
    assert "no changes" in result.stdout
    assert containers_of(docker_client, result.report["run_id"]) == []


def test_an_agent_that_fails_exits_1_with_its_error(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    fake_api.add_turns(
        Turn.tool_use(write("/workspace/partial.txt", "started\n")),
        Turn.error(500, message="the fake backend broke", headers={"x-should-retry": "false"}),
    )
    result = run_cli(["--task", "Try", "--branch", "broken"], cwd=repo, env=run_env())
    assert result.code == 1, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "failed"
    assert "the fake backend broke" in report["error"]
    assert "the fake backend broke" in result.stderr
    assert git(repo, "show", "broken:partial.txt") == "started\n"
    assert containers_of(docker_client, report["run_id"]) == []


def test_timeout_stops_the_agent_and_keeps_its_commits(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    fake_api.add_turns(
        Turn.tool_use(bash("echo one > one.txt && git add one.txt && git commit -qm 'First step'")),
        Turn.tool_use(write("/workspace/two.txt", "uncommitted\n")),
        Turn.text("never sent in time", delay=120),
    )
    result = run_cli(
        ["--task", "Slow work", "--branch", "slow", "--timeout", "6"],
        cwd=repo,
        env=run_env(),
        timeout=120,
    )
    assert result.code == 124, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "timeout"
    assert "did not finish within 6s" in report["error"]
    log = git(repo, "log", "--format=%s", "main..slow").splitlines()
    assert log == ["agent-worker: work the agent left uncommitted", "First step"]
    assert git(repo, "show", "slow:two.txt") == "uncommitted\n"
    assert containers_of(docker_client, report["run_id"]) == []


def test_the_task_reaches_the_agent_verbatim(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    task = (
        "Fix \"quotes\" and 'single' ones; run $(touch /tmp/pwned) and `id` $HOME\n"
        "second line with \\backslash and a tab\there; * ? [ ] | & ; < > \u00e9\u4e2d\n"
    )
    marker = Path("/tmp/pwned")
    marker.unlink(missing_ok=True)
    fake_api.add_turns(Turn.text("ok"))
    result = run_cli(["--task", task], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    first = fake_api.main_requests[0].body
    texts = [
        block["text"]
        for message in first["messages"]
        if message["role"] == "user"
        for block in (
            message["content"]
            if isinstance(message["content"], list)
            else [{"text": message["content"]}]
        )
        if "text" in block
    ]
    assert any(task.strip() in text for text in texts), texts
    assert not marker.exists()
    run_dir = Path(result.report["run_dir"]) if result.report else None
    assert run_dir is not None
    assert (run_dir / "task.md").read_text(encoding="utf-8") == task


def test_a_task_longer_than_one_argument_can_be(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    task = "Read this carefully.\n" + "".join(f"{i:06d} lorem ipsum dolor\n" for i in range(8000))
    assert len(task.encode()) > 131072  # Linux's limit for one argv string
    task_file = tmp_path / "big-task.md"
    task_file.write_text(task)
    fake_api.add_turns(Turn.text("ok"))
    result = run_cli(["--task-file", str(task_file)], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    sent = json.dumps(fake_api.main_requests[0].body)
    assert json.dumps(task.strip())[1:-1] in sent


def test_two_runs_back_to_back_then_a_taken_branch(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    fake_api.add_turns(
        Turn.tool_use(write("/workspace/a.txt", "a\n")),
        Turn.text("one"),
        Turn.tool_use(write("/workspace/b.txt", "b\n")),
        Turn.text("two"),
    )
    first = run_cli(["--task", "one"], cwd=repo, env=run_env())
    second = run_cli(["--task", "two"], cwd=repo, env=run_env())
    assert first.code == 0, first.stderr
    assert second.code == 0, second.stderr
    assert first.report is not None
    assert second.report is not None
    assert first.report["branch"] != second.report["branch"]
    assert first.report["run_id"] != second.report["run_id"]
    assert git(repo, "ls-tree", "--name-only", first.report["branch"]).split() == [
        "README.md",
        "a.txt",
        "src",
    ]
    assert git(repo, "ls-tree", "--name-only", second.report["branch"]).split() == [
        "README.md",
        "b.txt",
        "src",
    ]
    before = snapshot(repo)
    branches = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    again = run_cli(
        ["--task", "three", "--branch", first.report["branch"]], cwd=repo, env=run_env()
    )
    assert again.code == 3
    assert f"branch '{first.report['branch']}' already exists" in again.stderr
    assert snapshot(repo) == before
    assert git(repo, "for-each-ref", "--format=%(refname) %(objectname)") == branches
    assert len(list((repo / ".git" / "agent-worker" / "runs").iterdir())) == 2


def test_json_output_matches_the_terminal_report(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    fake_api.add_turns(
        Turn.tool_use(write("/workspace/x.txt", "1\n2\n")),
        Turn.text("done"),
        Turn.tool_use(write("/workspace/x.txt", "1\n2\n")),
        Turn.text("done"),
    )
    text = run_cli(["--task", "t", "--branch", "as-text"], cwd=repo, env=run_env())
    as_json = run_cli(["--task", "t", "--branch", "as-json", "--json"], cwd=repo, env=run_env())
    assert text.code == as_json.code == 0
    payload = json.loads(as_json.stdout)
    assert payload == as_json.report
    assert payload["schema_version"] == 1
    report = text.report
    assert report is not None
    t = report["tokens"]
    assert f"Status   {report['status']} (exit 0)" in text.stdout
    assert f"{t['total']:,} total · {t['input']:,} in · {t['output']:,} out" in text.stdout
    assert f"${report['cost_usd']:.4f}" in text.stdout
    assert "+2 \u22120 in 1 file" in text.stdout
    assert payload["tokens"] == report["tokens"]
    assert payload["changes"]["lines_added"] == report["changes"]["lines_added"] == 2


def test_options_reach_the_agent(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    fake_api.add_turns(
        Turn.tool_use(
            bash(
                "date +%Z; echo TZ=$TZ; env | grep -c '^AW_ONLY_IN_DOTENV' || true; "
                "git -C /workspace config user.email; test -e /source; echo source=$?"
            )
        ),
        Turn.tool_use(bash("echo more")),
        Turn.tool_use(bash("echo never runs")),
    )
    (repo / ".gitignore").write_text(".env\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-qm", "ignore .env")
    (repo / ".env").write_text("AGENT_MAX_TURNS=2\nAW_ONLY_IN_DOTENV=leak\n")
    env = run_env(ANTHROPIC_MODEL="claude-test-model")
    result = run_cli(
        [
            "--task",
            "t",
            "--timezone",
            "Asia/Tokyo",
            "--git-identity",
            "user",
            "--workspace",
            "copy",
            "--env-file",
            str(repo / ".env"),
        ],
        cwd=repo,
        env=env,
    )
    report = result.report
    assert report is not None
    assert result.code == 1, result.stderr  # two turns allowed, the agent wanted a third
    assert "Reached maximum number of turns (2)" in report["error"]
    assert {r.model for r in fake_api.main_requests} == {"claude-test-model"}
    assert report["agent"]["model"] == "claude-test-model"
    tz, tz_var, leaked, email, source = tool_outputs(fake_api)[0].split("\n")[:5]
    assert tz == "JST"
    assert tz_var == "TZ=Asia/Tokyo"
    assert leaked == "0"
    assert email == "test@example.com"  # --git-identity user: the repository's own identity
    assert source == "source=1"  # --workspace copy: no mount of the repository


def test_a_detached_head_is_the_base(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    (repo / "later.txt").write_text("later\n")
    git(repo, "add", "later.txt")
    git(repo, "commit", "-qm", "later")
    first = git(repo, "rev-parse", "HEAD~1").strip()
    git(repo, "checkout", "-q", "--detach", first)
    before = snapshot(repo)
    fake_api.add_turns(Turn.tool_use(write("/workspace/d.txt", "d\n")), Turn.text("done"))
    result = run_cli(["--task", "t", "--branch", "from-detached"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert result.report["base_commit"] == first
    assert git(repo, "rev-parse", "from-detached~1").strip() == first
    assert snapshot(repo) == before  # still detached at the same commit
