"""--allow-host presets: exact host names, unknown ones refused, --list-presets shows them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent_worker_app import presets
from agent_worker_app.errors import UsageError
from conftest import ROOT, clean_env, run_cli

HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?\.[a-z]+:\d+")


def test_every_preset_is_exact_hosts_with_ports() -> None:
    assert set(presets.PRESETS) == {"pypi", "npm", "crates", "go", "github", "debian"}
    for _about, hosts in presets.PRESETS.values():
        assert hosts
        for host in hosts:
            assert HOST.fullmatch(host), host  # no wildcard, no scheme, no path


def test_expand_keeps_order_and_plain_entries() -> None:
    assert presets.expand(["x.example", "@crates"], "--allow-host") == (
        "x.example",
        "crates.io:443",
        "index.crates.io:443",
        "static.crates.io:443",
    )


def test_an_unknown_preset_is_named() -> None:
    with pytest.raises(UsageError, match=r"--allow-host: unknown preset '@pip' \(known: @pypi"):
        presets.expand(["@pip"], "--allow-host")


def test_list_presets_prints_each_with_its_hosts(tmp_path: Path) -> None:
    result = run_cli(["--list-presets"], cwd=tmp_path, env=clean_env())
    assert result.code == 0, result.stderr
    assert result.stdout == presets.listing()
    for name, (_about, hosts) in presets.PRESETS.items():
        assert f"@{name}  " in result.stdout
        for host in hosts:
            assert f"    {host}\n" in result.stdout


def test_the_readme_table_matches_the_presets() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, (_about, hosts) in presets.PRESETS.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| `@{name}` |"))
        assert all(f"`{host}`" in row for host in hosts), row
