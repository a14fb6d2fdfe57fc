"""``xswarm transcribe``'s work: open the inputs, batch them through an engine, write transcripts.

This is the part written once for every engine (see
:mod:`xswarm.stt.engine`): inputs are opened in order and handed to the
engine ``batch_size`` at a time; its word events go through a per-file
:class:`~xswarm.transcript.Segmenter` to a per-file writer; progress events
drive the progress display. With a batching engine, inputs are grouped by
length (longest first), since a batch runs until its longest input ends.

Bad inputs never stop the run: a file that cannot be opened, or fails while
decoding, gets one line on stderr naming it (through ``report``) and counts
as a failure; every other file is still transcribed and its output is
complete. :func:`transcribe_files` returns the number of failures, and the
command exits 2 if there was any. (An input that fails part-way may already
have streamed some JSON lines to stdout; in ``--output-dir`` its file is
removed.)

Output goes to one file per input with ``output_dir`` (written to a temporary
name and renamed when complete, removed if the input failed), or to stdout in
input order: the first unfinished input streams straight through, later ones
are held in memory (text, small) until their turn, so a batch of files prints
exactly what the same files transcribed one by one would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TextIO

from xswarm.audio import FRAME_SECONDS
from xswarm.errors import UsageError, XswarmError
from xswarm.stt.engine import AudioStream, ProgressEvent, StreamEnd, SttEngine, WordEvent
from xswarm.transcript import EXTENSIONS, PRETTY, Segmenter, Writer, make_writer

if TYPE_CHECKING:
    import numpy as np

    from xswarm.audio.files import AudioSource

STDIN_OUTPUT_STEM: Final = "stdin"  # --output-dir file name for "-"
_WRITER: Final = f"{socket.gethostname()}-{os.getpid()}"  # in --output-dir temporary names
SUBTITLE_FORMATS: Final = ("srt", "vtt")  # one document per file: no concatenation on stdout


@dataclasses.dataclass(frozen=True)
class TranscribeOptions:
    """What the command line chose; see ``xswarm transcribe --help``."""

    format: str = "jsonl"  # one of transcript.FORMATS, or transcript.PRETTY
    words: bool = False  # one entry per word instead of per segment
    output_dir: Path | None = None
    realtime: bool = False  # pace the input at real time instead of as fast as possible
    fsync: bool = False  # --output-dir files reach the disk before their rename (cluster jobs)


@dataclasses.dataclass(frozen=True)
class FileOutcome:
    """How one input ended, for callers that keep a record per file (the cluster manifest).

    ``error`` is None when the input's output is complete (with ``output_dir``:
    renamed into place). ``duration`` is None when the file could not be opened.
    """

    index: int
    path: str
    duration: float | None  # s of audio decoded
    error: XswarmError | None


class Progress(Protocol):
    """What the file loop tells a progress display (see :class:`RichProgress`)."""

    def start_file(self, index: int, name: str, duration: float) -> None: ...

    def advance(self, index: int, seconds: float) -> None: ...

    def end_file(self, index: int) -> None: ...


class NoProgress:
    """The progress display when stderr is not a terminal: nothing."""

    def start_file(self, index: int, name: str, duration: float) -> None:
        pass

    def advance(self, index: int, seconds: float) -> None:
        pass

    def end_file(self, index: int) -> None:
        pass


def check_options(paths: Sequence[str], options: TranscribeOptions) -> None:
    """Reject option combinations before any work. Raises :class:`UsageError`."""
    if not paths:
        raise UsageError("no input files; name audio files, or - for stdin")
    if paths.count("-") > 1:
        raise UsageError("- (stdin) can be named only once")
    if options.output_dir is None:
        if options.format in SUBTITLE_FORMATS and len(paths) > 1:
            raise UsageError(
                f"--format {options.format} with {len(paths)} inputs needs one file per input: "
                "add --output-dir DIR"
            )
        return
    if options.output_dir.exists() and not options.output_dir.is_dir():
        raise UsageError(f"--output-dir {options.output_dir}: exists and is not a directory")
    seen: dict[str, str] = {}
    for path in paths:
        name = output_name(path, options.format)
        if name in seen and seen[name] != path:
            raise UsageError(
                f"{seen[name]} and {path} would both be written to {name}; "
                "transcribe them in separate calls or rename one"
            )
        seen[name] = path


def make_output_dir(path: Path) -> None:
    """Create ``--output-dir`` (and its parents) if needed and check it can be written.

    Raises :class:`UsageError` naming the directory when it cannot be created
    (a parent is a file, a read-only or missing mount) or is not writable.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"--output-dir {path}: cannot create it ({error.strerror or error}); "
            "choose a directory you can write to"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(
            f"--output-dir {path}: not writable; choose a directory you can write to"
        )


