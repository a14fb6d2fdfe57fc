"""Small stand-ins for the cascade's TTS and STT (contracts 1 and 2 of the session brief).

They make the cascade's own logic exact in tests: which word is in which
frame, when the user starts and stops speaking. The tests the issue asks for
run the real models (tests/test_cascade.py); these serve tests/test_cascade_unit.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS
from xswarm.transcript import Word

TTS_LEVEL = 0.25  # amplitude of the fake voice: far above the cascade's speech threshold


@dataclass(frozen=True)
class FakeTtsFrame:
    pcm: np.ndarray
    words: tuple[str, ...]


@dataclass(frozen=True)
class FakeSttUpdate:
    words: tuple[Word, ...]
    end_of_turn: float | None


class FakeTts:
    """Says one word per frame after ``delay`` steps of no audio; records every call."""

    def __init__(self, delay: int = 2) -> None:
        self.delay = delay
        self.calls: list[str] = []
        self.pushed: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self._text = ""
        self._queue: list[str] = []
        self._ended = False
        self._steps = 0
        self._started = False

    def start(self) -> None:
        self.calls.append("start")
        self._reset()
        self._started = True

    def push(self, text: str) -> None:
        assert self._started, "push before start"
        self.calls.append("push")
        self.pushed.append(text)
        self._text += text
        *whole, self._text = self._text.split(" ")
        self._queue += [w for w in whole if w]

    def end(self) -> None:
        self.calls.append("end")
        if self._text.strip():
            self._queue.append(self._text.strip())
        self._text = ""
        self._ended = True

    def step(self) -> FakeTtsFrame | None:
        self._steps += 1
        if self._steps <= self.delay:
            return None
        pcm = np.full(FRAME_SAMPLES, TTS_LEVEL, np.float32)
        if self._queue:
            return FakeTtsFrame(pcm, (self._queue.pop(0),))
        return FakeTtsFrame(pcm * 0.1, ())  # starved or ended: padding

    @property
    def done(self) -> bool:
        return self._ended and not self._queue

    def cancel(self) -> None:
        self.calls.append("cancel")
        self._reset()


class FakeStt:
    """Hears the next phrase of ``words`` for every run of loud frames, when it ends (or at
    flush)."""

    name = "fake-stt"
    has_vad = False
    flush_frames = 1

    def __init__(self, words: list[str]) -> None:
        self.words = list(words)
        self.frames = 0
        self._run_start: int | None = None
        self.flushes = 0

    def feed(self, pcm: np.ndarray) -> FakeSttUpdate:
        loud = float(np.sqrt(np.mean(pcm**2))) > 0.02
        index = self.frames
        self.frames += 1
        if loud and self._run_start is None:
            self._run_start = index
        if not loud and self._run_start is not None:
            return FakeSttUpdate(self._word(index), None)
        return FakeSttUpdate((), None)

    def _word(self, end: int) -> tuple[Word, ...]:
        """The next phrase of ``words``, one Word per word, spread over the loud run."""
        start, self._run_start = self._run_start, None
        if not self.words or start is None:
            return ()
        texts = self.words.pop(0).split()
        step = (end - start) * FRAME_SECONDS / len(texts)
        t0 = start * FRAME_SECONDS
        return tuple(Word(t0 + i * step, t0 + (i + 1) * step, t) for i, t in enumerate(texts))

    def flush(self) -> tuple[Word, ...]:
        self.flushes += 1
        return self._word(self.frames) if self._run_start is not None else ()

    def reset(self) -> None:
        self.frames = 0
