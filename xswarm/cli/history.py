"""``xswarm history list|show|search|rm|facts|forget``: past sessions and what was remembered."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from xswarm.cli._app import app, command_errors, emit_json, env, warning_line

history_app = typer.Typer(
    name="history",
    help="Past talk sessions (list, show, search, rm) and remembered facts (facts, forget).",
    invoke_without_command=True,
    epilog=(
        "Every talk session is saved as it happens (xswarm talk --no-history turns that off). "
        "IDs may be shortened to any unique prefix. Without a subcommand: list."
        "\n\nExamples:\n\n"
        "  xswarm history\n\n"
        "  xswarm history show 20261125-1703\n\n"
        "  xswarm history search cake --persona glados\n\n"
        "  xswarm history facts jarvis"
    ),
)
app.add_typer(history_app)


def complete_session(incomplete: str) -> list[str]:
    """Shell completion: session ids starting with what was typed, newest first."""
    try:
        from xswarm.history import session_paths

        return [p.stem for p in session_paths() if p.stem.startswith(incomplete)]
    except Exception:  # completion must never print a traceback into the shell
        return []


def complete_persona(incomplete: str) -> list[str]:
    from xswarm.cli.personas import complete_persona as complete

    return complete(incomplete)


JSON_OPTION = typer.Option(False, "--json", help="Print JSON instead of text.")
PERSONA_OPTION = typer.Option(
    None,
    "--persona",
    "-p",
    help="Only sessions with this persona.",
    autocompletion=complete_persona,
)


@history_app.callback()
def history_root(ctx: typer.Context, json_output: bool = JSON_OPTION) -> None:
    """Past talk sessions and what each persona remembers about you."""
    if ctx.invoked_subcommand is None:
        list_command(json_output=json_output, persona=None, limit=None)


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def _local(start: Any) -> str:
    return start.astimezone().strftime("%Y-%m-%d %H:%M")


def _warn_skipped(session: Any) -> None:
    if session.skipped:
        warning_line(
            f"session {session.id}: {session.skipped} unreadable line(s) ignored "
            "(the session was cut short, e.g. by a crash)"
        )


LIST_EXAMPLES = """
Examples:

  xswarm history

  xswarm history list --persona glados --limit 5

  xswarm history list --json | jq -r '.[] | .id + " " + .preview'
"""


@history_app.command("list", epilog=LIST_EXAMPLES)
def list_command(
    json_output: bool = JSON_OPTION,
    persona: str | None = PERSONA_OPTION,
    limit: int | None = typer.Option(None, "--limit", "-n", min=1, help="Show at most this many."),
) -> None:
    """List sessions, newest first: id, persona, start, duration, first words."""
    with command_errors():
        from xswarm.history import list_sessions

        listing = list_sessions(persona, limit)
        if json_output:
            emit_json([s.to_json() for s in listing.sessions])
        else:
            from rich.markup import escape

            console = env.console(stderr=False)
            for s in listing.sessions:
                mark = "" if s.complete else " [yellow](unfinished)[/]"
                preview = escape(s.preview) or "[dim](no words)[/]"
                console.print(
                    f"[bold]{s.id}[/]  {escape(s.persona):<8} {_local(s.start)}  "
                    f"{_format_duration(s.duration):>7}  {preview}{mark}"
                )
            if not listing.sessions:
                print("no sessions yet (xswarm talk saves them)", file=env.stderr)
        for error in listing.errors:
            warning_line(error)


SHOW_EXAMPLES = """
Examples:

  xswarm history show 20261125-1703

  xswarm history show 20261125-1703 --json | jq -r 'select(.type=="word") | .text'
"""


@history_app.command("show", epilog=SHOW_EXAMPLES)
def show_command(
    session_id: str = typer.Argument(
        ..., metavar="ID", help="A session id or unique prefix.", autocompletion=complete_session
    ),
    json_output: bool = typer.Option(
        False, "--json", help="Print the stored events as JSON lines (header first)."
    ),
) -> None:
    """Print a session's transcript, one line per speaker turn with its time."""
    with command_errors():
        from xswarm.history import find_session, read_session

        session = read_session(find_session(session_id))
        _warn_skipped(session)
        if json_output:
            emit_json(session.header)
            for event in session.events:
                emit_json(event)
            return
        from rich.markup import escape

        color = _persona_color(session.persona)
        console = env.console(stderr=False)
        state = "" if session.complete else "  [yellow](unfinished)[/]"
        console.print(
            f"[bold]{session.id}[/]  {escape(session.persona)}  {escape(session.model)}  "
            f"{_local(session.start)}  {_format_duration(session.duration)}{state}"
        )
        for line in session.lines():
            style = color if line.speaker == "assistant" else "bold"
            console.print(
                f"[dim]{_format_duration(line.start):>7}[/] [{style}]{line.speaker}:[/] "
                f"{escape(line.text)}"
            )


