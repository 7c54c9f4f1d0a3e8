"""The agent image as layers, each an image of its own tagged by a hash of its inputs:

    base         (only with a project Dockerfile) that Dockerfile, built from the base commit
    system       the base image, the sandbox's own tools, the project's apt packages, CA files,
                 the agent user
    environment  (only with setup, setup_inputs or env) the setup commands, run as the agent user
                 in /workspace, the bytes of the files they read, the plain variables
    agent        the agent's own layer and pin, the container scripts

Each Dockerfile names its parent by tag, and each tag hashes the Dockerfile, so a layer's tag
changes with anything below it; a run builds only the layers above the nearest one that exists.
Pure: Dockerfile text and hashes; images/build.py builds them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent_worker_app.environment import NONE, Environment

if TYPE_CHECKING:
    from agent_worker_app.agents.base_agent import ImageLayer

# (name in the build context, bytes, mode)
ContextFile = tuple[str, bytes, int]

CONTAINER_DIR = Path(__file__).resolve().parents[1] / "container"
from agent_worker_app.engines.profile import AGENT_UID  # noqa: E402 (beside its use)

# What the sandbox itself needs (the firewall, the clone, the result) and the tools every agent
# expects; in the system layer, so that no later layer ever runs apt for them.
SYSTEM_TOOLS = (
    "ca-certificates",
    "git",
    "iptables",
    "ipset",
    "iproute2",
    "dnsutils",
    "jq",
    "curl",
    "ripgrep",
    "procps",
    "python3",  # root's credential gate (container/credential-gate.py)
    "tzdata",
    "less",
)
REPOSITORIES = {
    "base": "agent-worker-base",
    "system": "agent-worker-system",
    "environment": "agent-worker-env",
    "agent": "agent-worker",
    "node-job": "agent-worker-node-job",  # the swarm's helper jobs (engines/swarm/helper_image.py)
}
# Documentation, manual pages and translations are not installed: the agent reads --help.
# (Debian's own slim images do the same.)
DPKG_SLIM = b"""path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/linda/*
"""
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class LayerResult:
    """One layer of the image (image_layers.py): its tag, and whether this run built it."""

    name: str  # base, system, environment, agent
    tag: str
    built: bool
    log_path: Path | None
    duration_s: float | None = None  # how long its build took (built ones)
    setup_times: tuple[tuple[str, float], ...] = ()  # each setup command and its seconds


@dataclass(frozen=True)
class ImageResult:
    tag: str
    built: bool
    log_path: Path | None  # the log of the last layer built
    layers: tuple[LayerResult, ...] = ()


@dataclass(frozen=True)
class Layer:
    """One layer's build: its Dockerfile, context files and arguments, and its tag."""

    name: str  # base, system, environment, agent
    tag: str
    dockerfile: str
    files: tuple[ContextFile, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    # setup commands and the Dockerfile step (1-based instruction number) of each
    setup: tuple[str, ...] = ()
    setup_steps: tuple[int, ...] = ()
    # a project Dockerfile's context: a tar made from the base commit, and the file in it
    context_tar: Path | None = None
    dockerfile_path: str | None = None
    # setup's steps run in a network closed to private addresses (images/setup_network.py),
    # held by a container of this image (one with iptables), open to these networks
    firewall_image: str | None = None
    setup_allow: tuple[str, ...] = ()


def layer_tag(
    name: str,
    dockerfile: str,
    files: tuple[ContextFile, ...],
    build_args: Mapping[str, str],
    extra: str = "",
) -> str:
    """<repository>:<hash of the Dockerfile, the context files and modes, the arguments>."""
    digest = hashlib.sha256(f"layer\0{name}\0{extra}\0".encode())
    digest.update(f"Dockerfile\0{len(dockerfile)}\0{dockerfile}\0".encode())
    for path, data, mode in files:
        digest.update(f"{path}\0{mode:o}\0{len(data)}\0".encode())
        digest.update(data)
    for key in sorted(build_args):
        digest.update(f"arg\0{key}\0{build_args[key]}\0".encode())
    return f"{REPOSITORIES[name]}:{digest.hexdigest()[:16]}"


def _instructions(dockerfile: str) -> list[str]:
    return [
        line for line in dockerfile.splitlines() if line.strip() and not line.startswith(("#", " "))
    ]


# ---------------------------------------------------------------- base (a project Dockerfile)


def base_layer(tree: str, dockerfile_path: str, dockerfile: bytes, context_tar: Path) -> Layer:
    """The project's own Dockerfile, built with its context as the base commit has it: the tag
    hashes the context's tree id (all of its content) and the Dockerfile's path and bytes."""
    files = (("(dockerfile)", dockerfile, 0o644),)
    return Layer(
        name="base",
        tag=layer_tag("base", dockerfile_path, files, {}, extra=tree),
        dockerfile=dockerfile.decode("utf-8", "replace"),
        files=files,
        context_tar=context_tar,
        dockerfile_path=dockerfile_path,
    )


# ---------------------------------------------------------------- system


def system_layer(
    base: str, base_id: str, *, apt: tuple[str, ...], ca_certs: tuple[ContextFile, ...]
) -> Layer:
    """The base with the sandbox's tools, the project's packages, the CA files, the agent user.

    The CA files go in before any download, so that a TLS-intercepting proxy is trusted by the
    package managers during the build and by the agent at run time."""
    packages = " ".join(dict.fromkeys((*SYSTEM_TOOLS, *apt)))
    dockerfile = f"""FROM {base}
USER root
ENV DEBIAN_FRONTEND=noninteractive \\
    LANG=C.UTF-8 \\
    NODE_EXTRA_CA_CERTS={CA_BUNDLE} \\
    SSL_CERT_FILE={CA_BUNDLE} \\
    GIT_SSL_CAINFO={CA_BUNDLE} \\
    REQUESTS_CA_BUNDLE={CA_BUNDLE} \\
    PIP_CERT={CA_BUNDLE}
COPY dpkg-slim /etc/dpkg/dpkg.cfg.d/agent-worker-slim
COPY ca-certs/ /usr/local/share/ca-certificates/agent-worker/
RUN apt-get update \\
 && apt-get install -y --no-install-recommends {packages} \\
 && update-ca-certificates \\
 && apt-get clean \\
 && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log
RUN old=$(getent passwd {AGENT_UID} | cut -d: -f1) \\
 && if [ -n "$old" ] && [ "$old" != agent ]; then \\
      usermod -l agent -d /home/agent -m "$old"; fi \\
 && if ! id agent >/dev/null 2>&1; then \\
      useradd --create-home --uid {AGENT_UID} --shell /bin/bash agent; fi \\
 && mkdir -p /workspace /agent-worker/out \\
 && chown agent: /workspace /agent-worker/out
"""
    files = (("dpkg-slim", DPKG_SLIM, 0o644), *ca_certs)
    return Layer(
        name="system",
        tag=layer_tag("system", dockerfile, files, {}, extra=base_id),
        dockerfile=dockerfile,
        files=files,
    )


# ---------------------------------------------------------------- environment


def environment_layer(system: Layer, env: Environment, inputs: Mapping[str, bytes]) -> Layer | None:
    """Setup as the agent user in /workspace, where the clone goes (so that a .venv or
    node_modules lands where the tools look), after the files it reads; the variables. None
    when the environment has none of these."""
    if not (env.setup or inputs or env.env):
        return None
    lines = [f"FROM {system.tag}"]
    args = {}
    for i, name in enumerate(sorted(env.env)):
        # through a build argument: the value is used as it is, never parsed by the Dockerfile
        args[f"AW_ENV_{i}"] = env.env[name]
        lines += [f"ARG AW_ENV_{i}", f'ENV {name}="${{AW_ENV_{i}}}"']
    files = tuple((f"inputs/{path}", data, 0o644) for path, data in sorted(inputs.items()))
    if files:
        lines.append(f"COPY --chown={AGENT_UID}:{AGENT_UID} inputs/ /workspace/")
    lines += ["USER agent", "WORKDIR /workspace"]
    steps = []
    for command in env.setup:
        lines.append("RUN " + json.dumps(["/bin/sh", "-c", command]))
        steps.append(len(_instructions("\n".join(lines))))
    dockerfile = "\n".join(lines) + "\n"
    return Layer(
        name="environment",
        tag=layer_tag("environment", dockerfile, files, args),
        dockerfile=dockerfile,
        files=files,
        build_args=args,
        setup=env.setup,
        setup_steps=tuple(steps),
    )


# ---------------------------------------------------------------- agent


# Not the agent's container's: setup's network holder runs it (images/setup_network.py).
SETUP_FIREWALL = "setup-firewall.sh"


def container_files(context_dir: Path = CONTAINER_DIR) -> tuple[ContextFile, ...]:
    """The scripts the container runs: container/*.sh, executable, and container/*.pl and
    *.py, which root's scripts run with perl and python3 (read only)."""
    paths = sorted(
        path
        for path in [
            *context_dir.glob("*.sh"),
            *context_dir.glob("*.pl"),
            *context_dir.glob("*.py"),
        ]
        if path.name != SETUP_FIREWALL
    )
    return tuple(
        (path.name, path.read_bytes(), 0o755 if path.suffix == ".sh" else 0o644) for path in paths
    )


def agent_layer(
    stages_on: Layer,
    parent: Layer,
    agent: ImageLayer,
    scripts: tuple[ContextFile, ...],
) -> Layer:
    """The agent and the container scripts, on top of the environment (or system) layer.

    The agent's build stages start FROM stages_on: the system layer of --base-image with no
    project packages, the same for every project, so that Docker's cache keeps an installed
    agent across projects and environment changes; only what they produce (a binary) is
    copied onto the project's layers."""
    stages = agent.stages.strip()
    final = agent.final.strip()
    names = " ".join(name for name, _, _ in scripts)
    modes = sorted({mode for _, _, mode in scripts}, reverse=True)
    chmod = " && ".join(
        f"chmod {mode:04o} " + " ".join(f"/usr/local/bin/{n}" for n, _, m in scripts if m == mode)
        for mode in modes
    )
    head = f"FROM {stages_on.tag} AS system\n{stages}\n" if stages else ""
    dockerfile = f"""{head}FROM {parent.tag}
USER root
{final}
COPY {names} /usr/local/bin/
RUN {chmod}
# `docker run -it IMAGE bash` lands in /workspace as the agent user; runs started by
# agent-worker choose their own user and command.
USER agent
WORKDIR /workspace
CMD ["bash"]
"""
    args = dict(agent.build_args)
    return Layer(
        name="agent",
        tag=layer_tag("agent", dockerfile, scripts, args),
        dockerfile=dockerfile,
        files=scripts,
        build_args=args,
    )


def ca_files(ca_certs: tuple[Path, ...]) -> tuple[ContextFile, ...]:
    """The --ca-cert files as the build context has them (ca-certs/NN-name.crt)."""
    return tuple(
        (f"ca-certs/{i:02d}-{cert.stem}.crt", cert.read_bytes(), 0o644)
        for i, cert in enumerate(ca_certs)
    )


@dataclass(frozen=True)
class ProjectImage:
    """The project's part of the image, read from its base commit: the environment, the bytes
    of its setup_inputs, and the layer of its own Dockerfile (if it names one)."""

    environment: Environment = NONE
    inputs: Mapping[str, bytes] = field(default_factory=dict)
    base: Layer | None = None
    # the networks setup may reach among the closed ones (--setup-allow-net): not the image's
    setup_allow: tuple[str, ...] = ()

    def identity(self) -> str:
        """A digest of all of it: two runs with the same identity share their image."""
        digest = hashlib.sha256(repr((self.environment, self.base)).encode())
        for path in sorted(self.inputs):
            digest.update(f"{path}\0{len(self.inputs[path])}\0".encode())
            digest.update(self.inputs[path])
        return digest.hexdigest()


class MissingImageError(Exception):
    """An image the plan stands on is not on the engine (raised by a caller's image_id or
    ensure that only looks)."""


def plan(
    agent: ImageLayer,
    *,
    base_image: str,
    ca_certs: tuple[Path, ...],
    project: ProjectImage,
    image_id: Callable[[str], str],
    ensure: Callable[[Layer], LayerResult],
    scripts_dir: Path = CONTAINER_DIR,
    results: list[LayerResult] | None = None,
) -> tuple[list[Layer], Layer]:
    """The layers of the image, bottom up, and the top one. What they stand on is made ready
    first, by the caller's image_id (a base image's id; pulled if missing) and ensure (a project
    Dockerfile's layer, the system layer the agent's stages build on; built if missing), whose
    results go to results."""
    results = [] if results is None else results
    base_ref = project.environment.base_image or base_image
    if project.base is not None:
        results.append(ensure(project.base))
        base_ref = project.base.tag
    system = system_layer(
        base_ref, image_id(base_ref), apt=project.environment.apt, ca_certs=ca_files(ca_certs)
    )
    environment = environment_layer(system, project.environment, project.inputs)
    if environment is not None and environment.setup:
        environment = dataclasses.replace(
            environment, firewall_image=system.tag, setup_allow=project.setup_allow
        )
    stages_on = system
    if agent.stages.strip() and (base_ref != base_image or project.environment.apt):
        # the agent's stages build on the default system layer, shared by every project
        stages_on = system_layer(
            base_image, image_id(base_image), apt=(), ca_certs=ca_files(ca_certs)
        )
        name = "system (for the agent's stages)"
        stage = ensure(dataclasses.replace(stages_on, name=name))
        if stage.built:
            results.append(stage)
    top = agent_layer(stages_on, environment or system, agent, container_files(scripts_dir))
    return [layer for layer in (system, environment, top) if layer is not None], top
