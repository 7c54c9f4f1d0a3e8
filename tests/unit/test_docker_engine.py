"""Which Docker engine a run uses, and how it is reached: endpoint.resolve_engine(),
is_local(), the ssh command, connection failures that name the engine, and the attach stream's
framing. No Docker engine needed (real engines: tests/e2e/test_remote.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent_worker_app.engines.docker import api, container_io, endpoint
from agent_worker_app.engines.docker import backend as docker_backend
from agent_worker_app.engines.docker.endpoint import Engine, EngineTLS, resolve_engine
from agent_worker_app.errors import DockerError


def write_context(
    config: Path,
    name: str,
    host: str | None,
    *,
    tls_files: tuple[str, ...] = (),
    skip_verify: bool = False,
) -> Path:
    """A context as `docker context create` stores it; its TLS directory."""
    key = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / key / "meta.json"
    meta.parent.mkdir(parents=True)
    endpoint: dict[str, object] = {"SkipTLSVerify": skip_verify}
    if host is not None:
        endpoint["Host"] = host
    meta.write_text(json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": endpoint}}))
    tls = config / "contexts" / "tls" / key / "docker"
    if tls_files:
        tls.mkdir(parents=True)
        for file in tls_files:
            (tls / file).write_text("pem\n")
    return tls


def use_context(config: Path, name: str) -> None:
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.json").write_text(json.dumps({"auths": {}, "currentContext": name}))


def cert_dir(path: Path, *names: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in names or ("ca.pem", "cert.pem", "key.pem"):
        (path / name).write_text("pem\n")
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME without any Docker configuration."""
    path = tmp_path / "home"
    path.mkdir()
    return path


# ---------------------------------------------------------------- explicit hosts and TLS


def test_the_local_socket_by_default(home: Path) -> None:
    engine = resolve_engine(None, {"HOME": str(home)})
    assert engine == Engine(None)
    assert engine.local
    assert engine.describe() == "the local socket"


def test_an_explicit_tcp_host_is_plain_without_tls_variables(home: Path) -> None:
    engine = resolve_engine("tcp://10.0.0.5:2375", {"HOME": str(home)})
    assert engine == Engine("tcp://10.0.0.5:2375")
    assert not engine.local


