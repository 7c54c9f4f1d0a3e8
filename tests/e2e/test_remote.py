"""Runs on a remote engine: a second Docker engine in a container of the test's own, which
cannot see this machine's files, so the workspace travels with the run's inputs. One engine
serves every test here, reached the ways users secure one: plain TCP (a relay to its socket),
TLS from the DOCKER_TLS* variables, a Docker context, and ssh to its `docker system dial-stdio`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import git, make_repo, run_cli, snapshot, tool_outputs
from fake_anthropic import Turn, bash, write
from remote_engine import RemoteEngine

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

SEQ = 5000  # `seq 1 5000`, 23,893 bytes: more than one TLS record, under Claude Code's cut-off


def agent_events(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every line the agent printed, as it arrived over the engine's attach stream: JSON each."""
    lines = (Path(report["run_dir"]) / "agent.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def assert_intact_remote_run(
    result: Any, fake_api: Any, repo: Path, branch: str, remote: RemoteEngine
) -> None:
    """The run succeeded on the remote engine, and the agent's output arrived byte for byte."""
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert result.report["status"] == "success"
    assert git(repo, "show", f"{branch}:remote.txt") == "made on the other engine\n"
    source, numbers = tool_outputs(fake_api)[1].split("\n", 1)
    assert source == "source=1"  # nothing of this machine's filesystem is mounted there
    expected = "\n".join(str(i) for i in range(1, SEQ + 1))
    assert numbers.strip() == expected
    events = agent_events(result.report)  # each line whole: no ciphertext, nothing cut
    results = [
        block
        for event in events
        if event.get("type") == "user"
        for block in event["message"]["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]
    assert expected in json.dumps(results[1]["content"]).replace("\\n", "\n")
    assert events[-1]["type"] == "result"
    served = fake_api.main_usage_total
    assert result.report["tokens"]["input"] == served.input_tokens
    assert result.report["turns"] == 3
    assert remote.client().containers.list(all=True) == []


def remote_turns(fake_api: Any) -> None:
    fake_api.add_turns(
        Turn.tool_use(write("/workspace/remote.txt", "made on the other engine\n")),
        Turn.tool_use(bash(f"test -e /source; echo source=$?; seq 1 {SEQ}")),
        Turn.text("done"),
    )


def test_a_run_on_a_remote_engine_ships_the_workspace_as_a_bundle(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], remote_engine: RemoteEngine
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
        env=run_env(DOCKER_HOST=remote_engine.plain),
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
    assert not (run_dir / "source.pack").exists()
    assert remote_engine.client().containers.list(all=True) == []


def test_a_shallow_ci_checkout_on_a_remote_engine(
    tmp_path: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    remote_engine: RemoteEngine,
) -> None:
    """What a CI job has (actions/checkout: depth 1) on the engine it is given; the check runs
    there too, in a container of its own, on the shallow branch's final commit."""
    origin = make_repo(tmp_path / "origin", {"app.py": "v = 1\n"})
    for n in (2, 3):
        (origin / "app.py").write_text(f"v = {n}\n")
        git(origin, "commit", "-qam", f"v{n}")
    project = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(project))
    fake_api.add_turns(
        Turn.tool_use(bash("git log --oneline | wc -l; cat app.py")),
        Turn.tool_use(write("/workspace/app.py", "v = 4\n")),
        Turn.text("bumped"),
    )
    check = "grep -qx 'v = 4' app.py && git log --oneline | wc -l"
    result = run_cli(
        ["--task", "bump", "--branch", "bump", "--check", check],
        cwd=project,
        env=run_env(DOCKER_HOST=remote_engine.plain),
        timeout=600,
    )
    assert result.code == 0, result.stderr
    assert tool_outputs(fake_api)[0].split() == ["1", "v", "=", "3"]
    assert git(project, "show", "bump:app.py") == "v = 4\n"
    assert git(project, "rev-list", "--count", "bump").strip() == "2"
    assert result.report is not None
    assert result.report["check"]["passed"] is True
    assert result.report["check"]["output_tail"] == ["2"]
    assert remote_engine.client().containers.list(all=True) == []


def test_mounting_on_a_remote_engine_is_refused_by_it_cleanly(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], remote_engine: RemoteEngine
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
            remote_engine.plain,
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
    assert remote_engine.client().containers.list(all=True) == []


def _proxy_bundle() -> str:
    """The machine's CA bundle (a TLS-intercepting proxy's CA among them), as the machine sets
    REQUESTS_CA_BUNDLE; the system's where it does not."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or "/etc/ssl/certs/ca-certificates.crt"


def test_a_run_over_tls_from_the_docker_variables(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], remote_engine: RemoteEngine
) -> None:
    remote_turns(fake_api)
    env = run_env(
        DOCKER_HOST=remote_engine.tls,
        DOCKER_TLS_VERIFY="1",
        DOCKER_CERT_PATH=str(remote_engine.certs),
        REQUESTS_CA_BUNDLE=_proxy_bundle(),
    )
    assert Path(env["REQUESTS_CA_BUNDLE"]).is_file()  # which does not sign the engine's
    result = run_cli(["--task", "over TLS", "--branch", "tls"], cwd=repo, env=env, timeout=600)
    assert_intact_remote_run(result, fake_api, repo, "tls", remote_engine)


@pytest.mark.parametrize(
    ("variables", "says"),
    [
        ({}, "DOCKER_TLS_VERIFY=1"),  # plain HTTP to the TLS port
        ({"DOCKER_TLS_VERIFY": "1"}, "certificate verify failed"),  # no ca.pem: system CAs only
    ],
)
def test_a_tls_engine_without_its_settings_is_a_clear_error(
    repo: Path,
    run_env: Callable[..., dict[str, str]],
    remote_engine: RemoteEngine,
    tmp_path: Path,
    variables: dict[str, str],
    says: str,
) -> None:
    env = run_env(
        DOCKER_HOST=remote_engine.tls,
        DOCKER_CERT_PATH=str(tmp_path),  # no ca.pem, cert.pem, key.pem
        REQUESTS_CA_BUNDLE=_proxy_bundle(),
    )
    env = {k: v for k, v in env.items() if k != "DOCKER_TLS_VERIFY"} | variables
    result = run_cli(["--task", "t", "--branch", "no-tls"], cwd=repo, env=env, timeout=120)
    assert result.code == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert f"cannot reach the Docker engine at {remote_engine.tls}" in line
    assert says in line
    assert "local socket" not in line
    assert git(repo, "branch", "--list", "no-tls") == ""


def _context_config(tmp_path: Path, remote: RemoteEngine) -> Path:
    """A Docker configuration directory with a context `remote` for the engine's TLS port,
    made by the docker CLI, and a context `broken` for a closed loopback port."""
    config = tmp_path / "docker-config"
    certs = remote.certs
    for name, host in (
        (
            "remote",
            f"host={remote.tls},ca={certs}/ca.pem,cert={certs}/cert.pem,key={certs}/key.pem",
        ),
        ("broken", "host=tcp://127.0.0.1:9"),
    ):
        subprocess.run(
            ["docker", "--config", str(config), "context", "create", name, "--docker", host],
            check=True,
            capture_output=True,
        )
    return config


def _context_env(
    run_env: Callable[..., dict[str, str]], config: Path, **extra: str
) -> dict[str, str]:
    env = run_env(DOCKER_CONFIG=str(config), REQUESTS_CA_BUNDLE=_proxy_bundle(), **extra)
    for name in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        if name not in extra:
            env.pop(name, None)
    return env


def test_a_run_on_the_current_docker_context(
    repo: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    remote_engine: RemoteEngine,
    tmp_path: Path,
) -> None:
    config = _context_config(tmp_path, remote_engine)
    subprocess.run(
        ["docker", "--config", str(config), "context", "use", "remote"],
        check=True,
        capture_output=True,
    )
    remote_turns(fake_api)
    result = run_cli(
        ["--task", "in context", "--branch", "ctx"],
        cwd=repo,
        env=_context_env(run_env, config),
        timeout=600,
    )
    assert_intact_remote_run(result, fake_api, repo, "ctx", remote_engine)


def test_docker_context_wins_over_the_configured_one_and_names_the_engine(
    repo: Path, run_env: Callable[..., dict[str, str]], remote_engine: RemoteEngine, tmp_path: Path
) -> None:
    config = _context_config(tmp_path, remote_engine)
    subprocess.run(
        ["docker", "--config", str(config), "context", "use", "broken"],
        check=True,
        capture_output=True,
    )
    broken = run_cli(
        ["--task", "t", "--branch", "broken"],
        cwd=repo,
        env=_context_env(run_env, config),
        timeout=120,
    )
    assert broken.code == 3, broken.stderr
    line = broken.stderr.strip().splitlines()[-1]
    assert "cannot reach the Docker engine at tcp://127.0.0.1:9 of Docker context 'broken'" in line
    assert "local socket" not in line

    # DOCKER_CONTEXT wins: the remote engine answers, and refuses a mount of this machine's path
    chosen = run_cli(
        ["--task", "t", "--branch", "chosen", "--workspace", "mount"],
        cwd=repo,
        env=_context_env(run_env, config, DOCKER_CONTEXT="remote"),
        timeout=300,
    )
    assert chosen.code == 3, chosen.stderr
    assert chosen.report is not None
    assert "bind source path does not exist" in chosen.report["error"]
    assert remote_engine.client().containers.list(all=True) == []


def _ssh_processes(ip: str) -> list[str]:
    """Command lines of this machine's processes talking to the engine's dial-stdio."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"dial-stdio" in args and ip.encode() in args:
            found.append(" ".join(a.decode(errors="replace") for a in args))
    return found


def test_a_run_over_ssh(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], remote_engine: RemoteEngine
) -> None:
    remote_turns(fake_api)
    env = run_env(**remote_engine.ssh_env())
    env.pop("DOCKER_HOST", None)
    result = run_cli(
        [
            "--task",
            "over ssh",
            "--branch",
            "ssh",
            "--remote-docker",
            f"ssh://root@{remote_engine.ip}",
        ],
        cwd=repo,
        env=env,
        timeout=600,
    )
    assert_intact_remote_run(result, fake_api, repo, "ssh", remote_engine)
    end = time.monotonic() + 10
    while _ssh_processes(remote_engine.ip) and time.monotonic() < end:
        time.sleep(0.2)
    assert _ssh_processes(remote_engine.ip) == []  # no ssh outlives the run


