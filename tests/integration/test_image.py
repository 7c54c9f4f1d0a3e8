"""The image's layers against the real engine: content-addressed reuse, what a change rebuilds,
setup at build time, failures."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from projects import python_project

from agent_worker_app.agents.base_agent import AgentSettings, ImageLayer
from agent_worker_app.agents.claude_agent import ClaudeAgent
from agent_worker_app.config import load
from agent_worker_app.engines.base import ImageResult
from agent_worker_app.images import build as layers
from agent_worker_app.images import project as project_image
from agent_worker_app.images.layers import Layer, ProjectImage
from conftest import clean_env, git, make_repo, run_cli, snapshot

CLAUDE_LAYER = ClaudeAgent(AgentSettings()).image_layer()


def pinned(pin: str) -> ImageLayer:
    """An agent layer with a pin, as an agent's own: a build argument its instructions use."""
    return ImageLayer(
        final='ARG TEST_PIN\nRUN echo "$TEST_PIN" > /etc/test-agent-pin',
        build_args={"TEST_PIN": pin},
    )


def project_of(repo: Path, tmp_path: Path) -> ProjectImage:
    """What a run reads of the repository's environment, from its HEAD commit."""
    from agent_worker_app import git_manager

    cfg = load({"task": "x", "agent_type": "command"}, environ={}, cwd=repo)
    ws = git_manager.preflight(repo, "unused-branch", branch_given=True)
    return project_image.load(cfg, ws, tmp_path / "contexts")[1]


def built(result: ImageResult) -> set[str]:
    return {layer.name for layer in result.layers if layer.built}


