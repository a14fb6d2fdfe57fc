"""The typer application object and what every command shares.

Command modules (``xswarm/cli/<command>.py``) import :data:`app` and register
themselves with ``@app.command()``; ``xswarm/cli/__init__.py`` imports them
all. Each command body runs inside :func:`command_errors`, which turns
:class:`~xswarm.errors.XswarmError`, Ctrl-C and a closed stdout pipe into the
documented one-line messages and exit codes.

Only typer and the standard library are imported here: ``xswarm --help`` must
start in well under 0.3 s. Commands import what they need inside their body.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import typer
from typer.core import TyperGroup

from xswarm import __version__
from xswarm.errors import ExitCode, XswarmError


class _Group(TyperGroup):
    """typer's command group, except that "Did you mean" never names a hidden command.

    ``xswarm completion`` must not suggest the hidden ``_complete`` (the shell
    scripts' helper): for a name that is not a command, the lookup and its
    suggestions see the visible commands only.
    """

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] in self.commands:
            return super().resolve_command(ctx, args)
        every, self.commands = self.commands, {
            name: cmd for name, cmd in self.commands.items() if not cmd.hidden
        }
        try:
            return super().resolve_command(ctx, args)
        finally:
            self.commands = every


app = typer.Typer(
    name="xswarm",
    cls=_Group,
    help="A full-duplex voice assistant for the terminal, on Kyutai's Moshi.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # completions/ has the shell scripts (generated from this app); typer's own
    # --install-completion would install a second, slower completion.
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        "Examples:\n\n"
        "  xswarm talk --persona glados                # speak with the assistant\n\n"
        "  xswarm transcribe talk.wav | jq -r .text\n\n"
        "  xswarm models list\n\n"
        "  xswarm doctor                               # what is missing here\n\n"
        "See man xswarm for the JSON-line schemas, files and exit codes."
    ),
)

if "_XSWARM_COMPLETE" in os.environ:
    # typer's completion protocol still answers (it runs the commands' autocompletion=
    # callbacks); without add_completion, typer leaves its shell classes unregistered.
    from typer._completion_classes import completion_init

    completion_init()


@dataclasses.dataclass
class Environment:
    """What the commands need to know about where they run (httpie's idea).

    Tests replace fields to pretend stdout is a terminal or colour is off.
    """

    stdout: TextIO = dataclasses.field(default_factory=lambda: sys.stdout)
    stderr: TextIO = dataclasses.field(default_factory=lambda: sys.stderr)
    debug: bool = False

    @property
    def stdout_isatty(self) -> bool:
        return self.stdout.isatty()

    @property
    def stderr_isatty(self) -> bool:
        return self.stderr.isatty()

    @property
    def color(self) -> bool:
        """Colour on stderr: only on a terminal, and never with ``NO_COLOR`` set."""
        return self.stderr_isatty and not os.environ.get("NO_COLOR")

    def console(self, *, stderr: bool = True) -> Any:
        """A rich console on stderr (default) or stdout, honouring ``NO_COLOR``."""
        from rich.console import Console

        stream = self.stderr if stderr else self.stdout
        return Console(
            file=stream,
            no_color=bool(os.environ.get("NO_COLOR")),
            highlight=False,
            soft_wrap=not stream.isatty(),
        )


env = Environment()


def error_line(message: str) -> None:
    """Print ``xswarm: error: ...`` on stderr, red on a colour terminal."""
    prefix = "\x1b[31mxswarm: error:\x1b[0m" if env.color else "xswarm: error:"
    print(f"{prefix} {message}", file=env.stderr, flush=True)


def warning_line(message: str) -> None:
    """Print ``xswarm: warning: ...`` on stderr, yellow on a colour terminal."""
    prefix = "\x1b[33mxswarm: warning:\x1b[0m" if env.color else "xswarm: warning:"
    print(f"{prefix} {message}", file=env.stderr, flush=True)


def emit_json(obj: Any) -> None:
    """Write one JSON line to stdout and flush it (readers may be ``jq`` in a pipe)."""
    env.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    env.stdout.flush()


def _quiet_broken_pipe() -> None:
    # stdout's reader went away (``| head -1``): point stdout at /dev/null so the
    # interpreter's final flush does not raise again, then leave quietly.
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """Map failures inside a command body to a one-line message and an exit code.

    - :class:`XswarmError`: its message, its exit code.
    - Ctrl-C outside the runtime's own handling: exit 130, no traceback.
    - A closed stdout pipe: exit 0, nothing printed.
    - Anything else: one line naming the exception (exit 1); the traceback only
      with ``--debug``.
    """
    try:
        yield
    except XswarmError as error:
        if env.debug:
            import traceback

            traceback.print_exc(file=env.stderr)
        error_line(error.message)
        raise typer.Exit(int(error.exit_code)) from None
    except KeyboardInterrupt:
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except BrokenPipeError:
        _quiet_broken_pipe()
        raise typer.Exit(int(ExitCode.OK)) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as error:
        if env.debug:
            raise
        error_line(
            f"internal error: {type(error).__name__}: {error} "
            "(run with --debug for the traceback, and please report it)"
        )
        raise typer.Exit(int(ExitCode.FAILURE)) from None


def _print_version(value: bool) -> None:
    if value:
        print(f"xswarm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(
        False, "--debug", envvar="XSWARM_DEBUG", help="Show tracebacks for errors."
    ),
) -> None:
    """A full-duplex voice assistant for the terminal, on Kyutai's Moshi.

    Data goes to stdout (JSON lines when piped), everything for people to
    stderr. See man xswarm for the JSON-line schemas, files and exit codes.
    """
    env.debug = env.debug or debug
