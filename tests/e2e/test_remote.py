"""A run on a remote engine: a second Docker engine in a container of the test's own, which
cannot see this machine's files, so the workspace travels as a bundle."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from conftest import git, run_cli, snapshot, tool_outputs
from fake_anthropic import Turn, bash, write

DIND_DOCKERFILE = b"""ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      docker.io iptables ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
"""


@pytest.fixture(scope="module")
def remote_engine(docker_client: Any, base_image: str, agent_image: str) -> Iterator[str]:
    """tcp:// URL of a second engine (flags from DESIGN.md) holding the base and agent images."""
    docker_client.images.build(
        fileobj=io.BytesIO(DIND_DOCKERFILE),
        tag="agent-worker-test/dind",
        buildargs={"BASE_IMAGE": base_image},
        rm=True,
    )
    engine = docker_client.containers.run(
        "agent-worker-test/dind",
        ["dockerd", "-H", "tcp://0.0.0.0:2375", "--tls=false", "--storage-driver=vfs"],
        detach=True,
        cap_add=["SYS_ADMIN", "NET_ADMIN", "MKNOD", "SYS_PTRACE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        cgroupns="host",
        volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
        labels={"agent-worker-test": "remote-engine"},
    )
    try:
        engine.reload()
        url = f"tcp://{engine.attrs['NetworkSettings']['IPAddress']}:2375"
        end = time.monotonic() + 60
        while True:
            try:
                remote = docker.DockerClient(base_url=url, timeout=300)
                break
            except docker.errors.DockerException:
                assert time.monotonic() < end, engine.logs()[-2000:]
                time.sleep(0.5)
        for image in (base_image, agent_image):  # the same ids there: the same content tag
            remote.api.load_image(docker_client.images.get(image).save(named=True))
            assert remote.images.get(image).id == docker_client.images.get(image).id
        yield url
    finally:
        engine.remove(force=True, v=True)


def test_a_run_on_a_remote_engine_ships_the_workspace_as_a_bundle(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], remote_engine: str
) -> None:
    fake_api.add_turns(
        Turn.tool_use(write("/workspace/remote.txt", "made on the other engine\n")),
        Turn.tool_use(bash("test -e /source; echo source=$?; git log --oneline | wc -l")),
        Turn.text("done"),
    )
    before = snapshot(repo)
    result = run_cli(
        ["--task", "work remotely", "--branch", "remote"],
        cwd=repo,
        env=run_env(DOCKER_HOST=remote_engine),
        timeout=600,
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert result.report["status"] == "success"
    assert git(repo, "show", "remote:remote.txt") == "made on the other engine\n"
    source, commits = tool_outputs(fake_api)[1].split("\n")[:2]
    assert source == "source=1"  # nothing of this machine's filesystem is mounted there
    assert commits == "1"  # the branch's history arrived in the bundle
    assert snapshot(repo) == before
    run_dir = Path(result.report["run_dir"])
    assert not (run_dir / "source.bundle").exists()
    remote = docker.DockerClient(base_url=remote_engine)
    assert remote.containers.list(all=True) == []


def test_mounting_on_a_remote_engine_is_refused_by_it_cleanly(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], remote_engine: str
) -> None:
    result = run_cli(
        [
            "--task",
            "t",
            "--branch",
            "mounted",
            "--workspace",
            "mount",
            "--remote-docker",
            remote_engine,
        ],
        cwd=repo,
        env=run_env(),
        timeout=600,
    )
    assert result.code == 3, result.stderr
    assert result.report is not None
    assert result.report["status"] == "error"
    assert "Docker refused to create the agent container" in result.report["error"]
    assert "bind source path does not exist" in result.report["error"]
    assert git(repo, "branch", "--list", "mounted") == ""
    assert docker.DockerClient(base_url=remote_engine).containers.list(all=True) == []
