"""A second Docker engine in a container of the suite's own, which cannot see this machine's
files, reached the ways users secure one: plain TCP (a relay to its socket), TLS (client
certificates), and ssh to its `docker system dial-stdio`. One engine for the whole session: the
lifecycle's integration tests and the remote runs of tests/e2e/test_remote.py share it."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import Mount

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
    from conftest import require  # conftest imports this module: not at the top

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


def start_remote_engine(
    docker_client: Any, images: tuple[str, ...], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemoteEngine]:
    """A second engine (flags from DESIGN.md) holding these images (loaded from this one)."""
    _ensure_tools()
    docker_client.images.build(
        fileobj=io.BytesIO(DIND_DOCKERFILE),
        tag="agent-worker-test/dind",
        buildargs={"BASE_IMAGE": images[0]},
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
        for image in images:  # the same ids there: the same content tag
            client.api.load_image(docker_client.images.get(image).save(named=True))
            assert client.images.get(image).id == docker_client.images.get(image).id
        yield remote
    finally:
        engine.remove(force=True, v=True)
