"""The live bottom of the terminal in ``xswarm talk``: status line, load bar, partial transcript.

People watching a conversation want two things on screen at once: the
transcript scrolling (data, on stdout) and one line saying the session is
healthy (mic level, assistant level, step time, drops; on stderr). Both go to
the same terminal, so one object, :class:`LiveDisplay`, owns the bottom of the
screen and every write to it: it erases its live lines, lets a transcript line
scroll up above them, and redraws them. No thread, no full-screen mode: plain
``\\r``, erase-line and cursor-up sequences, so the scroll-back stays clean.

Contract: the display writes only through the two streams it was given (and
turns the keyboard's echo off while live lines are shown, so a typed key or
``^C`` cannot break them); every exit path must call :meth:`LiveDisplay.close`
(idempotent), which erases the live lines, shows the cursor, turns echo back
on and leaves the cursor at the start of an empty line. Nothing live is drawn
when stderr is not a terminal or with ``--quiet``; colours are off with
``NO_COLOR``. While live, the unfinished transcript line is drawn on stderr
with the status line (one write per redraw); finished lines go to stdout.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Final, TextIO

HIDE_CURSOR: Final = "\x1b[?25l"
SHOW_CURSOR: Final = "\x1b[?25h"
ERASE_LINE: Final = "\r\x1b[K"  # to column 0, erase to end of line
CURSOR_UP: Final = "\x1b[1A"

RESET: Final = "\x1b[0m"
DIM: Final = "\x1b[2m"
BOLD: Final = "\x1b[1m"
RED: Final = "\x1b[31m"
GREEN: Final = "\x1b[32m"
YELLOW: Final = "\x1b[33m"
CYAN: Final = "\x1b[36m"

DEFAULT_WIDTH: Final = 80  # columns, when the terminal does not say
SILENCE_DB: Final = -60.0  # dBFS shown as an empty meter: below this is room noise
WIDE_LAYOUT_COLUMNS: Final = 100  # from this width on, meters are longer and underruns shown


def terminal_width(stream: TextIO) -> int:
    """Columns of the terminal behind ``stream`` (80 when it is not one)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or DEFAULT_WIDTH
    except (OSError, ValueError, AttributeError):
        return DEFAULT_WIDTH


def level_db(rms: float) -> float:
    """RMS of a float32 frame (full scale 1.0) as dBFS, floored at :data:`SILENCE_DB`."""
    if rms <= 0.0:
        return SILENCE_DB
    return max(SILENCE_DB, 20.0 * math.log10(rms))


def meter(db: float, cells: int, *, unicode: bool = True) -> str:
    """A horizontal bar of ``cells`` characters, empty at -60 dBFS, full at 0 dBFS."""
    filled = round((db - SILENCE_DB) / -SILENCE_DB * cells)
    filled = min(cells, max(0, filled))
    on, off = ("█", "·") if unicode else ("#", "-")
    return on * filled + off * (cells - filled)


def _paint(text: str, style: str, color: bool) -> str:
    return f"{style}{text}{RESET}" if color and style else text


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """What the status line shows; the logger builds one per frame."""

    mic_db: float
    assistant_db: float
    step_ms: float  # the latest engine step
    drops: int  # frames dropped on the way (mic -> inference -> playback)
    underruns: int  # times playback ran dry and played silence
    elapsed: float  # seconds since the session became ready


def format_status(
    snap: StatusSnapshot, width: int, *, color: bool, unicode: bool = True, speaker: str = "moshi"
) -> str:
    """Render the one-line status for a terminal of ``width`` columns (never wider).

    ``speaker`` names the assistant's level meter (the persona, lower case).
    """
    wide = width >= WIDE_LAYOUT_COLUMNS
    cells = 20 if wide else 10
    minutes, seconds = divmod(int(snap.elapsed), 60)
    sep = _paint(" │ " if unicode else " | ", DIM, color)
    mic_bar = _paint(meter(snap.mic_db, cells, unicode=unicode), GREEN, color)
    out_bar = _paint(meter(snap.assistant_db, cells, unicode=unicode), CYAN, color)
    mic = f"{_paint('mic', DIM, color)} {mic_bar} {snap.mic_db:3.0f} dB"
    out = f"{_paint(speaker, DIM, color)} {out_bar} {snap.assistant_db:3.0f} dB"
    step = f"{_paint('step', DIM, color)} {snap.step_ms:3.0f} ms"
    drops_style = RED if snap.drops else ""
    drops = f"{_paint('drops', DIM, color)} {_paint(str(snap.drops), drops_style, color)}"
    parts = [mic, out, step, drops]
    if wide or snap.underruns:
        under_style = YELLOW if snap.underruns else ""
        parts.append(
            f"{_paint('underruns', DIM, color)} {_paint(str(snap.underruns), under_style, color)}"
        )
    parts.append(f"{minutes}:{seconds:02d}")
    line = sep.join(parts)
    return _fit(line, width - 1)


