"""``xswarm devices``: the sound devices PortAudio sees, for --input-device / --output-device.

A list is data, so it goes to stdout: a table for people, or with ``--json``
one JSON array (a list command's whole answer is one value, as in
``xswarm personas list --json``), each element the fields of
:class:`xswarm.audio.devices.DeviceInfo`. Without PortAudio the command prints
one line naming the package to install and exits 1.
"""

from __future__ import annotations

import dataclasses

import typer

from xswarm.cli._app import app, command_errors, emit_json, env, warning_line

EXAMPLES = """
Examples:

  xswarm devices

  xswarm devices --json | jq -r '.[] | select(.max_input_channels > 0) | .name'
"""


@app.command(epilog=EXAMPLES)
def devices(
    json_output: bool = typer.Option(False, "--json", help="Print a JSON array of devices."),
) -> None:
    """List audio devices: index, name, input/output channels, default rate.

    "in" and "out" mark the default input and output devices. Pick one for
    xswarm talk by index or by part of its name.
    """
    with command_errors():
        from xswarm.audio.devices import list_devices

        found = list_devices()
        if json_output:
            emit_json([dataclasses.asdict(d) for d in found])
            return
        if not found:
            warning_line(
                "no audio devices found: connect one (or start PulseAudio/PipeWire), "
                "or use --input FILE / --output FILE"
            )
            return
        from rich.table import Table

        table = Table(box=None, pad_edge=False, highlight=False)
        table.add_column("#", justify="right")
        table.add_column("name")
        table.add_column("api")
        table.add_column("in", justify="right")
        table.add_column("out", justify="right")
        table.add_column("rate", justify="right")
        table.add_column("default")
        for d in found:
            defaults = (("in", d.is_default_input), ("out", d.is_default_output))
            marks = [mark for mark, on in defaults if on]
            table.add_row(
                str(d.index),
                d.name,
                d.hostapi,
                str(d.max_input_channels),
                str(d.max_output_channels),
                f"{d.default_samplerate:g}",
                " ".join(marks),
            )
        env.console(stderr=False).print(table)
