"""``xswarm doctor``: report what works here and what is missing, with the fix."""

from __future__ import annotations

import typer

from xswarm.cli._app import app, command_errors, emit_json, env

# How each check's line starts, by (ok, core): a failed core part is fatal.
MARKS = {
    (True, True): "[green]ok[/]  ",
    (True, False): "[green]ok[/]  ",
    (False, True): "[red]FAIL[/]",
    (False, False): "[yellow]warn[/]",
}

EXAMPLES = """
Examples:

  xswarm doctor

  xswarm doctor --json | jq '.[] | select(.ok | not)'
"""


@app.command(epilog=EXAMPLES)
def doctor(
    json_output: bool = typer.Option(False, "--json", help="Print the checks as a JSON array."),
) -> None:
    """Check Python, MLX, PortAudio, audio devices and the model cache.

    Exits 1 when a core part (Python, MLX, moshi_mlx, libsndfile) is missing.
    """
    with command_errors():
        from xswarm.doctor import run_checks

        checks = run_checks()
        if json_output:
            emit_json([c.to_json() for c in checks])
        else:
            console = env.console(stderr=False)
            for c in checks:
                mark = MARKS[(c.ok, c.core)]
                console.print(f"{mark} [bold]{c.name}[/]: {c.detail}")
                if not c.ok and c.fix:
                    console.print(f"       fix: {c.fix}")
        if any(c.core and not c.ok for c in checks):
            raise typer.Exit(1)
