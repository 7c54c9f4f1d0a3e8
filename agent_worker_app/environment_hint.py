"""With no environment file, the obvious said: a repository that is plainly a Python, Node, Go or
Rust project (its top holds pyproject.toml, package.json, go.mod, Cargo.toml, ...) gets the
environment file that would give the agent its toolchain, as a suggestion to read, change and
commit. Nothing here is applied: a run without a file stays one without. Pure: the caller says
which of MARKERS the commit has."""

from __future__ import annotations

from dataclasses import dataclass

PATH_LINE = (
    'PATH = "/workspace/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"'
)
MARKERS = (
    "pyproject.toml",
    "setup.py",
    "requirements.txt",
    "package.json",
    "package-lock.json",
    "go.mod",
    "go.sum",
    "Cargo.toml",
    "Cargo.lock",
)


@dataclass(frozen=True)
class Hint:
    kind: str  # Python, Node, Go, Rust
    marker: str  # the file that says so
    text: str  # the suggested .agent-worker/environment.toml


def detect(present: set[str] | frozenset[str]) -> Hint | None:
    """The suggestion for a commit whose top holds these files, or None."""
    if "pyproject.toml" in present or "setup.py" in present:
        marker = "pyproject.toml" if "pyproject.toml" in present else "setup.py"
        return Hint("Python", marker, _python_package(marker))
    if "requirements.txt" in present:
        return Hint("Python", "requirements.txt", _python_requirements())
    if "package.json" in present:
        return Hint("Node", "package.json", _node("package-lock.json" in present))
    if "go.mod" in present:
        return Hint("Go", "go.mod", _go("go.sum" in present))
    if "Cargo.toml" in present:
        return Hint("Rust", "Cargo.toml", _rust("Cargo.lock" in present))
    return None


def note(hint: Hint) -> str:
    """One line for a run without an environment file."""
    return (
        f"no environment file, and this looks like a {hint.kind} project ({hint.marker}): "
        "the agent gets no toolchain of its own; `agent-worker --try-environment` prints a "
        "suggested .agent-worker/environment.toml"
    )


def _python_package(marker: str) -> str:
    return f"""apt = ["python3", "python3-venv"]
# what the build reads to install the package: add "README*", "LICENSE*", the file its
# version comes from ("src/*/__init__.py"); never the whole source
setup_inputs = ["{marker}"]
setup = [
  "python3 -m venv /workspace/.venv",
  "/workspace/.venv/bin/pip install -e . pytest",
]
check = "python -m pytest -q"

[env]
{PATH_LINE}
VIRTUAL_ENV = "/workspace/.venv"
"""


def _python_requirements() -> str:
    return f"""apt = ["python3", "python3-venv"]
setup_inputs = ["requirements.txt"]
setup = [
  "python3 -m venv /workspace/.venv",
  "/workspace/.venv/bin/pip install -r requirements.txt",
]
check = "python -m pytest -q"

[env]
{PATH_LINE}
VIRTUAL_ENV = "/workspace/.venv"
"""


def _node(lockfile: bool) -> str:
    inputs = '["package.json", "package-lock.json"]' if lockfile else '["package.json"]'
    install = "npm ci" if lockfile else "npm install"
    return f"""# Debian's Node 18; a newer one: base_image = "node:22-bookworm" instead of apt
apt = ["nodejs", "npm"]
setup_inputs = {inputs}
setup = ["{install} --no-audit --no-fund"]
check = "npm test"
"""


def _go(sums: bool) -> str:
    inputs = '["go.mod", "go.sum"]' if sums else '["go.mod"]'
    return f"""# Debian's Go 1.19; a newer one: base_image = "golang:1.22-bookworm" instead of apt
apt = ["golang-go", "gcc"]
setup_inputs = {inputs}
setup = ["go mod download"]
check = "go test ./..."

[env]
GOTOOLCHAIN = "local"
"""


def _rust(lockfile: bool) -> str:
    inputs = '["Cargo.toml", "Cargo.lock"]' if lockfile else '["Cargo.toml"]'
    return f"""# Debian's Rust 1.63; a newer one: base_image = "rust:1-bookworm" instead of apt
apt = ["cargo"]
setup_inputs = {inputs}
# cargo fetch needs a target: an empty one, gone before the clone brings the real ones
setup = ["mkdir -p src && touch src/lib.rs && cargo fetch && rm src/lib.rs"]
check = "cargo test --offline"
"""
