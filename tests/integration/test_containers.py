"""docker_manager's container calls against the real engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent_worker_app import docker_manager
from agent_worker_app.backend import FileEntry, TaskSpec
from agent_worker_app.docker_manager import engine
from agent_worker_app.task_spec import labels

SECRET = "sk-ant-test-never-in-inspect-77"


def spec(image: str, command: list[str], **kw: Any) -> TaskSpec:
    values: dict[str, Any] = {
        "image": image,
        "name": f"agent-worker-test-{os.getpid()}-{time.monotonic_ns()}",
        "command": command,
        "env": {"PLAIN": "visible"},
        "labels": labels("test-run", Path("/tmp/project"), deadline=time.time() + 3600),
        "memory_bytes": 256 * 1024**2,
        "cpus": 1.0,
        "pids_limit": 100,
        "firewall": False,
    } | kw
    return TaskSpec(**values)


@pytest.fixture
def made(docker_client: Any) -> Any:
    created: list[Any] = []
    yield created
    for container in created:
        docker_manager.remove(container)


def test_limits_privileges_and_labels(
    docker_client: Any, base_image: str, made: list[Any], tmp_path: Path
) -> None:
    objects, borrowed = tmp_path / "objects", tmp_path / "borrowed"
    objects.mkdir()
    borrowed.mkdir()
    container = docker_manager.create_container(
        docker_client,
        spec(base_image, ["true"], object_dirs=(objects, borrowed), firewall=True),
    )
    made.append(container)
    info = docker_client.api.inspect_container(container.id)
    host = info["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert set(host["CapAdd"]) == {"SETUID", "SETGID", "SETPCAP", "KILL", "NET_ADMIN", "NET_RAW"}
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert host["NetworkMode"] == "bridge"
    assert host["Memory"] == 256 * 1024**2
    assert host["MemorySwap"] == 256 * 1024**2
    assert host["NanoCpus"] == 10**9
    assert host["PidsLimit"] == 100
    assert host["Init"] is True
    assert host["LogConfig"]["Type"] == "none"  # the output is agent-worker's to keep
    assert host["Tmpfs"]["/workspace"].startswith(f"size={256 * 1024**2},uid=1000")
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in host["Mounts"]] == [
        (str(objects), "/source/objects-0", True),
        (str(borrowed), "/source/objects-1", True),
    ]
    assert not any("docker.sock" in str(m) for m in host["Mounts"])
    labels = info["Config"]["Labels"]
    assert labels["agent-worker.run-id"] == "test-run"
    assert labels["agent-worker.pid"] == str(os.getpid())
    assert "PLAIN=visible" in info["Config"]["Env"]
    assert info["Config"]["OpenStdin"] is True
    assert info["Config"]["StdinOnce"] is True


def test_without_firewall_no_network_capabilities(
    docker_client: Any, base_image: str, made: list[Any]
) -> None:
    container = docker_manager.create_container(docker_client, spec(base_image, ["true"]))
    made.append(container)
    caps = docker_client.api.inspect_container(container.id)["HostConfig"]["CapAdd"]
    assert set(caps) == {"SETUID", "SETGID", "SETPCAP", "KILL"}


def run_with_io(container: Any, files: list[FileEntry]) -> tuple[bytes, bytes]:
    """Start the container with the files on its stdin; its whole stdout and stderr."""
    out: list[bytes] = []
    err: list[bytes] = []
    io = docker_manager.ContainerIO(engine.attach(container), files, out.append, err.append)
    docker_manager.start(container)
    io.start()
    io.join(60)
    assert not io.is_alive()
    assert io.error is None
    return b"".join(out), b"".join(err)


def test_files_arrive_on_stdin_with_their_modes(
    docker_client: Any, base_image: str, made: list[Any]
) -> None:
    files = [
        FileEntry("/agent-worker/task.md", "tâche\n".encode()),
        FileEntry("/agent-worker/secrets", None, 0o700),
        FileEntry("/agent-worker/secrets/KEY", SECRET.encode(), 0o600),
    ]
    script = (
        "mkdir -p /agent-worker && tar -x -f - -C / --no-same-owner agent-worker && "
        "stat -c '%n %a %u' /agent-worker/secrets /agent-worker/secrets/KEY "
        "/agent-worker/task.md && cat /agent-worker/secrets/KEY /agent-worker/task.md && "
        '{ timeout 2 cat > /dev/null; echo "after the input: $?" >&2; }'
    )
    container = docker_manager.create_container(
        docker_client, spec(base_image, ["sh", "-c", script])
    )
    made.append(container)
    out, err = run_with_io(container, files)
    assert out.decode().splitlines() == [
        "/agent-worker/secrets 700 0",
        "/agent-worker/secrets/KEY 600 0",
        "/agent-worker/task.md 644 0",
        SECRET + "tâche",
    ]
    # the rest of stdin stays open while agent-worker holds the attach (timeout: 124): its end
    # is how the container learns that agent-worker is gone
    assert err == b"after the input: 124\n"
    inspected = docker_client.api.inspect_container(container.id)
    assert SECRET not in str(inspected)


def test_output_arrives_whole_when_a_character_is_split_across_writes(
    docker_client: Any, base_image: str, made: list[Any]
) -> None:
    script = r"printf 'caf\303'; sleep 0.3; printf '\251 ok\n'; printf 'err\n' >&2"
    container = docker_manager.create_container(
        docker_client, spec(base_image, ["bash", "-c", script])
    )
    made.append(container)
    chunks: list[bytes] = []
    errors: list[bytes] = []
    io = docker_manager.ContainerIO(engine.attach(container), [], chunks.append, errors.append)
    docker_manager.start(container)
    io.start()
    io.join(60)
    assert not io.is_alive()
    assert io.error is None
    assert len(chunks) >= 2  # the character really was split between two writes
    assert b"".join(chunks).decode() == "café ok\n"
    assert b"".join(errors) == b"err\n"


def test_wait_returns_none_while_running_then_the_exit(
    docker_client: Any, base_image: str, made: list[Any]
) -> None:
    container = docker_manager.create_container(docker_client, spec(base_image, ["sleep", "30"]))
    made.append(container)
    docker_manager.start(container)
    assert docker_manager.wait(container, 0.5) is None
    docker_manager.signal(container, "SIGKILL")
    exit_info = docker_manager.wait(container, 30)
    assert exit_info is not None
    assert exit_info.status_code == 137
    assert not exit_info.oom_killed


def test_copy_out(docker_client: Any, base_image: str, made: list[Any], tmp_path: Path) -> None:
    container = docker_manager.create_container(
        docker_client,
        spec(base_image, ["sh", "-c", "mkdir /tmp/out && echo result > /tmp/out/file"]),
    )
    made.append(container)
    docker_manager.start(container)
    docker_manager.wait(container, 60)
    assert docker_manager.copy_out(container, "/tmp/out", tmp_path)
    assert (tmp_path / "out" / "file").read_text() == "result\n"
    assert not docker_manager.copy_out(container, "/no/such/dir", tmp_path)


def removed_names(lines: list[str]) -> str:
    return " ".join(lines)


@pytest.fixture
def project() -> Path:
    """A project of the test's own: what its remove_orphans() calls may touch. A later `now`
    makes every run on the engine look gone, the runs of others (tests or users) included."""
    return Path(f"/orphan-test/{os.getpid()}-{time.monotonic_ns()}")


def test_containers_of_dead_runs_wait_for_recovery_then_go(
    docker_client: Any, base_image: str, made: list[Any], project: Path
) -> None:
    """A lost run's container stops by itself and then waits for its repository's next run to
    recover its work; after KEEP_LOST_S nobody did, and it goes with a warning naming the loss."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    now = time.time()
    dead = {"agent-worker.pid": gone.stdout.strip(), "agent-worker.branch": "agent/x"}
    lost_labels = labels("lost", project, deadline=now + 60) | dead
    lost = docker_manager.create_container(
        docker_client, spec(base_image, ["true"], labels=lost_labels)
    )
    stopping = docker_manager.create_container(
        docker_client,
        spec(
            base_image,
            ["sleep", "60"],
            labels=labels("stopping", project, deadline=now + 60) | dead,
        ),
    )
    alive = docker_manager.create_container(
        docker_client,
        spec(base_image, ["sleep", "60"], labels=labels("alive", project, deadline=now + 3600)),
    )
    made.extend([lost, stopping, alive])
    docker_manager.start(lost)
    docker_manager.start(stopping)
    assert docker_manager.wait(lost, 30) is not None
    assert docker_manager.remove_orphans(docker_client, now=now, project=str(project)) == []
    later = now + 60 + docker_manager.KEEP_LOST_S + 1
    removed = removed_names(
        docker_manager.remove_orphans(docker_client, now=later, project=str(project))
    )
    assert f"removed container {lost.name} (nobody recovered it within 7 days" in removed
    assert f"branch agent/x of {project} is lost" in removed
    assert f"container {stopping.name} (still running past its deadline)" in removed
    assert alive.name not in removed  # this process's own: never an orphan
    names = [c.name for c in docker_client.containers.list(all=True)]
    assert (lost.name in names, stopping.name in names, alive.name in names) == (
        False,
        False,
        True,
    )


