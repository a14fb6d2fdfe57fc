"""The driver of ``xswarm transcribe --ray``: Ray runtime, actors, batches, manifest, progress.

:func:`run_job` does, in order:

1. Takes the output directory's lock (the manifest file, ``flock``): one job
   per output directory at a time.
2. Splits the inputs into done (their output file exists: recorded as
   ``skipped``) and to do, removes stale ``.NAME.WRITER.partial`` files of the latter
   (left by a killed run; nobody else writes there while we hold the lock) and
   reads the to-do files' durations from their headers (for batching and the ETA).
3. Starts a local Ray runtime (``address`` None) or joins a cluster, and creates
   the workers: Ray actors of :class:`~xswarm.cluster.worker.TranscribeWorker`.
   Default count: one per CPU of the cluster for sphinx-en (it decodes on one
   core), one per node for Kyutai models (MLX uses every core of a node, and
   each copy of the weights weighs GBs); ``--workers N`` spreads N over the
   nodes, sharing CPUs if N exceeds them. Each loads the model once;
   a worker is fed as soon as it is loaded (no barrier), with up to
   :data:`TASKS_PER_WORKER` batches queued so it never waits for the driver.
4. Batches are the to-do files sorted longest first, cut into groups of the
   engine's batch size (1 for sphinx-en, ``--batch-size`` for Kyutai models),
   so a Kyutai LM batch holds files of similar length and the longest files
   do not end up last, alone.
5. Each result becomes manifest lines and progress; the summary is returned.

A worker that dies (crash, out of memory, lost node) is replaced, once
however many of its batches fail; of those batches, files whose output is in
place are recorded as done, the others are retried once, one file per batch,
on any loaded worker with room, and a file whose retry kills a worker too
fails with that reason. The job itself fails only if no worker can load the model.

Ctrl-C (or SIGTERM, also while Ray starts): the workers are killed and their
temporary outputs removed, the manifest gets an ``interrupted`` line, the Ray
runtime is shut down, and ``KeyboardInterrupt`` (or
:class:`~xswarm.errors.Interrupted`) propagates. Outputs are only ever renamed
into place whole, so a rerun finds every file either complete or absent.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import logging
import math
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from xswarm.cluster.inputs import InputFile
from xswarm.cluster.manifest import MANIFEST_NAME, Manifest, done_durations, utc_now
from xswarm.cluster.worker import FileResult, JobSpec, TranscribeWorker, WorkerReady
from xswarm.errors import ExitCode, Interrupted, UsageError, XswarmError

INSTALL_HINT: Final = "pip install 'xswarm[cluster]'"
AUTH_HINT: Final = (  # Ray turns token auth on for `ray start --head` when ~/.ray/auth_token exists
    "run with RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
)
TASKS_PER_WORKER: Final = 2  # batches queued per actor: one running, one waiting (hides the hop)
WAIT_SECONDS: Final = 0.5  # s, longest the driver waits for a result before redrawing progress
QUIET_PROGRESS_SECONDS: Final = 10.0  # s between progress lines when stderr is not a terminal
LOCAL_OBJECT_STORE_BYTES: Final = 100 * 1024 * 1024  # results are small: Ray's minimum is ~75 MB
CONNECT_CHECK_SECONDS: Final = 3.0  # s to reach host:port before handing the address to Ray
FAILED_NAMED: Final = 10  # failed files named in the summary line; the manifest has them all


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """What ``xswarm transcribe --ray`` was asked; see its ``--help``."""

    output_dir: Path
    address: str | None = None  # None: a new local Ray runtime; "auto", "ray://h:p", "h:p"
    workers: int | None = None  # None: one per CPU (sphinx-en) or one per node (Kyutai)
    model: str | None = None  # None: as locally (first cached Kyutai STT model, else sphinx-en)
    format: str = "jsonl"
    words: bool = False
    batch_size: int = 8  # Kyutai LM batch
    local_cpus: int | None = None  # CPUs of the local runtime (None: all of this machine's)


@dataclasses.dataclass
class JobSummary:
    """What a run did; :meth:`line` is the command's last line on stderr."""

    inputs: int
    done: int = 0
    skipped: int = 0
    failed: list[str] = dataclasses.field(default_factory=list)
    audio_seconds: float = 0.0  # transcribed by this run
    wall_seconds: float = 0.0  # from the first worker ready to the last result
    workers: int = 0
    model: str = ""
    manifest: Path = Path(MANIFEST_NAME)

    def line(self) -> str:
        speed = self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0
        text = (
            f"transcribed {self.done} of {self.inputs} files "
            f"({_hours(self.audio_seconds)} of audio in {_clock(self.wall_seconds)}, "
            f"{speed:.1f}x real time, {self.workers} worker{'s' * (self.workers != 1)}, "
            f"{self.model}); {self.skipped} already done"
        )
        if self.failed:
            named = ", ".join(self.failed[:FAILED_NAMED])
            more = len(self.failed) - FAILED_NAMED
            named += f" and {more} more" if more > 0 else ""
            text += f"; {len(self.failed)} failed: {named}"
        return f"{text}; manifest: {self.manifest}"


