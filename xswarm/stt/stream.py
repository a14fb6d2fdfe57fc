"""Push-based speech-to-text for conversation: one 80 ms frame in, the words it completed out.

File transcription (:mod:`xswarm.stt.engine`) pulls whole inputs through an
engine; a conversation cannot: the microphone pushes a frame every 80 ms, the
caller needs the words as they come and, with Kyutai's checkpoints that have
it, the model's own estimate that the user's turn has ended (the semantic VAD
head), and at the end of a turn it must get the words the model still holds
back (a delayed-streams model writes a word ``audio_delay`` seconds after
hearing it). So a stream offers :meth:`SttStream.feed` per frame and
:meth:`SttStream.flush` per turn.

Both streams reuse the file engines' code, not a copy of it:

- Kyutai (:class:`KyutaiSttStream`): :class:`xswarm.stt.kyutai._Batch` with one
  row (the LM step, also the end-of-turn head), words from
  :class:`~xswarm.transcript.WordAssembler`; the input is fed as the file
  transcriber feeds it (the ``audio_silence_prefix`` first, frames cut from
  that sample stream), so the same audio gives the same tokens.
- ``sphinx-en`` (:class:`SphinxSttStream`): :class:`xswarm.stt.sphinx._Listener`,
  the file engine's resampler + VAD + utterance decoder; its words come out
  when the VAD ends an utterance.

Time: word times are seconds of the *session's input audio*, the frames
given to :meth:`~SttStream.feed` since the stream was opened or reset. The
silent frames a flush feeds are not input: later words are stamped as if
they had not been fed (see :class:`_RealTime`).

Threads: a Kyutai stream runs MLX, so every call (:func:`open_stt_stream`
included) belongs on the MLX thread (``MlxWorker.run``); sphinx is fine there
too. Streams are not thread-safe.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Final, Protocol

from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from xswarm.models.registry import TINY_RANDOM
from xswarm.transcript import Word

if TYPE_CHECKING:
    import numpy as np

    from xswarm.stt.kyutai import KyutaiModel
    from xswarm.stt.sphinx import SphinxEngine

STREAM_ALIASES: Final = {"tiny-random": TINY_RANDOM["stt"]}  # the STT one of a model family
SPHINX_VAD_SECONDS: Final = 0.3  # s, pocketsphinx Endpointer's window: silence that ends speech


@dataclasses.dataclass(frozen=True)
class SttUpdate:
    """What one fed frame produced."""

    words: tuple[Word, ...]  # completed by this frame, times in seconds of the session's input
    end_of_turn: float | None  # P(the user's turn has ended) from the VAD head; None: no head


class SttStream(Protocol):
    """A push-based recogniser for one conversation (see the module docstring).

    ``feed`` takes one frame of :data:`~xswarm.audio.FRAME_SAMPLES` float32
    samples at 24 kHz and returns the words it completed. ``flush`` ends the
    user's turn: it feeds ``flush_frames`` silent frames so that every word
    said so far comes out, and returns those words; the stream then goes on
    with the next turn. ``reset`` forgets everything (a new session: times
    start again at 0). Wrong frame shapes raise ``ValueError`` (a caller's
    bug, not the user's).
    """

    name: str
    has_vad: bool  # the model has the end-of-turn head (SttUpdate.end_of_turn is a float)
    flush_frames: int  # silent frames flush() feeds

    def feed(self, pcm: np.ndarray) -> SttUpdate: ...

    def flush(self) -> tuple[Word, ...]: ...

    def reset(self) -> None: ...


class _RealTime:
    """Maps the recogniser's clock (every sample it heard) to the session's input time.

    The recogniser stamps words in seconds of everything it was fed, flush
    silence included. The session's time leaves that silence out: a word is
    moved ``shift`` seconds earlier (the flush silence fed before it), and
    clamped between the previous word's end and the input heard so far, so
    times only increase and never pass the real audio.
    """

    def __init__(self) -> None:
        # Counted in frames, not summed in seconds: 0.08 s added up drifts.
        self.input_frames = 0  # real input fed
        self.flush_frames = 0  # flush silence fed
        self._last_end = 0.0

    @property
    def heard(self) -> float:
        """Seconds of real input fed."""
        return self.input_frames * FRAME_SAMPLES / SAMPLE_RATE

    @property
    def shift(self) -> float:
        """Seconds of flush silence fed."""
        return self.flush_frames * FRAME_SAMPLES / SAMPLE_RATE

    @property
    def fed(self) -> float:
        """Seconds the recogniser heard: input and flush silence."""
        return (self.input_frames + self.flush_frames) * FRAME_SAMPLES / SAMPLE_RATE

    def word(self, word: Word) -> Word:
        start = min(max(word.start - self.shift, self._last_end), self.heard)
        end = min(max(word.end - self.shift, start), self.heard)
        self._last_end = end
        return Word(start=start, end=end, text=word.text)


def _check_frame(pcm: np.ndarray) -> np.ndarray:
    import numpy as np

    frame = np.asarray(pcm, dtype=np.float32)
    if frame.shape != (FRAME_SAMPLES,):
        raise ValueError(f"a frame is {FRAME_SAMPLES} samples, got shape {frame.shape}")
    return frame


def flush_frames_for(delay_seconds: float) -> int:
    """Silent frames releasing every word of a model ``delay_seconds`` behind: delay/80 ms + 1."""
    return math.ceil(delay_seconds / FRAME_SECONDS - 1e-9) + 1


class KyutaiSttStream:
    """A Kyutai delayed-streams STT model as an :class:`SttStream` (batch of one).

    Frames are cut from the sample stream "silence prefix, then input" (as the
    file transcriber cuts them), so with a prefix that is not a whole number
    of frames each model step straddles two fed frames; :meth:`feed` still
    runs exactly one step per frame. The whole-frame part of the prefix runs
    at :meth:`reset` (opening the stream), so no turn pays for it.
    """

    def __init__(self, model: KyutaiModel) -> None:
        from xswarm.stt.kyutai import has_end_of_turn_head

        self.name = model.name
        self.has_vad = has_end_of_turn_head(model.lm)
        self.flush_frames = flush_frames_for(model.stt.audio_delay_seconds)
        self._model = model
        self._codec = model.codec_factory()
        self.reset()

    def reset(self) -> None:
        import numpy as np

        from xswarm.stt.kyutai import _Batch
        from xswarm.transcript import WordAssembler

        model = self._model
        self._codec.reset()
        self._batch = _Batch(model.lm, [self._codec])
        self._assembler = WordAssembler(model.tokenizer, offset_seconds=model.stt.offset_seconds)
        self._time = _RealTime()
        self._buffer: np.ndarray = np.zeros(model.stt.prefix_samples, np.float32)
        # Words completed in the prefix (a random model's noise; a real one says
        # nothing in silence) come out with the first frame, stamped 0.
        self._held = [word for word, _ in self._steps(vad=False) if word is not None]

    def feed(self, pcm: np.ndarray) -> SttUpdate:
        import numpy as np

        frame = _check_frame(pcm)
        self._time.input_frames += 1
        self._buffer = np.concatenate([self._buffer, frame])
        words = [self._time.word(word) for word in self._held]
        self._held.clear()
        steps = self._steps(vad=self.has_vad)  # one step: a frame completes exactly one
        words += [self._time.word(word) for word, _ in steps if word is not None]
        return SttUpdate(tuple(words), steps[-1][1])

    def flush(self) -> tuple[Word, ...]:
        import numpy as np

        silence = np.zeros(self.flush_frames * FRAME_SAMPLES, np.float32)
        self._buffer = np.concatenate([self._buffer, silence])
        found = self._held + [word for word, _ in self._steps(vad=False) if word is not None]
        self._held = []
        last = self._assembler.finish(horizon=self._time.fed)
        if last is not None:
            found.append(last)
        words = tuple(self._time.word(word) for word in found)
        self._time.flush_frames += self.flush_frames
        return words

    def _steps(self, *, vad: bool) -> list[tuple[Word | None, float | None]]:
        """Run a model step per whole frame buffered: each step's word and end-of-turn value."""
        results: list[tuple[Word | None, float | None]] = []
        while len(self._buffer) >= FRAME_SAMPLES:
            frame, self._buffer = self._buffer[:FRAME_SAMPLES], self._buffer[FRAME_SAMPLES:]
            ended: float | None = None
            if vad:
                tokens, probabilities = self._batch.step_with_end_of_turn([frame])
                ended = probabilities[0]
            else:
                tokens = self._batch.step([frame])
            # The horizon is what the model heard (input and flush silence), in its clock.
            word = self._assembler.push(tokens[0], horizon=self._time.fed)
            results.append((word, ended))
        return results


class SphinxSttStream:
    """``sphinx-en`` (pocketsphinx) as an :class:`SttStream`; no end-of-turn head.

    Words come out when pocketsphinx's VAD ends an utterance (about
    :data:`SPHINX_VAD_SECONDS` of silence after speech). :meth:`flush` feeds
    that much silence plus a frame, then ends the utterance even if the VAD
    has not.
    """

    has_vad = False
    flush_frames = flush_frames_for(SPHINX_VAD_SECONDS)

    def __init__(self, engine: SphinxEngine) -> None:
        self.name = engine.name
        self._engine = engine
        self.reset()

    def reset(self) -> None:
        self._listener = self._engine.listener()
        self._time = _RealTime()

    def feed(self, pcm: np.ndarray) -> SttUpdate:
        frame = _check_frame(pcm)
        self._time.input_frames += 1
        words = self._listener.feed(frame)
        return SttUpdate(tuple(self._time.word(word) for word in words), None)

    def flush(self) -> tuple[Word, ...]:
        import numpy as np

        silence = np.zeros(FRAME_SAMPLES, np.float32)
        found: list[Word] = []
        for _ in range(self.flush_frames):
            found += self._listener.feed(silence)
        found += self._listener.end_utterance()
        words = tuple(self._time.word(word) for word in found)
        self._time.flush_frames += self.flush_frames
        return words


def open_stt_stream(model: str) -> SttStream:
    """The stream for ``model``: ``sphinx-en``, a Kyutai STT name, or a model directory.

    ``tiny-random`` means ``tiny-random-stt`` here. Loads on the calling
    thread (the MLX thread for Kyutai). Raises
    :class:`~xswarm.errors.UsageError` for an unknown name or a model that is
    not speech-to-text, :class:`~xswarm.errors.ModelError` for missing or
    broken weights (naming ``xswarm models pull``) or a pocketsphinx that
    cannot load.
    """
    from xswarm.stt.sphinx import NAME as SPHINX

    model = STREAM_ALIASES.get(model, model)
    if model == SPHINX:
        from xswarm.stt.sphinx import SphinxEngine

        return SphinxSttStream(SphinxEngine())
    _check_name(model)
    from xswarm.stt.kyutai import load_kyutai_model

    return KyutaiSttStream(load_kyutai_model(model))


def _check_name(model: str) -> None:
    """:class:`UsageError` naming the STT models for a name that is not one (paths pass)."""
    import difflib

    from xswarm.errors import UsageError
    from xswarm.models.registry import REGISTRY
    from xswarm.models.resolve import _looks_like_path
    from xswarm.stt.sphinx import NAME as SPHINX

    names = [SPHINX, *(name for name, spec in REGISTRY.items() if spec.kind == "stt")]
    choose = f"choose {', '.join(names)} or a checkpoint directory (see xswarm models list)"
    spec = REGISTRY.get(model)
    if spec is not None:
        if spec.kind != "stt":
            raise UsageError(f"{model} is a {spec.kind} model, not speech-to-text: {choose}")
        return
    if not model.strip():
        raise UsageError(f"no speech-to-text model named: {choose}")
    if _looks_like_path(model):
        return
    close = difflib.get_close_matches(model, names, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UsageError(f"unknown speech-to-text model {model!r}: {hint}{choose}")
