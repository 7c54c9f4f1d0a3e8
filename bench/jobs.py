"""Several tasks at once: eight trivial `command` tasks in one invocation with --jobs 4 against
the same eight one after another (--jobs 1), interleaved; then the orchestrator's peak RSS
while eight tasks run at once (--jobs 8, the process's own ru_maxrss from wait4). For
reference, the engine's own ratio in the same rounds: eight `docker run --rm IMAGE true`, four
at a time against one after another. Target: a ratio of at most 0.5x on 2 cores.

    .venv/bin/python bench/jobs.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    BENCH_LABEL,
    ROOT,
    agent_image,
    base_image,
    ca_certs,
    docker_client,
    empty_env_file,
    git,
    make_repo,
    median,
    remove_containers,
    table,
    verdict,
)

TARGET_RATIO = 0.5
TASKS = 8
TASK = "echo done > done.txt"


def batch(
    repo: Path, jobs: int, name: str, env: dict[str, str]
) -> tuple[float, float, dict, float]:
    """One invocation of TASKS tasks: (wall s, the process's peak RSS in MiB, its JSON, the CPU
    seconds it and its children (git) used)."""
    argv = [sys.executable, str(ROOT / "agent_worker.py"), "--agent-type", "command"]
    argv += ["--env-file", str(empty_env_file(repo.parent)), "--json"]
    argv += ["--jobs", str(jobs), "--branch", name, *(["--task", TASK] * TASKS)]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=repo, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"the batch failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    data = json.loads(stdout)
    if data["totals"]["succeeded"] != TASKS:
        raise SystemExit(f"not every task succeeded: {data['totals']}")
    for run in data["runs"]:
        git(repo, "branch", "-q", "-D", run["branch"])
    return wall, usage.ru_maxrss / 1024, data, usage.ru_utime + usage.ru_stime


def docker_runs(image: str, at_once: int) -> float:
    """Wall time of TASKS `docker run --rm IMAGE true`, at_once at a time."""
    argv = ["docker", "run", "--rm", "--label", BENCH_LABEL, image, "true"]
    start = time.perf_counter()
    for _ in range(TASKS // at_once):
        procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL) for _ in range(at_once)]
        if any(p.wait() != 0 for p in procs):
            raise SystemExit("docker run failed")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds

    from conftest import clean_env

    client = docker_client()
    image = agent_image(client, "command")
    env = clean_env(
        AGENT_WORKER_BASE_IMAGE=base_image(),
        AGENT_WORKER_CA_CERT=os.pathsep.join(map(str, ca_certs())),
    )
    with tempfile.TemporaryDirectory(prefix="aw-bench-") as tmp:
        repo = make_repo(Path(tmp) / "project")
        try:
            batch(repo, 4, "bench/warm-up", env)  # not counted
            parallel: list[float] = []
            serial: list[float] = []
            cpu: list[float] = []
            engine: list[tuple[float, float]] = []
            for i in range(rounds):
                serial.append(batch(repo, 1, f"bench/serial-{i}", env)[0])
                wall, _, _, used = batch(repo, 4, f"bench/parallel-{i}", env)
                parallel.append(wall)
                cpu.append(used)
                engine.append((docker_runs(image, 1), docker_runs(image, 4)))
            wall8, rss8, data8, _ = batch(repo, TASKS, "bench/all-at-once", env)
        finally:
            remove_containers(client, f"agent-worker.project={repo}")
            remove_containers(client, BENCH_LABEL)

    ratio = median(parallel) / median(serial)
    engine_serial = median([e[0] for e in engine])
    engine_parallel = median([e[1] for e in engine])
    print(
        f"{TASKS} `command` tasks ({TASK!r}) in one invocation, {rounds} interleaved rounds, "
        f"{os.cpu_count()} cores\n"
    )
    table(
        ["run", "median wall s", "per task s", "rounds"],
        [
            [
                "--jobs 1 (one after another)",
                median(serial),
                median(serial) / TASKS,
                " ".join(f"{w:.2f}" for w in serial),
            ],
            [
                "--jobs 4",
                median(parallel),
                median(parallel) / TASKS,
                " ".join(f"{w:.2f}" for w in parallel),
            ],
            [f"--jobs {TASKS}", wall8, wall8 / TASKS, f"{wall8:.2f}"],
            [
                "docker run --rm IMAGE true, one after another",
                engine_serial,
                engine_serial / TASKS,
                " ".join(f"{e[0]:.2f}" for e in engine),
            ],
            [
                "docker run --rm IMAGE true, 4 at a time",
                engine_parallel,
                engine_parallel / TASKS,
                " ".join(f"{e[1]:.2f}" for e in engine),
            ],
        ],
    )
    durations = sorted(r["duration_s"] for r in data8["runs"])
    print(
        f"\n--jobs {TASKS}: orchestrator peak RSS {rss8:.1f} MiB; task durations "
        f"{durations[0]:.2f}-{durations[-1]:.2f} s"
    )
    print(f"agent-worker's own CPU (with its git calls) for a --jobs 4 batch: {median(cpu):.2f} s")
    print(f"ratio --jobs 4 / --jobs 1: {ratio:.2f}x")
    print(
        f"the engine's own ratio, docker run 4 at a time / one after another: "
        f"{engine_parallel / engine_serial:.2f}x (load average {os.getloadavg()[0]:.1f})"
    )
    return verdict(
        ratio <= TARGET_RATIO,
        f"--jobs 4 at {ratio:.2f}x of one after another (target <= {TARGET_RATIO}x)",
    )


if __name__ == "__main__":
    sys.exit(main())
