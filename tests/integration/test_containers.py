"""A task's container's one lifecycle (engines/docker/containers.py over api.EngineAPI) against
the real engine, over every transport that reaches one: its unix socket, and a second engine
(tests/remote_engine.py) over plain TCP, TLS with client certificates, and ssh."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent_worker_app.engines import sweep
from agent_worker_app.engines.base import GRACE_S, TaskSpec
from agent_worker_app.engines.channel import FileEntry, ResultReader
from agent_worker_app.engines.channel import inputs as inputs_with
from agent_worker_app.engines.docker.api import EngineAPI, UnixTransport, transport
from agent_worker_app.engines.docker.backend import DockerBackend
from agent_worker_app.engines.docker.container_io import ContainerIO
from agent_worker_app.engines.docker.containers import Container, Containers
from agent_worker_app.engines.docker.endpoint import LOCAL_SOCKET, EngineTLS
from agent_worker_app.engines.docker.endpoint import Engine as DockerEngine
from agent_worker_app.engines.profile import Profile
from agent_worker_app.engines.sweep import KEEP_LOST_S
from remote_engine import RemoteEngine

SECRET = "sk-ant-test-never-in-inspect-77"
TRANSPORTS = ["unix", "tcp", "tls", "ssh"]


def labels(run_id: str, project: Path, *, deadline: float) -> dict[str, str]:
    """A run's labels with the deadline a test wants (spec() turns it into the timeout that
    gives it: the backend labels each task with its own)."""
    return sweep.labels(run_id, project) | {sweep.DEADLINE: str(deadline)}


def spec(image: str, command: list[str], *, firewall: bool = False, **kw: Any) -> TaskSpec:
    given = kw.pop("labels", None) or labels(
        "test-run", Path("/tmp/project"), deadline=time.time() + 3600
    )
    ends = float(given.pop(sweep.DEADLINE))
    values: dict[str, Any] = {
        "image": image,
        "name": f"agent-worker-test-{os.getpid()}-{time.monotonic_ns()}",
        "command": command,
        "env": {"PLAIN": "visible"},
        "labels": given,
        "timeout_s": ends - time.time() - 2 * GRACE_S,
        "profile": Profile(memory_bytes=256 * 1024**2, cpus=1.0, pids_limit=100, firewall=firewall),
    } | kw
    return TaskSpec(**values)


def address(name: str, remote: RemoteEngine | None) -> DockerEngine:
    """The engine as a run names it (DOCKER_HOST and the DOCKER_TLS* variables), for each way
    of reaching one; api.transport() makes the transport a run uses from it."""
    if name == "unix":
        return DockerEngine(None)
    assert remote is not None
    if name == "tcp":
        return DockerEngine(remote.plain)
    if name == "tls":
        certs = remote.certs
        keys = (str(certs / "cert.pem"), str(certs / "key.pem"))
        return DockerEngine(remote.tls, EngineTLS(True, str(certs / "ca.pem"), keys))
    return DockerEngine(f"ssh://root@{remote.ip}")


@dataclass
class Engine:
    """One engine as the lifecycle reaches it: its API, the containers made, and their removal
    at the end of the test."""

    api: EngineAPI
    containers: Containers
    made: list[Container]

    def create(self, task: TaskSpec) -> Container:
        container = self.containers.create(task)
        self.made.append(container)
        return container

    def inspect(self, container: Container) -> dict[str, Any]:
        return self.api.inspect(container.id)

    def names(self) -> list[str]:
        return [c["Names"][0].lstrip("/") for c in self.api.containers(["agent-worker.run-id"])]


@pytest.fixture(params=TRANSPORTS)
def engine(
    request: pytest.FixtureRequest, base_image: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    remote = None if request.param == "unix" else request.getfixturevalue("remote_engine")
    if remote is not None:  # ssh with the test's key and known hosts
        monkeypatch.setenv("PATH", remote.ssh_env()["PATH"])
    yield from reached(EngineAPI(transport(address(request.param, remote)), timeout=60))


@pytest.fixture
def local(base_image: str) -> Iterator[Engine]:
    """The local engine alone, for what does not depend on the transport."""
    yield from reached(EngineAPI(UnixTransport(LOCAL_SOCKET), timeout=60))


def reached(api: EngineAPI) -> Iterator[Engine]:
    """The engine for a test; what the test made is removed after it, and the API closed."""
    made: list[Container] = []
    try:
        yield Engine(api, Containers(api), made)
    finally:
        for container in made:
            Containers(api).remove(container)
        api.close()


def test_limits_privileges_and_labels(local: Engine, base_image: str, tmp_path: Path) -> None:
    objects, borrowed = tmp_path / "objects", tmp_path / "borrowed"
    objects.mkdir()
    borrowed.mkdir()
    container = local.create(
        spec(base_image, ["true"], object_dirs=(objects, borrowed), firewall=True)
    )
    info = local.inspect(container)
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
    # the scratch directories: tmpfs, never the engine's disk (--disk, here the memory's size)
    assert host["Tmpfs"]["/tmp"] == f"size={256 * 1024**2},mode=1777,exec"
    assert host["Tmpfs"]["/var/tmp"] == f"size={256 * 1024**2},mode=1777,exec"
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in host["Mounts"]] == [
        (str(objects), "/source/objects-0", True),
        (str(borrowed), "/source/objects-1", True),
    ]
    assert not any("docker.sock" in str(m) for m in host["Mounts"])
    labels = info["Config"]["Labels"]
    assert labels["agent-worker.run-id"] == "test-run"
    # the backend's own deadline: the run's timeout from now, and the grace of its stop
    assert abs(float(labels["agent-worker.deadline"]) - (time.time() + 3600)) < 30
    assert labels["agent-worker.pid"] == str(os.getpid())
    assert "PLAIN=visible" in info["Config"]["Env"]
    assert info["Config"]["OpenStdin"] is True
    assert info["Config"]["StdinOnce"] is True


def test_without_firewall_no_network_capabilities(local: Engine, base_image: str) -> None:
    container = local.create(spec(base_image, ["true"]))
    caps = local.inspect(container)["HostConfig"]["CapAdd"]
    assert set(caps) == {"SETUID", "SETGID", "SETPCAP", "KILL"}


def passed(into: list[bytes]) -> ResultReader:
    """stderr read as a run reads it, for a task that hands nothing back (no nonce): all of it
    passed on."""
    return ResultReader("", into.append)


def run_with_io(
    engine: Engine, container: Container, files: list[FileEntry]
) -> tuple[bytes, bytes]:
    """Start the container with the files on its stdin; its whole stdout and stderr."""
    out: list[bytes] = []
    err: list[bytes] = []
    io = ContainerIO(engine.containers.attach(container), files, out.append, passed(err))
    engine.containers.start(container)
    io.start()
    io.join(60)
    assert not io.is_alive()
    assert io.error is None
    return b"".join(out), b"".join(err)


def test_files_arrive_on_stdin_with_their_modes(engine: Engine, base_image: str) -> None:
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
    container = engine.create(spec(base_image, ["sh", "-c", script]))
    out, err = run_with_io(engine, container, files)
    assert out.decode().splitlines() == [
        "/agent-worker/secrets 700 0",
        "/agent-worker/secrets/KEY 600 0",
        "/agent-worker/task.md 644 0",
        SECRET + "tâche",
    ]
    # the rest of stdin stays open while agent-worker holds the attach (timeout: 124): its end
    # is how the container learns that agent-worker is gone
    assert err == b"after the input: 124\n"
    assert SECRET not in str(engine.inspect(container))


def test_output_arrives_whole_when_a_character_is_split_across_writes(
    engine: Engine, base_image: str
) -> None:
    script = r"printf 'caf\303'; sleep 0.3; printf '\251 ok\n'; printf 'err\n' >&2"
    container = engine.create(spec(base_image, ["bash", "-c", script]))
    chunks: list[bytes] = []
    errors: list[bytes] = []
    io = ContainerIO(engine.containers.attach(container), [], chunks.append, passed(errors))
    engine.containers.start(container)
    io.start()
    io.join(60)
    assert not io.is_alive()
    assert io.error is None
    assert len(chunks) >= 2  # the character really was split between two writes
    assert b"".join(chunks).decode() == "café ok\n"
    assert b"".join(errors) == b"err\n"


def test_wait_returns_none_while_running_then_the_exit(engine: Engine, base_image: str) -> None:
    container = engine.create(spec(base_image, ["sleep", "30"]))
    engine.containers.start(container)
    assert engine.containers.wait(container, 0.5) is None
    engine.containers.signal(container, "SIGKILL")
    exit_info = engine.containers.wait(container, 30)
    assert exit_info is not None
    assert exit_info.status_code == 137
    assert not exit_info.oom_killed


def test_copy_out(engine: Engine, base_image: str, tmp_path: Path) -> None:
    # not under /tmp: a task's scratch directories are tmpfs, gone once it stops (--disk)
    container = engine.create(
        spec(base_image, ["sh", "-c", "mkdir /srv/out && echo result > /srv/out/file"])
    )
    engine.containers.start(container)
    engine.containers.wait(container, 60)
    assert engine.containers.copy_out(container, "/srv/out", tmp_path)
    assert (tmp_path / "out" / "file").read_text() == "result\n"
    assert not engine.containers.copy_out(container, "/no/such/dir", tmp_path)


def test_remove_takes_a_running_container_and_one_already_gone(
    engine: Engine, base_image: str
) -> None:
    container = engine.create(spec(base_image, ["sleep", "60"]))
    engine.containers.start(container)
    engine.containers.remove(container)
    assert container.name not in engine.names()
    engine.containers.remove(container)  # gone already: no error


def removed_names(lines: list[str]) -> str:
    return " ".join(lines)


@pytest.fixture
def project() -> Path:
    """A project of the test's own: what its remove_orphans() calls may touch. A later `now`
    makes every run on the engine look gone, the runs of others (tests or users) included."""
    return Path(f"/orphan-test/{os.getpid()}-{time.monotonic_ns()}")


def test_containers_of_dead_runs_wait_for_recovery_then_go(
    engine: Engine, base_image: str, project: Path
) -> None:
    """A lost run's container stops by itself and then waits for its repository's next run to
    recover its work (lost_tasks finds it); after KEEP_LOST_S nobody did, and it goes with a
    warning naming the loss."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    now = time.time()
    dead = {"agent-worker.pid": gone.stdout.strip(), "agent-worker.branch": "agent/x"}
    lost = engine.create(
        spec(base_image, ["true"], labels=labels("lost", project, deadline=now + 60) | dead)
    )
    stopping = engine.create(
        spec(
            base_image,
            ["sleep", "60"],
            labels=labels("stopping", project, deadline=now + 60) | dead,
        )
    )
    alive = engine.create(
        spec(base_image, ["sleep", "60"], labels=labels("alive", project, deadline=now + 3600))
    )
    engine.containers.start(lost)
    engine.containers.start(stopping)
    assert engine.containers.wait(lost, 30) is not None
    found = {t.labels["agent-worker.run-id"]: t for t in engine.containers.lost_tasks(str(project))}
    assert sorted(found) == ["lost", "stopping"]  # this process's own run is not lost
    assert found["lost"].exit is not None
    assert found["stopping"].exit is None  # still running: it stops by itself
    assert engine.containers.remove_orphans(now, project=str(project)) == []
    later = now + 60 + KEEP_LOST_S + 1
    removed = removed_names(engine.containers.remove_orphans(later, project=str(project)))
    assert f"removed container {lost.name} (nobody recovered it within 7 days" in removed
    assert f"branch agent/x of {project} is lost" in removed
    assert f"container {stopping.name} (still running past its deadline)" in removed
    assert alive.name not in removed  # this process's own: never an orphan
    names = engine.names()
    assert (lost.name in names, stopping.name in names, alive.name in names) == (
        False,
        False,
        True,
    )


