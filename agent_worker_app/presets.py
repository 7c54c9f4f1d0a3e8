"""Named groups of hosts for --allow-host and the environment file's allow_hosts: `@pypi`
expands to the exact host names pip needs, never a wildcard (the firewall resolves names to
addresses when the container starts, and a wildcard has no address)."""

from __future__ import annotations

from collections.abc import Mapping

from agent_worker_app.errors import UsageError

# name -> (what it is for, its HOST:PORT entries). Port 443 only where the tools use HTTPS.
PRESETS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "pypi": (
        "pip, uv, poetry: the Python Package Index",
        ("pypi.org:443", "files.pythonhosted.org:443"),
    ),
    "npm": (
        "npm, yarn, pnpm: the npm registry",
        ("registry.npmjs.org:443", "registry.yarnpkg.com:443"),
    ),
    "crates": (
        "cargo: crates.io, its sparse index and downloads",
        ("crates.io:443", "index.crates.io:443", "static.crates.io:443"),
    ),
    "go": (
        "go modules: the module proxy, the checksum database, and the storage the proxy "
        "redirects module downloads to",
        ("proxy.golang.org:443", "sum.golang.org:443", "storage.googleapis.com:443"),
    ),
    "github": (
        "git over HTTPS, the API, archives and raw files of GitHub",
        (
            "github.com:443",
            "api.github.com:443",
            "codeload.github.com:443",
            "objects.githubusercontent.com:443",
            "raw.githubusercontent.com:443",
        ),
    ),
    "debian": (
        "Debian's package mirrors (apt download over HTTP or HTTPS)",
        (
            "deb.debian.org:80",
            "deb.debian.org:443",
            "security.debian.org:80",
            "security.debian.org:443",
        ),
    ),
}


def expand(entries: tuple[str, ...] | list[str], source: str) -> tuple[str, ...]:
    """The entries with each @preset replaced by its hosts; an unknown preset is a UsageError
    naming it (exit 2)."""
    hosts: list[str] = []
    for entry in entries:
        if not entry.startswith("@"):
            hosts.append(entry)
            continue
        preset = PRESETS.get(entry[1:])
        if preset is None:
            known = ", ".join("@" + name for name in PRESETS)
            raise UsageError(
                f"{source}: unknown preset {entry!r} (known: {known}; --list-presets shows them)"
            )
        hosts.extend(preset[1])
    return tuple(hosts)


def listing() -> str:
    """--list-presets: each preset, what it is for and its hosts."""
    lines = []
    for name, (about, hosts) in PRESETS.items():
        lines.append(f"@{name}  {about}")
        lines.extend(f"    {host}" for host in hosts)
    return "\n".join(lines) + "\n"