def output_name(path: str, fmt: str) -> str:
    """The ``--output-dir`` file name for input ``path``: its stem plus the format's suffix."""
    stem = STDIN_OUTPUT_STEM if path == "-" else Path(path).stem
    return stem + EXTENSIONS.get(fmt, ".txt")


def transcribe_files(
    paths: Sequence[str],
    engine: SttEngine,
    options: TranscribeOptions,
    *,
    stdout: TextIO,
    report: Callable[[XswarmError], None],
    progress: Progress | None = None,
    open_source: Callable[[str], AudioSource] | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
) -> int:
    """Transcribe every path (``"-"`` is stdin); return how many failed.

    ``report`` is called once per failed input with an error naming it;
    ``on_file`` once per input as it ends, done or failed (after its output
    file is in place).
    Engine errors (the model itself failing) are raised. A closed ``stdout``
    raises ``BrokenPipeError`` for the caller to end quietly.
    """
    if open_source is None:
        from xswarm.audio.files import open_source as open_file

        open_source = open_file
    progress = progress or NoProgress()
    output = _Output(stdout, options, paths=paths, on_file=on_file)
    try:
        failures = _loop(paths, engine, options, output, progress, report, open_source)
    except BaseException:
        output.abort()  # Ctrl-C, a closed pipe, an engine error: no half-written files left
        raise
    output.close()
    return failures


def _loop(
    paths: Sequence[str],
    engine: SttEngine,
    options: TranscribeOptions,
    output: _Output,
    progress: Progress,
    report: Callable[[XswarmError], None],
    open_source: Callable[[str], AudioSource],
) -> int:
    failures = 0
    queue = list(enumerate(paths))
    if engine.batch_size > 1:
        # Rows of a batch step together until the longest ends: batching inputs of
        # similar length wastes the least. Longest first; output stays in input order.
        lengths = durations(paths)
        queue.sort(key=lambda item: -lengths[item[0]])
    while queue:
        with contextlib.ExitStack() as stack:
            streams: list[AudioStream] = []
            while queue and len(streams) < engine.batch_size:
                index, path = queue.pop(0)
                try:
                    source = stack.enter_context(open_source(path))
                except XswarmError as error:
                    failures += 1
                    report(error)
                    output.skip(index, error)
                    continue
                output.begin(index, path, source.info.name)
                progress.start_file(index, source.info.name, source.info.duration)
                frames = source.frames()
                if options.realtime:
                    frames = _paced(frames)
                streams.append(
                    AudioStream(index, source.info.name, frames, _real_samples(source))
                )
            if streams:
                failures += _run(engine, streams, output, progress, report)
    return failures


def _real_samples(source: AudioSource) -> Callable[[], int]:
    return lambda: source.samples


def _run(
    engine: SttEngine,
    streams: Sequence[AudioStream],
    output: _Output,
    progress: Progress,
    report: Callable[[XswarmError], None],
) -> int:
    failures = 0
    segmenters = {stream.index: Segmenter() for stream in streams}
    events = engine.transcribe(streams)
    try:
        for event in events:
            if isinstance(event, WordEvent):
                for segment in segmenters[event.stream].push(event.word):
                    output.writer(event.stream).segment(segment)
            elif isinstance(event, ProgressEvent):
                progress.advance(event.stream, event.seconds)
            elif isinstance(event, StreamEnd):
                progress.advance(event.stream, event.duration)
                progress.end_file(event.stream)
                if event.error is not None:
                    failures += 1
                    report(event.error)
                    output.fail(event.stream, event.error, event.duration)
                    continue
                for segment in segmenters[event.stream].finish():
                    output.writer(event.stream).segment(segment)
                output.end(event.stream, event.duration)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
    return failures


