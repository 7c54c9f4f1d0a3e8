"""Whether the user trusts a project's environment file. A repository describes what the project
needs; the parts of its file that widen the sandbox or redirect what the agent's processes talk
to (allowed hosts, the base image or Dockerfile, and variables that redirect credentials, API
endpoints, loaders, shells, proxies or TLS trust) apply only with the user's say:
--trust-environment (AGENT_WORKER_TRUST_ENVIRONMENT=1, from a CI job's definition or the user's
own settings, never the project's .env), which also records the approval for that file's
content outside the repository; a later run with the same content is trusted, a change of the
file revokes it. A file the user names (--environment PATH) is the user's own. Everything else
in the file (packages, setup, maintenance, the check, plain variables) applies either way."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from agent_worker_app.config import user_env_file
from agent_worker_app.environment import Environment

TRUST_FILE = "trusted-environments.json"  # in the user's agent-worker settings directory
# Variables a project's file sets only with trust (names compared case-insensitively).
UNTRUSTED_VARIABLE = re.compile(
    r"(?:ANTHROPIC|CLAUDE|OPENAI|CODEX|AWS|GOOGLE|AZURE|VERTEX)_\w*|\w*_PROXY|LD_\w*|DYLD_\w*"
    r"|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PROMPT_COMMAND|NODE_OPTIONS|NODE_EXTRA_CA_CERTS"
    r"|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE|GIT_SSL_CAINFO|PIP_CERT"
    r"|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|PERL5OPT|RUBYOPT|PYTHONSTARTUP|GLIBC_TUNABLES|GCONV_PATH",
    re.IGNORECASE,
)


def needing_trust(env: Environment) -> list[str]:
    """What of the file applies only with trust, as the warning names it."""
    parts = []
    if env.allow_hosts:
        parts.append(f"allow_hosts ({', '.join(env.allow_hosts)})")
    if env.base_image:
        parts.append(f"base_image ({env.base_image})")
    if env.dockerfile:
        parts.append(f"dockerfile ({env.dockerfile})")
    names = sorted(name for name in env.env if UNTRUSTED_VARIABLE.fullmatch(name))
    if names:
        parts.append(f"env {', '.join(names)}")
    return parts


def without_trust(env: Environment) -> Environment:
    """The file's parts that apply without trust."""
    return dataclasses.replace(
        env,
        allow_hosts=(),
        base_image=None,
        dockerfile=None,
        context=".",
        env={k: v for k, v in env.env.items() if not UNTRUSTED_VARIABLE.fullmatch(k)},
    )


def _store(settings_dir: Path) -> Path:
    return settings_dir / TRUST_FILE


def _key(project: Path, env: Environment) -> str:
    return f"{project}\0{env.source}"


def recorded(settings_dir: Path, project: Path, env: Environment) -> bool:
    """Whether the user trusted this file's content in this project before."""
    try:
        data = json.loads(_store(settings_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get(_key(project, env)) == env.digest


def record(settings_dir: Path, project: Path, env: Environment) -> None:
    """The user's approval of this file's content in this project, kept outside it."""
    path = _store(settings_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    data[_key(project, env)] = env.digest
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    partial.chmod(0o600)
    partial.replace(path)


def decide(
    env: Environment,
    *,
    project: Path,
    settings_dir: Path,
    trust_flag: bool,
    named_by_user: bool,
) -> Environment:
    """The environment to apply: whole when trusted (the flag records it), else without the
    parts that need trust, with a warning saying what was not applied and how to trust it."""
    parts = needing_trust(env)
    if not parts or named_by_user:
        return env
    if trust_flag:
        record(settings_dir, project, env)
        return env
    if recorded(settings_dir, project, env):
        return env
    note = (
        f"{env.source}: not applied without your trust: {'; '.join(parts)}; the rest of it "
        "applies. To trust this file's content (recorded outside the repository; a change of "
        "the file revokes it): --trust-environment, or AGENT_WORKER_TRUST_ENVIRONMENT=1 in a "
        "CI job"
    )
    return dataclasses.replace(without_trust(env), warnings=(*env.warnings, note))


def settings_dir(environ: Mapping[str, str]) -> Path:
    """The user's agent-worker settings directory (where the user's .env lives)."""
    return user_env_file(environ).parent
