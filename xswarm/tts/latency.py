"""How long a :class:`~xswarm.tts.TtsStream` takes to make its first sound.

Kyutai's TTS emits no audio for its text-to-audio delay (``delay_steps``
model steps: 16 of text lookahead + 2 of acoustic delay + the step itself), and
a word's audio starts when the state machine takes the word (after the initial
padding, and only with ``second_stream_ahead`` words of lookahead or the text
ended). So the latency is a number of steps, fixed by the model, times the step
time, which depends on the machine. Stepping back to back (not once per 80 ms)
until the first frame arrives is what makes it small: a cascade should do so,
then keep playback fed.

:func:`measure_first_audio` measures both on a loaded stream; the cascade and
TTS benchmarks call it. Runs on the stream's MLX thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from xswarm.tts.kyutai import TtsStream

MAX_STEPS: Final = 400  # steps before giving up: 32 s of audio, far past any first word


@dataclass(frozen=True)
class FirstAudio:
    """Steps and wall time from the first ``push`` to the first audio, stepping back to back."""

    steps_to_audio: int  # model steps until step() returned its first frame
    steps_to_first_word: int  # ... until the frame where the first word's audio starts
    seconds_to_audio: float  # wall time from push() to that first frame
    seconds_to_first_word: float  # wall time from push() to the first word's frame
    step_seconds: float  # mean wall time of those steps (LM + codec)


def measure_first_audio(
    tts: TtsStream, text: str, *, end: bool = True, max_steps: int = MAX_STEPS
) -> FirstAudio:
    """Start an answer, push ``text`` (then ``end`` it), step until the first word is heard.

    Leaves the answer cancelled. Raises ``RuntimeError`` if no word is heard
    within ``max_steps`` steps (with ``end=False`` and fewer words than
    the model's lookahead, none ever is).
    """
    tts.start()
    started = time.perf_counter()
    tts.push(text)
    if end:
        tts.end()
    audio_at: tuple[int, float] | None = None
    try:
        for step in range(1, max_steps + 1):
            frame = tts.step()
            if frame is None:
                continue
            now = time.perf_counter() - started
            if audio_at is None:
                audio_at = (step, now)
            if frame.words:
                return FirstAudio(
                    steps_to_audio=audio_at[0],
                    steps_to_first_word=step,
                    seconds_to_audio=audio_at[1],
                    seconds_to_first_word=now,
                    step_seconds=now / step,
                )
    finally:
        tts.cancel()
    raise RuntimeError(f"no word was heard within {max_steps} steps")
