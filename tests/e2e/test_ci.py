"""agent-worker as a CI job step, with real runs of the command agent: GitHub's step outputs,
job summary and error annotation."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from github_files import read_github_output
from push_remote import recording_remote, sent
from test_terminal import run_on_a_terminal

from conftest import git, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.e2e]


def github_env(tmp_path: Path) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(tmp_path / "github_output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary"),
    }


def test_a_github_step_gets_outputs_a_summary_and_an_annotation(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    ci = github_env(tmp_path)
    task = "printf 'a\\nb\\n' > added.txt && echo done"
    ok = run_cli(
        ["--agent-type", "command", "--task", task, "--branch", "ci/one"],
        cwd=repo,
        env=command_env(**ci),
    )
    assert ok.code == 0, ok.stderr
    assert ok.report is not None
    assert "::error" not in ok.stderr
    outputs = read_github_output(Path(ci["GITHUB_OUTPUT"]).read_text())
    assert {k: outputs[k] for k in ("branch", "status", "exit_code")} == {
        "branch": "ci/one",
        "status": "success",
        "exit_code": "0",
    }
    assert (outputs["lines_added"], outputs["lines_removed"], outputs["files_changed"]) == (
        "2",
        "0",
        "1",
    )
    assert (outputs["tokens_total"], outputs["cost_usd"]) == ("", "")  # not applicable
    # run_cli passes --report-file: that is the file named
    assert json.loads(Path(outputs["report_file"]).read_text())["run_id"] == ok.report["run_id"]
    assert "### agent-worker: success" in Path(ci["GITHUB_STEP_SUMMARY"]).read_text()

    failed = run_cli(
        ["--agent-type", "command", "--task", "echo 'it broke: 100%' >&2; exit 5"],
        cwd=repo,
        env=command_env(**ci),
    )
    assert failed.code == 1, failed.stderr
    outputs = read_github_output(Path(ci["GITHUB_OUTPUT"]).read_text())  # the later value wins
    assert (outputs["status"], outputs["exit_code"]) == ("failed", "1")
    annotations = [line for line in failed.stderr.splitlines() if line.startswith("::error")]
    assert len(annotations) == 1
    assert "exit status 5" in annotations[0]
    assert "it broke: 100%25" in annotations[0]
    summary = Path(ci["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.count("### agent-worker:") == 2  # appended, step after step


def test_a_refused_run_still_tells_the_step(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    ci = github_env(tmp_path)
    bad = run_cli(
        ["--agent-type", "command", "--task", "true", "--timeout", "soon"],
        cwd=repo,
        env=command_env(**ci),
    )
    assert bad.code == 2
    outputs = read_github_output(Path(ci["GITHUB_OUTPUT"]).read_text())
    assert (outputs["status"], outputs["exit_code"]) == ("error", "2")
    assert "::error title=agent-worker::agent-worker: --timeout must be" in bad.stderr


ESC = "\x1b"
BOX_DRAWING = re.compile("[\u2500-\u257f]")  # the report panel's frame
SPINNER = re.compile("[\u2800-\u28ff]")  # rich's status spinner (braille dots)
CHATTY = "for i in 1 2 3; do echo step $i; sleep 0.3; done; echo x > x.txt"


def assert_plain(text: str) -> None:
    assert ESC not in text
    assert not BOX_DRAWING.search(text)
    assert not SPINNER.search(text)


def test_a_piped_run_prints_plain_lines(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    result = run_cli(
        ["--agent-type", "command", "--task", CHATTY, "--branch", "piped"],
        cwd=repo,
        env=command_env(TERM="xterm-256color"),
    )
    assert result.code == 0, result.stderr
    assert_plain(result.stdout + result.stderr)
    assert result.stdout.startswith("AGENT EXECUTION REPORT\nBranch     piped")
    assert re.search(r"^\[ *\d+\.\ds\]   step 2$", result.stderr, re.M)  # timestamped lines


def test_no_color_on_a_terminal_prints_plain_lines(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    args = ["--agent-type", "command", "--task", CHATTY]
    code, shown = run_on_a_terminal([*args, "--branch", "fancy"], cwd=repo, env=command_env())
    fancy = shown.decode("utf-8", "replace")
    assert code == 0, fancy
    assert ESC in fancy  # the same run on the same terminal without NO_COLOR: rich output
    assert BOX_DRAWING.search(fancy)
    code, shown = run_on_a_terminal(
        [*args, "--branch", "no-color"], cwd=repo, env=command_env(NO_COLOR="1")
    )
    plain = shown.decode("utf-8", "replace")
    assert code == 0, plain
    assert_plain(plain)
    assert "AGENT EXECUTION REPORT\r\nBranch     no-color" in plain  # the pty turns \n to \r\n


SECRET_HEADER = "Authorization: Bearer ghp-test-token-never-in-the-container"


def test_push_after_a_successful_run(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """--push: the branch reaches the remote from the host, with the repository's own config
    (here a credential header), which the container never sees."""
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "config", "http.extraHeader", SECRET_HEADER)
    task = (
        "echo pushed > pushed.txt; env; cat /workspace/.git/config; "
        "grep -rs ghp- /workspace /agent-worker /home /tmp /run || true"
    )
    result = run_cli(
        ["--agent-type", "command", "--task", task, "--branch", "to-push", "--push"],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["pushed_to"] == "origin"
    assert git(bare, "rev-parse", "refs/heads/to-push") == git(repo, "rev-parse", "to-push")
    assert git(bare, "show", "to-push:pushed.txt") == "pushed\n"
    assert "pushed branch to-push to origin" in result.stderr
    assert "ghp-test-token" not in (Path(report["run_dir"]) / "agent.jsonl").read_text()


def test_a_failed_push_is_a_warning_with_the_command_to_retry(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    missing = tmp_path / "not-yet.git"
    result = run_cli(
        [
            *("--agent-type", "command", "--task", "echo x > x.txt", "--branch", "unpushed"),
            *("--push", str(missing)),
        ],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr  # the run's own exit code
    report = result.report
    assert report is not None
    assert (report["status"], report["pushed_to"]) == ("success", None)
    warning = next(w for w in report["warnings"] if "push" in w)
    assert "does not appear to be a git repository" in warning
    assert "agent-worker: warning: the push to" in result.stderr
    assert git(repo, "show", "unpushed:x.txt") == "x\n"  # the branch stays, locally
    assert "leave out -o ci.skip for a server that takes no push options" in warning
    retry = warning.split("retry with ", 1)[1]
    recording_remote(missing, advertise=True)
    subprocess.run(shlex.split(retry), check=True, capture_output=True)
    assert git(missing, "rev-parse", "refs/heads/unpushed") == git(repo, "rev-parse", "unpushed")
    assert sent(missing) == (["ci.skip"], ["1"])  # the retry, too, asks for no pipeline


def test_a_push_starts_no_ci_unless_the_user_asks(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """The attack: the agent edits .gitlab-ci.yml, and the push of its branch starts a pipeline
    that sees the job's unprotected variables. The push carries ci.skip (GitLab starts no
    pipeline); --push-ci leaves it out; a server that takes no push options gets the branch."""
    gitlab = recording_remote(tmp_path / "gitlab.git", advertise=True)
    plain = recording_remote(tmp_path / "plain.git", advertise=False)
    task = "printf 'steal:\\n  script: env\\n' > .gitlab-ci.yml"

    def push(branch: str, *extra: str, to: str = "origin", **env: str) -> str:
        result = run_cli(
            ["--agent-type", "command", "--task", task, "--branch", branch, *extra, "--push", to],
            cwd=repo,
            env=command_env(**env),
        )
        assert result.code == 0, result.stderr
        assert result.report is not None
        assert result.report["pushed_to"] == to
        return result.stderr

    git(repo, "remote", "add", "origin", str(gitlab))
    push("skipped")
    assert sent(gitlab) == (["ci.skip"], ["1"])
    push("runs", "--push-ci")
    push("runs-too", AGENT_WORKER_PUSH_CI="1")
    assert sent(gitlab) == (["ci.skip"], ["1", "0", "0"])  # the pipeline's pushes: no option
    for branch in ("skipped", "runs", "runs-too"):
        assert git(gitlab, "rev-parse", branch) == git(repo, "rev-parse", branch)
        assert git(gitlab, "show", f"{branch}:.gitlab-ci.yml").startswith("steal:")

    said = push("to-plain", to=str(plain))
    assert "takes no push options: pushed without ci.skip" in said
    assert sent(plain) == ([], ["0"])  # git sent nothing the first time, then the push alone
    assert git(plain, "rev-parse", "to-plain") == git(repo, "rev-parse", "to-plain")


def test_a_push_remote_that_does_not_exist_is_refused_up_front(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    before = git(repo, "for-each-ref")
    result = run_cli(
        ["--agent-type", "command", "--task", "true", "--branch", "never", "--push", "nosuch"],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 2, result.stderr
    assert "--push: no remote named 'nosuch'" in result.stderr
    assert git(repo, "for-each-ref") == before
    assert not (repo / ".git" / "agent-worker").exists()


def test_a_batch_tells_the_step_its_totals_and_each_run(
    repo: Path, command_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    ci = github_env(tmp_path)
    result = run_cli(
        [
            *("--agent-type", "command", "--branch", "batch"),
            *("--task", "echo a > a.txt", "--task", "printf 'b\\nc\\n' > b.txt; exit 3"),
        ],
        cwd=repo,
        env=command_env(**ci),
    )
    assert result.code == 1, result.stderr
    outputs = read_github_output(Path(ci["GITHUB_OUTPUT"]).read_text())
    assert outputs["branch"].splitlines() == ["batch-1", "batch-2"]
    assert (outputs["status"], outputs["exit_code"]) == ("failed", "1")
    assert (outputs["lines_added"], outputs["files_changed"]) == ("3", "2")
    each = json.loads(outputs["reports"])
    assert [(r["branch"], r["status"]) for r in each] == [
        ("batch-1", "success"),
        ("batch-2", "failed"),
    ]
    summary = Path(ci["GITHUB_STEP_SUMMARY"]).read_text()
    assert "1 of 2 tasks succeeded" in summary
    assert summary.count("| batch\\-") == 2  # a row each (names escaped)
    assert len([x for x in result.stderr.splitlines() if x.startswith("::error")]) == 1
