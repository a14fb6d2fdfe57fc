"""The command line as users meet it: version, help, doctor, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import xswarm
from tests.cli_helpers import run_xswarm

# Modules that make start-up slow; ``xswarm --help`` must not import them.
HEAVY_MODULES = ("mlx", "mlx.core", "moshi_mlx", "numpy", "sounddevice", "soundfile", "trio")


def test_version_prints_package_version() -> None:
    result = run_xswarm("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"xswarm {xswarm.__version__}"


def test_help_imports_no_heavy_module() -> None:
    # Start-up time is measured in benchmarks/startup.py; what keeps it low is
    # that --help imports none of the heavy libraries, which is checked here.
    code = (
        "import sys\n"
        "from xswarm.cli import app\n"
        "try:\n"
        "    app(['--help'], prog_name='xswarm')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert "Usage: xswarm" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "[]"


def test_unknown_command_suggests_the_right_one() -> None:
    result = run_xswarm("doctr")
    assert result.returncode == 2
    assert "doctor" in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_json_lists_core_checks() -> None:
    result = run_xswarm("doctor", "--json")
    checks = json.loads(result.stdout)
    by_name = {c["name"]: c for c in checks}
    assert {"python", "mlx", "moshi_mlx", "soundfile", "audio devices", "models"} <= set(by_name)
    assert by_name["mlx"]["ok"] is True
    # Core parts are present on this machine, so doctor exits 0.
    assert result.returncode == 0, result.stderr


def test_doctor_names_missing_portaudio_with_its_fix() -> None:
    result = run_xswarm("doctor", hide_portaudio=True)
    assert result.returncode == 0  # sound devices are not a core part
    line = next(line for line in result.stdout.splitlines() if "audio devices" in line)
    assert "PortAudio" in line and "libportaudio2" in line
    assert "Traceback" not in result.stderr + result.stdout
