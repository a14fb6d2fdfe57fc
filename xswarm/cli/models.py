"""``xswarm models list|pull|path``: which models exist here, fetch one, find its files."""

from __future__ import annotations

from typing import Any

import typer

from xswarm.cli._app import app, command_errors, emit_json, env

models_app = typer.Typer(
    name="models",
    help="List, download and locate models (Kyutai's checkpoints and generated test models).",
    no_args_is_help=True,
    epilog=(
        "Published models download into the Hugging Face cache (HF_HOME); generated ones "
        "(tiny-random, random-*) are built in xswarm's cache directory. Any command taking "
        "--model also accepts a checkpoint directory."
        "\n\nExamples:\n\n"
        "  xswarm models list\n\n"
        "  xswarm models pull moshiko-mlx-q4\n\n"
        "  xswarm models path tiny-random\n\n"
        "  xswarm models check tiny-random"
    ),
)
app.add_typer(models_app)

LIST_EXAMPLES = """
Examples:

  xswarm models list

  xswarm models list --json | jq -r '.[] | select(.cached) | .name'
"""


def _size(n: int) -> str:
    if n >= 1_000_000_000:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB"


@models_app.command("list", epilog=LIST_EXAMPLES)
def list_command(
    json_output: bool = typer.Option(False, "--json", help="Print a JSON array of models."),
) -> None:
    """List known models: name, kind, quantisation, size, whether it is here, and where.

    Nothing is downloaded or generated; "cached" means every file is on this
    machine. Sizes are approximate.
    """
    with command_errors():
        from xswarm.models import list_models

        rows = list_models()
        if json_output:
            emit_json([row.to_json() for row in rows])
            return
        console = env.console(stderr=False)
        width = max(len(row.name) for row in rows)
        for row in rows:
            here = "[green]cached[/]" if row.cached else "[dim]not cached[/]"
            where = f"  {row.path}" if row.path else ""
            console.print(
                f"{row.name:<{width}}  {row.kind:<5}  {row.quantization:<4}  "
                f"{_size(row.approx_bytes):>8}  {here}{where}",
                markup=True,
                highlight=False,
            )


PULL_EXAMPLES = """
Examples:

  xswarm models pull moshiko-mlx-q4

  xswarm models pull stt-1b-en_fr-mlx

  xswarm models pull random-1b      # generate the 1B architecture at random weights

  xswarm models pull tts-1.6b-en_fr --voice vctk/p244_023.wav
"""


@models_app.command("pull", epilog=PULL_EXAMPLES)
def pull_command(
    name: str = typer.Argument(..., help="Model name, from xswarm models list."),
    voices: list[str] = typer.Option(  # noqa: B008 - typer's idiom
        [],
        "--voice",
        metavar="NAME",
        help="Also fetch this kyutai/tts-voices voice (TTS models; repeatable).",
    ),
) -> None:
    """Download a model into the Hugging Face cache (or generate a generated one).

    Progress goes to stderr; an interrupted download resumes on the next pull.
    Prints the model directory on stdout when done. Fails (exit 1) offline
    (HF_HUB_OFFLINE set) or without network, with the reason.
    """
    with command_errors():
        from xswarm.models import get_spec, resolve

        spec = get_spec(name)
        if voices and (spec.voice_repo is None or spec.generated):
            from xswarm.errors import UsageError

            raise UsageError(
                f"--voice is for published Kyutai TTS models (tts-1.6b-en_fr); {spec.name} "
                "has no voices to pull"
            )
        if spec.generated:
            if env.stderr_isatty:
                env.console().print(f"generating {spec.name} (random weights)...")
            resolved = resolve(spec.name, pull=True)
        else:
            from xswarm.models.pull import pull_files

            with _Bar(spec.name) as bar:
                pull_files(spec, progress=bar.update)
                if voices:
                    from xswarm.models.pull import pull_voices

                    pull_voices(spec, voices, progress=bar.update)
            resolved = resolve(spec.name)
        print(resolved.directory, file=env.stdout, flush=True)


