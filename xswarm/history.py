"""Conversation history: every talk session saved as it happens, and read back.

One session is one file, ``data_dir()/history/<id>.jsonl``: append-only JSON
lines. The first line is a header; the rest are events in the order they
happened, with the same shapes as ``xswarm talk --json`` prints::

    {"type": "session", "id": "20261125-170301-ab12", "persona": "glados",
     "model": "tiny-random", "start": "2026-11-25T17:03:01+00:00", "version": "0.1.0",
     "schema": 1}
    {"type": "word", "speaker": "assistant", "start": 1.28, "end": 1.6, "text": "Hello"}
    {"type": "turn_end", "t": 1.6}
    {"type": "summary", "duration": 12.4, ...}       # written by close(), if reached

Durability: every line is written to the OS as soon as it is logged (one
``write``), so a killed process (SIGKILL, a crash) loses nothing already
logged; at a turn boundary (:meth:`SessionLog.end_turn`) and on close the file
is also ``fsync``'d, so a power cut loses at most the current turn. A line cut
short by a crash mid-write is skipped when read, and counted
(:attr:`Session.skipped`) so the reader can say so.

Session ids are the UTC start time plus 4 random hex digits
(``YYYYMMDD-HHMMSS-xxxx``): they sort by time as strings, stay unique when two
sessions start in the same second, and are short enough to type. Commands
accept any unique prefix.

At every turn boundary the user's words of that turn go through the memory
rules of :mod:`xswarm.memory`, unless the persona has ``memory = false``.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from xswarm.errors import UsageError, XswarmError

if TYPE_CHECKING:
    from xswarm.memory import Fact
    from xswarm.personas import Persona

HISTORY_DIR: Final = "history"  # under data_dir()
SCHEMA: Final = 1  # the header's "schema": bump when an event's shape changes
SPEAKERS: Final = ("user", "assistant")
ID_RANDOM_HEX: Final = 4  # 65536 ids per second: collisions are retried anyway
PREVIEW_WORDS: Final = 12  # words of a session shown by ``history list``


class HistoryError(XswarmError):
    """The history file cannot be written (disk full, permissions); names the file."""


def history_dir() -> Path:
    """``data_dir()/history``."""
    from xswarm.paths import data_dir

    return data_dir() / HISTORY_DIR


def new_session_id(now: datetime | None = None) -> str:
    """A time-sortable id: ``YYYYMMDD-HHMMSS-xxxx`` (UTC) with random hex digits."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(ID_RANDOM_HEX // 2)}"


# --- writing -------------------------------------------------------------------------


