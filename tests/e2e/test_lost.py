"""A lost agent-worker (kill -9, a stopped process) costs nothing more and loses nothing: the
container stops its agent by itself, and the next run or --recover brings the work back; and
a container anyone made with agent-worker's labels (a shared engine, a CI runner) is not
recovered: it writes nothing outside a run directory, moves no branch, and is left alone."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_faults import containers_of_project, start_cli, wait_for_requests

from conftest import clean_env, git, run_cli, runtime_env
from fake_anthropic import Turn, bash, write

WORK_THEN_A_SLOW_ANSWER = [
    Turn.tool_use(bash("echo one > step1.txt && git add step1.txt && git commit -qm 'Step 1'")),
    Turn.tool_use(write("/workspace/step2.txt", "half done\n")),
    Turn.text("too late", delay=300),
    Turn.text("never asked for"),
]


def wait_until(check: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.2)
    return check()


def exited(docker_client: Any, repo: Path) -> bool:
    left = containers_of_project(docker_client, repo)
    return len(left) == 1 and left[0].status == "exited"


def kill_mid_run(repo: Path, fake_api: Any, env: dict[str, str], docker_client: Any) -> str:
    """Start a run, kill -9 it while the agent waits on the API; the run's id."""
    fake_api.add_turns(*WORK_THEN_A_SLOW_ANSWER)
    proc = start_cli(["--task", "work", "--branch", "lost"], cwd=repo, env=env)
    wait_for_requests(fake_api, 3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    # within 10 s the container has stopped its agent and exited, and the API hears no more
    assert wait_until(lambda: exited(docker_client, repo), 10.0)
    asked = len(fake_api.main_requests)
    time.sleep(2)
    assert len(fake_api.main_requests) == asked == 3
    left = containers_of_project(docker_client, repo)
    assert left[0].labels["agent-worker.pid"] == str(proc.pid)  # kept, for recovery
    return str(left[0].labels["agent-worker.run-id"])


def check_recovered(repo: Path, run_id: str, fake_api: Any) -> None:
    assert git(repo, "log", "--format=%s", "main..lost").splitlines() == [
        "agent-worker: work the agent left uncommitted",
        "Step 1",
    ]
    assert git(repo, "show", "lost:step2.txt") == "half done\n"
    report = json.loads(
        (repo / ".git" / "agent-worker" / "runs" / run_id / "report.json").read_text()
    )
    assert report["status"] == "interrupted"
    assert report["exit_code"] == 130
    assert report["branch"] == "lost"
    assert report["head_commit"] == git(repo, "rev-parse", "lost").strip()
    served = fake_api.main_usage_total
    assert report["tokens"]["input"] == served.input_tokens  # Claude Code's own final figures
    assert report["tokens"]["output"] == served.output_tokens
    assert report["changes"]["files_changed"] == 2


def test_a_killed_run_stops_spending_and_recover_brings_its_work_back(
    repo: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    docker_client: Any,
    runtime: str,
) -> None:
    run_id = kill_mid_run(repo, fake_api, run_env(**runtime_env(runtime)), docker_client)
    result = run_cli(["--recover"], cwd=repo, env=run_env(**runtime_env(runtime)))
    assert result.code == 0, result.stderr
    assert f"recovered 2 commits of run {run_id} onto branch lost" in result.stdout
    check_recovered(repo, run_id, fake_api)
    assert containers_of_project(docker_client, repo) == []
    again = run_cli(["--recover"], cwd=repo, env=run_env(**runtime_env(runtime)))
    assert "nothing to recover" in again.stdout


def test_the_next_run_recovers_a_killed_one_too(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    run_id = kill_mid_run(repo, fake_api, run_env(), docker_client)
    served = fake_api.main_usage_total
    fake_api.add_turns(Turn.text("quick"))
    result = run_cli(["--task", "next", "--branch", "next"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    assert f"recovered 2 commits of run {run_id} onto branch lost" in result.stderr
    report = json.loads(
        (repo / ".git" / "agent-worker" / "runs" / run_id / "report.json").read_text()
    )
    assert report["status"] == "interrupted"
    assert report["tokens"]["input"] == served.input_tokens
    assert git(repo, "show", "lost:step2.txt") == "half done\n"
    assert containers_of_project(docker_client, repo) == []


def test_a_stopped_agent_worker_cannot_keep_its_agent_past_the_deadline(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    """SIGSTOP: the process lives but does nothing, its timeout passes unnoticed; the task's own
    deadline (the timeout plus 10 s) ends the agent."""
    fake_api.add_turns(
        Turn.tool_use(write("/workspace/early.txt", "early\n")),
        Turn.text("too late", delay=300),
    )
    # 15 s: Claude Code's start on a loaded machine must not use up the timeout before its
    # second request, the signal to stop agent-worker
    proc = start_cli(
        ["--task", "slow", "--branch", "stopped", "--timeout", "15"], cwd=repo, env=run_env()
    )
    try:
        wait_for_requests(fake_api, 2)
        proc.send_signal(signal.SIGSTOP)
        assert wait_until(lambda: exited(docker_client, repo), 60.0)
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 124, err
    assert git(repo, "show", "stopped:early.txt") == "early\n"
    assert "the task's deadline passed: the task stopped its agent by itself" in out
    assert containers_of_project(docker_client, repo) == []


# ---------------------------------------------------------------- forged lost containers


def tar_of(files: dict[str, bytes]) -> bytes:
    """A tar of files at absolute paths, their directories included."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        dirs = sorted({str(Path(p).parent) for p in files} - {"/"})
        for directory in dirs:
            info = tarfile.TarInfo(directory.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, content in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


def dead_pid() -> str:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def forge(
    docker_client: Any, image: str, repo: Path, labels: dict[str, str], files: dict[str, bytes]
) -> Any:
    """A container as anyone who can use the engine can make one: agent-worker's labels, as
    the forger chose them, of a run of this host whose agent-worker is gone, and the files a
    task leaves where recovery reads them; exited, as a lost task is."""
    made = {
        "agent-worker.project": str(repo),
        "agent-worker.host": socket.gethostname(),
        "agent-worker.pid": dead_pid(),
        "agent-worker.deadline": str(int(time.time()) + 3600),
    }
    container = docker_client.containers.create(image, ["true"], labels=made | labels)
    container.put_archive("/", tar_of(files))
    container.start()
    container.wait(timeout=60)
    return container


def files_of(container: Any, *paths: str) -> dict[str, bytes]:
    """The files at paths (a file or a directory) in a container, by absolute path."""
    found = {}
    for path in paths:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    found[f"{Path(path).parent}/{member.name}"] = handle.read()
    return found


def evil_bundle(repo: Path, tmp_path: Path, onto: str) -> tuple[bytes, str]:
    """A bundle whose HEAD is a commit of the forger's on top of onto: (the bundle, its head)."""
    forger = tmp_path / "forger"
    git(tmp_path, "clone", "-q", str(repo), str(forger))
    git(forger, "checkout", "-q", "--detach", onto)
    (forger / "evil.txt").write_text("the forger's\n")
    git(forger, "add", "evil.txt")
    git(forger, "-c", "user.name=F", "-c", "user.email=f@example.com", "commit", "-qm", "evil")
    git(forger, "bundle", "create", "-q", str(tmp_path / "evil.bundle"), f"{onto}..HEAD")
    return (tmp_path / "evil.bundle").read_bytes(), git(forger, "rev-parse", "HEAD").strip()


def account(result: dict[str, Any], nonce: str | None) -> bytes:
    """A task's account of its end: its result line marked with nonce, or (None) bare JSON."""
    text = json.dumps(result)
    if nonce is None:
        return text.encode() + b"\n"
    return f"agent-worker-result {nonce} {base64.b64encode(text.encode()).decode()}\n".encode()


def refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def paths_under(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name != "empty.env" and not p.name.startswith("report-")
    }


def left_alone(container: Any) -> bool:
    container.reload()  # raises when it was removed
    return container.status == "exited"


def remove_all(containers: list[Any]) -> None:
    import docker.errors

    for container in containers:
        with contextlib.suppress(docker.errors.NotFound):  # recovered (wrongly) and removed
            container.remove(force=True)


def test_a_forged_run_id_that_is_a_path_writes_nothing_outside_the_run_directory(
    repo: Path, tmp_path: Path, base_image: str, docker_client: Any
) -> None:
    main = git(repo, "rev-parse", "main").strip()
    bundle, _ = evil_bundle(repo, tmp_path, main)
    files = {
        "/run/agent-worker-result.json": account({"phase": "agent", "bundle": True}, None),
        "/agent-worker/out/result.bundle": bundle,
    }
    outside = tmp_path / "elsewhere" / "evil"
    run_ids = ["../../../evil", "../../evil", str(outside), "20260101-000000-0000abcd/../../x"]
    labels = {"agent-worker.branch": "main", "agent-worker.base": main}
    (repo / ".git" / "agent-worker" / "runs").mkdir(parents=True)  # as after an earlier run
    before, refs_before = paths_under(tmp_path), refs(repo)
    forged = [
        forge(docker_client, base_image, repo, labels | {"agent-worker.run-id": r}, files)
        for r in run_ids
    ]
    try:
        result = run_cli(["--recover"], cwd=repo, env=clean_env())
        assert result.code == 0, result.stderr
        assert paths_under(tmp_path) == before  # nothing written anywhere: not even a run dir
        assert not (repo / "evil").exists()
        assert not outside.exists()
        assert refs(repo) == refs_before
        for run_id in run_ids:
            assert (
                f"warning: ignored a container that claims to be run '{run_id}' of this "
                f"repository: its run id '{run_id}' is not one agent-worker makes"
            ) in result.stderr
        assert "nothing to recover" in result.stdout
        assert all(left_alone(c) for c in forged)
    finally:
        remove_all(forged)


def test_forged_labels_that_point_at_another_branch_move_no_branch(
    repo: Path, tmp_path: Path, base_image: str, docker_client: Any
) -> None:
    """A well-formed run id this repository never had, its branch and base labels at main and
    main's tip, and a bundle of the forger's commit on top: main stays where it is."""
    main = git(repo, "rev-parse", "main").strip()
    git(repo, "branch", "release", main)  # another of the user's branches at the same tip
    bundle, evil = evil_bundle(repo, tmp_path, main)
    files = {
        "/run/agent-worker-result.json": account({"phase": "agent", "bundle": True}, None),
        "/agent-worker/out/result.bundle": bundle,
    }
    (repo / ".git" / "agent-worker" / "runs").mkdir(parents=True)
    before, refs_before = paths_under(tmp_path), refs(repo)
    forged = [
        forge(
            docker_client,
            base_image,
            repo,
            {
                "agent-worker.run-id": run_id,
                "agent-worker.branch": branch,
                "agent-worker.base": main,
            },
            files,
        )
        for run_id, branch in (
            ("20260101-000000-0000abcd", "main"),
            ("20260101-000001-0000abcd", "release"),
        )
    ]
    try:
        result = run_cli(["--recover"], cwd=repo, env=clean_env())
        assert result.code == 0, result.stderr
        assert refs(repo) == refs_before
        assert git(repo, "cat-file", "-t", evil, check=False) == ""  # not even its objects
        assert paths_under(tmp_path) == before
        for run_id in ("20260101-000000-0000abcd", "20260101-000001-0000abcd"):
            assert (
                f"warning: ignored a container that claims to be run '{run_id}' of this "
                f"repository: this repository has no run {run_id}"
            ) in result.stderr
        assert all(left_alone(c) for c in forged)
    finally:
        remove_all(forged)


def test_a_lost_task_relabelled_to_another_branch_is_recovered_onto_its_own(
    repo: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    docker_client: Any,
    base_image: str,
) -> None:
    """The real lost task's own result, nonce and all, in a container whose labels say main:
    its commits go onto the branch its run recorded, from the base it recorded."""
    main = git(repo, "rev-parse", "main").strip()
    run_id = kill_mid_run(repo, fake_api, run_env(), docker_client)
    (real,) = containers_of_project(docker_client, repo)
    files = files_of(real, "/run/agent-worker-result.json", "/agent-worker/out")
    labels = dict(real.labels) | {"agent-worker.branch": "main", "agent-worker.base": main}
    real.remove()
    forge(docker_client, base_image, repo, labels, files)
    try:
        result = run_cli(["--recover"], cwd=repo, env=run_env())
        assert result.code == 0, result.stderr
        assert f"recovered 2 commits of run {run_id} onto branch lost" in result.stdout
        assert git(repo, "rev-parse", "main").strip() == main
        check_recovered(repo, run_id, fake_api)
        assert containers_of_project(docker_client, repo) == []  # the run's own: removed
    finally:
        remove_all(containers_of_project(docker_client, repo))


def test_a_forged_result_with_another_nonce_is_ignored_and_the_real_one_recovered(
    repo: Path,
    tmp_path: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    docker_client: Any,
    base_image: str,
) -> None:
    """A second container with the lost run's very labels (its run id, branch and base), whose
    result line is marked with a nonce of the forger's: the real task is recovered, whichever
    of the two comes first, and the forged one is left alone."""
    main = git(repo, "rev-parse", "main").strip()
    run_id = kill_mid_run(repo, fake_api, run_env(), docker_client)
    (real,) = containers_of_project(docker_client, repo)
    run_dir = repo / ".git" / "agent-worker" / "runs" / run_id
    nonce = (run_dir / "nonce").read_text()
    assert (run_dir / "nonce").stat().st_mode & 0o777 == 0o600
    bundle, evil = evil_bundle(repo, tmp_path, main)
    other = "f" * 32 if nonce != "f" * 32 else "e" * 32
    files = {
        "/run/agent-worker-result.json": account(
            {"phase": "agent", "bundle": True, "head": evil}, other
        ),
        "/agent-worker/out/result.bundle": bundle,
        "/agent-worker/out/agent-tail.jsonl": b"{}\n",
    }
    forged = forge(docker_client, base_image, repo, dict(real.labels), files)
    try:
        result = run_cli(["--recover"], cwd=repo, env=run_env())
        assert result.code == 0, result.stderr
        assert f"recovered 2 commits of run {run_id} onto branch lost" in result.stdout
        check_recovered(repo, run_id, fake_api)
        assert git(repo, "cat-file", "-t", evil, check=False) == ""
        assert (
            f"warning: ignored a container that claims to be run '{run_id}' of this "
            f"repository: its result is not marked with run {run_id}'s nonce"
        ) in result.stderr
        assert left_alone(forged)
        assert [c.id for c in containers_of_project(docker_client, repo)] == [forged.id]
    finally:
        remove_all(containers_of_project(docker_client, repo))
