"""Helper jobs: a short job service on one node that signals or removes a run's containers there
through that node's own engine socket, then removes its own container. The engine cannot signal
a service's container, and leaves a job service's containers on their node (moby 42789, 44312).
The helper runs agent-worker's own image (helper_image.py: one static program), named by
digest, as root with the node's socket; its one input is the run's id, checked to be a plain
name here and again by the program, which runs no shell and no other file."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from docker.types import ContainerSpec, Mount, Placement, RestartPolicy, ServiceMode, TaskTemplate

from agent_worker_app.engines import sweep
from agent_worker_app.engines.docker.client import DOCKER_ERRORS, reason
from agent_worker_app.engines.swarm.io import ENDED, pauses

log = logging.getLogger("agent_worker")

HELPER = f"{sweep.LABEL}.helper"  # a helper job's label
ACTIONS = ("SIGTERM", "SIGINT", "SIGKILL", "remove")
PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # as node_job.c's valid_label
HELPER_LIMIT_S = 90.0  # a helper job that has not run by then is given up (its node is down?)


def run(
    api: Any,
    node: str,
    image: str,
    action: str,
    run_id: str,
    *,
    state: Callable[[str], tuple[str, str | None]],
    node_name: Callable[[str], str],
) -> str:
    """Run a helper job (image: repository@sha256:...) on node that signals (action SIGTERM,
    SIGINT or SIGKILL) or removes ("remove") the run's containers there, then removes its own;
    wait for it, then remove its service. A problem, or "" when it ran. state(service id) is the
    job's (state, error); api docker-py's."""
    if action not in ACTIONS or not plain_name(run_id):
        return f"cannot {action} the containers of run {run_id!r}: not a run's name"
    helper = secrets.token_hex(6)
    labels = {HELPER: helper, sweep.DEADLINE: str(int(time.time() + 600))}
    container = ContainerSpec(
        image,
        args=[action, run_id, helper],  # to the image's entrypoint, its program
        labels=labels,
        user="0:0",
        mounts=[Mount("/var/run/docker.sock", "/var/run/docker.sock", type="bind")],
        read_only=True,
        cap_drop=["ALL"],  # the socket is root's by owner: no capability needed
    )
    template = TaskTemplate(
        container,
        restart_policy=RestartPolicy(condition="none", max_attempts=0),
        placement=Placement(constraints=[f"node.id=={node}"]),
    )
    what = "remove" if action == "remove" else "signal"
    made_at = time.monotonic()
    try:
        made = api.create_service(
            template,
            name=f"agent-worker-{what}-{helper}",
            labels=labels,
            mode=ServiceMode("replicated-job", replicas=1, concurrency=1),
        )
    except DOCKER_ERRORS as exc:
        return f"cannot {what} the containers of run {run_id}: {reason(exc)}"
    service_id = str(made["ID"])
    problem = ""
    end = time.monotonic() + HELPER_LIMIT_S
    waits = pauses()
    while (now := state(service_id))[0] not in ENDED:
        if time.monotonic() > end:
            problem = (
                f"cannot {what} the containers of run {run_id} on node "
                f"{node_name(node)}: its helper job did not run ({now[1] or now[0]})"
            )
            break
        time.sleep(next(waits))
    with suppress(*DOCKER_ERRORS):
        api.remove_service(service_id)
    log.debug(
        "swarm: helper job (%s, %s) on node %s: %s, removed after %.2fs",
        action,
        image,
        node[:12],
        now[0],
        time.monotonic() - made_at,
    )
    return problem


def plain_name(text: str) -> bool:
    """Whether text is a label value the helper's program takes (node_job.c's valid_label)."""
    return bool(PLAIN.fullmatch(text))


def sweep_left_over(api: Any, now: float) -> None:
    """Remove helper jobs past their deadline (an agent-worker that died waiting for one)."""
    try:
        helpers = api.services(filters={"label": HELPER})
    except DOCKER_ERRORS:
        return
    for found in helpers:
        labels = dict((found.get("Spec") or {}).get("Labels") or {})
        if sweep.deadline(labels) < now:
            with suppress(*DOCKER_ERRORS):
                api.remove_service(found["ID"])
