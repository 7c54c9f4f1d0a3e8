"""The command line's option table and the variables behind it: all --help needs, and cheap
to import (config.py, which validates and resolves them, is loaded only for a run)."""

from __future__ import annotations

from collections.abc import Mapping

from agent_worker_app import engines

# Option name -> the variable that sets it from the environment or a .env file. Only these keys
# are ever read from a .env file, and nothing from it is forwarded wholesale to the container.
# A project's own .env (in the current directory) belongs to the project: only keys with this
# prefix are read from it, so its DEBUG or ANTHROPIC_API_KEY never becomes agent-worker's.
PROJECT_PREFIX = "AGENT_WORKER_"
ENV_KEYS: Mapping[str, str] = {
    "project": "PROJECT_PATH",
    "agent_type": "AGENT_TYPE",
    "auth": "AGENT_WORKER_AUTH",
    "timezone": "TZ",
    "timeout": "AGENT_TIMEOUT",
    "remote_docker": "DOCKER_HOST",
    "backend": "AGENT_WORKER_BACKEND",
    # and each backend's own options' variables (engines.options()), added below
    "base_image": "AGENT_WORKER_BASE_IMAGE",
    "ca_cert": "AGENT_WORKER_CA_CERT",
    "debug": "AGENT_WORKER_DEBUG",
    "git_identity": "AGENT_WORKER_GIT_IDENTITY",
    "workspace": "AGENT_WORKER_WORKSPACE",
    "allow_host": "AGENT_WORKER_ALLOW_HOSTS",
    "setup_allow_net": "AGENT_WORKER_SETUP_ALLOW_NET",
    "check": "AGENT_WORKER_CHECK",
    "memory": "AGENT_WORKER_MEMORY",
    "cpus": "AGENT_WORKER_CPUS",
    "pids_limit": "AGENT_WORKER_PIDS_LIMIT",
    "max_result_size": "AGENT_WORKER_MAX_RESULT_SIZE",
    "max_log_size": "AGENT_WORKER_MAX_LOG_SIZE",
    "disk": "AGENT_WORKER_DISK",
    "jobs": "AGENT_WORKER_JOBS",
    "max_cost": "AGENT_WORKER_MAX_COST",
    "trust_environment": "AGENT_WORKER_TRUST_ENVIRONMENT",
    "push_ci": "AGENT_WORKER_PUSH_CI",
    "runtime": "AGENT_WORKER_RUNTIME",
} | {option.key: option.variable for option in engines.options()}

# Options that may be given several times (click's multiple=True).
REPEATABLE = frozenset(
    {"task", "project", "ca_cert", "allow_host", "setup_allow_net", "agent_arg", "maintenance"}
)


