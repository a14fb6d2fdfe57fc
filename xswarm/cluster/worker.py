"""What runs inside one Ray actor: load the model once, then transcribe batches of files.

:class:`TranscribeWorker` knows nothing of Ray (the driver wraps it with
``ray.remote``), so it can be tested and benchmarked as a plain object. Its
model is opened exactly as a local run opens it
(:func:`xswarm.transcribe.open_engine`, on the worker's own
:class:`~xswarm.inference.worker.MlxWorker` thread), and each batch goes
through :func:`xswarm.transcribe.transcribe_files` with ``output_dir``: the
same batching by length, segmenting, formats and output names, and each
output written to a temporary name in the output directory, fsync-ed and
renamed when complete.

A bad file fails alone: the file loop already reports it and goes on. If the
engine itself raises on a batch, the files of that batch that have no result
yet are retried one by one, so only the file that breaks the model fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from xswarm.cluster.inputs import InputFile
from xswarm.errors import XswarmError

if TYPE_CHECKING:
    from xswarm.audio.files import AudioSource


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """What every worker of a job needs to know (sent once, when the actor is created)."""

    model: str  # resolved by the driver: a registry name, a directory or sphinx-en
    format: str  # one of xswarm.transcript.FORMATS
    words: bool
    output_dir: str  # absolute, on a filesystem every node shares
    batch_size: int  # the Kyutai engine's LM batch
    cwd: str  # the driver's working directory: relative input names resolve against it


@dataclasses.dataclass(frozen=True)
class WorkerReady:
    """The answer to :meth:`TranscribeWorker.load`: who the worker is, and whether it loaded."""

    worker: str  # host:pid
    model: str  # the engine's name
    load_seconds: float
    error: str | None = None  # the one-line message if the model could not be opened
    exit_code: int = 0  # the error's exit code (2: bad --model, 1: broken weights)


@dataclasses.dataclass(frozen=True)
class FileResult:
    """How one file of a batch ended on a worker."""

    name: str
    status: Literal["done", "failed"]
    duration: float | None  # s of audio; None if it could not be opened
    seconds: float  # wall time from the previous file's end (or the batch's start) to its end
    error: str | None
    worker: str


class TranscribeWorker:
    """One worker: :meth:`load` once, then :meth:`transcribe` batches; :meth:`close` at the end.

    Not thread-safe (the actor runs one call at a time). The model lives on
    this object's MLX thread, which :meth:`close` joins.
    """

    def __init__(self, spec: JobSpec) -> None:
        self._spec = spec
        self._mlx: object | None = None
        self._engine: object | None = None
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def load(self) -> WorkerReady:
        """Open the model on the MLX thread; errors come back in the answer, not raised."""
        from xswarm.inference.worker import MlxWorker
        from xswarm.transcribe import open_engine

        started = time.monotonic()
        # Relative names resolve as on the driver when the node shares its working
        # directory; otherwise the absolute paths are used (see _opener).
        with contextlib.suppress(OSError):
            os.chdir(self._spec.cwd)
        try:
            self._mlx = MlxWorker()
            engine = open_engine(
                self._spec.model,
                batch_size=self._spec.batch_size,
                note=lambda _message: None,
                worker=self._mlx,
            )
        except XswarmError as error:
            self.close()
            return WorkerReady(
                self.worker, self._spec.model, time.monotonic() - started,
                error=error.message, exit_code=int(error.exit_code),
            )
        self._engine = engine
        return WorkerReady(self.worker, engine.name, time.monotonic() - started)

    def transcribe(self, inputs: Sequence[InputFile]) -> list[FileResult]:
        """Transcribe ``inputs`` into the output directory; one result per input, in order."""
        results = self._batch(inputs)
        missing = [item for item in inputs if item.name not in results]
        if missing:
            for item in missing:  # the engine raised on the batch: find the file that breaks it
                results.update(self._batch([item]))
        return [results[item.name] for item in inputs]

    def _batch(self, inputs: Sequence[InputFile]) -> dict[str, FileResult]:
        from xswarm.transcribe import FileOutcome, TranscribeOptions, transcribe_files

        if self._engine is None:
            raise RuntimeError("TranscribeWorker.transcribe before a successful load()")
        spec = self._spec
        options = TranscribeOptions(
            format=spec.format, words=spec.words, output_dir=Path(spec.output_dir), fsync=True
        )
        results: dict[str, FileResult] = {}
        mark = time.monotonic()

        def record(outcome: FileOutcome) -> None:
            nonlocal mark
            now = time.monotonic()
            error = None if outcome.error is None else outcome.error.message
            results[outcome.path] = FileResult(
                outcome.path, "done" if error is None else "failed", outcome.duration,
                now - mark, error, self.worker,
            )
            mark = now

        try:
            transcribe_files(
                [item.name for item in inputs], self._engine, options,  # type: ignore[arg-type]
                stdout=io.StringIO(), report=lambda _error: None,
                open_source=_opener(inputs), on_file=record,
            )
        except Exception as error:  # the engine itself failed on this batch
            if len(inputs) == 1 and inputs[0].name not in results:
                message = error.message if isinstance(error, XswarmError) else (
                    f"the model failed on this file ({type(error).__name__}: {error})"
                )
                results[inputs[0].name] = FileResult(
                    inputs[0].name, "failed", None, time.monotonic() - mark,
                    f"{inputs[0].name}: {message}", self.worker,
                )
        return results

    def close(self) -> None:
        """Join the MLX thread (idempotent)."""
        mlx, self._mlx, self._engine = self._mlx, None, None
        if mlx is not None:
            mlx.close()  # type: ignore[attr-defined]


def _opener(inputs: Sequence[InputFile]) -> Callable[[str], AudioSource]:
    """Open a batch member by its name: as named where the name resolves to the same file
    (the node shares the driver's working directory), else by its absolute path, with the
    name kept for the transcript's ``file`` field."""
    from xswarm.audio.files import open_source

    paths = {item.name: item.path for item in inputs}

    def open_named(name: str) -> AudioSource:
        path = paths[name]
        if os.path.abspath(name) == path:
            return open_source(name)
        source = open_source(path)
        source.info = dataclasses.replace(source.info, path=name, name=name)
        return source

    return open_named