def test_ssh_checks_the_host_key_as_the_user_configured(
    repo: Path, run_env: Callable[..., dict[str, str]], remote_engine: RemoteEngine
) -> None:
    env = run_env(**remote_engine.ssh_env(known_hosts=""))  # strict checking, key unknown
    env.pop("DOCKER_HOST", None)
    url = f"ssh://root@{remote_engine.ip}"
    result = run_cli(
        ["--task", "t", "--branch", "unknown-host", "--remote-docker", url],
        cwd=repo,
        env=env,
        timeout=120,
    )
    assert result.code == 3, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert f"cannot reach the Docker engine at {url} (ssh: Host key verification failed.)" in line
    assert git(repo, "branch", "--list", "unknown-host") == ""


def test_a_killed_run_on_a_remote_engine_stops_and_is_recovered(
    repo: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    remote_engine: RemoteEngine,
) -> None:
    """kill -9 while the agent waits on the API: the remote container notices its attach
    ending, stops the agent, keeps the commits; --recover brings them back."""
    from test_faults import start_cli, wait_for_requests
    from test_lost import WORK_THEN_A_SLOW_ANSWER, wait_until

    remote = remote_engine.client()
    env = run_env(DOCKER_HOST=remote_engine.plain)
    fake_api.add_turns(*WORK_THEN_A_SLOW_ANSWER)
    proc = start_cli(["--task", "work", "--branch", "lost"], cwd=repo, env=env)
    wait_for_requests(fake_api, 3)
    proc.kill()
    proc.communicate(timeout=30)

    def exited() -> bool:
        found = remote.containers.list(all=True, filters={"label": "agent-worker.run-id"})
        return len(found) == 1 and found[0].status == "exited"

    assert wait_until(exited, 10.0)
    asked = len(fake_api.main_requests)
    time.sleep(2)
    assert len(fake_api.main_requests) == asked
    result = run_cli(["--recover"], cwd=repo, env=env)
    assert result.code == 0, result.stderr
    assert "recovered 2 commits of run" in result.stdout
    assert git(repo, "show", "lost:step2.txt") == "half done\n"
    assert remote.containers.list(all=True) == []