# (option, metavar (None: a flag), help, default shown in --help); the variable that also sets
# an option is ENV_KEYS's, so the help and the loader cannot disagree.
OPTIONS: list[tuple[str, str | None, str, str | None]] = [
    ("--task", "TEXT", "What the agent should do; repeatable (one run each).", None),
    ("--task-file", "PATH", "Read the task from a file (- for stdin).", None),
    (
        "--tasks-file",
        "PATH",
        "Several tasks: one a line, or JSON Lines with task and optional branch, project, "
        "agent_type.",
        None,
    ),
    (
        "--project",
        "PATH",
        "The git repository to work on; repeatable (each task runs on each).",
        "current directory",
    ),
    (
        "--branch",
        "NAME",
        "Branch to create for the work (several tasks: NAME-1, NAME-2, ...).",
        "agent-task-YYYYmmdd-HHMMSS",
    ),
    ("--jobs", "N", "Run this many tasks at once.", "1"),
    (
        "--max-cost",
        "USD",
        "Stop a task whose cost passes USD; with several tasks, start none once the finished "
        "ones have spent it.",
        "no limit",
    ),
    (
        "--continue",
        "BRANCH|RUN",
        "A new task on an agent branch, on top of its last commit, resuming the agent's "
        "session where it can.",
        None,
    ),
    ("--agent-type", "NAME", "Agent backend (see --list-agents).", "claude"),
    ("--list-agents", None, "List the agent types, where each comes from, what it needs.", None),
    ("--list-runs", None, "List this repository's past runs, newest first (--json too).", None),
    (
        "--recover",
        None,
        "Only bring back the work of this repository's runs whose agent-worker is gone.",
        None,
    ),
    (
        "--agent-arg",
        "ARG",
        "Pass ARG to the agent's command line, verbatim; repeatable.",
        None,
    ),
    (
        "--api-key",
        "KEY",
        "The agent's credential; visible in the process list: prefer its variable.",
        None,
    ),
    (
        "--auth",
        "METHOD",
        "Which credential to use when several are set (claude: api-key, oauth-token, auth-token).",
        "the one that is set",
    ),
    ("--base-url", "URL", "API base URL (the agent's variable: ANTHROPIC_BASE_URL...).", None),
    ("--model", "NAME", "Model for the agent (claude: ANTHROPIC_MODEL).", "the agent's default"),
    ("--max-turns", "N", "Turn limit (claude: AGENT_MAX_TURNS).", "unlimited"),
    (
        "--agent-version",
        "V",
        "The agent's version in the image (claude: CLAUDE_CODE_VERSION).",
        "its pin",
    ),
    ("--timezone", "TZ", "Time zone inside the container.", "host's zone, else UTC"),
    ("--timeout", "SECONDS", "Stop the agent after this long (also 30m, 2h).", "3600"),
    ("--remote-docker", "URL", "Docker engine: tcp://, ssh:// or unix://.", "local engine"),
    ("--backend", "|".join(engines.BACKENDS), engines.help_text(), engines.DEFAULT),
    *((option.flag, option.metavar, option.help, None) for option in engines.options()),
    (
        "--base-image",
        "IMAGE",
        "Base of the agent image, when the project's environment names none.",
        "debian:bookworm-slim",
    ),
    (
        "--environment",
        "PATH",
        "The project's environment file (TOML, or devcontainer JSON for .json) instead of "
        ".agent-worker/environment.toml or .devcontainer/devcontainer.json of the base commit.",
        None,
    ),
    ("--no-environment", None, "Ignore the project's environment file.", None),
    (
        "--try-environment",
        None,
        "Try the project's environment at HEAD without an agent or a credential: build its "
        "image, run its maintenance and check, say how long each step took; keeps no branch.",
        None,
    ),
    (
        "--trust-environment",
        None,
        "Apply the project's environment file whole (its allowed hosts, base image or "
        "Dockerfile, and variables that redirect credentials, loaders, shells or proxies), and "
        "remember this content as trusted.",
        None,
    ),
    (
        "--ca-cert",
        "PATH",
        "Extra CA certificate (PEM) to trust, e.g. a corporate proxy's; "
        "repeatable; the variable takes a ':'-separated list.",
        None,
    ),
    ("--force-rebuild", None, "Rebuild the agent image, without cache.", None),
    (
        "--push",
        "[REMOTE]",
        "After a successful run, push the branch to REMOTE (a name, URL or path) with your own "
        "git credentials; a failed push is a warning.",
        "the branch's upstream remote, else origin",
    ),
    (
        "--push-ci",
        None,
        "Let --push start the remote's CI for the branch (its pipeline runs the agent's CI "
        "files); without it the push carries the push option ci.skip.",
        None,
    ),
    (
        "--pr",
        None,
        "After a successful run, push the branch (as --push) and open a draft pull request "
        "into the branch the run started from, the report as its body (GitHub: GITHUB_TOKEN, "
        "GH_TOKEN or gh; GitLab: push options).",
        None,
    ),
    ("--pr-on-failure", None, "With --pr: also for a failed run that left commits.", None),
    ("--pr-base", "BRANCH", "With --pr: the branch the pull request goes into.", None),
    (
        "--pr-provider",
        "github|gitlab",
        "With --pr: the forge of a host of your own (github.com and gitlab.com are known).",
        "from the remote's host",
    ),
    (
        "--attempts",
        "N",
        "Make N attempts at the task, each on its own branch (NAME-a1...), run under --jobs; "
        "the winner: the check passed, then the smaller change, then the lower cost.",
        "1",
    ),
    (
        "--keep",
        "all|winner",
        "With --attempts: delete the branches of all but the winner (winner), or keep them.",
        "all",
    ),
    ("--json", None, "Print the report as JSON on stdout.", None),
    ("--report-file", "PATH", "Also write the JSON report to PATH.", None),
    ("--git-identity", "agent|user", "Commit as agent-worker or as your git identity.", "agent"),
    (
        "--workspace",
        "auto|mount|copy",
        "Copy a pack of the branch's history in (auto, copy), or share the repository's "
        "objects read-only (mount: the agent can read every object, other branches' too).",
        "auto",
    ),
    (
        "--allow-host",
        "HOST[:PORT]",
        "Let the agent reach this host too, or a preset's hosts (@pypi, @npm...); repeatable; "
        "the variable takes a comma-separated list.",
        None,
    ),
    ("--list-presets", None, "List the --allow-host presets and the hosts of each.", None),
    (
        "--setup-allow-net",
        "CIDR",
        "Let the environment's setup commands reach this private, loopback or link-local "
        "address or network (closed to them otherwise); repeatable.",
        None,
    ),
    (
        "--maintenance",
        "CMD",
        "Run this shell command in the container after the clone, before the agent, as the "
        "agent user behind the firewall; repeatable; a failure stops the run.",
        "the environment file's",
    ),
    (
        "--check",
        "CMD",
        "Run this shell command after the agent, in the same container; the run succeeds "
        "only if it passes.",
        "the environment file's",
    ),
    ("--no-firewall", None, "Let the agent reach any address.", None),
    (
        "--runtime",
        "NAME",
        "The engine's runtime for the agent's container (runsc: gVisor); see --list-runtimes.",
        "the engine's default",
    ),
    ("--list-runtimes", None, "List the Docker engine's runtimes, its default marked.", None),
    ("--memory", "SIZE", "Memory limit, /workspace (a tmpfs) included.", "4g"),
    ("--cpus", "N", "CPU limit.", "all"),
    ("--pids-limit", "N", "Process limit.", "1024"),
    (
        "--disk",
        "SIZE",
        "Limit on the container's own files outside /workspace (home, /tmp, setup's paths).",
        "10g",
    ),
    (
        "--max-result-size",
        "SIZE",
        "Stop reading the container's result (its commits' bundle, session files) past SIZE: "
        "the run fails, keeping what came whole.",
        "1g",
    ),
    (
        "--max-log-size",
        "SIZE",
        "Stop writing each of the run's logs (the agent's output, the container's, the "
        "build's) past SIZE; the run goes on.",
        "256m",
    ),
    ("--debug", None, "Log every step to stderr.", None),
    (
        "--env-file",
        "PATH",
        "Read settings from this file instead of ~/.config/agent-worker/.env "
        "and ./.env (whose AGENT_WORKER_* keys only are read).",
        None,
    ),
]
