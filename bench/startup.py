"""`agent-worker --help` and `--version` wall time, next to a bare interpreter; and a check that
--help imports none of docker, git or rich. Target: under 0.3 s wall (median). With --against
REF, the code at REF (a worktree of it) runs the same commands in the same rounds.

    .venv/bin/python bench/startup.py [--runs N] [--against REF]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from _common import ROOT, checkout_of, median, table, verdict

TARGET_S = 0.3
HEAVY = ("docker", "git", "rich")  # imported only once a run starts (DESIGN.md)
CASES = {
    "python -c pass": ["-c", "pass"],
    "python -c 'import click'": ["-c", "import click"],
    "agent_worker.py --help": [str(ROOT / "agent_worker.py"), "--help"],
    "agent_worker.py --version": [str(ROOT / "agent_worker.py"), "--version"],
}
SCRIPT = Path(sys.executable).parent / "agent-worker"  # the installed entry point, if any
if SCRIPT.is_file():
    CASES["agent-worker --help (entry point)"] = [str(SCRIPT), "--help"]


def wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def imported_by_help() -> list[str]:
    """Top-level packages `python -X importtime agent_worker.py --help` reports."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "agent_worker.py"), "--help"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    names = [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if "|" in line]
    return sorted({n.split(".")[0] for n in names[1:]})  # the first line is the header


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--against", metavar="REF", help="also run the code at REF, side by side")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.against:
            code = stack.enter_context(checkout_of(args.against))
            for flag in ("--help", "--version"):
                CASES[f"{args.against}: agent_worker.py {flag}"] = [
                    str(code / "agent_worker.py"),
                    flag,
                ]
        return measure(args.runs)


def measure(runs: int) -> int:
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for args in CASES.values():
        wall(args)  # warm the page cache and .pyc files
    for _ in range(runs):  # interleaved, so a noisy moment hits every case alike
        for name, args in CASES.items():
            times[name].append(wall(args))
    table(
        ["command", "median s", "min s", "max s"],
        [[n, median(t), min(t), max(t)] for n, t in times.items()],
    )
    bare = median(times["python -c pass"])
    print(f"\ninterpreter share of --help: {bare:.3f} s of {median(times[list(CASES)[2]]):.3f} s")

    modules = imported_by_help()
    heavy = [m for m in HEAVY if m in modules]
    print(f"--help imports {len(modules)} top-level modules; docker/git/rich among them: {heavy}")

    ours = [n for n in list(CASES)[2:] if ":" not in n]
    slowest = max(median(times[n]) for n in ours)
    ok = slowest < TARGET_S and not heavy
    return verdict(
        ok,
        f"slowest of --help/--version {slowest:.3f} s (target < {TARGET_S} s, "
        f"{slowest / TARGET_S:.2f}x of it); heavy imports: {heavy or 'none'}",
    )


if __name__ == "__main__":
    sys.exit(main())
