"""Orchestration overhead: a whole `agent-worker --task ...` run whose agent ends at once (one
text turn from the fake API), against `docker run --rm` of the same image running the same
`claude -p` call as the agent user. Interleaved. Target: at most 1.5x.

    .venv/bin/python bench/overhead.py [--runs N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    AGENT_ARGV,
    BENCH_LABEL,
    KEY,
    agent_image,
    docker_client,
    drop_branch,
    fake_api,
    make_repo,
    median,
    phase_medians,
    remove_containers,
    run_cli,
    run_env,
    table,
    verdict,
)

TARGET_RATIO = 1.5


def docker_run(image: str, api_url: str) -> float:
    """The floor: the same agent call in a plain container, the task on stdin as in a run."""
    argv = ["docker", "run", "--rm", "-i", "--user", "agent", "--label", BENCH_LABEL]
    argv += ["-e", f"ANTHROPIC_API_KEY={KEY}", "-e", f"ANTHROPIC_BASE_URL={api_url}"]
    start = time.perf_counter()
    done = subprocess.run(
        [*argv, image, *AGENT_ARGV],
        input=b"Say hello.",
        capture_output=True,
        timeout=300,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0 or b'"type":"result"' not in done.stdout:
        raise SystemExit(f"docker run failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs

    client = docker_client()
    image = agent_image(client)
    with tempfile.TemporaryDirectory(prefix="aw-bench-") as tmp, fake_api(client) as url:
        repo = make_repo(Path(tmp) / "project")
        env = run_env(url)
        try:
            docker_run(image, url)  # warm-up of both paths, not counted
            drop_branch(repo, run_cli(repo, "bench/warm-up", env).report["branch"])
            plain: list[float] = []
            worker = []
            for i in range(runs):
                plain.append(docker_run(image, url))
                run = run_cli(repo, f"bench/run-{i}", env)
                drop_branch(repo, run.report["branch"])
                worker.append(run)
        finally:
            remove_containers(client, BENCH_LABEL)
            remove_containers(client, f"agent-worker.project={repo}")

    walls = [r.wall_s for r in worker]
    inside = [r.report["duration_s"] for r in worker]
    print(f"image {image}, {runs} runs each, interleaved\n")
    table(
        ["command", "median s", "min s", "max s"],
        [
            ["docker run --rm IMAGE claude -p ...", median(plain), min(plain), max(plain)],
            ["agent-worker --task ... (wall)", median(walls), min(walls), max(walls)],
            ["  of which the run (report duration_s)", median(inside), min(inside), max(inside)],
        ],
    )
    phases = phase_medians([r.report for r in worker])
    outside = median([w - d for w, d in zip(walls, inside, strict=True)])
    print("\nwhere agent-worker's time goes (medians, s):")
    table(
        ["phase", "s"],
        [["interpreter, imports, config", outside], *[[n, s] for n, s in phases.items()]],
    )
    ratio = median(walls) / median(plain)
    print(f"\noverhead: +{median(walls) - median(plain):.3f} s")
    return verdict(ratio <= TARGET_RATIO, f"ratio {ratio:.2f}x (target <= {TARGET_RATIO}x)")


if __name__ == "__main__":
    sys.exit(main())
