"""The swarm backend on a real swarm (tests/swarm_cluster.py: a manager and two workers, each a
Docker engine in a container, and a registry from Debian's package), shared by every test here.
Each test leaves nothing on any node: no service, config or secret when the run ends, and no
container a few seconds later (a node removes a task's container once its service is removed,
while the run ends)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import ContainerSpec, Placement, RestartPolicy, ServiceMode, TaskTemplate
from test_check_judges_the_branch import FIX, HOME_ATTACKS, unittest_project
from test_faults import start_cli

from agent_worker_app.engines.swarm import helper_image
from agent_worker_app.engines.swarm.registry import Registry
from conftest import TEST_KEY, clean_env, git, make_repo, run_cli, snapshot
from fake_anthropic import Turn, bash, edit, write
from swarm_cluster import Swarm, swarm

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


@pytest.fixture(scope="module")
def cluster(
    docker_client: Any, base_image: str, agent_image: str, command_image: str
) -> Iterator[Swarm]:
    with swarm(docker_client, base_image, [base_image, agent_image, command_image]) as made:
        yield made


@pytest.fixture
def swarm_args(cluster: Swarm) -> list[str]:
    return ["--backend", "swarm", "--registry", cluster.registry]


@pytest.fixture
def command_env(
    cluster: Swarm, base_image: str, ca_certs: tuple[Path, ...]
) -> Callable[..., dict[str, str]]:
    def make(**extra: str) -> dict[str, str]:
        settings = {
            "DOCKER_HOST": cluster.manager.url,
            "AGENT_WORKER_BASE_IMAGE": base_image,
            "AGENT_WORKER_CA_CERT": ":".join(str(p) for p in ca_certs),
        }
        return clean_env(**(settings | extra))

    return make


def nothing_left(cluster: Swarm, within: float = 20.0) -> list[str]:
    """What agent-worker left on the swarm: services, configs and secrets at once; containers
    once their nodes had a few seconds to remove those of services just removed."""
    end = time.monotonic() + within
    while True:
        try:
            left = cluster.leftovers()
        except docker.errors.NotFound:  # a container removed while it was listed
            left = ["container (going)"]
        if not left or any(not item.startswith("container ") for item in left):
            return left
        if time.monotonic() > end:
            return left
        time.sleep(0.5)


class Spy(threading.Thread):
    """Everything the swarm shows of a run while it goes: service specs and logs, configs (their
    data too), secrets, and the inspect of every container on every node."""

    def __init__(self, cluster: Swarm) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.seen: list[str] = []
        self.services = 0
        self._done = threading.Event()

    def run(self) -> None:
        manager = self.cluster.manager.client()
        nodes = [node.client() for node in self.cluster.nodes]
        while not self._done.is_set():
            with contextlib.suppress(Exception):  # a thing removed while looked at
                self._look(manager, nodes)
            time.sleep(0.3)

    def _look(self, manager: Any, nodes: list[Any]) -> None:
        for service in manager.api.services():
            self.services += 1
            self.seen.append(json.dumps(service))
            logs = manager.api.service_logs(service["ID"], stdout=True, stderr=True)
            self.seen.append(b"".join(logs).decode(errors="replace"))
        for config in manager.api.configs():
            data = manager.api.inspect_config(config["ID"])
            self.seen.append(json.dumps(data))
            self.seen.append(base64.b64decode(data["Spec"]["Data"]).decode(errors="replace"))
        self.seen += [
            json.dumps(manager.api.inspect_secret(s["ID"])) for s in manager.api.secrets()
        ]
        for node in nodes:
            for container in node.api.containers(all=True):
                self.seen.append(json.dumps(node.api.inspect_container(container["Id"])))

    def __enter__(self) -> Spy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.join()


def test_claude_on_the_swarm_gives_the_branch_and_report_of_docker(
    repo: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    cluster: Swarm,
    swarm_args: list[str],
    agent_image: str,
) -> None:
    fake_api.add_turns(
        Turn.tool_use(write("/workspace/src/util.py", "def add(a, b):\n    return a + b\n")),
        Turn.tool_use(bash("git add src/util.py && git commit -q -m 'Add util'")),
        Turn.tool_use(edit("/workspace/src/app.py", "return 'hello'", "return 'hello, world'")),
        Turn.text("Added util and changed the greeting.", delay=2),
    )
    before = snapshot(repo)
    base = git(repo, "rev-parse", "HEAD").strip()
    with Spy(cluster) as spy:
        result = run_cli(
            [*swarm_args, "--task", "Improve the app", "--branch", "swarmed", "--debug"],
            cwd=repo,
            env=run_env(DOCKER_HOST=cluster.manager.url),
            timeout=900,
        )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "success"
    head = git(repo, "rev-parse", "swarmed").strip()
    assert report["head_commit"] == head
    assert git(repo, "log", "--format=%s", f"{base}..swarmed").splitlines() == [
        "agent-worker: work the agent left uncommitted",
        "Add util",
    ]
    assert git(repo, "show", "swarmed:src/app.py") == "def greet():\n    return 'hello, world'\n"
    assert snapshot(repo) == before
    assert report["changes"]["files_changed"] == 2
    assert report["changes"]["lines_added"] == 2 + 1
    assert report["changes"]["lines_removed"] == 1
    served = fake_api.main_usage_total
    assert report["tokens"]["input"] == served.input_tokens
    assert report["tokens"]["output"] == served.output_tokens
    assert report["turns"] == 4
    assert fake_api.saw_api_key(TEST_KEY)  # it reached the agent, on a worker
    assert nothing_left(cluster) == []
    # the image went to the registry (pushed by this run, or an earlier one) and ran on a
    # worker, named by its digest
    assert f'"{cluster.registry}/agent-worker@sha256:' in "".join(spy.seen)
    assert f'"{cluster.registry}/agent-worker:' not in "".join(spy.seen)
    assert spy.services > 0
    images = ""
    for node in cluster.nodes:
        client = node.client()
        for image in client.api.images():
            images += json.dumps(client.api.inspect_image(image["Id"]))
            images += json.dumps(client.api.history(image["Id"]))
    run_files = b"".join(p.read_bytes() for p in Path(report["run_dir"]).rglob("*") if p.is_file())
    for where, text in [
        ("swarm", "\n".join(spy.seen)),
        ("images", images),
        ("stdout", result.stdout),
        ("stderr", result.stderr),
        ("run files", run_files.decode(errors="replace")),
    ]:
        assert TEST_KEY not in text, where
        assert TEST_KEY[-12:] not in text, where

    # The session came back in the frames (whole, though larger than a pipe's 64 KiB), and a
    # follow-up task on the swarm resumes the conversation.
    session_id = report["agent"]["session_id"]
    assert (Path(report["run_dir"]) / "session" / f"{session_id}.jsonl").is_file()
    served = len(fake_api.main_requests)
    fake_api.add_turns(Turn.text("Said it again."))
    again = run_cli(
        [*swarm_args, "--task", "Say it again (second task)", "--continue", "swarmed"],
        cwd=repo,
        env=run_env(DOCKER_HOST=cluster.manager.url),
        timeout=900,
    )
    assert again.code == 0, again.stderr
    assert f"resuming the agent's session {session_id}" in again.stderr
    conversation = json.dumps(fake_api.main_requests[served].body["messages"])
    assert "Improve the app" in conversation
    assert "Added util and changed the greeting." in conversation
    assert nothing_left(cluster) == []


def test_the_image_is_pushed_once_and_commands_run_on_the_workers(
    repo: Path, command_env: Callable[..., dict[str, str]], cluster: Swarm, swarm_args: list[str]
) -> None:
    def run(branch: str) -> Any:
        return run_cli(
            [
                *swarm_args,
                "--agent-type",
                "command",
                "--task",
                f"echo {branch} > {branch}.txt && git add . && git commit -qm {branch}",
                "--branch",
                branch,
                "--debug",
            ],
            cwd=repo,
            env=command_env(),
            timeout=900,
        )

    first, second = run("first"), run("second")
    assert "The push refers to repository" in first.stderr  # the manager pushed it once
    for result, branch in ((first, "first"), (second, "second")):
        assert result.code == 0, result.stderr
        assert git(repo, "show", f"{branch}:{branch}.txt") == f"{branch}\n"
        # its container went with its service: no helper job on the node (--debug names each)
        assert "removal began" in result.stderr
        assert "helper job" not in result.stderr
    assert "The push refers to repository" not in second.stdout + second.stderr
    assert nothing_left(cluster) == []


def test_an_unreachable_registry_exits_3_before_anything_is_made(
    repo: Path, command_env: Callable[..., dict[str, str]], cluster: Swarm
) -> None:
    before = snapshot(repo)
    host = cluster.registry.split(":")[0]
    result = run_cli(
        [
            "--backend",
            "swarm",
            "--registry",
            f"{host}:5999",
            "--agent-type",
            "command",
            "--task",
            "true",
            "--branch",
            "never",
        ],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 3, result.stderr
    assert "cannot reach the registry" in result.stderr
    assert f"{host}:5999" in result.stderr
    assert git(repo, "branch", "--list", "never") == ""
    assert not (repo / ".git" / "agent-worker").exists()
    assert snapshot(repo) == before
    assert nothing_left(cluster) == []


def test_a_task_no_node_has_room_for_is_a_clear_error(
    repo: Path, command_env: Callable[..., dict[str, str]], cluster: Swarm, swarm_args: list[str]
) -> None:
    result = run_cli(
        [*swarm_args, "--agent-type", "command", "--task", "true", "--memory", "4000g"],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 3, result.stderr
    assert "could not start the agent's task" in result.stderr
    assert "no suitable node" in result.stderr
    assert git(repo, "branch", "--list", "agent-task-*") == ""  # the agent never started
    assert nothing_left(cluster) == []


COMMIT_THEN_WAIT = (
    "echo one > one.txt && git add one.txt && git commit -qm One && echo half > two.txt "
    "&& echo READY && sleep 600"
)


def test_a_timeout_stops_the_task_and_keeps_its_commits(
    repo: Path, command_env: Callable[..., dict[str, str]], cluster: Swarm, swarm_args: list[str]
) -> None:
    result = run_cli(
        [
            *swarm_args,
            "--agent-type",
            "command",
            "--task",
            COMMIT_THEN_WAIT,
            "--branch",
            "late",
            "--timeout",
            "15",
        ],
        cwd=repo,
        env=command_env(),
        timeout=600,
    )
    assert result.code == 124, result.stderr
    assert result.report is not None
    assert result.report["status"] == "timeout"
    assert git(repo, "log", "--format=%s", "main..late").splitlines() == [
        "agent-worker: work the agent left uncommitted",
        "One",
    ]
    assert git(repo, "show", "late:two.txt") == "half\n"
    assert nothing_left(cluster) == []


def _wait_for_ready(cluster: Swarm) -> str:
    """The id of the node whose task printed READY."""
    manager = cluster.manager.client()
    end = time.monotonic() + 600
    while time.monotonic() < end:
        for service in manager.api.services(filters={"label": "agent-worker.run-id"}):
            logs = b"".join(manager.api.service_logs(service["ID"], stdout=True, stderr=True))
            if b"READY" in logs:
                return str(manager.api.tasks(filters={"service": service["ID"]})[0]["NodeID"])
        time.sleep(0.5)
    raise AssertionError("the task never got going")


def test_sigint_stops_the_task_keeps_its_commits_and_leaves_nothing(
    repo: Path, command_env: Callable[..., dict[str, str]], cluster: Swarm, swarm_args: list[str]
) -> None:
    report_file = repo.parent / "report.json"
    proc = start_cli(
        [
            *swarm_args,
            "--agent-type",
            "command",
            "--task",
            COMMIT_THEN_WAIT,
            "--branch",
            "stop",
            "--report-file",
            str(report_file),
        ],
        cwd=repo,
        env=command_env(),
    )
    _wait_for_ready(cluster)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    report = json.loads(report_file.read_text())
    assert report["status"] == "interrupted"
    assert git(repo, "log", "--format=%s", "main..stop").splitlines() == [
        "agent-worker: work the agent left uncommitted",
        "One",
    ]
    assert nothing_left(cluster) == []


def test_a_run_whose_agent_worker_was_killed_is_recovered(
    repo: Path, command_env: Callable[..., dict[str, str]], cluster: Swarm, swarm_args: list[str]
) -> None:
    """kill -9 of agent-worker: its task works on to its own deadline, stops its agent, and
    leaves its result framed in its log; a run meanwhile does not sweep it; the next run after
    that reads the log back with the run's nonce (kept in its run directory), puts the commits
    on the branch, writes the report, and removes everything; --recover then finds nothing."""
    args = ["--agent-type", "command", "--task", COMMIT_THEN_WAIT, "--branch", "killed"]
    proc = start_cli([*swarm_args, *args, "--timeout", "20"], cwd=repo, env=command_env())
    _wait_for_ready(cluster)
    proc.kill()
    proc.wait(timeout=30)
    manager = cluster.manager.client()
    services = manager.api.services(filters={"label": "agent-worker.run-id"})
    assert len(services) == 1

    def quick_run(branch: str) -> str:
        quick = ["--agent-type", "command", "--task", "true", "--branch", branch]
        done = run_cli([*swarm_args, *quick], cwd=repo, env=command_env(), timeout=600)
        assert done.code == 0, done.stderr
        return done.stderr

    # a run meanwhile sweeps nothing of it: it is at work, then it waits to be recovered
    quick_run("meanwhile")
    end = time.monotonic() + 300
    while time.monotonic() < end:
        tasks = manager.api.tasks(filters={"service": services[0]["ID"]})
        if tasks and tasks[0]["Status"]["State"] in ("complete", "failed"):
            break
        time.sleep(1)
    else:
        raise AssertionError("the task did not stop at its deadline")
    # ended, it waits for the next run, whose sweep leaves it and which recovers it at its end
    after = quick_run("after")
    run_id = services[0]["Spec"]["Labels"]["agent-worker.run-id"]
    assert f"recovered 2 commits of run {run_id} onto branch killed" in after
    assert git(repo, "log", "--format=%s", "main..killed").splitlines() == [
        "agent-worker: work the agent left uncommitted",
        "One",
    ]
    run_dir = repo / ".git" / "agent-worker" / "runs" / run_id
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "interrupted"
    assert report["branch"] == "killed"
    assert nothing_left(cluster) == []
    again = run_cli([*swarm_args, "--recover"], cwd=repo, env=command_env(), timeout=600)
    assert again.code == 0, again.stderr
    assert "nothing to recover" in again.stdout


def test_six_commands_with_jobs_3_spread_over_both_workers(
    repo: Path, command_env: Callable[..., dict[str, str]], cluster: Swarm, swarm_args: list[str]
) -> None:
    tasks = [
        f"echo {i} > f{i}.txt && git add f{i}.txt && git commit -qm 'Task {i}' && sleep 5"
        for i in range(1, 7)
    ]
    result = run_cli(
        [
            *swarm_args,
            "--agent-type",
            "command",
            "--jobs",
            "3",
            "--branch",
            "spread",
            *(arg for task in tasks for arg in ("--task", task)),
        ],
        cwd=repo,
        env=command_env(),
        timeout=900,
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    runs = result.report["runs"]
    assert [r["status"] for r in runs] == ["success"] * 6
    for i, run in enumerate(runs, start=1):
        assert run["branch"] == f"spread-{i}"
        assert git(repo, "log", "--format=%s", f"main..spread-{i}").splitlines() == [f"Task {i}"]
        assert git(repo, "show", f"spread-{i}:f{i}.txt") == f"{i}\n"
    names = cluster.node_names()
    workers = {
        names[n.attrs["ID"]]
        for n in cluster.manager.client().nodes.list(filters={"role": "worker"})
    }
    assert {r["node"] for r in runs} == workers  # both workers, and nothing on the manager
    header, *rows = [line for line in result.stdout.splitlines() if line.strip()][1:8]
    assert header.split()[-1] == "node"
    assert [row.split()[-1] for row in rows] == [r["node"] for r in runs]
    assert nothing_left(cluster) == []


def test_a_job_service_of_an_earlier_version_is_swept_with_its_container(
    repo: Path,
    command_env: Callable[..., dict[str, str]],
    cluster: Swarm,
    swarm_args: list[str],
    command_image: str,
) -> None:
    """agent-worker made its tasks as replicated-jobs before, whose containers stay on their
    node when the service is removed (moby 42789): the sweep of a later run removes such a
    service of a run that is gone, and its container through a helper job on the node; and a
    helper job left by an agent-worker that died, once past its deadline."""

    def quick_run(branch: str) -> str:
        quick = ["--agent-type", "command", "--task", "true", "--branch", branch]
        done = run_cli([*swarm_args, *quick], cwd=repo, env=command_env(), timeout=600)
        assert done.code == 0, done.stderr
        return done.stderr

    quick_run("pushed")  # the image in the registry, whatever ran before
    run_id = "20200101-000000-0bd0b0b0"
    labels = {
        "agent-worker.run-id": run_id,
        "agent-worker.host": "another-host",
        "agent-worker.deadline": "1",  # long past: its run is gone
    }
    manager = cluster.manager.client()
    made = manager.api.create_service(
        TaskTemplate(
            ContainerSpec(
                f"{cluster.registry}/{command_image}", command=["sleep", "600"], labels=labels
            ),
            restart_policy=RestartPolicy(condition="none", max_attempts=0),
        ),
        name=f"agent-worker-{run_id}",
        labels=labels,
        mode=ServiceMode("replicated-job", replicas=1, concurrency=1),
    )
    end = time.monotonic() + 300
    while time.monotonic() < end:
        tasks = manager.api.tasks(filters={"service": made["ID"]})
        if tasks and tasks[0]["Status"]["State"] == "running":
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the old job never ran")
    assert any("container " in item for item in cluster.leftovers())
    helper = {"agent-worker.helper": "0bd0b0b0", "agent-worker.deadline": "1"}
    manager.api.create_service(
        TaskTemplate(
            ContainerSpec(f"{cluster.registry}/{command_image}", command=["true"], labels=helper),
            restart_policy=RestartPolicy(condition="none", max_attempts=0),
            placement=Placement(constraints=["node.labels.agent-worker-test==never"]),
        ),
        name="agent-worker-signal-0bd0b0b0",
        labels=helper,
        mode=ServiceMode("replicated-job", replicas=1, concurrency=1),
    )
    swept = quick_run("sweeps")
    assert f"removed service agent-worker-{run_id} (its run is gone)" in swept
    assert nothing_left(cluster) == []


def test_the_check_runs_offline_in_a_fresh_task_on_the_swarm(
    tmp_path: Path,
    command_env: Callable[..., dict[str, str]],
    cluster: Swarm,
    swarm_args: list[str],
) -> None:
    """On a swarm, too, the check is a task of its own: a bypass the agent planted in its home
    does not reach it, and it has no network (a service cannot be given none: its root closes
    it) where the agent reached an allowed host."""
    repo = unittest_project(tmp_path / "project")
    probe = f"curl -s -o /dev/null --max-time 5 http://{cluster.registry}/v2/"
    check = f'{probe}; echo "check probe exit=$?"; python3 -m unittest -q test_calc'

    def run(task: str, branch: str) -> Any:
        return run_cli(
            [
                *swarm_args,
                *("--agent-type", "command", "--branch", branch, "--check", check),
                *("--task", f'{probe}; echo "agent probe exit=$?"; {task}'),
                *("--allow-host", cluster.registry),
            ],
            cwd=repo,
            env=command_env(),
            timeout=900,
        )

    attacked = run(HOME_ATTACKS["a .pth file in the home's user site"], "swarm-bypass")
    assert attacked.code == 1, attacked.stderr
    assert "agent probe exit=0" in attacked.stderr
    report = attacked.report
    assert report is not None
    assert report["check"]["passed"] is False
    assert any("FAILED (failures=1)" in line for line in report["check"]["output_tail"])
    fixed = run(FIX, "swarm-fix")
    assert fixed.code == 0, fixed.stderr
    assert fixed.report is not None
    tail = fixed.report["check"]["output_tail"]
    assert fixed.report["check"]["passed"] is True
    assert tail[0].startswith("check probe exit=")
    assert tail[0] != "check probe exit=0"
    assert nothing_left(cluster) == []


class ServiceSpy(threading.Thread):
    """The spec of every service the swarm shows while a run goes (helper jobs live seconds)."""

    def __init__(self, cluster: Swarm) -> None:
        super().__init__(daemon=True)
        self.manager = cluster.manager.client()
        self.specs: dict[str, dict[str, Any]] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            with contextlib.suppress(Exception):
                for service in self.manager.api.services():
                    self.specs[service["ID"]] = service["Spec"]
            time.sleep(0.1)

    def __enter__(self) -> ServiceSpy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.join()


HOOK = """# sourced by every bash that starts with this image's environment (BASH_ENV)
curl -s --max-time 5 --unix-socket /var/run/docker.sock -X POST \\
  -H 'Content-Type: application/json' -d '{"Name": "agent-worker-test-pwned"}' \\
  http://localhost/volumes/create >/dev/null 2>&1 || true