def _paced(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Release frames no faster than real time (``--realtime``)."""
    start = time.monotonic()
    for count, frame in enumerate(frames):
        delay = start + count * FRAME_SECONDS - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield frame


class _Lane(io.TextIOBase):
    """One input's stdout output: held in memory until the input is the head, then live."""

    def __init__(self, stdout: TextIO, header: str = "") -> None:
        self._stdout = stdout
        self._buffer: io.StringIO | None = io.StringIO()
        self._header = header  # written before the first output (an input that fails first: none)

    def write(self, text: str) -> int:  # type: ignore[override]
        if self._header:
            header, self._header = self._header, ""
            self.write(header)
        if self._buffer is None:
            return self._stdout.write(text)
        return self._buffer.write(text)

    def flush(self) -> None:
        if self._buffer is None:
            self._stdout.flush()

    def held(self) -> str:
        return "" if self._buffer is None else self._buffer.getvalue()

    def go_live(self) -> None:
        """Write what was held to stdout; from now on write straight through."""
        if self._buffer is not None:
            held, self._buffer = self._buffer.getvalue(), None
            self._stdout.write(held)
            self._stdout.flush()


class _Output:
    """Where each input's transcript goes, in input order (see the module docstring).

    On stdout, ``json`` documents are collected into one array; ``txt`` and
    readable text get a ``==> name <==`` header per input when there are several.
    """

    def __init__(
        self,
        stdout: TextIO,
        options: TranscribeOptions,
        *,
        paths: Sequence[str],
        on_file: Callable[[FileOutcome], None] | None = None,
    ) -> None:
        self._stdout = stdout
        self._options = options
        self._paths = paths
        self._count = len(paths)
        self._on_file = on_file
        self._writers: dict[int, Writer] = {}
        self._lanes: dict[int, _Lane] = {}
        self._files: dict[int, tuple[Path, Path, TextIO]] = {}  # --output-dir: temp, final, file
        self._done: dict[int, bool] = {}  # index -> output complete (False: failed/skipped)
        self._head = 0  # the first input whose output is not yet all on stdout
        self._begun = 0
        self._documents = 0  # json documents written to stdout (for the array's commas)
        self._json_array = options.output_dir is None and options.format == "json"
        if self._json_array:
            stdout.write("[")

    def begin(self, index: int, path: str, name: str) -> None:
        options = self._options
        stream: TextIO
        if options.output_dir is not None:
            options.output_dir.mkdir(parents=True, exist_ok=True)
            final = options.output_dir / output_name(path, options.format)
            # unique per writer: a worker of a killed cluster job may still be finishing
            temporary = final.with_name(f".{final.name}.{_WRITER}.partial")
            stream = temporary.open("w", encoding="utf-8")
            self._files[index] = (temporary, final, stream)
        else:
            header = ""
            if self._count > 1 and options.format in ("txt", PRETTY):
                header = ("\n" if self._begun else "") + f"==> {name} <==\n"
            lane = self._lanes[index] = _Lane(self._stdout, header)
            if index == self._head and not self._json_array:
                lane.go_live()
            stream = lane
        self._begun += 1
        self._writers[index] = make_writer(options.format, stream, file=name, words=options.words)

    def writer(self, index: int) -> Writer:
        return self._writers[index]

    def end(self, index: int, duration: float) -> None:
        self._writers.pop(index).close(duration)
        lane = self._lanes.get(index)
        if lane is not None:
            lane.write("")  # a silent input still shows its header
        if index in self._files:
            temporary, final, stream = self._files.pop(index)
            if self._options.fsync:
                stream.flush()
                os.fsync(stream.fileno())
            stream.close()
            os.replace(temporary, final)
        self._finish(index, complete=True)
        self._record(index, duration, None)

    def fail(self, index: int, error: XswarmError, duration: float) -> None:
        self._writers.pop(index, None)
        self._lanes.pop(index, None)
        if index in self._files:
            temporary, _, stream = self._files.pop(index)
            stream.close()
            with contextlib.suppress(OSError):
                temporary.unlink()
        self._finish(index, complete=False)
        self._record(index, duration, error)

    def skip(self, index: int, error: XswarmError) -> None:
        self._finish(index, complete=False)
        self._record(index, None, error)

    def _record(self, index: int, duration: float | None, error: XswarmError | None) -> None:
        if self._on_file is not None:
            self._on_file(FileOutcome(index, self._paths[index], duration, error))

    def _finish(self, index: int, *, complete: bool) -> None:
        self._done[index] = complete
        while self._head in self._done:
            lane = self._lanes.pop(self._head, None)
            if lane is not None and self._json_array:
                document = lane.held()
                self._stdout.write(("," if self._documents else "") + "\n" + document)
                self._documents += 1
            elif lane is not None:
                lane.go_live()
            self._head += 1
            following = self._lanes.get(self._head)
            if following is not None and not self._json_array:
                following.go_live()  # still running: stream it from now on
        self._stdout.flush()

    def abort(self) -> None:
        """Remove the ``--output-dir`` files still being written."""
        for temporary, _, stream in self._files.values():
            stream.close()
            with contextlib.suppress(OSError):
                temporary.unlink()
        self._files.clear()

    def close(self) -> None:
        if self._json_array:
            self._stdout.write("\n]\n" if self._documents else "]\n")
        self._stdout.flush()


class RichProgress:
    """Per-file and total progress bars on stderr, with the real-time factor.

    Shown only when stderr is a terminal (the command decides). ``total`` is
    the summed duration of the inputs, as far as it could be read up front.
    Use as a context manager: the bars are removed when it exits.
    """

    def __init__(self, console: object, *, total: float, files: int) -> None:
        from rich.progress import (
            BarColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bars

        self._bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(),
            console=console,  # type: ignore[arg-type]
            transient=True,
        )
        self._started = time.monotonic()
        self._done_seconds = 0.0
        self._seconds: dict[int, float] = {}
        self._file_started: dict[int, float] = {}
        self._tasks: dict[int, object] = {}
        self._total = self._bars.add_task(
            f"total ({files} file{'s' * (files != 1)})", total=max(total, 1e-9), speed=""
        )

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bars.stop()

    def start_file(self, index: int, name: str, duration: float) -> None:
        self._seconds[index] = 0.0
        self._file_started[index] = time.monotonic()
        self._tasks[index] = self._bars.add_task(
            _short(name), total=max(duration, 1e-9), speed=""
        )

    def advance(self, index: int, seconds: float) -> None:
        if index not in self._tasks:
            return
        self._seconds[index] = seconds
        now = time.monotonic()
        audio = self._done_seconds + sum(self._seconds.values())
        speed = f"{audio / max(now - self._started, 1e-9):.2f}x real time"
        own = f"{seconds / max(now - self._file_started[index], 1e-9):.2f}x"
        self._bars.update(self._tasks[index], completed=seconds, speed=own)  # type: ignore[arg-type]
        self._bars.update(self._total, completed=audio, speed=speed)  # type: ignore[arg-type]

    def end_file(self, index: int) -> None:
        task = self._tasks.pop(index, None)
        if task is not None:
            self._bars.remove_task(task)  # type: ignore[arg-type]
            self._done_seconds += self._seconds.pop(index, 0.0)
            self._file_started.pop(index, None)


def _short(name: str, width: int = 30) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def durations(paths: Sequence[str]) -> list[float]:
    """Each input's duration from its header, 0 where it cannot be read (stdin, bad files)."""
    import soundfile

    found = []
    for path in paths:
        seconds = 0.0
        if path != "-":
            with contextlib.suppress(Exception):
                info = soundfile.info(path)
                seconds = info.frames / info.samplerate
        found.append(seconds)
    return found


def probe_duration(paths: Sequence[str]) -> float:
    """Summed duration of the inputs whose header reads (for the total bar; stdin counts 0)."""
    return sum(durations(paths))


# --- choosing the engine ------------------------------------------------------------------

FALLBACK_NOTE: Final = (
    "no Kyutai STT model in the local cache: using the offline fallback sphinx-en "
    "(pocketsphinx, English only, less accurate); for Kyutai's STT run: "
    "xswarm models pull stt-1b-en_fr-mlx"
)


def open_engine(
    model: str | None, *, batch_size: int, note: Callable[[str], None], worker: object = None
) -> SttEngine:
    """The engine for ``--model`` (``None``: the first Kyutai STT model cached, else sphinx-en).

    ``note`` receives the one-line fallback notice. ``worker`` is the MLX
    worker the Kyutai engine runs on. Raises :class:`UsageError` for an
    unknown name or a model that is not speech-to-text, and
    :class:`~xswarm.errors.ModelError` for missing or broken weights.
    """
    from xswarm.stt.sphinx import NAME as SPHINX

    model = choose_model(model, note=note)
    if model == SPHINX:
        from xswarm.stt.sphinx import SphinxEngine

        return SphinxEngine()
    from xswarm.stt.kyutai import load_kyutai_engine

    return load_kyutai_engine(model, batch_size=batch_size, worker=worker)


def choose_model(model: str | None, *, note: Callable[[str], None]) -> str:
    """``--model`` resolved without loading: ``None`` -> the first cached Kyutai STT model,
    else sphinx-en (``note`` gets the fallback notice). Other names are returned as given."""
    from xswarm.stt.sphinx import NAME as SPHINX

    if model is None:
        model = first_cached_stt_model()
        if model is None:
            note(FALLBACK_NOTE)
            model = SPHINX
    return model


def first_cached_stt_model() -> str | None:
    """The first published Kyutai STT model whose files are all in the local cache."""
    from xswarm.models.registry import REGISTRY
    from xswarm.models.resolve import status

    for spec in REGISTRY.values():
        if spec.kind != "stt" or spec.generated:
            continue
        with contextlib.suppress(XswarmError):
            if status(spec).cached:
                return spec.name
    return None
