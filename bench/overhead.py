"""Orchestration overhead: a whole `agent-worker --task ...` run whose agent ends at once (one
text turn from the fake API), against `docker run --rm` of the same image running the same
`claude -p` call as the agent user. Interleaved. Target: at most 1.5x. With --against REF, the
code at REF (a worktree of it) runs the same task in the same rounds: the two side by side. With
--tcp, agent-worker reaches the engine as a remote one, over a loopback TCP relay to its socket
(the code before the engines work took docker-py's client for that; this one, its own). With
--check CMD, every run (both checkouts') has that check command: `--check true --against REF`
measures what the check's own container costs.

    .venv/bin/python bench/overhead.py [--runs N] [--against REF] [--tcp] [--check CMD]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from _common import (
    AGENT_ARGV,
    BENCH_LABEL,
    KEY,
    ROOT,
    Run,
    agent_image,
    checkout_of,
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
    tcp_relay,
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


def rounds(
    image: str,
    url: str,
    repo: Path,
    env: dict[str, str],
    *,
    runs: int,
    code: Path | None,
    extra: tuple[str, ...] = (),
) -> tuple[list[float], list[Run], list[Run]]:
    """docker run, this checkout's run and (with code) the other checkout's, interleaved."""
    docker_run(image, url)  # warm-up of every path (an image build), not counted
    drop_branch(repo, run_cli(repo, "bench/warm-up", env, *extra).report["branch"])
    if code is not None:
        drop_branch(repo, run_cli(repo, "bench/warm", env, *extra, code=code).report["branch"])
    plain: list[float] = []
    worker: list[Run] = []
    other: list[Run] = []
    for i in range(runs):
        plain.append(docker_run(image, url))
        for made, name, checkout in ((worker, "run", ROOT), (other, "other", code)):
            if checkout is not None:
                run = run_cli(repo, f"bench/{name}-{i}", env, *extra, code=checkout)
                drop_branch(repo, run.report["branch"])
                made.append(run)
    return plain, worker, other


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--against", metavar="REF", help="also run the code at REF, side by side")
    parser.add_argument("--tcp", action="store_true", help="reach the engine over TCP")
    parser.add_argument("--check", metavar="CMD", help="every run with this check command")
    args = parser.parse_args()
    runs = args.runs

    client = docker_client()
    image = agent_image(client)
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="aw-bench-"))
        url = stack.enter_context(fake_api(client))
        code = stack.enter_context(checkout_of(args.against)) if args.against else None
        repo = make_repo(Path(tmp) / "project")
        env = run_env(url)
        if args.tcp:
            env["DOCKER_HOST"] = stack.enter_context(tcp_relay())
        try:
            extra = ("--check", args.check) if args.check is not None else ()
            plain, worker, other = rounds(image, url, repo, env, runs=runs, code=code, extra=extra)
        finally:
            remove_containers(client, BENCH_LABEL)
            remove_containers(client, f"agent-worker.project={repo}")

    walls = [r.wall_s for r in worker]
    inside = [r.report["duration_s"] for r in worker]
    over = "over a TCP relay to the engine's socket" if args.tcp else "on the local socket"
    checked = f", each with --check {args.check!r}" if args.check is not None else ""
    print(f"image {image}, {runs} runs each, interleaved, agent-worker {over}{checked}\n")
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
    if other:
        side_by_side(args.against, plain, walls, [r.wall_s for r in other])
    return verdict(ratio <= TARGET_RATIO, f"ratio {ratio:.2f}x (target <= {TARGET_RATIO}x)")


def side_by_side(ref: str, plain: list[float], ours: list[float], theirs: list[float]) -> None:
    print(f"\nside by side with {ref}, {len(ours)} runs each, interleaved:")
    table(
        ["code", "median s", "min s", "max s", "ratio to docker run"],
        [
            [name, median(w), min(w), max(w), median(w) / median(plain)]
            for name, w in (("this checkout", ours), (ref, theirs))
        ],
    )
    print(f"this checkout - {ref}: {median(ours) - median(theirs):+.3f} s a run")


if __name__ == "__main__":
    sys.exit(main())