"""


def test_a_helper_job_runs_none_of_the_repository(
    tmp_path: Path,
    command_env: Callable[..., dict[str, str]],
    cluster: Swarm,
    swarm_args: list[str],
) -> None:
    """A trusted environment file whose image sources a hook in every bash (BASH_ENV, a file its
    setup inputs put in the image): the hook, run as root with a node's Docker socket, makes a
    volume there. A timed-out run's helper job signals its task on its node: it runs agent-worker's
    own image, named by digest, with the run's id as its only input, and no marker appears on
    any node; the task's service names its image by digest too; the run keeps its commits."""
    repo = make_repo(
        tmp_path / "hostile",
        {
            "README.md": "# project\n",
            "hook.sh": HOOK,
            ".agent-worker/environment.toml": (
                'setup_inputs = ["hook.sh"]\n[env]\nBASH_ENV = "/workspace/hook.sh"\n'
            ),
        },
    )
    env = command_env(XDG_CONFIG_HOME=str(tmp_path / "config"))
    task = ["--agent-type", "command", "--task", COMMIT_THEN_WAIT, "--branch", "late"]
    with ServiceSpy(cluster) as spy:
        result = run_cli(
            [*swarm_args, *task, "--timeout", "15", "--trust-environment", "--debug"],
            cwd=repo,
            env=env,
            timeout=900,
        )
    assert result.code == 124, result.stderr
    assert "env BASH_ENV" not in result.stderr  # trusted: the hook is in the task's image
    assert git(repo, "log", "--format=%s", "main..late").splitlines() == [
        "agent-worker: work the agent left uncommitted",
        "One",
    ]
    for node in cluster.nodes:
        names = [v.name for v in node.client().volumes.list()]
        assert "agent-worker-test-pwned" not in names, node.name

    helpers = [s for s in spy.specs.values() if "agent-worker.helper" in s["Labels"]]
    tasks = [s for s in spy.specs.values() if "agent-worker.run-id" in s["Labels"]]
    assert len(helpers) >= 1, spy.specs
    assert len(tasks) == 1
    run_id = tasks[0]["Labels"]["agent-worker.run-id"]
    digest = r"@sha256:[0-9a-f]{64}"
    assert re.fullmatch(rf"{re.escape(cluster.registry)}/agent-worker{digest}", image_of(tasks[0]))
    manager = cluster.manager.client()
    for helper in helpers:
        container = helper["TaskTemplate"]["ContainerSpec"]
        ref = container["Image"]
        assert re.fullmatch(rf"{re.escape(cluster.registry)}/agent-worker-node-job{digest}", ref)
        assert container["Args"][1:2] == [run_id]  # its only input: the run's id
        assert "Env" not in container
        # the digest is the one of the image the manager built and pushed: one static program
        local = manager.images.get(ref)
        assert local.attrs["Config"]["Entrypoint"] == ["/node-job"]
        assert [e.split("=")[0] for e in local.attrs["Config"].get("Env") or []] in ([], ["PATH"])
        assert local.attrs["Size"] < 200_000
    assert nothing_left(cluster) == []


