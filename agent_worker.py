#!/usr/bin/env python3
"""Run agent-worker straight from a checkout: ./agent_worker.py --task "...".

The tool itself is the agent_worker_app package next to this file (installed, the command is
`agent-worker`). This launcher only starts it: it is never imported, so each of the tool's
modules keeps exactly one name in the process.
"""

from agent_worker_app.agent_worker import cli

if __name__ == "__main__":
    cli(prog_name="agent-worker")
