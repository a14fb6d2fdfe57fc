"""Sound devices: listing them, choosing one, and the mic and speaker actors.

sounddevice (PortAudio) is imported lazily, inside the functions that need it:
without ``libportaudio2`` importing it raises ``OSError``, and file work
(``--input FILE`` / ``--output FILE``, ``xswarm transcribe``) must still run.
A device request on such a machine gets one :class:`AudioError` naming the
package to install.

Both actors run a separate PortAudio stream (``InputStream`` for the mic,
``OutputStream`` for the speaker): measured on the ALSA pulse plugin, separate
streams call back steadily every 80.0 ms while a full-duplex ``Stream`` calls
back in bursts. Streams use a numeric latency (:data:`STREAM_LATENCY`): at
PortAudio's default, the ALSA pulse plugin silently replays stale blocks after
an underrun.

Threading contract. PortAudio calls the callbacks on its own thread. The mic
callback copies the block and hands it to Trio with
``TrioToken.run_sync_soon`` and nothing else; the function it schedules never
raises (an exception escaping it would become a ``TrioInternalError`` and end
the program). The speaker callback only copies from a thread-safe
:class:`~xswarm.audio.jitter.JitterBuffer`. Neither ever waits for the model.

Failure contract. A stream that cannot open, that PortAudio finishes on its
own (device lost), or that stops calling back (:data:`STALL_SECONDS`) ends the
actor with an :class:`AudioError` naming the device, so the session stops with
a clear message instead of hanging. Each actor closes its stream in
``finally``, shielded and time-limited (:data:`CLOSE_TIMEOUT`).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import trio

from xswarm.audio import CHANNELS, FRAME_SAMPLES, SAMPLE_RATE
from xswarm.audio.frame import AudioFrame
from xswarm.audio.jitter import JitterBuffer
from xswarm.errors import AudioError, UsageError

if TYPE_CHECKING:
    import numpy as np

DeviceKind = Literal["input", "output"]

STREAM_LATENCY: Final = 0.2  # s; numeric, not PortAudio's default: no stale replays on ALSA pulse
STALL_SECONDS: Final = 2.0  # s without a callback once running: the device is gone (25 frames)
FIRST_CALLBACK_SECONDS: Final = 5.0  # s allowed for the first callback (an idle sink wakes slowly)
WATCH_INTERVAL: Final = 0.25  # s between checks of a stream's health
CLOSE_TIMEOUT: Final = 2.0  # s to stop and close a stream in `finally` before giving up on it
DRAIN_MARGIN: Final = 0.1  # s of extra playback time allowed when draining at end of input
RECENT_CALLBACKS: Final = 1000  # callback durations kept for statistics (80 s at 12.5/s)
FILE_HINT: Final = {"input": "--input FILE", "output": "--output FILE"}


def _portaudio_fix() -> str:
    if sys.platform == "darwin":
        return "install it with: brew install portaudio"
    return "install it with: sudo apt install libportaudio2"


def import_sounddevice() -> Any:
    """Import sounddevice, or raise :class:`AudioError` saying how to get PortAudio."""
    try:
        import sounddevice  # type: ignore[import-untyped]
    except OSError as error:  # sounddevice: "PortAudio library not found"
        raise AudioError(
            f"PortAudio is missing ({error}); {_portaudio_fix()}; "
            "files still work (--input FILE / --output FILE)"
        ) from None
    except ImportError as error:
        raise AudioError(
            f"the sounddevice package cannot be imported ({error}); "
            "reinstall xswarm: pip install --force-reinstall sounddevice"
        ) from None
    return sounddevice


# --- listing and choosing --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device, as ``xswarm devices`` shows it."""

    index: int
    name: str
    hostapi: str  # e.g. "ALSA", "Core Audio"
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float  # Hz
    is_default_input: bool
    is_default_output: bool

    def channels(self, kind: DeviceKind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels

    def describe(self) -> str:
        """``3 "USB Mic" (2 in, 0 out)``: for messages."""
        return (
            f'{self.index} "{self.name}" '
            f"({self.max_input_channels} in, {self.max_output_channels} out)"
        )


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio knows, in index order (an empty list is possible).

    Raises :class:`AudioError` when PortAudio is missing or cannot list devices.
    """
    sd = import_sounddevice()
    try:
        raw = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in, default_out = _default_indices(sd)
    except sd.PortAudioError as error:
        raise AudioError(f"cannot list audio devices: {error}") from None
    return [
        DeviceInfo(
            index=int(d["index"]),
            name=str(d["name"]),
            hostapi=str(hostapis[d["hostapi"]]["name"]),
            max_input_channels=int(d["max_input_channels"]),
            max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            is_default_input=int(d["index"]) == default_in,
            is_default_output=int(d["index"]) == default_out,
        )
        for d in raw
    ]


def _default_indices(sd: Any) -> tuple[int, int]:
    defaults = sd.default.device
    try:
        default_in, default_out = (int(x) for x in defaults)
    except (TypeError, ValueError):  # a single device set for both
        default_in = default_out = int(defaults)
    return default_in, default_out


def _inventory(devices: list[DeviceInfo], kind: DeviceKind) -> str:
    usable = [d for d in devices if d.channels(kind) > 0]
    if not usable:
        return f"there is no {kind} device"
    return f"{kind} devices: " + ", ".join(f'{d.index} "{d.name}"' for d in usable)


def resolve_device(
    spec: str | int | None, kind: DeviceKind, devices: list[DeviceInfo] | None = None
) -> DeviceInfo:
    """The device to open for ``kind``: ``None`` is the default device, an int
    (or a string of digits) is an index, any other string is a case-insensitive
    substring of the name (an exact name wins over substring matches).

    Raises :class:`UsageError` (exit 2) for an unknown or ambiguous name, an
    index that does not exist or cannot do ``kind``, or no device at all; the
    one-line message lists the usable devices and suggests a file instead.
    Raises :class:`AudioError` if PortAudio is missing.
    """
    if devices is None:
        devices = list_devices()
    hint = f"see `xswarm devices`, or use {FILE_HINT[kind]}"
    usable = [d for d in devices if d.channels(kind) > 0]

    def refuse(problem: str) -> UsageError:
        return UsageError(f"{problem}; {_inventory(devices, kind)}; {hint}")

    if spec is None or (isinstance(spec, str) and not spec.strip()):
        default = next((d for d in usable if getattr(d, f"is_default_{kind}")), None)
        if default is not None:
            return default
        if len(usable) >= 1:
            return usable[0]
        raise refuse(f"no {kind} device found")
    if isinstance(spec, int) or spec.strip().isdigit():
        index = int(spec)
        match = next((d for d in devices if d.index == index), None)
        if match is None:
            raise refuse(f"no audio device with index {index}")
        if match.channels(kind) == 0:
            raise refuse(f"device {match.describe()} has no {kind} channels")
        return match
    wanted = spec.strip().casefold()
    exact = [d for d in usable if d.name.casefold() == wanted]
    if len(exact) == 1:
        return exact[0]
    matches = exact or [d for d in usable if wanted in d.name.casefold()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise refuse(f"no {kind} device matches {spec!r}")
    names = ", ".join(f'{d.index} "{d.name}"' for d in matches)
    raise UsageError(f"{spec!r} matches several {kind} devices: {names}; give the index; {hint}")


# --- actors ----------------------------------------------------------------------


@dataclasses.dataclass
class StreamStats:
    """Counters of one device stream, updated from the PortAudio thread.

    Plain int increments from one writer thread; readers may see a value one
    callback old, never a torn one.
    """

    device: str = ""
    callbacks: int = 0
    frames: int = 0  # mic: frames handed to Trio; speaker: frames pushed to the buffer
    dropped: int = 0  # mic: frames the channel refused (closed, full)
    late: int = 0  # mic: callbacks after Trio had finished (RunFinishedError)
    xruns: int = 0  # PortAudio status flags: input overflow / output underflow
    last_callback: float = 0.0  # time.monotonic() of the last callback entry, 0 before any
    callback_seconds: collections.deque[float] = dataclasses.field(
        repr=False, default_factory=lambda: collections.deque(maxlen=RECENT_CALLBACKS)
    )  # durations of recent callbacks


class FrameOffer(Protocol):
    """What the mic needs from its channel: a non-blocking send (drop-oldest channel)."""

    def send_nowait(self, item: AudioFrame) -> None: ...


class _StreamWatch:
    """Turns PortAudio's end-of-stream signal and callback silence into an AudioError."""

    def __init__(self, kind: DeviceKind, device: DeviceInfo, stats: StreamStats) -> None:
        self.kind = kind
        self.device = device
        self.stats = stats
        self.finished = False  # set by PortAudio's finished callback (its thread)
        self.closing = False  # we are stopping the stream ourselves
        self.error: Exception | None = None  # what our callback raised (it then aborts the stream)

    def on_finished(self) -> None:
        self.finished = True

    async def watch(self, stream: Any, started: float) -> None:
        """Return never; raise AudioError when the stream died or stalled."""
        name = self.device.describe()
        while True:
            await trio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            if self.error is not None:
                raise AudioError(
                    f"the {self.kind} callback on device {name} failed: "
                    f"{type(self.error).__name__}: {self.error}; please report it"
                )
            if (self.finished or not stream.active) and not self.closing:
                raise AudioError(
                    f"the {self.kind} stream on device {name} stopped (device lost?); "
                    f"check the device, or use {FILE_HINT[self.kind]}"
                )
            last = self.stats.last_callback
            if last == 0.0 and now - started > FIRST_CALLBACK_SECONDS:
                raise AudioError(
                    f"no audio callbacks from {self.kind} device {name} "
                    f"after {FIRST_CALLBACK_SECONDS:.0f} s; check the device, "
                    f"or use {FILE_HINT[self.kind]}"
                )
            if last and now - last > STALL_SECONDS:
                raise AudioError(
                    f"the {self.kind} device {name} stopped calling back for "
                    f"{now - last:.1f} s (device lost?); check it, or use {FILE_HINT[self.kind]}"
                )


def _guarded(sd: Any, watch: _StreamWatch, body: Callable[..., None]) -> Callable[..., None]:
    """A PortAudio callback that never lets an exception out: an exception escaping
    into cffi prints a traceback and leaves the stream running. The error is kept
    for the actor (which raises AudioError with it) and the stream is aborted."""

    def callback(*args: Any) -> None:
        try:
            body(*args)
        except (sd.CallbackAbort, sd.CallbackStop):
            raise
        except Exception as error:
            if watch.error is None:
                watch.error = error
            raise sd.CallbackAbort from None

    return callback


async def _open_stream(kind: DeviceKind, device: DeviceInfo, factory: Callable[[], Any]) -> Any:
    """Create and start a stream in a worker thread (an ALSA-pulse input opens in ~270 ms)."""
    sd = import_sounddevice()

    def open_and_start() -> Any:
        stream = factory()
        try:
            stream.start()
        except BaseException:
            stream.close(ignore_errors=True)
            raise
        return stream

    try:
        return await trio.to_thread.run_sync(open_and_start)
    except (sd.PortAudioError, ValueError) as error:
        raise AudioError(
            f"cannot open {kind} device {device.describe()}: {error}; "
            f"see `xswarm devices`, or use {FILE_HINT[kind]}"
        ) from None


async def _close_stream(stream: Any, watch: _StreamWatch, *, abort: bool) -> None:
    """Stop and close ``stream`` (shielded, at most CLOSE_TIMEOUT; then abandoned)."""
    watch.closing = True

    def stop_and_close() -> None:
        if abort:
            stream.abort(ignore_errors=True)
        else:
            stream.stop(ignore_errors=True)
        stream.close(ignore_errors=True)

    with trio.move_on_after(CLOSE_TIMEOUT) as scope:
        scope.shield = True  # runs during the session's cancel, but never longer than this
        await trio.to_thread.run_sync(stop_and_close, abandon_on_cancel=True)


async def mic_actor(
    send: FrameOffer,
    *,
    device: str | int | None = None,
    stats: StreamStats | None = None,
    latency: float = STREAM_LATENCY,
    task_status: trio.TaskStatus[DeviceInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Capture 24 kHz mono float32 frames from ``device`` and ``send_nowait`` them as
    :class:`AudioFrame` (``t_capture``: ``time.monotonic()`` at callback entry,
    ``t_adc``: PortAudio's capture time of the block).

    ``send`` should be a drop-oldest channel (``xswarm.runtime.open_channel(...,
    overflow=Overflow.DROP_OLDEST)``): the mic never waits. Frames it refuses
    (full BLOCK channel, closed channel) are counted in ``stats.dropped``.
    ``task_status.started(device_info)`` is called once the stream runs.

    Runs until cancelled; raises :class:`AudioError` if the device cannot be
    opened, is lost or stalls, :class:`UsageError` for a bad ``device``. The
    stream is closed in ``finally``; ``send`` is closed too (end of input).
    """
    stats = stats if stats is not None else StreamStats()
    try:
        sd = import_sounddevice()
        info = resolve_device(device, "input")
        stats.device = info.name
        token = trio.lowlevel.current_trio_token()
        watch = _StreamWatch("input", info, stats)
        counter = itertools.count()

        def offer(frame: AudioFrame) -> None:
            # Runs on the Trio thread; must never raise (see module docstring).
            try:
                send.send_nowait(frame)
                stats.frames += 1
            except Exception:
                stats.dropped += 1

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            entered = time.monotonic()
            stats.callbacks += 1
            stats.last_callback = entered
            if status:
                stats.xruns += 1
            frame = AudioFrame(
                indata[:, 0].copy(), next(counter), entered, float(time_info.inputBufferAdcTime)
            )
            try:
                token.run_sync_soon(offer, frame)
            except trio.RunFinishedError:
                stats.late += 1
            stats.callback_seconds.append(time.monotonic() - entered)

        started = time.monotonic()
        stream = await _open_stream(
            "input",
            info,
            lambda: sd.InputStream(**_stream_options(sd, info, watch, callback, latency)),
        )
        try:
            task_status.started(info)
            await watch.watch(stream, started)
        finally:
            await _close_stream(stream, watch, abort=True)
    finally:
        close = getattr(send, "close", None)
        if close is not None:
            close()


def _stream_options(
    sd: Any, info: DeviceInfo, watch: _StreamWatch, callback: Any, latency: float
) -> dict[str, Any]:
    """What both of our streams are: 24 kHz mono float32 in 1920-sample blocks on
    ``info``, the callback guarded and the end watched."""
    return {
        "samplerate": SAMPLE_RATE,
        "blocksize": FRAME_SAMPLES,
        "channels": CHANNELS,
        "dtype": "float32",
        "device": info.index,
        "latency": latency,
        "callback": _guarded(sd, watch, callback),
        "finished_callback": watch.on_finished,
    }


async def speaker_actor(
    receive: Any,
    *,
    device: str | int | None = None,
    buffer: JitterBuffer | None = None,
    stats: StreamStats | None = None,
    latency: float = STREAM_LATENCY,
    task_status: trio.TaskStatus[DeviceInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Play what arrives on ``receive`` (:class:`AudioFrame` or 1-D float32 arrays at
    24 kHz) on ``device``, through ``buffer`` (a :class:`JitterBuffer`; pass one
    to read its underrun/drop counters, else a default one is made).

    The output callback only copies from the buffer: when it runs dry it plays
    silence and the buffer counts an underrun. When ``receive`` ends (end of
    input), the buffer is marked ended, the actor waits until it has played
    out (plus the stream latency), and returns. On cancellation the stream is
    aborted at once. ``task_status.started(device_info)`` is called once the
    stream runs.

    Raises :class:`AudioError` if the device cannot be opened, is lost or
    stalls, :class:`UsageError` for a bad ``device``. Closes the stream and
    ``receive`` in ``finally``.
    """
    stats = stats if stats is not None else StreamStats()
    buffer = buffer if buffer is not None else JitterBuffer()
    try:
        sd = import_sounddevice()
        info = resolve_device(device, "output")
        stats.device = info.name
        watch = _StreamWatch("output", info, stats)

        def callback(outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            entered = time.monotonic()
            stats.callbacks += 1
            stats.last_callback = entered
            if status:
                stats.xruns += 1
            buffer.pull_into(outdata)
            stats.callback_seconds.append(time.monotonic() - entered)

        started = time.monotonic()
        stream = await _open_stream(
            "output",
            info,
            lambda: sd.OutputStream(**_stream_options(sd, info, watch, callback, latency)),
        )
        drained = False
        failure: AudioError | None = None
        try:
            task_status.started(info)
            async with trio.open_nursery() as nursery:

                async def guard() -> None:
                    nonlocal failure
                    try:
                        await watch.watch(stream, started)
                    except AudioError as error:
                        failure = error
                        nursery.cancel_scope.cancel()

                nursery.start_soon(guard)
                async for item in receive:
                    buffer.push(item.pcm if isinstance(item, AudioFrame) else item)
                    stats.frames += 1
                buffer.end()
                # Let what is queued reach the speaker before closing the stream.
                queued = buffer.depth / SAMPLE_RATE
                await trio.sleep(queued + float(stream.latency) + DRAIN_MARGIN)
                drained = True
                nursery.cancel_scope.cancel()
            if failure is not None:
                raise failure
        finally:
            await _close_stream(stream, watch, abort=not drained)
    finally:
        close = getattr(receive, "close", None)
        if close is not None:
            close()


def callback_percentile(stats: StreamStats, q: float) -> float:
    """The ``q``-th percentile (0-100) of recent callback durations, in seconds; NaN if none."""
    durations = sorted(stats.callback_seconds)
    if not durations:
        return math.nan
    rank = min(len(durations) - 1, max(0, math.ceil(q / 100 * len(durations)) - 1))
    return durations[rank]
