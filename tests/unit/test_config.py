"""config.load(): layering, .env handling and validation, each bad value with its message."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent_worker_app import config
from agent_worker_app.errors import UsageError

CERT = Path("/usr/local/share/ca-certificates")
DEFAULT_KEY = "sk-ant-default-0123456789"


def load(
    tmp_path: Path,
    cli: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    tool_dir: Path | None = None,
    key: bool = True,
    **kw: Any,
) -> config.Config:
    options: dict[str, Any] = {"task": "do it"} | (cli or {})
    # the user's settings file of the test, never the machine's own; a key unless one is given
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg-config")} | (environ or {})
    if key:
        environ.setdefault("ANTHROPIC_API_KEY", DEFAULT_KEY)
    return config.load(options, environ=environ, cwd=tmp_path, tool_dir=tool_dir, **kw)


def user_settings(tmp_path: Path, text: str) -> Path:
    """The test's ~/.config/agent-worker/.env."""
    path = tmp_path / "xdg-config" / "agent-worker" / ".env"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, now=datetime(2026, 11, 24, 10, 15, 0))
    assert cfg.project == tmp_path.resolve()
    assert cfg.branch == "agent-task-20261124-101500"
    assert not cfg.branch_given
    assert cfg.agent_type == "claude"
    assert cfg.timeout_s == 3600
    assert cfg.base_image == "debian:bookworm-slim"
    assert cfg.agent.values == {"CLAUDE_CODE_VERSION": "2.1.331"}
    assert cfg.memory_bytes == 4 * 1024**3
    assert cfg.pids_limit == 1024
    assert cfg.cpus is None
    assert cfg.firewall
    assert cfg.workspace == "auto"
    assert cfg.git_identity == "agent"
    assert cfg.agent.secret == DEFAULT_KEY
    assert cfg.agent.credential is not None
    assert cfg.agent.credential.variable == "ANTHROPIC_API_KEY"


def test_command_line_beats_environment_beats_dotenv_beats_default(tmp_path: Path) -> None:
    settings = user_settings(
        tmp_path, "AGENT_TIMEOUT=30\nAGENT_MAX_TURNS=7\nANTHROPIC_MODEL=m-env\n"
    )
    cfg = load(tmp_path, {"timeout": "10"}, {"AGENT_TIMEOUT": "20", "ANTHROPIC_MODEL": "m-var"})
    assert cfg.timeout_s == 10
    assert cfg.agent.get("ANTHROPIC_MODEL") == "m-var"
    assert cfg.agent.get("AGENT_MAX_TURNS") == "7"
    cfg = load(tmp_path, {}, {"AGENT_TIMEOUT": "20"})
    assert cfg.timeout_s == 20
    cfg = load(tmp_path)
    assert cfg.timeout_s == 30
    assert cfg.env_files == (settings.resolve(),)


def test_the_projects_own_dotenv_is_read_only_for_prefixed_keys(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "DEBUG=express:*\nANTHROPIC_API_KEY=the-projects-own-key\nAGENT_TIMEOUT=later\n"
        "AGENT_WORKER_DEBUG=1\nAGENT_WORKER_CHECK=make test\n"
    )
    user_settings(tmp_path, "AGENT_WORKER_CHECK=pytest\nANTHROPIC_API_KEY=sk-ant-usersown1\n")
    cfg = load(tmp_path, key=False)
    assert cfg.agent.secret == "sk-ant-usersown1"  # the user's, never the project's
    assert cfg.timeout_s == 3600
    assert cfg.check == "pytest"  # the user's settings win over the project's
    assert cfg.debug  # a harmless setting of the project's own applies
    assert cfg.warnings == ()


HOSTILE_DOTENV = {
    "AGENT_WORKER_ALLOW_HOSTS": "collector.example",
    "AGENT_WORKER_BASE_IMAGE": "evil/image",
    "AGENT_WORKER_CA_CERT": "/tmp/evil.crt",
    "AGENT_WORKER_MEMORY": "64g",
    "AGENT_WORKER_PIDS_LIMIT": "100000",
    "AGENT_WORKER_WORKSPACE": "mount",
    "AGENT_WORKER_GIT_IDENTITY": "user",
    "AGENT_WORKER_AUTH": "oauth-token",
    "AGENT_WORKER_BACKEND": "swarm",
    "AGENT_WORKER_PUSH_CI": "1",
    "AGENT_WORKER_SETUP_ALLOW_NET": "169.254.169.254",
    "AGENT_WORKER_MAX_RESULT_SIZE": "1t",
    "AGENT_WORKER_MAX_LOG_SIZE": "1t",
    "AGENT_WORKER_DISK": "1t",
}


