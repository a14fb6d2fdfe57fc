"""Echo cancellation in a live ``xswarm talk`` on the PulseAudio null sink.

The sink's monitor is the default input, so the microphone hears everything
the assistant plays: the worst laptop-speaker echo there is. With the default
(``--aec``), the delay is estimated from what the speaker really played and
the echo is removed from what the model hears; with ``--no-aec`` it is not.
The ``--log`` file's per-frame ``mic_db`` is the level the model heard.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tests.cli_helpers import run_xswarm

SECONDS = 8
SETTLE_SECONDS = 3.5  # the delay is confirmed ~2 s in, AEC3 converges within a second


def _session(tmp_path: Path, *flags: str) -> tuple[dict, float]:
    log = tmp_path / f"talk{'-'.join(flags)}.jsonl"
    result = run_xswarm(
        "talk",
        "--model",
        "tiny-random",
        "--duration",
        str(SECONDS),
        "--json",
        "--seed",
        "11",
        "--no-history",
        "--log",
        str(log),
        *flags,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["type"] == "summary"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    late = [
        r["mic_db"]
        for r in records
        if r["type"] == "frame" and r["t"] >= SETTLE_SECONDS and r["assistant_db"] > -40
    ]
    assert len(late) > 30, "the assistant must be audible for the comparison to mean anything"
    return summary, statistics.median(late)


@pytest.mark.pulse
def test_echo_is_removed_from_what_the_model_hears(tmp_path: Path, tiny_random: object) -> None:
    raw_summary, raw_db = _session(tmp_path, "--no-aec")
    aec_summary, aec_db = _session(tmp_path)

    assert raw_summary["aec"] is None
    aec = aec_summary["aec"]
    # The null sink's loopback delay is 160-240 ms (FACTS.md); it is estimated, not set.
    assert aec["delay_ms"] is not None and 100 <= aec["delay_ms"] <= 400, aec
    assert aec["cpu_ms_per_frame"] < 20
    # Without AEC the mic hears the assistant at about its own level.
    assert raw_db > -40, raw_db
    assert raw_db - aec_db >= 20, (raw_db, aec_db)
    print(f"talk on the null sink: mic {raw_db:.1f} dB without AEC, {aec_db:.1f} dB with; {aec}")


def test_aec_with_files_is_a_usage_error(tmp_path: Path) -> None:
    result = run_xswarm("talk", "--input", "in.wav", "--output", "out.wav", "--aec")
    assert result.returncode == 2
    assert "--aec" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