class SessionLog:
    """The history file of one talk session, written as the session goes.

    Open it with :meth:`open`, call :meth:`word` for every word (either
    speaker) and :meth:`end_turn` at every turn boundary, and :meth:`close`
    at the end (or use it as a context manager). Methods are synchronous and
    not thread-safe: call them from one task (talk's logger actor), one call at
    a time. ``word`` costs one ``write`` syscall (~6 µs here, inline is fine);
    ``end_turn`` and ``close`` add an ``fsync`` and, with memory on, the fact
    rules over the turn's user words and a rewrite of the memory file when a
    fact is new: 1.5-2 ms median, 10-12 ms p99 on this machine's disk
    (benchmarks/history.py), and an fsync can stall longer on a busy disk. So
    a real-time actor should run those two in a worker thread
    (``await trio.to_thread.run_sync(log.end_turn)``), awaiting each before
    its next call. A write failure raises :class:`HistoryError`; calling
    ``word`` after ``close`` raises ``ValueError``.
    """

    def __init__(
        self, path: Path, file: TextIO, header: Mapping[str, Any], memory_persona: str | None
    ) -> None:
        self.path = path
        self.id: str = header["id"]
        self.header = dict(header)
        self._file: TextIO | None = file
        self._memory_persona = memory_persona
        self._user_words: list[str] = []
        self._last_t = 0.0
        self.facts: list[Fact] = []  # facts remembered during this session

    @classmethod
    def open(
        cls,
        persona: Persona | str,
        model: str,
        *,
        memory: bool | None = None,
        directory: Path | None = None,
        now: datetime | None = None,
    ) -> SessionLog:
        """Create a new session file and write its header.

        ``persona`` is a :class:`~xswarm.personas.Persona` or a name; memory
        follows the persona's ``memory`` setting unless ``memory`` is given.
        ``directory`` defaults to :func:`history_dir`.
        """
        from xswarm import __version__

        name = persona if isinstance(persona, str) else persona.name
        if memory is None:
            memory = True if isinstance(persona, str) else persona.memory
        directory = directory or history_dir()
        start = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for _ in range(8):  # a clash needs the same second and the same 16 random bits
                session_id = new_session_id(start)
                path = directory / f"{session_id}.jsonl"
                try:
                    file = open(path, "x", encoding="utf-8")  # noqa: SIM115 - closed by close()
                    break
                except FileExistsError:
                    continue
            else:  # pragma: no cover - 8 clashes in a row
                raise HistoryError(f"{directory}: cannot create a unique session file")
        except OSError as error:
            raise HistoryError(
                f"cannot create the history file in {directory}: {error.strerror} "
                "(fix the directory, or run talk with --no-history)"
            ) from None
        header = {
            "type": "session",
            "id": session_id,
            "persona": name,
            "model": model,
            "start": start.isoformat(timespec="seconds"),
            "version": __version__,
            "schema": SCHEMA,
        }
        log = cls(path, file, header, name if memory else None)
        log._write(header, sync=True)
        return log

    def _write(self, event: Mapping[str, Any], *, sync: bool = False) -> None:
        if self._file is None:
            raise ValueError(f"session {self.id} is closed")
        try:
            self._file.write(json.dumps(event, ensure_ascii=False) + "\n")
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
        except OSError as error:
            raise HistoryError(
                f"cannot write the history file {self.path}: {error.strerror} "
                "(free some space, or run talk with --no-history)"
            ) from None

    def word(self, speaker: str, text: str, start: float, end: float) -> None:
        """Log one word; ``start``/``end`` are seconds since the session began."""
        if speaker not in SPEAKERS:
            raise ValueError(f"speaker must be one of {SPEAKERS}, not {speaker!r}")
        self._write(
            {
                "type": "word",
                "speaker": speaker,
                "start": round(float(start), 3),
                "end": round(float(end), 3),
                "text": text,
            }
        )
        self._last_t = max(self._last_t, float(end))
        if speaker == "user":
            self._user_words.append(text)

    def event(self, kind: str, **fields: Any) -> None:
        """Log any other event (``{"type": kind, **fields}``), e.g. talk's turn timings."""
        self._write({"type": kind, **fields})

    def end_turn(self) -> None:
        """Mark a turn boundary: write it, fsync the file, update the memory."""
        self._write({"type": "turn_end", "t": round(self._last_t, 3)}, sync=True)
        self._remember()

    def _remember(self) -> None:
        if self._memory_persona is None or not self._user_words:
            self._user_words.clear()
            return
        from xswarm.memory import extract_facts, remember

        text = " ".join(self._user_words)
        self._user_words.clear()
        facts = extract_facts(text)
        if facts:
            try:
                self.facts += remember(self._memory_persona, facts, session=self.id)
            except OSError as error:
                raise HistoryError(f"cannot write the memory file: {error}") from None

    def close(self, summary: Mapping[str, Any] | None = None) -> None:
        """Write the summary (``{"type": "summary", **summary}``), fsync, close.

        Safe to call twice; the second call does nothing. Facts from user words
        after the last turn boundary are remembered here.
        """
        if self._file is None:
            return
        try:
            if self._user_words:
                self._remember()
            self._write({"type": "summary", **(summary or {})}, sync=True)
        finally:
            self._file.close()
            self._file = None

    @property
    def closed(self) -> bool:
        return self._file is None

    def __enter__(self) -> SessionLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- reading -------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    """One logged word."""

    speaker: str
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Line:
    """A stretch of one speaker's words: what ``history show`` prints as a line."""

    speaker: str
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Session:
    """A session file read back. ``skipped`` counts lines that did not parse
    (a crash mid-write cuts the last one); ``complete`` is False when the
    session never reached :meth:`SessionLog.close` (killed, crashed, running)."""

    id: str
    path: Path
    persona: str
    model: str
    start: datetime
    version: str
    header: dict[str, Any] = field(repr=False)
    events: list[dict[str, Any]] = field(repr=False)
    skipped: int = 0
    summary: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        return self.summary is not None

    @property
    def words(self) -> list[Word]:
        return [
            Word(e["speaker"], e["text"], e["start"], e["end"])
            for e in self.events
            if e.get("type") == "word"
        ]

    @property
    def duration(self) -> float:
        """Seconds: the summary's ``duration`` if logged, else the last word's end."""
        if self.summary and isinstance(self.summary.get("duration"), (int, float)):
            return float(self.summary["duration"])
        return max((w.end for w in self.words), default=0.0)

    def lines(self) -> list[Line]:
        """The transcript: consecutive words of one speaker up to a turn boundary."""
        lines: list[Line] = []
        current: list[Word] = []

        def flush() -> None:
            if current:
                text = " ".join(w.text.strip() for w in current if w.text.strip())
                lines.append(Line(current[0].speaker, current[0].start, current[-1].end, text))
                current.clear()

        for event in self.events:
            if event.get("type") == "turn_end":
                flush()
            elif event.get("type") == "word":
                word = Word(event["speaker"], event["text"], event["start"], event["end"])
                if current and current[-1].speaker != word.speaker:
                    flush()
                current.append(word)
        flush()
        return lines

    def preview(self, words: int = PREVIEW_WORDS) -> str:
        """The session's first words, for listings."""
        text = " ".join(w.text.strip() for w in self.words[:words])
        return text + (" …" if len(self.words) > words else "")