def test_a_projects_dotenv_cannot_widen_the_sandbox_or_change_the_image(tmp_path: Path) -> None:
    """The attack: a repository's ./.env sets what would open egress, change the image, the CA
    files, the limits, the workspace mode, the identity, the credential or the engine. None of it
    applies, each says so, and the run's settings are the defaults."""
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in HOSTILE_DOTENV.items()))
    cfg = load(tmp_path)
    default = load(tmp_path, {"no_environment": True})
    for name in (
        *("allow_hosts", "setup_allow", "base_image", "ca_certs", "memory_bytes", "pids_limit"),
        *("max_result_bytes", "max_log_bytes", "disk_bytes"),
    ):
        assert getattr(cfg, name) == getattr(default, name), name
    assert (cfg.workspace, cfg.git_identity, cfg.backend) == ("auto", "agent", "docker")
    assert not cfg.push_ci  # the agent's CI files never run with the job's secrets on its say
    assert len(cfg.warnings) == len(HOSTILE_DOTENV)
    for key, warning in zip(HOSTILE_DOTENV, cfg.warnings, strict=True):
        assert f"{key} ignored: a project's .env cannot set it" in warning
    # without the attack, the same settings from the user's own file apply
    user_settings(
        tmp_path,
        "AGENT_WORKER_MEMORY=1g\nAGENT_WORKER_ALLOW_HOSTS=pypi.org\nAGENT_WORKER_PUSH_CI=1\n",
    )
    (tmp_path / ".env").unlink()
    mine = load(tmp_path)
    assert mine.memory_bytes == 1024**3
    assert mine.allow_hosts == ("pypi.org",)
    assert mine.push_ci


def test_push_ci_is_off_unless_the_user_asks(tmp_path: Path) -> None:
    assert not load(tmp_path, {"push": ""}).push_ci
    assert load(tmp_path, {"push": "", "push_ci": True}).push_ci
    assert load(tmp_path, {"push": ""}, {"AGENT_WORKER_PUSH_CI": "true"}).push_ci
    with pytest.raises(UsageError, match="AGENT_WORKER_PUSH_CI"):
        load(tmp_path, {"push": ""}, {"AGENT_WORKER_PUSH_CI": "maybe"})


def test_no_environment_ignores_the_projects_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AGENT_WORKER_CHECK=make test\nAGENT_WORKER_MEMORY=64g\n")
    cfg = load(tmp_path, {"no_environment": True})
    assert cfg.check is None
    assert cfg.warnings == ()
    assert cfg.env_files == ()


def test_project_path_expands_the_home_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "src" / "p").mkdir(parents=True)
    import os

    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        assert load(tmp_path, {"project": "~/src/p"}).project == (home / "src" / "p").resolve()
        cfg = load(tmp_path, {}, {"PROJECT_PATH": "~/src/p"})
        assert cfg.project == (home / "src" / "p").resolve()
    finally:
        if old is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = old