class ProgressLine:
    """Files done/total, audio hours per hour, ETA and failures on stderr.

    On a terminal one line redrawn in place; otherwise a line every
    :data:`QUIET_PROGRESS_SECONDS`. :meth:`message` prints a line above it.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        live: bool,
        report: Callable[[str], None],
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self._stream = stream
        self._live = live
        self._report = report
        self._warn = warn or report
        self._shown = False
        self._last = -math.inf

    def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._live:
            self._stream.write(f"\r{text}\x1b[K")
            self._stream.flush()
            self._shown = True
        elif force or now - self._last >= QUIET_PROGRESS_SECONDS:
            self._stream.write(text + "\n")
            self._stream.flush()
            self._last = now

    def message(self, text: str) -> None:
        """An error line (a failed file) above the progress line."""
        self.clear()
        self._report(text)

    def warning(self, text: str) -> None:
        """A warning line (a lost worker) above the progress line."""
        self.clear()
        self._warn(text)

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False


@dataclasses.dataclass(frozen=True)
class _Batch:
    files: tuple[InputFile, ...]
    attempt: int = 1  # 2: retried alone after its worker died


@dataclasses.dataclass
class _Tally:
    """Running counts for the progress line."""

    to_do: int
    remaining_audio: float  # s of audio not yet finished (header durations)
    finished: int = 0
    failed: int = 0
    audio: float = 0.0
    started: float | None = None  # monotonic time the first worker was ready

    def text(self, workers: int) -> str:
        line = f"ray: {self.finished}/{self.to_do} files"
        if self.started is None:
            return f"{line}, loading the model on the workers..."
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.audio / elapsed  # audio seconds per wall second = audio hours per hour
        eta = _clock(self.remaining_audio / rate) if rate > 0 else "?"
        return (
            f"{line}, {_hours(self.audio)} audio at {rate:.1f} h/h, ETA {eta}, "
            f"{self.failed} failed, {workers} worker{'s' * (workers != 1)}"
        )


def run_job(
    inputs: Sequence[InputFile],
    options: ClusterOptions,
    *,
    progress: ProgressLine,
    note: Callable[[str], None],
) -> JobSummary:
    """Transcribe ``inputs`` on Ray into ``options.output_dir``; see the module docstring.

    Failed files are reported through ``progress.message`` and counted in the
    summary (the caller decides the exit code). If the caller already called
    ``ray.init``, that session is used (``address`` is ignored) and left running.
    Raises :class:`UsageError` for a bad address or a job already running on the directory,
    :class:`XswarmError` when Ray is missing, the cluster cannot be joined or
    no worker can load the model, and ``KeyboardInterrupt`` /
    :class:`Interrupted` after a clean shutdown.
    """
    from xswarm.transcribe import (
        TranscribeOptions,
        check_options,
        choose_model,
        make_output_dir,
        output_name,
    )

    names = [item.name for item in inputs]
    output_dir = options.output_dir.absolute()
    check_options(names, TranscribeOptions(format=options.format, output_dir=output_dir))
    for name in names:
        if output_name(name, options.format) == MANIFEST_NAME:
            raise UsageError(f"{name}: its output would overwrite the manifest; rename it")
    ray = _import_ray()
    if options.address is not None:
        _check_reachable(options.address)  # before anything is written: a typo costs nothing
    model = choose_model(options.model, note=note)
    make_output_dir(options.output_dir)
    manifest_path = output_dir / MANIFEST_NAME
    summary = JobSummary(inputs=len(inputs), model=model, manifest=manifest_path)
    with _locked(manifest_path), Manifest(manifest_path) as manifest:
        run = uuid.uuid4().hex[:12]
        known = done_durations(manifest_path)
        to_do: list[InputFile] = []
        done_before = [
            item for item in inputs
            if (output_dir / output_name(item.name, options.format)).exists()
        ]
        # a file done by a run killed before it could record it: its header's duration
        known.update(_durations([item for item in done_before if item.name not in known]))
        done_names = {item.name for item in done_before}
        manifest.append({  # first: a run's file lines follow its start line
            "type": "job", "event": "start", "run": run, "time": utc_now(),
            "inputs": len(inputs), "to_do": len(inputs) - len(done_names),
            "skipped": len(done_names), "model": model, "address": options.address or "local",
        })
        event, error = "interrupted", None
        owned = not ray.is_initialized()  # a caller's own Ray session is used, and left up
        try:
            for item in inputs:
                output = output_dir / output_name(item.name, options.format)
                if item.name in done_names:
                    summary.skipped += 1
                    manifest.append(_file_line(
                        run, item.name, output.name, "skipped", known.get(item.name), model,
                        None, None, None,
                    ))
                else:
                    to_do.append(item)
                    for stale in output_dir.glob(f".{glob.escape(output.name)}.*.partial"):
                        with contextlib.suppress(OSError):
                            stale.unlink()
            durations = _durations(to_do)
            spec = JobSpec(
                model=model, format=options.format, words=options.words,
                output_dir=str(output_dir), batch_size=options.batch_size, cwd=os.getcwd(),
            )
            if to_do:
                if owned:
                    try:
                        _connect(ray, options)
                    except SystemExit as stop:  # ray.init's own SIGTERM handler: sys.exit(15)
                        if stop.code != signal.SIGTERM:
                            raise
                        raise Interrupted(signal.SIGTERM) from None
                with _Terminate().installed() as terminate:  # after ray.init, which sets its own
                    _schedule(ray, to_do, durations, spec, options, manifest, run, summary,
                              progress, terminate)
            event = "end"
        except XswarmError as failure:
            if not isinstance(failure, Interrupted):
                event, error = "failed", failure.message
            raise
        finally:
            progress.clear()
            manifest.append({  # before the shutdown (seconds), which a second Ctrl-C may cut
                "type": "job", "event": event, "run": run, "time": utc_now(),
                "done": summary.done, "failed": len(summary.failed), "skipped": summary.skipped,
                "audio_seconds": round(summary.audio_seconds, 3),
                "wall_seconds": round(summary.wall_seconds, 3), "workers": summary.workers,
                "error": error,
            })
            with contextlib.suppress(Exception):
                if owned and ray.is_initialized():
                    ray.shutdown()
    return summary


def _schedule(
    ray: Any,
    to_do: list[InputFile],
    durations: dict[str, float],
    spec: JobSpec,
    options: ClusterOptions,
    manifest: Manifest,
    run: str,
    summary: JobSummary,
    progress: ProgressLine,
    terminate: _Terminate,
) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from xswarm.stt.sphinx import NAME as SPHINX

    output_dir = Path(spec.output_dir)
    per_batch = 1 if spec.model == SPHINX else spec.batch_size
    ordered = sorted(to_do, key=lambda item: -durations.get(item.name, 0.0))
    queue = collections.deque(
        _Batch(tuple(ordered[i : i + per_batch])) for i in range(0, len(ordered), per_batch)
    )
    tally = _Tally(to_do=len(to_do), remaining_audio=sum(durations.values()))
    cpus = max(1.0, float(ray.cluster_resources().get("CPU", 1.0)))
    nodes = [node["NodeID"] for node in ray.nodes()
             if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0]
    # sphinx-en decodes on one core: a worker per CPU. Kyutai's MLX model uses every
    # core of a node and weighs GBs: a worker per node.
    per_node = options.workers is None and spec.model != SPHINX and bool(nodes)
    count = worker_count(
        options.workers, per_node=per_node, nodes=len(nodes), cpus=cpus, batches=len(queue)
    )
    homes = list(nodes) if per_node else []
    # More workers than CPUs was asked for: share the CPUs so every actor can be placed.
    actor_class = ray.remote(TranscribeWorker)
    placement = {"num_cpus": min(1.0, cpus / count), "max_restarts": 0}
    actors: list[Any] = []
    loads: dict[Any, Any] = {}
    running: dict[Any, tuple[Any, _Batch]] = {}
    load_errors: list[WorkerReady] = []
    names: dict[Any, str] = {}  # actor -> host:pid, once loaded
    live: list[Any] = []  # loaded actors not known to be dead
    in_flight: collections.Counter[Any] = collections.Counter()  # actor -> batches sent

    def start_worker() -> None:
        strategy: Any = "SPREAD"
        if homes:  # the first workers of a one-per-node job: each pinned to its node
            strategy = NodeAffinitySchedulingStrategy(homes.pop(), soft=True)
        actor = actor_class.options(**placement, scheduling_strategy=strategy).remote(spec)
        actors.append(actor)
        loads[actor.load.remote()] = actor

    def feed(actor: Any) -> None:
        """Send ``actor`` batches until it has :data:`TASKS_PER_WORKER` or the queue is empty."""
        while queue and in_flight[actor] < TASKS_PER_WORKER:
            batch = queue.popleft()
            running[actor.transcribe.remote(list(batch.files))] = (actor, batch)
            in_flight[actor] += 1

    def record(result: FileResult) -> None:
        tally.finished += 1
        tally.remaining_audio -= durations.get(result.name, 0.0)
        output = output_name_of(result.name)
        if result.status == "done":
            summary.done += 1
            summary.audio_seconds += result.duration or 0.0
            tally.audio += result.duration or 0.0
        else:
            summary.failed.append(result.name)
            tally.failed += 1
            progress.message(result.error or f"{result.name}: failed")
        manifest.append(_file_line(
            run, result.name, output, result.status, result.duration, summary.model,
            result.worker, result.error, result.seconds,
        ))

    def output_name_of(name: str) -> str:
        from xswarm.transcribe import output_name

        return output_name(name, spec.format)

    for _ in range(count):
        start_worker()
    stopped = True
    try:
        while queue or running:
            if not loads and not running:
                first = load_errors[0]  # every worker failed to load the model
                raise XswarmError(first.error or "no worker could load the model",
                                  exit_code=ExitCode(first.exit_code or 1))
            done, _ = ray.wait([*loads, *running], num_returns=1, timeout=WAIT_SECONDS)
            terminate.check()
            for ref in done:
                if ref in loads:
                    actor = loads.pop(ref)
                    answer = _get_ready(ray, ref)
                    if answer.error is not None:
                        load_errors.append(answer)
                        continue
                    live.append(actor)
                    names[actor] = answer.worker
                    summary.workers = max(summary.workers, len(live))
                    summary.model = answer.model
                    if tally.started is None:
                        tally.started = time.monotonic()
                    feed(actor)
                    continue
                actor, batch = running.pop(ref)
                in_flight[actor] -= 1
                try:
                    results: list[FileResult] = ray.get(ref)
                except ray.exceptions.RayError as error:
                    _lost(ray, error, actor, batch, output_dir, durations, queue, record,
                          output_name_of, summary)
                    died = isinstance(error, ray.exceptions.RayActorError)
                    if died and actor in live:  # its other batches fail too: once is enough
                        live.remove(actor)
                        _remove_temporaries(output_dir, names.get(actor, ""))
                        progress.warning(
                            f"worker {names.get(actor, '?')} died ({_first_line(error)}); "
                            "its files go to the other workers, and a new worker starts"
                        )
                        with contextlib.suppress(Exception):
                            ray.kill(actor)
                        start_worker()
                    for other in live:  # the files put back go to whoever has room now
                        feed(other)
                    continue
                for result in results:
                    record(result)
                feed(actor)
            progress.show(tally.text(len(live)))
        stopped = False
    finally:
        if tally.started is not None:
            summary.wall_seconds = time.monotonic() - tally.started
        _kill(ray, actors)
        if stopped:  # Ctrl-C, SIGTERM, a failed job: workers were stopped mid-file
            _remove_temporaries(output_dir, *names.values())  # rather than at the next run
    if load_errors and summary.workers < count:
        progress.warning(
            f"{len(load_errors)} worker(s) could not load the model: {load_errors[0].error}"
        )
    progress.show(tally.text(len(live)), force=True)


def worker_count(
    requested: int | None, *, per_node: bool, nodes: int, cpus: float, batches: int
) -> int:
    """How many workers a job starts: ``requested`` (``--workers``), else one per node
    (``per_node``) or one per CPU; never more than there are batches, since each worker
    loads the model (GBs for Kyutai) and one without a batch would load it for nothing."""
    count = requested or (nodes if per_node else int(cpus))
    return max(1, min(count, batches))


def _lost(
    ray: Any,
    error: Exception,
    actor: Any,
    batch: _Batch,
    output_dir: Path,
    durations: dict[str, float],
    queue: collections.deque[_Batch],
    record: Callable[[FileResult], None],
    output_name_of: Callable[[str], str],
    summary: JobSummary,
) -> None:
    """A batch whose worker died (or raised): keep what is on disk, retry or fail the rest."""
    died = isinstance(error, ray.exceptions.RayActorError)
    reason = (
        "the worker died while transcribing it (a crash, out of memory or a lost node)"
        if died else f"the worker failed: {_first_line(error)}"
    )
    for item in batch.files:
        if (output_dir / output_name_of(item.name)).exists():
            record(FileResult(item.name, "done", durations.get(item.name), 0.0, None, "lost"))
        elif batch.attempt == 1:  # once more, alone, on another worker
            queue.append(_Batch((item,), attempt=2))
        else:
            record(FileResult(item.name, "failed", None, 0.0, f"{item.name}: {reason}", "lost"))


def _kill(ray: Any, actors: Sequence[Any]) -> None:
    for actor in actors:
        with contextlib.suppress(Exception):
            ray.kill(actor)


def _remove_temporaries(output_dir: Path, *workers: str) -> None:
    """Remove the temporary outputs that stopped workers (``host:pid``) left behind
    (``.NAME.HOST-PID.partial``, see :mod:`xswarm.transcribe`); one listing for all."""
    endings = tuple(
        f".{host}-{pid}.partial"
        for host, _, pid in (worker.rpartition(":") for worker in workers) if host
    )
    if not endings:
        return
    with contextlib.suppress(OSError), os.scandir(output_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(endings):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _get_ready(ray: Any, ref: Any) -> WorkerReady:
    try:
        answer: WorkerReady = ray.get(ref)
    except ray.exceptions.RayError as error:
        return WorkerReady(
            "?", "", 0.0, error=f"a worker could not start: {_first_line(error)}", exit_code=1
        )
    return answer


def _file_line(
    run: str, name: str, output: str, status: str, duration: float | None, model: str,
    worker: str | None, error: str | None, seconds: float | None,
) -> dict[str, Any]:
    return {
        "type": "file", "file": name, "status": status, "output": output,
        "duration": None if duration is None else round(duration, 3), "model": model,
        "worker": worker, "error": error,
        "seconds": None if seconds is None else round(seconds, 3),
        "time": utc_now(), "run": run,
    }


def _durations(items: Sequence[InputFile]) -> dict[str, float]:
    from xswarm.transcribe import durations

    return dict(zip([i.name for i in items], durations([i.path for i in items]), strict=True))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "ab") as held:
        try:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(
                f"{path.parent}: another xswarm transcribe --ray job is writing there; "
                "wait for it or choose another --output-dir"
            ) from None
        yield


class _Terminate:
    """SIGTERM ends the job like Ctrl-C (clean shutdown), as :class:`Interrupted`.

    The handler only notes the signal; the driver's loop calls :meth:`check`
    after each wait (at most :data:`WAIT_SECONDS`). Raising from the handler
    itself would surface inside Ray's Cython ``wait`` as a ``SystemError``.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Terminate]:
        def handler(signum: int, _frame: object) -> None:
            self.signum = signum

        try:
            previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: leave signals alone
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)


