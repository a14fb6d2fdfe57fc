"""The one interface every speech-to-text engine offers: frames in, timed words out.

An engine reads :class:`AudioStream` objects (24 kHz mono float32 frames of
:data:`~xswarm.audio.FRAME_SAMPLES`) and yields events: :class:`WordEvent` for
each recognised word, :class:`ProgressEvent` as audio is consumed, and one
:class:`StreamEnd` per stream. Output formats, batching of files, progress
bars and error reporting are written once, against this interface, in
:mod:`xswarm.transcribe`.

An engine that decodes several streams at once (Kyutai's LM batch) says so
with :attr:`SttEngine.batch_size`; the caller hands it at most that many
streams per :meth:`SttEngine.transcribe` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from xswarm.errors import XswarmError
from xswarm.transcript import Word

if TYPE_CHECKING:
    import numpy as np


@dataclasses.dataclass(frozen=True)
class AudioStream:
    """One input for an engine: a name for messages and an iterator of frames.

    ``frames`` yields float32 arrays of shape ``(FRAME_SAMPLES,)`` at 24 kHz; it
    may raise :class:`~xswarm.errors.XswarmError` part-way (a decoding error,
    NaN samples), which ends that stream only. ``samples`` reports how many of
    the samples yielded so far were real (the last frame is zero-padded);
    without it every yielded sample counts.
    """

    index: int  # the caller's index for this input, echoed in every event
    name: str
    frames: Iterator[np.ndarray]
    real_samples: Callable[[], int] | None = None  # see samples()

    def samples(self, yielded: int) -> int:
        """Real samples among the ``yielded`` ones (the file's length once it has ended)."""
        return yielded if self.real_samples is None else self.real_samples()


@dataclasses.dataclass(frozen=True)
class WordEvent:
    """A word recognised in stream ``stream``; times are seconds of that input."""

    stream: int
    word: Word


@dataclasses.dataclass(frozen=True)
class ProgressEvent:
    """``seconds`` of stream ``stream``'s audio have been decoded so far."""

    stream: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class StreamEnd:
    """Stream ``stream`` is done: its duration, and the error that ended it, if any.

    After a :class:`StreamEnd` no more events come for that stream.
    """

    stream: int
    duration: float
    error: XswarmError | None = None


SttEvent = WordEvent | ProgressEvent | StreamEnd


class SttEngine(Protocol):
    """A speech-to-text engine (see the module docstring).

    :meth:`transcribe` yields events for the given streams (at most
    :attr:`batch_size` of them) until every one has ended; words of one stream
    come in time order. An error that concerns one stream ends that stream
    (its :class:`StreamEnd` carries it) and the others go on; an error of the
    engine itself (the model) is raised. Closing the generator early stops
    decoding; the engine can be used again afterwards.
    """

    name: str  # for messages and the progress bar, e.g. "sphinx-en"
    batch_size: int  # streams decoded together

    def transcribe(self, streams: Sequence[AudioStream]) -> Iterator[SttEvent]: ...