def test_every_variable_in_the_table_is_read(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    environ = {
        "PROJECT_PATH": str(project),
        "AGENT_TYPE": "claude",
        "ANTHROPIC_API_KEY": "sk-ant-xyz12345",
        "ANTHROPIC_BASE_URL": "http://10.0.0.1:8080/",
        "ANTHROPIC_MODEL": "claude-x",
        "AGENT_MAX_TURNS": "12",
        "TZ": "Europe/Paris",
        "AGENT_TIMEOUT": "90m",
        "DOCKER_HOST": "tcp://10.0.0.2:2375",
        "AGENT_WORKER_BASE_IMAGE": "mine:1",
        "CLAUDE_CODE_VERSION": "2.0.0",
        "AGENT_WORKER_DEBUG": "1",
        "AGENT_WORKER_GIT_IDENTITY": "user",
        "AGENT_WORKER_WORKSPACE": "copy",
        "AGENT_WORKER_ALLOW_HOSTS": "pypi.org, github.com:443",
        "AGENT_WORKER_MEMORY": "512m",
        "AGENT_WORKER_CPUS": "1.5",
        "AGENT_WORKER_PIDS_LIMIT": "64",
    }
    cfg = load(tmp_path, {}, environ)
    assert cfg.project == project.resolve()
    assert cfg.agent.secret == "sk-ant-xyz12345"
    assert cfg.agent.get("ANTHROPIC_BASE_URL") == "http://10.0.0.1:8080"
    assert cfg.agent.get("ANTHROPIC_MODEL") == "claude-x"
    assert cfg.agent.get("AGENT_MAX_TURNS") == "12"
    assert cfg.timezone == "Europe/Paris"
    assert cfg.timeout_s == 5400
    assert cfg.docker_host == "tcp://10.0.0.2:2375"
    assert cfg.base_image == "mine:1"
    assert cfg.agent.get("CLAUDE_CODE_VERSION") == "2.0.0"
    assert cfg.debug
    assert cfg.git_identity == "user"
    assert cfg.workspace == "copy"
    assert cfg.allow_hosts == ("pypi.org", "github.com:443")
    assert cfg.memory_bytes == 512 * 1024**2
    assert cfg.cpus == 1.5
    assert cfg.pids_limit == 64


def test_dotenv_reads_only_known_keys(tmp_path: Path) -> None:
    user_settings(tmp_path, "ANTHROPIC_API_KEY=sk-ant-fromfile1\nAWS_SECRET=nope\n")
    cfg = load(tmp_path, key=False)
    assert cfg.agent.secret == "sk-ant-fromfile1"
    assert "nope" not in repr(cfg)
    assert "AWS_SECRET" not in repr(cfg)


def test_user_settings_win_over_the_tool_directory(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.mkdir()
    (tool / ".env").write_text("AGENT_TIMEOUT=11\nAGENT_MAX_TURNS=3\nAGENT_WORKER_CPUS=3\n")
    user_settings(tmp_path, "AGENT_TIMEOUT=22\nAGENT_WORKER_CPUS=2\n")
    (tmp_path / ".env").write_text("AGENT_WORKER_CPUS=1\n")
    cfg = load(tmp_path, tool_dir=tool)
    assert cfg.timeout_s == 22
    assert cfg.agent.get("AGENT_MAX_TURNS") == "3"
    assert cfg.cpus == 2  # the user's; the project's .env cannot set limits


def test_env_file_option_replaces_the_default_files(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AGENT_TIMEOUT=22\n")
    other = tmp_path / "other.env"
    other.write_text("AGENT_MAX_TURNS=4\n")
    cfg = load(tmp_path, {"env_file": str(other)})
    assert cfg.timeout_s == 3600
    assert cfg.agent.get("AGENT_MAX_TURNS") == "4"
    with pytest.raises(UsageError, match=r"--env-file: .*missing.env is not a readable file"):
        load(tmp_path, {"env_file": str(tmp_path / "missing.env")})


def test_api_key_on_the_command_line_warns(tmp_path: Path) -> None:
    cfg = load(tmp_path, {"api_key": "sk-ant-cli123456"}, {"ANTHROPIC_API_KEY": "sk-ant-env"})
    assert cfg.agent.secret == "sk-ant-cli123456"
    assert any("process list" in w and "ANTHROPIC_API_KEY" in w for w in cfg.warnings)
    assert load(tmp_path, {}, {"ANTHROPIC_API_KEY": "sk-ant-env"}).warnings == ()


def test_agent_plugins_bring_their_own_variables(tmp_path: Path) -> None:
    from agent_worker_app.agents.base_agent import BaseAgent, Credential, OutputParser, Setting

    class Other(BaseAgent):
        name = "other"
        credentials = (Credential("OTHER_KEY", "key", "its key"),)
        settings = (Setting("OTHER_MODEL", "model", "small", option="model"),)

        def command(self) -> list[str]:
            return ["other"]

        def parser(self) -> OutputParser:
            raise NotImplementedError

    user_settings(tmp_path, "OTHER_KEY=from-dotenv\n")
    cfg = load(tmp_path, {"agent_type": "other"}, agent_class=lambda name: Other)
    assert cfg.agent.secret == "from-dotenv"
    assert cfg.agent.values == {"OTHER_MODEL": "small"}
    cfg = load(tmp_path, {"agent_type": "other", "model": "big"}, agent_class=lambda name: Other)
    assert cfg.agent.values == {"OTHER_MODEL": "big"}
    with pytest.raises(UsageError, match="--max-turns: the other agent has no such setting"):
        load(tmp_path, {"agent_type": "other", "max_turns": "3"}, agent_class=lambda name: Other)


def test_the_command_agent_takes_no_credential(tmp_path: Path) -> None:
    cfg = load(tmp_path, {"agent_type": "command"}, key=False)
    assert cfg.agent.credential is None
    with pytest.raises(UsageError, match="the command agent takes no credential"):
        load(tmp_path, {"agent_type": "command", "api_key": "sk-ant-x-0123456789"})


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ({"timeout": "abc"}, "--timeout must be a positive number of seconds"),
        ({"timeout": "0"}, "--timeout must be a positive number of seconds, got '0'"),
        ({"timeout": "-1"}, "--timeout must be a positive number of seconds"),
        ({"max_turns": "0"}, "--max-turns must be a positive whole number"),
        ({"max_turns": "x"}, "--max-turns must be a positive whole number"),
        ({"remote_docker": "tcp://"}, "--remote-docker must be a tcp:// URL with a host"),
        ({"remote_docker": "foo://bar"}, "--remote-docker must be a URL starting with tcp://"),
        ({"remote_docker": "tcp://host:port"}, "--remote-docker must be a"),
        ({"remote_docker": "unix://"}, "unix:// followed by a socket path"),
        ({"base_url": "api.example.com"}, "--base-url must be a URL starting with http://"),
        ({"agent_type": "nope"}, "unknown agent type 'nope'; known: claude"),
        ({"memory": "lots"}, "--memory must be a size such as 512m or 4g"),
        ({"memory": "1m"}, "at least 6m"),
        ({"cpus": "0"}, "--cpus must be a positive number"),
        ({"pids_limit": "-5"}, "--pids-limit must be a positive whole number"),
        ({"git_identity": "me"}, "--git-identity must be agent or user"),
        ({"workspace": "nfs"}, "--workspace must be auto or mount or copy"),
        ({"allow_host": ("bad host!",)}, "--allow-host must be a HOST, HOST:PORT or @preset"),
        ({"allow_host": ("h:99999",)}, "--allow-host must be a HOST, HOST:PORT or @preset"),
        ({"timezone": "Mars/Olympus"}, "--timezone must be a time zone name"),
        ({"setup_allow_net": ("10.0.0.0/33",)}, "--setup-allow-net must be an address or network"),
        ({"setup_allow_net": ("metadata",)}, "--setup-allow-net must be an address or network"),
        ({"runtime": "run sc"}, "--runtime must be a runtime's name as the engine lists it"),
        ({"runtime": "--privileged"}, "--runtime must be a runtime's name as the engine lists it"),
        (
            {"runtime": "runsc", "backend": "swarm", "registry": "r:5000"},
            "--runtime: the swarm backend cannot choose a task's runtime",
        ),
        ({"allow_host": ("@pypy",)}, "--allow-host: unknown preset '@pypy' (known: @pypi"),
        ({"check": "  "}, "--check is empty: give a shell command"),
        ({"maintenance": ("true", "")}, "--maintenance is empty: give a shell command"),
        ({"task": "   \n"}, "the task is empty"),
        ({"task": None}, "exactly one of --task TEXT or --task-file PATH"),
        ({"task_file": "x"}, "exactly one of --task TEXT or --task-file PATH"),
        ({"project": "/nonexistent/dir"}, "--project: /nonexistent/dir does not exist"),
    ],
)
def test_bad_values_are_usage_errors(tmp_path: Path, cli: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=_escape(message)) as caught:
        load(tmp_path, cli)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_environment_values_are_named_by_their_variable(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="AGENT_TIMEOUT must be a positive number"):
        load(tmp_path, {}, {"AGENT_TIMEOUT": "soon"})
    user_settings(tmp_path, "AGENT_TIMEOUT=later\n")
    with pytest.raises(UsageError, match=r"AGENT_TIMEOUT in .*\.env must be a positive number"):
        load(tmp_path)


def test_task_file(tmp_path: Path) -> None:
    task = tmp_path / "task.md"
    task.write_text("Fix the tests\nplease\n", encoding="utf-8")
    assert load(tmp_path, {"task": None, "task_file": str(task)}).task == "Fix the tests\nplease\n"
    stdin = load(tmp_path, {"task": None, "task_file": "-"}, stdin_text=lambda: "from stdin")
    assert stdin.task == "from stdin"


def test_task_file_missing_or_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--task-file: cannot read .*: no such file or directory"):
        load(tmp_path, {"task": None, "task_file": str(tmp_path / "missing.md")})
    latin = tmp_path / "latin.md"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UsageError, match="not UTF-8 text"):
        load(tmp_path, {"task": None, "task_file": str(latin)})


