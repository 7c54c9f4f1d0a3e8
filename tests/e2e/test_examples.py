"""The CI examples under examples/ are parsed, and their shell steps run in a real temporary
repository with the command agent, the suite's Docker engine and a bare repository as the
remote.

What cannot run here is stood in for, and only that: agent-worker is installed from this
checkout (the examples' AGENT_WORKER_SOURCE variable, set here to a wheel of it) instead of a
git URL; GitHub's `uses:` actions (checkout, setup-python, upload-artifact) are done by the
test (the repository is made, the interpreter is the suite's, the artifact's path is checked);
GitLab's `apk add` (the job image's packages) is skipped, its /opt/agent-worker is a temporary
directory, the dind service is the suite's engine, and the remote's https URL leads to the
bare repository through git's url.<base>.insteadOf in a git config of the test's own. The pull
requests the examples open go to the suite's fake of GitHub's REST API (GITHUB_API_URL, as the
runner sets it, points at it; the checkout's origin names github.com and git's pushInsteadOf
sends the push to the bare repository), and to GitLab as push options that the bare
repository's pre-receive hook records.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_github import FakeGitHub
from github_files import read_github_output
from push_remote import RECORD_OPTIONS, sent

from conftest import ROOT, git

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

EXAMPLES = ROOT / "examples"
EXAMPLE_FILES = ("github-actions.yml", "gitlab-ci.yml", "github-issue-comment.yml")
TOKEN = "ghs_example-token-never-in-the-container"
TASK = "printf 'from CI\\n' > ci.txt && env && cat .git/config && echo done"


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(data, dict)
    return data


def test_the_examples_parse_and_do_what_the_readme_says() -> None:
    github = load("github-actions.yml")
    steps = github["jobs"]["agent"]["steps"]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert uses == ["actions/checkout", "actions/setup-python", "actions/upload-artifact"]
    scripts = "\n".join(s.get("run", "") for s in steps)
    assert "agent-worker --task" in scripts
    assert "--pr" in scripts
    assert github["permissions"] == {"contents": "write", "pull-requests": "write"}
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    assert upload["with"]["path"] == ".git/agent-worker/runs/"
    assert "${{" not in scripts  # expressions reach scripts through env, never spliced in
    gitlab = load("gitlab-ci.yml")["agent-worker"]
    assert "agent-worker --task" in "\n".join(gitlab["script"])
    assert gitlab["artifacts"]["when"] == "always"
    assert gitlab["artifacts"]["paths"] == [".git/agent-worker/runs/"]
    assert "--pr" in "\n".join(gitlab["script"])
    comment = load("github-issue-comment.yml")
    job = comment["jobs"]["agent"]
    scripts = "\n".join(s.get("run", "") for s in job["steps"])
    assert "${{" not in scripts  # the comment and the issue reach the script as variables
    assert "author_association" in job["if"]  # not anyone who can comment
    assert "--pr" in scripts
    readme = (ROOT / "README.md").read_text()
    for name in EXAMPLE_FILES:  # shown in the README as they are
        assert (EXAMPLES / name).read_text() in readme


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, to install from: built once, from a copy (pip builds in the
    source directory, and the checkout is not the test's to write)."""
    work = tmp_path_factory.mktemp("source")
    copy = work / "agent-worker"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "*.egg-info", "*_cache", "__pycache__", "out"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work), str(copy)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = work.glob("agent_worker-*.whl")
    return wheel


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """(the checkout a CI job gets, its origin: a bare repository)."""
    from conftest import make_repo

    origin = tmp_path / "origin.git"
    seed = make_repo(tmp_path / "seed", {"README.md": "# ci\n"})
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(origin))
    git(tmp_path, "clone", "-q", str(origin), str(tmp_path / "checkout"))
    checkout = tmp_path / "checkout"
    git(checkout, "config", "user.name", "CI")
    git(checkout, "config", "user.email", "ci@example.com")
    return checkout, origin


