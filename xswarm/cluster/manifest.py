"""The corpus job's manifest: one JSON line per file and per job event, in the output directory.

Only the driver writes it. Each line is written with a single ``os.write`` on
a descriptor opened with ``O_APPEND`` and then ``fsync``-ed, so a line is on
disk whole before the next one starts, and a driver killed at any moment
leaves only whole lines (a machine crash can at worst cut the last one: the
next run starts on a fresh line and readers skip what does not parse).

Lines (each has a ``type``; readers skip types and fields they do not know):

- ``{"type": "file", "file", "status", "output", "duration", "model", "worker",
  "error", "seconds", "time", "run"}``: ``status`` is ``done`` (transcribed by
  this run, output complete), ``failed`` (``error`` says why) or ``skipped``
  (its output already existed: done by an earlier run). ``duration`` is seconds
  of audio, ``seconds`` the wall time a worker spent on it, ``worker`` is
  ``host:pid``, ``time`` UTC ISO 8601, ``run`` the id of the run.
- ``{"type": "job", "event": "start"|"end"|"interrupted"|"failed", "run", "time", ...}``:
  a run's start (inputs, to do, skipped, model, address) and its end (counts,
  audio seconds, wall seconds, workers, and ``error`` when the job itself failed:
  no cluster, no worker could load the model).

The truth of "done" is the output file itself (renamed into place only when
complete): a file done by a run that was killed before it could record it
shows up as ``skipped`` in the next run, never as transcribed twice.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from pathlib import Path
from typing import Any, Final

MANIFEST_NAME: Final = "xswarm-manifest.jsonl"  # in --output-dir


def utc_now() -> str:
    """The current time as UTC ISO 8601 with milliseconds, e.g. ``2026-11-25T19:30:42.043Z``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Manifest:
    """The append-only manifest file; see the module docstring. Close it (or use ``with``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if _ends_mid_line(path):
            os.write(self._fd, b"\n")  # a line cut by a crash: start the next one cleanly

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one JSON line and fsync it before returning."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk: say so rather than leave half a line
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_mid_line(path: Path) -> bool:
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        if file.tell() == 0:
            return False
        file.seek(-1, os.SEEK_END)
        return file.read(1) != b"\n"


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every whole, parseable line of the manifest at ``path`` (none if it does not exist)."""
    records: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as file:
        for line in file:
            if not line.endswith("\n"):
                break
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
    return records


def done_durations(path: Path) -> dict[str, float]:
    """``file`` -> audio duration of every file a run of this manifest recorded as done."""
    return {
        record["file"]: float(record.get("duration") or 0.0)
        for record in read_records(path)
        if record.get("type") == "file" and record.get("status") == "done"
    }