def test_unchanged_inputs_build_nothing(
    docker_client: Any,
    agent_image: str,
    base_image: str,
    ca_certs: tuple[Path, ...],
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    before = docker_client.images.get(agent_image).id
    again = layers.prepare(
        docker_client,
        CLAUDE_LAYER,
        base_image=base_image,
        ca_certs=ca_certs,
        force=False,
        log_dir=tmp_path,
        on_line=lines.append,
    )
    assert again.tag == agent_image
    assert not again.built
    assert again.log_path is None
    assert [(r.name, r.built) for r in again.layers] == [("system", False), ("agent", False)]
    assert all("reused" in line for line in lines)
    assert docker_client.images.get(agent_image).id == before
    assert list(tmp_path.iterdir()) == []


def test_a_python_project_rebuilds_only_the_layers_whose_inputs_changed(
    docker_client: Any, base_image: str, ca_certs: tuple[Path, ...], tmp_path: Path
) -> None:
    repo = python_project(tmp_path / "py")
    requirements = repo / "requirements.txt"
    # a lockfile no run has seen yet: its environment layer is new on any machine
    requirements.write_text(requirements.read_text() + f"# {uuid.uuid4()}\n")
    git(repo, "commit", "-qam", "a new lockfile")
    made: set[str] = set()

    def prepare(pin: str, lines: list[str] | None = None) -> ImageResult:
        result = layers.prepare(
            docker_client,
            pinned(pin),
            base_image=base_image,
            ca_certs=ca_certs,
            force=False,
            log_dir=tmp_path / "logs",
            on_line=(lines if lines is not None else []).append,
            project=project_of(repo, tmp_path),
            tag_latest=False,
        )
        made.update(r.tag for r in result.layers if r.built and r.name != "system")
        return result

    try:
        lines: list[str] = []
        first = prepare("1", lines)
        assert [r.name for r in first.layers] == ["system", "environment", "agent"]
        assert built(first) >= {"environment", "agent"}
        # one timed line per setup command; Docker's step transcript only in the log
        assert any(
            re.fullmatch(r"image: environment: setup 1/2 `python3 -m venv \.venv` [0-9.]+ s", line)
            for line in lines
        )
        assert any(
            line.startswith("image: environment: setup 2/2 `.venv/bin/pip ") for line in lines
        )
        assert not any(line.startswith(("Step ", " --->")) for line in lines)
        env_log = next(r.log_path for r in first.layers if r.name == "environment")
        assert env_log is not None
        assert "Successfully tagged agent-worker-env:" in env_log.read_text()
        # setup ran as the agent user, in /workspace, with the network and the proxy's CA
        out = docker_client.containers.run(
            first.tag,
            ["sh", "-c", "stat -c %U .venv && pytest --version && cat /etc/test-agent-pin"],
            remove=True,
        ).decode()
        assert out.splitlines()[0] == "agent"
        assert "pytest 8.3.4" in out
        assert out.splitlines()[-1] == "1"

        assert built(prepare("1")) == set()  # nothing changed: nothing built

        requirements.write_text(requirements.read_text() + "# touched\n")
        git(repo, "commit", "-qam", "the lockfile changes")
        touched = prepare("1")
        assert built(touched) == {"environment", "agent"}  # not the system layer
        assert touched.layers[0].tag == first.layers[0].tag

        new_pin = prepare("2")
        assert built(new_pin) == {"agent"}  # no setup re-run
        assert new_pin.layers[1].tag == touched.layers[1].tag
    finally:
        for tag in made:
            docker_client.images.remove(tag, force=True)


def test_a_failed_setup_command_exits_3_naming_it_and_leaves_nothing(
    docker_client: Any, base_image: str, ca_certs: tuple[Path, ...], tmp_path: Path
) -> None:
    repo = make_repo(
        tmp_path / "p",
        {
            ".agent-worker/environment.toml": (
                f'setup = ["true", "echo failing-now-{uuid.uuid4().hex[:8]}; exit 7"]\n'
            )
        },
    )
    before = snapshot(repo)
    tags_before = {t for i in docker_client.images.list() for t in i.tags}
    env = clean_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    result = run_cli(["--agent-type", "command", "--task", "true"], cwd=repo, env=env)
    assert result.code == 3, result.stderr
    failed = "setup command 2/2 of the environment failed (exit code 7): `echo failing-now"
    assert failed in result.stderr
    assert re.search(r"; its last output: failing-now-[0-9a-f]{8} \(full log: ", result.stderr)
    assert "returned a non-zero code" not in result.stderr
    log = next((tmp_path / "cache" / "agent-worker" / "builds").glob("build-environment-*.log"))
    assert f"(full log: {log})" in result.stderr
    assert "failing-now" in log.read_text()
    assert snapshot(repo) == before
    assert git(repo, "branch", "--list") == "* main\n"
    assert not (repo / ".git" / "agent-worker").exists()
    assert not any(
        t.startswith("agent-worker-env:") and t not in tags_before
        for i in docker_client.images.list()
        for t in i.tags
    )


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ('stup = ["pip install x"]\n', "unknown key 'stup'"),
        ("setup = 3\n", "setup must be a list of non-empty strings, got int"),
        ('setup_inputs = ["missing.lock"]\n', "setup_inputs: missing.lock is not a file"),
    ],
)
def test_a_bad_environment_file_exits_2_naming_the_key_and_leaves_nothing(
    docker_client: Any, tmp_path: Path, toml: str, names: str
) -> None:
    repo = make_repo(tmp_path / "p", {".agent-worker/environment.toml": toml})
    before = snapshot(repo)
    env = clean_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    result = run_cli(["--agent-type", "command", "--task", "true"], cwd=repo, env=env)
    assert result.code == 2, result.stderr
    assert ".agent-worker/environment.toml" in result.stderr
    assert names in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(repo) == before
    assert git(repo, "branch", "--list") == "* main\n"
    assert not (repo / ".git" / "agent-worker").exists()


