"""Config (frozen) and load(): command line > environment > .env file > defaults, validated."""

from __future__ import annotations

import base64
import os
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

from agent_worker_app import agents, engines, forge, hostport, presets
from agent_worker_app.agents.base_agent import AgentSettings, BaseAgent, Credential
from agent_worker_app.environment import NONE, Environment
from agent_worker_app.errors import UsageError

DEFAULT_BASE_IMAGE = "debian:bookworm-slim"
DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_MEMORY = "4g"
DEFAULT_PIDS_LIMIT = 1024
# The caps on what a run keeps and uses (README, "Limits"): the result the host reads back,
# each log it writes, and the container's own files outside /workspace.
DEFAULT_MAX_RESULT_SIZE = "1g"
DEFAULT_MAX_LOG_SIZE = "256m"
DEFAULT_DISK = "10g"
MAX_TASK_BYTES = 512 * 1024

# The option table lives in options.py, which --help imports without the rest of this module.
from agent_worker_app.options import ENV_KEYS, OPTIONS, PROJECT_PREFIX  # noqa: E402

__all__ = ["ENV_KEYS", "OPTIONS", "PROJECT_PREFIX", "Config", "load"]


@dataclass(frozen=True)
class Config:
    """Everything one run needs, resolved and validated."""

    project: Path
    task: str
    branch: str
    branch_given: bool
    agent_type: str
    agent: AgentSettings  # the agent's own settings, its credential and --agent-arg
    timezone: str
    timeout_s: float
    docker_host: str | None
    backend: str  # a name in engines.BACKENDS
    backend_settings: Mapping[str, str]  # its own options, checked (engines/<name>/__init__.py)
    base_image: str
    ca_certs: tuple[Path, ...]
    force_rebuild: bool
    json_output: bool
    report_file: Path | None
    debug: bool
    git_identity: str
    workspace: str
    allow_hosts: tuple[str, ...]
    setup_allow: tuple[str, ...]
    firewall: bool
    runtime: str | None
    memory: str
    memory_bytes: int
    cpus: float | None
    pids_limit: int
    max_result_bytes: int = 1 << 30  # --max-result-size
    max_log_bytes: int = 256 << 20  # --max-log-size: each log the run writes
    disk_bytes: int = 10 << 30  # --disk: the container's files outside /workspace
    jobs: int = 1  # tasks run at once (a batch)
    max_cost_usd: float | None = None  # per task, and a batch's budget
    env_files: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    # The project's runtime, from --maintenance/--check and the environment file
    # (apply_environment): commands run in each container, as the agent user, behind the
    # firewall: maintenance after the clone and before the agent, check after it.
    maintenance: tuple[str, ...] = ()
    check: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # plain variables for the agent
    push: str | None = None  # --push: None no push, "" the default remote, else that remote
    push_ci: bool = False  # --push-ci: the push may start the remote's CI (no ci.skip)
    pull_request: forge.Request | None = None  # --pr (which implies --push) and its options
    continue_from: str | None = None  # --continue: the agent branch (or run id) to continue
    # the project's environment (environment.py): --environment PATH, --no-environment, and
    # what the run read (project_image.load fills it in, and the values above)
    environment_file: Path | None = None
    no_environment: bool = False
    trust_environment: bool = False  # --trust-environment (trust.py)
    environment: Environment = NONE


@dataclass
class _Layers:
    cli: Mapping[str, Any]
    environ: Mapping[str, str]
    dotenv: dict[str, tuple[str, Path]]

    def get(self, name: str) -> tuple[str | None, str]:
        """The raw value of an option and a label naming where it came from."""
        key = ENV_KEYS.get(name)
        if key is None:
            value = self.cli.get(name)
            if value is not None and value != ():
                return _cli_text(value), "--" + name.replace("_", "-")
            return None, ""
        return self.variable(key, name)

    def variable(self, key: str, option: str | None) -> tuple[str | None, str]:
        """A variable: its option on the command line, the environment, then the settings files."""
        value = self.cli.get(option) if option is not None else None
        if value is not None and value != ():
            return _cli_text(value), "--" + str(option).replace("_", "-")
        if self.environ.get(key, "") != "":
            return self.environ[key], key
        if key in self.dotenv:
            text, path = self.dotenv[key]
            return text, f"{key} in {path}"
        return None, key


def _cli_text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


T = TypeVar("T")


