"""``xswarm personas list|show|new|check``: see, copy and validate personas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from xswarm.cli._app import app, command_errors, emit_json, env, warning_line

personas_app = typer.Typer(
    name="personas",
    help="List, show, create and check personas (who the assistant is).",
    no_args_is_help=True,
    epilog=(
        "Built-in personas ship with xswarm; yours live in the config directory "
        "(xswarm personas new NAME prints the path) and shadow a built-in of the same name. "
        'The default is XSWARM_PERSONA, else persona = "..." in config.toml, else jarvis.'
        "\n\nExamples:\n\n"
        "  xswarm personas list\n\n"
        "  xswarm personas show glados\n\n"
        "  xswarm personas new friday --from jarvis\n\n"
        "  xswarm personas check ~/.config/xswarm/personas/friday.toml"
    ),
)
app.add_typer(personas_app)


def complete_persona(incomplete: str) -> list[str]:
    """Shell completion: persona names starting with what was typed."""
    try:
        from xswarm.personas import persona_files

        return [name for name in persona_files() if name.startswith(incomplete)]
    except Exception:  # completion must never print a traceback into the shell
        return []


LIST_EXAMPLES = """
Examples:

  xswarm personas list

  xswarm personas list --json | jq -r '.[].name'
"""


@personas_app.command("list", epilog=LIST_EXAMPLES)
def list_command(
    json_output: bool = typer.Option(False, "--json", help="Print a JSON array of personas."),
) -> None:
    """List the personas: name, where it comes from, description. * marks the default.

    A persona file that does not validate is reported on stderr; the others are
    still listed, and the command exits 2.
    """
    with command_errors():
        from xswarm.personas import default_persona_name, list_personas

        listing = list_personas()
        default, origin = default_persona_name()
        if default not in listing.files:
            from xswarm.personas import unknown_persona

            warning_line(unknown_persona(default, list(listing.files), origin).message)
        if json_output:
            emit_json(
                [
                    {
                        **p.to_json(),
                        "default": p.name == default,
                        "shadows": _shadowed(listing.files, p.name),
                    }
                    for p in listing.personas
                ]
            )
        else:
            from rich.markup import escape

            console = env.console(stderr=False)
            width = max((len(p.name) for p in listing.personas), default=4)
            for p in listing.personas:
                mark = "*" if p.name == default else " "
                origin = "built-in" if p.builtin else "user"
                if _shadowed(listing.files, p.name):
                    origin = "user, shadows built-in"
                console.print(
                    f"{mark} [{p.color}]{p.name:<{width}}[/]  {escape(p.description)}  "
                    f"[dim]({origin})[/]",
                    markup=True,
                    highlight=False,
                )
        for error in listing.errors:
            warning_line(error)
        if listing.errors:
            raise typer.Exit(2)


def _shadowed(files: dict[str, Any], name: str) -> str | None:
    entry = files.get(name)
    return str(entry.shadows) if entry is not None and entry.shadows else None


SHOW_EXAMPLES = """
Examples:

  xswarm personas show glados

  xswarm personas show jarvis --json | jq .sampling
"""


@personas_app.command("show", epilog=SHOW_EXAMPLES)
def show_command(
    name: str = typer.Argument(
        ...,
        help="The persona's name (see xswarm personas list).",
        autocompletion=complete_persona,
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the persona as JSON."),
) -> None:
    """Show a persona's settings and the file they come from."""
    with command_errors():
        from xswarm.personas import load_persona

        persona = load_persona(name)
        if json_output:
            emit_json(persona.to_json())
            return
        from rich.markup import escape

        console = env.console(stderr=False)
        s = persona.sampling
        rows = [
            ("name", f"[{persona.color}]{persona.name}[/]"),
            ("display name", escape(persona.display_name)),
            ("description", escape(persona.description)),
            ("file", f"{persona.source} ({'built-in' if persona.builtin else 'user'})"),
            ("colour", f"[{persona.color}]{persona.color}[/]"),
            ("mode", persona.mode),
            ("memory", "on" if persona.memory else "off"),
            ("moshi voice", escape(persona.voice.moshi)),
            ("tts voice", escape(persona.voice.tts or "(the TTS model's default)")),
            (
                "sampling",
                f"temperature {s.temperature:g}, text_temperature {s.text_temperature:g}, "
                f"top_k {s.top_k}, text_top_k {s.text_top_k}",
            ),
            ("greeting", escape(persona.greeting or "(none)")),
        ]
        for label, value in rows:
            console.print(f"[bold]{label:>13}[/]  {value}")
        console.print("[bold]system prompt[/]")
        for line in persona.system_prompt.strip().splitlines():
            console.print(f"  {escape(line)}")


NEW_EXAMPLES = """
Examples:

  xswarm personas new friday                # a copy of jarvis to edit

  xswarm personas new cave --from glados

  xswarm personas new jarvis                # your own jarvis, shadowing the built-in

  $EDITOR "$(xswarm personas new friday)"
"""


@personas_app.command("new", epilog=NEW_EXAMPLES)
def new_command(
    name: str = typer.Argument(..., help="The new persona's name (lower-case, digits, - and _)."),
    base: str | None = typer.Option(
        None,
        "--from",
        help="The persona to copy (default: NAME itself if it exists, else jarvis).",
        show_default=False,
        autocompletion=complete_persona,
    ),
) -> None:
    """Write a commented persona file into your config directory and print its path.

    Refuses to overwrite an existing file.
    """
    with command_errors():
        from xswarm.personas import new_persona

        path = new_persona(name, base)
        print(path, file=env.stdout, flush=True)
        if env.stderr_isatty:
            print(f"edit it, then: xswarm personas check {path}", file=env.stderr)


CHECK_EXAMPLES = """
Examples:

  xswarm personas check ~/.config/xswarm/personas/friday.toml

  xswarm personas check personas/*.toml
"""


@personas_app.command("check", epilog=CHECK_EXAMPLES)
def check_command(
    files: Annotated[
        list[Path],
        typer.Argument(help="Persona files to validate.", show_default=False, metavar="FILE"),
    ],
) -> None:
    """Validate persona files: prints "ok" per good file, or one error line and exits 2.

    With several files, each good one prints "FILE: ok" and every bad one is
    reported before exiting 2.
    """
    with command_errors():
        from xswarm.errors import UsageError
        from xswarm.personas import load_persona_file

        if len(files) == 1:
            load_persona_file(files[0])
            print("ok", file=env.stdout, flush=True)
            return
        failed = 0
        for path in files:
            try:
                load_persona_file(path)
            except UsageError as error:
                from xswarm.cli._app import error_line

                error_line(error.message)
                failed += 1
            else:
                print(f"{path}: ok", file=env.stdout, flush=True)
        if failed:
            raise typer.Exit(2)
