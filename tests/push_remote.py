"""A bare repository that writes down the push options each push sent it, as a GitLab
server would get them (GIT_PUSH_OPTION_COUNT and GIT_PUSH_OPTION_<i> in its pre-receive hook)."""

from __future__ import annotations

from pathlib import Path

from conftest import git

# A server's pre-receive hook that writes down the push options it was sent, one a line
# (quoted through the eval: an option with spaces stays one line)
RECORD_OPTIONS = """#!/bin/sh
i=0
while [ "$i" -lt "${GIT_PUSH_OPTION_COUNT:-0}" ]; do
    eval "printf '%s\\n' \\"\\$GIT_PUSH_OPTION_$i\\"" >> "$GIT_DIR/push-options"
    i=$((i + 1))
done
echo "${GIT_PUSH_OPTION_COUNT-unset}" >> "$GIT_DIR/push-option-counts"
"""


def recording_remote(path: Path, *, advertise: bool) -> Path:
    """A bare repository that records each push's options (and takes them only if advertise)."""
    git(path.parent, "init", "-q", "--bare", str(path))
    git(path, "config", "receive.advertisePushOptions", "true" if advertise else "false")
    hook = path / "hooks" / "pre-receive"
    hook.write_text(RECORD_OPTIONS)
    hook.chmod(0o755)
    return path


def sent(remote: Path) -> tuple[list[str], list[str]]:
    """(the push options the remote was sent, each push's GIT_PUSH_OPTION_COUNT)."""
    options, counts = remote / "push-options", remote / "push-option-counts"
    return (
        options.read_text().splitlines() if options.exists() else [],
        counts.read_text().splitlines() if counts.exists() else [],
    )
