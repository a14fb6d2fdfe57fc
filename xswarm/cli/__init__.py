"""The ``xswarm`` command line: a thin typer layer over the library.

Each command lives in its own module here (``talk.py``, ``devices.py``, ...)
and registers itself on the shared :data:`~xswarm.cli._app.app` when imported;
this package imports every public module of the package, in help order.
Commands parse options into small typed config objects and hand over to the
library; they hold no logic of their own.
"""

from __future__ import annotations

import importlib
import pkgutil

from xswarm.cli._app import app

# The order commands appear in ``xswarm --help``; modules not named here follow.
HELP_ORDER = ("talk", "transcribe", "personas", "history", "models", "devices", "doctor")


def _register_commands() -> None:
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    rank = {name: i for i, name in enumerate(HELP_ORDER)}
    for name in sorted(names, key=lambda n: (rank.get(n, len(rank)), n)):
        importlib.import_module(f"{__name__}.{name}")


_register_commands()


def main() -> None:
    """Entry point of the ``xswarm`` console script."""
    app(prog_name="xswarm")
