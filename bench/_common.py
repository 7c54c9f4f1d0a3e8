"""Helpers shared by the benchmarks: paths, Docker, the fake API, git repositories, tables."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Every bench times agent-worker as an installed tool runs, its bytecode cached (pip compiles
# what it installs): with PYTHONDONTWRITEBYTECODE, which some machines set, each run would also
# time the compiling of every module of the checkout.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
OUT = ROOT / "bench" / "out"  # gitignored: cached repositories, build logs
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the product's modules and the fake API

KEY = "sk-ant-bench-Zr84kQw0pLm2nXy7"
BENCH_LABEL = "agent-worker-bench"

from agent_worker_app.agents.claude_agent import HEADLESS_ARGV  # noqa: E402 (after the path above)

AGENT_ARGV = list(HEADLESS_ARGV)


def git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    """Run git in repo; its stdout, or SystemExit with its stderr."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args], input=stdin, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode()


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Bench")
    git(path, "config", "user.email", "bench@localhost")
    return path


def make_repo(path: Path, n_files: int = 10) -> Path:
    """A repository with one commit of n small files on main."""
    init_repo(path)
    for i in range(n_files):
        target = path / f"src/mod{i:02d}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"def f{i}():\n    return {i}\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def empty_env_file(directory: Path) -> Path:
    path = directory / "empty.env"
    path.touch()
    return path


def docker_client() -> Any:
    from agent_worker_app.engines.docker import client as engine

    return engine.connect(None)


def base_image() -> str:
    name = os.environ.get("AGENT_WORKER_BASE_IMAGE")
    if not name:
        raise SystemExit(
            "set AGENT_WORKER_BASE_IMAGE and AGENT_WORKER_CA_CERT (see bench/README.md)"
        )
    return name


def ca_certs() -> tuple[Path, ...]:
    return tuple(Path(p) for p in os.environ.get("AGENT_WORKER_CA_CERT", "").split(os.pathsep) if p)


def agent_image(client: Any, agent_type: str = "claude") -> str:
    """The image a run of this agent uses: the tests' own helper, built if missing."""
    from conftest import build_agent_image

    return build_agent_image(agent_type, base_image(), ca_certs())


@contextmanager
def fake_api(client: Any) -> Iterator[str]:
    """The fake Anthropic API on the bridge gateway; yields its URL as containers see it.

    With an empty script every request gets its default answer: one final text turn.
    """
    from agent_worker_app.engines.docker import client as docker_client
    from fake_anthropic import FakeAnthropic

    gateway = docker_client.bridge_gateway(client)
    with FakeAnthropic(host=gateway) as fake:
        yield fake.url(gateway)


def run_env(api_url: str) -> dict[str, str]:
    """This process's environment for a run: the tests' clean environment, the bench's key."""
    from conftest import clean_env

    return clean_env(
        ANTHROPIC_API_KEY=KEY,
        ANTHROPIC_BASE_URL=api_url,
        AGENT_WORKER_BASE_IMAGE=base_image(),
        AGENT_WORKER_CA_CERT=os.pathsep.join(map(str, ca_certs())),
    )


@dataclass
class Run:
    wall_s: float
    code: int
    report: dict[str, Any]
    stderr: str


def run_cli(repo: Path, branch: str, env: dict[str, str], *extra: str, code: Path = ROOT) -> Run:
    """One `agent-worker --task ...` run from the repository, as a user would start it (of the
    checkout at code: this one, or another's to compare with, checkout_of)."""
    report_file = repo.parent / f"report-{branch.replace('/', '_')}.json"
    argv = [sys.executable, str(code / "agent_worker.py"), "--task", "Say hello."]
    argv += ["--branch", branch, "--env-file", str(empty_env_file(repo.parent))]
    argv += ["--report-file", str(report_file), *extra]
    start = time.perf_counter()
    done = subprocess.run(
        argv, cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    wall = time.perf_counter() - start
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    report_file.unlink(missing_ok=True)
    if done.returncode != 0 or report.get("status") != "success":
        raise SystemExit(f"agent-worker run failed (exit {done.returncode}):\n{done.stderr}")
    return Run(wall, done.returncode, report, done.stderr)


@contextmanager
def checkout_of(ref: str) -> Iterator[Path]:
    """The code at ref (a commit, a branch) in a worktree of its own, removed afterwards: what a
    bench runs side by side with this checkout's (--against)."""
    top = Path(tempfile.mkdtemp(prefix="aw-against-"))
    code = top / "code"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(code), ref],
        check=True,
        capture_output=True,
    )
    try:
        yield code
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(code)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(top, ignore_errors=True)


@contextmanager
def tcp_relay(socket_path: str = "/var/run/docker.sock") -> Iterator[str]:
    """The local engine's socket relayed on a loopback TCP port: tcp://127.0.0.1:PORT, an
    engine every checkout reaches as a remote one (the code before the engines work did so with
    docker-py, this one with the standard library), on the same machine."""
    server = socket.create_server(("127.0.0.1", 0))

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(1 << 16):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(socket_path)
            for source, sink in ((client, engine), (engine, client)):
                threading.Thread(target=pump, args=(source, sink), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def drop_branch(repo: Path, branch: str) -> None:
    git(repo, "branch", "-q", "-D", branch)


def remove_containers(client: Any, label: str) -> int:
    """Remove containers carrying this label (key or key=value): what a bench left behind."""
    found = client.containers.list(all=True, filters={"label": label})
    for container in found:
        container.remove(force=True, v=True)
    return len(found)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [
        [f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))


def phase_medians(reports: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Median of each timings entry of the reports (preflight, image, container, agent, results)."""
    names = list(reports[0]["timings"])
    return {n: median([r["timings"].get(n, 0.0) for r in reports]) for n in names}


def verdict(ok: bool, text: str) -> int:
    print(f"\n{'PASS' if ok else 'FAIL'}: {text}")
    return 0 if ok else 1
