"""A project's environment: the time to the agent's start of a run whose layers are all cached
(the Python project of tests/projects.py: pytest in a .venv made by setup) against the same run
on the default image (a project with no environment file), interleaved; the cold build time of
each layer of that project's image; the default image's size, layer by layer. Target: the
cached environment costs at most 1.5x the default image's time to the agent's start.

    .venv/bin/python bench/environment.py [--runs N] [--cold-agent]

--cold-agent also rebuilds the agent layer without Docker's cache (Claude Code from npm again:
minutes); without it the agent layer is timed as a changed environment rebuilds it (its build
stage cached).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    BENCH_LABEL,
    agent_image,
    base_image,
    ca_certs,
    docker_client,
    drop_branch,
    fake_api,
    make_repo,
    median,
    remove_containers,
    run_cli,
    run_env,
    table,
    verdict,
)

TARGET_RATIO = 1.5
BEFORE_AGENT = ("preflight", "image", "container")  # the report's phases until the agent starts


def to_agent_start(report: dict[str, Any]) -> float:
    return sum(report["timings"].get(name, 0.0) for name in BEFORE_AGENT)


def project_image_of(repo: Path, work: Path) -> Any:
    from agent_worker_app import git_manager
    from agent_worker_app.config import load
    from agent_worker_app.images import project as project_image

    cfg = load({"task": "x", "agent_type": "command"}, environ={}, cwd=repo)
    ws = git_manager.preflight(repo, "bench-unused", branch_given=True)
    return project_image.load(cfg, ws, work / "contexts")[1]


def cold_layers(client: Any, repo: Path, work: Path, *, cold_agent: bool) -> list[list[Any]]:
    """Each layer of the project's claude image built anew, bottom up: system and environment
    without Docker's cache; the agent layer with or without it."""
    from agent_worker_app import agents
    from agent_worker_app.agents.base_agent import AgentSettings
    from agent_worker_app.images import build as layers

    chain, _ = layers.plan(
        client,
        agents.get("claude", AgentSettings()).image_layer(),
        base_image=base_image(),
        ca_certs=ca_certs(),
        force=False,
        log_dir=work / "builds",
        on_line=lambda line: None,
        project=project_image_of(repo, work),
    )
    rows = []
    (work / "builds").mkdir(exist_ok=True)
    for layer in chain:
        force = layer.name != "agent" or cold_agent
        start = time.perf_counter()
        layers._build(client, layer, force, work / "builds", lambda line: None)
        seconds = time.perf_counter() - start
        size = client.images.get(layer.tag).attrs["Size"] / 1e6
        how = "no cache" if force else "its build stage cached"
        rows.append([layer.name, layer.tag, how, seconds, f"{size:.0f} MB"])
    return rows


def image_sizes(client: Any, tag: str) -> list[list[Any]]:
    """What each instruction of the image adds (docker history), largest first."""
    rows = []
    for entry in client.api.history(tag):
        if entry["Size"] >= 1_000_000:
            step = entry["CreatedBy"].removeprefix("/bin/sh -c ").removeprefix("#(nop) ").strip()
            rows.append([f"{entry['Size'] / 1e6:.0f} MB", " ".join(step.split())[:70] or "(base)"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold-agent", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from projects import python_project

    client = docker_client()
    default_tag = agent_image(client)
    with tempfile.TemporaryDirectory(prefix="aw-bench-env-") as tmp:
        work = Path(tmp)
        plain = make_repo(work / "plain")
        project = python_project(work / "python")
        print("Cold build of each layer of the Python project's image:")
        cold = cold_layers(client, project, work, cold_agent=args.cold_agent)
        table(["layer", "tag", "built", "seconds", "image size"], cold)
        with fake_api(client) as url:
            env = run_env(url)
            # the same trivial check after each agent: the project's own would fail (the agent
            # of a bench changes nothing), and a check runs after the agent's start anyway
            check = ("--check", "true")
            run_cli(project, "bench/warm", env, *check)  # every layer in place before timing
            drop_branch(project, "bench/warm")
            times: dict[str, list[float]] = {"default image": [], "environment": []}
            walls: dict[str, list[float]] = {"default image": [], "environment": []}
            for i in range(args.runs):
                for name, repo in (("default image", plain), ("environment", project)):
                    run = run_cli(repo, f"bench/{i}", env, *check)
                    if list(Path(run.report["run_dir"]).glob("build*.log")):
                        raise SystemExit("a layer was built during the timed runs")
                    times[name].append(to_agent_start(run.report))
                    walls[name].append(run.wall_s)
                    drop_branch(repo, f"bench/{i}")
        remove_containers(client, BENCH_LABEL)
    print(f"\nTime to the agent's start (preflight + image + container), {args.runs} runs:")
    table(
        ["image", "median to agent start (s)", "median wall (s)", "runs"],
        [
            [name, median(ts), median(walls[name]), " ".join(f"{t:.2f}" for t in ts)]
            for name, ts in times.items()
        ],
    )
    print(f"\nThe default image ({default_tag}), what each step adds:")
    size = client.images.get(default_tag).attrs["Size"] / 1e6
    table(["size", "step"], image_sizes(client, default_tag))
    print(f"total: {size:.0f} MB")
    ratio = median(times["environment"]) / median(times["default image"])
    return verdict(
        ratio <= TARGET_RATIO,
        f"cached environment / default image, time to the agent's start: {ratio:.2f}x "
        f"(target <= {TARGET_RATIO}x)",
    )


if __name__ == "__main__":
    sys.exit(main())
