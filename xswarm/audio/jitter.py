"""The playback jitter buffer between Trio (producer) and the PortAudio callback (consumer).

Model output arrives in 80 ms frames with jitter; the sound card pulls blocks
on its own clock, from its own thread. The buffer decouples the two: the Trio
side :meth:`JitterBuffer.push`\\ es frames, the output callback
:meth:`JitterBuffer.pull_into` its block. Both are short, non-blocking and
guarded by one lock (a ``threading.Lock`` held for a copy of at most a few
kilobytes: microseconds, so the callback never waits noticeably).

Policies, all counted in :class:`JitterStats`:

- Bounded: beyond ``capacity`` samples the *oldest* audio is dropped (late
  audio is worse than missing audio in a conversation); ``dropped`` counts
  the samples thrown away.
- Prefill: playback starts only once ``prefill`` samples are queued, so the
  first frames survive a little jitter. Until then the callback plays silence
  and this is not an underrun (nothing was promised yet).
- Underrun: once playback started, a callback that finds fewer samples than it
  needs plays what there is, then silence, and counts one underrun. After an
  underrun the buffer plays from whatever arrives next (no new prefill, which
  would add latency to every hiccup).
- Clear: :meth:`clear` (barge-in) drops what is queued on purpose; that is
  counted as ``cleared``, apart from ``dropped``. Playback then waits for the
  prefill again: the cushion against jitter is rebuilt (while the assistant
  is silent anyway) instead of playing on from an empty buffer, underrun
  after underrun.
- End: after :meth:`end` (the producer declared it has nothing more) running
  dry is the normal end of speech, not an underrun. A later :meth:`push`
  revives the stream (a new utterance).

"Before the first frame" and "after the declared end" are silence by design,
so they are not counted; a producer that simply stops without declaring an end
(the model stalled) shows up as underruns, one per callback, which is what
the status line should report.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Final

from xswarm.audio import FRAME_SAMPLES

if TYPE_CHECKING:
    import numpy as np

DEFAULT_CAPACITY: Final = (
    8 * FRAME_SAMPLES
)  # samples; 640 ms: beyond that, latency hurts more than drops
DEFAULT_PREFILL: Final = FRAME_SAMPLES  # samples; one frame (80 ms) absorbs typical model jitter


@dataclasses.dataclass(frozen=True)
class JitterStats:
    """A consistent snapshot of the buffer's counters (all in samples, except counts)."""

    pushed: int  # samples pushed
    played: int  # real samples handed to the callback (silence excluded)
    dropped: int  # samples dropped because the buffer was full
    cleared: int  # samples dropped by clear() (barge-in): asked for, so not a drop
    underruns: int  # callbacks that ran dry while playing
    silence: int  # samples of silence played (prefill, underruns, after end)
    depth: int  # samples queued now
    started: bool  # has playback started (prefill reached)


class JitterBuffer:
    """A bounded, thread-safe FIFO of mono float32 samples; see the module docstring.

    ``capacity`` and ``prefill`` are in samples. Every method may be called
    from any thread; none blocks beyond the internal lock.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, prefill: int = DEFAULT_PREFILL) -> None:
        import numpy as np

        if capacity < FRAME_SAMPLES:
            raise ValueError(
                f"capacity must be at least one frame ({FRAME_SAMPLES}), got {capacity}"
            )
        if not 0 <= prefill <= capacity:
            raise ValueError(f"prefill must be between 0 and capacity ({capacity}), got {prefill}")
        self.capacity = capacity
        self.prefill = prefill
        self._lock = threading.Lock()
        self._ring = np.zeros(capacity, dtype=np.float32)
        self._read = 0  # index of the oldest queued sample in _ring
        self._depth = 0
        self._started = False
        self._ended = False
        self._pushed = 0
        self._played = 0
        self._dropped = 0
        self._cleared = 0
        self._underruns = 0
        self._silence = 0

    def push(self, pcm: np.ndarray) -> int:
        """Queue samples (1-D float32); returns how many older samples were dropped to fit."""
        import numpy as np

        data: np.ndarray = np.asarray(pcm, dtype=np.float32).reshape(-1)
        with self._lock:
            self._ended = False
            self._pushed += len(data)
            dropped = 0
            if len(data) >= self.capacity:  # only the newest `capacity` samples can stay
                dropped = self._depth + len(data) - self.capacity
                data = data[-self.capacity :]
                self._read, self._depth = 0, 0
            overflow = self._depth + len(data) - self.capacity
            if overflow > 0:
                self._read = (self._read + overflow) % self.capacity
                self._depth -= overflow
                dropped += overflow
            write = (self._read + self._depth) % self.capacity
            first = min(len(data), self.capacity - write)
            self._ring[write : write + first] = data[:first]
            self._ring[: len(data) - first] = data[first:]
            self._depth += len(data)
            self._dropped += dropped
            if not self._started and self._depth >= max(self.prefill, 1):
                self._started = True
            return dropped

    def pull_into(self, out: np.ndarray) -> int:
        """Fill ``out`` (shape ``(n,)`` or ``(n, channels)``) for the output callback.

        Every channel gets the same mono signal; what the queue cannot supply is
        silence. Returns the number of real samples written. Never raises for
        an empty buffer and never blocks beyond the lock.
        """
        frames = out.shape[0]
        with self._lock:
            take = min(frames, self._depth) if self._started else 0
            if take:
                first = min(take, self.capacity - self._read)
                _fill(out, 0, self._ring[self._read : self._read + first])
                if take > first:
                    _fill(out, first, self._ring[: take - first])
                self._read = (self._read + take) % self.capacity
                self._depth -= take
                self._played += take
            if take < frames:
                out[take:] = 0
                self._silence += frames - take
                if self._started and not self._ended:
                    self._underruns += 1
            return take

    def end(self) -> None:
        """Declare the producer done: running dry from now on is not an underrun."""
        with self._lock:
            self._ended = True

    def clear(self) -> int:
        """Drop everything queued (barge-in: the user interrupted); counted as ``cleared``,
        not as dropped (a drop is audio lost to a full buffer, a health problem).

        Returns the samples dropped: never played (the caller may need to know what of
        its audio was not heard).
        """
        with self._lock:
            cleared = self._depth
            self._cleared += cleared
            self._read, self._depth = 0, 0
            self._started = False  # prefill again (see the module docstring)
            return cleared

    @property
    def depth(self) -> int:
        with self._lock:
            return self._depth

    def stats(self) -> JitterStats:
        with self._lock:
            return JitterStats(
                pushed=self._pushed,
                played=self._played,
                dropped=self._dropped,
                cleared=self._cleared,
                underruns=self._underruns,
                silence=self._silence,
                depth=self._depth,
                started=self._started,
            )


def _fill(out: np.ndarray, start: int, samples: np.ndarray) -> None:
    if out.ndim == 1:
        out[start : start + len(samples)] = samples
    else:
        out[start : start + len(samples)] = samples[:, None]
