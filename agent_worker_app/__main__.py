"""python -m agent_worker_app: the same as the agent-worker command."""

from agent_worker_app.agent_worker import cli

cli(prog_name="agent-worker")