def _valid_word(event: Mapping[str, Any]) -> bool:
    return (
        event.get("speaker") in SPEAKERS
        and isinstance(event.get("text"), str)
        and all(
            isinstance(event.get(k), (int, float)) and not isinstance(event.get(k), bool)
            for k in ("start", "end")
        )
    )


def _start_time(header: Mapping[str, Any], path: Path) -> datetime:
    try:
        return datetime.fromisoformat(str(header.get("start")))
    except ValueError:  # a hand-edited header: the file's date is the next best thing
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


def read_session(path: Path) -> Session:
    """Read a session file. Lines that do not parse are skipped and counted.

    Raises :class:`UsageError` when the file cannot be read or its header is
    missing (not an xswarm history file).
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UsageError(f"{path}: cannot read the history file: {error.strerror}") from None
    header: dict[str, Any] | None = None
    events: list[dict[str, Any]] = []
    skipped = 0
    summary: dict[str, Any] | None = None
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            skipped += 1
            continue
        if not isinstance(event, dict) or (event.get("type") == "word" and not _valid_word(event)):
            skipped += 1
        elif header is None:
            if event.get("type") != "session":
                break
            header = event
        else:
            events.append(event)
            if event.get("type") == "summary":
                summary = event
    if header is None:
        raise UsageError(f"{path}: not an xswarm history file (no session header)")
    return Session(
        id=str(header.get("id", path.stem)),
        path=path,
        persona=str(header.get("persona", "?")),
        model=str(header.get("model", "?")),
        start=_start_time(header, path),
        version=str(header.get("version", "?")),
        header=header,
        events=events,
        skipped=skipped,
        summary=summary,
    )


def session_paths(directory: Path | None = None) -> list[Path]:
    """Session files, newest first (ids sort by start time)."""
    directory = directory or history_dir()
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.jsonl"), key=lambda p: p.name, reverse=True)


@dataclass(frozen=True)
class SessionInfo:
    """What ``history list`` shows of a session, read without parsing every line.

    The header, the first words and the last lines are parsed; the words are
    counted by their JSON prefix, as :class:`SessionLog` writes them. Reading a
    long session this way costs a file read and a byte count, not a JSON parse
    per word (see benchmarks/history.py).
    """

    id: str
    path: Path
    persona: str
    model: str
    start: datetime
    duration: float
    words: int
    complete: bool
    preview: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "persona": self.persona,
            "model": self.model,
            "start": self.start.isoformat(),
            "duration": round(self.duration, 3),
            "words": self.words,
            "complete": self.complete,
            "preview": self.preview,
            "path": str(self.path),
        }


_WORD_PREFIX: Final = b'{"type": "word"'  # how SessionLog serialises a word event


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return event if isinstance(event, dict) else None


def session_info(path: Path) -> SessionInfo:
    """The listing facts of one session file; same errors as :func:`read_session`."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UsageError(f"{path}: cannot read the history file: {error.strerror}") from None
    lines = [line for line in data.split(b"\n") if line.strip()]
    header = _parse(lines[0]) if lines else None
    if header is None or header.get("type") != "session":
        raise UsageError(f"{path}: not an xswarm history file (no session header)")
    first: list[str] = []
    for raw in lines[1:]:
        if len(first) > PREVIEW_WORDS:
            break
        event = _parse(raw)
        if event is not None and event.get("type") == "word" and _valid_word(event):
            first.append(event["text"].strip())
    summary: dict[str, Any] | None = None
    last_end = 0.0
    for raw in reversed(lines[1:]):
        event = _parse(raw)
        if event is None:
            continue
        if event.get("type") == "summary" and summary is None:
            summary = event
        elif event.get("type") == "word" and _valid_word(event):
            last_end = float(event["end"])
            break
    words = data.count(_WORD_PREFIX)
    if lines and lines[-1].startswith(_WORD_PREFIX) and _parse(lines[-1]) is None:
        words -= 1  # a word line cut short by a crash: read_session skips it too
    duration = last_end
    if summary and isinstance(summary.get("duration"), (int, float)):
        duration = float(summary["duration"])
    preview = " ".join(first[:PREVIEW_WORDS]) + (" …" if len(first) > PREVIEW_WORDS else "")
    return SessionInfo(
        id=str(header.get("id", path.stem)),
        path=path,
        persona=str(header.get("persona", "?")),
        model=str(header.get("model", "?")),
        start=_start_time(header, path),
        duration=duration,
        words=words,
        complete=summary is not None,
        preview=preview,
    )


