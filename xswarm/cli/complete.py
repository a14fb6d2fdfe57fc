"""``xswarm _complete KIND``: the names shell completion offers for option values.

The scripts in ``completions/`` are generated from the CLI definition by
``tools/gen_shell_docs.py``: commands and options complete from the script
itself, with no Python start-up. The values only xswarm knows at run time
(persona names, model names, audio devices, session ids) come from this hidden
command, one ``NAME<TAB>DESCRIPTION`` line each (the description may be empty;
bash drops it, zsh and fish show it).

A completion must never put an error into the user's command line, so any
failure (no PortAudio, an unreadable config directory) prints nothing and
exits 0. Only cheap modules are imported: no MLX, no numpy; the device kinds
load PortAudio through sounddevice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final, Literal

import typer

from xswarm.cli._app import app, env

SPHINX_NAME: Final = "sphinx-en"  # transcribe's offline fallback engine (xswarm.stt.sphinx.NAME)


def _personas() -> list[tuple[str, str]]:
    from xswarm.cli.personas import complete_persona  # the list `personas show` completes

    return [(name, "") for name in complete_persona("")]


def _sessions() -> list[tuple[str, str]]:
    from xswarm.cli.history import complete_session  # the list `history show` completes

    return [(name, "") for name in complete_session("")]


def _models_of(*kinds: str) -> Callable[[], list[tuple[str, str]]]:
    def models() -> list[tuple[str, str]]:
        from xswarm.models.registry import REGISTRY

        return [(s.name, s.description) for s in REGISTRY.values() if not kinds or s.kind in kinds]

    return models


def _stt_models() -> list[tuple[str, str]]:
    return [*_models_of("stt")(), (SPHINX_NAME, "pocketsphinx, English, offline fallback")]


def _devices_of(kind: Literal["input", "output"]) -> Callable[[], list[tuple[str, str]]]:
    def devices() -> list[tuple[str, str]]:
        from xswarm.audio.devices import list_devices

        found = []
        for d in list_devices():
            channels = d.channels(kind)
            if channels > 0:
                default = d.is_default_input if kind == "input" else d.is_default_output
                mark = ", default" if default else ""
                found.append((d.name, f"#{d.index} {d.hostapi}, {channels} ch{mark}"))
        return found

    return devices


# What each KIND lists. tools/gen_shell_docs.py maps options and arguments to these.
KINDS: Final[dict[str, Callable[[], list[tuple[str, str]]]]] = {
    "personas": _personas,
    "sessions": _sessions,
    "models": _models_of(),
    "moshi-models": _models_of("moshi"),
    "stt-models": _stt_models,
    "tts-models": _models_of("tts"),
    "input-devices": _devices_of("input"),
    "output-devices": _devices_of("output"),
}


def completion_values(kind: str) -> list[tuple[str, str]]:
    """``(name, description)`` pairs for ``kind``; an empty list when they cannot be had.

    Raises :class:`KeyError` for a kind not in :data:`KINDS` (a bug in a
    generated script, not a user error).
    """
    lister = KINDS[kind]
    try:
        return lister()
    except Exception:  # completion must stay silent: no PortAudio, unreadable files, ...
        return []


def _clean(text: str) -> str:
    # one line per value: tabs and newlines inside a name or description would split it
    return " ".join(text.split())


# KIND is read from the raw arguments, not declared as a typed parameter: typer's value
# coercion imports pydantic (~150 ms measured), and this runs on every Tab.
@app.command(
    "_complete",
    hidden=True,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def complete(ctx: typer.Context) -> None:
    """Print the completion values of KIND, NAME<TAB>DESCRIPTION per line (for shell scripts)."""
    kind = ctx.args[0] if len(ctx.args) == 1 else ""
    if kind not in KINDS:
        return  # an old script asking for a kind this version lacks: offer nothing
    with contextlib.suppress(BrokenPipeError):
        for name, description in completion_values(kind):
            env.stdout.write(f"{_clean(name)}\t{_clean(description)}\n")
        env.stdout.flush()
