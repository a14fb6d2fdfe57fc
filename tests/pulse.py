"""pytest plugin: a PulseAudio null sink for tests marked ``@pytest.mark.pulse``.

Loaded from tests/conftest.py (``pytest_plugins``). The first test that
carries the ``pulse`` marker starts a private daemon with
tests/pulse-null-sink.sh in a short temporary directory (a unix socket path
must stay under 108 bytes), unless ``PULSE_SERVER`` already points at a daemon
that answers (CI starts its own, see .ci/run). ``XDG_RUNTIME_DIR`` and
``PULSE_SERVER`` are set in ``os.environ`` for the rest of the session, so
subprocesses (``xswarm devices``) see the same device; at session end the
daemon this plugin started is stopped and the environment restored.

PortAudio lists devices when it is initialised (``import sounddevice``). If
sounddevice was imported before the daemon ran, it is re-initialised so the
new device shows up.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "pulse-null-sink.sh"
START_TIMEOUT = 30  # s; the script itself waits up to ~15 s for the daemon and its keep-alive
ENV_KEYS = ("XDG_RUNTIME_DIR", "PULSE_SERVER")


@dataclasses.dataclass(frozen=True)
class PulseServer:
    """The daemon tests talk to."""

    server: str  # the PULSE_SERVER value, e.g. unix:/tmp/xswarm-pulse-x/pulse/native
    runtime_dir: str | None  # its XDG_RUNTIME_DIR, if we know it
    started_here: bool  # did this plugin start it (and will it stop it)


def _answers(env: dict[str, str]) -> bool:
    try:
        result = subprocess.run(
            ["pactl", "info"], env=env, capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _parse_exports(output: str) -> dict[str, str]:
    """``export A=1 B=2`` (the script's last line) as a dict."""
    line = next(line for line in reversed(output.splitlines()) if line.startswith("export "))
    return dict(item.split("=", 1) for item in line.removeprefix("export ").split())


def _refresh_portaudio() -> None:
    sd = sys.modules.get("sounddevice")
    if sd is not None:  # opened before the daemon existed: make PortAudio list devices again
        sd._terminate()
        sd._initialize()


@pytest.fixture(scope="session")
def pulse_server() -> Iterator[PulseServer]:
    """A running PulseAudio daemon with the null sink ``xs`` as default sink and source."""
    if os.environ.get("PULSE_SERVER") and _answers(dict(os.environ)):
        yield PulseServer(os.environ["PULSE_SERVER"], os.environ.get("XDG_RUNTIME_DIR"), False)
        return
    if shutil.which("pulseaudio") is None:
        pytest.fail("pulseaudio is not installed: apt install pulseaudio libasound2-plugins")
    runtime_dir = tempfile.mkdtemp(prefix="xswarm-pulse-")
    saved = {key: os.environ.get(key) for key in ENV_KEYS}
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", runtime_dir],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if started.returncode != 0:
        log = Path(runtime_dir, "pulse.log")
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        pytest.fail(f"could not start the PulseAudio null sink: {started.stderr}\n{tail}")
    os.environ.update(_parse_exports(started.stdout))
    _refresh_portaudio()
    try:
        yield PulseServer(os.environ["PULSE_SERVER"], runtime_dir, True)
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "stop", runtime_dir], capture_output=True, timeout=30, check=False
        )
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(runtime_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _pulse_for_marked_tests(request: pytest.FixtureRequest) -> None:
    """Give every ``@pytest.mark.pulse`` test the daemon, without naming the fixture."""
    if request.node.get_closest_marker("pulse") is not None:
        request.getfixturevalue("pulse_server")
