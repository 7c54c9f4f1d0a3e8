"""agent-worker: put an AI coding agent to work on a new branch of a git repository, inside a
Docker container, and report what it did.

Every module of the tool lives in this package and has exactly one import name
(agent_worker_app.<module>), installed or run from a checkout; nothing is installed at the top
of site-packages, where names like config, errors or agents belong to other distributions.
The agent plugin API is agent_worker_app.agents.base_agent.
"""