def format_progress(
    label: str, done: int, total: int, width: int, *, color: bool, unicode: bool = True
) -> str:
    """A one-line load bar: ``loading NAME ████···· 54%  12.3/22.8 MB``."""
    fraction = 0.0 if total <= 0 else min(1.0, done / total)
    cells = max(10, min(40, width - len(label) - 32))
    filled = round(fraction * cells)
    on, off = ("█", "·") if unicode else ("#", "-")
    bar = _paint(on * filled, CYAN, color) + off * (cells - filled)
    size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total > 0 else ""
    return _fit(f"{label} {bar} {fraction * 100:3.0f}%  {size}".rstrip(), width - 1)


def _visible_len(text: str) -> int:
    length, in_escape = 0, False
    for ch in text:
        if in_escape:
            in_escape = not ch.isalpha()
        elif ch == "\x1b":
            in_escape = True
        else:
            length += 1
    return length


def _fit(text: str, columns: int) -> str:
    """Cut ``text`` to ``columns`` visible characters, keeping escape sequences whole."""
    if _visible_len(text) <= columns:
        return text
    out, length, in_escape = [], 0, False
    for ch in text:
        if in_escape:
            out.append(ch)
            in_escape = not ch.isalpha()
        elif ch == "\x1b":
            out.append(ch)
            in_escape = True
        elif length < columns:
            out.append(ch)
            length += 1
    return "".join(out) + RESET if "\x1b" in text else "".join(out)


