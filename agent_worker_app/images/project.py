"""The project's part of a run's image, read from the branch's base commit: its environment
(environment.py), the bytes of its setup_inputs, its own Dockerfile's layer; and the run's
configuration with the environment's values filled in. Changes nothing."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from agent_worker_app import environment, environment_hint, git_manager, trust
from agent_worker_app.config import Config, apply_environment
from agent_worker_app.errors import UsageError
from agent_worker_app.images import layers as image_layers
from agent_worker_app.images import setup_inputs
from agent_worker_app.images.layers import ProjectImage

if TYPE_CHECKING:
    from agent_worker_app.environment import Environment
    from agent_worker_app.git_manager import Workspace


def read_environment(cfg: Config, ws: Workspace, commit: str) -> Environment:
    """--no-environment: none; --environment PATH: that file (TOML, or devcontainer JSON when
    it ends in .json); else the repository's own, as commit has it (the base commit, or for
    --continue the one the continued run read it from)."""
    if cfg.no_environment:
        return environment.NONE
    if cfg.environment_file is not None:
        path = cfg.environment_file
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"--environment: cannot read {path}: {exc.strerror}") from None
        text = environment.decode(data, str(path))
        if path.suffix == ".json":
            return environment.parse_devcontainer(text, str(path), folder=".")
        return environment.parse_toml(text, str(path))
    # one look for the files it may have (most repositories have none), then the one found;
    # in the same look, what a suggestion for a repository without one goes by
    candidates = (environment.TOML_PATH, *environment.DEVCONTAINER_PATHS)
    present = git_manager.blobs_at(ws.root, commit, (*candidates, *environment_hint.MARKERS))
    found = environment.find(
        lambda p: git_manager.file_at(ws.root, commit, p) if p in present else None
    )
    markers = (
        frozenset(present & set(environment_hint.MARKERS))
        if found is environment.NONE
        else frozenset()
    )
    return dataclasses.replace(found, commit=commit, markers=markers)


def load(
    cfg: Config, ws: Workspace, work_dir: Path, *, at: str | None = None
) -> tuple[Config, ProjectImage]:
    """The configuration with the environment's values (the command line's own first) and the
    project's image inputs, from the base commit (or at: --continue's recorded one). A project
    Dockerfile's context goes to work_dir as a tar."""
    commit = at or ws.base_commit
    env = trust.decide(
        read_environment(cfg, ws, commit),
        project=ws.root,
        settings_dir=trust.settings_dir(os.environ),
        trust_flag=cfg.trust_environment,
        named_by_user=cfg.environment_file is not None,
    )
    inputs = {}
    entries = env.setup_inputs
    if any(setup_inputs.is_pattern(entry) for entry in entries):
        files = git_manager.files_at(ws.root, commit)
        entries = tuple(setup_inputs.select(entries, files, source=env.source, commit=commit))
    for path in entries:
        data = git_manager.file_at(ws.root, commit, path)
        if data is None:
            raise UsageError(
                f"{env.source}: setup_inputs: {path} is not a file of the commit "
                f"{commit[:12]} the environment is read from (commit it, or correct the path)"
            )
        inputs[path] = data
    base = _base_layer(env, ws, work_dir, commit) if env.dockerfile else None
    return with_environment(cfg, env), ProjectImage(env, inputs, base, cfg.setup_allow)


def _base_layer(env: Environment, ws: Workspace, work_dir: Path, commit: str) -> image_layers.Layer:
    assert env.dockerfile is not None
    dockerfile = git_manager.file_at(ws.root, commit, env.dockerfile)
    tree = git_manager.tree_id(ws.root, commit, env.context)
    if dockerfile is None or tree is None:
        missing = env.dockerfile if dockerfile is None else f"build context {env.context}"
        raise UsageError(f"{env.source}: {missing} is not in the commit {commit[:12]}")
    context = PurePosixPath(env.context)
    inside = PurePosixPath(env.dockerfile)
    if env.context != ".":
        if context not in inside.parents:
            raise UsageError(
                f"{env.source}: the Dockerfile {env.dockerfile} must be inside its build "
                f"context {env.context}"
            )
        inside = inside.relative_to(context)
    work_dir.mkdir(parents=True, exist_ok=True)
    tar = work_dir / f"context-{tree}.tar"
    if not tar.is_file():
        partial = tar.with_suffix(".part")
        git_manager.archive(ws.root, commit, env.context, partial)
        partial.replace(tar)
    return image_layers.base_layer(tree, str(inside), dockerfile, tar)


def with_environment(cfg: Config, env: Environment) -> Config:
    """The environment's values where the command line gave none (config.apply_environment:
    maintenance, check, allowed hosts added, plain variables)."""
    applied = apply_environment(
        cfg,
        source=env.source,
        maintenance=env.maintenance,
        check=env.check,
        allow_hosts=env.allow_hosts,
        env=dict(env.env),
    )
    return dataclasses.replace(applied, environment=env)