def run_shell(
    script: str, *, cwd: Path, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def github_expression(
    expression: str,
    *,
    task: str,
    outputs: Callable[[], dict[str, str]],
    event: Mapping[str, str] | None = None,
) -> str:
    """The few ${{ }} expressions the workflows use, as the runner would give them."""
    expression = expression.strip()
    if expression == "inputs.task":
        return task
    if expression == "github.token":
        return TOKEN
    if event is not None and expression in event:
        return event[expression]
    if expression.startswith("secrets."):
        return ""  # the command agent needs no key
    if match := re.fullmatch(r"steps\.agent\.outputs\.(\w+)", expression):
        return outputs().get(match.group(1), "")
    raise AssertionError(f"the test does not know ${{{{ {expression} }}}}")


@pytest.fixture
def fake_github(project: tuple[Path, Path]) -> Iterator[FakeGitHub]:
    """The fake API; the checkout's origin as a runner's is (github.com), its push sent to the
    bare repository."""
    checkout, origin = project
    url = "https://github.com/acme/widget.git"
    git(checkout, "remote", "set-url", "origin", url)
    git(checkout, "config", f"url.{origin}.pushInsteadOf", url)
    with FakeGitHub("acme", "widget", TOKEN) as fake:
        yield fake


@dataclass
class Runner:
    """A runner for one job: its variables and files, and what its steps printed."""

    checkout: Path
    env: dict[str, str]
    printed: list[str]

    def outputs(self) -> dict[str, str]:
        return read_github_output(Path(self.env["GITHUB_OUTPUT"]).read_text())

    def run(
        self, workflow: dict[str, Any], source: Path, *, task: str = TASK, event: Any = None
    ) -> None:
        """The job's steps: run: steps in bash as the runner runs them, uses: done here."""
        failed = False
        for step in workflow["jobs"]["agent"]["steps"]:
            condition = step.get("if", "success()")
            if condition == "success()" and failed:
                continue
            if "uses" in step:
                if step["uses"].startswith("actions/upload-artifact"):
                    artifact = self.checkout / step["with"]["path"]
                    assert list(artifact.glob("*/report.json")), "the run directory is uploaded"
                continue  # checkout: the repository is there; setup-python: the suite's python
            env = self.env | workflow["env"] | {"AGENT_WORKER_SOURCE": str(source)}
            for key, value in (step.get("env") or {}).items():
                env[key] = re.sub(
                    r"\$\{\{(.*?)\}\}",
                    lambda m: github_expression(
                        m.group(1), task=task, outputs=self.outputs, event=event
                    ),
                    str(value),
                )
            added = Path(self.env["GITHUB_PATH"]).read_text().split()
            env["PATH"] = os.pathsep.join([*reversed(added), env["PATH"]])
            done = run_shell(step["run"], cwd=self.checkout, env=env)
            self.printed.append(done.stdout)
            assert done.returncode == 0, f"{step['name']}: {done.stdout}\n{done.stderr}"
            failed = failed or done.returncode != 0


@pytest.fixture
def runner(
    project: tuple[Path, Path],
    fake_github: FakeGitHub,
    command_env: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> Runner:
    checkout = project[0]
    variables = {
        "RUNNER_TEMP": str(tmp_path / "runner-temp"),
        "GITHUB_PATH": str(tmp_path / "github_path"),
        "GITHUB_OUTPUT": str(tmp_path / "github_output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary"),
        "GITHUB_ACTIONS": "true",
        "GITHUB_WORKSPACE": str(checkout),
        "GITHUB_RUN_ID": "4242",
        "GITHUB_API_URL": fake_github.url,
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    Path(variables["RUNNER_TEMP"]).mkdir()
    for name in ("GITHUB_PATH", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        Path(variables[name]).touch()
    env = command_env(AGENT_TYPE="command", **variables)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # setup-python
    return Runner(checkout, env, [])


def test_the_github_actions_workflow_runs(
    project: tuple[Path, Path], source: Path, runner: Runner, fake_github: FakeGitHub
) -> None:
    origin = project[1]
    runner.run(load("github-actions.yml"), source)
    got = runner.outputs()
    assert (got["status"], got["exit_code"]) == ("success", "0")
    branch = got["branch"]
    assert git(origin, "show", f"refs/heads/{branch}:ci.txt") == "from CI\n"  # pushed
    url = "https://github.test/acme/widget/pull/1"
    said = f"The agent's work is on branch {branch} (+1 -0 lines): {url}."
    assert said in "".join(runner.printed)
    assert "### agent-worker: success" in Path(runner.env["GITHUB_STEP_SUMMARY"]).read_text()
    (pull,) = fake_github.pulls
    assert (pull["head"], pull["base"], pull["draft"]) == (branch, "main", True)
    assert got["pull_request"] == url


def test_an_issue_comment_becomes_a_pull_request_and_stays_data(
    project: tuple[Path, Path],
    source: Path,
    runner: Runner,
    fake_github: FakeGitHub,
    tmp_path: Path,
) -> None:
    """The attack: a comment and an issue written to run commands in the job's shell (command
    substitution, quotes); they reach the agent as its task's text, and nothing else runs."""
    pwned = tmp_path / "pwned"
    script = "printf 'from an issue\\n' > issue.txt; cat > task-seen.md <<'EOF'\n"
    comment = f'/agent {script}$(touch {pwned})"; touch {pwned}; echo "`touch {pwned}`'
    event = {
        "github.event.comment.body": comment,
        "github.event.issue.number": "17",
        "github.event.issue.title": f"Broken $(touch {pwned})",
        "github.event.issue.body": f"Steps: ${{{{ secrets.X }}}} '; touch {pwned}; '\nEOF",
    }
    runner.run(load("github-issue-comment.yml"), source, event=event)
    assert not pwned.exists()
    got = runner.outputs()
    assert (got["status"], got["exit_code"]) == ("success", "0")
    branch = got["branch"]
    assert branch == "agent/issue-17-4242"
    origin = project[1]
    assert git(origin, "show", f"refs/heads/{branch}:issue.txt") == "from an issue\n"
    seen = git(origin, "show", f"refs/heads/{branch}:task-seen.md")
    assert f"issue #17: Broken $(touch {pwned})" in seen  # the text, as it was written
    (pull,) = fake_github.pulls
    assert pull["head"] == branch
    assert pull["title"].startswith("printf")  # the comment's first line, without "/agent "


def test_the_gitlab_ci_job_runs(
    project: tuple[Path, Path],
    source: Path,
    command_env: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    checkout, origin = project
    job = load("gitlab-ci.yml")["agent-worker"]
    venv = tmp_path / "opt-agent-worker"
    lines = [
        line.replace("/opt/agent-worker", str(venv))
        for line in [*job["before_script"], *job["script"]]
        if not line.startswith("apk ")  # the job image's packages: this machine has them
    ]
    token = "glpat-test-token-never-in-the-container"
    gitlab = {
        "CI_SERVER_HOST": "gitlab.example",
        "CI_PROJECT_PATH": "group/project",
        "AGENT_WORKER_PUSH_TOKEN": token,
        "AGENT_TASK": TASK,
        "CI_COMMIT_REF_NAME": "main",
    }
    git(origin, "config", "receive.advertisePushOptions", "true")
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(RECORD_OPTIONS)
    hook.chmod(0o755)
    remote_url = f"https://oauth2:{token}@gitlab.example/group/project.git"
    git_config = tmp_path / "gitconfig"
    git_config.write_text(f'[url "{origin}"]\n\tinsteadOf = {remote_url}\n')
    variables = {
        k: str(v)
        for k, v in job["variables"].items()
        if k not in ("DOCKER_HOST", "DOCKER_TLS_CERTDIR")  # the dind service: the suite's engine
    }
    env = (
        command_env(AGENT_TYPE="command", GIT_CONFIG_GLOBAL=str(git_config))
        | variables
        | gitlab
        | {"AGENT_WORKER_SOURCE": str(source)}
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    done = run_shell("\n".join(lines), cwd=checkout, env=env)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "AGENT EXECUTION REPORT" in done.stdout
    branch = re.search(r"^Branch +(\S+)", done.stdout, re.M)
    assert branch is not None
    assert git(origin, "show", f"refs/heads/{branch.group(1)}:ci.txt") == "from CI\n"  # pushed
    runs = list((checkout / job["artifacts"]["paths"][0]).glob("*/report.json"))
    assert len(runs) == 1  # the artifact
    assert token not in (runs[0].parent / "agent.jsonl").read_text()
    options = sent(origin)[0]
    assert options[:4] == [
        "ci.skip",
        "merge_request.create",
        "merge_request.draft",
        "merge_request.target=main",
    ]