def image_of(spec: dict[str, Any]) -> str:
    return str(spec["TaskTemplate"]["ContainerSpec"]["Image"])


def test_the_helper_takes_the_run_id_as_data_only(
    cluster: Swarm, base_image: str, tmp_path: Path
) -> None:
    """The helper's program (run here on the manager, with its socket) refuses a run id that is
    not a plain name (a path, a shell fragment, a filter of its own) and touches nothing; with a
    plain one it signals the containers labelled with it."""
    manager = cluster.manager.client()
    ref = helper_image.prepare(
        manager,
        Registry(manager.api, cluster.registry),
        base_image=base_image,
        force=False,
        log_dir=tmp_path,
        on_line=lambda line: None,
    )
    socket = {"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}}
    victim = manager.containers.run(
        base_image, ["sleep", "300"], detach=True, labels={"agent-worker.run-id": "x"}
    )
    try:
        for bad in [
            "../x",
            "x;kill",
            'x"],"label":["y',
            "x&all=1",
            "-x",
            "a b",
            "$(id)",
            "x" * 129,
        ]:
            job = manager.containers.run(ref, ["SIGKILL", bad, "abc"], volumes=socket, detach=True)
            assert job.wait(timeout=60)["StatusCode"] == 2, bad
            assert b"not a plain name" in job.logs(), bad
            job.remove()
            victim.reload()
            assert victim.status == "running", bad
        job = manager.containers.run(ref, ["SIGKILL", "x", "abc"], volumes=socket, detach=True)
        assert job.wait(timeout=60)["StatusCode"] == 0, job.logs()
        assert b"SIGKILL: 1 container(s) of run x" in job.logs()
        job.remove()
        victim.reload()
        assert victim.status == "exited"
    finally:
        victim.remove(force=True)


def test_a_worker_killed_mid_task_is_a_clear_failure(
    repo: Path, command_env: Callable[..., dict[str, str]], cluster: Swarm, swarm_args: list[str]
) -> None:
    """Last in this module: it takes a worker away (the fixture removes it all after)."""
    report_file = repo.parent / "report.json"
    proc = start_cli(
        [
            *swarm_args,
            "--agent-type",
            "command",
            "--task",
            COMMIT_THEN_WAIT,
            "--branch",
            "lost",
            "--report-file",
            str(report_file),
        ],
        cwd=repo,
        env=command_env(),
    )
    node_id = _wait_for_ready(cluster)
    names = cluster.node_names()
    victim = next(w for w in cluster.workers if w.container.id.startswith(names[node_id]))
    victim.container.kill()
    _stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr
    report = json.loads(report_file.read_text())
    assert report["status"] == "failed"
    assert f"node {names[node_id]} went down" in report["error"]
    assert any(names[node_id] in w and "down" in w for w in report["warnings"])
    survivors = [n for n in cluster.nodes if n is not victim]
    for node in survivors:
        assert node.client().containers.list(all=True) == [], node.name
    manager = cluster.manager.client()
    assert manager.services.list() == []
    assert manager.configs.list() == []
    assert manager.secrets.list() == []