def test_a_reused_pid_is_not_mistaken_for_the_orchestrator(
    local: Engine, base_image: str, project: Path
) -> None:
    reused = labels("reused", project, deadline=time.time()) | {
        "agent-worker.pid-start": "1"
    }  # this pid, but a process that started long ago
    container = local.create(spec(base_image, ["true"], labels=reused))
    later = time.time() + KEEP_LOST_S + 1
    assert container.name in removed_names(
        local.containers.remove_orphans(later, project=str(project))
    )


def test_any_host_removes_containers_past_their_deadline(
    local: Engine, base_image: str, project: Path
) -> None:
    """A remote engine shared by machines that died keeps nothing forever: a container of
    another host is removed once its run's deadline has passed, and not before."""
    elsewhere = {"agent-worker.host": "a-machine-that-died", "agent-worker.pid": "1"}
    now = time.time()
    past = labels("past", project, deadline=now - 1) | elsewhere
    future = labels("future", project, deadline=now + 3600) | elsewhere
    expired = local.create(spec(base_image, ["sleep", "60"], labels=past))
    waiting = local.create(spec(base_image, ["sleep", "60"], labels=future))
    local.containers.start(expired)
    removed = removed_names(local.containers.remove_orphans(project=str(project)))
    assert expired.name in removed
    assert waiting.name not in removed  # another host's run may still be going
    assert waiting.name in local.names()
    later = now + 3600 + KEEP_LOST_S + 1
    assert waiting.name in removed_names(
        local.containers.remove_orphans(later, project=str(project))
    )


