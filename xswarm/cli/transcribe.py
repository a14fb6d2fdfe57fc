"""``xswarm transcribe``: speech-to-text for files and pipes, with word timestamps."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from xswarm.cli._app import app, command_errors, env, error_line, warning_line
from xswarm.errors import ExitCode, Interrupted, UsageError, XswarmError

EXAMPLES = """
Examples:

  xswarm transcribe talk.wav                      # readable text here, JSON lines in a pipe

  xswarm transcribe talk.wav | jq -r .text

  xswarm transcribe *.flac --format srt --output-dir subs/

  cat talk.mp3 | xswarm transcribe - --format txt

  xswarm transcribe a.wav b.wav --words --format jsonl

  xswarm transcribe talk.wav --model sphinx-en    # the offline fallback engine

  xswarm transcribe --ray -o out/ corpus/ @more.txt   # a corpus on a local Ray runtime

  xswarm transcribe --ray-address ray://head:10001 -o /shared/out /shared/corpus
"""

RAY_PANEL = "Cluster (Ray, pip install 'xswarm[cluster]')"

FORMAT_HELP = "Output: jsonl (default in a pipe), json, txt, srt or vtt."


@app.command(epilog=EXAMPLES)
def transcribe(
    files: Annotated[
        list[str],
        typer.Argument(
            metavar="FILE",
            help="Audio files (wav, flac, ogg, mp3, ...); - reads stdin. With --ray also "
            "directories (searched recursively) and @LIST files (one path per line).",
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
    ray: bool = typer.Option(
        False, "--ray", rich_help_panel=RAY_PANEL,
        help="Run on Ray workers (a new local Ray runtime unless --ray-address); needs "
        "--output-dir; outputs already there are skipped, so a rerun resumes.",
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", metavar="ADDRESS", rich_help_panel=RAY_PANEL,
        help="Join this Ray cluster (implies --ray): ray://HOST:PORT (Ray client), "
        "HOST:PORT (the head's GCS port) or auto (the cluster this machine is part of).",
    ),
    workers: int | None = typer.Option(
        None, "--workers", "-w", min=1, metavar="N", rich_help_panel=RAY_PANEL,
        help="Ray workers, each loading the model once. Default: one per CPU of the "
        "cluster for sphinx-en, one per node for Kyutai models.",
    ),
) -> None:
    """Transcribe speech in audio files to text with word timestamps.

    Segments split at pauses and sentence ends; timestamps are seconds of each
    input, corrected for the model's delay. A bad input gets one line on
    stderr and exit status 2 at the end; the other inputs are still done.
    """
    with command_errors():
        if ray or ray_address is not None:
            _transcribe_on_ray(
                files, model=model, fmt=fmt, words=words, output_dir=output_dir,
                batch_size=batch_size, realtime=realtime, address=ray_address, workers=workers,
            )
            return
        if workers is not None:
            raise UsageError("--workers is for --ray runs; add --ray")
        from xswarm.transcribe import (
            RichProgress,
            TranscribeOptions,
            check_options,
            make_output_dir,
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
        if output_dir is not None:
            make_output_dir(output_dir)

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


def _transcribe_on_ray(
    inputs: list[str],
    *,
    model: str | None,
    fmt: str | None,
    words: bool,
    output_dir: Path | None,
    batch_size: int,
    realtime: bool,
    address: str | None,
    workers: int | None,
) -> None:
    """``--ray``: the corpus job (xswarm.cluster); exit 2 if any file failed."""
    from xswarm.cluster.inputs import expand_inputs
    from xswarm.cluster.job import ClusterOptions, ProgressLine, check_address, run_job
    from xswarm.transcript import FORMATS

    if output_dir is None:
        raise UsageError("--ray needs --output-dir DIR: each input's transcript is written there")
    if realtime:
        raise UsageError("--realtime paces one live stream; it cannot be used with --ray")
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: unknown format; use one of {', '.join(FORMATS)}")
    if address is not None:
        check_address(address)
    options = ClusterOptions(
        output_dir=output_dir, address=address, workers=workers, model=model,
        format=fmt or "jsonl", words=words, batch_size=batch_size,
    )
    found = expand_inputs(inputs)
    progress = ProgressLine(
        env.stderr, live=env.stderr_isatty, report=error_line, warn=warning_line
    )
    try:
        summary = run_job(found, options, progress=progress, note=warning_line)
    except (KeyboardInterrupt, Interrupted):
        warning_line(
            f"stopped; every output in {output_dir} is complete: "
            "run the same command again to resume"
        )
        raise
    if summary.failed:
        error_line(summary.line())
        raise typer.Exit(int(ExitCode.USAGE))
    print(summary.line(), file=env.stderr, flush=True)