class LiveDisplay:
    """The bottom of the terminal: an optional partial transcript line over a status line.

    ``show_live`` draws the status (and load bar) on ``stderr``; it should be
    true only when stderr is a terminal and the user did not ask for quiet.
    ``stdout_tty`` says whether transcript lines share that terminal: then the
    current, unfinished transcript line is redrawn above the status line
    instead of being written piecemeal. ``keyboard`` is the terminal's input
    (``sys.stdin``), whose echo is off while live lines are shown.
    """

    def __init__(
        self,
        stdout: TextIO,
        stderr: TextIO,
        *,
        show_live: bool,
        stdout_tty: bool,
        width: int | None = None,
        keyboard: TextIO | None = None,
    ) -> None:
        self._keyboard = keyboard  # the terminal's input: its echo is off while lines are live
        self._saved_tty: tuple[int, list[Any]] | None = None
        self._out = stdout
        self._err = stderr
        self.show_live = show_live
        self._stdout_tty = stdout_tty
        self._fixed_width = width
        self._partial = ""  # the unfinished transcript line, as on screen (may hold colour)
        self._partial_written = 0  # chars of _partial already written (no-live mode)
        self._status = ""
        self._drawn = False  # live lines are on screen
        self._partial_on_screen = False  # the drawn live lines include the partial line
        self._cursor_hidden = False
        self._closed = False

    @property
    def width(self) -> int:
        return self._fixed_width or terminal_width(self._err)

    # -- drawing ---------------------------------------------------------------
    #
    # Each redraw is built as one string and written to stderr in one call, so
    # a terminal (or tmux's capture) never shows a half-drawn state: the
    # unfinished transcript line is drawn on stderr too while it is live, and
    # only committed lines go to stdout.

    def _erase_seq(self) -> str:
        if not self._drawn:
            return ""
        self._drawn = False
        return ERASE_LINE + (CURSOR_UP + ERASE_LINE if self._partial_on_screen else "")

    def _draw_seq(self) -> str:
        if not self.show_live or self._closed:
            return ""
        seq = ""
        if not self._cursor_hidden:
            seq += HIDE_CURSOR
            self._cursor_hidden = True
            self._echo_off()
        self._partial_on_screen = bool(self._partial) and self._stdout_tty
        if self._partial_on_screen:
            seq += self._partial + "\n"
        self._drawn = True
        return seq + self._status

    def _write_err(self, text: str) -> None:
        if text:
            self._err.write(text)
            self._err.flush()

    # -- what callers use --------------------------------------------------------

    def set_status(self, line: str) -> None:
        """Replace the status (or load bar) line; a no-op unless live output is on."""
        if not self.show_live or self._closed:
            return
        erase = self._erase_seq()
        self._status = line
        self._write_err(erase + self._draw_seq())

    def clear_status(self) -> None:
        """Take the status line off the screen (a finished load bar is transient)."""
        if self._closed:
            return
        erase = self._erase_seq()
        self._status = ""
        self._write_err(erase + (self._draw_seq() if self._partial else ""))

    def print_line(self, text: str) -> None:
        """Write one whole line of data to stdout, above the live lines."""
        if not self._closed:
            self._write_err(self._erase_seq())
            self._flush_partial_inline()
        self._out.write(text + "\n")
        self._out.flush()
        if not self._closed:
            self._write_err(self._draw_seq())

    def print_err_line(self, text: str) -> None:
        """Write one line for people to stderr, above the live lines (a notice, the summary)."""
        if self._closed:
            self._write_err(text + "\n")
            return
        erase = self._erase_seq()
        if self._partial:  # an unfinished transcript line ends before a notice
            self._write_err(erase)
            erase = ""
            self._flush_partial_inline()
            self._out.flush()
        self._write_err(erase + text + "\n" + self._draw_seq())

    def set_partial(self, text: str) -> None:
        """Show ``text`` as the unfinished transcript line (it only ever grows until committed)."""
        if self._closed:
            return
        if self.show_live and self._stdout_tty:
            erase = self._erase_seq()
            self._partial = text
            self._write_err(erase + self._draw_seq())
            return
        # No live lines: write the new characters as they come.
        self._out.write(text[self._partial_written :])
        self._out.flush()
        self._partial = text
        self._partial_written = len(text)

    def commit_partial(self) -> None:
        """End the unfinished transcript line: it scrolls up and stays (on stdout)."""
        if not self._partial or self._closed:
            return
        self._write_err(self._erase_seq())
        self._flush_partial_inline()
        self._out.flush()
        self._write_err(self._draw_seq())

    def _flush_partial_inline(self) -> None:
        # A whole line is about to be printed: an unfinished transcript line ends first.
        if self._partial:
            if self.show_live and self._stdout_tty:
                self._out.write(self._partial + "\n")
            else:
                self._out.write(self._partial[self._partial_written :] + "\n")
            self._partial = ""
            self._partial_written = 0

    def _echo_off(self) -> None:
        # Keys typed during the session (Ctrl-C's "^C" too) would be echoed into the
        # status line and wrap it, so the next erase misses a line. Echo comes back in close().
        if self._keyboard is None:
            return
        try:
            import termios

            fd = self._keyboard.fileno()
            if not os.isatty(fd):
                return
            saved = termios.tcgetattr(fd)
            quiet = list(saved)
            quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
            self._saved_tty = (fd, saved)
        except (ImportError, OSError, ValueError, AttributeError):
            self._saved_tty = None

    def _echo_on(self) -> None:
        if self._saved_tty is None:
            return
        fd, saved = self._saved_tty
        self._saved_tty = None
        try:
            import termios

            termios.tcsetattr(fd, termios.TCSANOW, saved)
        except (ImportError, OSError, ValueError):
            pass

    def close(self) -> None:
        """Erase the live lines, end the transcript line, show the cursor.

        Idempotent; never raises (a closed pipe has nothing left to restore).
        """
        if self._closed:
            return
        try:
            self._write_err(self._erase_seq())
            self._flush_partial_inline()
            self._out.flush()
        except (OSError, ValueError):
            pass  # a closed pipe or stream: nothing left to restore on it
        finally:
            self._closed = True
            if self._cursor_hidden:
                try:
                    self._err.write(SHOW_CURSOR)
                    self._err.flush()
                except (OSError, ValueError):
                    pass
                self._cursor_hidden = False
            self._echo_on()
