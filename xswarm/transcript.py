"""From text tokens to timestamped words, segments and subtitle/JSON/text output.

Every speech-to-text engine in xswarm ends in the same place: a stream of
:class:`Word` objects (text, start and end in seconds of the input file). This
module holds what is shared after that point, so it is written once:

- :class:`WordAssembler` turns the text stream of a Kyutai delayed-streams STT
  model (one SentencePiece token per 80 ms step) into words, with times
  corrected for the model's audio delay and silence prefix;
- :class:`Segmenter` groups words into segments at pauses, at sentence ends
  and at the usual subtitle limits (so a segment is also a valid cue);
- the writers (:func:`make_writer`) print segments as JSON lines, one JSON
  document, plain text, SRT, WebVTT, or readable text for a terminal.

Timing rule for Kyutai text streams (see :class:`WordAssembler`)
-----------------------------------------------------------------
The token emitted at step ``i`` (0-based, one step per 80 ms frame fed to the
model) is stamped ``i * 0.08 - silence_prefix - audio_delay`` seconds: the
model writes a word ``audio_delay`` seconds after hearing it, and the silence
prefix is audio we added in front of the file. This is the rule of Kyutai's
own ``stt_from_file_pytorch.py`` (``position / frame_rate - offset``).

- A piece whose text starts with ``▁`` starts a new word; a piece without it
  continues the current word (``▁hel`` ``lo`` -> ``hello``). Tokens 0
  (end-of-padding, which Kyutai puts right before each word) and 3 (padding)
  carry no text and are skipped.
- A word starts at its first piece.
- The stream has no end-of-word marker, so a word ends when the next word
  starts, but at most :data:`MAX_WORD_SECONDS` after its own start (Kyutai's
  scripts bound the last word the same way, by one second), and never before
  the step after its last piece. Without the bound a word before a pause
  would stretch over the whole pause.
- Times are clamped to ``[end of the previous word, audio heard so far]``, so
  they are monotonic and inside the file even for tokens emitted in the
  padding after the audio.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Iterable, Sequence
from typing import Final, Protocol, TextIO

from xswarm.audio import FRAME_SECONDS

# --- Kyutai text stream -----------------------------------------------------------------

END_OF_PADDING_TOKEN: Final = 0  # Kyutai STT's EPAD: emitted right before each word
PADDING_TOKEN: Final = 3  # Kyutai STT's PAD: nothing new said in this step
PADDING_TOKENS: Final = frozenset({END_OF_PADDING_TOKEN, PADDING_TOKEN})
WORD_START: Final = "▁"  # SentencePiece marks a piece that begins a word with U+2581
MAX_WORD_SECONDS: Final = 1.0  # s, longest a word may last without an end marker (Kyutai's bound)

# --- segments and subtitles ---------------------------------------------------------------

PAUSE_SECONDS: Final = 0.6  # s of silence between words that closes a segment (a breath, a pause)
MAX_CUE_SECONDS: Final = 7.0  # s, the usual upper bound for one subtitle on screen
MAX_LINE_CHARS: Final = 42  # characters per subtitle line (Netflix/BBC guideline)
MAX_CUE_LINES: Final = 2  # lines per subtitle cue
SENTENCE_ENDS: Final = (".", "?", "!", "…", "。", "？", "！")  # a word ending so closes a segment

FORMATS: Final = ("jsonl", "json", "txt", "srt", "vtt")  # the formats --format accepts
PRETTY: Final = "pretty"  # readable text for a terminal: the default when stdout is a TTY


@dataclasses.dataclass(frozen=True)
class Word:
    """One recognised word and when it was said, in seconds of the input file."""

    start: float
    end: float
    text: str

    def to_json(self) -> dict[str, object]:
        return {"start": _seconds(self.start), "end": _seconds(self.end), "text": self.text}


@dataclasses.dataclass(frozen=True)
class Segment:
    """Consecutive words without a long pause: one JSON line, one subtitle cue."""

    words: tuple[Word, ...]

    @property
    def start(self) -> float:
        return self.words[0].start

    @property
    def end(self) -> float:
        return self.words[-1].end

    @property
    def text(self) -> str:
        return " ".join(word.text for word in self.words)

    def to_json(self) -> dict[str, object]:
        return {
            "start": _seconds(self.start),
            "end": _seconds(self.end),
            "text": self.text,
            "words": [word.to_json() for word in self.words],
        }


def _seconds(value: float) -> float:
    """Seconds rounded to the millisecond, the precision of SRT and WebVTT."""
    return round(value, 3)


class PieceTable(Protocol):
    """What the assembler needs of a SentencePiece tokenizer (``SentencePieceProcessor`` fits)."""

    def id_to_piece(self, id: int, /) -> str: ...

    def decode(self, ids: list[int], /) -> str: ...


class WordAssembler:
    """Turn one stream's text tokens, one per model step, into timed words.

    Feed every token the model emits for this stream, in order, with
    :meth:`push` (padding tokens included: they advance the clock). A word is
    returned once the next word starts; :meth:`finish` returns the last one.
    The rule for start and end times is in the module docstring.

    ``offset_seconds`` is the silence prefix plus the model's audio delay
    (``stt_config`` ``audio_silence_prefix_seconds + audio_delay_seconds``).
    """

    def __init__(
        self,
        pieces: PieceTable,
        *,
        offset_seconds: float,
        frame_seconds: float = FRAME_SECONDS,
        max_word_seconds: float = MAX_WORD_SECONDS,
    ) -> None:
        self._pieces = pieces
        self._offset = offset_seconds
        self._frame = frame_seconds
        # floor: a word lasts *at most* max_word_seconds (1e-9 absorbs 1.0 / 0.08 rounding)
        self._max_word_steps = max(1, int(max_word_seconds / frame_seconds + 1e-9))
        self._step = 0  # index of the next token pushed
        self._tokens: list[int] = []  # pieces of the word being built
        self._first_step = 0
        self._last_step = 0
        self._previous_end = 0.0

    @property
    def steps(self) -> int:
        """How many tokens were pushed so far."""
        return self._step

    def seconds(self, step: int) -> float:
        """The input-file time of the token emitted at ``step`` (may be negative)."""
        return step * self._frame - self._offset

    def push(self, token: int, *, horizon: float = math.inf) -> Word | None:
        """Take the token of the next step; return the word it completes, if any.

        ``horizon`` is how many seconds of the input the model has heard so far
        (the file's duration once it has ended): no time goes beyond it.
        """
        step = self._step
        self._step += 1
        if token in PADDING_TOKENS:
            return None
        starts_word = self._pieces.id_to_piece(token).startswith(WORD_START)
        if self._tokens and not starts_word:
            self._tokens.append(token)
            self._last_step = step
            return None
        done = self._close(step, horizon) if self._tokens else None
        self._tokens = [token]
        self._first_step = self._last_step = step
        return done

    def finish(self, *, horizon: float = math.inf) -> Word | None:
        """The end of the stream: return the word still being built, if any."""
        if not self._tokens:
            return None
        return self._close(self._step, horizon)

    def _close(self, next_start: int, horizon: float) -> Word | None:
        tokens, self._tokens = self._tokens, []
        end_step = min(
            next_start, max(self._last_step + 1, self._first_step + self._max_word_steps)
        )
        # one line of printable text: byte pieces can decode to newlines or controls,
        # which would break txt, SRT and WebVTT lines
        decoded = "".join(c if c.isprintable() else " " for c in self._pieces.decode(tokens))
        text = " ".join(decoded.split())
        if not text:  # control pieces only (<s>, </s>): nothing was said
            return None
        start = min(max(self.seconds(self._first_step), self._previous_end, 0.0), horizon)
        end = min(max(self.seconds(end_step), start), horizon)
        self._previous_end = end
        return Word(start=start, end=end, text=text)


def wrap_lines(text: str, width: int = MAX_LINE_CHARS) -> list[str]:
    """Greedy word wrap to lines of at most ``width`` characters.

    A word longer than a line is cut into line-sized pieces (rare: a URL, a
    run of nonsense from a random-weight model).
    """
    lines: list[str] = []
    line = ""
    for word in text.split():
        while len(word) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if not word:
            continue
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= width:
            line = f"{line} {word}"
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


class Segmenter:
    """Group words into segments that also make good subtitle cues.

    A segment closes before a word that follows a pause of at least
    ``pause_seconds``, before a word that would make it last more than
    ``max_seconds`` or not fit in ``max_lines`` lines of ``line_chars``, and
    after a word ending a sentence. :meth:`push` returns the segments a word
    closed (zero or one); :meth:`finish` returns the last one.
    """

    def __init__(
        self,
        *,
        pause_seconds: float = PAUSE_SECONDS,
        max_seconds: float = MAX_CUE_SECONDS,
        line_chars: int = MAX_LINE_CHARS,
        max_lines: int = MAX_CUE_LINES,
    ) -> None:
        self._pause = pause_seconds
        self._max_seconds = max_seconds
        self._line_chars = line_chars
        self._max_lines = max_lines
        self._words: list[Word] = []

    def push(self, word: Word) -> list[Segment]:
        closed: list[Segment] = []
        if self._words and self._breaks_before(word):
            closed.append(self._close())
        self._words.append(word)
        if word.text.endswith(SENTENCE_ENDS):
            closed.append(self._close())
        return closed

    def finish(self) -> list[Segment]:
        return [self._close()] if self._words else []

    def _breaks_before(self, word: Word) -> bool:
        first, last = self._words[0], self._words[-1]
        if word.start - last.end >= self._pause:
            return True
        if word.end - first.start > self._max_seconds:
            return True
        text = " ".join([*(w.text for w in self._words), word.text])
        return len(wrap_lines(text, self._line_chars)) > self._max_lines

    def _close(self) -> Segment:
        segment = Segment(tuple(self._words))
        self._words = []
        return segment


def segment_words(words: Iterable[Word]) -> list[Segment]:
    """All segments of a finished list of words (convenience for tests and callers)."""
    segmenter = Segmenter()
    segments = [segment for word in words for segment in segmenter.push(word)]
    return segments + segmenter.finish()


# --- writers ------------------------------------------------------------------------------


class Writer(Protocol):
    """Writes one input file's transcript in one format to a text stream.

    Call :meth:`segment` for each segment in order, then :meth:`close` once
    with the file's duration. The writer never closes the stream it was given.
    """

    def segment(self, segment: Segment) -> None: ...

    def close(self, duration: float) -> None: ...


class _Base:
    def __init__(self, out: TextIO, *, file: str, words: bool) -> None:
        self.out = out
        self.file = file
        self.words = words
        self.count = 0  # cues written so far

    def entries(self, segment: Segment) -> Sequence[Segment]:
        """One entry per segment, or one per word with ``--words``."""
        if self.words:
            return [Segment((word,)) for word in segment.words]
        return [segment]


class JsonlWriter(_Base):
    """One ``{"type": "segment", ...}`` line per segment (``"word"`` lines with ``--words``)."""

    def segment(self, segment: Segment) -> None:
        if self.words:
            for word in segment.words:
                self._line({"type": "word", "file": self.file, **word.to_json()})
        else:
            self._line({"type": "segment", "file": self.file, **segment.to_json()})

    def close(self, duration: float) -> None:
        pass

    def _line(self, obj: dict[str, object]) -> None:
        self.out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.out.flush()


class JsonWriter(_Base):
    """One JSON object per file: ``{"type": "transcript", "file", "duration", "text", "segments"}``.

    ``indent`` is for people; the object is written when the file is done.
    """

    def __init__(self, out: TextIO, *, file: str, words: bool) -> None:
        super().__init__(out, file=file, words=words)
        self._segments: list[Segment] = []

    def segment(self, segment: Segment) -> None:
        self._segments.append(segment)

    def close(self, duration: float) -> None:
        obj = transcript_json(self.file, duration, self._segments)
        self.out.write(json.dumps(obj, ensure_ascii=False, indent=2))
        self.out.flush()


def transcript_json(file: str, duration: float, segments: Sequence[Segment]) -> dict[str, object]:
    """The ``json`` format's object for one file."""
    return {
        "type": "transcript",
        "file": file,
        "duration": _seconds(duration),
        "text": " ".join(segment.text for segment in segments),
        "segments": [segment.to_json() for segment in segments],
    }


class TxtWriter(_Base):
    """Plain text: one line per segment (one word per line with ``--words``)."""

    def segment(self, segment: Segment) -> None:
        for entry in self.entries(segment):
            self.out.write(entry.text + "\n")
        self.out.flush()

    def close(self, duration: float) -> None:
        pass


def subtitle_time(seconds: float, *, separator: str) -> str:
    """``HH:MM:SS,mmm`` (SRT, ``separator=","``) or ``HH:MM:SS.mmm`` (WebVTT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


class SrtWriter(_Base):
    """SubRip: numbered cues, ``00:00:01,000 --> 00:00:02,500``, at most 2 lines of 42."""

    separator = ","

    def segment(self, segment: Segment) -> None:
        for entry in self.entries(segment):
            self.count += 1
            self._cue(entry)
        self.out.flush()

    def _cue(self, entry: Segment) -> None:
        start = subtitle_time(entry.start, separator=self.separator)
        end = subtitle_time(entry.end, separator=self.separator)
        lines = "\n".join(wrap_lines(entry.text))
        self.out.write(f"{self.count}\n{start} --> {end}\n{lines}\n\n")

    def close(self, duration: float) -> None:
        pass


class VttWriter(SrtWriter):
    """WebVTT: a ``WEBVTT`` header, then cues ``00:00:01.000 --> 00:00:02.500``."""

    separator = "."

    def __init__(self, out: TextIO, *, file: str, words: bool) -> None:
        super().__init__(out, file=file, words=words)
        self.out.write("WEBVTT\n\n")

    def _cue(self, entry: Segment) -> None:
        start = subtitle_time(entry.start, separator=self.separator)
        end = subtitle_time(entry.end, separator=self.separator)
        lines = "\n".join(wrap_lines(entry.text))
        self.out.write(f"{start} --> {end}\n{lines}\n\n")


class PrettyWriter(_Base):
    """Readable text for a terminal: ``[0:01.20 - 0:03.40] text`` per segment."""

    def segment(self, segment: Segment) -> None:
        for entry in self.entries(segment):
            self.out.write(f"[{_clock(entry.start)} - {_clock(entry.end)}] {entry.text}\n")
        self.out.flush()

    def close(self, duration: float) -> None:
        pass


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(0.0, seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:05.2f}"
    return f"{minutes}:{secs:05.2f}"


_WRITERS: Final = {
    "jsonl": JsonlWriter,
    "json": JsonWriter,
    "txt": TxtWriter,
    "srt": SrtWriter,
    "vtt": VttWriter,
    PRETTY: PrettyWriter,
}

EXTENSIONS: Final = {fmt: f".{fmt}" for fmt in FORMATS}  # --output-dir file suffixes


def make_writer(fmt: str, out: TextIO, *, file: str, words: bool = False) -> Writer:
    """The writer for ``fmt`` (one of :data:`FORMATS` or :data:`PRETTY`) on ``out``."""
    try:
        cls = _WRITERS[fmt]
    except KeyError:
        raise ValueError(f"unknown transcript format {fmt!r}") from None
    writer: Writer = cls(out, file=file, words=words)
    return writer


def render(fmt: str, segments: Iterable[Segment], *, file: str, duration: float,
           words: bool = False) -> str:
    """A whole transcript in ``fmt`` as a string (tests, and callers with a finished list)."""
    out = io.StringIO()
    writer = make_writer(fmt, out, file=file, words=words)
    for segment in segments:
        writer.segment(segment)
    writer.close(duration)
    return out.getvalue()
