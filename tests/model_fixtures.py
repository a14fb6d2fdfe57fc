"""Fixtures giving tests the generated ``tiny-random`` models (a pytest plugin).

Generating takes about two seconds, so it happens once per test run into a
session directory; each test then gets the model linked into its own
``XSWARM_HOME`` cache, where ``resolve("tiny-random")`` and a CLI subprocess
(``xswarm ... --model tiny-random``) find it without regenerating. The
links are read-only by convention: a test that damages files copies them
first (see ``copy_model``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xswarm.models import ResolvedModel, generated_dir, resolve
from xswarm.models.tiny import generate

TINY_NAMES = ("tiny-random", "tiny-random-stt", "tiny-random-tts")


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session directory holding freshly generated ``tiny-random``, ``-stt`` and ``-tts``."""
    root = tmp_path_factory.mktemp("tiny-models")
    for name in TINY_NAMES:
        generate(name, root / name)
    return root


def _link(tiny_models_dir: Path, name: str) -> ResolvedModel:
    target = generated_dir(name)  # inside this test's XSWARM_HOME
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.symlink_to(tiny_models_dir / name, target_is_directory=True)
    return resolve(name)


@pytest.fixture
def tiny_random(tiny_models_dir: Path, isolated_home: Path) -> ResolvedModel:
    """``tiny-random`` (Moshi-shaped), resolvable by name in this test's home."""
    return _link(tiny_models_dir, "tiny-random")


@pytest.fixture
def tiny_random_stt(tiny_models_dir: Path, isolated_home: Path) -> ResolvedModel:
    """``tiny-random-stt`` (STT-shaped, text only), resolvable by name in this test's home."""
    return _link(tiny_models_dir, "tiny-random-stt")


@pytest.fixture
def tiny_random_tts(tiny_models_dir: Path, isolated_home: Path) -> ResolvedModel:
    """``tiny-random-tts`` (TTS-shaped, with voices), resolvable by name in this test's home."""
    return _link(tiny_models_dir, "tiny-random-tts")


def copy_model(resolved: ResolvedModel, destination: Path) -> Path:
    """A private, writable copy of a model's directory (to damage in a test)."""
    shutil.copytree(resolved.directory, destination, symlinks=False)
    return destination
