"""The swarm's helper jobs and images as values (engines/swarm/helper_image.py, node_jobs.py,
registry.py): the helper image holds agent-worker's program and nothing of a project, its tag
follows its content, images are named by the digest the registry returned, and a run id that is
not a plain name makes no helper job. The real swarm runs them in tests/e2e/test_swarm.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent_worker_app.engines.swarm import helper_image, node_jobs
from agent_worker_app.engines.swarm.registry import Registry
from agent_worker_app.errors import ImageBuildError

DIGEST = "sha256:" + "ab" * 32


def test_the_helper_image_is_one_program_on_an_empty_image() -> None:
    made = helper_image.layer("debian:bookworm-slim", "sha256:base")
    final = made.dockerfile.split("FROM scratch", 1)[1]
    assert "RUN" not in final
    assert "ENV" not in final
    assert 'ENTRYPOINT ["/node-job"]' in final
    assert [name for name, _, _ in made.files] == ["node_job.c"]
    assert made.tag.startswith("agent-worker-node-job:")


def test_its_tag_follows_the_base_image_and_nothing_else() -> None:
    one = helper_image.layer("debian:bookworm-slim", "sha256:base")
    assert helper_image.layer("debian:bookworm-slim", "sha256:base").tag == one.tag
    assert helper_image.layer("debian:bookworm-slim", "sha256:other").tag != one.tag


@pytest.mark.parametrize(
    "run_id", ["../x", "/abs", "x;id", "x y", "-x", ".x", "x=y", "$(id)", "", "x" * 129]
)
def test_no_helper_job_for_a_run_id_that_is_not_a_plain_name(run_id: str) -> None:
    class Refusing:
        def create_service(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("no service may be made")

    problem = node_jobs.run(
        Refusing(),
        "node",
        "r/agent-worker-node-job@" + DIGEST,
        "SIGTERM",
        run_id,
        state=lambda s: ("complete", None),
        node_name=str,
    )
    assert "not a run's name" in problem


def test_a_plain_run_id_is_the_helpers_only_input() -> None:
    made: dict[str, Any] = {}

    class Api:
        def create_service(self, template: Any, **kwargs: Any) -> dict[str, str]:
            made.update(template=template, **kwargs)
            return {"ID": "s1"}

        def remove_service(self, service_id: str) -> None:
            made["removed"] = service_id

    image = "r/agent-worker-node-job@" + DIGEST
    problem = node_jobs.run(
        Api(),
        "node",
        image,
        "SIGTERM",
        "20260101-000000-0bd0b0b0",
        state=lambda s: ("complete", None),
        node_name=str,
    )
    assert problem == ""
    spec = made["template"]["ContainerSpec"]
    assert spec["Image"] == image
    assert spec["Args"][:2] == ["SIGTERM", "20260101-000000-0bd0b0b0"]
    assert "Env" not in spec
    assert spec.get("Command") is None  # the image's entrypoint: its program
    assert spec["ReadOnly"] is True
    assert made["removed"] == "s1"


class FakeApi:
    """docker-py's calls Registry makes, answered as an engine and a registry would."""

    def __init__(self, repo_digests: list[str], in_registry: set[str]) -> None:
        self.repo_digests = repo_digests
        self.in_registry = in_registry
        self.pushes = 0

    def inspect_image(self, name: str) -> dict[str, Any]:
        return {"RepoDigests": self.repo_digests}

    def inspect_distribution(self, name: str) -> dict[str, Any]:
        import docker.errors

        if name not in self.in_registry:
            raise docker.errors.APIError("no", response=_Response(404))
        return {}

    def tag(self, *args: Any, **kwargs: Any) -> None:
        pass

    def push(self, repository: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.pushes += 1
        yield {"status": "The push refers to repository [r/agent-worker]"}
        yield {"status": f"tag: digest: {DIGEST} size: 528"}
        yield {"progressDetail": {}, "aux": {"Tag": "tag", "Digest": DIGEST, "Size": 528}}


class _Response:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.reason = "Not Found"


def test_an_image_is_named_by_the_digest_the_registry_returned() -> None:
    api = FakeApi([], set())
    ref = Registry(api, "r").publish(
        "agent-worker:tag", "r/agent-worker", force=False, on_line=print
    )
    assert ref == f"r/agent-worker@{DIGEST}"
    assert api.pushes == 1


def test_a_digest_this_engine_pushed_is_reused_while_the_registry_has_it() -> None:
    pushed = f"r/agent-worker@{DIGEST}"
    api = FakeApi(["other/agent-worker@sha256:" + "cd" * 32, pushed], {pushed})
    assert Registry(api, "r").publish("a:t", "r/agent-worker", force=False, on_line=print) == pushed
    assert api.pushes == 0
    gone = FakeApi([pushed], set())  # the registry lost it: pushed again
    assert (
        Registry(gone, "r").publish("a:t", "r/agent-worker", force=False, on_line=print) == pushed
    )
    assert gone.pushes == 1


def test_a_push_without_a_digest_is_an_error() -> None:
    class NoDigest(FakeApi):
        def push(self, repository: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
            yield {"status": "pushed"}

    with pytest.raises(ImageBuildError, match="no digest"):
        Registry(NoDigest([], set()), "r").push("a:t", "r/agent-worker", "t", print)
