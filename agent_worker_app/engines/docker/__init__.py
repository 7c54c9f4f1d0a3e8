"""The Docker backend: each task a container on one Docker engine, local or remote (the local
socket, tcp:// with or without TLS, ssh://, a Docker context).

- endpoint: which engine a run uses (plain values)
- api: the engine's HTTP API with the standard library, over every transport (its socket, TCP,
  TLS, ssh): every call a task's container needs
- containers: a task's container's one lifecycle (create ... remove, orphans, lost runs)
- container_config: the sandbox profile (profile.py) as the engine's create body
- container_io: the container's streams over its attach socket, and the input tar on its stdin
- backend: DockerBackend, the Backend on one engine
- client: docker-py's client (with requests and urllib3, 0.2 s of CPU to import), for building
  and pulling images only: a run whose image is there never imports it

entry.py is what the backend list (engines/__init__.py) reads of it.
"""
