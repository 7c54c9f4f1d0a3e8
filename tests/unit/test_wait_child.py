"""agent_inside.sh's wait_child, run by bash as the container's root stage runs it: the exit
status of a child that ended before anyone looked (the check `false`, which an earlier loop
that asked `kill -0` first reported as 0), and of one whose wait a trapped signal cut short."""

from __future__ import annotations

import re
import subprocess

from conftest import ROOT

SCRIPT = ROOT / "agent_worker_app" / "container" / "agent_inside.sh"


def wait_child() -> str:
    found = re.search(r"^wait_child\(\) \{\n.*?^\}\n", SCRIPT.read_text(), re.M | re.S)
    assert found is not None, "agent_inside.sh defines wait_child"
    return found.group(0)


def run(body: str) -> str:
    script = f"{wait_child()}\n{body}"
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


def test_a_child_that_ended_before_anyone_looked_keeps_its_status() -> None:
    # the child is over (and reaped by bash) before wait_child starts: 20 times over
    body = """
    for i in $(seq 20); do
      (exec false) & pid=$!
      sleep 0.01
      status=0; wait_child "$pid" || status=$?
      [[ $status == 1 ]] || { echo "got $status"; exit 0; }
    done
    echo ok
    """
    assert run(body) == "ok"


def test_a_trapped_signal_does_not_cut_the_wait_short() -> None:
    body = """
    trap 'true' TERM
    (sleep 0.5; exit 3) & pid=$!
    (sleep 0.1; kill -TERM $$) &
    status=0; wait_child "$pid" || status=$?
    echo "$status"
    """
    assert run(body) == "3"