def test_tls_verify_takes_the_files_from_docker_cert_path(tmp_path: Path, home: Path) -> None:
    certs = cert_dir(tmp_path / "certs")
    environ = {"HOME": str(home), "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs)}
    engine = resolve_engine("tcp://10.0.0.5:2376", environ)
    assert engine.tls == EngineTLS(
        verify=True,
        ca=str(certs / "ca.pem"),
        cert=(str(certs / "cert.pem"), str(certs / "key.pem")),
    )
    assert not engine.local
    assert engine.describe() == "tcp://10.0.0.5:2376 over TLS"


def test_tls_files_default_to_the_docker_config_directory(tmp_path: Path, home: Path) -> None:
    config = cert_dir(tmp_path / "docker-config")
    environ = {"HOME": str(home), "DOCKER_CONFIG": str(config), "DOCKER_TLS_VERIFY": "yes"}
    tls = resolve_engine("tcp://h:2376", environ).tls
    assert tls is not None
    assert tls.ca == str(config / "ca.pem")
    without_config = resolve_engine("tcp://h:2376", {"HOME": str(home), "DOCKER_TLS_VERIFY": "1"})
    assert without_config.tls == EngineTLS(verify=True)  # no files in ~/.docker: system CAs


def test_docker_tls_encrypts_without_verifying(tmp_path: Path, home: Path) -> None:
    certs = cert_dir(tmp_path / "certs")
    environ = {"HOME": str(home), "DOCKER_TLS": "1", "DOCKER_CERT_PATH": str(certs)}
    engine = resolve_engine("tcp://h:2376", environ)
    assert engine.tls == EngineTLS(
        verify=False, ca=None, cert=(str(certs / "cert.pem"), str(certs / "key.pem"))
    )
    assert engine.describe() == "tcp://h:2376 over unverified TLS"


@pytest.mark.parametrize(
    "environ",
    [
        {"DOCKER_TLS_VERIFY": ""},  # empty is unset, as for the docker CLI
        {"DOCKER_CERT_PATH": "CERTS"},  # a place for the files does not turn TLS on
    ],
)
def test_no_tls_without_a_tls_variable(tmp_path: Path, home: Path, environ: dict[str, str]) -> None:
    certs = cert_dir(tmp_path / "certs")
    values = {k: v.replace("CERTS", str(certs)) for k, v in environ.items()}
    assert resolve_engine("tcp://h:2375", {"HOME": str(home), **values}).tls is None


def test_a_client_certificate_needs_both_files(tmp_path: Path, home: Path) -> None:
    certs = cert_dir(tmp_path / "certs", "ca.pem", "cert.pem")
    environ = {"HOME": str(home), "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs)}
    assert resolve_engine("tcp://h:2376", environ).tls == EngineTLS(
        verify=True, ca=str(certs / "ca.pem"), cert=None
    )


def test_a_missing_cert_path_is_named(tmp_path: Path, home: Path) -> None:
    environ = {
        "HOME": str(home),
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(tmp_path / "nowhere"),
    }
    with pytest.raises(DockerError, match=r"DOCKER_CERT_PATH=.*nowhere is not a directory"):
        resolve_engine("tcp://h:2376", environ)


@pytest.mark.parametrize(
    ("url", "local"),
    [("unix:///var/run/docker.sock", True), ("unix:///run/user/1000/docker.sock", True),
     ("ssh://me@build-host", False), ("http://h:2375", False)],
)  # fmt: skip
def test_tls_variables_apply_to_tcp_only(tmp_path: Path, home: Path, url: str, local: bool) -> None:
    certs = cert_dir(tmp_path / "certs")
    environ = {"HOME": str(home), "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs)}
    engine = resolve_engine(url, environ)
    assert engine.tls is None
    assert engine.local is local


# ---------------------------------------------------------------- contexts


def test_the_current_context_of_config_json(tmp_path: Path, home: Path) -> None:
    config = tmp_path / "docker-config"
    tls = write_context(
        config, "remote", "tcp://10.0.0.5:2376", tls_files=("ca.pem", "cert.pem", "key.pem")
    )
    use_context(config, "remote")
    engine = resolve_engine(None, {"HOME": str(home), "DOCKER_CONFIG": str(config)})
    assert engine.url == "tcp://10.0.0.5:2376"
    assert engine.tls == EngineTLS(
        verify=True, ca=str(tls / "ca.pem"), cert=(str(tls / "cert.pem"), str(tls / "key.pem"))
    )
    assert engine.context == "remote"
    assert not engine.local
    assert engine.describe() == (
        f"tcp://10.0.0.5:2376 over TLS of Docker context 'remote' "
        f"(currentContext in {config / 'config.json'})"
    )


def test_the_docker_config_directory_defaults_to_home(home: Path) -> None:
    config = home / ".docker"
    write_context(config, "builder", "ssh://me@build-host")
    use_context(config, "builder")
    engine = resolve_engine(None, {"HOME": str(home)})
    assert engine == Engine(
        "ssh://me@build-host",
        context="builder",
        chosen_by=f"currentContext in {config / 'config.json'}",
    )
    assert engine.ssh
    assert not engine.local


def test_docker_context_wins_over_config_json(tmp_path: Path, home: Path) -> None:
    config = tmp_path / "docker-config"
    write_context(config, "one", "tcp://10.0.0.1:2375")
    write_context(config, "two", "tcp://10.0.0.2:2375")
    use_context(config, "one")
    environ = {"HOME": str(home), "DOCKER_CONFIG": str(config), "DOCKER_CONTEXT": "two"}
    engine = resolve_engine(None, environ)
    assert (engine.url, engine.context, engine.chosen_by) == (
        "tcp://10.0.0.2:2375",
        "two",
        "DOCKER_CONTEXT",
    )
    assert engine.tls is None  # a context without TLS material is plain


def test_an_explicit_host_wins_over_any_context(tmp_path: Path, home: Path) -> None:
    config = tmp_path / "docker-config"
    write_context(config, "remote", "tcp://10.0.0.5:2375")
    use_context(config, "remote")
    environ = {"HOME": str(home), "DOCKER_CONFIG": str(config), "DOCKER_CONTEXT": "remote"}
    assert resolve_engine("unix:///var/run/docker.sock", environ) == Engine(
        "unix:///var/run/docker.sock"
    )


@pytest.mark.parametrize("how", ["config.json", "DOCKER_CONTEXT"])
def test_the_default_context_is_the_local_socket(tmp_path: Path, home: Path, how: str) -> None:
    config = tmp_path / "docker-config"
    environ = {"HOME": str(home), "DOCKER_CONFIG": str(config)}
    if how == "config.json":
        use_context(config, "default")
    else:
        environ["DOCKER_CONTEXT"] = "default"
    assert resolve_engine(None, environ) == Engine(None)


def test_skip_tls_verify_in_a_context(tmp_path: Path, home: Path) -> None:
    config = tmp_path / "docker-config"
    write_context(config, "lab", "tcp://10.0.0.5:2376", skip_verify=True)
    environ = {"HOME": str(home), "DOCKER_CONFIG": str(config), "DOCKER_CONTEXT": "lab"}
    assert resolve_engine(None, environ).tls == EngineTLS(verify=False)


def test_a_context_with_a_local_socket_is_local(tmp_path: Path, home: Path) -> None:
    config = tmp_path / "docker-config"
    write_context(config, "rootless", "unix:///run/user/1000/docker.sock")
    environ = {"HOME": str(home), "DOCKER_CONFIG": str(config), "DOCKER_CONTEXT": "rootless"}
    assert resolve_engine(None, environ).local


def test_a_missing_context_says_so(tmp_path: Path, home: Path) -> None:
    environ = {"HOME": str(home), "DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "gone"}
    with pytest.raises(DockerError, match=r"no Docker context 'gone' \(DOCKER_CONTEXT\).*ls"):
        resolve_engine(None, environ)


def test_a_context_without_a_docker_endpoint_says_so(tmp_path: Path, home: Path) -> None:
    key = hashlib.sha256(b"k8s").hexdigest()
    meta = tmp_path / "contexts" / "meta" / key / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"Name": "k8s", "Endpoints": {"kubernetes": {}}}))
    environ = {"HOME": str(home), "DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "k8s"}
    with pytest.raises(DockerError, match="has no Docker endpoint"):
        resolve_engine(None, environ)


def test_an_unreadable_config_json_is_no_context(tmp_path: Path, home: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    assert resolve_engine(None, {"HOME": str(home), "DOCKER_CONFIG": str(tmp_path)}) == Engine(None)


def test_is_local_follows_the_environment_and_the_context(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "docker-config"
    write_context(config, "remote", "tcp://10.0.0.5:2376")
    write_context(config, "rootless", "unix:///run/user/1000/docker.sock")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    assert endpoint.is_local(None)
    assert not endpoint.is_local("tcp://10.0.0.5:2375")
    assert not endpoint.is_local("ssh://me@build-host")
    assert endpoint.is_local("unix:///var/run/docker.sock")
    use_context(config, "remote")
    assert not endpoint.is_local(None)
    assert endpoint.is_local("unix:///var/run/docker.sock")  # an explicit host wins
    monkeypatch.setenv("DOCKER_CONTEXT", "rootless")
    assert endpoint.is_local(None)
    monkeypatch.setenv("DOCKER_CONTEXT", "gone")
    assert not endpoint.is_local(None)  # connect() has said why already


# ---------------------------------------------------------------- ssh


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `ssh` first on PATH that fails as a refused login does: what it says is the reason."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(
        '#!/bin/sh\necho "$@" > "${0%/*}/args"\n'
        'echo "Warning: Permanently added the host key" >&2\n'
        'echo "me@build-host: Permission denied (publickey)." >&2\nexit 255\n'
    )
    ssh.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    return bin_dir


@pytest.mark.parametrize(
    ("url", "command"),
    [
        ("ssh://build-host", ["--", "build-host"]),
        ("ssh://me@build-host", ["-l", "me", "--", "build-host"]),
        ("ssh://me@build-host:2222", ["-l", "me", "-p", "2222", "--", "build-host"]),
        ("ssh://me@[fd00::5]:2222/", ["-l", "me", "-p", "2222", "--", "fd00::5"]),
        ("ssh://-oProxyCommand=x", ["--", "-oproxycommand=x"]),  # a host, never an option
    ],
)
def test_the_ssh_command_is_the_docker_clis(fake_ssh: Path, url: str, command: list[str]) -> None:
    assert api.ssh_command(url) == [
        "ssh",
        "-T",
        "-o",
        "ConnectTimeout=30",
        *command,
        "docker",
        "system",
        "dial-stdio",
    ]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ssh://me:secret@build-host", "a password in ssh:// is not supported"),
        ("ssh://build-host/path", "not an ssh engine address"),
        ("ssh://build-host:port", "not an ssh engine address"),
        ("ssh://", "not an ssh engine address"),
    ],
)
def test_bad_ssh_addresses(fake_ssh: Path, url: str, says: str) -> None:
    with pytest.raises(DockerError, match=says):
        api.ssh_command(url)


def test_ssh_must_be_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DockerError, match=r"needs the OpenSSH client.*openssh-client"):
        docker_backend.connect("ssh://me@build-host")