def test_a_reused_pid_is_not_mistaken_for_the_orchestrator(
    docker_client: Any, base_image: str, made: list[Any], project: Path
) -> None:
    reused = labels("reused", project, deadline=time.time()) | {
        "agent-worker.pid-start": "1"
    }  # this pid, but a process that started long ago
    container = docker_manager.create_container(
        docker_client, spec(base_image, ["true"], labels=reused)
    )
    made.append(container)
    later = time.time() + docker_manager.KEEP_LOST_S + 1
    assert container.name in removed_names(
        docker_manager.remove_orphans(docker_client, now=later, project=str(project))
    )


def test_any_host_removes_containers_past_their_deadline(
    docker_client: Any, base_image: str, made: list[Any], project: Path
) -> None:
    """A remote engine shared by machines that died keeps nothing forever: a container of
    another host is removed once its run's deadline has passed, and not before."""
    elsewhere = {"agent-worker.host": "a-machine-that-died", "agent-worker.pid": "1"}
    now = time.time()
    past = labels("past", project, deadline=now - 1) | elsewhere
    future = labels("future", project, deadline=now + 3600) | elsewhere
    expired = docker_manager.create_container(
        docker_client, spec(base_image, ["sleep", "60"], labels=past)
    )
    waiting = docker_manager.create_container(
        docker_client, spec(base_image, ["sleep", "60"], labels=future)
    )
    made.extend([expired, waiting])
    docker_manager.start(expired)
    removed = removed_names(docker_manager.remove_orphans(docker_client, project=str(project)))
    assert expired.name in removed
    assert waiting.name not in removed  # another host's run may still be going
    assert waiting.name in [c.name for c in docker_client.containers.list(all=True)]
    later = now + 3600 + docker_manager.KEEP_LOST_S + 1
    assert waiting.name in removed_names(
        docker_manager.remove_orphans(docker_client, now=later, project=str(project))
    )


