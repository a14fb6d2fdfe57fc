"""The one thread that runs every MLX call, and how Trio awaits its results.

MLX is not thread-safe: the app this project replaces crashed calling the model
from the audio callback, and ``trio.to_thread.run_sync`` may pick a different
thread for each call. So all MLX work, loading included, goes through one
:class:`MlxWorker`: a dedicated, non-daemon ``threading.Thread`` named
``xswarm-mlx`` that takes calls from a FIFO queue and runs them one at a time,
in submission order.

How Trio waits (no Trio worker thread is held): :meth:`MlxWorker.run` queues
the call and parks the task with ``trio.lowlevel.wait_task_rescheduled``. When
the call finishes, the MLX thread hands the outcome back with
``TrioToken.run_sync_soon``, whose callback reschedules the task. Parking is
cheap (no thread, no polling) and the result, or the exception with its
original traceback, reaches the awaiting task.

Cancellation: an MLX call cannot be interrupted. If the awaiting task is
cancelled while its call is queued or running, the task gets ``Cancelled``
at once (it does not wait for the call) and the call is *abandoned*: if it had
not started, it is skipped; if it is running, it runs to the end on the MLX
thread and its result or exception is thrown away. Later calls wait behind it
as usual. :meth:`MlxWorker.aclose` / :meth:`MlxWorker.close` wait for the
running call (it cannot be stopped) and join the thread, so no thread outlives
the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, TypeVar

import outcome
import trio

__all__ = ["MlxWorker", "WorkerClosedError", "open_mlx_worker"]

R = TypeVar("R")

log = logging.getLogger(__name__)

THREAD_NAME: Final = "xswarm-mlx"
IDLE_CHECK_SECONDS: Final = 0.5  # how often an idle worker checks that the main thread lives


class WorkerClosedError(RuntimeError):
    """A call was submitted to an MLX worker that is closed (a programming error)."""


@dataclass(eq=False)
class _Call:
    """One queued call and where its outcome goes."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    deliver: Callable[[outcome.Outcome[Any]], None]
    abandoned: bool = field(default=False)  # set from the Trio thread on cancel


@dataclass(eq=False)
class _Stop:
    """Queued by close(): the loop ends after the calls queued before it."""

    notify: Callable[[], None] | None = None  # called on the MLX thread as it leaves


def _serve(calls: queue.SimpleQueue[Any], ready: threading.Event) -> None:
    """The MLX thread's loop. Holds no reference to the MlxWorker (so it can be collected)."""
    ready.set()
    main = threading.main_thread()
    while True:
        try:
            call = calls.get(timeout=IDLE_CHECK_SECONDS)
        except queue.Empty:
            # The interpreter is exiting without close(): a non-daemon thread would
            # hold the exit forever waiting on an empty queue, so leave.
            if not main.is_alive():
                return
            continue
        if isinstance(call, _Stop):
            if call.notify is not None:
                call.notify()
            return
        if call.abandoned:
            continue  # cancelled before it started: skip it
        result = outcome.capture(call.fn, *call.args)
        call.deliver(result)
        del call, result  # drop references (large arrays) before waiting again


def _in_trio_run() -> bool:
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


