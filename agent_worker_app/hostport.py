"""HOST or HOST:PORT, as an allowlist entry or a registry is written (stdlib only: a
backend's settings check it at --help's import cost)."""

from __future__ import annotations

import re

HOST_RE = re.compile(
    r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(\d{1,5}))?"
)


def valid(text: str) -> bool:
    """A host name or address in brackets, with a port from 1 to 65535 if any."""
    match = HOST_RE.fullmatch(text)
    if match is None:
        return False
    return not match.group(2) or 0 < int(match.group(2)) < 65536
