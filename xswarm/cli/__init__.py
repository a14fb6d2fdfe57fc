"""The ``xswarm`` command line: a thin typer layer over the library.

Each command lives in its own module and registers itself on the shared
:data:`~xswarm.cli._app.app`; this package imports them in help order.
Commands parse options into small typed config objects and hand over to the
library; they hold no logic of their own.
"""

from __future__ import annotations

# Command modules register themselves on import; add new ones here, in help order.
from xswarm.cli import devices, doctor  # noqa: F401
from xswarm.cli._app import app


def main() -> None:
    """Entry point of the ``xswarm`` console script."""
    app(prog_name="xswarm")