class MlxWorker:
    """Runs calls one at a time on a dedicated thread; see the module docstring.

    The thread starts in the constructor. Close it with :meth:`close` (sync),
    :meth:`aclose` (Trio), ``with MlxWorker() as worker`` or
    ``async with open_mlx_worker() as worker``; closing lets queued calls finish,
    then joins the thread. Calls submitted after closing raise
    :class:`WorkerClosedError`.
    """

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders submissions against the stop
        self._closed = False
        ready = threading.Event()
        self._thread = threading.Thread(
            target=_serve, args=(self._calls, ready), name=THREAD_NAME, daemon=False
        )
        self._thread.start()
        ready.wait()
        ident = self._thread.ident
        assert ident is not None
        self._ident: int = ident
        # Forgotten without close(): stop the thread when the worker is collected.
        self._finalizer = weakref.finalize(self, self._calls.put, _Stop())

    @property
    def thread_ident(self) -> int:
        """``threading.get_ident()`` of the MLX thread: every call runs there."""
        return self._ident

    @property
    def closed(self) -> bool:
        return self._closed

    def on_worker_thread(self) -> bool:
        """Whether the caller is running on this worker's MLX thread."""
        return threading.get_ident() == self._ident

    # -- calls

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(*args)`` on the MLX thread and return its result (Trio only).

        Raises what ``fn`` raised, with its traceback. Cancellation returns at once
        and abandons the call (see the module docstring). Bind keyword arguments
        with ``functools.partial``.
        """
        token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()
        await trio.lowlevel.checkpoint_if_cancelled()

        def resume(result: outcome.Outcome[Any]) -> None:  # on the Trio thread
            if not call.abandoned:
                trio.lowlevel.reschedule(task, result)

        def deliver(result: outcome.Outcome[Any]) -> None:  # on the MLX thread
            # RunFinishedError: the Trio run ended while an abandoned call ran; nobody waits.
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(resume, result)

        call = _Call(fn, args, deliver)
        self._submit(call)

        def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
            call.abandoned = True
            return trio.lowlevel.Abort.SUCCEEDED

        result: R = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    def call(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(*args)`` on the MLX thread, blocking until done (for non-Trio code).

        On the MLX thread itself (``fn`` calling ``call``) it runs inline instead of
        deadlocking. Not for Trio code (it would stall the event loop): raises
        ``RuntimeError`` there; use ``await worker.run(...)``.
        """
        if self.on_worker_thread():
            return fn(*args)
        if _in_trio_run():
            raise RuntimeError("MlxWorker.call blocks: in Trio code use `await worker.run(...)`")
        future: Future[Any] = Future()

        def deliver(result: outcome.Outcome[Any]) -> None:
            if isinstance(result, outcome.Error):
                future.set_exception(result.error)
            elif isinstance(result, outcome.Value):
                future.set_result(result.value)

        self._submit(_Call(fn, args, deliver))
        value: R = future.result()
        return value

    def _submit(self, call: _Call) -> None:
        # Under the lock, a call is either queued before the stop (and runs) or refused.
        with self._lock:
            if self._closed:
                raise WorkerClosedError("the MLX worker is closed; open a new one")
            self._calls.put(call)

    # -- closing

    def _stop(self, notify: Callable[[], None] | None = None) -> bool:
        """Queue the stop; False if it was queued before."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._finalizer.detach()
            self._calls.put(_Stop(notify))
            return True

    def close(self) -> None:
        """Let queued calls finish, stop the thread and join it (idempotent; blocks)."""
        if self.on_worker_thread():
            raise RuntimeError("MlxWorker.close cannot be called from the MLX thread")
        self._stop()
        self._thread.join()

    async def aclose(self) -> None:
        """Trio version of :meth:`close`: waits for the thread without blocking Trio.

        Shielded: a cancelled caller still waits for the running call to end and the
        thread to be joined (an MLX call cannot be stopped, and a thread left running
        MLX while the interpreter exits is how crashes happen). Idempotent.
        """
        with trio.CancelScope(shield=True):
            token = trio.lowlevel.current_trio_token()
            left = trio.Event()

            def notify() -> None:  # on the MLX thread, as its loop returns
                with suppress(trio.RunFinishedError):
                    token.run_sync_soon(left.set)

            if self._stop(notify):
                await left.wait()
            elif self._thread.is_alive():  # close() raced us from another thread
                await trio.to_thread.run_sync(self._thread.join)
            # The loop has returned: join only waits for the thread's last bytecodes.
            self._thread.join()
            await trio.lowlevel.checkpoint()

    def __enter__(self) -> MlxWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MlxWorker {state} thread={self._ident}>"


@asynccontextmanager
async def open_mlx_worker() -> AsyncIterator[MlxWorker]:
    """An :class:`MlxWorker` closed (thread joined) when the block exits, even on cancel."""
    worker = MlxWorker()
    try:
        yield worker
    finally:
        await worker.aclose()
