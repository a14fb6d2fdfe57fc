"""Actor supervision on Trio: bounded channels with an overflow policy, metrics, shutdown.

An xswarm session is a handful of *actors* (async functions: mic, inference,
playback, logger) running in one Trio nursery and linked by bounded memory
channels. This module gives them three things:

- :func:`open_channel`: a ``trio.open_memory_channel`` with a name, a bound and
  an explicit :class:`Overflow` policy. Real-time producers use
  ``Overflow.DROP_OLDEST``: sending never blocks and never fails for lack of
  room; the oldest buffered item is dropped and counted instead. Every channel
  keeps :class:`ChannelMetrics` (sent, received, dropped, depth, max depth).
- :class:`Session` / :func:`run_actors`: run the actors in one nursery. The
  session ends when every actor has returned (end of input: the source closes
  its sender, the others see the end of their channel and return), when
  SIGINT/SIGTERM arrives (every actor is cancelled, its ``finally`` runs, then
  :class:`~xswarm.errors.Interrupted` is raised: exit 130/143), or when an
  actor fails (the others are cancelled and ONE clear
  :class:`~xswarm.errors.XswarmError` is raised, never an ExceptionGroup).
- :func:`cleanup_scope` and :func:`pump`: small helpers for actor bodies.

Everything here runs on the Trio thread; nothing is thread-safe except what is
said to be. A foreign thread (the PortAudio callback) hands items over with
``token.run_sync_soon(sender.offer, item)``: :meth:`Sender.offer` never raises,
because an exception escaping a ``run_sync_soon`` callback kills the Trio run.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final, Generic, TypeVar

import trio

from xswarm.errors import Interrupted, XswarmError

if sys.version_info < (3, 11):  # pragma: no cover - python 3.10 only
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "Actor",
    "ChannelMetrics",
    "ChannelRegistry",
    "ChannelStats",
    "Overflow",
    "Receiver",
    "Sender",
    "Session",
    "cleanup_scope",
    "open_channel",
    "pump",
    "run_actors",
]

T = TypeVar("T")
U = TypeVar("U")
_End = TypeVar("_End", bound="_ChannelEnd")

log = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT: Final = 2.0  # seconds; an actor's cleanup (flush, close) gets this long
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C and `kill`: stop cleanly

_shutdown_timeout: contextvars.ContextVar[float] = contextvars.ContextVar(
    "xswarm_shutdown_timeout", default=DEFAULT_SHUTDOWN_TIMEOUT
)


# --------------------------------------------------------------------------- channels


class Overflow(enum.Enum):
    """What a sender does when the channel's buffer is full."""

    BLOCK = "block"
    """Ordinary Trio backpressure: ``send`` waits, ``send_nowait`` raises ``trio.WouldBlock``.
    For producers that may wait (a file reader running as fast as possible)."""

    DROP_OLDEST = "drop_oldest"
    """Real-time producers (mic, model output): never wait, never raise WouldBlock. The
    oldest buffered item is removed and counted in ``dropped``, then the new one is queued,
    so the consumer always gets the freshest ``capacity`` items."""


@dataclass(frozen=True)
class ChannelStats:
    """A frozen copy of a channel's counters at one moment (see :class:`ChannelMetrics`)."""

    name: str
    capacity: int
    overflow: Overflow
    sent: int
    received: int
    dropped: int
    depth: int
    max_depth: int


