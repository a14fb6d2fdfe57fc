"""Run the ``xswarm`` CLI as a real subprocess, the way users and scripts do."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
NO_PORTAUDIO_DIR = TESTS_DIR / "no_portaudio"


def run_xswarm(
    *args: str,
    env: Mapping[str, str] | None = None,
    hide_portaudio: bool = False,
    timeout: float = 120,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m xswarm ARGS`` and capture its output as text.

    ``hide_portaudio`` makes ``import sounddevice`` fail as on a machine
    without libportaudio2 (see tests/no_portaudio/sitecustomize.py).
    """
    full_env = dict(os.environ if env is None else env)
    if hide_portaudio:
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(NO_PORTAUDIO_DIR), full_env.get("PYTHONPATH", "")) if p
        )
    result = subprocess.run(
        [sys.executable, "-m", "xswarm", *args],
        env=full_env,
        capture_output=True,
        timeout=timeout,
        input=input,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )
