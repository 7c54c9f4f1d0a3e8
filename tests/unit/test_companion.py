"""The network companion's pure parts: when a task needs one, the credential taken out of the
agent's inputs for it, and its record put into the task's result in place of the container's."""

from __future__ import annotations

import json

import pytest

from agent_worker_app.engines import channel
from agent_worker_app.engines.base import TaskSpec
from agent_worker_app.engines.channel import FileEntry, Inputs
from agent_worker_app.engines.docker import companion
from agent_worker_app.engines.docker.container_config import container_config
from agent_worker_app.engines.profile import Profile
from agent_worker_app.errors import DockerError

PROFILE = Profile(memory_bytes=1 << 30, cpus=None, pids_limit=256, firewall=True)


def spec(env: dict[str, str] | None = None, profile: Profile = PROFILE) -> TaskSpec:
    return TaskSpec(
        image="img",
        name="agent-worker-x",
        command=["true"],
        env=env or {},
        labels={},
        timeout_s=60,
        profile=profile,
    )


def test_only_a_firewall_under_a_runtime_whose_network_is_not_the_kernels_needs_one() -> None:
    assert companion.needed(PROFILE, "runsc")
    assert companion.needed(PROFILE, "kata")
    assert not companion.needed(PROFILE, "runc")
    assert not companion.needed(PROFILE, "io.containerd.runc.v2")
    off = Profile(memory_bytes=1 << 30, cpus=None, pids_limit=256, firewall=False)
    assert not companion.needed(off, "runsc")
    offline = Profile(memory_bytes=1 << 30, cpus=None, pids_limit=256, firewall=True, offline=True)
    assert not companion.needed(offline, "runsc")  # the check's task: no network at all


def inputs(*secrets: tuple[str, bytes]) -> Inputs:
    files = [FileEntry(channel.TASK, b"task"), FileEntry(channel.SECRETS, None, 0o700)]
    files += [FileEntry(f"{channel.SECRETS}/{k}", v, 0o600) for k, v in secrets]
    return channel.inputs(files, "n" * 32)


def test_with_a_gate_the_credential_goes_to_the_companion_and_the_agent_gets_its_name() -> None:
    gated = spec({"AW_GATE_UPSTREAM": "https://api.example"})
    secret, left = companion._secret(gated, inputs(("ANTHROPIC_API_KEY", b"sk-real")))
    assert secret == b"sk-real"
    kept = {e.path: e.data for e in left.files}
    assert kept[f"{channel.SECRETS}/ANTHROPIC_API_KEY"] == b""  # the name, never the value
    assert b"sk-real" not in b"".join(d for d in kept.values() if isinstance(d, bytes))
    assert left.nonce == "n" * 32


def test_without_a_gate_the_agent_keeps_its_secret_and_the_companion_gets_none() -> None:
    given = inputs(("OPENAI_API_KEY", b"sk-plugin"))
    secret, left = companion._secret(spec(), given)
    assert secret == b""
    assert left == given


@pytest.mark.parametrize(
    "secrets",
    [(("A", b"one"), ("B", b"two")), (("A", b"line\nbreak"),)],
)
def test_a_credential_the_gate_cannot_take_is_a_clear_error(
    secrets: tuple[tuple[str, bytes], ...],
) -> None:
    with pytest.raises(DockerError):
        companion._secret(spec({"AW_GATE_UPSTREAM": "u"}), inputs(*secrets))


def test_the_agents_container_joins_the_companions_network_without_its_capabilities() -> None:
    joined = container_config(spec(), "abc")["HostConfig"]
    assert joined["NetworkMode"] == "container:abc"
    assert "NET_ADMIN" not in joined["CapAdd"]
    assert "NET_RAW" not in joined["CapAdd"]
    alone = container_config(spec())["HostConfig"]
    assert alone["NetworkMode"] == "bridge"
    assert "NET_ADMIN" in alone["CapAdd"]


def test_the_companions_record_takes_the_place_of_the_containers() -> None:
    said = json.dumps({"phase": "agent", "blocked": [], "meter": None, "warnings": ["w"]})
    record = {"blocked": [{"address": "10.0.0.9", "port": 80}], "meter": {"requests": 2}}
    merged = json.loads(companion.with_record(said, record) or "")
    assert merged["blocked"] == record["blocked"]
    assert merged["meter"] == {"requests": 2}
    assert merged["warnings"] == ["w"]


def test_a_record_that_never_came_is_a_warning_not_an_empty_truth() -> None:
    said = json.dumps({"phase": "agent", "warnings": []})
    merged = json.loads(companion.with_record(said, None) or "")
    assert merged["meter"] is None
    assert any("did not say what it blocked" in w for w in merged["warnings"])
    assert companion.with_record(None, {"blocked": []}) is None  # no result: nothing to add
    assert companion.with_record("not json", None) == "not json"
