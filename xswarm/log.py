"""The logger actor of ``xswarm talk``: transcript, event log, trace file and metrics.

Everything the session says to the outside world passes through one actor, so
the inference actor never waits on a terminal, a pipe or a disk: it sends
small :class:`FrameReport` messages (timings, levels, the text piece of the
step) and :class:`Notice` messages (ready, warnings) into a bounded channel,
and :class:`SessionOutput` turns them into

- the transcript on stdout: words assembled from text pieces, pretty on a
  terminal (through :class:`~xswarm.status.LiveDisplay`), JSON lines otherwise;
- the live status line on stderr (terminal only);
- ``--log FILE``: JSON lines, one per event (load, every frame, words, warnings, summary);
- ``--trace FILE``: a Chrome / Perfetto trace (``chrome://tracing``, ui.perfetto.dev)
  with one track per actor and one span per frame;
- the metrics of the final summary (step time and latency percentiles).

JSON lines on stdout (stable; every line has a ``type``)::

    {"type": "status", "status": "ready", "message": "...", "model": "...", "seed": 7,
     "load_seconds": 0.2, "warmup_seconds": 0.05}
    {"type": "status", "status": "warning", "message": "...", "step_ms": 240.0, "frame_ms": 80.0}
    {"type": "word", "speaker": "assistant", "start": 1.28, "end": 1.6, "text": "Hello"}
    {"type": "summary", "reason": "end|duration|interrupted|failed", "duration": 12.4,
     "frames": 155, "words": 31, "drops": 0, "underruns": 0, "step_ms_p50": 19.8,
     "step_ms_p99": 27.1, "latency_ms_p50": 20.3, "latency_ms_p99": 28.0, "warnings": 0,
     "model": "...", "persona": "jarvis", "seed": 7, "load_seconds": 0.2, "events_dropped": 0,
     "drops_by": {"frames": 0, "output": 0, "record": 0, "playback": 0}}

Times are seconds from the first frame; ``latency`` runs from a mic frame's
arrival to its answer frame being queued for playback (null with ``--fast``,
where frames wait for the model by design). The ``--log`` file has
the same records (each status with ``"t"``) plus one ``{"type": "frame"}``
record per step: ``index``, ``t``, ``wait_ms``, ``step_ms`` (MLX-thread round
trip), ``engine_ms`` (inside the step), ``latency_ms``, ``mic_db``,
``assistant_db``, ``text`` (the step's piece), ``drops``, ``underruns``.

Contract: :meth:`SessionOutput.handle` is synchronous and cheap; :meth:`SessionOutput.finish`
must run on every exit path (the talk session calls it in ``finally``): it
flushes the last word, writes the summary, closes both files so they are
complete and valid JSON, and restores the terminal. ``finish`` never raises
for a closed stdout pipe.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, TextIO

from xswarm.audio import FRAME_SECONDS

if TYPE_CHECKING:
    from xswarm.history import SessionLog as HistoryLog
from xswarm.status import (
    BOLD,
    CYAN,
    RESET,
    LiveDisplay,
    StatusSnapshot,
    format_status,
    level_db,
)
from xswarm.transcript import WORD_START, Word

SPEAKER_ASSISTANT: Final = "assistant"
SPEAKER_USER: Final = "user"  # the cascade mode transcribes the user too (xswarm.cascade)
USER_LABEL: Final = "You"  # shown before the user's words on a terminal
LINE_GAP_SECONDS: Final = 1.6  # a pause this long ends a pretty transcript line: a new thought
STATUS_REFRESH_SECONDS: Final = 0.07  # s: about once per frame live, not 50x/s with --fast
SLOW_WARNING_FRAMES: Final = 12  # ~1 s of steps measured before judging real-time speed
SLOW_EARLY_FRAMES: Final = 3  # steps enough to call a model twice too slow
SLOW_FACTOR: Final = 1.0  # warn when the median step exceeds one frame's duration
SLOW_HINT: Final = "use a smaller or more quantised model (--model, see xswarm models list)"
SENTENCE_END: Final = (".", "?", "!")
BYTE_PIECES: Final = re.compile(r"(?:<0x[0-9A-Fa-f]{2}>)+")  # SentencePiece's byte fallback
WORD_CLOSE_PADS: Final = 3  # padding steps (240 ms) after a piece that end the word being built

# Trace tracks (Chrome trace "tid"), one per actor of DESIGN.md.
TRACK_MIC: Final = 1
TRACK_INFERENCE: Final = 2
TRACK_PLAYBACK: Final = 3
TRACK_LOGGER: Final = 4
TRACK_NAMES: Final = {
    TRACK_MIC: "mic",
    TRACK_INFERENCE: "inference",
    TRACK_PLAYBACK: "playback",
    TRACK_LOGGER: "logger",
}


# -- messages into the logger ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameReport:
    """One step of the conversation, sent by the inference actor after queueing its output.

    Times are ``time.monotonic()`` seconds. ``index`` is the input frame's
    index, so a gap means frames were dropped before the model saw them.
    """

    index: int
    t_capture: float  # the mic callback (or file reader) released the input frame
    t_start: float  # the engine step began
    t_end: float  # the engine step returned
    t_queued: float  # the output frame was handed to playback
    mic_rms: float
    assistant_rms: float
    engine_seconds: float = 0.0  # the engine's own measure of its step (no thread hop)
    text_token: int | None = None  # the step's text token id
    text_piece: str | None = None  # its piece, a leading space for "starts a word"; None: padding
    stages: tuple[tuple[str, float], ...] = ()  # (name, seconds) inside the step, in order

    @property
    def step_seconds(self) -> float:
        return self.t_end - self.t_start

    @property
    def latency_seconds(self) -> float:
        """From the mic frame arriving to the answer frame being queued for playback."""
        return self.t_queued - self.t_capture


@dataclass(frozen=True, slots=True)
class Notice:
    """A status event for people and tools: ``ready``, ``warning``, ``error``, ``load``."""

    status: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpeakerWord:
    """A finished word of either speaker, timed on the session's clock (the cascade's words).

    The duplex engine's words come as text pieces in :class:`FrameReport`; the
    cascade knows its words whole: the user's from the STT, the assistant's
    from the TTS frames that were played.
    """

    speaker: str  # SPEAKER_USER or SPEAKER_ASSISTANT
    word: Word


@dataclass(frozen=True, slots=True)
class TurnReport:
    """One exchange of the cascade ended: ``{"type": "turn", **fields}`` on stdout and in
    the history, and a turn boundary (the history is synced, memory learns the user's facts).

    ``fields`` holds what the user said, what the assistant actually said, how it
    ended and the per-stage timings (see :mod:`xswarm.cascade`).
    """

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Counters:
    """Health counters read from the runtime (channels) and the playback actor."""

    drops: int = 0
    underruns: int = 0


class AssistantWords:
    """The assistant's words from its text stream, by :class:`xswarm.transcript.WordAssembler`.

    The engine reports each step's token id and its piece (``"▁"`` shown as a
    space); the assembler wants a piece table, so one is learnt from the
    pieces seen. Steps that never reached the model (dropped frames) are
    pushed as padding, so word times follow the session's clock, not the
    count of steps. Moshi's text leads its own speech by a few frames; the
    times are those of the text stream (no delay correction).
    """

    def __init__(self) -> None:
        from xswarm.transcript import WordAssembler

        self._pieces: dict[int, str] = {}
        self._assembler = WordAssembler(self, offset_seconds=0.0)
        self._pending = False  # a word has pieces but was not returned yet
        self._pads = 0  # padding steps in a row

    def id_to_piece(self, id: int, /) -> str:
        return self._pieces.get(id, "")

    def decode(self, ids: list[int], /) -> str:
        """Join pieces as SentencePiece does, byte-fallback pieces (``<0xE2>``) as UTF-8."""
        text = "".join(self._pieces.get(i, "") for i in ids).replace(WORD_START, " ")
        return BYTE_PIECES.sub(_bytes_to_text, text)

    def push(self, index: int, token: int | None, piece: str | None) -> list[Word]:
        """Take step ``index``'s token; return the words it completed (zero or one)."""
        from xswarm.transcript import PADDING_TOKEN

        words: list[Word] = []
        while self._assembler.steps < index:  # frames dropped before the model: silence
            words += self._push(PADDING_TOKEN)
        if token is not None and piece:
            self._pieces.setdefault(
                token, WORD_START + piece[1:] if piece.startswith(" ") else piece
            )
            return words + self._push(token)
        return words + self._push(PADDING_TOKEN)  # padding, end-of-padding, control: no text

    def _push(self, token: int) -> list[Word]:
        from xswarm.transcript import PADDING_TOKEN

        words: list[Word] = []
        word = self._assembler.push(token)
        if word is not None:
            words.append(word)
        if token != PADDING_TOKEN:
            self._pending, self._pads = True, 0
            return words
        self._pads += 1
        if self._pending and self._pads >= WORD_CLOSE_PADS:
            # The assembler closes a word when the next one starts; Moshi's last word of
            # a sentence would wait for its next sentence. Its pieces come in consecutive
            # steps, so a few padding steps in a row mean the word is complete.
            self._pending = False
            words.extend(self.flush())
        return words

    def flush(self) -> list[Word]:
        """The word still being built at the end of the session, if any."""
        word = self._assembler.finish()
        return [word] if word is not None else []


