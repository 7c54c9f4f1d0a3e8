"""The Swarm backend: each task a one-replica job service on a Docker Swarm, on whichever node
has room; the image pushed to a registry every node pulls from.

- backend: SwarmBackend, the Backend on a swarm through its manager
- io: what crosses a service's boundary (configs and secrets in, the log out), and the pauses
  between looks at a task's state
- node_jobs: helper jobs that signal (or remove) a run's containers on their node
- registry: the registry the nodes pull from

entry.py is what the backend list (engines/__init__.py) reads of it.
"""
