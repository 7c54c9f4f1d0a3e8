"""GitHub Actions' files as its runner reads them, for tests of what agent-worker writes."""

from __future__ import annotations

import re


def read_github_output(text: str) -> dict[str, str]:
    """The runner's reading of a GITHUB_OUTPUT file (actions/runner's file commands): lines end
    at LF or CR LF; `name=value` when '=' comes before any '<<', else `name<<DELIM`, lines,
    `DELIM`, the lines joined with LF."""
    found: dict[str, str] = {}
    lines = re.split("\r?\n", text)
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        eq, heredoc = line.find("="), line.find("<<")
        if eq >= 0 and (heredoc < 0 or eq < heredoc):
            found[line[:eq]] = line[eq + 1 :]
            continue
        assert heredoc > 0, f"not a GITHUB_OUTPUT line: {line!r}"
        name, delimiter = line[:heredoc], line[heredoc + 2 :]
        body = []
        while lines[i] != delimiter:
            body.append(lines[i])
            i += 1
        i += 1
        found[name] = "\n".join(body)
    return found
