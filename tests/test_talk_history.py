"""Every ``xswarm talk`` session lands in the history as it happens, unless --no-history."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.cli_helpers import run_xswarm
from xswarm.audio import SAMPLE_RATE


def _talk(tmp_path: Path, *extra: str) -> list[dict]:
    t = np.arange(int(2.0 * SAMPLE_RATE)) / SAMPLE_RATE
    sf.write(tmp_path / "in.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000)
    result = run_xswarm(
        "talk",
        "--model",
        "tiny-random",
        "--input",
        str(tmp_path / "in.wav"),
        "--fast",
        "--json",
        "--seed",
        "3",
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_session_is_saved_with_its_words_and_turns(tmp_path: Path, tiny_random: object) -> None:
    lines = _talk(tmp_path)
    words = [line["text"] for line in lines if line["type"] == "word"]
    assert words, "jarvis's greeting is forced, so the session has words"

    listing = run_xswarm("history", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    (session,) = json.loads(listing.stdout)
    assert session["persona"] == "jarvis"
    assert session["model"] == "tiny-random"
    assert session["complete"] is True
    assert session["words"] == len(words)

    events = [json.loads(x) for x in Path(session["path"]).read_text().splitlines()]
    assert [e["text"] for e in events if e["type"] == "word"] == words
    # The greeting ends a sentence ("Good evening."), which is a turn boundary (fsync'd).
    assert any(e["type"] == "turn_end" for e in events)
    assert events[-1]["type"] == "summary" and events[-1]["frames"] == 25


def test_no_history_saves_nothing(tmp_path: Path, tiny_random: object) -> None:
    _talk(tmp_path, "--no-history")
    listing = run_xswarm("history", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout) == []


def test_a_failed_start_leaves_no_session(tmp_path: Path, tiny_random: object) -> None:
    # The --log file is created after the history file: its failure must remove both.
    t = np.zeros(SAMPLE_RATE, dtype=np.float32)
    sf.write(tmp_path / "in.wav", t, SAMPLE_RATE)
    result = run_xswarm(
        "talk",
        "--model",
        "tiny-random",
        "--input",
        str(tmp_path / "in.wav"),
        "--fast",
        "--log",
        str(tmp_path / "missing-dir" / "talk.log"),
    )
    assert result.returncode == 2, result.stderr
    assert "talk.log" in result.stderr
    listing = run_xswarm("history", "list", "--json")
    assert json.loads(listing.stdout) == []