def _parsed(layers: _Layers, name: str, parse: Callable[[str, str], T], default: T) -> T:
    text, source = layers.get(name)
    return default if text is None else parse(text, source)


def _bad(source: str, text: str, expected: str) -> UsageError:
    return UsageError(f"{source} must be {expected}, got {text!r}")


def parse_duration(text: str, source: str) -> float:
    """Seconds from '3600', '90s', '30m' or '2h'; positive."""
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not match:
        raise _bad(source, text, "a positive number of seconds (or with s, m, h)")
    seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if seconds <= 0:
        raise _bad(source, text, "a positive number of seconds")
    return seconds


def _positive_int(text: str, source: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text) or int(text) <= 0:
        raise _bad(source, text, "a positive whole number")
    return int(text)


def _positive_float(text: str, source: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise _bad(source, text, "a positive number")
    return value


def _usd(text: str, source: str) -> float:
    """A positive amount of US dollars: 5, 0.50 or $2.5."""
    try:
        value = float(text.strip().removeprefix("$"))
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise _bad(source, text, "a positive amount of US dollars, such as 5 or 0.50")
    return value


def _bool(text: str, source: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise _bad(source, text, "true or false")


def parse_memory(text: str, source: str) -> int:
    """Bytes from a Docker-style size: 512m, 4g, 1048576."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*", text.lower())
    if not match:
        raise _bad(source, text, "a size such as 512m or 4g")
    scale = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2)]
    size = int(float(match.group(1)) * scale)
    if size < 6 * 1024**2:
        raise _bad(source, text, "at least 6m (Docker's minimum)")
    return size


def parse_size(text: str, source: str) -> int:
    """Bytes from a size such as 64k, 512m, 2g or 1048576; at least 64k."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", text.lower())
    if not match:
        raise _bad(source, text, "a size such as 512m or 2g")
    scale = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[match.group(2)]
    size = int(float(match.group(1)) * scale)
    if size < 64 * 1024:
        raise _bad(source, text, "at least 64k")
    return size


def _size(layers: _Layers, name: str, default: str) -> int:
    text, source = layers.get(name)
    return parse_size(default if text is None else text, source)


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(text: str, source: str) -> str:
        if text not in choices:
            raise _bad(source, text, " or ".join(choices))
        return text

    return parse


def validate_url(text: str, source: str, schemes: tuple[str, ...]) -> str:
    """A URL with one of the schemes and a host (unix:// needs a path instead)."""
    try:
        parts = urlsplit(text.strip())
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        raise _bad(source, text, f"a {'/'.join(schemes)} URL") from None
    if parts.scheme not in schemes:
        raise _bad(source, text, "a URL starting with " + " or ".join(s + "://" for s in schemes))
    if parts.scheme in ("unix", "npipe"):
        if not parts.path:
            raise _bad(source, text, f"{parts.scheme}:// followed by a socket path")
    elif not parts.hostname:
        raise _bad(source, text, f"a {parts.scheme}:// URL with a host")
    return text.strip()


def parse_allow_hosts(text: str, source: str) -> tuple[str, ...]:
    """HOST[:PORT] entries and @presets, comma-separated; see allow_host_list."""
    return allow_host_list(text.split(","), source)


def allow_host_list(items: Iterable[str], source: str) -> tuple[str, ...]:
    """HOST[:PORT] entries, with each @preset expanded to its exact hosts (presets.py);
    duplicates are dropped later, with a warning. An unknown preset is an error naming it."""
    hosts: list[str] = []
    for item in (part.strip() for part in items):
        if not item:
            continue
        if item.startswith("@"):
            hosts.extend(presets.expand([item], source))
            continue
        if not hostport.valid(item):
            raise _bad(source, item, "a HOST, HOST:PORT or @preset")
        hosts.append(item)
    return tuple(hosts)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What agent-worker sets in the container itself: a project's variable cannot replace them.
RESERVED_ENV = frozenset(
    {
        "TZ",
        "HOME",
        "USER",
        "LOGNAME",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
    }
)


def validate_env(env: Mapping[str, object], source: str) -> dict[str, str]:
    """Plain variables for the agent: names of letters, digits and _, string values without
    NUL, none of agent-worker's own (AW_*, TZ, HOME, the git identity)."""
    checked = {}
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise UsageError(f"{source}: {name!r} is not a variable name (letters, digits, _)")
        if name.startswith("AW_") or name in RESERVED_ENV:
            raise UsageError(f"{source}: {name} is set by agent-worker itself; choose another name")
        if not isinstance(value, str) or "\0" in value:
            raise UsageError(f"{source}: the value of {name} must be a string without NUL bytes")
        checked[name] = value
    return checked


def _command(text: str, source: str) -> str:
    if not text.strip():
        raise UsageError(f"{source} is empty: give a shell command")
    if "\0" in text:
        raise UsageError(f"{source} contains a NUL byte")
    return text


def apply_environment(
    cfg: Config,
    *,
    source: str,
    maintenance: Iterable[str] = (),
    check: str | None = None,
    allow_hosts: Iterable[str] = (),
    env: Mapping[str, object] | None = None,
) -> Config:
    """The configuration with a project's environment file (named by source) applied, each
    value checked. The command line wins: --maintenance replaces the file's list, --check its
    check; --allow-host adds to its allow_hosts, which may use @presets too."""
    file_maintenance = tuple(_command(c, f"{source}: maintenance") for c in maintenance)
    return replace(
        cfg,
        maintenance=cfg.maintenance or file_maintenance,
        check=cfg.check
        if cfg.check is not None
        else (_command(check, f"{source}: check") if check is not None else None),
        allow_hosts=(*allow_host_list(allow_hosts, f"{source}: allow_hosts"), *cfg.allow_hosts),
        env=validate_env(env or {}, f"{source}: env") | cfg.env,
    )


def _pem_certificates(text: str, source: str) -> tuple[Path, ...]:
    paths = []
    for item in (p for p in text.replace(",", os.pathsep).split(os.pathsep) if p.strip()):
        path = Path(item.strip()).expanduser().resolve()
        try:
            data = path.read_text(encoding="ascii", errors="strict")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"{source}: cannot read CA certificate {path}: {_reason(exc)}"
            ) from None
        blocks = re.findall(
            r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", data, re.S
        )
        if not blocks or not all(_is_der_certificate(block) for block in blocks):
            raise UsageError(
                f"{source}: {path} is not a PEM certificate (expected BEGIN CERTIFICATE)"
            )
        paths.append(path)
    return tuple(dict.fromkeys(paths))


