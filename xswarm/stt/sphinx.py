"""``sphinx-en``: the offline fallback engine, pocketsphinx with its bundled English model.

The pocketsphinx wheel ships an English acoustic model, dictionary and
language model, so ``xswarm transcribe`` works on a fresh offline machine
before any Kyutai model is pulled. It is far less accurate than Kyutai's STT
on real speech, but clear speech (flite's ``slt`` voice) decodes well.

Pipeline per stream: 24 kHz frames -> streaming soxr to 16 kHz (what the
model was trained on) -> int16 -> pocketsphinx's :class:`Endpointer` (voice
activity) -> one decoder utterance per speech region, started
:data:`PREROLL_SECONDS` before the region (the VAD decides late and would clip
the first phoneme: measured on the tests' 22 flite sentences, WER 0.23
without pre-roll, 0.15 with 0.3 s, 0.13 with 0.8 s, 0.126 once each input
also starts from the initial channel normalisation; decoding each whole file
as one utterance gives 0.14).
Word times are the utterance's start plus the decoder's frame offsets (100
frames per second).
Memory stays flat for long inputs: only the current utterance is held, and an
utterance is cut after :data:`MAX_UTTERANCE_SECONDS` of continuous speech.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from xswarm.audio import SAMPLE_RATE
from xswarm.errors import ModelError, XswarmError
from xswarm.stt.engine import AudioStream, ProgressEvent, StreamEnd, SttEvent, WordEvent
from xswarm.transcript import Word

if TYPE_CHECKING:
    import numpy as np

NAME: Final = "sphinx-en"
SPHINX_RATE: Final = 16_000  # Hz, the rate pocketsphinx's en-us model was trained on
SPHINX_FPS: Final = 100  # decoder frames per second (10 ms hop): seg() times are in these
MAX_UTTERANCE_SECONDS: Final = 30.0  # s of continuous speech before an utterance is cut
PREROLL_SECONDS: Final = 0.8  # s of audio before the VAD's speech start given to the decoder
HISTORY_SECONDS: Final = 1.5  # s of recent input kept for the pre-roll (> VAD window + pre-roll)
PROGRESS_EVERY: Final = 6  # frames (0.48 s) between progress events
FILLERS: Final = frozenset({"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]"})  # not words


class SphinxEngine:
    """pocketsphinx behind the :class:`~xswarm.stt.engine.SttEngine` interface.

    Streams are decoded one after the other (``batch_size`` 1): pocketsphinx
    has no batch and is already faster than real time here (RTF ~0.1).
    Raises :class:`~xswarm.errors.ModelError` if pocketsphinx cannot load.
    """

    name = NAME
    batch_size = 1

    def __init__(self) -> None:
        try:
            import pocketsphinx

            pocketsphinx.set_loglevel("FATAL")  # its INFO lines would flood stderr
            self._decoder: Any = pocketsphinx.Decoder(loglevel="FATAL")
            self._initial_cmn: str = self._decoder.get_cmn()
        except (ImportError, RuntimeError, ValueError) as error:
            raise ModelError(
                f"{NAME}: pocketsphinx could not load ({error}); "
                "reinstall it: pip install 'pocketsphinx>=5,<6'"
            ) from None

    def transcribe(self, streams: Sequence[AudioStream]) -> Iterator[SttEvent]:
        for stream in streams:
            yield from self._one(stream)

    def listener(self) -> _Listener:
        """A fresh push-based decoding state for one input (see :class:`_Listener`).

        One listener at a time: they share this engine's decoder.
        """
        return _Listener(self._decoder, self._initial_cmn)

    def _one(self, stream: AudioStream) -> Iterator[SttEvent]:
        listener = self.listener()
        yielded = 0
        count = 0
        error: XswarmError | None = None
        try:
            for frame in stream.frames:
                yielded += len(frame)
                count += 1
                for word in listener.feed(frame):
                    yield WordEvent(stream.index, word)
                if count % PROGRESS_EVERY == 0:
                    yield ProgressEvent(stream.index, yielded / SAMPLE_RATE)
        except XswarmError as failure:
            error = failure
        duration = stream.samples(yielded) / SAMPLE_RATE
        words = listener.end_utterance() if error is not None else listener.finish()
        for word in words:
            yield WordEvent(stream.index, _clamp(word, duration))
        yield StreamEnd(stream.index, duration, error)


class _Listener:
    """One input's decoding state, pushed a frame at a time.

    24 kHz frames -> streaming resampler -> int16 -> VAD (:class:`Endpointer`)
    -> one decoder utterance per speech region, with pre-roll from the recent
    history. Word times are seconds since the listener's first sample. Used by
    the file engine (:meth:`SphinxEngine.transcribe`) and the conversation
    stream (:mod:`xswarm.stt.stream`).
    """

    def __init__(self, decoder: Any, initial_cmn: str) -> None:
        import pocketsphinx
        import soxr

        # Each input starts from the model's initial channel normalisation: the
        # decoder adapts it utterance by utterance, and carrying it over would make
        # a file's words depend on the files decoded before it. The same goes for the
        # front end's noise estimate (remove_noise): reinit_feat() resets it (0.5 ms).
        # Measured on 36 flite files: 5 came out differently after the others without it.
        decoder.reinit_feat()
        decoder.set_cmn(initial_cmn)
        self._resampler = soxr.ResampleStream(SAMPLE_RATE, SPHINX_RATE, 1, dtype="float32")
        self._endpointer = pocketsphinx.Endpointer(sample_rate=SPHINX_RATE)
        self._utterance = _Utterance(decoder)
        self._history = _History()
        self._pending = b""
        self._vad_start = 0.0  # s, input time of the endpointer's first sample

    def feed(self, frame: np.ndarray) -> list[Word]:
        """One frame of 24 kHz float32 samples in; the words of any utterance it ended."""
        self._pending += _int16(self._resampler.resample_chunk(frame, last=False))
        return self._run()

    def end_utterance(self) -> list[Word]:
        """End the current utterance now, whatever the VAD says: its words.

        A VAD still inside a speech region is replaced by a fresh one on the
        same clock (what it holds back is the latest 0.3 s, dropped), so the
        next speech opens a new region, a new utterance and a right start time;
        and the next utterance's pre-roll does not reach back before this point.
        """
        if self._endpointer.in_speech:
            import pocketsphinx

            self._endpointer = pocketsphinx.Endpointer(sample_rate=SPHINX_RATE)
            self._vad_start = self._history.end
        self._history.forget()
        return self._utterance.end()

    def finish(self) -> list[Word]:
        """The input has ended: the resampler's and the VAD's last samples, the last words."""
        import numpy as np

        self._pending += _int16(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        words = self._run()
        endpointer = self._endpointer
        if endpointer.in_speech:
            # end_stream rejects an empty buffer: one silent sample stands in
            tail = endpointer.end_stream(self._pending or bytes(2))
            self._pending = b""
            if tail:  # None, or empty: process_raw(b"") raises IndexError
                start = self._vad_start + endpointer.speech_start
                words += self._utterance.feed(tail, start, self._history)
        return words + self._utterance.end()

    def _run(self) -> list[Word]:
        """Run the whole VAD frames of the pending samples through; keep the rest pending."""
        endpointer = self._endpointer
        size = endpointer.frame_bytes
        pending = self._pending
        offset = 0
        words: list[Word] = []
        while len(pending) - offset >= size:
            chunk = pending[offset : offset + size]
            offset += size
            self._history.add(chunk)
            speech = endpointer.process(chunk)
            if speech is None:
                continue
            start = self._vad_start + endpointer.speech_start
            words += self._utterance.feed(speech, start, self._history)
            if not endpointer.in_speech:
                words += self._utterance.end()
        self._pending = pending[offset:]
        return words


class _History:
    """The last :data:`HISTORY_SECONDS` of 16 kHz int16 input, with its start time."""

    def __init__(self) -> None:
        self._data = b""
        self._end = 0  # samples fed so far: the input time of the data's end

    @property
    def end(self) -> float:
        """Input time (s) of the end of the data: everything added so far."""
        return self._end / SPHINX_RATE

    def forget(self) -> None:
        """Drop the data (the clock goes on): no pre-roll from before this point."""
        self._data = b""

    def add(self, chunk: bytes) -> None:
        self._end += len(chunk) // 2
        self._data = (self._data + chunk)[-int(HISTORY_SECONDS * SPHINX_RATE) * 2 :]

    def before(self, start: float) -> tuple[float, bytes]:
        """Up to :data:`PREROLL_SECONDS` of input ending at time ``start``, and its start time."""
        held_from = self._end - len(self._data) // 2
        stop = max(held_from, min(self._end, round(start * SPHINX_RATE)))
        begin = max(held_from, stop - int(PREROLL_SECONDS * SPHINX_RATE))
        return begin / SPHINX_RATE, self._data[(begin - held_from) * 2 : (stop - held_from) * 2]


class _Utterance:
    """One decoder utterance: started at the first speech bytes, ended by silence or length."""

    def __init__(self, decoder: Any) -> None:
        self._decoder = decoder
        self._active = False
        self._start = 0.0  # s, input time of the utterance's first sample
        self._samples = 0

    def feed(self, speech: bytes, region_start: float, history: _History) -> list[Word]:
        words: list[Word] = []
        if self._active and self._samples >= MAX_UTTERANCE_SECONDS * SPHINX_RATE:
            start = self._start + self._samples / SPHINX_RATE
            words = self.end()
            self._begin(start)
        elif not self._active:
            preroll_start, preroll = history.before(region_start)
            self._begin(preroll_start)
            if preroll:
                self._decoder.process_raw(preroll, False, False)
                self._samples += len(preroll) // 2
        self._decoder.process_raw(speech, False, False)
        self._samples += len(speech) // 2
        return words

    def _begin(self, start: float) -> None:
        self._decoder.start_utt()
        self._active = True
        self._start = start
        self._samples = 0

    def end(self) -> list[Word]:
        if not self._active:
            return []
        self._active = False
        self._decoder.end_utt()
        words = []
        limit = self._start + self._samples / SPHINX_RATE
        for seg in self._decoder.seg():
            text = seg.word
            if text in FILLERS or text.startswith("+"):  # +NOISE+ style fillers
                continue
            text = text.split("(")[0]  # alternate pronunciations: "read(2)" -> "read"
            start = min(self._start + seg.start_frame / SPHINX_FPS, limit)
            end = min(self._start + (seg.end_frame + 1) / SPHINX_FPS, limit)
            words.append(Word(start=start, end=max(start, end), text=text))
        return words


def _int16(samples: np.ndarray) -> bytes:
    import numpy as np

    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


def _clamp(word: Word, duration: float) -> Word:
    if word.end <= duration or math.isclose(word.end, duration):
        return word
    return Word(start=min(word.start, duration), end=duration, text=word.text)