@dataclass(frozen=True)
class SessionListing:
    """Sessions, newest first, and one error line per unreadable file."""

    sessions: list[SessionInfo]
    errors: list[str]


def list_sessions(persona: str | None = None, limit: int | None = None) -> SessionListing:
    """Every session (of ``persona`` if given), newest first, at most ``limit``."""
    sessions: list[SessionInfo] = []
    errors: list[str] = []
    for path in session_paths():
        if limit is not None and len(sessions) >= limit:
            break
        try:
            info = session_info(path)
        except UsageError as error:
            errors.append(error.message)
            continue
        if persona is None or info.persona == persona:
            sessions.append(info)
    return SessionListing(sessions, errors)


def read_sessions(persona: str | None = None) -> Iterator[Session]:
    """Every readable session (of ``persona`` if given), fully parsed, newest first."""
    for path in session_paths():
        try:
            session = read_session(path)
        except UsageError:
            continue
        if persona is None or session.persona == persona:
            yield session


def find_session(id_or_prefix: str) -> Path:
    """The session file with this id, or the only one whose id starts with it.

    Raises :class:`UsageError` for an unknown or ambiguous id.
    """
    wanted = id_or_prefix.strip().removesuffix(".jsonl")
    paths = session_paths()
    if not wanted:
        raise UsageError("empty session id (see xswarm history list)")
    exact = [p for p in paths if p.stem == wanted]
    if exact:
        return exact[0]
    matches = [p for p in paths if p.stem.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        where = history_dir()
        raise UsageError(
            f'no session "{wanted}" in {where} ({len(paths)} sessions; see xswarm history list)'
        )
    shown = ", ".join(p.stem for p in matches[:5]) + (", …" if len(matches) > 5 else "")
    raise UsageError(
        f'session id "{wanted}" is ambiguous: {len(matches)} sessions match ({shown}); '
        "give more of the id"
    )


def remove_session(id_or_prefix: str) -> Path:
    """Delete a session file; returns its path. Unknown ids raise :class:`UsageError`."""
    path = find_session(id_or_prefix)
    path.unlink()
    return path


@dataclass(frozen=True)
class Match:
    """A transcript line containing the searched text."""

    session: Session
    line: Line

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "match",
            "session": self.session.id,
            "persona": self.session.persona,
            "speaker": self.line.speaker,
            "start": self.line.start,
            "end": self.line.end,
            "text": self.line.text,
        }


def search(text: str, persona: str | None = None) -> list[Match]:
    """Transcript lines containing ``text`` (case-insensitive), newest session first."""
    needle = " ".join(text.split()).casefold()
    if not needle:
        raise UsageError("nothing to search for: give some text")
    matches: list[Match] = []
    for session in read_sessions(persona):
        for line in session.lines():
            if needle in line.text.casefold():
                matches.append(Match(session, line))
    return matches
