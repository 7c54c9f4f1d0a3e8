"""500 MB of agent output: the orchestrator's peak memory stays under 150 MB and agent.jsonl
keeps every byte. The real pipeline runs in a fresh subprocess with a bench-only "flood" agent
whose container command prints the output; that process reports its own peak RSS.

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
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

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

from agents.base_agent import AgentResult, BaseAgent, ProgressEvent

if TYPE_CHECKING:
    from config import Config

TARGET_RSS_MB = 150
LINE = 100  # bytes per line, newline included


class FloodAgent(BaseAgent):
    """Prints FLOOD_BYTES bytes of LINE-byte lines and ends; reads nothing from its output."""

    name: ClassVar[str] = "flood"
    api_key_env: ClassVar[str] = "FLOOD_API_KEY"
    default_api_host: ClassVar[str] = "127.0.0.1:9"

    def check_credentials(self, config: Config) -> None:
        pass

    def container_command(self, config: Config) -> list[str]:
        return ["bash", "-c", self.script(int(os.environ["FLOOD_BYTES"]))]

    @staticmethod
    def script(total: int) -> str:
        return f'yes "$(printf "%0{LINE - 1}d" 0)" | head -c {total}'

    def secret_env(self, config: Config) -> dict[str, str]:
        return {}

    def image_build_args(self, config: Config) -> dict[str, str]:
        return {"CLAUDE_CODE_VERSION": config.claude_version}  # the same image as Claude's

    def on_output_line(self, line: str) -> ProgressEvent | None:
        return None

    def parse_result(self, lines: Iterable[str]) -> AgentResult:
        return AgentResult(found=True)


def child(workdir: Path) -> None:
    """Only this run happens in this process, so ru_maxrss is the run's own peak."""
    import agent_worker
    import agents
    import console

    agents._BUILTIN["flood"] = "__main__:FloodAgent"
    repo = workdir / "project"
    options = {
        "task": "Print a lot.",
        "project": str(repo),
        "branch": "bench/flood",
        "agent_type": "flood",
        "env_file": str(empty_env_file(workdir)),
        "no_firewall": True,  # the flood reaches no network; the firewall is not measured here
    }
    streams = console.Env(stdout=io.StringIO(), stderr=sys.stderr, stdin=io.StringIO())
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
    script = FloodAgent.script(total)
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
    if args.child:
        child(args.child)
        return 0

    total = args.mb * 1_000_000
    client = docker_client()
    image = agent_image(client)
    with tempfile.TemporaryDirectory(prefix="aw-bench-") as tmp:
        repo = make_repo(Path(tmp) / "project")
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--child", tmp],
                env=os.environ | {"FLOOD_BYTES": str(total)},
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