def test_output_after_a_long_silence_still_arrives(base_image: str) -> None:
    # An agent's long test run prints nothing for minutes; the client's request timeout (2 s
    # here, 120 s in a run) must not end the stream.
    import docker

    quick = docker.from_env(timeout=2)
    container = docker_manager.create_container(
        quick, spec(base_image, ["bash", "-c", "echo before; sleep 4; echo after"])
    )
    try:
        out, _ = run_with_io(container, [])
        assert out == b"before\nafter\n"
    finally:
        docker_manager.remove(container)


class _StopError(Exception):
    pass


def test_a_join_cut_short_by_a_signal_leaves_the_output_streaming(
    docker_client: Any, base_image: str, made: list[Any]
) -> None:
    """Ctrl-C in the middle of a join (an exception from a signal handler) must not make the
    stream look finished: the container's last words, the result line, come after the stop."""
    container = docker_manager.create_container(
        docker_client, spec(base_image, ["sh", "-c", "sleep 2; echo last words"])
    )
    made.append(container)
    out: list[bytes] = []
    io = docker_manager.ContainerIO(engine.attach(container), [], out.append, out.append)
    docker_manager.start(container)
    io.start()

    def interrupt(signum: int, frame: Any) -> None:
        raise _StopError

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(_StopError):
            io.join(30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert io.is_alive()  # Thread.is_alive() says False here on CPython 3.11
    io.join(60)
    assert not io.is_alive()
    assert b"".join(out) == b"last words\n"


def _framed_script(nonce: str, *, result_line: bool) -> str:
    """A task that prints its result files as frames (and its result line, or not) and keeps
    no /agent-worker/out of its own to copy."""
    frames = (
        "mkdir -p /tmp/out && printf framed > /tmp/out/result.bundle && "
        "tar -c -C /tmp/out result.bundle | base64 -w 100 | "
        f"sed 's/^/agent-worker-out {nonce} /' >&2"
    )
    end = f" && printf '\\nagent-worker-result {nonce} e30=\\n' >&2" if result_line else ""
    return frames + end


@pytest.mark.parametrize("result_line", [True, False])
def test_small_results_come_back_in_the_output_and_are_copied_out_otherwise(
    docker_client: Any, base_image: str, tmp_path: Path, result_line: bool
) -> None:
    """With its result line (which the task prints after every frame) the frames are the
    result; without it they may be cut short, and the container's own files are copied out."""
    nonce = "0123456789abcdef0123456789abcdef"
    backend = docker_manager.DockerBackend(docker_client, local=True)
    script = _framed_script(nonce, result_line=result_line)
    script += " && mkdir -p /agent-worker/out && printf copied > /agent-worker/out/result.bundle"
    task = backend.create(
        spec(base_image, ["sh", "-c", script]),
        [FileEntry("/agent-worker/nonce", nonce.encode(), 0o600)],
    )
    try:
        err: list[bytes] = []
        stream = backend.start(task, lambda data: None, err.append)
        stream.join(60)
        assert backend.wait(task, 60) is not None
        assert backend.fetch_result(task, tmp_path)
        expected = b"framed" if result_line else b"copied"
        assert (tmp_path / "out" / "result.bundle").read_bytes() == expected
        assert b"agent-worker-out" not in b"".join(err)  # the frames are not output
        assert task.handle.attrs["Config"]["Env"].count("AW_FRAME_MAX=4194304") == 1
    finally:
        backend.remove(task)