# -- output files ---------------------------------------------------------------


def _create(path: Path, option: str) -> IO[str]:
    """Open ``path`` for writing, or raise :class:`UsageError` naming the option and the fix."""
    from xswarm.errors import UsageError

    try:
        return Path(path).open("w", encoding="utf-8")
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(f"{option} {path}: cannot write ({reason}); check the path") from None


class EventLog:
    """``--log FILE``: one JSON object per line, flushed per line so a crash loses nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = _create(path, "--log")

    def write(self, obj: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(obj, ensure_ascii=False) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TraceFile:
    """``--trace FILE``: Chrome trace-event JSON, streamed, closed into valid JSON by :meth:`close`.

    Spans are complete events (``"ph": "X"``) in microseconds from the
    session's start; each actor is a named thread track of process 1.
    """

    def __init__(self, path: Path, t0: float) -> None:
        self.path = path
        self.t0 = t0
        self._file: IO[str] | None = _create(path, "--trace")
        self._file.write('{"displayTimeUnit":"ms","traceEvents":[\n')
        self._first = True
        self._emit({"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "xswarm talk"}})
        for tid, name in TRACK_NAMES.items():
            self._emit(
                {"ph": "M", "pid": 1, "tid": tid, "name": "thread_name", "args": {"name": name}}
            )

    def _us(self, t: float) -> float:
        return round((t - self.t0) * 1e6, 1)

    def _emit(self, event: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(("" if self._first else ",\n") + json.dumps(event))
        self._first = False

    def span(self, track: int, name: str, start: float, end: float, **args: Any) -> None:
        self._emit(
            {
                "ph": "X",
                "pid": 1,
                "tid": track,
                "name": name,
                "ts": self._us(start),
                "dur": round(max(0.0, end - start) * 1e6, 1),
                "args": args,
            }
        )

    def async_span(self, track: int, name: str, key: int, start: float, end: float) -> None:
        """A span that may overlap others on its track (``"ph": "b"/"e"``, matched by ``key``)."""
        base = {"pid": 1, "tid": track, "name": name, "cat": name, "id": key}
        self._emit({**base, "ph": "b", "ts": self._us(start)})
        self._emit({**base, "ph": "e", "ts": self._us(max(start, end))})

    def instant(self, track: int, name: str, t: float, **args: Any) -> None:
        self._emit(
            {
                "ph": "i",
                "s": "t",
                "pid": 1,
                "tid": track,
                "name": name,
                "ts": self._us(t),
                "args": args,
            }
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.write("\n]}\n")
            self._file.close()
            self._file = None


# -- metrics --------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


@dataclass
class Metrics:
    """What the summary reports: per-frame step times and latencies, counts."""

    step_seconds: list[float] = field(default_factory=list)
    latency_seconds: list[float] = field(default_factory=list)
    frames: int = 0
    words: int = 0

    def add(self, report: FrameReport) -> None:
        self.frames += 1
        self.step_seconds.append(report.step_seconds)
        self.latency_seconds.append(report.latency_seconds)


# -- the logger -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogOptions:
    """How the session's output looks; the CLI builds it from flags and the environment."""

    json: bool  # JSON lines on stdout (piped, or --json)
    quiet: bool = False  # no live status, no notices for people on stderr
    live: bool = False  # stderr is a terminal: draw the status line
    color: bool = False  # colour on the terminal (NO_COLOR unset)
    realtime: bool = True  # frames come at the wall clock's pace (not --fast): slowness matters
    speaker_label: str = "moshi"  # the name shown before the assistant's words
    speaker_color: str = BOLD + CYAN  # the persona's colour, an ANSI SGR sequence
    user_label: str = USER_LABEL  # the name shown before the user's words (cascade)
    slow_hint: str = SLOW_HINT  # the fix the "slower than real time" warning suggests