def test_a_failed_ssh_login_is_the_reason_given(fake_ssh: Path) -> None:
    with pytest.raises(DockerError) as caught:
        docker_backend.connect("ssh://me@build-host:2222")
    assert str(caught.value) == (
        "cannot reach the Docker engine at ssh://me@build-host:2222 "
        "(ssh: me@build-host: Permission denied (publickey).): check that `ssh HOST docker "
        "version` works from here (with a key or an agent, and the host's key known)"
    )
    args = (fake_ssh / "args").read_text().split()
    assert args == [
        *("-T", "-o", "ConnectTimeout=30", "-l", "me", "-p", "2222", "--", "build-host"),
        *("docker", "system", "dial-stdio"),
    ]


# ---------------------------------------------------------------- failures name the engine


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_context_is_named_with_its_engine(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "docker-config"
    url = f"tcp://127.0.0.1:{closed_port()}"
    write_context(config, "remote", url)
    use_context(config, "remote")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    with pytest.raises(DockerError) as caught:
        docker_backend.connect(None)
    message = str(caught.value)
    assert message.startswith(f"cannot reach the Docker engine at {url} of Docker context 'remote'")
    assert "local socket" not in message
    assert message.endswith("choose another Docker context (`docker context use`, DOCKER_CONTEXT)"
                            " or engine (--remote-docker / DOCKER_HOST)")  # fmt: skip


def test_plain_http_to_a_tls_port_says_how_to_turn_tls_on(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener answering as Go's TLS server answers plain HTTP."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(
                b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
            )

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    monkeypatch.setenv("HOME", str(home))
    url = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    try:
        with pytest.raises(DockerError) as caught:
            docker_backend.connect(url)
    finally:
        thread.join(5)
        server.close()
    message = str(caught.value)
    assert message.startswith(f"cannot reach the Docker engine at {url} (")
    assert "HTTP request to an HTTPS server" in message
    assert "the engine speaks TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH" in message


# ---------------------------------------------------------------- the attach stream


def frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


@pytest.mark.parametrize("step", [1, 3, 8, 9, 1000])
def test_frames_arrive_whole_in_order_however_the_bytes_are_cut(step: int) -> None:
    frames = [(1, b"caf\xc3"), (1, b"\xa9 ok\n"), (2, b"err\n"), (1, b""), (1, b"x" * 70000)]
    wire = b"".join(frame(s, d) for s, d in frames)
    ours, theirs = socket.socketpair()

    def send() -> None:
        with theirs:
            for i in range(0, len(wire), step):
                theirs.sendall(wire[i : i + step])

    sender = threading.Thread(target=send)
    sender.start()
    with ours:
        received = list(container_io.frames(ours))
    sender.join()
    assert all(data for _, data in received)  # no empty pieces
    assert b"".join(d for s, d in received if s == 1) == b"caf\xc3\xa9 ok\n" + b"x" * 70000
    assert b"".join(d for s, d in received if s == 2) == b"err\n"
    assert not any(b"\xc3\xa9" in d for _, d in received)  # a piece never spans two frames


def test_frames_held_by_the_tls_layer_arrive_without_waiting_for_more(tmp_path: Path) -> None:
    """Two frames in one TLS record, then a pause: both arrive at once, not after the pause
    (docker-py's reader polls the socket, empty while TLS holds the rest of the record)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make the test's certificate")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=t",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    done = threading.Event()

    def serve() -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
        connection, _ = server.accept()
        with context.wrap_socket(connection, server_side=True) as tls:
            tls.sendall(frame(1, b"first\n") + frame(2, b"second\n"))
            done.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    context = ssl.create_default_context(cafile=tmp_path / "cert.pem")
    raw = socket.create_connection(server.getsockname())
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as client:
        frames = container_io.frames(client)
        started = time.monotonic()
        try:
            assert [next(frames), next(frames)] == [(1, b"first\n"), (2, b"second\n")]
            assert time.monotonic() - started < 5  # not after the server's 10 s pause
        finally:
            done.set()
    thread.join(5)
    server.close()


def test_a_network_engines_own_addresses_are_known_for_setup_to_be_denied() -> None:
    from agent_worker_app.engines.docker.client import engine_addresses
    from agent_worker_app.engines.docker.endpoint import Engine

    assert engine_addresses(Engine("tcp://127.0.0.1:2375")) == ("127.0.0.1",)
    assert engine_addresses(Engine("tcp://[::1]:2376")) == ("::1",)
    assert engine_addresses(Engine(None)) == ()
    assert engine_addresses(Engine("unix:///var/run/docker.sock")) == ()