def _import_ray() -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report, no prompt
    try:
        import ray
    except ImportError:
        raise XswarmError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def check_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``ray://host:port`` or ``host:port``; None for ``auto``.

    Raises :class:`UsageError` for anything else.
    """
    if address == "auto":
        return None
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    if "://" in rest or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            f"--ray-address {address}: not a Ray address; use ray://HOST:PORT (Ray client, "
            "port 10001 by default), HOST:PORT (the head's GCS port, 6379 by default) or auto"
        )
    return host.strip("[]"), int(port)


def _check_reachable(address: str) -> None:
    """Fail fast (XswarmError) when nothing listens at the address (Ray would retry for long)."""
    import socket

    target = check_address(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=CONNECT_CHECK_SECONDS).close()
    except OSError as error:
        raise XswarmError(
            f"--ray-address {address}: cannot reach a Ray cluster there "
            f"({error.strerror or error}); start one with `ray start --head`, "
            "or check the host and port"
        ) from None


def _connect(ray: Any, options: ClusterOptions) -> None:
    """Start the local runtime or join the cluster, quietly. Raises XswarmError."""
    address = options.address
    if address is None:
        try:
            ray.init(
                address="local", num_cpus=options.local_cpus, include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=False,
                logging_level=logging.ERROR,
            )
        except Exception as error:
            raise XswarmError(
                f"could not start a local Ray runtime: {_first_line(error)}"
            ) from None
        return
    try:
        with _captured_stderr() as captured:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as error:
        said = captured.text + "".join(
            str(cause) for cause in (error, error.__cause__, error.__context__) if cause
        )
        if any(mark in said for mark in ("InvalidAuthToken", "AuthenticationError")):
            hint = f"; the cluster uses token authentication: {AUTH_HINT}"
        elif address != "auto" and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            # (auto turns token mode on by itself when this machine has the token)
            hint = f"; if the cluster uses token authentication: {AUTH_HINT}"
        else:
            hint = ""
        if address == "auto":
            hint = "; start one with `ray start --head`" + hint
        raise XswarmError(
            f"--ray-address {address}: could not join the Ray cluster "
            f"({_first_line(error)}){hint}"
        ) from None
    if captured.text:  # a join that worked: nothing of what Ray said is hidden
        os.write(2, captured.text.encode("utf-8", "replace"))


@dataclasses.dataclass
class _Captured:
    text: str = ""


@contextlib.contextmanager
def _captured_stderr() -> Iterator[_Captured]:
    """Collect what is written to file descriptor 2 (Ray's C++ core logs a line a second
    while it retries a join, and its client warns through ``warnings``) into
    ``.text``, for the caller to read or replay; stderr is restored on the way out."""
    import tempfile
    import warnings

    captured = _Captured()
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            said = sink.read().decode("utf-8", "replace")
            said += "".join(f"{warning.message}\n" for warning in caught)
            captured.text = said


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.1f} s"


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