class _Bar:
    """A rich progress bar on stderr, one task per file; silent when stderr is not a TTY."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _Bar:
        if env.stderr_isatty:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=env.console(),
            )
            self._progress.start()
        return self

    def update(self, event: Any) -> None:
        if self._progress is None:
            if event.finished:
                print(f"{self._name}: {event.filename} done", file=env.stderr, flush=True)
            return
        task = self._tasks.get(event.filename)
        if task is None:
            task = self._progress.add_task(event.filename, total=event.total or None)
            self._tasks[event.filename] = task
        self._progress.update(task, completed=event.done, total=event.total or None)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


PATH_EXAMPLES = """
Examples:

  xswarm models path moshiko-mlx-q4

  ls "$(xswarm models path tiny-random)"
"""


@models_app.command("path", epilog=PATH_EXAMPLES)
def path_command(
    name: str = typer.Argument(..., help="Model name, or a checkpoint directory to check."),
) -> None:
    """Print the directory holding a model's files (exit 1 if they are not all here).

    tiny-random and tiny-random-stt are generated on first use; published
    models are looked up in the Hugging Face cache only, never downloaded.
    """
    with command_errors():
        from xswarm.models import resolve

        resolved = resolve(name)
        print(resolved.directory, file=env.stdout, flush=True)


CHECK_EXAMPLES = """
Examples:

  xswarm models check moshiko-mlx-q4

  xswarm models check ./my-checkpoint --quantize 8

  xswarm models check tiny-random --json
"""


@models_app.command("check", epilog=CHECK_EXAMPLES)
def check_command(
    name: str = typer.Argument(..., help="Model name, or a checkpoint directory."),
    quantize: int | None = typer.Option(
        None, "--quantize", "-q", help="Load with 4- or 8-bit weights (model.q4/q8 or in memory)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Load a model completely (LM, text tokenizer, Mimi) to prove its files are sound.

    Runs one frame through the codec. A missing, truncated or mismatched file
    is reported in one line naming it (exit 1); nothing is downloaded.
    """
    with command_errors():
        import time

        import numpy as np

        from xswarm.audio import FRAME_SAMPLES
        from xswarm.models import load_codec, load_lm, load_text_tokenizer, resolve

        started = time.perf_counter()
        resolved = resolve(name)
        with _LoadBar(resolved.lm_weights.name) as bar:
            model, config = load_lm(resolved, quantize=quantize, progress=bar.update)
        tokenizer = load_text_tokenizer(resolved)
        codebooks = max(config.generated_codebooks, config.other_codebooks)
        codec = load_codec(resolved, num_codebooks=codebooks)
        codes = codec.encode_step(np.zeros(FRAME_SAMPLES, dtype=np.float32))
        if config.generated_codebooks:
            codec.decode_step(codes)
        summary = {
            "name": resolved.name,
            "kind": resolved.kind,
            "directory": str(resolved.directory),
            "weights": resolved.lm_weights.name if quantize is None else f"{quantize}-bit",
            "weight_bytes": sum(v.nbytes for v in _leaves(model.parameters())),
            "text_tokens": tokenizer.vocab_size(),
            "codec": type(codec).__name__,
            "codebooks": codebooks,
            "seconds": round(time.perf_counter() - started, 3),
        }
        if json_output:
            emit_json(summary)
        else:
            print(
                f"ok: {summary['name']} ({summary['kind']}, {summary['weights']}): "
                f"{summary['weight_bytes'] / 1e6:.1f} MB of weights, "
                f"{summary['text_tokens']} text tokens, "
                f"{summary['codec']} with {codebooks} codebooks, "
                f"loaded in {summary['seconds']} s",
                file=env.stdout,
                flush=True,
            )


def _leaves(tree: Any) -> list[Any]:
    from mlx.utils import tree_flatten

    return [v for _, v in tree_flatten(tree)]


class _LoadBar:
    """A rich bar for ``load_lm``'s byte progress on stderr (TTY only)."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _LoadBar:
        if env.stderr_isatty:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn(f"loading {self._label}"),
                BarColumn(),
                DownloadColumn(),
                console=env.console(),
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=None)
        return self

    def update(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
