"""gVisor's cost, side by side with runc in the same rounds (interleaved): a container's start
(`docker run --rm --runtime R IMAGE true`), a whole trivial agent-worker run (`--agent-type
command --task true --runtime R`) without the firewall and with it (under runsc the firewall is
a network companion's, a second container), and a CPU-bound command in the container (a Python
loop), each as the median of its runs. There is no
target: it prints the ratios the README quotes. Needs the engine's runsc runtime
(scripts/gvisor registers it).

    .venv/bin/python bench/runtime.py [--runs N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    ROOT,
    base_image,
    ca_certs,
    docker_client,
    empty_env_file,
    make_repo,
    median,
    table,
)

RUNTIMES = ("runc", "runsc")
# about a second of one core's work under runc: long enough to show the platform's cost
CPU_BOUND = "python3 -c 'print(sum(i * i for i in range(6_000_000)))'"


def command_image() -> str:
    """The command agent's image (the one a run uses), built if missing."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_agent_image

    return build_agent_image("command", base_image(), ca_certs())


def docker_run(runtime: str, image: str, *command: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "--runtime", runtime, image, *command],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def run(repo: Path, runtime: str, branch: str, *, firewall: bool) -> float:
    argv = [sys.executable, str(ROOT / "agent_worker.py"), "--agent-type", "command"]
    argv += ["--env-file", str(empty_env_file(repo.parent)), "--task", "true"]
    argv += ["--runtime", runtime, "--branch", branch, *([] if firewall else ["--no-firewall"])]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=repo, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the run under {runtime} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if "runsc" not in (docker_client().info().get("Runtimes") or {}):
        raise SystemExit("the engine has no runsc runtime: run scripts/gvisor first")
    image = command_image()
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "repo")
        for runtime in RUNTIMES:  # one untimed round each: caches, the sandbox's first start
            docker_run(runtime, image, "true")
        for i in range(args.runs):
            for runtime in RUNTIMES:
                times.setdefault(("container start", runtime), []).append(
                    docker_run(runtime, image, "true")
                )
                times.setdefault(("run, no firewall", runtime), []).append(
                    run(repo, runtime, f"bench-{runtime}-{i}", firewall=False)
                )
                times.setdefault(("run, firewall", runtime), []).append(
                    run(repo, runtime, f"bench-fw-{runtime}-{i}", firewall=True)
                )
                times.setdefault(("CPU-bound command", runtime), []).append(
                    docker_run(runtime, image, "bash", "-c", CPU_BOUND)
                )
    rows = []
    for case in ("container start", "run, no firewall", "run, firewall", "CPU-bound command"):
        runc, runsc = median(times[(case, "runc")]), median(times[(case, "runsc")])
        rows.append([case, f"{runc:.2f} s", f"{runsc:.2f} s", f"{runsc / runc:.2f}x"])
    table(["case", "runc", "runsc", "runsc / runc"], rows)
    print(f"median of {args.runs} runs each, interleaved")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
