"""Device resilience: a lost mic or speaker is reopened on the default device.

A USB headset unplugged, Bluetooth dropping out, the system's default device
changed: PortAudio ends the stream and the device actor raises
:class:`~xswarm.errors.AudioError`. A conversation should not end for that.
:func:`keep_mic` and :func:`keep_speaker` run the actor; when it fails they
announce it once (``announce``), and reopen the actor on the default device
(``device=None``), retrying every :data:`RETRY_SECONDS` for up to
:data:`REOPEN_SECONDS`. If the device cannot be had back in that time, or a
reopened one fails again within :data:`STABLE_SECONDS`, the error is raised
and the session ends as it did before.

Mic frames keep one numbering across reopenings: the new stream counts from
0 again, so its frames are renumbered after the last one sent plus the frames
lost in between (from the capture times), and the inference actor sees a gap
of exactly the lost frames (counted in :class:`ReopenStats`).

Contract: the wrappers own the channel end they are given and close it when
they return or raise (as the actors do); the actor itself gets a proxy whose
``close`` does nothing, so a reopened actor can keep using the channel. The
actor callables must accept ``device=`` and ``task_status=`` like
:func:`~xswarm.audio.devices.mic_actor` (``task_status.started()`` once the
stream runs). Cancellation passes straight through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from xswarm.audio import FRAME_SECONDS
from xswarm.audio.frame import AudioFrame
from xswarm.errors import AudioError, UsageError

REOPEN_SECONDS: Final = 2.0  # s to get a lost device back before the session ends (the issue's)
RETRY_SECONDS: Final = 0.25  # s between attempts: a re-plugged device shows up within ~0.5 s
STABLE_SECONDS: Final = 10.0  # s a reopened device must run before a new loss is forgiven

ActorFn = Callable[..., Awaitable[None]]


@dataclasses.dataclass
class ReopenStats:
    """What the wrapper did (for the summary)."""

    losses: int = 0  # times the device was lost
    reopens: int = 0  # times it was opened again
    lost_frames: int = 0  # mic frames that were never captured while it was gone


class _MicProxy:
    """The sender the mic actor sees: renumbers frames across streams, never closes."""

    def __init__(self, send: Any, stats: ReopenStats) -> None:
        self._send = send
        self._stats = stats
        self._offset = 0
        self._last: AudioFrame | None = None
        self.new_stream = False  # the next frame is the first of a reopened stream

    def send_nowait(self, frame: AudioFrame) -> None:
        if self.new_stream and self._last is not None:
            self.new_stream = False
            elapsed = frame.t_capture - self._last.t_capture
            step = max(1, round(elapsed / FRAME_SECONDS))
            self._stats.lost_frames += step - 1
            self._offset = self._last.index + step - frame.index
        frame = dataclasses.replace(frame, index=frame.index + self._offset)
        self._send.send_nowait(frame)
        self._last = frame

    def close(self) -> None:
        """Not ours to close: the wrapper closes the real channel at the end."""


class _ReceiveProxy:
    """The receiver the speaker actor sees: the same channel, never closed by the actor."""

    def __init__(self, receive: Any) -> None:
        self._items = receive.__aiter__()

    def __aiter__(self) -> _ReceiveProxy:
        return self

    async def __anext__(self) -> Any:
        return await self._items.__anext__()

    def close(self) -> None:
        """Not ours to close: the wrapper closes the real channel at the end."""


class _Started:
    """A ``task_status`` for the device actor: records that its stream runs."""

    def __init__(self, on_start: Callable[[], None]) -> None:
        self.running = False
        self._on_start = on_start

    def started(self, value: Any = None) -> None:
        self.running = True
        self._on_start()


async def _keep(
    actor: ActorFn,
    channel: Any,
    *,
    device: str | int | None,
    kind: str,
    announce: Callable[[str], None],
    stats: ReopenStats,
    on_reopen: Callable[[], None],
    reopen_seconds: float,
) -> None:
    """Run ``actor`` and bring it back after each loss (see the module docstring).

    A failure before the first stream ever ran (a bad device at start) is raised
    as is: that is a setup error, not a loss.
    """
    current = device
    lost: AudioError | None = None  # the loss being recovered from
    deadline = 0.0
    back_at = -STABLE_SECONDS  # when the last reopened stream started

    def back() -> None:
        nonlocal back_at
        if lost is not None:
            stats.reopens += 1
            back_at = trio.current_time()
            announce(f"the {kind} is back on the default device")

    while True:
        status = _Started(back)
        try:
            await actor(channel, device=current, task_status=status)
            return
        except (AudioError, UsageError) as error:
            # UsageError: while a device is gone PortAudio may list no default at all.
            if isinstance(error, UsageError) and (status.running or lost is None):
                raise
            if status.running and isinstance(error, AudioError):  # a running stream was lost
                if lost is not None and trio.current_time() - back_at < STABLE_SECONDS:
                    raise  # it came back only to fail again (opens, never calls back): give up
                lost, current = error, None
                stats.losses += 1
                announce(f"{error}; reopening the default {kind} device")
                deadline = trio.current_time() + reopen_seconds
                on_reopen()
                continue
            if lost is None:
                raise  # the device never opened: a setup error
            if trio.current_time() + RETRY_SECONDS > deadline:
                raise lost from error
            await trio.sleep(RETRY_SECONDS)


async def keep_mic(
    mic: ActorFn,
    send: Any,
    *,
    device: str | int | None = None,
    announce: Callable[[str], None],
    stats: ReopenStats | None = None,
    reopen_seconds: float = REOPEN_SECONDS,
) -> None:
    """Run ``mic(send_proxy, device=..., task_status=...)``; when a running stream is
    lost, reopen it on the default input device (see the module docstring). Closes
    ``send`` at the end."""
    stats = stats if stats is not None else ReopenStats()
    proxy = _MicProxy(send, stats)

    def mark() -> None:
        proxy.new_stream = True

    try:
        await _keep(
            mic,
            proxy,
            device=device,
            kind="input",
            announce=announce,
            stats=stats,
            on_reopen=mark,
            reopen_seconds=reopen_seconds,
        )
    finally:
        send.close()


async def keep_speaker(
    speaker: ActorFn,
    receive: Any,
    *,
    device: str | int | None = None,
    announce: Callable[[str], None],
    stats: ReopenStats | None = None,
    reopen_seconds: float = REOPEN_SECONDS,
) -> None:
    """Run ``speaker(receive_proxy, device=..., task_status=...)``; when a running
    stream is lost, reopen it on the default output device. Closes ``receive`` at
    the end."""
    stats = stats if stats is not None else ReopenStats()
    try:
        await _keep(
            speaker,
            _ReceiveProxy(receive),
            device=device,
            kind="output",
            announce=announce,
            stats=stats,
            on_reopen=lambda: None,
            reopen_seconds=reopen_seconds,
        )
    finally:
        receive.close()
