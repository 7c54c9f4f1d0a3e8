"""What the agent leaves behind is untrusted: its clone's git configuration runs nothing when
agent-worker commits and bundles after it, no process of its outlives it to rewrite the
account, a bundle brings back one head and its objects only, and links in the output are never
fatal. Each attack performed in a real run, against the real engine."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import containers_of, git, run_cli
from fake_anthropic import Turn, bash

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# The agent's program: what its hooks, filters and fsmonitor run. It leaves a mark in the
# agent's last lines (which come back to the run directory; spelt so that the agent's own
# output, which shows the payload, never holds the mark) and starts a daemon that keeps
# rewriting agent-worker's account of the run as a success.
PAYLOAD = r"""
cat > /home/agent/forge.py <<'EOF'
import json, os, time
forged = json.dumps({"phase": "agent", "error": None, "head": None, "bundle": False,
                     "agent_exit": 0, "stopped": None, "warnings": ["forged by the agent"]})
end = time.monotonic() + 30
while time.monotonic() < end:
    try:
        with open("/agent-worker/out/.forged", "w") as f:
            f.write(forged)
        os.replace("/agent-worker/out/.forged", "/agent-worker/out/result.json")
    except OSError:
        time.sleep(0.01)
EOF
cat > /home/agent/evil <<'EOF'
#!/bin/sh
[ -t 0 ] || cat
printf '%s-%s: %s\n' hook ran "$0" >> /agent-worker/out/agent-tail.jsonl
setsid /usr/bin/python3 /home/agent/forge.py </dev/null >/dev/null 2>&1 &
exit 0
EOF
chmod +x /home/agent/evil
mkdir -p /home/agent/hooks
for hook in pre-commit prepare-commit-msg commit-msg post-commit post-index-change \
    reference-transaction pre-auto-gc; do
  cp /home/agent/evil /home/agent/hooks/$hook
done
"""

ATTACKS = {
    "hooks-path": "git config core.hooksPath /home/agent/hooks",
    "git-dir-hooks": "cp /home/agent/hooks/* .git/hooks/",
    "global-config": (
        "git config --global core.hooksPath /home/agent/hooks && "
        "git config --global core.fsmonitor /home/agent/evil"
    ),
    "include": (
        "printf '[core]\\n\\thooksPath = /home/agent/hooks\\n' > /home/agent/evil.config && "
        "git config include.path /home/agent/evil.config"
    ),
    "fsmonitor": "git config core.fsmonitor /home/agent/evil",
    "clean-filter": (
        "echo '* filter=evil' >> .git/info/attributes && "
        "git config filter.evil.clean /home/agent/evil && git config filter.evil.required true"
    ),
    "none": "true",  # the same run without an attack
}

UNCOMMITTED = "agent-worker: work the agent left uncommitted"


def kept_tail(report: dict[str, Any]) -> str:
    """The agent's last lines as they came back to the run directory."""
    tail = Path(report["run_dir"]) / "out" / "agent-tail.jsonl"
    assert tail.is_file()
    return tail.read_text()


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_agents_git_config_runs_nothing_after_it_and_a_failure_stays_one(
    repo: Path, command_env: Callable[..., dict[str, str]], docker_client: Any, attack: str
) -> None:
    task = f"set -e\n{PAYLOAD}\n{ATTACKS[attack]}\necho work > work.txt\nexit 1\n"
    branch = f"attack-{attack}"
    result = run_cli(
        ["--agent-type", "command", "--task", task, "--branch", branch],
        cwd=repo,
        env=command_env(),
    )
    report = result.report
    assert report is not None, result.stderr
    assert result.code == 1, result.stderr  # the agent's failure, not a forged success
    assert report["status"] == "failed"
    assert not any("forged" in w for w in report["warnings"])
    assert "hook-ran" not in kept_tail(report)  # no hook, filter or fsmonitor of its ran
    assert git(repo, "log", "--format=%s", f"main..{branch}").splitlines() == [UNCOMMITTED]
    assert git(repo, "show", f"{branch}:work.txt") == "work\n"
    assert containers_of(docker_client, report["run_id"]) == []


def test_claude_codes_hooks_and_filters_run_nothing_and_its_work_is_kept(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]]
) -> None:
    """The real agent arms its clone (hooks path, fsmonitor, a clean filter, its global
    config), leaves its work uncommitted and ends well: the work comes back as it left it."""
    arm = " && ".join(ATTACKS[a] for a in ("hooks-path", "fsmonitor", "clean-filter"))
    arm += " && git config --global core.hooksPath /home/agent/hooks"
    fake_api.add_turns(
        Turn.tool_use(bash(f"{PAYLOAD}\n{arm} && echo work > work.txt && echo armed")),
        Turn.text("done"),
    )
    result = run_cli(["--task", "arm", "--branch", "armed"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "success"
    assert not any("forged" in w for w in report["warnings"])
    assert "hook-ran" not in kept_tail(report)
    assert git(repo, "log", "--format=%s", "main..armed").splitlines() == [UNCOMMITTED]
    assert git(repo, "show", "armed:work.txt") == "work\n"


def test_a_bundle_with_other_refs_brings_back_the_branch_alone(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    """The agent makes another branch and a tag, and the check (which runs as the agent user
    after root read the account) tries to hand back a bundle of them too."""
    other = "objects of another branch\n"
    task = (
        f"git checkout -q -b other && printf '{other.rstrip()}\\n' > other.txt && "
        "git add other.txt && git commit -qm other && git tag other-tag && "
        "git checkout -q - && echo work > work.txt && git add work.txt && git commit -qm work"
    )
    check = (
        "git bundle create /agent-worker/out/result.bundle HEAD~1..HEAD other other-tag "
        "2>/dev/null; true"
    )
    other_blob = subprocess.run(
        ["git", "hash-object", "--stdin"], input=other, capture_output=True, text=True, check=True
    ).stdout.strip()
    refs_before = git(repo, "for-each-ref", "--format=%(refname)")
    result = run_cli(
        ["--agent-type", "command", "--task", task, "--branch", "one-head", "--check", check],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    assert result.report["status"] == "success"
    assert git(repo, "log", "--format=%s", "main..one-head").splitlines() == ["work"]
    assert git(repo, "for-each-ref", "--format=%(refname)") == refs_before + "refs/heads/one-head\n"
    found = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", other_blob], check=False)
    assert found.returncode != 0  # the other branch's objects stayed out of the repository


def test_links_left_in_the_output_do_not_fail_a_good_run(
    repo: Path, command_env: Callable[..., dict[str, str]]
) -> None:
    """An absolute and a climbing symlink among the results, and the agent's last lines made a
    link, with a result large enough to be copied out of the container (not framed)."""
    task = (
        "head -c 5000000 /dev/urandom > big.bin && "
        "ln -s /etc/passwd /agent-worker/out/absolute-link && "
        "ln -s ../../../../etc/passwd /agent-worker/out/climbing-link && "
        "rm -f /agent-worker/out/agent-tail.jsonl && "
        "ln -s /etc/hostname /agent-worker/out/agent-tail.jsonl"
    )
    result = run_cli(
        ["--agent-type", "command", "--task", task, "--branch", "linked"],
        cwd=repo,
        env=command_env(),
    )
    assert result.code == 0, result.stderr
    report = result.report
    assert report is not None
    assert report["status"] == "success"
    assert git(repo, "cat-file", "-s", "linked:big.bin").strip() == "5000000"
    kept = Path(report["run_dir"]) / "out"
    links = [p for p in kept.rglob("*") if p.is_symlink()] if kept.is_dir() else []
    assert links == []