class SessionOutput:
    """Receives the session's events and writes them everywhere they go.

    ``counters`` is called on each frame to read drops and underruns for the
    status line and the summary.
    """

    def __init__(
        self,
        options: LogOptions,
        display: LiveDisplay,
        stderr: TextIO,
        assembler: AssistantWords,
        *,
        counters: Callable[[], Counters] = Counters,
        log_path: Path | None = None,
        trace_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_stdout_closed: Callable[[], None] = lambda: None,
        history: HistoryLog | None = None,
    ) -> None:
        # The conversation history (xswarm.history); None with --no-history. A turn ends
        # at a sentence end or a pause of LINE_GAP_SECONDS; the logger actor then syncs
        # the history file off the event loop (an fsync) and clears ``turn_ended``.
        self.history = history
        self.turn_ended = False
        self._turn_words = 0
        self._turn_last_end = 0.0
        self.stdout_closed = False  # the reader of stdout went away
        self.on_stdout_closed = on_stdout_closed
        self.options = options
        self.display = display
        self._stderr = stderr
        self.assembler = assembler
        self.counters = counters
        self.clock = clock
        self.t0: float | None = None  # monotonic time of the first frame: the transcript's zero
        self.t_ready: float | None = None
        self.metrics = Metrics()
        self.log = EventLog(log_path) if log_path else None
        self.trace = TraceFile(trace_path, clock()) if trace_path else None
        self._words_on_line = 0
        self._line_text = ""
        self._line_speaker = SPEAKER_ASSISTANT
        self._last_word_end = 0.0
        self._slow_warned = False
        self._status_drawn_at = -math.inf
        self._finished = False
        self._summary: dict[str, Any] | None = None
        self.warnings: list[str] = []

    # -- events -----------------------------------------------------------------

    def handle(self, event: FrameReport | Notice) -> None:
        """Dispatch one message from the inference actor (or the session).

        A closed stdout (``| head -1``) is not an error: the transcript stops,
        ``on_stdout_closed`` is called once (the session ends quietly), and the
        log and trace files still get everything.
        """
        try:
            if isinstance(event, FrameReport):
                self._frame(event)
            elif isinstance(event, SpeakerWord):
                self._word(event.word, event.speaker, auto_turn=False)
            elif isinstance(event, TurnReport):
                self._turn(event)
            else:
                self.notice(event)
        except BrokenPipeError:
            self._stdout_gone()

    def _stdout_gone(self) -> None:
        if not self.stdout_closed:
            self.stdout_closed = True
            self.on_stdout_closed()

    def mark_ready(self) -> None:
        """The session starts now: the elapsed time on the status line counts from here."""
        self.t_ready = self.clock()

    def notice(self, notice: Notice) -> None:
        """Show a status event: JSON line on stdout in JSON mode, a line on stderr for people."""
        record = {
            "type": "status",
            "status": notice.status,
            "message": notice.message,
            **notice.data,
        }
        now = self.clock()
        if self.log:
            self.log.write({**record, "t": self._t(now)})
        if self.trace and "load_seconds" in notice.data:
            self.trace.span(TRACK_INFERENCE, "load", now - notice.data["load_seconds"], now)
        if notice.status == "warning":
            self.warnings.append(notice.message)
        if self.options.json:
            self._stdout_line(json.dumps(record, ensure_ascii=False))
        if not self.options.quiet and (
            notice.status in ("warning", "error") or not self.options.json
        ):
            prefix = {"warning": "xswarm: warning: ", "error": "xswarm: error: "}.get(
                notice.status, "xswarm: "
            )
            self._stderr_line(prefix + notice.message)

    def _frame(self, report: FrameReport) -> None:
        t_handle = self.clock()
        if self.t0 is None:
            self.t0 = report.t_capture - report.index * FRAME_SECONDS
        self.metrics.add(report)
        t_frame = report.index * FRAME_SECONDS  # transcript time of this step
        for word in self.assembler.push(report.index, report.text_token, report.text_piece):
            self._word(word)
        if self._turn_words and t_frame - self._turn_last_end >= LINE_GAP_SECONDS:
            self._end_turn()
        if (
            self.options.json is False
            and self._words_on_line
            and t_frame - self._last_word_end >= LINE_GAP_SECONDS
        ):
            self._end_line()
        self._check_speed()
        counters = self.counters()
        now = self.clock()
        if (
            self.options.live
            and not self.options.quiet
            and now - self._status_drawn_at >= STATUS_REFRESH_SECONDS
        ):
            self._status_drawn_at = now
            snap = StatusSnapshot(
                mic_db=level_db(report.mic_rms),
                assistant_db=level_db(report.assistant_rms),
                step_ms=report.step_seconds * 1000.0,
                drops=counters.drops,
                underruns=counters.underruns,
                elapsed=self.clock() - (self.t_ready or self.t0),
            )
            line = format_status(
                snap,
                self.display.width,
                color=self.options.color,
                unicode=_unicode(self._stderr),
                speaker=self.options.speaker_label.lower(),
            )
            self.display.set_status(line)
        if self.log:
            self.log.write(
                {
                    "type": "frame",
                    "index": report.index,
                    "t": self._t(report.t_capture),
                    "wait_ms": _ms(report.t_start - report.t_capture),
                    "step_ms": _ms(report.step_seconds),
                    "engine_ms": _ms(report.engine_seconds),
                    "latency_ms": _ms(report.latency_seconds),
                    **{f"{name}_ms": _ms(sec) for name, sec in report.stages},
                    "mic_db": round(level_db(report.mic_rms), 1),
                    "assistant_db": round(level_db(report.assistant_rms), 1),
                    "text": report.text_piece,
                    "drops": counters.drops,
                    "underruns": counters.underruns,
                }
            )
        if self.trace:
            self._trace_frame(report, t_handle)

    def _trace_frame(self, report: FrameReport, t_handle: float) -> None:
        assert self.trace is not None
        i = report.index
        self.trace.instant(TRACK_MIC, "frame", report.t_capture, frame=i)
        # Waits of consecutive frames overlap when the model falls behind (or with
        # --fast): an async slice per frame, which trace viewers draw side by side.
        self.trace.async_span(TRACK_MIC, "wait", i, report.t_capture, report.t_start)
        self.trace.span(
            TRACK_INFERENCE, "step", report.t_start, report.t_end, frame=i, text=report.text_piece
        )
        t = report.t_start
        for name, seconds in report.stages:
            self.trace.span(TRACK_INFERENCE, name, t, t + seconds, frame=i)
            t += seconds
        self.trace.span(TRACK_PLAYBACK, "queue", report.t_end, report.t_queued, frame=i)
        self.trace.span(TRACK_LOGGER, "report", t_handle, self.clock(), frame=i)

    def _check_speed(self) -> None:
        if self._slow_warned or not self.options.realtime:
            return
        steps = self.metrics.step_seconds
        if len(steps) < SLOW_EARLY_FRAMES:
            return
        recent = steps[-SLOW_WARNING_FRAMES:]
        median = percentile(recent, 50) or 0.0
        # A busy CPU can slow a few steps of a fast model; a model that is far too slow
        # (7B on a CPU: seconds per step) must not take 12 of its steps to be named.
        limit = FRAME_SECONDS * (SLOW_FACTOR if len(recent) >= SLOW_WARNING_FRAMES else 2)
        if median > limit:
            self._slow_warned = True
            self.notice(
                Notice(
                    "warning",
                    f"inference is slower than real time: a step takes {median * 1000:.0f} ms "
                    f"for a {FRAME_SECONDS * 1000:.0f} ms frame, so audio is dropped and silence "
                    f"played; {self.options.slow_hint} or a faster machine",
                    {
                        "step_ms": round(median * 1000, 1),
                        "frame_ms": round(FRAME_SECONDS * 1000, 1),
                    },
                )
            )

    # -- transcript -------------------------------------------------------------

    def _word(
        self, word: Word, speaker: str = SPEAKER_ASSISTANT, *, auto_turn: bool = True
    ) -> None:
        """One word of ``speaker``. ``auto_turn``: a sentence end or a pause ends the turn
        (duplex); the cascade says where its turns end instead (:class:`TurnReport`)."""
        self.metrics.words += 1
        record = {
            "type": "word",
            "speaker": speaker,
            "start": round(word.start, 2),
            "end": round(word.end, 2),
            "text": word.text,
        }
        if self.log:
            self.log.write(record)
        if self.history:
            self.history.word(speaker, word.text, word.start, word.end)
            if auto_turn:
                self._turn_words += 1
                self._turn_last_end = word.end
                if word.text.endswith(SENTENCE_END):
                    self._end_turn()
        if self.stdout_closed:
            return
        if self.options.json:
            self._stdout_line(json.dumps(record, ensure_ascii=False))
            return
        user = speaker == SPEAKER_USER
        name = self.options.user_label if user else self.options.speaker_label
        if self._words_on_line and speaker != self._line_speaker:
            self._end_line()  # each speaker on lines of their own
        self._line_speaker = speaker
        # A terminal must never receive raw control characters (a random model's bytes).
        text = "".join(ch if ch.isprintable() else "\ufffd" for ch in word.text)
        room = self.display.width - len(name) - 3
        if len(text) > room:  # one word wider than the terminal would wrap the live lines
            text = text[: max(1, room - 1)] + "…"
        label = f"{name}:"
        if self.options.color:
            # The assistant in the persona's colour, the user in plain bold: told apart at a glance.
            style = BOLD if user else self.options.speaker_color
            if style:
                label = f"{style}{label}{RESET}"
        visible = len(name) + 1 + len(self._line_text) + 1 + len(text)
        if self._words_on_line and visible >= self.display.width - 1:
            self._end_line()
        self._line_text = f"{self._line_text} {text}" if self._line_text else text
        self._words_on_line += 1
        self._last_word_end = word.end
        self.display.set_partial(f"{label} {self._line_text}")
        if word.text.endswith(SENTENCE_END):
            self._end_line()

    def _end_turn(self) -> None:
        self._turn_words = 0
        self.turn_ended = True

    def _turn(self, report: TurnReport) -> None:
        """A cascade exchange ended: its record everywhere, and a turn boundary."""
        record = {"type": "turn", **report.fields}
        if self.log:
            self.log.write(record)
        if self.history:
            self.history.event("turn", **report.fields)
            self.turn_ended = True  # the logger actor syncs the file and runs the memory rules
        if self._words_on_line:
            self._end_line()
        if self.options.json:
            self._stdout_line(json.dumps(record, ensure_ascii=False))

    def _end_line(self) -> None:
        self.display.commit_partial()
        self._line_text = ""
        self._words_on_line = 0

    def _stdout_line(self, text: str) -> None:
        if not self.stdout_closed:
            self.display.print_line(text)

    def _stderr_line(self, text: str) -> None:
        if self._words_on_line:
            self._end_line()
        self.display.print_err_line(text)

    def _t(self, t: float) -> float:
        return round(t - (self.t0 if self.t0 is not None else t), 6)  # µs: spans are sub-ms

    # -- the end ----------------------------------------------------------------

    def summary(self, reason: str, counters: Counters) -> dict[str, Any]:
        """The final ``{"type": "summary"}`` record."""
        m = self.metrics
        latency = m.latency_seconds if self.options.realtime else []
        return {
            "type": "summary",
            "reason": reason,
            "duration": round(m.frames * FRAME_SECONDS, 2),
            "frames": m.frames,
            "words": m.words,
            "drops": counters.drops,
            "underruns": counters.underruns,
            "step_ms_p50": _ms(percentile(m.step_seconds, 50)),
            "step_ms_p99": _ms(percentile(m.step_seconds, 99)),
            # With --fast, frames wait for the model by design: no latency to speak of.
            "latency_ms_p50": _ms(percentile(latency, 50)),
            "latency_ms_p99": _ms(percentile(latency, 99)),
            "warnings": len(self.warnings),
        }

    def finish(self, reason: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Flush the transcript, write the summary, close the files, restore the terminal.

        Safe to call on any exit path and more than once (later calls return the
        same summary without writing again). Returns the summary record.
        """
        if self._finished and self._summary is not None:
            return self._summary
        self._finished = True
        record: dict[str, Any] = {}
        try:
            try:
                for word in self.assembler.flush():
                    self._word(word)
                if self._words_on_line and not self.stdout_closed:
                    self._end_line()
            except BrokenPipeError:
                self.stdout_closed = True
            record = {**self.summary(reason, self.counters()), **(extra or {})}
            self._summary = record
            if self.log:
                self.log.write(record)
            try:
                if self.options.json:
                    self._stdout_line(json.dumps(record, ensure_ascii=False))
                elif not self.options.quiet:
                    self._stderr_line(format_summary(record))
            except BrokenPipeError:
                self.stdout_closed = True
        finally:
            self.display.close()
            if self.log:
                self.log.close()
            if self.trace:
                self.trace.close()
        return record


def format_summary(record: dict[str, Any]) -> str:
    """The summary for people: two stderr lines, each under 80 columns."""

    def ms(key: str) -> str:
        value = record.get(key)
        return "-" if value is None else f"{value:.0f}"

    minutes, seconds = divmod(int(record["duration"]), 60)
    return (
        f"xswarm: talked {minutes}:{seconds:02d}: {record['frames']} frames, "
        f"{record['words']} words, drops {record['drops']}, underruns {record['underruns']}\n"
        f"xswarm: step p50 {ms('step_ms_p50')} ms, p99 {ms('step_ms_p99')} ms; "
        f"latency p50 {ms('latency_ms_p50')} ms, p99 {ms('latency_ms_p99')} ms"
    )


def _bytes_to_text(match: re.Match[str]) -> str:
    raw = bytes(int(h, 16) for h in re.findall(r"<0x([0-9A-Fa-f]{2})>", match.group(0)))
    return raw.decode("utf-8", errors="replace")


def _unicode(stream: TextIO) -> bool:
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return encoding.startswith("utf")