def test_force_rebuild_builds_even_when_present(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    layer = Layer(
        name="agent",
        tag=f"agent-worker:test-force-{uuid.uuid4().hex[:8]}",
        dockerfile=f"FROM {base_image}\nRUN echo built > /marker\n",
    )
    lines: list[str] = []
    try:
        first = layers._ensure(docker_client, layer, False, tmp_path, lines.append)
        assert first.built
        assert not layers._ensure(docker_client, layer, False, tmp_path, lines.append).built
        forced = layers._ensure(docker_client, layer, True, tmp_path, lines.append)
        assert forced.built
        assert forced.log_path is not None
        assert "Using cache" not in forced.log_path.read_text()
    finally:
        docker_client.images.remove(layer.tag, force=True)


def test_a_missing_base_image_exits_3_and_leaves_nothing(
    repo: Path, docker_client: Any, tmp_path: Path
) -> None:
    before = snapshot(repo)
    images_before = {i.id for i in docker_client.images.list(all=True)}
    env = clean_env(ANTHROPIC_API_KEY="sk-ant-test-0000000000", XDG_CACHE_HOME=str(tmp_path))
    result = run_cli(
        ["--task", "x", "--base-image", "agent-worker-test/no-such-image:1"], cwd=repo, env=env
    )
    assert result.code == 3
    assert (
        "base image agent-worker-test/no-such-image:1 is not on the Docker engine" in result.stderr
    )
    assert "could not be pulled" in result.stderr
    assert "log: " in result.stderr
    assert snapshot(repo) == before
    assert git(repo, "branch", "--list") == "* main\n"
    assert not (repo / ".git" / "agent-worker").exists()
    assert {i.id for i in docker_client.images.list(all=True)} == images_before


def test_a_base_image_replaced_under_the_same_name_changes_every_tag(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    name = f"agent-worker-test/replaced-base:{uuid.uuid4().hex[:8]}"
    docker_client.images.get(base_image).tag(name)
    newer = None
    plan: Callable[[], list[str]] = lambda: [  # noqa: E731 (the same call, twice)
        layer.tag
        for layer in layers.plan(
            docker_client,
            CLAUDE_LAYER,
            base_image=name,
            ca_certs=(),
            force=False,
            log_dir=tmp_path,
            on_line=lambda line: None,
            project=ProjectImage(),
        )[0]
    ]
    try:
        first = plan()
        assert plan() == first
        newer = docker_client.containers.run(base_image, ["touch", "/newer"], detach=True)
        newer.wait()
        repository, tag = name.split(":")
        newer.commit(repository=repository, tag=tag)
        second = plan()
        assert all(a != b for a, b in zip(first, second, strict=True))
    finally:
        if newer is not None:
            newer.remove()
        docker_client.images.remove(name, force=True)


def test_a_project_dockerfile_builds_the_base_from_the_base_commit(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    dockerfile = f"FROM {base_image}\nCOPY marker.txt /etc/project-base\n"
    repo = make_repo(
        tmp_path / "p",
        {
            ".agent-worker/environment.toml": 'dockerfile = "docker/Dockerfile"\n',
            "docker/Dockerfile": dockerfile,
            "docker/marker.txt": "from the project's Dockerfile\n",
        },
    )
    # an uncommitted edit is not what the agent gets: the base commit's Dockerfile is built
    (repo / "docker" / "marker.txt").write_text("uncommitted\n")
    git(repo, "update-index", "--assume-unchanged", "docker/marker.txt")
    env = clean_env(
        XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_CONFIG_HOME=str(tmp_path / "config")
    )
    task = "cat /etc/project-base && id -un"
    # a project's Dockerfile is the repository's say: it needs the user's trust
    result = run_cli(
        ["--agent-type", "command", "--task", task, "--trust-environment"],
        cwd=repo,
        env=env,
        timeout=900,
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    out = (Path(result.report["run_dir"]) / "agent.jsonl").read_text()
    assert "from the project's Dockerfile" in out
    assert "uncommitted" not in out
    assert "agent" in out.split("from the project's Dockerfile", 1)[1]
    assert "image: base layer" in result.stderr