def test_output_after_a_long_silence_still_arrives(engine: Engine, base_image: str) -> None:
    # An agent's long test run prints nothing for minutes; the API's timeout (2 s here, 120 s
    # in a run) must not end the stream.
    quick = EngineAPI(engine.api.transport, timeout=2)
    container = Containers(quick).create(
        spec(base_image, ["bash", "-c", "echo before; sleep 4; echo after"])
    )
    engine.made.append(container)
    out, _ = run_with_io(Engine(quick, Containers(quick), []), container, [])
    assert out == b"before\nafter\n"


class _StopError(Exception):
    pass


def test_a_join_cut_short_by_a_signal_leaves_the_output_streaming(
    local: Engine, base_image: str
) -> None:
    """Ctrl-C in the middle of a join (an exception from a signal handler) must not make the
    stream look finished: the container's last words, the result line, come after the stop."""
    container = local.create(spec(base_image, ["sh", "-c", "sleep 2; echo last words"]))
    out: list[bytes] = []
    io = ContainerIO(local.containers.attach(container), [], out.append, passed(out))
    local.containers.start(container)
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
    engine: Engine, base_image: str, tmp_path: Path, result_line: bool
) -> None:
    """With its result line (which the task prints after every frame) the frames are the
    result; without it they may be cut short, and the container's own files are copied out."""
    nonce = "0123456789abcdef0123456789abcdef"
    backend = DockerBackend(engine.api, local=True, make_client=lambda: pytest.fail("docker-py"))
    script = _framed_script(nonce, result_line=result_line)
    script += " && mkdir -p /agent-worker/out && printf copied > /agent-worker/out/result.bundle"
    task = backend.create(spec(base_image, ["sh", "-c", script]), inputs_with([], nonce))
    try:
        err: list[bytes] = []
        stream = backend.start(task, lambda data: None, err.append)
        stream.join(60)
        assert backend.wait(task, 60) is not None
        assert backend.fetch_result(task, tmp_path)
        expected = b"framed" if result_line else b"copied"
        assert (tmp_path / "out" / "result.bundle").read_bytes() == expected
        assert b"agent-worker-out" not in b"".join(err)  # the frames are not output
        env = engine.api.inspect(task.handle.id)["Config"]["Env"]
        assert env.count("AW_FRAME_MAX=4194304") == 1
    finally:
        backend.remove(task)
    assert task.handle.name not in engine.names()


def test_the_disk_cap_is_the_engines_where_it_can_and_watched_where_not(
    engine: Engine, base_image: str
) -> None:
    """--disk: the container's writable layer capped by the engine (--storage-opt size) where
    its storage can, else the container is made without it and its disk watched; either way it
    is made, and a second container on the same engine asks no more."""
    disk = 64 * 1024**2
    limited = Profile(
        memory_bytes=256 * 1024**2, cpus=1.0, pids_limit=100, firewall=False, disk_bytes=disk
    )
    first = engine.create(spec(base_image, ["true"], profile=limited))
    host = engine.inspect(first)["HostConfig"]
    capped = engine.containers.storage_opt
    assert capped is not None  # it asked
    if capped:
        assert host["StorageOpt"] == {"size": str(disk)}
        assert first.disk_watch is None
    else:  # overlay2 on ext4 (this machine's engine), vfs (the remote test engine)
        assert not host.get("StorageOpt")
        assert first.disk_watch == disk
    second = engine.create(spec(base_image, ["true"], profile=limited))
    assert second.disk_watch == first.disk_watch
    assert engine.containers.storage_opt is capped
