"""Nothing lost, nothing left behind: signals, kill -9, crashes and API failures in real runs."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, TEST_KEY, containers_of, git, run_cli, snapshot
from fake_anthropic import Turn, bash, write


def start_cli(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    empty = cwd.parent / "empty.env"
    empty.touch()
    return subprocess.Popen(
        [sys.executable, str(ROOT / "agent_worker.py"), "--env-file", str(empty), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_requests(fake_api: Any, count: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while len(fake_api.main_requests) < count:
        assert time.monotonic() < end, "the agent never got that far"
        time.sleep(0.1)


def containers_of_project(docker_client: Any, repo: Path) -> list[Any]:
    return list(
        docker_client.containers.list(all=True, filters={"label": f"agent-worker.project={repo}"})
    )


SLOW_AFTER_A_COMMIT = [
    Turn.tool_use(bash("echo done > step1.txt && git add step1.txt && git commit -qm 'Step 1'")),
    Turn.tool_use(write("/workspace/step2.txt", "half done\n")),
    Turn.text("too late", delay=300),
]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_keeps_the_commits_and_exits_130(
    repo: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    docker_client: Any,
    sig: signal.Signals,
) -> None:
    fake_api.add_turns(*SLOW_AFTER_A_COMMIT)
    report_file = repo.parent / "report.json"
    proc = start_cli(
        ["--task", "work", "--branch", "stopped", "--report-file", str(report_file)],
        cwd=repo,
        env=run_env(),
    )
    wait_for_requests(fake_api, 3)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)  # a hang fails here, not a timing bound
    assert proc.returncode == 130, stderr
    report = json.loads(report_file.read_text())
    assert report["status"] == "interrupted"
    assert report["exit_code"] == 130
    assert git(repo, "log", "--format=%s", "main..stopped").splitlines() == [
        "agent-worker: work the agent left uncommitted",
        "Step 1",
    ]
    assert git(repo, "show", "stopped:step2.txt") == "half done\n"
    assert report["tokens"]["input"] == fake_api.main_usage_total.input_tokens
    assert "interrupted" in stdout
    assert containers_of(docker_client, report["run_id"]) == []


def test_the_agent_crashing_is_a_clear_failure(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    fake_api.add_turns(
        Turn.tool_use(bash("echo a > a.txt && git add a.txt && git commit -qm 'Before the crash'")),
        Turn.tool_use(bash("kill -SEGV $(pgrep -x claude)")),
        Turn.text("unreachable"),
    )
    result = run_cli(["--task", "crash", "--branch", "crashed"], cwd=repo, env=run_env())
    assert result.code == 1, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "failed"
    assert "Claude Code ended without a result" in report["error"]
    assert "killed by SIGSEGV" in report["error"]
    assert git(repo, "log", "--format=%s", "main..crashed").splitlines() == ["Before the crash"]
    assert (Path(report["run_dir"]) / "report.json").is_file()
    assert containers_of(docker_client, report["run_id"]) == []


NO_RETRY = {"x-should-retry": "false"}


@pytest.mark.parametrize(
    ("turn", "expected"),
    [
        (Turn.error(401, message="invalid x-api-key", headers=NO_RETRY), "Invalid API key"),
        (Turn.error(429, message="slow down please", headers=NO_RETRY), "slow down please"),
        (Turn.error(500, message="fake server exploded", headers=NO_RETRY), "fake server exploded"),
        (Turn.error(529, message="fake overload"), "529"),
    ],
    ids=["401", "429", "500", "529"],
)
def test_api_errors_fail_the_run_with_the_agents_words(
    repo: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    docker_client: Any,
    turn: Turn,
    expected: str,
) -> None:
    fake_api.when_exhausted = turn  # every attempt fails, retries included
    result = run_cli(["--task", "try", "--branch", "api-error"], cwd=repo, env=run_env())
    assert result.code == 1, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "failed"
    assert expected in report["error"]
    assert report["tokens"]["input"] == 0
    assert report["changes"]["files_changed"] == 0
    assert containers_of(docker_client, report["run_id"]) == []


def test_a_dropped_stream_is_retried_and_the_run_recovers(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    fake_api.add_turns(
        Turn.disconnect(), Turn.tool_use(write("/workspace/ok.txt", "ok\n")), Turn.text("recovered")
    )
    result = run_cli(["--task", "try"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert result.report["status"] == "success"
    assert len(fake_api.main_requests) == 3
    assert result.report["tokens"]["input"] == fake_api.main_usage_total.input_tokens


def test_nothing_the_agent_does_to_its_git_dir_reaches_the_host(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    evil = (
        "printf '#!/bin/sh\\necho pwned > /tmp/agent-worker-hook-ran\\n' "
        "> .git/hooks/post-checkout && chmod +x .git/hooks/post-checkout && "
        "cp .git/hooks/post-checkout .git/hooks/pre-commit && "
        "git config core.hooksPath .git/hooks && git config user.name Evil && "
        "git config alias.st '!echo pwned' && git remote add evil http://example.invalid && "
        "git tag evil-tag && git update-ref refs/heads/extra HEAD && "
        "echo x > x.txt && git add x.txt && git commit -qm 'Agent work'"
    )
    fake_api.add_turns(Turn.tool_use(bash(evil)), Turn.text("done"))
    marker = Path("/tmp/agent-worker-hook-ran")
    marker.unlink(missing_ok=True)
    before = snapshot(repo)
    refs_before = git(repo, "for-each-ref", "--format=%(refname)")
    result = run_cli(["--task", "meddle", "--branch", "meddled"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    assert snapshot(repo) == before  # hooks, config, HEAD, index and files all as they were
    refs_after = git(repo, "for-each-ref", "--format=%(refname)")
    assert refs_after == refs_before + "refs/heads/meddled\n"
    assert git(repo, "log", "--format=%s", "main..meddled").splitlines() == ["Agent work"]
    git(repo, "checkout", "-q", "meddled")
    git(repo, "checkout", "-q", "main")
    assert not marker.exists()


def test_the_api_key_appears_in_no_artifact_of_a_run(
    repo: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    docker_client: Any,
    agent_image: str,
) -> None:
    fake_api.add_turns(
        Turn.tool_use(bash("echo hi > hi.txt")),
        Turn.text("done", delay=4),
    )
    report_file = repo.parent / "secret-report.json"
    proc = start_cli(
        ["--task", "t", "--branch", "secret", "--debug", "--report-file", str(report_file)],
        cwd=repo,
        env=run_env(),
    )
    wait_for_requests(fake_api, 2)
    running = containers_of_project(docker_client, repo)
    assert len(running) == 1
    inspected = json.dumps(docker_client.api.inspect_container(running[0].id))
    listing = running[0].exec_run(["ls", "-A", "/agent-worker"], user="root").output.decode()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert fake_api.saw_api_key(TEST_KEY)  # it did reach the agent
    assert "secrets" not in listing
    history = json.dumps(
        [
            docker_client.api.inspect_image(layer["Id"])
            for layer in docker_client.api.history(agent_image)
            if layer["Id"] != "<missing>"
        ]
    )
    history += json.dumps(docker_client.api.history(agent_image))
    report = json.loads(report_file.read_text())
    run_dir = Path(report["run_dir"])
    run_files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert {p.name for p in run_files} >= {"agent.jsonl", "agent-worker.log", "report.json"}
    assert "agent-worker: debug:" in stderr
    for where, text in [
        ("inspect", inspected),
        ("history", history),
        ("stdout", stdout),
        ("stderr", stderr),
        ("report", report_file.read_text()),
    ]:
        assert TEST_KEY not in text, where
        assert TEST_KEY[-12:] not in text, where
    for path, data in run_files.items():
        assert TEST_KEY.encode() not in data, path


def test_a_key_the_agent_prints_is_redacted(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    fake_api.when_exhausted = Turn.error(
        401, message=f"key {TEST_KEY} is not valid", headers=NO_RETRY
    )
    result = run_cli(["--task", "t", "--debug"], cwd=repo, env=run_env())
    assert result.code == 1
    report = result.report
    assert report is not None
    masked = "sk-ant-\u2026" + TEST_KEY[-4:]
    assert masked in report["error"]
    assert TEST_KEY not in result.stderr + result.stdout + json.dumps(report)
    jsonl = (Path(report["run_dir"]) / "agent.jsonl").read_text()
    assert TEST_KEY not in jsonl
    assert masked in jsonl


def test_the_keys_encodings_the_agent_prints_are_redacted(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    """The key's base64, hex or URL-encoded forms in the agent's output (the agent never holds
    the key now: the API answers with them, as a gateway that echoes its credential could)
    leave none of those forms in the run's files or output."""
    forms = [
        base64.b64encode(TEST_KEY.encode()).decode()[:-4],
        base64.b64encode(b"x" + TEST_KEY.encode()).decode()[4:-4],
        TEST_KEY.encode().hex(),
    ]
    printed = [
        base64.b64encode(TEST_KEY.encode()).decode(),
        base64.b64encode(b"x" + TEST_KEY.encode()).decode(),
        TEST_KEY.encode().hex(),
    ]
    fake_api.add_turns(Turn.text("Here: " + " ".join(printed)))
    result = run_cli(["--task", "t", "--branch", "encoded", "--debug"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    assert result.report is not None
    run_dir = Path(result.report["run_dir"])
    written = {p: p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file()}
    assert any("[base64]" in text for text in written.values())
    for where, text in [
        *((str(p), t) for p, t in written.items()),
        ("stdout", result.stdout),
        ("stderr", result.stderr),
    ]:
        for form in [TEST_KEY, *forms]:
            assert form not in text, (where, form)


def test_an_agent_that_destroys_its_clone_gets_a_warning_not_a_crash(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    fake_api.add_turns(Turn.tool_use(bash("rm -rf .git && echo gone")), Turn.text("oops"))
    base = git(repo, "rev-parse", "HEAD").strip()
    result = run_cli(["--task", "t", "--branch", "wrecked"], cwd=repo, env=run_env())
    report = result.report
    assert report is not None
    assert result.code == 1, result.stderr  # the agent finished, but its work is lost: a failure
    assert report["status"] == "failed"
    assert "the container could not save the agent's work" in report["error"]
    assert "the branch stays at the base" in report["error"]
    assert report["head_commit"] == base
    assert git(repo, "rev-parse", "wrecked").strip() == base
    assert containers_of(docker_client, report["run_id"]) == []


def test_an_unreadable_repository_says_how_to_get_on(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    # umask 077: the container's agent user cannot read the mounted objects
    subprocess.run(["chmod", "-R", "go-rwx", str(repo / ".git")], check=True)
    result = run_cli(
        ["--task", "t", "--branch", "private", "--workspace", "mount"], cwd=repo, env=run_env()
    )
    report = result.report
    assert report is not None
    assert result.code == 3, result.stderr
    assert report["status"] == "error"
    assert "cannot check out the task branch" in report["error"]
    assert "not readable by other users" in report["error"]
    assert "--workspace copy" in report["error"]
    assert fake_api.main_requests == []
    assert containers_of(docker_client, report["run_id"]) == []
    assert git(repo, "branch", "--list", "private") == ""  # the agent never started
    # auto mode copies the branch in: no failure to begin with
    fake_api.add_turns(Turn.tool_use(write("/workspace/a.txt", "a\n")), Turn.text("done"))
    auto = run_cli(["--task", "t", "--branch", "private-auto"], cwd=repo, env=run_env())
    assert auto.code == 0, auto.stderr
    assert git(repo, "show", "private-auto:a.txt") == "a\n"

    fake_api.add_turns(Turn.tool_use(write("/workspace/p.txt", "p\n")), Turn.text("done"))
    copied = run_cli(
        ["--task", "t", "--branch", "private-copy", "--workspace", "copy"], cwd=repo, env=run_env()
    )
    assert copied.code == 0, copied.stderr
    assert git(repo, "show", "private-copy:p.txt") == "p\n"