class ChannelMetrics:
    """Live counters of one channel, shared by all its senders and receivers.

    ``sent`` counts items accepted by the channel, ``received`` items handed out by
    a receive, ``dropped`` items thrown away (the oldest ones under
    ``Overflow.DROP_OLDEST``, or the offered one when :meth:`Sender.offer` found no
    room or a closed channel), ``depth`` the items buffered right now and
    ``max_depth`` the highest depth seen after a send.

    Whenever no receiver is half-way through a receive (it was handed an item but has
    not resumed yet), ``sent == received + dropped + depth`` (``offer`` drops of
    items that were never accepted excepted: they are counted in ``dropped`` and
    ``offered_dropped``, not in ``sent``).
    """

    def __init__(
        self, name: str, capacity: int, overflow: Overflow, depth: Callable[[], int]
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.overflow = overflow
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.offered_dropped = 0  # subset of `dropped`: offered items that never entered
        self.max_depth = 0
        self._depth = depth

    @property
    def depth(self) -> int:
        """Items buffered in the channel now."""
        return self._depth()

    def snapshot(self) -> ChannelStats:
        return ChannelStats(
            name=self.name,
            capacity=self.capacity,
            overflow=self.overflow,
            sent=self.sent,
            received=self.received,
            dropped=self.dropped,
            depth=self.depth,
            max_depth=self.max_depth,
        )

    def __repr__(self) -> str:
        return f"ChannelMetrics({self.snapshot()!r})"


class ChannelRegistry:
    """The channels of one session, so a supervisor or logger can report them all."""

    def __init__(self) -> None:
        self._metrics: list[ChannelMetrics] = []

    def add(self, metrics: ChannelMetrics) -> None:
        self._metrics.append(metrics)

    def __iter__(self) -> Iterator[ChannelMetrics]:
        return iter(list(self._metrics))

    def __len__(self) -> int:
        return len(self._metrics)

    def snapshot(self) -> list[ChannelStats]:
        """Every channel's counters, in the order the channels were opened."""
        return [m.snapshot() for m in self._metrics]


class _ChannelState:
    """What all ends of one channel share: the drain used to drop, open-end counts."""

    def __init__(self, metrics: ChannelMetrics, drain: trio.MemoryReceiveChannel[Any] | None):
        self.metrics = metrics
        self.drain = drain  # a receive clone owned by the senders; only for DROP_OLDEST
        self.open_senders = 0
        self.open_receivers = 0

    def close_drain(self) -> None:
        if self.drain is not None:
            self.drain.close()
            self.drain = None


class _ChannelEnd:
    """What both channel ends share: closing, as a sync or async context manager."""

    def close(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def __enter__(self: _End) -> _End:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self: _End) -> _End:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class Sender(_ChannelEnd, Generic[T]):
    """The sending end of a channel made by :func:`open_channel`.

    Whoever holds a sender closes it (``with`` / ``async with`` / :meth:`close`) when
    done: once every sender of a channel is closed, its receivers get
    ``trio.EndOfChannel`` after draining what is buffered. Sending on a closed sender
    raises ``trio.ClosedResourceError``; sending when every receiver is closed raises
    ``trio.BrokenResourceError`` (the consumer went away).
    """

    def __init__(self, tx: trio.MemorySendChannel[T], state: _ChannelState) -> None:
        self._tx = tx
        self._state = state
        self._closed = False
        state.open_senders += 1

    @property
    def metrics(self) -> ChannelMetrics:
        return self._state.metrics

    @property
    def name(self) -> str:
        return self._state.metrics.name

    def send_nowait(self, item: T) -> None:
        """Queue ``item`` without waiting.

        ``Overflow.BLOCK``: raises ``trio.WouldBlock`` when full.
        ``Overflow.DROP_OLDEST``: never raises WouldBlock; when full, the oldest
        buffered item is dropped (and counted) to make room.
        """
        state = self._state
        metrics = state.metrics
        if state.drain is not None and not self._closed:
            stats = self._tx.statistics()
            if stats.current_buffer_used >= stats.max_buffer_size:
                # Full means nobody is waiting to receive, so the buffer has an oldest item.
                state.drain.receive_nowait()
                metrics.dropped += 1
        self._tx.send_nowait(item)
        metrics.sent += 1
        self._note_depth()

    async def send(self, item: T) -> None:
        """Queue ``item``, waiting for room under ``Overflow.BLOCK``.

        Under ``Overflow.DROP_OLDEST`` this never waits for room (it is
        :meth:`send_nowait` plus a checkpoint). Cancellation before the item is
        accepted leaves the channel unchanged.
        """
        if self._state.drain is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
            self.send_nowait(item)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        await self._tx.send(item)
        self._state.metrics.sent += 1
        self._note_depth()

    def offer(self, item: T) -> bool:
        """Queue ``item`` if possible; never raise. Returns whether it was queued.

        Meant for ``TrioToken.run_sync_soon`` callbacks from a foreign thread, where
        an exception would crash the Trio run. A full ``BLOCK`` channel, a closed
        sender or a channel with no receivers left drop the offered item and count
        it in ``dropped`` (a ``DROP_OLDEST`` channel drops its oldest instead).
        """
        try:
            self.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self._state.metrics.dropped += 1
            self._state.metrics.offered_dropped += 1
            return False
        return True

    def _note_depth(self) -> None:
        metrics = self._state.metrics
        depth = self._tx.statistics().current_buffer_used
        if depth > metrics.max_depth:
            metrics.max_depth = depth

    def clone(self) -> Sender[T]:
        """Another sender on the same channel; the channel ends when all are closed."""
        return Sender(self._tx.clone(), self._state)

    def close(self) -> None:
        """Close this end (idempotent). The last sender closed ends the channel."""
        if self._closed:
            return
        self._closed = True
        self._tx.close()
        self._state.open_senders -= 1
        if self._state.open_senders == 0:
            self._state.close_drain()

    def __repr__(self) -> str:
        return f"<Sender {self.name!r} closed={self._closed}>"


class Receiver(_ChannelEnd, Generic[T]):
    """The receiving end of a channel made by :func:`open_channel`.

    ``async for item in receiver`` ends when every sender is closed and the buffer
    is drained. Whoever holds a receiver closes it when done; once all receivers
    are closed, senders get ``trio.BrokenResourceError``.
    """

    def __init__(self, rx: trio.MemoryReceiveChannel[T], state: _ChannelState) -> None:
        self._rx = rx
        self._state = state
        self._closed = False
        state.open_receivers += 1

    @property
    def metrics(self) -> ChannelMetrics:
        return self._state.metrics

    @property
    def name(self) -> str:
        return self._state.metrics.name

    async def receive(self) -> T:
        """The next item; raises ``trio.EndOfChannel`` once all senders closed and drained.

        Cancellation while waiting loses nothing: the item stays in the channel.
        """
        item = await self._rx.receive()
        self._state.metrics.received += 1
        return item

    def receive_nowait(self) -> T:
        """The next item or ``trio.WouldBlock``; ``trio.EndOfChannel`` at the end."""
        item = self._rx.receive_nowait()
        self._state.metrics.received += 1
        return item

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def clone(self) -> Receiver[T]:
        """Another receiver on the same channel (items go to one of them, not both)."""
        return Receiver(self._rx.clone(), self._state)

    def close(self) -> None:
        """Close this end (idempotent). The last receiver closed breaks the senders."""
        if self._closed:
            return
        self._closed = True
        self._rx.close()
        self._state.open_receivers -= 1
        if self._state.open_receivers == 0:
            # Without this, the senders' drain clone would keep the channel "listened
            # to" forever and a real-time producer would never learn the consumer left.
            self._state.close_drain()

    def __repr__(self) -> str:
        return f"<Receiver {self.name!r} closed={self._closed}>"


def open_channel(
    name: str,
    capacity: int,
    *,
    overflow: Overflow = Overflow.BLOCK,
    registry: ChannelRegistry | None = None,
) -> tuple[Sender[T], Receiver[T]]:
    """A bounded channel named ``name`` holding at most ``capacity`` items.

    Choose ``capacity`` small: a few frames (2-8 x 80 ms) for audio, so latency
    stays bounded and a stalled consumer shows up in ``dropped`` / ``depth`` at
    once. ``capacity=0`` (BLOCK only) makes every send a rendezvous.
    ``Overflow.DROP_OLDEST`` needs ``capacity >= 1``. With ``registry``, the
    channel's metrics are listed there (a :class:`Session` passes its own).

    Raises ``ValueError`` for a negative, unbounded or non-integer capacity.
    """
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
        raise ValueError(f"channel {name!r}: capacity must be an int >= 0, got {capacity!r}")
    if overflow is Overflow.DROP_OLDEST and capacity < 1:
        raise ValueError(f"channel {name!r}: DROP_OLDEST needs capacity >= 1, got {capacity}")
    tx, rx = trio.open_memory_channel[T](capacity)
    drain = rx.clone() if overflow is Overflow.DROP_OLDEST else None
    metrics = ChannelMetrics(
        name, capacity, overflow, depth=lambda: tx.statistics().current_buffer_used
    )
    if registry is not None:
        registry.add(metrics)
    state = _ChannelState(metrics, drain)
    return Sender(tx, state), Receiver(rx, state)


# --------------------------------------------------------------------------- actors


@dataclass
class Actor:
    """One long-running task of a session.

    ``run`` is an async callable taking no arguments (bind them with
    ``functools.partial``). With ``start=True`` it is called as
    ``run(task_status=...)`` and must call ``task_status.started()`` once ready;
    the session waits for that before launching the actors after it in the list
    (e.g. the inference actor loads its model before the mic opens).

    An actor owns the channel ends it is given and closes them in ``finally``
    (``with sender, receiver: ...``), so that end of input flows downstream.
    """

    name: str
    run: Callable[..., Awaitable[None]]
    start: bool = False


def cleanup_scope(timeout: float | None = None) -> trio.CancelScope:
    """A shielded, time-limited scope for async cleanup in an actor's ``finally``.

    ``async with`` / ``await`` inside a cancelled task raises Cancelled at once;
    wrap the flush/close in ``with cleanup_scope(): ...`` so it runs even during
    shutdown, but for at most ``timeout`` seconds from this call (default: the
    session's ``shutdown_timeout``), so a stuck cleanup cannot hang the exit.
    """
    seconds = _shutdown_timeout.get() if timeout is None else timeout
    # Not move_on_after(..., shield=True): that keyword needs trio >= 0.27.
    return trio.CancelScope(deadline=trio.current_time() + seconds, shield=True)


async def pump(
    source: Receiver[T],
    sink: Sender[U],
    transform: Callable[[T], U] | None = None,
) -> None:
    """Forward every item from ``source`` to ``sink`` (through ``transform``), then close both.

    Owns both ends: it closes ``sink`` when ``source`` ends (so end of input flows
    on) and ``source`` when it returns or is cancelled. ``sink``'s overflow policy
    applies.
    """
    with source, sink:
        async for item in source:
            await sink.send(transform(item) if transform is not None else item)  # type: ignore[arg-type]


class _ReadyStatus:
    """Passes ``started()`` on, remembering it was called (to name a silent actor)."""

    def __init__(self, inner: trio.TaskStatus[None]) -> None:
        self._inner = inner
        self.ready = False

    def started(self, value: None = None) -> None:
        self.ready = True
        self._inner.started(value)


def _cancel(scope: trio.CancelScope, reason: str) -> None:
    try:
        scope.cancel(reason=reason)
    except TypeError:  # pragma: no cover - trio < 0.31 has no cancel reasons
        scope.cancel()


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _as_clear_error(actor: str, exc: BaseException) -> XswarmError:
    """One user-facing error for an actor's failure (an XswarmError passes as is)."""
    leaves = [leaf for leaf in _leaves(exc) if not isinstance(leaf, trio.Cancelled)]
    for leaf in leaves:
        if isinstance(leaf, XswarmError):
            return leaf
    cause = leaves[0] if leaves else exc
    detail = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    error = XswarmError(f"actor '{actor}' failed: {detail}")
    error.__cause__ = cause  # as `raise error from cause` would
    error.__suppress_context__ = True
    return error


class Session:
    """A supervisor: runs actors in one nursery and owns the channels' metrics.

    Typical use::

        session = Session()
        frames_tx, frames_rx = session.open_channel("frames", 4, overflow=Overflow.DROP_OLDEST)
        ...
        await session.run([Actor("mic", ...), Actor("inference", ..., start=True), ...])

    Cancellation from outside (a caller's cancel scope) cancels every actor and
    propagates as usual. See :meth:`run` for the rest.
    """

    def __init__(self, channels: ChannelRegistry | None = None) -> None:
        self.channels = channels if channels is not None else ChannelRegistry()
        self.signal_received: int | None = None  # the stop signal that ended the run
        self._nursery: trio.Nursery | None = None
        self._running: set[str] = set()
        self._failure: XswarmError | None = None
        self._failed_first = False
        self._cancel_reason: str | None = None
        self._launched = False
        self._done = False
        self._stopping = trio.Event()
        self._watchdog_scope = trio.CancelScope(shield=True)

    def open_channel(
        self, name: str, capacity: int, *, overflow: Overflow = Overflow.BLOCK
    ) -> tuple[Sender[Any], Receiver[Any]]:
        """:func:`open_channel`, listed in this session's :meth:`channel_metrics`."""
        return open_channel(name, capacity, overflow=overflow, registry=self.channels)

    def channel_metrics(self) -> list[ChannelStats]:
        """Counters of every channel opened through this session, in opening order."""
        return self.channels.snapshot()

    @property
    def running_actors(self) -> frozenset[str]:
        return frozenset(self._running)

    def cancel(self, reason: str = "session cancelled") -> None:
        """Stop every actor (their ``finally`` blocks run); ``run`` then returns normally.

        Safe to call before ``run`` starts (it then returns at once) or after it ended.
        """
        self._cancel_reason = reason
        self._stopping.set()
        if self._nursery is not None:
            _cancel(self._nursery.cancel_scope, reason)

    async def run(
        self,
        actors: Sequence[Actor],
        *,
        handle_signals: bool = True,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> None:
        """Run ``actors`` in one nursery until all return, a signal, or a failure.

        - All actors return: ``run`` returns.
        - ``handle_signals`` (main thread only): while running, SIGINT and SIGTERM
          cancel every actor; after all their ``finally`` blocks ran, ``run`` raises
          ``Interrupted(signum)`` (exit code 130 / 143). Further signals during the
          shutdown are ignored; the original handlers are restored on return.
        - An actor raises: the others are cancelled, then ``run`` raises one
          :class:`XswarmError`: the actor's own if it raised one (also from inside an
          ExceptionGroup), else ``XswarmError("actor 'NAME' failed: Type: message")``
          whose ``__cause__`` is the original exception. The first event wins: a
          failure during the shutdown that follows a signal is logged, not raised.
        - ``shutdown_timeout`` (seconds) is the budget :func:`cleanup_scope` gives an
          actor's cleanup; if actors are still running that long after the cancel, a
          warning naming them is logged.

        Raises ``ValueError`` for duplicate actor names, or ``handle_signals`` off the
        main thread. A session runs once.
        """
        names = [a.name for a in actors]
        if len(set(names)) != len(names):
            raise ValueError(f"actor names must be unique, got {names}")
        if self._done or self._nursery is not None:
            raise RuntimeError("a Session runs once; make a new one")
        if handle_signals and threading.current_thread() is not threading.main_thread():
            raise ValueError("handle_signals=True needs the main thread; pass handle_signals=False")

        token_var = _shutdown_timeout.set(shutdown_timeout)
        restore = self._install_signal_handlers() if handle_signals else None
        outcome: BaseExceptionGroup[BaseException] | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._cancel_reason is not None:  # cancel() or a signal beat the nursery
                    _cancel(nursery.cancel_scope, self._cancel_reason)
                nursery.start_soon(self._watchdog, shutdown_timeout)
                try:
                    for actor in actors:
                        self._running.add(actor.name)
                        if actor.start:
                            await nursery.start(self._run_actor, actor, name=actor.name)
                        else:
                            nursery.start_soon(self._run_actor, actor, name=actor.name)
                finally:
                    self._launched = True
                    if not self._running:
                        self._watchdog_scope.cancel()
        except BaseExceptionGroup as group:
            outcome = group
        finally:
            self._done = True
            if restore is not None:
                restore()
            _shutdown_timeout.reset(token_var)

        if self._failure is not None and (self.signal_received is None or self._failed_first):
            raise self._failure
        if self.signal_received is not None:
            raise Interrupted(self.signal_received)
        if outcome is not None:
            rest = outcome.split(trio.Cancelled)[1]
            if rest is None:
                raise outcome  # only Cancelled from an outer scope: let it reach that scope
            interrupts = [e for e in _leaves(rest) if isinstance(e, KeyboardInterrupt)]
            if interrupts and len(interrupts) == len(list(_leaves(rest))):
                raise Interrupted(signal.SIGINT) from None
            raise outcome

    # -- internals

    async def _run_actor(
        self, actor: Actor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            if actor.start:
                status = _ReadyStatus(task_status)
                await actor.run(task_status=status)
                if not status.ready:
                    raise XswarmError(
                        f"actor '{actor.name}' returned without calling task_status.started()"
                    )
            else:
                await actor.run()
        except Exception as exc:  # BaseException (Cancelled, KeyboardInterrupt) passes
            error = _as_clear_error(actor.name, exc)
            if self._failure is None:
                self._failure = error
                self._failed_first = self.signal_received is None
            else:
                log.warning("actor %r also failed during shutdown: %s", actor.name, error)
            self._stopping.set()
            raise
        finally:
            self._running.discard(actor.name)
            if self._launched and not self._running:
                self._watchdog_scope.cancel()

    async def _watchdog(self, shutdown_timeout: float) -> None:
        # Shielded: it must outlive the nursery's cancel to see a slow shutdown. It is
        # cancelled explicitly when the last actor ends.
        with self._watchdog_scope:
            await self._stopping.wait()
            await trio.sleep(shutdown_timeout)
            if self._running:
                log.warning(
                    "still stopping after %g s: %s",
                    shutdown_timeout,
                    ", ".join(sorted(self._running)),
                )

    def _on_signal(self, signum: int) -> None:
        """Runs on the Trio thread (via run_sync_soon) for each stop signal."""
        if self._done:
            # Arrived as the session ended: the restored handler decides (as trio does).
            signal.raise_signal(signum)
            return
        if self.signal_received is not None:
            return  # already stopping
        self.signal_received = signum
        self._cancel_reason = f"{signal.Signals(signum).name} received"
        self._stopping.set()
        if self._nursery is not None:
            _cancel(self._nursery.cancel_scope, f"{signal.Signals(signum).name} received")

    def _install_signal_handlers(self) -> Callable[[], None]:
        # Not trio.open_signal_receiver: it re-delivers signals still pending when it
        # exits, so a second Ctrl-C during shutdown would become a KeyboardInterrupt
        # traceback. This handler does only what trio's does: schedule a callback.
        token = trio.lowlevel.current_trio_token()

        def handler(signum: int, frame: FrameType | None) -> None:
            token.run_sync_soon(self._on_signal, signum, idempotent=True)

        originals = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}

        def restore() -> None:
            for sig, original in originals.items():
                signal.signal(sig, original)

        return restore


async def run_actors(
    actors: Sequence[Actor],
    *,
    handle_signals: bool = True,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
) -> None:
    """Run ``actors`` in a fresh :class:`Session` (see :meth:`Session.run`).

    Use a :class:`Session` directly to list the channels' metrics afterwards.
    """
    await Session().run(actors, handle_signals=handle_signals, shutdown_timeout=shutdown_timeout)
