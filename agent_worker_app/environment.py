"""The project's environment: `.agent-worker/environment.toml`, or failing that a devcontainer.json,
read into one frozen Environment. Pure: the caller hands in a reader of the repository's files.

The files are read from the branch's base commit (what the agent gets), never from the working
tree: an uncommitted edit of the environment would otherwise build an image the agent's
checkout does not match. `--environment PATH` names a file on disk instead, read as it is.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from agent_worker_app.errors import UsageError

TOML_PATH = ".agent-worker/environment.toml"
DEVCONTAINER_PATHS = (".devcontainer/devcontainer.json", ".devcontainer.json")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_APT_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*(?:[:=][A-Za-z0-9+.:~-]+)?")


@dataclass(frozen=True)
class Environment:
    """What the agent needs to build and test the project. Paths are the repository's own
    (POSIX, relative to its top)."""

    source: str = ""  # where it came from, for messages ("" when there is none)
    base_image: str | None = None
    dockerfile: str | None = None  # builds the base instead of base_image
    context: str = "."  # the Dockerfile's build context
    apt: tuple[str, ...] = ()
    setup_inputs: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    maintenance: tuple[str, ...] = ()
    check: str | None = None
    allow_hosts: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    digest: str = ""  # sha256 of the file's text: what trusting it approves (trust.py)
    commit: str = ""  # the commit it was read from ("": a file given, or none)
    # with no file: which of environment_hint.MARKERS the commit's top holds (a suggestion's)
    markers: frozenset[str] = frozenset()

    @property
    def prepares_workspace(self) -> bool:
        """Setup leaves files where the clone goes (a .venv, node_modules)."""
        return bool(self.setup or self.setup_inputs)


NONE = Environment()

# ---------------------------------------------------------------- finding it

Reader = Callable[[str], bytes | None]  # a repository path -> its bytes, None when absent


def find(read: Reader) -> Environment:
    """The repository's environment: its environment.toml, else its devcontainer.json, else
    none."""
    data = read(TOML_PATH)
    if data is not None:
        return parse_toml(decode(data, TOML_PATH), TOML_PATH)
    for path in DEVCONTAINER_PATHS:
        data = read(path)
        if data is not None:
            return parse_devcontainer(decode(data, path), path)
    return NONE


def decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{source} is not UTF-8 text") from None


# ---------------------------------------------------------------- environment.toml

_TOML_KEYS = (
    "base_image",
    "dockerfile",
    "apt",
    "setup_inputs",
    "setup",
    "maintenance",
    "check",
    "allow_hosts",
    "env",
)


def parse_toml(text: str, source: str) -> Environment:
    """environment.toml: every key optional; an unknown key or a wrong type is a UsageError
    (exit 2) naming the key."""
    import tomllib  # here: most runs have no environment file

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source} is not valid TOML: {exc}") from None
    unknown = [key for key in data if key not in _TOML_KEYS]
    if unknown:
        raise UsageError(f"{source}: unknown key {unknown[0]!r} (known: {', '.join(_TOML_KEYS)})")
    if "base_image" in data and "dockerfile" in data:
        raise UsageError(f"{source}: give base_image or dockerfile, not both")
    dockerfile = _opt_str(data, "dockerfile", source)
    return Environment(
        digest=hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest(),
        source=source,
        base_image=_opt_str(data, "base_image", source),
        dockerfile=_repo_path(dockerfile, "dockerfile", source) if dockerfile else None,
        context=str(PurePosixPath(dockerfile).parent) if dockerfile else ".",
        apt=_apt(_str_list(data, "apt", source), source),
        setup_inputs=tuple(
            _repo_path(p, "setup_inputs", source) for p in _str_list(data, "setup_inputs", source)
        ),
        setup=_commands(data, "setup", source),
        maintenance=_commands(data, "maintenance", source),
        check=_opt_str(data, "check", source),
        allow_hosts=_str_list(data, "allow_hosts", source),
        env=_env(data.get("env", {}), "env", source),
    )


def _wrong(source: str, key: str, expected: str, value: Any) -> UsageError:
    return UsageError(f"{source}: {key} must be {expected}, got {type(value).__name__}")


def _opt_str(data: Mapping[str, Any], key: str, source: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _wrong(source, key, "a non-empty string", value)
    return value.strip()


def _str_list(data: Mapping[str, Any], key: str, source: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _wrong(source, key, "a list of non-empty strings", value)
    return tuple(v.strip() for v in value)


def _commands(data: Mapping[str, Any], key: str, source: str) -> tuple[str, ...]:
    return _str_list(data, key, source)


def _apt(names: tuple[str, ...], source: str) -> tuple[str, ...]:
    for name in names:
        if not _APT_NAME.fullmatch(name):
            raise UsageError(f"{source}: apt: {name!r} is not a Debian package name")
    return names


def _repo_path(path: str, key: str, source: str) -> str:
    """A path inside the repository, normalised; nothing outside it, nothing absolute."""
    return _relative(PurePosixPath("."), path, key, source)


def _env(value: Any, key: str, source: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _wrong(source, key, 'a table of NAME = "value"', value)
    env = {}
    for name, item in value.items():
        if not _NAME.fullmatch(name):
            raise UsageError(f"{source}: {key}: {name!r} is not a variable name")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise _wrong(source, f"{key}.{name}", "a string", item)
        if "\0" in str(item):
            raise UsageError(f"{source}: {key}.{name} holds a NUL character")
        env[name] = str(item)
    return env


# ---------------------------------------------------------------- devcontainer.json

# Keys that describe the editor or the host, not what the agent needs: ignored in silence.
_DEVCONTAINER_SILENT = {
    "name",
    "customizations",
    "extensions",
    "settings",
    "forwardPorts",
    "portsAttributes",
    "otherPortsAttributes",
    "updateRemoteUserUID",
    "shutdownAction",
    "waitFor",
    "userEnvProbe",
    "hostRequirements",
    "$schema",
}
_DEVCONTAINER_USED = {
    "image",
    "build",
    "dockerFile",
    "context",
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "containerEnv",
    "remoteEnv",
}


def parse_devcontainer(text: str, source: str, *, folder: str | None = None) -> Environment:
    """devcontainer.json (comments and trailing commas allowed): image or build.dockerfile and
    build.context, onCreateCommand + updateContentCommand as setup, postCreateCommand as
    maintenance, containerEnv (and remoteEnv) as env; features and every other key agent-worker
    cannot honour are a warning naming them. Its paths are relative to folder (by default the
    file's own, in the repository)."""
    try:
        data = json.loads(strip_jsonc(text))
    except ValueError as exc:
        raise UsageError(f"{source} is not valid JSON (comments allowed): {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a JSON object")
    base = PurePosixPath(source).parent if folder is None else PurePosixPath(folder)
    unsupported = sorted(k for k in data if k not in _DEVCONTAINER_USED | _DEVCONTAINER_SILENT)
    warnings = []
    if unsupported:
        warnings.append(
            f"{source}: not supported, ignored: {', '.join(unsupported)}"
            + (
                " (install what the features give with setup commands)"
                if "features" in data
                else ""
            )
        )
    build = data.get("build", {})
    if not isinstance(build, dict):
        raise _wrong(source, "build", "an object", build)
    dockerfile = build.get("dockerfile", data.get("dockerFile"))
    context = build.get("context", data.get("context", "."))
    image = data.get("image")
    if dockerfile is not None and not isinstance(dockerfile, str):
        raise _wrong(source, "build.dockerfile", "a string", dockerfile)
    if not isinstance(context, str):
        raise _wrong(source, "build.context", "a string", context)
    if image is not None and not isinstance(image, str):
        raise _wrong(source, "image", "a string", image)
    env = _env(data.get("remoteEnv") or {}, "remoteEnv", source)
    env |= _env(data.get("containerEnv") or {}, "containerEnv", source)
    return Environment(
        digest=hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest(),
        source=source,
        base_image=None if dockerfile else (image or None),
        dockerfile=_relative(base, dockerfile, "build.dockerfile", source) if dockerfile else None,
        context=_relative(base, context, "build.context", source, allow_top=True),
        setup=(
            *lifecycle(data.get("onCreateCommand"), "onCreateCommand", source),
            *lifecycle(data.get("updateContentCommand"), "updateContentCommand", source),
        ),
        maintenance=lifecycle(data.get("postCreateCommand"), "postCreateCommand", source),
        env=env,
        warnings=tuple(warnings),
    )


def _relative(
    folder: PurePosixPath, path: str, key: str, source: str, *, allow_top: bool = False
) -> str:
    """A devcontainer path (relative to the file's folder) as a repository path."""
    parts: list[str] = []
    for part in (folder / path).parts:
        if part == "..":
            if not parts:
                raise UsageError(f"{source}: {key}: {path!r} leaves the repository")
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    if path.startswith("/") or (not parts and not allow_top):
        raise UsageError(f"{source}: {key}: {path!r} is not a path inside the repository")
    return "/".join(parts) or "."


def lifecycle(value: Any, key: str, source: str) -> tuple[str, ...]:
    """A devcontainer lifecycle command as shell commands: a string (run by /bin/sh), an array
    (one command, no shell: quoted here), or an object of named commands (the spec runs them
    in parallel; here one after the other, in the file's order)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if isinstance(value, list):
        if not value or not all(isinstance(v, str) for v in value):
            raise _wrong(source, key, "a string, an array of strings or an object", value)
        return (shlex.join(value),)
    if isinstance(value, dict):
        commands: list[str] = []
        for name, item in value.items():
            commands.extend(lifecycle(item, f"{key}.{name}", source))
        return tuple(commands)
    raise _wrong(source, key, "a string, an array of strings or an object", value)


def strip_jsonc(text: str) -> str:
    """JSON with comments (// and /* */) and trailing commas, as plain JSON; strings kept."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            i = end + 1
        elif text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif char in "]}":
            # a trailing comma before it (whitespace between) is dropped
            j = len(out) - 1
            while j >= 0 and out[j].isspace():
                j -= 1
            if j >= 0 and out[j] == ",":
                del out[j]
            out.append(char)
            i += 1
        else:
            out.append(char)
            i += 1
    return "".join(out)
