"""The errors xswarm shows to people, and the exit codes they map to.

Code raises :class:`XswarmError` (or a subclass) with a message written for a
person: what went wrong, the thing it concerns, and the fix. The CLI prints
that message on one line and exits with the error's code; only ``--debug``
shows a traceback.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes, the same for every command (see ``man xswarm``)."""

    OK = 0
    FAILURE = 1  # a runtime failure: device lost, model error
    USAGE = 2  # bad input: a bad option, file, persona or model name
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM


class XswarmError(Exception):
    """An error with a message fit for the user and the exit code to use."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(XswarmError):
    """Bad input from the user: a missing file, an unknown name, a bad value."""

    exit_code = ExitCode.USAGE


class AudioError(XswarmError):
    """A sound device or audio file problem (PortAudio missing, device lost)."""


class ModelError(XswarmError):
    """Weights missing, corrupt or mismatched; the message names the file and the fix."""


class Interrupted(XswarmError):
    """The session was stopped by a signal; it ended cleanly."""

    def __init__(self, signum: int) -> None:
        import signal

        code = ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED
        super().__init__(f"interrupted by {signal.Signals(signum).name}", exit_code=code)
        self.signum = signum
