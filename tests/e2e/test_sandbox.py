"""The sandbox holds: egress firewall, no privileges, limits. Proved from inside real runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import containers_of, git, run_cli, runtime_env, tool_outputs
from fake_anthropic import Turn, bash


def probe_command(url: str) -> str:
    return f"curl -s -o /dev/null -w 'code=%{{http_code}}' --max-time 5 {url}; echo \" exit=$?\""


def test_the_firewall_lets_the_api_through_and_blocks_the_rest(
    repo: Path,
    fake_api: Any,
    gateway: str,
    run_env: Callable[..., dict[str, str]],
    target: str,
    runtime: str,
) -> None:
    fake_api.add_turns(
        Turn.tool_use(bash(probe_command(f"{fake_api.url(gateway)}/v1/models"))),
        Turn.tool_use(bash(probe_command(f"http://{target}:8080/"))),
        Turn.tool_use(bash(probe_command(f"http://{gateway}:{fake_api.port + 1}/"))),
        Turn.text("probed"),
    )
    result = run_cli(["--task", "probe the network"], cwd=repo, env=run_env(**runtime_env(runtime)))
    assert result.code == 0, result.stderr
    api, other, other_port = tool_outputs(fake_api)
    assert "code=404 exit=0" in api  # reached the fake API, which knows no /v1/models
    assert "code=000 exit=7" in other  # refused at once: REJECT, not a silent drop
    assert "code=000 exit=7" in other_port  # the API host, but not the API's port
    assert result.report is not None
    assert result.report["firewall"] is True
    assert result.report["runtime"] == runtime


def test_allow_host_opens_one_more_destination(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], target: str
) -> None:
    fake_api.add_turns(
        Turn.tool_use(bash(probe_command(f"http://{target}:8080/"))), Turn.text("probed")
    )
    result = run_cli(
        [
            "--task",
            "probe",
            "--allow-host",
            f"{target}:8080",
            "--allow-host",
            "no-such-host.invalid",
        ],
        cwd=repo,
        env=run_env(),
    )
    assert result.code == 0, result.stderr
    assert "code=200 exit=0" in tool_outputs(fake_api)[0]
    assert result.report is not None
    assert any("no-such-host.invalid does not resolve" in w for w in result.report["warnings"])
    assert "no-such-host.invalid does not resolve" in result.stderr


def test_another_name_on_an_allowed_address_is_refused_and_reported(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], target: str, runtime: str
) -> None:
    """The target is allowed as an address: a request naming it by its address goes through;
    the same request naming another host (an HTTP Host, as a shared address's server would
    route it) is refused by the egress proxy, and the report names it. Claude Code's own API
    requests take the same path."""
    fake_api.add_turns(
        Turn.tool_use(bash(probe_command(f"http://{target}:8080/"))),
        Turn.tool_use(bash(probe_command(f"-H 'Host: evil.example' http://{target}:8080/"))),
        Turn.text("probed"),
    )
    result = run_cli(
        ["--task", "probe", "--allow-host", f"{target}:8080"],
        cwd=repo,
        env=run_env(**runtime_env(runtime)),
    )
    assert result.code == 0, result.stderr
    allowed, other_name = tool_outputs(fake_api)
    assert "code=200 exit=0" in allowed
    assert "code=000 exit=56" in other_name  # reset before it left: nothing received
    assert result.report is not None
    assert result.report["blocked"] == [
        {
            "address": target,
            "port": 8080,
            "protocol": "http",
            "names": ["evil.example"],
            "count": 1,
            "allow": "--allow-host evil.example:8080",
        }
    ]
    assert f"{target}:8080/http (evil.example) 1 time" in result.stdout


def test_duplicate_allowed_hosts_are_a_warning_not_an_abort(
    repo: Path, fake_api: Any, gateway: str, run_env: Callable[..., dict[str, str]], target: str
) -> None:
    fake_api.add_turns(Turn.text("ok"))
    result = run_cli(
        [
            "--task",
            "t",
            "--allow-host",
            f"{target}:8080",
            "--allow-host",
            f"{target}:8080",
            "--allow-host",
            target,
            "--allow-host",
            f"{gateway}:{fake_api.port}",
        ],
        cwd=repo,
        env=run_env(),
    )
    assert result.code == 0, result.stderr
    assert result.report is not None
    warnings = " ".join(result.report["warnings"])
    assert f"{target}:8080 is listed twice" in result.stderr
    assert f"{gateway}:{fake_api.port} is listed twice" in result.stderr
    assert "adds nothing new" not in warnings or target in warnings


def test_no_firewall_is_explicit_and_reported(
    repo: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    target: str,
    docker_client: Any,
) -> None:
    fake_api.add_turns(
        Turn.tool_use(bash(probe_command(f"http://{target}:8080/"))), Turn.text("probed")
    )
    result = run_cli(["--task", "probe", "--no-firewall"], cwd=repo, env=run_env())
    assert result.code == 0, result.stderr
    assert "code=200 exit=0" in tool_outputs(fake_api)[0]
    assert result.report is not None
    assert result.report["firewall"] is False
    assert "Firewall   off (--no-firewall)" in result.stdout


def test_the_agent_has_no_privilege(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], runtime: str
) -> None:
    fake_api.add_turns(
        Turn.tool_use(
            bash(
                "id; grep -E '^(Cap|NoNewPrivs)' /proc/self/status; "
                "setpriv -d 2>/dev/null | grep -E '^(no_new_privs|Ambient)'"
            )
        ),
        Turn.tool_use(
            bash(
                "iptables -F OUTPUT; echo iptables=$?; ipset list >/dev/null 2>&1; "
                "echo ipset=$?; ls -A /agent-worker; ls /var/run/docker.sock; "
                "echo sock=$?; su -c true root </dev/null; echo su=$?"
            )
        ),
        Turn.text("looked"),
    )
    result = run_cli(["--task", "look at yourself"], cwd=repo, env=run_env(**runtime_env(runtime)))
    assert result.code == 0, result.stderr
    ident, attempts = tool_outputs(fake_api)
    assert "uid=1000(agent) gid=1000(agent) groups=1000(agent)" in ident
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd"):
        assert f"{field}:\t0000000000000000" in ident
    assert "no_new_privs: 1" in ident
    if runtime == "runsc":  # gVisor has no ambient capabilities at all
        assert "Ambient capabilities: [unsupported]" in ident
    else:
        assert "CapAmb:\t0000000000000000" in ident
        assert "Ambient capabilities: [none]" in ident
    assert "iptables=4" in attempts or "iptables=1" in attempts
    refusals = ("Permission denied", "you must be root", "Protocol not supported")
    assert any(refusal in attempts for refusal in refusals), attempts  # (gVisor: the last)
    assert "ipset=1" in attempts
    assert "secrets" not in attempts  # the key's file was removed before the agent started
    assert "sock=2" in attempts
    assert "su=0" not in attempts


def test_a_memory_hog_is_killed_and_the_run_says_so(
    repo: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    docker_client: Any,
    runtime: str,
) -> None:
    fake_api.add_turns(
        Turn.tool_use(bash("echo kept > kept.txt && git add kept.txt && git commit -qm 'Keep'")),
        Turn.tool_use(bash("head -c 2000m /dev/zero | tail; echo hog=$?")),
        Turn.text("the hog died"),
    )
    result = run_cli(
        ["--task", "eat memory", "--branch", "hog", "--memory", "512m"],
        cwd=repo,
        env=run_env(**runtime_env(runtime)),
    )
    report = result.report
    assert report is not None
    assert containers_of(docker_client, report["run_id"]) == []
    if runtime == "runsc":
        # the host's OOM killer takes gVisor's whole sandbox (one process to the kernel): the
        # run ends failed and says why, never a success; the branch stays at the base (the
        # agent's commits lived in the sandbox's memory)
        assert result.code == 1, result.stderr
        assert report["status"] == "failed"
        assert "ran out of memory (--memory 512m)" in report["error"]
        assert report["head_commit"] == report["base_commit"]
        # what the gate counted is still known: it is the network companion's, outside
        assert report["meter"]["requests"] == len(fake_api.requests) >= 2
        return
    assert "hog=137" in tool_outputs(fake_api)[1]
    assert any("ran out of memory (--memory 512m)" in w for w in report["warnings"])
    assert result.code == 0, result.stderr
    assert git(repo, "show", "hog:kept.txt") == "kept\n"


def test_an_agent_killed_for_memory_fails_with_a_clear_status(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    fake_api.add_turns(Turn.text("never reached"))
    result = run_cli(
        ["--task", "start", "--branch", "tiny", "--memory", "48m"], cwd=repo, env=run_env()
    )
    report = result.report
    assert report is not None
    assert result.code == 1, result.stderr
    assert report["status"] == "failed"
    assert "ran out of memory (--memory 48m)" in report["error"]
    assert containers_of(docker_client, report["run_id"]) == []


def test_a_process_flood_hits_the_pids_limit_and_the_run_goes_on(
    repo: Path,
    fake_api: Any,
    run_env: Callable[..., dict[str, str]],
    docker_client: Any,
    runtime: str,
) -> None:
    """Under gVisor the engine's pids limit would kill the whole sandbox (to the host it is one
    process tree): there gVisor's own kernel holds the agent user's processes (RLIMIT_NPROC).
    This flood (each process left by a subshell that ends) still kills the 2022 gVisor's
    sandbox under its ptrace platform: the run then ends failed, saying so, never a success
    (a plain flood is held: test_gvisor.py)."""
    flood = (
        "echo kept > kept.txt && git add kept.txt && git commit -qm 'Keep'; "
        "for i in $(seq 1 400); do (tail -f /dev/null &) 2>/dev/null; done; "
        "ps -u agent --no-headers | wc -l"
    )
    fake_api.add_turns(Turn.tool_use(bash(flood)), Turn.text("flooded"))
    result = run_cli(
        ["--task", "fork a lot", "--branch", "flood", "--pids-limit", "128"],
        cwd=repo,
        env=run_env(**runtime_env(runtime)),
        timeout=300,
    )
    report = result.report
    assert report is not None
    assert containers_of(docker_client, report["run_id"]) == []
    if runtime == "runsc" and result.code != 0:
        assert result.code == 1, result.stderr
        assert report["status"] == "failed"
        assert report["error"]
        return
    # Claude Code itself needs threads, which count against the limit: it may die of the flood
    # (a failed run that says so) or live through it (a success); either way the run ends.
    if result.code == 0:
        count = int(tool_outputs(fake_api)[0].strip().splitlines()[-1])
        assert count < 128
    else:
        assert result.code == 1, result.stderr
        assert report["status"] == "failed"
        assert "killed by SIG" in report["error"] or "exit status" in report["error"]
    assert git(repo, "show", "flood:kept.txt") == "kept\n"
    assert containers_of(docker_client, report["run_id"]) == []
    # the host is fine: it can still start processes and run git
    assert git(repo, "status", "--porcelain") == ""


def test_docker_refusing_the_container_leaves_a_report_and_no_branch(
    repo: Path, fake_api: Any, run_env: Callable[..., dict[str, str]], docker_client: Any
) -> None:
    result = run_cli(
        ["--task", "t", "--branch", "refused", "--cpus", "512"], cwd=repo, env=run_env()
    )
    assert result.code == 3
    report = result.report
    assert report is not None
    assert report["status"] == "error"
    assert "Docker refused to create the agent container" in report["error"]
    assert "CPUs" in report["error"]
    assert git(repo, "branch", "--list", "refused") == ""
    run_dir = Path(report["run_dir"])
    assert (run_dir / "report.json").is_file()
    assert containers_of(docker_client, report["run_id"]) == []
    assert (
        "agent-worker: error: Docker refused" in result.stderr or "Docker refused" in result.stderr
    )