def _is_der_certificate(body: str) -> bool:
    """The base64 body of a PEM block decodes to an ASN.1 SEQUENCE (every X.509 certificate)."""
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except ValueError:
        return False
    return len(der) > 64 and der[0] == 0x30


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(exc)


def _timezone(text: str, source: str) -> str:
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _bad(source, text, "a time zone name such as Europe/Paris or UTC") from None
    return text


def host_timezone() -> str:
    """The host's zone name (/etc/timezone or the /etc/localtime link), else UTC."""
    try:
        name = Path("/etc/timezone").read_text(encoding="utf-8").strip()
        if name:
            return name
    except OSError:
        pass
    target = os.path.realpath("/etc/localtime")
    if "/zoneinfo/" in target:
        return target.split("/zoneinfo/", 1)[1]
    return "UTC"


def read_task(task: str | None, task_file: str | None, stdin_text: Callable[[], str]) -> str:
    """The task text from --task or --task-file (- for stdin); non-empty, UTF-8, bounded."""
    if (task is None) == (task_file is None):
        raise UsageError("give the task with exactly one of --task TEXT or --task-file PATH")
    if task_file is not None:
        try:
            if task_file == "-":
                task = stdin_text()
            else:
                task = Path(task_file).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--task-file: cannot read {task_file}: {_reason(exc)}") from None
    assert task is not None
    size = len(task.encode("utf-8", "surrogateescape"))
    if not task.strip():
        raise UsageError("the task is empty: say what the agent should do")
    if size > MAX_TASK_BYTES:
        raise UsageError(
            f"the task is {size:,} bytes, over the {MAX_TASK_BYTES:,}-byte limit: "
            "put the material in a file in the repository and refer to it in the task"
        )
    return task


# What a project's own .env may set: nothing that widens the sandbox (hosts, limits, firewall,
# workspace mode) or chooses the image, engine, CA files, credential or git identity.
PROJECT_DOTENV_KEYS = frozenset(
    {"AGENT_WORKER_CHECK", "AGENT_WORKER_DEBUG", "AGENT_WORKER_JOBS", "AGENT_WORKER_MAX_COST"}
)


