"""``xswarm transcribe``: speech-to-text for files and pipes, with word timestamps."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from xswarm.cli._app import app, command_errors, env, error_line, warning_line
from xswarm.errors import ExitCode, UsageError, XswarmError

EXAMPLES = """
Examples:

  xswarm transcribe talk.wav                      # readable text here, JSON lines in a pipe

  xswarm transcribe talk.wav | jq -r .text

  xswarm transcribe *.flac --format srt --output-dir subs/

  cat talk.mp3 | xswarm transcribe - --format txt

  xswarm transcribe a.wav b.wav --words --format jsonl

  xswarm transcribe talk.wav --model sphinx-en    # the offline fallback engine
"""

FORMAT_HELP = "Output: jsonl (default in a pipe), json, txt, srt or vtt."


@app.command(epilog=EXAMPLES)
def transcribe(
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE", help="Audio files (wav, flac, ogg, mp3, ...); - reads stdin."
        ),
    ],
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        metavar="NAME|PATH",
        help="STT model: a name (see xswarm models list), a directory, or sphinx-en. "
        "Default: the first Kyutai STT model in the cache, else sphinx-en.",
    ),
    fmt: str | None = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
    words: bool = typer.Option(False, "--words", help="One entry per word instead of per segment."),
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Write one file per input here, named after it."),
    ] = None,
    batch_size: int = typer.Option(
        8, "--batch-size", "-b", min=1, max=64, help="Inputs decoded together (Kyutai models)."
    ),
    realtime: bool = typer.Option(
        False, "--realtime/--fast", help="Feed audio at real time (default: as fast as possible)."
    ),
) -> None:
    """Transcribe speech in audio files to text with word timestamps.

    Segments split at pauses and sentence ends; timestamps are seconds of each
    input, corrected for the model's delay. A bad input gets one line on
    stderr and exit status 2 at the end; the other inputs are still done.
    """
    with command_errors():
        from xswarm.transcribe import (
            RichProgress,
            TranscribeOptions,
            check_options,
            open_engine,
            probe_duration,
            transcribe_files,
        )
        from xswarm.transcript import FORMATS, PRETTY

        if fmt is not None and fmt not in FORMATS:
            raise UsageError(f"--format {fmt}: unknown format; use one of {', '.join(FORMATS)}")
        chosen = fmt or ("jsonl" if output_dir is not None or not env.stdout_isatty else PRETTY)
        options = TranscribeOptions(
            format=chosen, words=words, output_dir=output_dir, realtime=realtime
        )
        check_options(files, options)

        def report(error: XswarmError) -> None:
            error_line(error.message)

        from xswarm.inference.worker import MlxWorker

        with MlxWorker() as worker:
            engine = open_engine(model, batch_size=batch_size, note=warning_line, worker=worker)
            if env.stderr_isatty:
                with RichProgress(
                    env.console(), total=probe_duration(files), files=len(files)
                ) as progress:
                    # rich redirects sys.stdout while the bars show, so transcript lines
                    # on the same terminal print above the bars instead of through them
                    stdout = sys.stdout if env.stdout is sys.__stdout__ else env.stdout
                    failures = transcribe_files(
                        files, engine, options, stdout=stdout, report=report,
                        progress=progress,
                    )
            else:
                failures = transcribe_files(
                    files, engine, options, stdout=env.stdout, report=report
                )
        if failures:
            raise typer.Exit(int(ExitCode.USAGE))