def test_task_size_limit(tmp_path: Path) -> None:
    assert len(load(tmp_path, {"task": "x" * 200_000}).task) == 200_000
    with pytest.raises(
        UsageError, match="the task is 1,000,000 bytes, over the 524,288-byte limit"
    ):
        load(tmp_path, {"task": "x" * 1_000_000})


def test_ca_certificates(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("hello\n")
    with pytest.raises(UsageError, match="is not a PEM certificate"):
        load(tmp_path, {"ca_cert": (str(not_pem),)})
    broken = tmp_path / "broken.crt"
    broken.write_text("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
    with pytest.raises(UsageError, match="is not a PEM certificate"):
        load(tmp_path, {"ca_cert": (str(broken),)})
    with pytest.raises(UsageError, match=r"cannot read CA certificate .*no such file"):
        load(tmp_path, {"ca_cert": (str(tmp_path / "none.crt"),)})
    real = sorted(CERT.glob("*.crt"))
    if real:  # the machine's own CA files, where it has any, are accepted
        cfg = load(tmp_path, {}, {"AGENT_WORKER_CA_CERT": ":".join(map(str, real))})
        assert cfg.ca_certs == tuple(p.resolve() for p in real)


def test_durations_and_sizes() -> None:
    assert config.parse_duration("90", "x") == 90
    assert config.parse_duration("1.5m", "x") == 90
    assert config.parse_duration("2h", "x") == 7200
    assert config.parse_memory("4g", "x") == 4 * 1024**3
    assert config.parse_memory("1536M", "x") == 1536 * 1024**2


def test_the_api_key_never_shows_in_repr(tmp_path: Path) -> None:
    cfg = load(tmp_path, {}, {"ANTHROPIC_API_KEY": "sk-ant-verysecret99"})
    assert "verysecret" not in repr(cfg)


def test_presets_expand_to_exact_hosts_among_the_others(tmp_path: Path) -> None:
    cfg = load(tmp_path, {"allow_host": ("@pypi", "example.com:8080")})
    assert cfg.allow_hosts == ("pypi.org:443", "files.pythonhosted.org:443", "example.com:8080")
    cfg = load(tmp_path, {}, {"AGENT_WORKER_ALLOW_HOSTS": "@npm,@debian"})
    assert "registry.npmjs.org:443" in cfg.allow_hosts
    assert "deb.debian.org:80" in cfg.allow_hosts
    assert not any("*" in host or host.startswith("@") for host in cfg.allow_hosts)


def test_check_and_maintenance_from_the_command_line_and_the_variable(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    assert (cfg.maintenance, cfg.check, cfg.env) == ((), None, {})
    cfg = load(tmp_path, {"check": "pytest -q", "maintenance": ("npm ci", "make gen")})
    assert cfg.check == "pytest -q"
    assert cfg.maintenance == ("npm ci", "make gen")
    assert load(tmp_path, {}, {"AGENT_WORKER_CHECK": "make test"}).check == "make test"


def test_an_environment_file_fills_what_the_command_line_leaves(tmp_path: Path) -> None:
    base = load(tmp_path, {"allow_host": ("a.example",)})
    cfg = config.apply_environment(
        base,
        source="env.toml",
        maintenance=["npm ci"],
        check="npm test",
        allow_hosts=["@pypi"],
        env={"NODE_ENV": "test", "PATH": "/workspace/node_modules/.bin:/usr/bin:/bin"},
    )
    assert cfg.maintenance == ("npm ci",)
    assert cfg.check == "npm test"
    assert cfg.allow_hosts == ("pypi.org:443", "files.pythonhosted.org:443", "a.example")
    assert cfg.env["NODE_ENV"] == "test"
    given = load(tmp_path, {"check": "make check", "maintenance": ("make deps",)})
    cfg = config.apply_environment(given, source="env.toml", maintenance=["npm ci"], check="x")
    assert (cfg.maintenance, cfg.check) == (("make deps",), "make check")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"allow_hosts": ["@nope"]}, "env.toml: allow_hosts: unknown preset '@nope'"),
        ({"allow_hosts": ["a b"]}, "env.toml: allow_hosts must be a HOST, HOST:PORT or @preset"),
        ({"env": {"AW_BRANCH": "x"}}, "env.toml: env: AW_BRANCH is set by agent-worker itself"),
        ({"env": {"HOME": "/x"}}, "env.toml: env: HOME is set by agent-worker itself"),
        ({"env": {"1X": "x"}}, "env.toml: env: '1X' is not a variable name"),
        ({"env": {"X": 1}}, "env.toml: env: the value of X must be a string"),
        ({"env": {"X": "a\0b"}}, "env.toml: env: the value of X must be a string without NUL"),
        ({"check": ""}, "env.toml: check is empty"),
        ({"maintenance": ["ok", " "]}, "env.toml: maintenance is empty"),
    ],
)
def test_bad_environment_values_name_the_file_and_key(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=_escape(message)) as caught:
        config.apply_environment(load(tmp_path), source="env.toml", **values)
    assert caught.value.exit_code == 2


