"""Acoustic echo cancellation: the microphone stream with the playback stream as reference.

On a laptop's own speakers the microphone hears what xswarm plays, and a
full-duplex model would answer itself. :class:`EchoCanceller` removes that
echo from each 80 ms mic frame, given the frame that was being played.

Three parts:

- The canceller proper is WebRTC's AEC3 (the audio processing module Chrome
  uses), through ``pywebrtc-audio`` (Apache-2.0, maintained, wheels for
  Linux x86_64/aarch64, macOS arm64/x86_64 and Windows: no compiler). It runs
  at the pipeline's 24 kHz on float32 and works in 10 ms blocks internally.
  ``aec-audio-processing`` wraps the same AEC3 and measured the same, but is
  an sdist needing swig, meson and a C++ build (4-15 minutes here); ``pyaec``
  (Rust port of speex) cost the near end ~12 dB; speexdsp's linear filter
  reached only 17-21 dB after 1.5 s. Numbers: benchmarks/echo.py.
- The delay between the reference (what was handed to playback) and its echo
  in the capture is *estimated*, not configured: :class:`DelayEstimator` runs
  GCC-PHAT (cross-correlation with the phase transform) between a sliding
  window of mic and reference every :data:`ESTIMATE_EVERY_FRAMES` frames. The
  reference is buffered and, when the delay is beyond what AEC3 finds by
  itself (:data:`AEC3_RANGE_SECONDS`), fed to AEC3 delayed by the estimate
  less :data:`RESIDUAL_SECONDS`. This matters: AEC3's own delay search
  spans about half a second, and playback latency + jitter buffer + capture
  latency on a real device (~0.4-0.55 s on the PulseAudio monitor) can
  exceed that; measured, AEC3 alone removes ~50 dB of echo at 0.4 s of delay
  but ~2 dB at 0.6 s, where the aligned canceller removes ~52 dB.

- The reference is what the speaker actually played, not what was handed to
  it: :class:`PlaybackTap` records the blocks the output callback takes
  from a :class:`TappedJitterBuffer` (silence of an underrun included) and
  gives back, per mic frame, the played samples at the same stream position.
  With the frames handed over instead, every underrun moves the delay by the
  gap (measured on the null sink: 35 dB, and 16 dB when an underrun struck,
  against 73 dB through the tap).

Contract. One :class:`EchoCanceller` per mic stream, called from one thread
at a time (AEC3 is not thread-safe; its C++ work releases the GIL). Measured
CPU on this 2-core x86 machine: ~0.8 ms per 80 ms frame for AEC3 plus
~0.14 ms per frame for the delay estimate (one ~0.6 ms GCC-PHAT every
:data:`ESTIMATE_EVERY_FRAMES` frames), so calling it on the Trio thread or
the inference worker between steps is fine. Nothing here blocks.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Final

from xswarm.audio import FRAME_SAMPLES, SAMPLE_RATE
from xswarm.audio.frame import AudioFrame
from xswarm.audio.jitter import JitterBuffer
from xswarm.errors import AudioError

if TYPE_CHECKING:
    import numpy as np

MAX_DELAY_SECONDS: Final = 1.0  # s; longest playback->capture delay searched (devices reach ~0.6)
WINDOW_SECONDS: Final = 1.6  # s of mic compared per estimate: enough speech for a clear peak
ESTIMATE_EVERY_FRAMES: Final = 4  # frames (320 ms) between estimates: follows jumps within a second
DECIMATION: Final = 6  # 24 kHz -> 4 kHz for the estimate: voiced speech carries the timing
BAND_HZ: Final = (150.0, 1800.0)  # Hz used by the estimate: speech, clear of hum and aliasing
PHAT_BETA: Final = 0.8  # partial whitening: sharp peaks without amplifying empty bins to noise
MIN_PEAK_RATIO: Final = 8.0  # correlation peak / its spread over all lags: below, no estimate
SECOND_PEAK_MAX: Final = 0.7  # a rival peak this close to the best: ambiguous, no estimate
MIN_REFERENCE_RMS: Final = 1e-3  # full scale (-60 dBFS): quieter reference windows are skipped
AGREE_SECONDS: Final = 0.002  # s; two estimates this close confirm each other
AEC3_RANGE_SECONDS: Final = (0.02, 0.35)  # s of delay AEC3 finds by itself (measured: 0.4 ok,
# 0.6 not); within it the reference is passed as it comes, outside it is re-aligned
RESIDUAL_SECONDS: Final = 0.1  # s of delay left to AEC3 after an alignment: room to drift both ways
RESET_SECONDS: Final = 0.01  # s; a confirmed delay change beyond this resets AEC3 (see process)
TAP_CAPACITY_SECONDS: Final = 2.0  # s of played audio kept: a consumer may lag this much
TAP_RESYNC_FRAMES: Final = 2  # frames the mic and speaker streams may drift before a resync


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFT sizes pocketfft handles fastest."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


@dataclasses.dataclass(frozen=True)
class DelayEstimate:
    """One GCC-PHAT measurement of how late the echo arrives."""

    seconds: float  # echo delay: the reference sample played at t is heard at t + seconds
    peak_ratio: float  # correlation peak over its spread; higher is surer (>= MIN_PEAK_RATIO)


class DelayEstimator:
    """Estimates the delay of the reference's echo in the mic stream (GCC-PHAT).

    Feed every frame pair with :meth:`push`; every ``every_frames`` frames,
    it correlates the last ``window_seconds`` of mic (decimated to 8 kHz, band
    :data:`BAND_HZ`) against the reference over lags 0..``max_delay_seconds``.
    The history starts as silence (true: nothing was played before), so the
    first measurement comes once ``window_seconds`` have passed. A measurement
    counts only with a clear peak (:data:`MIN_PEAK_RATIO`) and an audible
    reference; :attr:`delay_seconds` changes only when two consecutive
    counted measurements agree within :data:`AGREE_SECONDS` (one stray peak,
    say during double talk, moves nothing). ``None`` until then.
    """

    def __init__(
        self,
        *,
        max_delay_seconds: float = MAX_DELAY_SECONDS,
        window_seconds: float = WINDOW_SECONDS,
        every_frames: int = ESTIMATE_EVERY_FRAMES,
    ) -> None:
        import numpy as np

        if not 0 < max_delay_seconds <= 5:
            raise ValueError(f"max_delay_seconds must be in (0, 5], got {max_delay_seconds}")
        if not 0 < window_seconds <= 10:
            raise ValueError(f"window_seconds must be in (0, 10], got {window_seconds}")
        if every_frames < 1:
            raise ValueError(f"every_frames must be at least 1, got {every_frames}")
        rate = SAMPLE_RATE // DECIMATION
        self._rate = rate
        self._max_lag = round(max_delay_seconds * rate)
        self._window = round(window_seconds * rate)
        self._every = every_frames
        step = FRAME_SAMPLES // DECIMATION
        frames_kept = -(-(self._window + self._max_lag) // step)
        self._mic = np.zeros(frames_kept * step, np.float32)
        self._ref = np.zeros(frames_kept * step, np.float32)
        self._frames_needed = -(-self._window // step)
        self._fft_size = _fast_length(len(self._ref))
        freqs = np.fft.rfftfreq(self._fft_size, 1 / rate)
        self._band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
        self._taper = np.hanning(self._window).astype(np.float32)
        self._frames = 0
        self._candidate: DelayEstimate | None = None
        self.last: DelayEstimate | None = None  # the latest counted measurement
        self.delay_seconds: float | None = None  # the confirmed delay
        self.measurements = 0  # correlations computed
        self.updates = 0  # times delay_seconds changed

    def push(self, mic: np.ndarray, ref: np.ndarray) -> DelayEstimate | None:
        """Add one frame of each; return the measurement if one was made and counted."""
        import numpy as np

        step = FRAME_SAMPLES // DECIMATION
        # A 6-sample mean is a crude anti-alias filter, but mic and reference go
        # through the same one, so the correlation peak stays where it was.
        self._mic[:-step] = self._mic[step:]
        self._mic[-step:] = mic.reshape(-1, DECIMATION).mean(axis=1)
        self._ref[:-step] = self._ref[step:]
        self._ref[-step:] = ref.reshape(-1, DECIMATION).mean(axis=1)
        self._frames += 1
        if self._frames < self._frames_needed or self._frames % self._every:
            return None
        if float(np.sqrt(np.mean(self._ref**2))) < MIN_REFERENCE_RMS:
            return None
        measured = self._measure()
        if measured is None:
            return None
        self.last = measured
        candidate, self._candidate = self._candidate, measured
        confirmed = (
            candidate is not None and abs(candidate.seconds - measured.seconds) <= AGREE_SECONDS
        )
        moved = self.delay_seconds is None or (
            abs(self.delay_seconds - measured.seconds) > AGREE_SECONDS
        )
        if confirmed and moved:
            self.delay_seconds = measured.seconds
            self.updates += 1
        return measured

    def _measure(self) -> DelayEstimate | None:
        import numpy as np

        self.measurements += 1
        n = self._fft_size
        ref = self._ref[-(self._window + self._max_lag) :]
        mic = self._mic[-self._window :] * self._taper  # no sharp edges: no edge "peaks"
        spectrum = np.fft.rfft(ref, n) * np.conj(np.fft.rfft(mic, n))
        spectrum = np.where(self._band, spectrum / (np.abs(spectrum) ** PHAT_BETA + 1e-12), 0)
        # corr[k] = sum_i ref[i + k] mic[i]: the echo of ref sample j is mic sample
        # j - max_lag + delay, so the peak sits at k = max_lag - delay.
        corr = np.fft.irfft(spectrum, n)[: self._max_lag + 1]
        peak = int(np.argmax(corr))
        spread = float(np.std(corr))
        ratio = float(corr[peak]) / spread if spread > 0 else 0.0
        if ratio < MIN_PEAK_RATIO or peak == 0:  # weak, or at the far end: likely beyond it
            return None
        # A periodic reference (a tone, a hum) correlates at every period: no single delay.
        near = round(AGREE_SECONDS * self._rate) + 1
        others = np.concatenate([corr[: max(0, peak - near)], corr[peak + near + 1 :]])
        if others.size and float(others.max()) > SECOND_PEAK_MAX * float(corr[peak]):
            return None
        offset = 0.0
        if 0 < peak < self._max_lag:  # parabolic interpolation between samples
            a, b, c = (float(x) for x in corr[peak - 1 : peak + 2])
            denominator = a - 2 * b + c
            offset = 0.5 * (a - c) / denominator if denominator else 0.0
        return DelayEstimate((self._max_lag - peak - offset) / self._rate, ratio)


@dataclasses.dataclass
class AecStats:
    """What the canceller has done so far (for the summary and the status line)."""

    frames: int = 0  # frames processed
    delay_seconds: float | None = None  # echo delay in use (estimated); None before an estimate
    delay_updates: int = 0  # times delay_seconds changed
    shift_seconds: float = 0.0  # how much the reference is delayed before AEC3
    resets: int = 0  # AEC3 resets after a delay change
    cpu_seconds: float = 0.0  # total time spent in process()


class PlaybackTap:
    """What the speaker really played, as the canceller's reference, frame by frame.

    The frames handed to the speaker are not the right reference: the jitter
    buffer holds a varying amount of them, and when it runs dry it plays
    silence, so every underrun would move the echo's delay by the gap (and
    cost seconds of echo while the estimate catches up). The tap records the
    blocks at the moment the output callback takes them (:meth:`played`, from
    :class:`TappedJitterBuffer`, on PortAudio's thread), silence included, and
    :meth:`reference_for` returns, for a mic frame, the played samples at the
    same place in the stream: contiguous frame after frame (position = a base
    fixed by the first mic frame's capture time + FRAME_SAMPLES per mic frame
    index, so dropped mic frames and late consumers do not shift it). It reads
    one frame behind the block playing at capture time (slack for the two
    callbacks' jitter). Then the delay the canceller sees is the devices'
    output + input latency less that frame (~0.23 s on the null sink with the
    actors' 0.2 s stream latency; it must stay positive), constant unless the
    devices glitch; if the two streams drift apart by more than
    :data:`TAP_RESYNC_FRAMES` the base is re-fixed (counted in ``resyncs``).

    Thread-safe: one lock held for a copy of one block.
    """

    def __init__(self, *, capacity_seconds: float = TAP_CAPACITY_SECONDS) -> None:
        import collections
        import threading

        import numpy as np

        self._lock = threading.Lock()
        self._ring = np.zeros(round(capacity_seconds * SAMPLE_RATE), np.float32)
        self._written = 0  # samples recorded since the start
        # (time.monotonic() of a pull, samples recorded before it): the last 5 s at 80 ms blocks
        self._pulls: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)
        self._base: int | None = None  # stream position of mic frame index 0
        self.resyncs = 0  # times the base was re-fixed after the streams drifted apart

    def played(self, block: np.ndarray, now: float | None = None) -> None:
        """Record ``block`` (1-D float32) as played at ``now`` (``time.monotonic()``)."""
        now = time.monotonic() if now is None else now
        n = len(block)
        size = len(self._ring)
        with self._lock:
            start = self._written % size
            first = min(n, size - start)
            self._ring[start : start + first] = block[:first]
            self._ring[: n - first] = block[first:]
            self._pulls.append((now, self._written))
            self._written += n

    def _start_of_block_at(self, t: float) -> int:
        """Stream position of the block being played at time ``t`` (lock held)."""
        for when, before in reversed(self._pulls):
            if when <= t:
                return before
        return self._pulls[0][1]

    def reference_for(self, index: int, t_capture: float) -> np.ndarray:
        """The FRAME_SAMPLES played alongside mic frame ``index`` captured at ``t_capture``
        (an :class:`~xswarm.audio.frame.AudioFrame`'s ``index`` and ``t_capture``).
        Zeros where nothing was played (before the speaker started)."""
        import numpy as np

        with self._lock:
            if not self._pulls:  # the speaker has not started: nothing was played
                return np.zeros(FRAME_SAMPLES, np.float32)
            # One frame of slack: the two callbacks' phases may swap by a little jitter.
            expected = self._start_of_block_at(t_capture) - FRAME_SAMPLES
            if self._base is not None:
                drift = abs(self._base + index * FRAME_SAMPLES - expected)
                if drift > TAP_RESYNC_FRAMES * FRAME_SAMPLES:
                    self._base = None
                    self.resyncs += 1
            if self._base is None:
                self._base = expected - index * FRAME_SAMPLES
            start = self._base + index * FRAME_SAMPLES
            out = np.zeros(FRAME_SAMPLES, np.float32)
            # What is still in the ring; before the start or not yet played stays zero.
            lo = max(start, self._written - len(self._ring), 0)
            hi = min(start + FRAME_SAMPLES, self._written)
            if lo < hi:
                out[lo - start : hi - start] = self._ring[np.arange(lo, hi) % len(self._ring)]
            return out


class TappedJitterBuffer(JitterBuffer):
    """A :class:`JitterBuffer` that tells a :class:`PlaybackTap` what it hands to the
    output callback (pass it as the speaker actor's ``buffer``)."""

    def __init__(self, tap: PlaybackTap, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tap = tap

    def pull_into(self, out: np.ndarray) -> int:
        taken = super().pull_into(out)
        self.tap.played(out if out.ndim == 1 else out[:, 0])
        return taken


def _load_backend() -> Any:
    try:
        from pywebrtc_audio import AudioProcessor
    except ImportError as error:
        raise AudioError(
            f"echo cancellation needs the pywebrtc-audio package ({error}); "
            "install it with: pip install pywebrtc-audio, or turn it off with --no-aec"
        ) from None
    return AudioProcessor


class EchoCanceller:
    """Removes the echo of ``ref_frame`` (what was played) from ``mic_frame``.

    Pair each mic frame with the playback at the same place in the stream:
    ``tap.reference_for(frame.index, frame.t_capture)`` from a
    :class:`PlaybackTap` fed by the speaker's :class:`TappedJitterBuffer` (or,
    without a tap, the frame handed to the speaker at that step; zeros or
    ``None`` when nothing was played). The echo may arrive up to
    ``max_delay_seconds`` after its reference; the delay is estimated
    continuously (:attr:`stats` ``.delay_seconds``) and a change is followed
    within ~1-2 s. Pass every frame in order; after a long gap (a device
    reopened) call :meth:`reset`.

    Raises :class:`AudioError` at construction if ``pywebrtc-audio`` is not
    installed, ``ValueError`` for frames of the wrong shape.
    """

    def __init__(self, *, max_delay_seconds: float = MAX_DELAY_SECONDS) -> None:
        import numpy as np

        self._backend_type = _load_backend()
        self.max_delay_seconds = max_delay_seconds
        self.estimator = DelayEstimator(max_delay_seconds=max_delay_seconds)
        self.stats = AecStats()
        self._history = np.zeros(round(max_delay_seconds * SAMPLE_RATE) + FRAME_SAMPLES, np.float32)
        self._silence = np.zeros(FRAME_SAMPLES, np.float32)
        self._shift = 0  # samples the reference is delayed by before AEC3
        self._apm = self._new_backend()

    def _new_backend(self) -> Any:
        return self._backend_type(
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            echo_cancellation=True,
            stream_delay_ms=0,  # 0: AEC3 estimates the residual delay itself
        )

    def process(self, mic_frame: np.ndarray, ref_frame: np.ndarray | None = None) -> np.ndarray:
        """The mic frame with the echo removed: a new (1920,) float32 array."""
        import numpy as np

        started = time.perf_counter()
        mic = _frame(mic_frame, "mic_frame")
        ref = self._silence if ref_frame is None else _frame(ref_frame, "ref_frame")
        self._history[:-FRAME_SAMPLES] = self._history[FRAME_SAMPLES:]
        self._history[-FRAME_SAMPLES:] = ref
        self.estimator.push(mic, ref)
        self._follow(self.estimator.delay_seconds)
        end = len(self._history) - self._shift
        aligned = self._history[end - FRAME_SAMPLES : end]
        out = np.asarray(self._apm.process(mic, np.ascontiguousarray(aligned)), np.float32)
        self.stats.frames += 1
        self.stats.cpu_seconds += time.perf_counter() - started
        return out

    def cancel_frame(self, frame: AudioFrame, tap: PlaybackTap) -> AudioFrame:
        """``frame`` (from the mic) with the echo of what ``tap`` says was playing removed:
        a new :class:`AudioFrame` with the same ``index``, ``t_capture`` and ``t_adc``."""
        reference = tap.reference_for(frame.index, frame.t_capture)
        return dataclasses.replace(frame, pcm=self.process(frame.pcm, reference))

    def _follow(self, estimate: float | None) -> None:
        """Adopt a newly confirmed delay: re-align the reference if AEC3 could not
        find the echo by itself, and reset AEC3 if the delay moved.

        A moved delay is a new echo path to AEC3: measured on the simulated room,
        a reset filter is back above 30 dB within a second while an unreset one
        stays near 12 dB for ~4 s. The first estimate needs no reset when no
        re-alignment is needed (AEC3 has been converging on that delay).
        """
        in_use = self.stats.delay_seconds
        if estimate is None or (in_use is not None and abs(estimate - in_use) <= RESET_SECONDS):
            return
        residual = estimate - self._shift / SAMPLE_RATE
        aligned = AEC3_RANGE_SECONDS[0] <= residual <= AEC3_RANGE_SECONDS[1] or (
            self._shift == 0 and residual < AEC3_RANGE_SECONDS[0]
        )
        if not aligned:
            self._shift = max(0, round((estimate - RESIDUAL_SECONDS) * SAMPLE_RATE))
        if in_use is not None or not aligned:
            self._apm.reset()
            self.stats.resets += 1
        self.stats.delay_seconds = estimate
        self.stats.delay_updates += 1
        self.stats.shift_seconds = self._shift / SAMPLE_RATE

    def reset(self) -> None:
        """Forget everything: filter, delay estimate, reference history (a new session)."""
        self.estimator = DelayEstimator(max_delay_seconds=self.max_delay_seconds)
        self.stats = AecStats()
        self._history[:] = 0
        self._shift = 0
        self._apm = self._new_backend()


def _frame(frame: Any, name: str) -> np.ndarray:
    import numpy as np

    array = np.asarray(frame)
    if array.shape != (FRAME_SAMPLES,):
        raise ValueError(f"{name} must have shape ({FRAME_SAMPLES},), got {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)
