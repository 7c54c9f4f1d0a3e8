"""The image's layers as Dockerfile text and tags (no Docker): what each tag depends on."""

from __future__ import annotations

from agent_worker_app.agents.base_agent import AgentSettings, ImageLayer
from agent_worker_app.agents.claude_agent import ClaudeAgent
from agent_worker_app.environment import parse_toml
from agent_worker_app.images import layers as image_layers

CA = (("ca-certs/00-proxy.crt", b"-----BEGIN CERTIFICATE-----\n", 0o644),)
ENV = parse_toml(
    """
setup_inputs = ["requirements.txt"]
setup = ["python3 -m venv .venv", ".venv/bin/pip install -r requirements.txt"]
env = { GREETING = 'say "hi" $HOME \\ ok' }
""",
    "e.toml",
)
INPUTS = {"requirements.txt": b"pytest==8.3.3\n"}
CLAUDE = ClaudeAgent(AgentSettings()).image_layer()
SCRIPTS = image_layers.container_files()


def chain(
    *,
    base_id: str = "sha256:1",
    apt: tuple[str, ...] = (),
    ca: tuple[image_layers.ContextFile, ...] = CA,
    inputs: dict[str, bytes] | None = None,
    agent: ImageLayer = CLAUDE,
    scripts: tuple[image_layers.ContextFile, ...] = SCRIPTS,
) -> tuple[str, str, str]:
    system = image_layers.system_layer("debian:bookworm-slim", base_id, apt=apt, ca_certs=ca)
    env = image_layers.environment_layer(system, ENV, INPUTS if inputs is None else inputs)
    assert env is not None
    top = image_layers.agent_layer(system, env, agent, scripts)
    return system.tag, env.tag, top.tag


def test_each_layer_changes_with_its_own_inputs_and_those_below() -> None:
    system, env, agent = chain()
    assert system.startswith("agent-worker-system:")
    assert env.startswith("agent-worker-env:")
    assert agent.startswith("agent-worker:")
    assert chain() == (system, env, agent)  # nothing changed: the same tags
    # a new base image, apt list or CA file: everything anew
    for changed in (chain(base_id="sha256:2"), chain(apt=("nodejs",)), chain(ca=())):
        assert changed[0] != system
        assert changed[1] != env
        assert changed[2] != agent
    # a changed lockfile: the system layer stays
    lock = chain(inputs={"requirements.txt": b"pytest==8.3.4\n"})
    assert lock[0] == system
    assert lock[1] != env
    assert lock[2] != agent
    # a new agent pin or container script: only the agent layer
    pin = ClaudeAgent(AgentSettings(values={"CLAUDE_CODE_VERSION": "9.9.9"})).image_layer()
    for changed in (
        chain(agent=pin),
        chain(scripts=(*SCRIPTS[:-1], (SCRIPTS[-1][0], SCRIPTS[-1][1] + b"\n", 0o755))),
    ):
        assert changed[:2] == (system, env)
        assert changed[2] != agent


def test_the_system_layer_has_the_sandbox_tools_and_the_projects_packages() -> None:
    system = image_layers.system_layer("base:1", "sha256:1", apt=("nodejs", "git"), ca_certs=CA)
    assert system.dockerfile.startswith("FROM base:1\nUSER root\n")
    install = next(line for line in system.dockerfile.splitlines() if "apt-get install" in line)
    for tool in ("git", "iptables", "ipset", "iproute2", "jq", "curl", "ripgrep", "nodejs"):
        assert f" {tool} " in install + " "
    assert install.count(" git ") == 1
    assert "useradd --create-home --uid 1000" in system.dockerfile
    assert {name for name, _, _ in system.files} == {"dpkg-slim", "ca-certs/00-proxy.crt"}


def test_setup_runs_as_the_agent_in_the_workspace_after_its_inputs() -> None:
    system = image_layers.system_layer("base:1", "sha256:1", apt=(), ca_certs=())
    env = image_layers.environment_layer(system, ENV, INPUTS)
    assert env is not None
    lines = env.dockerfile.splitlines()
    assert lines[0] == f"FROM {system.tag}"
    copy = lines.index("COPY --chown=1000:1000 inputs/ /workspace/")
    user = lines.index("USER agent")
    assert copy < user < lines.index("WORKDIR /workspace")
    runs = [i for i, line in enumerate(lines) if line.startswith("RUN ")]
    assert runs
    assert min(runs) > user
    assert lines[runs[1]] == 'RUN ["/bin/sh", "-c", ".venv/bin/pip install -r requirements.txt"]'
    # the step numbers the progress and the failure message go by: instructions, 1-based
    assert env.setup_steps == tuple(i + 1 for i in runs)
    # a variable's value travels as a build argument, never parsed as Dockerfile text
    assert env.build_args == {"AW_ENV_0": 'say "hi" $HOME \\ ok'}
    assert 'ENV GREETING="${AW_ENV_0}"' in lines
    assert env.files == (("inputs/requirements.txt", INPUTS["requirements.txt"], 0o644),)


def test_no_setup_no_inputs_no_variables_means_no_environment_layer() -> None:
    system = image_layers.system_layer("base:1", "sha256:1", apt=(), ca_certs=())
    assert image_layers.environment_layer(system, parse_toml("", "e"), {}) is None


def test_the_agent_layer_builds_its_stages_from_the_system_layer() -> None:
    system = image_layers.system_layer("base:1", "sha256:1", apt=(), ca_certs=())
    env = image_layers.environment_layer(system, ENV, INPUTS)
    assert env is not None
    top = image_layers.agent_layer(system, env, CLAUDE, SCRIPTS)
    text = top.dockerfile
    assert text.startswith(f"FROM {system.tag} AS system\nFROM system AS claude\n")
    assert f"FROM {env.tag}\nUSER root\nCOPY --from=claude" in text
    assert (
        "COPY agent_inside.sh credential-gate.py dns-names.pl egress-proxy.py init-firewall.sh"
        " network-companion.sh /usr/local/bin/"
    ) in text
    # the shell scripts are commands; the Perl forwarder and the Python proxies are only read
    # (root runs them: perl FILE, python3 FILE)
    assert (
        "RUN chmod 0755 /usr/local/bin/agent_inside.sh /usr/local/bin/init-firewall.sh"
        " /usr/local/bin/network-companion.sh && chmod 0644 /usr/local/bin/credential-gate.py"
        " /usr/local/bin/dns-names.pl /usr/local/bin/egress-proxy.py\n"
    ) in text
    assert text.rstrip().endswith('USER agent\nWORKDIR /workspace\nCMD ["bash"]')
    assert top.build_args == dict(CLAUDE.build_args)
    # an agent with no stages (the command agent) needs no system layer of its own
    plain = image_layers.agent_layer(system, env, ImageLayer(), SCRIPTS)
    assert plain.dockerfile.startswith(f"FROM {env.tag}\nUSER root\n")
