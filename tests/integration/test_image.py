"""ensure_image() against the real engine: content-addressed reuse, rebuilds, failures."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from agent_worker_app import docker_manager
from agent_worker_app.agents.base_agent import AgentSettings, ImageLayer
from agent_worker_app.agents.claude_agent import ClaudeAgent
from agent_worker_app.backend import ImageResult
from agent_worker_app.errors import ImageBuildError
from conftest import ROOT, clean_env, git, run_cli, snapshot

CONTAINER = ROOT / "agent_worker_app" / "container"
CLAUDE_LAYER = ClaudeAgent(AgentSettings()).image_layer()


def args(base_image: str) -> dict[str, str]:
    return dict(CLAUDE_LAYER.build_args) | {"BASE_IMAGE": base_image}


def small_image(
    client: Any, tmp_path: Path, dockerfile: str, base_image: str, *, force: bool = False
) -> ImageResult:
    """ensure_image() for a one-file context in tmp_path/ctx, leaving agent-worker:latest be."""
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    return docker_manager.ensure_image(
        client,
        build_args={"BASE_IMAGE": base_image},
        ca_certs=(),
        force=force,
        log_dir=tmp_path / "logs",
        on_line=lambda line: None,
        context_dir=context,
        tag_latest=False,
    )


def test_unchanged_inputs_build_nothing(
    docker_client: Any,
    agent_image: str,
    base_image: str,
    ca_certs: tuple[Path, ...],
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    before = docker_client.images.get(agent_image).id
    again = docker_manager.ensure_image(
        docker_client,
        agent_layer=CLAUDE_LAYER,
        build_args=args(base_image),
        ca_certs=ca_certs,
        force=False,
        log_dir=tmp_path,
        on_line=lines.append,
    )
    assert again.tag == agent_image
    assert not again.built
    assert again.log_path is None
    assert lines == []
    assert docker_client.images.get(agent_image).id == before
    assert list(tmp_path.iterdir()) == []


def test_a_changed_dockerfile_byte_rebuilds(
    docker_client: Any,
    agent_image: str,
    base_image: str,
    ca_certs: tuple[Path, ...],
    tmp_path: Path,
) -> None:
    context = tmp_path / "container"
    shutil.copytree(CONTAINER, context)
    dockerfile = context / "Dockerfile"
    dockerfile.write_bytes(dockerfile.read_bytes() + b" ")
    lines: list[str] = []

    def ensure() -> ImageResult:
        return docker_manager.ensure_image(
            docker_client,
            agent_layer=CLAUDE_LAYER,
            build_args=args(base_image),
            ca_certs=ca_certs,
            force=False,
            log_dir=tmp_path / "logs",
            on_line=lines.append,
            context_dir=context,
            tag_latest=False,
        )

    changed = ensure()
    try:
        assert changed.built
        assert changed.tag != agent_image
        assert changed.log_path is not None
        assert "Successfully tagged " + changed.tag in changed.log_path.read_text()
        assert any("Step" in line for line in lines)
        again = ensure()
        assert not again.built
        assert again.tag == changed.tag
    finally:
        docker_client.images.remove(changed.tag)


def test_version_and_ca_files_are_part_of_the_tag(
    tmp_path: Path, ca_certs: tuple[Path, ...]
) -> None:
    files = docker_manager._context_files(CONTAINER, ())
    base = docker_manager.image_tag(files, {"CLAUDE_CODE_VERSION": "1", "BASE_IMAGE": "b"})
    assert base == docker_manager.image_tag(files, {"BASE_IMAGE": "b", "CLAUDE_CODE_VERSION": "1"})
    assert base != docker_manager.image_tag(files, {"CLAUDE_CODE_VERSION": "2", "BASE_IMAGE": "b"})
    assert base != docker_manager.image_tag(files, {"CLAUDE_CODE_VERSION": "1", "BASE_IMAGE": "c"})
    cert = tmp_path / "ca.crt"
    cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    with_ca = docker_manager._context_files(CONTAINER, (cert,))
    assert (
        docker_manager.image_tag(with_ca, {"CLAUDE_CODE_VERSION": "1", "BASE_IMAGE": "b"}) != base
    )


def test_force_rebuild_builds_even_when_present(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    dockerfile = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo built > /marker\n"
    first = small_image(docker_client, tmp_path, dockerfile, base_image)
    try:
        assert not small_image(docker_client, tmp_path, dockerfile, base_image).built
        forced = small_image(docker_client, tmp_path, dockerfile, base_image, force=True)
        assert forced.built
        assert forced.tag == first.tag
    finally:
        docker_client.images.remove(first.tag, force=True)


def test_a_failed_build_names_its_log_and_leaves_no_image(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    tags_before = {t for i in docker_client.images.list() for t in i.tags}
    dockerfile = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo about to fail && exit 7\n"
    with pytest.raises(ImageBuildError) as caught:
        small_image(docker_client, tmp_path, dockerfile, base_image)
    message = str(caught.value)
    assert caught.value.exit_code == 3
    assert "returned a non-zero code: 7" in message
    log = next((tmp_path / "logs").iterdir())
    assert str(log) in message
    assert "about to fail" in log.read_text()
    assert any("about to fail" in line for line in caught.value.details)
    assert {t for i in docker_client.images.list() for t in i.tags} == tags_before


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


def test_a_base_image_replaced_under_the_same_name_builds_anew(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    name = "agent-worker-test/replaced-base:1"
    docker_client.images.get(base_image).tag(name)
    dockerfile = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN true\n"
    made: set[str] = {name}
    try:
        first = small_image(docker_client, tmp_path, dockerfile, name)
        made.add(first.tag)
        assert not small_image(docker_client, tmp_path, dockerfile, name).built
        newer = docker_client.containers.run(base_image, ["touch", "/newer"], detach=True)
        newer.wait()
        newer.commit(repository="agent-worker-test/replaced-base", tag="1")
        newer.remove()
        second = small_image(docker_client, tmp_path, dockerfile, name)
        made.add(second.tag)
        assert second.built
        assert second.tag != first.tag
    finally:
        for tag in made:
            docker_client.images.remove(tag, force=True)


def test_the_agents_layer_is_spliced_in_and_hashed() -> None:
    plain = docker_manager._context_files(CONTAINER, ())
    layered = docker_manager._context_files(CONTAINER, (), CLAUDE_LAYER)
    dockerfile = {name: data for name, data, _ in layered}["Dockerfile"].decode()
    assert "FROM system AS claude" in dockerfile
    assert "# AGENT-LAYER" not in dockerfile
    final = dockerfile.index("COPY --from=claude")
    assert dockerfile.rindex("FROM system") < final < dockerfile.index("useradd")
    other = docker_manager._context_files(CONTAINER, (), ImageLayer(final="RUN echo other"))
    tags = {
        docker_manager.image_tag(files, {"BASE_IMAGE": "b"}) for files in (plain, layered, other)
    }
    assert len(tags) == 3