def test_the_backend_is_docker_unless_swarm_is_chosen_with_a_registry(tmp_path: Path) -> None:
    assert (load(tmp_path).backend, load(tmp_path).backend_settings) == ("docker", {})
    cfg = load(tmp_path, {"backend": "swarm", "registry": "registry.local:5000"})
    assert (cfg.backend, cfg.backend_settings) == ("swarm", {"registry": "registry.local:5000"})
    environ = {"AGENT_WORKER_BACKEND": "swarm", "AGENT_WORKER_REGISTRY": "10.0.0.5"}
    cfg = load(tmp_path, environ=environ)
    assert (cfg.backend, cfg.backend_settings) == ("swarm", {"registry": "10.0.0.5"})


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ({"backend": "kubernetes"}, "--backend must be docker or swarm, got 'kubernetes'"),
        ({"backend": "swarm"}, "--backend swarm needs --registry HOST[:PORT]"),
        ({"backend": "swarm", "registry": "http://r:5000"}, "--registry must be a registry's"),
        ({"backend": "swarm", "registry": "r:99999"}, "--registry must be a registry's"),
        (
            {"backend": "swarm", "registry": "r:5000", "workspace": "mount"},
            "--workspace mount: a swarm's nodes cannot mount this machine's files",
        ),
    ],
)
def test_a_bad_backend_setting_is_a_usage_error(
    tmp_path: Path, cli: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        load(tmp_path, cli)


def test_setup_may_be_allowed_networks_by_the_user(tmp_path: Path) -> None:
    cfg = load(tmp_path, {"setup_allow_net": ("10.1.2.3", "fd00::1/8")})
    assert cfg.setup_allow == ("10.1.2.3/32", "fd00::/8")
    user_settings(tmp_path, "AGENT_WORKER_SETUP_ALLOW_NET=192.168.1.0/24, 10.9.9.9\n")
    assert load(tmp_path).setup_allow == ("192.168.1.0/24", "10.9.9.9/32")
    assert load(tmp_path, {"no_environment": True}).setup_allow == (
        "192.168.1.0/24",
        "10.9.9.9/32",
    )


def test_a_runtime_is_the_users_choice(tmp_path: Path) -> None:
    assert load(tmp_path).runtime is None  # the engine's default
    assert load(tmp_path, {"runtime": " runsc "}).runtime == "runsc"
    assert load(tmp_path, environ={"AGENT_WORKER_RUNTIME": "kata"}).runtime == "kata"
    (tmp_path / ".env").write_text("AGENT_WORKER_RUNTIME=runc\n")  # a project's .env: never
    cfg = load(tmp_path)
    assert cfg.runtime is None
    assert any("AGENT_WORKER_RUNTIME ignored" in warning for warning in cfg.warnings)


def test_the_caps_have_defaults_and_take_sizes(tmp_path: Path) -> None:
    """--max-result-size, --max-log-size and --disk: documented defaults, sizes as --memory
    takes them, and a bad or tiny one refused naming the option."""
    cfg = load(tmp_path)
    assert (cfg.max_result_bytes, cfg.max_log_bytes, cfg.disk_bytes) == (
        1 << 30,
        256 << 20,
        10 << 30,
    )
    given = load(tmp_path, {"max_result_size": "2g", "max_log_size": "64k", "disk": "1.5g"})
    assert (given.max_result_bytes, given.max_log_bytes) == (2 << 30, 64 << 10)
    assert given.disk_bytes == int(1.5 * (1 << 30))
    for option, value in (("disk", "lots"), ("max_log_size", "1k"), ("max_result_size", "-1")):
        flag = "--" + option.replace("_", "-")
        with pytest.raises(UsageError, match=flag):
            load(tmp_path, {option: value})