def _dotenv_layer(
    files: list[tuple[Path, bool]],
) -> tuple[dict[str, tuple[str, Path]], list[str]]:
    """Every key of the files (the first file that has a key wins: the project's comes last);
    from a project's file (flag True) only PROJECT_DOTENV_KEYS, and a warning for each other
    agent-worker setting it tries."""
    layer: dict[str, tuple[str, Path]] = {}
    warnings: list[str] = []
    if not files:
        return layer, warnings
    from dotenv import dotenv_values

    for path, project_file in files:
        for key, value in dotenv_values(path).items():
            if project_file and key not in PROJECT_DOTENV_KEYS:
                if key.startswith(PROJECT_PREFIX):
                    warnings.append(
                        f"{path}: {key} ignored: a project's .env cannot set it (set it in "
                        "the environment or ~/.config/agent-worker/.env)"
                    )
                continue
            if value is not None and key not in layer:
                layer[key] = (value, path)
    return layer, warnings


def user_env_file(environ: Mapping[str, str]) -> Path:
    """The user's own settings: $XDG_CONFIG_HOME/agent-worker/.env (~/.config by default)."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "agent-worker" / ".env"


def _env_files(
    cli: Mapping[str, Any], cwd: Path, tool_dir: Path | None, environ: Mapping[str, str]
) -> list[tuple[Path, bool]]:
    """(file, is the project's own) in precedence order: the user's own settings first, the
    project's ./.env last (and not at all with --no-environment)."""
    env_file = cli.get("env_file")
    if env_file is not None:
        path = Path(env_file).expanduser()
        if not path.is_file():
            raise UsageError(f"--env-file: {path} is not a readable file")
        return [(path.resolve(), False)]
    found = [(user_env_file(environ), False)]
    if tool_dir is not None and tool_dir.resolve() != cwd.resolve():
        found.append((tool_dir / ".env", False))
    if not cli.get("no_environment"):
        found.append((cwd / ".env", True))
    return [(p.resolve(), project) for p, project in found if p.is_file()]


def load(
    cli: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    cwd: Path,
    tool_dir: Path | None = None,
    agent_class: Callable[[str], type[BaseAgent]] | None = None,
    stdin_text: Callable[[], str] = lambda: "",
    now: datetime | None = None,
) -> Config:
    """Resolve every option from its layers and validate it; raises UsageError on bad values.

    agent_class(agent_type) gives the agent's class (its settings and credentials), and raises
    UsageError for an unknown agent type.
    """
    env_files = _env_files(cli, cwd, tool_dir, environ)
    dotenv, ignored = _dotenv_layer(env_files)
    layers = _Layers(cli, environ, dotenv)
    agent_type = _parsed(layers, "agent_type", lambda t, s: t.strip(), "claude")
    if agent_class is None:
        agent_class = agents.agent_class
    cls = agent_class(agent_type)

    project = _project(layers, cwd)

    agent, warnings = _agent_settings(cls, layers)
    task = read_task(cli.get("task"), cli.get("task_file"), stdin_text)
    branch = cli.get("branch") or (now or datetime.now()).strftime("agent-task-%Y%m%d-%H%M%S")
    memory = _parsed(layers, "memory", lambda t, s: t.strip().lower(), DEFAULT_MEMORY)
    docker_host = _docker_host(layers)
    workspace = _parsed(layers, "workspace", _choice("auto", "mount", "copy"), "auto")
    backend, backend_settings = _backend(layers, workspace)
    report_file = cli.get("report_file")
    return Config(
        project=project,
        task=task,
        branch=branch,
        branch_given=bool(cli.get("branch")),
        agent_type=agent_type,
        agent=agent,
        timezone=_parsed(layers, "timezone", _timezone, None) or host_timezone(),
        timeout_s=_parsed(layers, "timeout", parse_duration, DEFAULT_TIMEOUT_S),
        docker_host=docker_host,
        backend=backend,
        backend_settings=backend_settings,
        base_image=_parsed(layers, "base_image", lambda t, s: t.strip(), DEFAULT_BASE_IMAGE),
        ca_certs=_parsed(layers, "ca_cert", _pem_certificates, ()),
        force_rebuild=bool(cli.get("force_rebuild")),
        json_output=bool(cli.get("json_output")),
        report_file=Path(report_file).expanduser().resolve() if report_file else None,
        debug=_parsed(layers, "debug", _bool, False),
        git_identity=_parsed(layers, "git_identity", _choice("agent", "user"), "agent"),
        workspace=workspace,
        allow_hosts=_parsed(layers, "allow_host", parse_allow_hosts, ()),
        setup_allow=_parsed(layers, "setup_allow_net", _networks, ()),
        firewall=not cli.get("no_firewall"),
        runtime=_runtime(layers, backend),
        memory=memory,
        memory_bytes=parse_memory(memory, layers.get("memory")[1]),
        cpus=_parsed(layers, "cpus", _positive_float, None),
        pids_limit=_parsed(layers, "pids_limit", _positive_int, DEFAULT_PIDS_LIMIT),
        max_result_bytes=_size(layers, "max_result_size", DEFAULT_MAX_RESULT_SIZE),
        max_log_bytes=_size(layers, "max_log_size", DEFAULT_MAX_LOG_SIZE),
        disk_bytes=_size(layers, "disk", DEFAULT_DISK),
        jobs=_parsed(layers, "jobs", _positive_int, 1),
        max_cost_usd=agent.max_cost_usd,
        env_files=tuple(path for path, _ in env_files),
        warnings=(*ignored, *warnings),
        maintenance=tuple(_command(c, "--maintenance") for c in cli.get("maintenance") or ()),
        check=_parsed(layers, "check", _command, None),
        push=_push(cli.get("push")),
        push_ci=_parsed(layers, "push_ci", _bool, False),
        pull_request=forge.request(cli),
        continue_from=_continue_from(cli),
        environment_file=_environment_file(cli),
        no_environment=bool(cli.get("no_environment")),
        trust_environment=_parsed(layers, "trust_environment", _bool, False),
    )


def _runtime(layers: _Layers, backend: str) -> str | None:
    """--runtime: a name as the engine lists them; a swarm's services cannot choose one."""
    text, source = layers.get("runtime")
    if text is None or not text.strip():
        return None
    name = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise _bad(source, name, "a runtime's name as the engine lists it (runc, runsc)")
    if backend != "docker":
        raise UsageError(
            f"{source}: the {backend} backend cannot choose a task's runtime (a swarm service "
            "runs on its node's default runtime: set default-runtime in the nodes' daemon.json)"
        )
    return name


def _networks(text: str, source: str) -> tuple[str, ...]:
    """Addresses or networks (CIDR), comma-separated, as networks."""
    from ipaddress import ip_network

    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(str(ip_network(item, strict=False)))
        except ValueError:
            raise _bad(
                source, item, "an address or network (10.1.2.3, 10.0.0.0/8, fd00::/8)"
            ) from None
    return tuple(networks)


def _push(value: Any) -> str | None:
    if value is None:
        return None
    remote = str(value).strip()
    if remote.startswith("-"):
        raise UsageError(f"--push: {remote!r} is not a remote (a name, URL or path)")
    return remote


def _continue_from(cli: Mapping[str, Any]) -> str | None:
    value = cli.get("continue_from")
    if value is None:
        return None
    if cli.get("branch"):
        raise UsageError(
            "--continue and --branch: a continued run works on the branch it continues"
        )
    if not str(value).strip():
        raise UsageError("--continue needs an agent branch or a run id")
    return str(value).strip()


def _environment_file(cli: Mapping[str, Any]) -> Path | None:
    given = cli.get("environment")
    if given is None:
        return None
    if cli.get("no_environment"):
        raise UsageError("give --environment PATH or --no-environment, not both")
    path = Path(given).expanduser().resolve()
    if not path.is_file():
        raise UsageError(f"--environment: {path} is not a readable file")
    return path


class Location(NamedTuple):
    """Where a repository's runs ran: what --recover and --list-runs need, without a task."""

    project: Path
    docker_host: str | None
    backend: str
    backend_settings: Mapping[str, str]


def load_location(
    cli: Mapping[str, Any], *, environ: Mapping[str, str], cwd: Path, tool_dir: Path | None
) -> Location:
    """Only the project, the Docker engine and the backend with its settings (for --recover,
    which runs no task)."""
    env_files = _env_files(cli, cwd, tool_dir, environ)
    layers = _Layers(cli, environ, _dotenv_layer(env_files)[0])
    workspace = _parsed(layers, "workspace", _choice("auto", "mount", "copy"), "auto")
    return Location(_project(layers, cwd), _docker_host(layers), *_backend(layers, workspace))


def _backend(layers: _Layers, workspace: str) -> tuple[str, dict[str, str]]:
    """The backend (engines.BACKENDS) and its own settings, which it checks."""
    name = _parsed(layers, "backend", engines.choose, engines.DEFAULT)
    return name, engines.entry(name).settings(layers.get, workspace)


def _project(layers: _Layers, cwd: Path) -> Path:
    project_text, project_source = layers.get("project")
    project = (cwd / Path(project_text or ".").expanduser()).resolve()
    if not project.is_dir():
        what = "does not exist" if not project.exists() else "is not a directory"
        raise UsageError(f"{project_source or '--project'}: {project} {what}")
    return project


def _docker_host(layers: _Layers) -> str | None:
    return _parsed(
        layers,
        "remote_docker",
        lambda t, s: validate_url(t, s, ("tcp", "unix", "ssh", "http", "https", "npipe")),
        None,
    )


# The generic options an agent's Setting may stand behind, and how their values are checked.
AGENT_OPTIONS: Mapping[str, Callable[[str, str], str]] = {
    "base_url": lambda t, s: validate_url(t, s, ("http", "https")).rstrip("/"),
    "model": lambda t, s: t.strip(),
    "max_turns": lambda t, s: str(_positive_int(t, s)),
    "agent_version": lambda t, s: t.strip(),
}


def _agent_settings(cls: type[BaseAgent], layers: _Layers) -> tuple[AgentSettings, list[str]]:
    """The agent's variables, its one credential and --agent-arg, from the same layers."""
    offered = {s.option for s in cls.settings if s.option}
    for option in AGENT_OPTIONS:
        if layers.cli.get(option) is not None and option not in offered:
            flag = "--" + option.replace("_", "-")
            raise UsageError(f"{flag}: the {cls.name} agent has no such setting")
    values: dict[str, str] = {}
    for setting in cls.settings:
        text, source = layers.variable(setting.variable, setting.option)
        check = AGENT_OPTIONS.get(setting.option or "")
        if text is not None and check is not None:
            text = check(text, source)
        if text or setting.default:
            values[setting.variable] = text or setting.default or ""
    credential, secret, warnings = _credential(cls, layers)
    args = tuple(layers.cli.get("agent_arg") or ())
    max_cost = _parsed(layers, "max_cost", _usd, None)
    return AgentSettings(values, credential, secret, args, max_cost), warnings


def _credential(
    cls: type[BaseAgent], layers: _Layers
) -> tuple[Credential | None, str | None, list[str]]:
    """Exactly one of the agent's credentials: the one that is set, or the one --auth names.

    Several set and no --auth is an error: an API key silently winning over a subscription's
    token bills the wrong account.
    """
    creds = cls.credentials
    given = layers.cli.get("api_key")
    auth, auth_source = layers.get("auth")
    if not creds:
        if given or auth:
            raise UsageError(f"the {cls.name} agent takes no credential (--api-key, --auth)")
        return None, None, []
    methods = " | ".join(c.method for c in creds)
    chosen = None
    if auth:
        chosen = next((c for c in creds if c.method == auth.strip()), None)
        if chosen is None:
            raise UsageError(f"{auth_source} must be one of {methods} for {cls.name}, got {auth!r}")
    if given:
        chosen = chosen or creds[0]
        warning = (
            "--api-key is visible to other users in the process list; "
            f"set {chosen.variable} in the environment or a settings file instead"
        )
        return chosen, str(given), [warning]
    found = {c.variable: layers.variable(c.variable, None)[0] for c in creds}
    if chosen is not None:
        if not found[chosen.variable]:
            raise UsageError(f"{auth_source} {chosen.method}: {chosen.variable} is not set")
        return chosen, found[chosen.variable], []
    present = [c for c in creds if found[c.variable]]
    if not present:
        listed = ", ".join(c.variable for c in creds)
        raise UsageError(
            f"no credential for {cls.name}: set {listed if len(creds) == 1 else 'one of ' + listed}"
            " in the environment, in ~/.config/agent-worker/.env or in a file given with "
            "--env-file (a project's own .env is read only for AGENT_WORKER_* settings)"
        )
    if len(present) > 1:
        names = ", ".join(c.variable for c in present)
        raise UsageError(
            f"several credentials for {cls.name} are set ({names}): choose one with "
            f"--auth {methods} (or AGENT_WORKER_AUTH)"
        )
    return present[0], found[present[0].variable], []
