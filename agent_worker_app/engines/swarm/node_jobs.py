"""Helper jobs: a short job service on one node that signals or removes a run's containers there
through that node's own engine socket, then removes its own container. The engine cannot signal
a service's container, and leaves a job service's containers on their node (moby 42789, 44312).
The helper runs the task's own image as root with the node's socket."""

from __future__ import annotations

import logging
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
HELPER_LIMIT_S = 90.0  # a helper job that has not run by then is given up (its node is down?)


def run(
    api: Any,
    node: str,
    image: str,
    action: str,
    run_id: str,
    *,
    sig: str = "",
    state: Callable[[str], tuple[str, str | None]],
    node_name: Callable[[str], str],
) -> str:
    """Run a helper job on node that signals (action "signal", with sig) or removes ("remove")
    the run's containers there, then removes its own; wait for it, then remove its service. A
    problem, or "" when it ran. state(service id) is the job's (state, error); api docker-py's."""
    helper = secrets.token_hex(6)
    labels = {HELPER: helper, sweep.DEADLINE: str(int(time.time() + 600))}
    container = ContainerSpec(
        image,
        command=["bash", "-c", NODE_SCRIPT],
        env={
            "AW_ACTION": action,
            "AW_SIGNAL": sig,
            "AW_TARGET": f"{sweep.RUN_ID}={run_id}",
            "AW_SELF": f"{HELPER}={helper}",
        },
        labels=labels,
        user="root",
        mounts=[Mount("/var/run/docker.sock", "/var/run/docker.sock", type="bind")],
    )
    template = TaskTemplate(
        container,
        restart_policy=RestartPolicy(condition="none", max_attempts=0),
        placement=Placement(constraints=[f"node.id=={node}"]),
    )
    made_at = time.monotonic()
    try:
        made = api.create_service(
            template,
            name=f"agent-worker-{action}-{helper}",
            labels=labels,
            mode=ServiceMode("replicated-job", replicas=1, concurrency=1),
        )
    except DOCKER_ERRORS as exc:
        return f"cannot {action} the containers of run {run_id}: {reason(exc)}"
    service_id = str(made["ID"])
    problem = ""
    end = time.monotonic() + HELPER_LIMIT_S
    waits = pauses()
    while (now := state(service_id))[0] not in ENDED:
        if time.monotonic() > end:
            problem = (
                f"cannot {action} the containers of run {run_id} on node "
                f"{node_name(node)}: its helper job did not run ({now[1] or now[0]})"
            )
            break
        time.sleep(next(waits))
    with suppress(*DOCKER_ERRORS):
        api.remove_service(service_id)
    log.debug(
        "swarm: helper job (%s) on node %s: %s, removed after %.2fs",
        action,
        node[:12],
        now[0],
        time.monotonic() - made_at,
    )
    return problem


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


# Run by a helper job as root on one node, with that node's engine socket: signal or remove the
# containers labelled with the run's id, then remove its own container (a job's container is
# never removed by the swarm).
NODE_SCRIPT = r"""
set -euo pipefail
api() { curl -fsS --max-time 60 --unix-socket /var/run/docker.sock "$@"; }
ids() { # the containers with this label (never all of them: a failed filter ends the script)
  local filters
  filters=$(jq -cn --arg wanted "$1" '{"label": [$wanted]}')
  [[ "$filters" == '{"label":["'* ]] || exit 1
  api -G http://localhost/containers/json --data-urlencode all=1 \
    --data-urlencode "filters=$filters" | jq -r '.[].Id'
}
for id in $(ids "$AW_TARGET"); do
  if [[ "$AW_ACTION" == signal ]]; then
    api -X POST "http://localhost/containers/$id/kill?signal=$AW_SIGNAL" >/dev/null || true
  else
    api -X DELETE "http://localhost/containers/$id?force=1&v=1" >/dev/null || true
  fi
done
for id in $(ids "$AW_SELF"); do api -X DELETE "http://localhost/containers/$id?force=1&v=1"; done
"""
