"""``xswarm doctor``: what works on this machine, what is missing, and the fix.

Each check is a small function returning a :class:`Check`. A check never
raises: whatever goes wrong becomes a failed check with the fix to apply.
Core checks (Python, MLX, moshi_mlx, the audio file libraries) decide the exit
status; the others (sound devices, cached models) only warn, because file
transcription and headless talk work without them.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import platform
import sys
from collections.abc import Callable
from typing import Any

MIN_PYTHON = (3, 10)


@dataclasses.dataclass(frozen=True)
class Check:
    """The outcome of one check: ``ok`` with a detail, or a problem with its fix."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    core: bool = False  # a failed core check makes ``xswarm doctor`` exit 1
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_python() -> Check:
    version = platform.python_version()
    ok = sys.version_info[:2] >= MIN_PYTHON
    return Check(
        "python",
        ok,
        f"Python {version} ({sys.executable})",
        fix="" if ok else "install Python 3.10 or newer",
        core=True,
    )


def check_mlx() -> Check:
    try:
        import mlx.core as mx

        device = mx.default_device()
        # A tiny computation proves the backend library really loads and runs.
        value = (mx.array([1.0, 2.0]) * 2).sum().item()
        if value != 6.0:
            raise RuntimeError(f"MLX computed {value} for 2*(1+2)")
        version = importlib.metadata.version("mlx")
    except Exception as error:  # any failure here is the finding
        fix = (
            "pip install 'mlx[cpu]<0.27' (plain mlx on Linux lacks libmlx.so)"
            if sys.platform == "linux"
            else "pip install 'mlx<0.27'"
        )
        return Check("mlx", False, f"MLX does not work: {error}", fix=fix, core=True)
    return Check(
        "mlx",
        True,
        f"MLX {version}, default device {device}",
        core=True,
        data={"version": version, "device": str(device)},
    )


def _check_import(name: str, module: str, fix: str) -> Check:
    try:
        importlib.import_module(module)
        version = importlib.metadata.version(name)
    except Exception as error:
        return Check(name, False, f"cannot import {module}: {error}", fix=fix, core=True)
    return Check(name, True, f"{name} {version}", core=True, data={"version": version})


def check_moshi_mlx() -> Check:
    return _check_import("moshi_mlx", "moshi_mlx.models", "pip install 'moshi_mlx>=0.3,<0.4'")


def check_soundfile() -> Check:
    fix = (
        "apt install libsndfile1" if sys.platform == "linux" else "pip install --force soundfile"
    )
    return _check_import("soundfile", "soundfile", fix)


def check_audio_devices() -> Check:
    from xswarm.errors import XswarmError

    try:
        from xswarm.audio.devices import list_devices

        devices = list_devices()
    except XswarmError as error:
        return Check(
            "audio devices",
            False,
            error.message,
            fix="file input and output (--input/--output) still work",
        )
    inputs = [d for d in devices if d.max_input_channels > 0]
    outputs = [d for d in devices if d.max_output_channels > 0]
    ok = bool(inputs and outputs)
    detail = f"PortAudio found; {len(inputs)} input and {len(outputs)} output device(s)"
    return Check(
        "audio devices",
        ok,
        detail,
        fix="" if ok else "connect a microphone and speakers, or use --input FILE/--output FILE",
        data={"devices": [dataclasses.asdict(d) for d in devices]},
    )


def check_models() -> Check:
    from xswarm import paths

    try:
        from xswarm.models import list_models

        models = list_models()
    except Exception as error:
        return Check("models", False, f"cannot list models: {error}")
    cached = [m.name for m in models if m.cached]
    detail = (
        f"cache {paths.cache_dir()}; cached: {', '.join(cached) if cached else 'none'}"
    )
    real = [m for m in models if m.cached and not m.name.startswith(("tiny-", "random-"))]
    from xswarm.models.registry import DEFAULT_MODEL

    return Check(
        "models",
        bool(real),
        detail,
        fix=""
        if real
        else f"xswarm models pull {DEFAULT_MODEL} (tiny-random works offline for trying)",
        data={"cache": str(paths.cache_dir()), "cached": cached},
    )


CHECKS: tuple[Callable[[], Check], ...] = (
    check_python,
    check_mlx,
    check_moshi_mlx,
    check_soundfile,
    check_audio_devices,
    check_models,
)


def run_checks() -> list[Check]:
    """Run every check, in order; never raises."""
    results = []
    for check in CHECKS:
        try:
            results.append(check())
        except Exception as error:  # a bug in a check must not hide the others
            name = check.__name__.removeprefix("check_").replace("_", " ")
            results.append(Check(name, False, f"check failed: {type(error).__name__}: {error}"))
    return results
