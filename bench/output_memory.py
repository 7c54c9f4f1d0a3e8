"""500 MB of agent output: the orchestrator's peak memory stays under 150 MB and agent.jsonl
keeps every byte. The real pipeline runs in a fresh subprocess with the built-in `command` agent
whose task prints the output; that process reports its own peak RSS.

    .venv/bin/python bench/output_memory.py [--mb N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    BENCH_LABEL,
    agent_image,
    docker_client,
    empty_env_file,
    make_repo,
    remove_containers,
    table,
    verdict,
)

TARGET_RSS_MB = 150
LINE = 100  # bytes per line, newline included


def flood_script(total: int) -> str:
    """A shell command printing total bytes of LINE-byte lines."""
    return f'yes "$(printf "%0{LINE - 1}d" 0)" | head -c {total}'


def child(workdir: Path, total: int) -> None:
    """Only this run happens in this process, so ru_maxrss is the run's own peak."""
    from agent_worker_app import agent_worker, console

    repo = workdir / "project"
    options = {
        "task": flood_script(total),
        "project": str(repo),
        "branch": "bench/flood",
        "agent_type": "command",
        "env_file": str(empty_env_file(workdir)),
        "no_firewall": True,  # the flood reaches no network; the firewall is not measured here
    }
    with open(os.devnull, "w") as progress:
        streams = console.Env(stdout=io.StringIO(), stderr=progress, stdin=io.StringIO())
        start = time.perf_counter()
        code = agent_worker.main(options, streams)
        seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    run_dirs = list((repo / ".git" / "agent-worker" / "runs").iterdir())
    result = {"code": code, "seconds": seconds, "run_dir": str(run_dirs[0])}
    result |= {"peak_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}  # KiB
    print(json.dumps(result))


def docker_cli_seconds(image: str, total: int) -> float:
    """The same output through `docker run` to /dev/null: what the engine itself manages."""
    script = flood_script(total)
    start = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "--label", BENCH_LABEL, image, "bash", "-c", script],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - start


def count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            lines += block.count(b"\n")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="output size in MB (10^6 bytes)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    total = args.mb * 1_000_000
    if args.child:
        child(args.child, total)
        return 0

    client = docker_client()
    image = agent_image(client, "command")
    with tempfile.TemporaryDirectory(prefix="aw-bench-") as tmp:
        repo = make_repo(Path(tmp) / "project")
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--child", tmp, "--mb", str(args.mb)],
                env=os.environ,
                check=False,
                stdout=subprocess.PIPE,
                text=True,
                timeout=1800,
            )
            if done.returncode != 0 or not done.stdout.strip():
                raise SystemExit(f"the run's process failed (exit {done.returncode})")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            jsonl = Path(result["run_dir"]) / "agent.jsonl"
            on_disk, lines = jsonl.stat().st_size, count_lines(jsonl)
            jsonl.unlink()  # free the disk before the engine-alone run
            docker_s = docker_cli_seconds(image, total)
        finally:
            remove_containers(client, f"agent-worker.project={repo}")
            remove_containers(client, BENCH_LABEL)

    peak_mb = result["peak_kb"] / 1024
    seconds = result["seconds"]
    table(
        ["measure", "value"],
        [
            ["run exit code", result["code"]],
            ["bytes produced", f"{total:,}"],
            ["bytes in agent.jsonl", f"{on_disk:,}"],
            ["lines in agent.jsonl", f"{lines:,} (expected {total // LINE:,})"],
            ["run duration s", seconds],
            ["throughput MB/s", total / 1e6 / seconds],
            ["orchestrator CPU s", result["cpu_s"]],
            ["peak RSS MiB", peak_mb],
            ["docker run ... >/dev/null s (engine alone)", docker_s],
            ["  its throughput MB/s", total / 1e6 / docker_s],
        ],
    )
    complete = on_disk == total and lines == total // LINE and result["code"] == 0
    ok = complete and peak_mb < TARGET_RSS_MB
    return verdict(
        ok,
        f"peak RSS {peak_mb:.1f} MiB (target < {TARGET_RSS_MB}); "
        f"{'all' if on_disk == total else 'NOT all'} bytes on disk ({on_disk:,} of {total:,})",
    )


if __name__ == "__main__":
    sys.exit(main())
