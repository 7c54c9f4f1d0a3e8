"""Real projects with an environment file, for the tests of per-project images: a Python project
(pytest from PyPI in setup) and a Node project (npm install in setup), each with a failing test,
and a devcontainer.json project. The same files give the same layer tags, so the integration and
end-to-end tests share their builds."""

from __future__ import annotations

from pathlib import Path

from conftest import make_repo

PATH = "/workspace/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PYTHON_ENV = f"""# What the agent needs to run this project's tests.
apt = ["python3", "python3-venv"]
setup_inputs = ["requirements.txt"]
setup = [
  "python3 -m venv .venv",
  ".venv/bin/pip install --disable-pip-version-check -q -r requirements.txt",
]
check = "python -m pytest -q"

[env]
PATH = "{PATH}"
VIRTUAL_ENV = "/workspace/.venv"
"""

PYTHON_FILES = {
    ".agent-worker/environment.toml": PYTHON_ENV,
    # .venv is deliberately not ignored: the run keeps it out of the agent's commits itself
    ".gitignore": "__pycache__/\n.pytest_cache/\n",
    "requirements.txt": "pytest==8.3.4\n",
    "calc.py": "def add(a, b):\n    return a - b\n",
    "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
}

NODE_ENV = """apt = ["nodejs", "npm"]
setup_inputs = ["package.json"]
setup = ["npm install --no-audit --no-fund"]
check = "npm test"
"""

NODE_FILES = {
    ".agent-worker/environment.toml": NODE_ENV,
    ".gitignore": "node_modules/\n",
    "package.json": (
        '{"name": "pad-demo", "version": "1.0.0", "private": true,\n'
        ' "scripts": {"test": "node --test"},\n'
        ' "dependencies": {"left-pad": "1.3.0"}}\n'
    ),
    "pad.js": "const leftPad = require('left-pad');\n"
    "exports.pad = (text, width) => leftPad(text, width, ' ');\n",
    "test/pad.test.js": "const test = require('node:test');\n"
    "const assert = require('node:assert');\n"
    "const { pad } = require('../pad.js');\n\n"
    "test('pads with zeros', () => assert.strictEqual(pad('7', 3), '007'));\n",
}


def python_project(path: Path) -> Path:
    return make_repo(path, dict(PYTHON_FILES))


def node_project(path: Path) -> Path:
    return make_repo(path, dict(NODE_FILES))


def devcontainer_project(path: Path, base_image: str) -> Path:
    devcontainer = f"""{{
  // the project's dev container, as editors use it
  "name": "demo",
  "image": "{base_image}",
  "features": {{"ghcr.io/devcontainers/features/node:1": {{}}}},
  "onCreateCommand": "echo made-by-onCreate > prepared.txt",
  "updateContentCommand": ["sh", "-c", "echo made-by-update >> prepared.txt"],
  "postCreateCommand": "echo post-create",
  "containerEnv": {{"GREETING": "hello from containerEnv"}},
}}
"""
    return make_repo(
        path,
        {".devcontainer/devcontainer.json": devcontainer, "README.md": "# demo\n"},
    )


# A Python package as many are today: pyproject.toml alone (setuptools, its version read from
# the package, a README and a LICENSE in its metadata), a src layout, its tests needing pytest.
# `pip install -e .` reads all of those: setup_inputs names them, the package by a pattern.
SRC_LAYOUT_ENV = f"""apt = ["python3", "python3-venv"]
setup_inputs = ["pyproject.toml", "README*", "LICENSE*", "src/*/__init__.py"]
setup = [
  "python3 -m venv /workspace/.venv",
  "/workspace/.venv/bin/pip install --disable-pip-version-check -q -e '.[test]'",
]
check = "python -m pytest -q"

[env]
PATH = "{PATH}"
VIRTUAL_ENV = "/workspace/.venv"
"""

SRC_LAYOUT_FILES = {
    ".agent-worker/environment.toml": SRC_LAYOUT_ENV,
    ".gitignore": "__pycache__/\n.pytest_cache/\n*.egg-info/\n",
    "pyproject.toml": """[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "tally"
dynamic = ["version"]
readme = "README.rst"
license = {file = "LICENSE"}
requires-python = ">=3.9"

[project.optional-dependencies]
test = ["pytest==8.3.4"]

[tool.setuptools.dynamic]
version = {attr = "tally.__version__"}
""",
    "README.rst": "tally\n=====\n\nCounts things.\n",
    "LICENSE": "MIT License\n\nCopyright (c) 2026 tally's authors\n",
    "src/tally/__init__.py": '"""Counting."""\n\n__version__ = "1.2.0"\n',
    "src/tally/core.py": "def total(items):\n    return sum(items)\n",
    "tests/test_core.py": "import tally\nfrom tally.core import total\n\n\n"
    "def test_total():\n    assert total([1, 2, 3]) == 6\n\n\n"
    "def test_version():\n    assert tally.__version__ == '1.2.0'\n",
}


def src_layout_project(path: Path) -> Path:
    return make_repo(path, dict(SRC_LAYOUT_FILES))
