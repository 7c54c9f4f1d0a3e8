"""The swarm backend against one Docker engine, on a real swarm built here (tests/swarm_cluster.py:
a manager and two workers, each an engine in a container, and a registry).

1. Six `command` tasks that each wait WAIT_S seconds (work that occupies a machine's slot, not
   its CPU), one invocation each: on the swarm with --jobs 6 (three a worker) against the local
   engine with --jobs 3; interleaved.
2. The per-task overhead: one trivial task (`true`) at a time, on the swarm against the local
   engine; interleaved. With --baseline DIR, the same task on the swarm by the code in DIR too (a
   checkout of another commit, e.g. `git archive COMMIT | tar -x -C DIR`), in the same rounds:
   before and after a change, on the same swarm and machine.

On one VM the two workers share its cores: (1) shows what spreading over nodes buys for tasks
that wait (API calls, mostly), not more CPU; (2) is the price of the swarm per task (the
scheduler, its configs and secret, the service log relayed through the manager).

    .venv/bin/python bench/swarm.py [--rounds N] [--runs N] [--baseline DIR]
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
from typing import Any

import docker
from _common import (
    ROOT,
    agent_image,
    base_image,
    ca_certs,
    docker_client,
    empty_env_file,
    git,
    make_repo,
    median,
    table,
)

from swarm_cluster import swarm

TASKS = 6
WAIT_S = 20
TASK = f"sleep {WAIT_S} && echo done > done.txt"


def invoke(repo: Path, env: dict[str, str], *args: str, root: Path = ROOT) -> tuple[float, dict]:
    argv = [sys.executable, str(root / "agent_worker.py"), "--agent-type", "command"]
    argv += ["--env-file", str(empty_env_file(repo.parent)), "--json", *args]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    data = json.loads(done.stdout)
    for run in data.get("runs", [data]):
        git(repo, "branch", "-q", "-D", run["branch"])
    return wall, data


def settled_leftovers(cluster: Any, within: float = 20.0) -> list[str]:
    """What is left on the swarm once its nodes had a few seconds to remove the containers of
    services just removed (they do so as a run ends, nobody waiting)."""
    end = time.monotonic() + within
    while True:
        try:
            left = cluster.leftovers()
        except docker.errors.NotFound:  # a container removed while it was listed
            left = ["a container going"]
        if not left or time.monotonic() > end:
            return list(left)
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="of the six-task batches")
    parser.add_argument("--runs", type=int, default=5, help="of the trivial task")
    parser.add_argument(
        "--baseline", type=Path, help="a checkout whose code also runs the trivial task"
    )
    options = parser.parse_args()
    baseline = options.baseline.resolve() if options.baseline else None
    if baseline is not None and not (baseline / "agent_worker.py").is_file():
        raise SystemExit(f"--baseline {baseline}: no agent_worker.py there")
    client = docker_client()
    base = base_image()
    image = agent_image(client, "command")
    env = {
        **{k: v for k, v in os.environ.items() if k != "DOCKER_HOST"},
        "AGENT_WORKER_BASE_IMAGE": base,
        "AGENT_WORKER_CA_CERT": ":".join(str(p) for p in ca_certs()),
    }
    with tempfile.TemporaryDirectory() as top, swarm(client, base, [base, image]) as cluster:
        repo = make_repo(Path(top) / "repo")
        swarm_env = env | {"DOCKER_HOST": cluster.manager.url}
        swarm_args = ("--backend", "swarm", "--registry", cluster.registry)
        invoke(repo, swarm_env, *swarm_args, "--task", "true", "--branch", "warm")  # push, pull
        batch_tasks = [a for _ in range(TASKS) for a in ("--task", TASK)]
        batches: dict[str, list[float]] = {"swarm --jobs 6": [], "engine --jobs 3": []}
        nodes: set[str] = set()
        for n in range(options.rounds):
            wall, data = invoke(
                repo, swarm_env, *swarm_args, "--jobs", "6", "--branch", f"s{n}", *batch_tasks
            )
            batches["swarm --jobs 6"].append(wall)
            nodes |= {run["node"] for run in data["runs"]}
            wall, _ = invoke(repo, env, "--jobs", "3", "--branch", f"e{n}", *batch_tasks)
            batches["engine --jobs 3"].append(wall)
        single: dict[str, list[float]] = {"swarm": [], "engine": []}
        if baseline is not None:
            single["swarm, baseline"] = []
            invoke(repo, swarm_env, *swarm_args, "--task", "true", "--branch", "wb", root=baseline)
        for n in range(options.runs):
            wall, _ = invoke(repo, swarm_env, *swarm_args, "--task", "true", "--branch", f"t{n}")
            single["swarm"].append(wall)
            if baseline is not None:
                wall, _ = invoke(
                    repo,
                    swarm_env,
                    *swarm_args,
                    "--task",
                    "true",
                    "--branch",
                    f"v{n}",
                    root=baseline,
                )
                single["swarm, baseline"].append(wall)
            wall, _ = invoke(repo, env, "--task", "true", "--branch", f"u{n}")
            single["engine"].append(wall)
        left = settled_leftovers(cluster)
    if options.rounds:
        print(f"\nsix tasks of `sleep {WAIT_S}`, {options.rounds} rounds (nodes: {sorted(nodes)})")
        table(
            ["how", "median wall s", "runs"],
            [(k, f"{median(v):.1f}", " ".join(f"{x:.1f}" for x in v)) for k, v in batches.items()],
        )
        ratio = median(batches["swarm --jobs 6"]) / median(batches["engine --jobs 3"])
        print(f"swarm / engine: {ratio:.2f}x")
    print(f"\none trivial task (`true`), {options.runs} runs each")
    table(
        ["where", "median wall s", "runs"],
        [(k, f"{median(v):.2f}", " ".join(f"{x:.2f}" for x in v)) for k, v in single.items()],
    )
    for name in [k for k in single if k.startswith("swarm")]:
        extra = median(single[name]) - median(single["engine"])
        times = median(single[name]) / median(single["engine"])
        print(f"{name} overhead per task: {extra:+.2f} s ({times:.2f}x)")
    print(f"left on the swarm: {left or 'nothing'}")
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
