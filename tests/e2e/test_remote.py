"""Runs on a remote engine: a second Docker engine in a container of the test's own, which
cannot see this machine's files, so the workspace travels with the run's inputs. One engine
serves every test here, reached the ways users secure one: plain TCP (a relay to its socket),
TLS from the DOCKER_TLS* variables, a Docker context, and ssh to its `docker system dial-stdio`."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import Mount

from conftest import git, make_repo, require, run_cli, snapshot, tool_outputs
from fake_anthropic import Turn, bash, write

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

DIND_DOCKERFILE = b"""ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      docker.io iptables ca-certificates openssh-server socat \\
 && rm -rf /var/lib/apt/lists/* \\
 && sed -i 's/^session\\s*required\\s*pam_loginuid.so/session optional pam_loginuid.so/' \\
      /etc/pam.d/sshd
"""

# The engine keeps its images on a volume of its own: on the host's filesystem, where overlay2
# works as it does for the host's engine (loading the images, creating and removing containers
# then take seconds; vfs copies every layer in full). vfs where the host's engine uses it.
# dockerd speaks TLS on 2376 (client certificates required) and serves its unix socket, which
# `docker system dial-stdio` (ssh) uses; socat relays plain TCP on 2375 to that socket, and waits
# for the engine's side to end after the client's input ended (-t). The certificates name the
# engine's address, known only once it runs: the script waits for them.
ENGINE_SCRIPT = """
while [ ! -e /certs/ready ]; do sleep 0.1; done
mkdir -p /run/sshd && /usr/sbin/sshd -E /var/log/sshd.log
socat -t 3600 TCP-LISTEN:2375,fork,reuseaddr UNIX-CONNECT:/var/run/docker.sock &
exec dockerd -H unix:///var/run/docker.sock -H tcp://0.0.0.0:2376 --tlsverify \\
  --tlscacert /certs/ca.pem --tlscert /certs/server-cert.pem --tlskey /certs/server-key.pem \\
  --storage-driver="$STORAGE_DRIVER"
"""

SEQ = 5000  # `seq 1 5000`, 23,893 bytes: more than one TLS record, under Claude Code's cut-off


@dataclass(frozen=True)
class RemoteEngine:
    ip: str
    plain: str  # tcp:// without TLS
    tls: str  # tcp:// on the TLS port
    certs: Path  # the client's ca.pem, cert.pem, key.pem
    ssh_bin: Path  # a directory whose `ssh` uses the test's key, config and known hosts
    ssh_dir: Path

    def client(self) -> Any:
        return docker.DockerClient(base_url=self.plain, timeout=300)

    def ssh_env(self, known_hosts: str | None = None) -> dict[str, str]:
        """PATH entries for a run whose ssh trusts known_hosts (by default the real host key)."""
        bin_dir = self.ssh_bin
        if known_hosts is not None:
            bin_dir = _ssh_wrapper(self.ssh_dir / "other", self.ssh_dir / "id", known_hosts)
        return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _ensure_tools() -> None:
    """openssl and the OpenSSH client, installed on a fresh Debian machine as scripts/test runs."""
    missing = {
        package
        for tool, package in {
            "openssl": "openssl",
            "ssh": "openssh-client",
            "ssh-keygen": "openssh-client",
        }.items()
        if shutil.which(tool) is None
    }
    if not missing:
        return
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
        require(f"{', '.join(sorted(missing))} missing, and this is not Debian as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *sorted(missing)], check=True, env=env)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certs(directory: Path, ip: str) -> None:
    """A CA, the engine's certificate for its address, and a client certificate."""
    directory.mkdir(parents=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=agent-worker test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    for name, usage, alt in (
        ("server", "serverAuth", f"subjectAltName=IP:{ip}\n"),
        ("client", "clientAuth", ""),
    ):
        (directory / f"{name}.ext").write_text(
            f"{alt}extendedKeyUsage={usage}\nkeyUsage=critical,digitalSignature\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        )
        _openssl(
            "req", "-new", *ec, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
            "-subj", f"/CN={name}", cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-set_serial", str(time.time_ns()), "-days", "2", "-extfile", f"{name}.ext",
            "-out", f"{name}-cert.pem", cwd=directory,
        )  # fmt: skip
    # The client's files under the names DOCKER_CERT_PATH and contexts use.
    shutil.copy(directory / "client-cert.pem", directory / "cert.pem")
    shutil.copy(directory / "client-key.pem", directory / "key.pem")


def _ssh_wrapper(directory: Path, key: Path, known_hosts: str) -> Path:
    """A bin directory whose `ssh` reads the test's own configuration: OpenSSH takes ~/.ssh from
    the password database, not from HOME, so the machine's root configuration stays untouched."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "known_hosts").write_text(known_hosts)
    config = directory / "config"
    config.write_text(
        "Host *\n"
        f"  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {directory / 'known_hosts'}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n"
    )
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {config} "$@"\n')
    wrapper.chmod(0o755)
    return bin_dir


def _archive(files: dict[str, tuple[bytes | None, int]]) -> bytes:
    """A tar of root-owned files (data None: a directory) with their modes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def remote_engine(
    docker_client: Any, base_image: str, agent_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemoteEngine]:
    """A second engine (flags from DESIGN.md) holding the base and agent images."""
    _ensure_tools()
    docker_client.images.build(
        fileobj=io.BytesIO(DIND_DOCKERFILE),
        tag="agent-worker-test/dind",
        buildargs={"BASE_IMAGE": base_image},
        rm=True,
    )
    engine = docker_client.containers.run(
        "agent-worker-test/dind",
        ["sh", "-c", ENGINE_SCRIPT],
        environment={
            "STORAGE_DRIVER": "overlay2" if docker_client.info()["Driver"] == "overlay2" else "vfs"
        },
        mounts=[Mount("/var/lib/docker", None, type="volume")],  # removed with the engine
        detach=True,
        cap_add=["SYS_ADMIN", "NET_ADMIN", "MKNOD", "SYS_PTRACE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        cgroupns="host",
        volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
        labels={"agent-worker-test": "remote-engine"},
    )
    try:
        engine.reload()
        ip = engine.attrs["NetworkSettings"]["IPAddress"]
        top = tmp_path_factory.mktemp("remote-engine")
        _make_certs(top / "certs", ip)
        ssh_dir = top / "ssh"
        ssh_dir.mkdir()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / "id")], check=True
        )
        certs = top / "certs"
        engine.put_archive(
            "/",
            _archive(
                {
                    "root/.ssh": (None, 0o700),
                    "root/.ssh/authorized_keys": ((ssh_dir / "id.pub").read_bytes(), 0o600),
                    "certs": (None, 0o700),
                    **{
                        f"certs/{name}": ((certs / name).read_bytes(), 0o600)
                        for name in ("ca.pem", "server-cert.pem", "server-key.pem")
                    },
                    "certs/ready": (b"", 0o600),
                }
            ),
        )
        host_key = engine.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output.decode()
        known = f"{ip} {' '.join(host_key.split()[:2])}\n"
        remote = RemoteEngine(
            ip=ip,
            plain=f"tcp://{ip}:2375",
            tls=f"tcp://{ip}:2376",
            certs=certs,
            ssh_bin=_ssh_wrapper(ssh_dir / "trusted", ssh_dir / "id", known),
            ssh_dir=ssh_dir,
        )
        end = time.monotonic() + 60
        while True:
            try:
                client = remote.client()
                client.ping()
                break
            except docker.errors.DockerException:
                assert time.monotonic() < end, engine.logs()[-2000:]
                time.sleep(0.5)
        for image in (base_image, agent_image):  # the same ids there: the same content tag
            client.api.load_image(docker_client.images.get(image).save(named=True))
            assert client.images.get(image).id == docker_client.images.get(image).id
        yield remote
    finally:
        engine.remove(force=True, v=True)


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
    """What a CI job has (actions/checkout: depth 1) on the engine it is given."""
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
    result = run_cli(
        ["--task", "bump", "--branch", "bump"],
        cwd=project,
        env=run_env(DOCKER_HOST=remote_engine.plain),
        timeout=600,
    )
    assert result.code == 0, result.stderr
    assert tool_outputs(fake_api)[0].split() == ["1", "v", "=", "3"]
    assert git(project, "show", "bump:app.py") == "v = 4\n"
    assert git(project, "rev-list", "--count", "bump").strip() == "2"
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
