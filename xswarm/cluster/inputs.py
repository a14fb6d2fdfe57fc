"""A corpus job's inputs: audio files, directories searched recursively, and ``@list.txt`` files.

Each input keeps two spellings: ``name``, the path as a local run would be
given it (written into the transcripts' ``file`` field and into output names,
so a cluster run writes exactly what ``xswarm transcribe --output-dir`` writes),
and ``path``, the absolute path a worker on another machine opens (the corpus
and the output directory must be on a filesystem every node mounts at the
same place).

Rules, in the order arguments are given:

- a file is an input as it is (a missing one fails alone, as locally);
- a directory adds every file below it whose extension is an audio format
  libsndfile reads here (:func:`audio_extensions`, any case), sorted (a
  directory's files before its subdirectories), hidden files and directories
  skipped, symbolic links to directories not followed;
- ``@list.txt`` adds one path per line (blank lines and ``#`` comments skipped);
  a relative path in a list is relative to *the list file's directory*, so a
  list moves with its corpus; a line may name a directory. Lists do not nest.

The same file named twice (by any spelling) is kept once. Two different
files whose outputs would get the same name is a usage error, the rule of a
local ``--output-dir`` run (:func:`xswarm.transcribe.check_options`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Final

from xswarm.errors import UsageError

LIST_PREFIX: Final = "@"  # @list.txt: a file of paths, one per line

# Extension -> libsndfile major format; a directory search keeps the ones this libsndfile reads.
_EXTENSION_FORMATS: Final[dict[str, str]] = {
    ".wav": "WAV", ".wave": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG",
    ".opus": "OGG", ".mp3": "MP3", ".aif": "AIFF", ".aiff": "AIFF", ".aifc": "AIFF",
    ".au": "AU", ".snd": "AU", ".caf": "CAF", ".w64": "W64", ".rf64": "RF64", ".voc": "VOC",
    ".sd2": "SD2", ".nist": "NIST", ".sph": "NIST", ".avr": "AVR", ".paf": "PAF",
    ".svx": "SVX", ".ircam": "IRCAM", ".htk": "HTK", ".xi": "XI", ".wve": "WVE",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class InputFile:
    """One file of the corpus: ``name`` as a local run names it, ``path`` absolute."""

    name: str
    path: str


@functools.cache
def audio_extensions() -> frozenset[str]:
    """File extensions (lower case, with the dot) of the formats libsndfile reads here."""
    import soundfile  # type: ignore[import-untyped]

    available = set(soundfile.available_formats())
    return frozenset(ext for ext, fmt in _EXTENSION_FORMATS.items() if fmt in available)


def expand_inputs(arguments: Sequence[str], *, cwd: str | None = None) -> list[InputFile]:
    """The inputs named by ``arguments`` (see the module docstring), in order, deduplicated.

    ``cwd`` is the directory relative names are relative to (default: the
    current one). Raises :class:`UsageError` for no arguments, ``-`` (stdin
    cannot travel to a worker), a missing or unreadable list file, and when
    nothing at all was found.
    """
    base = os.getcwd() if cwd is None else cwd
    if not arguments:
        raise UsageError("no inputs; name audio files, directories or @list.txt files")
    found: list[InputFile] = []
    seen: set[str] = set()
    for argument in arguments:
        if argument == "-":
            raise UsageError(
                "- (stdin) cannot be sent to Ray workers; save it to a file and name that"
            )
        names = _from_list(argument, base) if argument.startswith(LIST_PREFIX) else [argument]
        for name in names:
            for item in _expand(name, base):
                key = os.path.normcase(item.path)
                if key not in seen:
                    seen.add(key)
                    found.append(item)
    if not found:
        extensions = " ".join(sorted(audio_extensions()))
        raise UsageError(
            f"no audio files in {' '.join(arguments)} (directories are searched for {extensions})"
        )
    return found


def _from_list(argument: str, base: str) -> list[str]:
    list_name = argument[len(LIST_PREFIX) :]
    if not list_name:
        raise UsageError("@ needs a list file name, e.g. @corpus.txt")
    try:
        with open(os.path.join(base, list_name), encoding="utf-8") as listing:
            lines = listing.read().splitlines()
    except FileNotFoundError:
        raise UsageError(
            f"{argument}: no such list file; write one path per line into {list_name}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{argument}: cannot read the list file ({error})") from None
    directory = os.path.dirname(list_name)
    names = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not os.path.isabs(entry):
            entry = os.path.normpath(os.path.join(directory, entry))
        names.append(entry)
    return names


def _expand(name: str, base: str) -> Iterator[InputFile]:
    path = os.path.normpath(os.path.join(base, name))
    if not os.path.isdir(path):
        yield InputFile(name, path)
        return
    extensions = audio_extensions()
    for root, directories, files in os.walk(path):
        directories[:] = sorted(d for d in directories if not d.startswith("."))
        relative = os.path.relpath(root, path)
        for file in sorted(files):
            if file.startswith(".") or os.path.splitext(file)[1].lower() not in extensions:
                continue
            inner = file if relative == "." else os.path.join(relative, file)
            yield InputFile(os.path.join(name, inner), os.path.join(root, file))
