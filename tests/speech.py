"""Test helpers for speech-to-text: flite speech, word error rate, SRT/WebVTT parsers.

- :func:`flite_speech` synthesises a sentence with flite's ``slt`` voice (apt
  ``flite``), which pocketsphinx's bundled English model decodes cleanly, and
  pads it with known silences so tests can check that word timestamps fall
  inside the spoken span.
- :func:`word_error_rate` is the usual Levenshtein distance over words.
- :func:`parse_srt` / :func:`parse_vtt` are small strict parsers: they reject
  what a subtitle player would reject (bad numbering, bad times, empty cues).
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

FLITE_VOICE = "slt"  # the voice pocketsphinx decodes best (FACTS.md)
SPEECH_THRESHOLD = 0.001  # full scale; -60 dB: the quiet decay of a last phoneme still counts

SENTENCES = (
    "the weather is nice today",
    "please open the window",
    "i would like a cup of coffee",
    "the train leaves at seven",
    "my brother lives in london",
    "we are going to the park",
    "she reads a book every night",
    "turn off the lights please",
    "the meeting starts at noon",
    "he bought a new car",
    "can you help me with this",
    "the children are playing outside",
    "i forgot my keys at home",
    "the store is closed on sunday",
    "they watched a movie last night",
    "call me when you get home",
    "the dog is sleeping on the floor",
    "we need more time",
    "the music is too loud",
    "where is the nearest station",
    "thank you very much",
    "it is going to rain tomorrow",
)  # 22 everyday sentences, 119 words


@dataclasses.dataclass(frozen=True)
class SpokenFile:
    """A synthesised speech file and where in it the speech is."""

    path: Path
    text: str
    speech_start: float  # s: the silence we put before the speech ends here
    speech_end: float  # s: the silence we put after the speech starts here
    duration: float  # s
    sample_rate: int


def flite_speech(
    text: str,
    path: Path,
    *,
    lead_seconds: float = 1.0,
    tail_seconds: float = 1.0,
) -> SpokenFile:
    """Write ``text`` spoken by flite to ``path`` (16-bit WAV) with silence around it.

    flite's own output has a little silence at its ends; the speech span is
    measured from the samples (first/last sample above :data:`SPEECH_THRESHOLD`).
    """
    raw = path.with_suffix(".flite.wav")
    subprocess.run(
        ["flite", "-voice", FLITE_VOICE, "-t", text, "-o", str(raw)],
        check=True,
        capture_output=True,
    )
    speech, rate = sf.read(raw, dtype="float32")
    raw.unlink()
    loud = np.flatnonzero(np.abs(speech) > SPEECH_THRESHOLD)
    lead = np.zeros(int(lead_seconds * rate), np.float32)
    tail = np.zeros(int(tail_seconds * rate), np.float32)
    audio = np.concatenate([lead, speech, tail])
    sf.write(path, audio, rate, subtype="PCM_16")
    return SpokenFile(
        path=path,
        text=text,
        speech_start=(len(lead) + int(loud[0])) / rate,
        speech_end=(len(lead) + int(loud[-1]) + 1) / rate,
        duration=len(audio) / rate,
        sample_rate=rate,
    )


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation, for scoring."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference word count)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1], len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    errors, count = word_errors(reference, hypothesis)
    return errors / max(1, count)


@dataclasses.dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


_SRT_TIME = re.compile(r"^(\d{2}):([0-5]\d):([0-5]\d),(\d{3})$")
_VTT_TIME = re.compile(r"^(\d{2}):([0-5]\d):([0-5]\d)\.(\d{3})$")


def _time(text: str, pattern: re.Pattern[str]) -> float:
    match = pattern.match(text)
    if not match:
        raise ValueError(f"bad subtitle time {text!r}")
    h, m, s, ms = (int(g) for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def _cues(blocks: list[str], pattern: re.Pattern[str], *, numbered: bool) -> list[Cue]:
    cues = []
    for number, block in enumerate(blocks, 1):
        lines = block.split("\n")
        if numbered:
            if lines[0] != str(number):
                raise ValueError(f"cue {number} is numbered {lines[0]!r}")
            lines = lines[1:]
        start_text, arrow, end_text = lines[0].partition(" --> ")
        if not arrow:
            raise ValueError(f"bad timing line {lines[0]!r}")
        start, end = _time(start_text, pattern), _time(end_text, pattern)
        text = tuple(lines[1:])
        if end < start or not text or any(not line.strip() for line in text):
            raise ValueError(f"bad cue {block!r}")
        cues.append(Cue(start, end, text))
    return cues


def parse_srt(text: str) -> list[Cue]:
    """Parse SubRip strictly: ``N``, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, text, blank line."""
    if text and not text.endswith("\n\n"):
        raise ValueError("SRT must end with a blank line")
    blocks = [b for b in text.split("\n\n") if b]
    return _cues(blocks, _SRT_TIME, numbered=True)


def parse_vtt(text: str) -> list[Cue]:
    """Parse WebVTT strictly: the ``WEBVTT`` header, then timing line and text per cue."""
    header, _, body = text.partition("\n\n")
    if header != "WEBVTT":
        raise ValueError(f"bad WebVTT header {header!r}")
    blocks = [b for b in body.split("\n\n") if b]
    return _cues(blocks, _VTT_TIME, numbered=False)
