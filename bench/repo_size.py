"""Setup cost against repository size: the same trivial run (one text turn, no changes) on a
generated repository of 20,000 files and 5,000 commits and on a 10-file one, interleaved.
Target: the big repository costs at most 2 s more (medians).

With --modes: the big repository's run in each workspace mode instead, `--workspace copy` (a
pack of exactly the branch's history sent in, the default) against `--workspace mount` (the
object directories shared read-only), interleaved, with the ratio of their medians.
Target: copy costs at most 2 s more than mount.

    .venv/bin/python bench/repo_size.py [--runs N] [--modes]

The big repository is made once with `git fast-import` and kept in bench/out/.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import (
    OUT,
    agent_image,
    docker_client,
    drop_branch,
    fake_api,
    git,
    init_repo,
    make_repo,
    median,
    phase_medians,
    remove_containers,
    run_cli,
    run_env,
    table,
    verdict,
)

TARGET_EXTRA_S = 2.0
FILES, COMMITS = 20_000, 5_000
BIG = OUT / f"repo-{FILES}-files-{COMMITS}-commits"
DONE_MARK = "bench-generated"  # in the git directory, written last: a half-made repo is redone


def _data(text: str) -> bytes:
    raw = text.encode()
    return b"data %d\n%s\n" % (len(raw), raw)


def fast_import_stream() -> Iterator[bytes]:
    """COMMITS commits on main, each adding FILES / COMMITS new files and bumping VERSION."""
    per_commit = FILES // COMMITS
    for c in range(COMMITS):
        head = [b"commit refs/heads/main\n", b"mark :%d\n" % (c + 1)]
        head.append(b"committer Bench <bench@localhost> %d +0000\n" % (1_700_000_000 + 60 * c))
        head.append(_data(f"Commit {c}"))
        if c:
            head.append(b"from :%d\n" % c)
        yield b"".join(head)
        for k in range(per_commit):
            n = c * per_commit + k
            path = f"pkg{n % 100:02d}/sub{n // 100 % 20:02d}/mod{n:05d}.py"
            body = f'"""Module {n}."""\n\n\ndef value_{n}() -> int:\n    return {n}\n' * 3
            yield f"M 100644 inline {path}\n".encode() + _data(body)
        yield b"M 100644 inline VERSION\n" + _data(f"{c}")
        yield b"\n"


def big_repo() -> Path:
    """The cached big repository, generated (about 10 s) when missing or incomplete."""
    if (BIG / ".git" / DONE_MARK).is_file():
        return BIG
    shutil.rmtree(BIG, ignore_errors=True)
    print(f"generating {BIG} ({FILES:,} files, {COMMITS:,} commits)...", flush=True)
    start = time.perf_counter()
    init_repo(BIG)
    importer = subprocess.Popen(
        ["git", "-C", str(BIG), "fast-import", "--quiet"], stdin=subprocess.PIPE
    )
    assert importer.stdin is not None
    for chunk in fast_import_stream():
        importer.stdin.write(chunk)
    importer.stdin.close()
    if importer.wait() != 0:
        raise SystemExit("git fast-import failed")
    git(BIG, "reset", "-q", "--hard", "main")  # the working tree and index of a checkout
    git(BIG, "gc", "-q")
    (BIG / ".git" / DONE_MARK).touch()
    print(f"generated in {time.perf_counter() - start:.1f} s\n")
    return BIG


def one_run(repo: Path, branch: str, env: dict[str, str]) -> dict[str, Any]:
    """A run whose branch and run directory are removed afterwards (the big repo is reused)."""
    run = run_cli(repo, branch, env)
    drop_branch(repo, run.report["branch"])
    shutil.rmtree(run.report["run_dir"], ignore_errors=True)
    return run.report | {"wall_s": run.wall_s}


def modes(big: Path, runs: int, client: Any, env: dict[str, str]) -> int:
    """The big repository's run in copy mode against mount mode, interleaved."""
    results: dict[str, list[dict[str, Any]]] = {"copy": [], "mount": []}
    try:
        for mode in results:
            one_run(big, "bench/warm-up", env | {"AGENT_WORKER_WORKSPACE": mode})
        for i in range(runs):
            for mode, reports in results.items():
                mode_env = env | {"AGENT_WORKER_WORKSPACE": mode}
                reports.append(one_run(big, f"bench/{mode}-{i}", mode_env))
    finally:
        remove_containers(client, f"agent-worker.project={big}")
    rows = []
    for mode, reports in results.items():
        walls = [r["wall_s"] for r in reports]
        phases = phase_medians(reports)
        rows.append(
            [f"--workspace {mode}", median(walls), min(walls), max(walls), *phases.values()]
        )
    table(["mode", "median s", "min s", "max s", *phases], rows)
    extra = rows[0][1] - rows[1][1]
    print("\n(phase columns: medians of report.json timings, s)")
    print(f"copy / mount: {rows[0][1] / rows[1][1]:.2f}x")
    return verdict(
        extra <= TARGET_EXTRA_S,
        f"copy costs {extra:+.3f} s more than mount (target <= +{TARGET_EXTRA_S} s)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--modes", action="store_true", help="the big repository in copy mode vs mount mode"
    )
    args = parser.parse_args()
    runs = args.runs

    big = big_repo()
    tracked = len(git(big, "ls-files").splitlines())
    commits = int(git(big, "rev-list", "--count", "HEAD"))
    client = docker_client()
    agent_image(client)
    if args.modes:
        print(f"{runs} runs each, interleaved; {tracked:,} files, {commits:,} commits\n")
        with fake_api(client) as url:
            return modes(big, runs, client, run_env(url))
    results: dict[str, list[dict[str, Any]]] = {"10 files": [], f"{tracked:,} files": []}
    with tempfile.TemporaryDirectory(prefix="aw-bench-") as tmp, fake_api(client) as url:
        small = make_repo(Path(tmp) / "project")
        env = run_env(url)
        repos = dict(zip(results, [small, big], strict=True))
        try:
            for repo in repos.values():
                one_run(repo, "bench/warm-up", env)
            for i in range(runs):
                for name, repo in repos.items():
                    results[name].append(one_run(repo, f"bench/size-{i}", env))
        finally:
            for repo in repos.values():
                remove_containers(client, f"agent-worker.project={repo}")

    print(
        f"{runs} runs each, interleaved; big repository: {tracked:,} files, {commits:,} commits\n"
    )
    rows = []
    for name, reports in results.items():
        walls = [r["wall_s"] for r in reports]
        phases = phase_medians(reports)
        rows.append([name, median(walls), min(walls), max(walls), *phases.values()])
    table(["repository", "median s", "min s", "max s", *phases], rows)
    extra = rows[1][1] - rows[0][1]
    print("\n(phase columns: medians of report.json timings, s)")
    return verdict(
        extra <= TARGET_EXTRA_S,
        f"the big repository costs {extra:+.3f} s (target <= +{TARGET_EXTRA_S} s)",
    )


if __name__ == "__main__":
    sys.exit(main())
