"""Where tasks run: the backends, by name.

Each backend has a module here (BACKENDS: engines/<name>/entry.py, or a backend's one module)
which imports nothing heavy (it serves --help) and says
- HELP: what it is, for --backend's help;
- OPTIONS: its own options (Option), which --help lists and .env files may set;
- settings(get, workspace): those options read and checked (UsageError saying what is wrong),
  as plain strings the run carries (Config.backend_settings);
- connect(docker_host, settings): the Backend (base.py), reached and checked.

A new backend (Kubernetes Jobs, say) is a new module (or package) and one line in BACKENDS.
The rest of the package never names a backend: it sees the Backend protocol (base.py), the
container protocol (channel.py), the sandbox profile (profile.py), and the labels that let any
run sweep up after another (sweep.py)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol, cast

from agent_worker_app.errors import UsageError

if TYPE_CHECKING:
    from agent_worker_app.engines.base import Backend

BACKENDS = {
    "docker": "agent_worker_app.engines.docker.entry",
    "swarm": "agent_worker_app.engines.swarm.entry",
}
DEFAULT = "docker"


class Option(NamedTuple):
    """One of a backend's own options: its flag, metavar and help, and the variable that sets
    it from the environment or a .env file."""

    flag: str
    metavar: str
    help: str
    variable: str

    @property
    def key(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


# An option's raw text (None: not given) and where it came from ("--registry", a variable in a
# file), as config.py reads every option.
Getter = Callable[[str], tuple[str | None, str]]


class Entry(Protocol):
    """What a backend's package says of itself (see the module's docstring)."""

    HELP: str
    OPTIONS: tuple[Option, ...]

    def settings(self, get: Getter, workspace: str) -> dict[str, str]: ...

    def connect(self, docker_host: str | None, settings: Mapping[str, str]) -> Backend: ...


def entry(name: str) -> Entry:
    return cast("Entry", importlib.import_module(BACKENDS[name]))


def choose(text: str, source: str) -> str:
    """The backend named by text; UsageError naming the known ones otherwise."""
    name = text.strip()
    if name not in BACKENDS:
        raise UsageError(f"{source} must be {' or '.join(BACKENDS)}, got {text!r}")
    return name


def options() -> list[Option]:
    """Every backend's own options, in the order of BACKENDS."""
    return [option for name in BACKENDS for option in entry(name).OPTIONS]


def help_text() -> str:
    """--backend's help: each backend with what it is."""
    return "Where tasks run: " + "; ".join(f"{n}, {entry(n).HELP}" for n in BACKENDS) + "."


def connect(name: str, docker_host: str | None, settings: Mapping[str, str]) -> Backend:
    return entry(name).connect(docker_host, settings)
