"""`setup_inputs` as paths and patterns: what setup may read of the base commit. A plain entry
names one file; an entry with `*`, `?` or `[...]` is a pattern matched against every file of
the commit (`*` and `?` stay within one folder, `**` spans any number of them, `[...]` is a
character class), so that `src/*/__init__.py` or `README*` brings what a package's build reads
and nothing more: the environment layer is rebuilt when one of the matched files changes (or a
file starts or stops matching), never for any other change. Pure: the caller lists the
commit's files."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from agent_worker_app.errors import UsageError

_SPECIAL = frozenset("*?[")


def is_pattern(entry: str) -> bool:
    return any(char in _SPECIAL for char in entry)


@lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if pattern.startswith("**/", i):
            parts.append("(?:[^/]+/)*")  # any number of folders, none included
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif char == "*":
            parts.append("[^/]*")
            i += 1
        elif char == "?":
            parts.append("[^/]")
            i += 1
        elif char == "[" and (end := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1 : end]
            negated = body.startswith("!")
            body = body[1:] if negated else body
            escaped = body.replace("\\", "\\\\").replace("^", "\\^")
            parts.append(f"[{'^' if negated else ''}{escaped}]")
            i = end + 1
        else:
            parts.append(re.escape(char))
            i += 1
    return re.compile("".join(parts))


def matches(pattern: str, path: str) -> bool:
    """Whether a repository path matches a setup_inputs pattern (a plain entry: the path)."""
    if not is_pattern(pattern):
        return pattern == path
    return _regex(pattern).fullmatch(path) is not None


def select(entries: Iterable[str], files: Iterable[str], *, source: str, commit: str) -> list[str]:
    """The files of the commit the entries name, in order, each once. A pattern that matches
    no file is a UsageError (a typo would otherwise leave setup without what it needs);
    plain entries are left to the caller, who reads them (and says when one is missing)."""
    listed = list(files)
    chosen: dict[str, None] = {}
    for entry in entries:
        if not is_pattern(entry):
            chosen[entry] = None
            continue
        found = [path for path in listed if matches(entry, path)]
        if not found:
            raise UsageError(
                f"{source}: setup_inputs: the pattern {entry} matches no file of the commit "
                f"{commit[:12]} the environment is read from (commit the files, or correct it)"
            )
        chosen.update(dict.fromkeys(found))
    return list(chosen)