def _persona_color(name: str) -> str:
    """The persona's colour for the transcript, or plain when it cannot be loaded."""
    from xswarm.errors import UsageError
    from xswarm.personas import load_persona

    try:
        return load_persona(name).color
    except UsageError:
        return "default"


SEARCH_EXAMPLES = """
Examples:

  xswarm history search "cake"

  xswarm history search london --persona jarvis --json
"""


@history_app.command("search", epilog=SEARCH_EXAMPLES)
def search_command(
    text: str = typer.Argument(..., help="Text to find (case-insensitive)."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON lines, one per match."),
    persona: str | None = PERSONA_OPTION,
) -> None:
    """Find transcript lines containing TEXT; exits 1 when nothing matches."""
    with command_errors():
        from xswarm.history import search

        matches = search(text, persona)
        if json_output:
            for match in matches:
                emit_json(match.to_json())
        else:
            from rich.markup import escape

            console = env.console(stderr=False)
            for match in matches:
                console.print(
                    f"[bold]{match.session.id}[/] [dim]{_format_duration(match.line.start):>7}[/] "
                    f"{match.line.speaker}: {escape(match.line.text)}"
                )
        if not matches:
            raise typer.Exit(1)  # like grep: scripts can test for a match


RM_EXAMPLES = """
Examples:

  xswarm history rm 20261125-1703

  xswarm history rm $(xswarm history list --json | jq -r '.[5:][].id')
"""


@history_app.command("rm", epilog=RM_EXAMPLES)
def rm_command(
    session_ids: Annotated[
        list[str],
        typer.Argument(
            metavar="ID", help="Session ids or unique prefixes.", autocompletion=complete_session
        ),
    ],
) -> None:
    """Delete sessions. Every id is checked before anything is deleted."""
    with command_errors():
        from xswarm.history import find_session

        paths = [find_session(session_id) for session_id in session_ids]
        for path in dict.fromkeys(paths):
            path.unlink(missing_ok=True)
            print(f"removed {path.stem}", file=env.stderr)


FACTS_EXAMPLES = """
Examples:

  xswarm history facts               # the default persona's

  xswarm history facts glados --json
"""


@history_app.command("facts", epilog=FACTS_EXAMPLES)
def facts_command(
    persona: str | None = typer.Argument(
        None, help="The persona (default: the default persona).", autocompletion=complete_persona
    ),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON array of facts."),
) -> None:
    """Show what a persona remembers about you, with the sentence each fact came from.

    Facts come from your own words in talk sessions, by simple rules ("my name
    is ...", "I live in ...", "I like ..."); see the xswarm.memory module.
    """
    with command_errors():
        name = _persona_name(persona)
        from xswarm.memory import memory_facts

        facts = memory_facts(name)
        if json_output:
            emit_json([f.to_json() for f in facts])
            return
        from rich.markup import escape

        console = env.console(stderr=False)
        width = max((len(f.key) for f in facts), default=0)
        for fact in facts:
            console.print(
                f"{escape(fact.key):<{width}}  {escape(fact.sentence())}  "
                f'[dim]"{escape(fact.quote)}"[/]'
            )
        if not facts:
            print(f"{name} remembers nothing about you yet", file=env.stderr)


def _persona_name(persona: str | None) -> str:
    """An existing persona's name (the default one for None); unknown names raise."""
    from xswarm.personas import load_persona

    return load_persona(persona).name


FORGET_EXAMPLES = """
Examples:

  xswarm history forget jarvis name           # one fact, by its key

  xswarm history forget jarvis likes:jazz age

  xswarm history forget jarvis --all
"""


@history_app.command("forget", epilog=FORGET_EXAMPLES)
def forget_command(
    persona: str = typer.Argument(
        ..., help="The persona whose memory to edit.", autocompletion=complete_persona
    ),
    keys: Annotated[
        list[str] | None,
        typer.Argument(metavar="[KEY]", help="Fact keys, as shown by xswarm history facts."),
    ] = None,
    everything: bool = typer.Option(False, "--all", help="Forget every fact of this persona."),
) -> None:
    """Make a persona forget facts about you (by key, or --all)."""
    with command_errors():
        from xswarm.errors import UsageError
        from xswarm.memory import forget

        if bool(keys) == everything:
            raise UsageError(
                "give fact keys to forget or --all, not both "
                f"(keys: xswarm history facts {persona})"
                if everything
                else f"give fact keys to forget, or --all (keys: xswarm history facts {persona})"
            )
        name = _persona_name(persona)
        removed = forget(name, None if everything else keys)
        print(f"{name} forgot {len(removed)} fact(s)", file=env.stderr)
