"""The project's real wheel, built once per test run from a copy of its source tree.

Tests of what an installed (non-editable) xswarm ships - the built-in personas
inside the package, the man page and completions as data files - read this
wheel instead of each building their own (~5-7 s a build).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _copy_source_tree(destination: Path) -> Path:
    """The files a wheel is built from, without build litter or others' caches."""
    tree = destination / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "xswarm", tree / "xswarm", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "personas", tree / "personas", ignore=ignore)
    for data in ("man", "completions"):  # pyproject's data-files (tests/test_shell_docs.py)
        shutil.copytree(REPO / data, tree / data, ignore=ignore)
    return tree


@pytest.fixture(scope="session")
def xswarm_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The path of ``xswarm-*.whl``, built by pip from a copy of the tree."""
    directory = tmp_path_factory.mktemp("wheel")
    tree = _copy_source_tree(directory)
    out = directory / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "-q", "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = out.glob("xswarm-*.whl")
    return wheel
