"""Shared fixtures: real git repositories, a real Docker engine, the agent image, the fake API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from remote_engine import RemoteEngine, start_remote_engine

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "sk-ant-test-Q7xv93LkPz0aBcD1eF2gH3"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers by directory, so `-m "not docker"` runs the pure tests alone: integration/
    needs a Docker engine, e2e/ the engine and the agent image too."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.docker)
        if "e2e" in parts:
            item.add_marker(pytest.mark.e2e)


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run git in repo and return its stdout."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def make_repo(path: Path, files: dict[str, str | bytes] | None = None) -> Path:
    """A repository with one commit of the given files on branch main."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test User")
    git(path, "config", "user.email", "test@example.com")
    for name, content in (files or {"README.md": "# project\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(
        tmp_path / "project",
        {
            "README.md": "# project\n",
            "src/app.py": "def greet():\n    return 'hello'\n",
        },
    )


def snapshot(repo: Path) -> dict[str, Any]:
    """Everything of the user's checkout a run must not change."""
    files = {}
    for path in sorted(repo.rglob("*")):
        if ".git" in path.relative_to(repo).parts or not path.is_file():
            continue
        files[str(path.relative_to(repo))] = path.read_bytes()
    git_dir = repo / ".git"
    return {
        "head": (git_dir / "HEAD").read_text(),
        "head_commit": git(repo, "rev-parse", "HEAD"),
        "index": (git_dir / "index").read_bytes(),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "files": files,
        "config": (git_dir / "config").read_bytes(),
        "hooks": sorted(p.name for p in (git_dir / "hooks").iterdir()),
    }


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None


def run_cli(
    args: list[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    stdin: str | None = None,
) -> CliResult:
    """Run ./agent_worker.py from the checkout as a user would, with no .env of the checkout."""
    report_file = cwd.parent / f"report-{os.getpid()}-{len(args)}.json"
    report_file.unlink(missing_ok=True)
    empty_env = cwd.parent / "empty.env"
    empty_env.touch()
    argv = [sys.executable, str(ROOT / "agent_worker.py"), "--env-file", str(empty_env), *args]
    if not any(a == "--report-file" for a in args):
        argv += ["--report-file", str(report_file)]
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )
    report = json.loads(report_file.read_text()) if report_file.is_file() else None
    return CliResult(done.returncode, done.stdout, done.stderr, report)


# The machine's own settings (which engine, which base image, which CAs) stay; every other
# agent-worker variable is the test's to set.
MACHINE_KEYS = {
    "DOCKER_HOST",
    "AGENT_WORKER_BASE_IMAGE",
    "AGENT_WORKER_CA_CERT",
    "CLAUDE_CODE_VERSION",
}


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without agent-worker settings, plus extra."""
    from agent_worker_app.config import ENV_KEYS

    # a suite run as a GitHub Actions step must not write its step's outputs and summary
    github = {"GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ACTIONS"}
    drop = (set(ENV_KEYS.values()) | {"ANTHROPIC_API_KEY"} | github) - MACHINE_KEYS
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def require(what: str) -> None:
    """Docker-backed tests fail loudly under CI and skip on a developer machine without it."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI=true: Docker tests never skip)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    from agent_worker_app.engines.docker import client as engine
    from agent_worker_app.errors import DockerError

    try:
        return engine.connect(None)  # docker-py's client: the tests' tool to look and set up
    except DockerError as exc:
        require(f"no Docker engine: {exc}")


@pytest.fixture(scope="session")
def runsc(docker_client: Any) -> str:
    """The engine's runsc runtime, gVisor (registered by scripts/gvisor, which scripts/test
    runs; here too when it is not)."""
    if "runsc" not in (docker_client.info().get("Runtimes") or {}):
        done = subprocess.run(
            [str(ROOT / "scripts" / "gvisor")], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            require(f"gVisor's runsc cannot be registered with the engine: {done.stderr}")
    return "runsc"


@pytest.fixture(params=["runc", "runsc"])
def runtime(request: pytest.FixtureRequest) -> str:
    """A test of what the sandbox promises, once under each runtime: the engine's default
    (runc) and gVisor (runsc, whose network the run holds from a network companion)."""
    name = str(request.param)
    if name == "runsc":
        request.getfixturevalue("runsc")
    return name


def runtime_env(runtime: str) -> dict[str, str]:
    """A run's setting for the runtime fixture's runtime (none for the engine's default)."""
    return {"AGENT_WORKER_RUNTIME": runtime} if runtime != "runc" else {}


@pytest.fixture(scope="session")
def base_image(docker_client: Any) -> str:
    name = os.environ.get("AGENT_WORKER_BASE_IMAGE", "debian:bookworm-slim")
    from agent_worker_app.images import build

    if not build.image_exists(docker_client, name):
        require(f"base image {name} is missing: run scripts/test, which builds one")
    return name


@pytest.fixture(scope="session")
def remote_engine(
    docker_client: Any, base_image: str, agent_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemoteEngine]:
    """A second engine in a container, holding the base and agent images (remote_engine.py)."""
    yield from start_remote_engine(docker_client, (base_image, agent_image), tmp_path_factory)


@pytest.fixture(scope="session")
def ca_certs() -> tuple[Path, ...]:
    value = os.environ.get("AGENT_WORKER_CA_CERT", "")
    return tuple(Path(p) for p in value.split(os.pathsep) if p)


def build_agent_image(agent_type: str, base_image: str, ca_certs: tuple[Path, ...]) -> str:
    """The image a run of this agent type uses, with its default settings, built the way a
    run builds it (agent_worker.prepare_image); reused when present."""
    from agent_worker_app import agents
    from agent_worker_app.agent_worker import prepare_image
    from agent_worker_app.agents.base_agent import AgentSettings

    return prepare_image(
        agents.get(agent_type, AgentSettings()),
        base_image=base_image,
        ca_certs=ca_certs,
        log_dir=ROOT / ".pytest_cache" / "builds",
    ).tag


@pytest.fixture(scope="session")
def agent_image(docker_client: Any, base_image: str, ca_certs: tuple[Path, ...]) -> str:
    """The real agent image with the pinned Claude Code, built once per machine."""
    return build_agent_image("claude", base_image, ca_certs)


@pytest.fixture(scope="session")
def command_image(docker_client: Any, base_image: str, ca_certs: tuple[Path, ...]) -> str:
    """The image of the command agent (no agent layer), built once per machine."""
    return build_agent_image("command", base_image, ca_certs)


@pytest.fixture(scope="session")
def codex_image(docker_client: Any, base_image: str, ca_certs: tuple[Path, ...]) -> str:
    """The codex agent's image with its pinned Codex CLI, built once per machine."""
    return build_agent_image("codex", base_image, ca_certs)


PEER_DOCKERFILE = b"""ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-minimal \\
 && rm -rf /var/lib/apt/lists/*
"""


@pytest.fixture(scope="session")
def peer_image(docker_client: Any, base_image: str) -> str:
    """A small image for the tests' own peers on the bridge (an HTTP server: python3)."""
    import io

    tag = "agent-worker-test/peer"
    docker_client.images.build(
        fileobj=io.BytesIO(PEER_DOCKERFILE), tag=tag, buildargs={"BASE_IMAGE": base_image}, rm=True
    )
    return tag


PIP_DOCKERFILE = b"""ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip \\
 && rm -rf /var/lib/apt/lists/*
"""


@pytest.fixture(scope="session")
def pip_base_image(docker_client: Any, base_image: str) -> str:
    """A base image with Python and pip, for runs whose agent installs packages."""
    import io

    tag = "agent-worker-test/pip-base"
    docker_client.images.build(
        fileobj=io.BytesIO(PIP_DOCKERFILE), tag=tag, buildargs={"BASE_IMAGE": base_image}, rm=True
    )
    return tag


@pytest.fixture(scope="session")
def gateway(docker_client: Any) -> str:
    from agent_worker_app.engines.docker import client

    return client.bridge_gateway(docker_client)


@pytest.fixture
def fake_api(gateway: str) -> Iterator[Any]:
    from fake_anthropic import FakeAnthropic

    with FakeAnthropic(host=gateway) as fake:
        yield fake


@pytest.fixture
def fake_openai(gateway: str) -> Iterator[Any]:
    """The fake OpenAI Responses API (tests/fake_openai.py) on the Docker bridge."""
    from fake_openai import FakeOpenAI

    with FakeOpenAI(host=gateway) as fake:
        yield fake


@pytest.fixture
def run_env(
    fake_api: Any, gateway: str, base_image: str, agent_image: str, ca_certs: tuple[Path, ...]
) -> Callable[..., dict[str, str]]:
    """The environment of a run against the fake API with the suite's image settings."""

    def make(**extra: str) -> dict[str, str]:
        settings = {
            "ANTHROPIC_API_KEY": TEST_KEY,
            "ANTHROPIC_BASE_URL": fake_api.url(gateway),
            "AGENT_WORKER_BASE_IMAGE": base_image,
            "AGENT_WORKER_CA_CERT": os.pathsep.join(str(p) for p in ca_certs),
        }
        return clean_env(**(settings | extra))

    return make


@pytest.fixture
def command_env(
    base_image: str, command_image: str, ca_certs: tuple[Path, ...]
) -> Callable[..., dict[str, str]]:
    """A run's environment with no credential at all: the command agent needs none."""

    def make(**extra: str) -> dict[str, str]:
        settings = {
            "AGENT_WORKER_BASE_IMAGE": base_image,
            "AGENT_WORKER_CA_CERT": os.pathsep.join(str(p) for p in ca_certs),
        }
        return clean_env(**(settings | extra))

    return make


def containers_of(docker_client: Any, run_id: str) -> list[Any]:
    return list(
        docker_client.containers.list(all=True, filters={"label": f"agent-worker.run-id={run_id}"})
    )


def tool_outputs(fake_api: Any) -> list[str]:
    """The text of every tool result Claude Code sent back, in order (from its last request)."""
    last = fake_api.main_requests[-1].body
    outputs = []
    for message in last["messages"]:
        content = message.get("content")
        if message["role"] != "user" or not isinstance(content, list):
            continue
        for block in content:
            if block.get("type") != "tool_result":
                continue
            inner = block.get("content")
            if isinstance(inner, list):
                inner = "".join(part.get("text", "") for part in inner)
            outputs.append(str(inner))
    return outputs


SERVE = """
import socket

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("", 8080))
server.listen(16)
while True:
    peer, _ = server.accept()
    peer.recv(65536)
    peer.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 14\\r\\n\\r\\ntarget says hi")
    peer.close()
"""


@pytest.fixture
def target(docker_client: Any, peer_image: str, command_image: str) -> Iterator[str]:
    """A second container of the test's own on the bridge, serving HTTP on port 8080."""
    server = docker_client.containers.run(
        peer_image,
        ["python3", "-c", SERVE],
        user="nobody",
        detach=True,
        labels={"agent-worker-test": "target"},
    )
    try:
        server.reload()
        address = server.attrs["NetworkSettings"]["IPAddress"]
        # raises ContainerError unless the target answered within 10 s
        docker_client.containers.run(
            command_image,
            [
                "bash",
                "-c",
                f"for i in $(seq 100); do curl -sf http://{address}:8080/"
                " | grep -q 'target says hi' && exit 0; sleep 0.1; done;"
                " exit 1",
            ],
            remove=True,
        )
        yield address
    finally:
        server.remove(force=True)
