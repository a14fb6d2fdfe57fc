"""Benchmark: echo cancellation quality and cost on simulated rooms (and the null sink).

For each room (tests/room.py: espeak-ng far end, flite near end; far end only,
near end only, double talk, far end only) at several delays and echo levels,
two cancellers run side by side on the same recording:

- ``xswarm``: :class:`xswarm.audio.aec.EchoCanceller` (GCC-PHAT delay estimate,
  reference aligned, WebRTC AEC3);
- ``aec3_alone``: WebRTC AEC3 (pywebrtc-audio) fed the reference as it comes,
  relying on its own delay search (what the estimator adds is the difference).

Each prints one JSON line:

- ``erle_db``: echo return loss enhancement on echo-only stretches from
  ``converged_s`` on (the delay is confirmed ~2 s into playback); ``erle_db_all``
  includes the start;
- ``near_end_change_db`` (near end alone) and ``double_talk_change_db`` (output
  vs the clean near end, in dB; 0 = untouched; the issue's bar is +-3 dB);
- ``delay_true_s`` vs ``delay_estimated_s`` and when it was adopted;
- ``cpu_ms_per_frame``: CPU time of the calling thread per 80 ms frame (mean,
  and the share of the delay estimate), and the wall-time p50/p99.

With ``--pulse`` two last lines run far-end speech through the real speaker
and mic actors on a PulseAudio null sink (its monitor is the mic: a digital
loopback of unknown delay), starting a private daemon with
tests/pulse-null-sink.sh unless ``PULSE_SERVER`` answers: once with the
reference taken where the speaker plays (``PlaybackTap``), once with the
frames handed to the speaker (an underrun then moves the delay).

    python benchmarks/echo.py            # 9 rooms (+ a saturating speaker) x 2 cancellers
    python benchmarks/echo.py --pulse    # and the null sink
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import room  # noqa: E402
from xswarm.audio import FRAME_SAMPLES, SAMPLE_RATE  # noqa: E402
from xswarm.audio.aec import EchoCanceller  # noqa: E402

DELAYS = (0.06, 0.25, 0.6)  # s; 0.6 is beyond AEC3's own delay search
ECHO_LEVELS = (0.0, -6.0, -18.0)  # dB relative to what is played; 0 dB: echo louder than voice
SATURATED_DRIVE = 8.0  # tanh(8x)/8: speech peaks clipped hard, as on a laptop at full volume
CONVERGED_SECONDS = 3.0  # s from the start before erle_db counts (as in tests/test_aec.py)
SCRIPT = ROOT / "tests" / "pulse-null-sink.sh"


class Aec3Alone:
    """WebRTC AEC3 with no alignment in front: the baseline."""

    def __init__(self) -> None:
        from pywebrtc_audio import AudioProcessor

        self._apm = AudioProcessor(sample_rate=SAMPLE_RATE, echo_cancellation=True)

    def process(self, mic: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return np.asarray(self._apm.process(mic, ref), np.float32)


def run_room(delay: float, echo_db: float, which: str, drive: float = 1.0) -> dict[str, Any]:
    recording = room.record(delay, echo_db, speaker_drive=drive)
    canceller: Any = EchoCanceller() if which == "xswarm" else Aec3Alone()
    outs, cpu, wall = [], [], []
    adopted_at = None
    estimate_cpu = 0.0
    if which == "xswarm":  # time the estimator's share of the CPU apart
        push = canceller.estimator.push

        def timed_push(mic: np.ndarray, ref: np.ndarray) -> Any:
            nonlocal estimate_cpu
            started = time.thread_time()
            result = push(mic, ref)
            estimate_cpu += time.thread_time() - started
            return result

        canceller.estimator.push = timed_push
    for index, (mic, ref) in enumerate(recording.frames()):
        started_cpu, started_wall = time.thread_time(), time.perf_counter()
        outs.append(canceller.process(mic, ref))
        cpu.append(time.thread_time() - started_cpu)
        wall.append(time.perf_counter() - started_wall)
        if adopted_at is None and which == "xswarm" and canceller.stats.delay_seconds is not None:
            adopted_at = (index + 1) * FRAME_SAMPLES / SAMPLE_RATE
    out = np.concatenate(outs)
    estimated = canceller.stats.delay_seconds if which == "xswarm" else None
    return {
        "scenario": f"room delay={delay:g}s echo={echo_db:g}dB"
        + (f" speaker saturating (drive {drive:g})" if drive > 1 else ""),
        "canceller": which,
        "delay_true_s": delay,
        "delay_estimated_s": None if estimated is None else round(estimated, 4),
        "delay_adopted_at_s": adopted_at,
        "echo_db": echo_db,
        "erle_db": round(
            room.erle_db(recording.mic, out, room.after(recording.echo_only, CONVERGED_SECONDS)), 1
        ),
        "erle_db_all": round(room.erle_db(recording.mic, out, recording.echo_only), 1),
        "converged_s": CONVERGED_SECONDS,
        "near_end_change_db": round(
            room.energy_change_db(recording.near, out, recording.near_only), 2
        ),
        "double_talk_change_db": round(
            room.energy_change_db(recording.near, out, recording.double_talk), 2
        ),
        "cpu_ms_per_frame": round(1000 * float(np.mean(cpu)), 3),
        "estimate_cpu_ms_per_frame": round(1000 * estimate_cpu / len(cpu), 3),
        "wall_ms_p50": round(1000 * float(np.percentile(wall, 50)), 3),
        "wall_ms_p99": round(1000 * float(np.percentile(wall, 99)), 3),
        "frames": len(cpu),
        "audio_s": round(len(out) / SAMPLE_RATE, 2),
    }


def pulse_answers() -> bool:
    if not os.environ.get("PULSE_SERVER"):
        return False
    result = subprocess.run(["pactl", "info"], capture_output=True, timeout=10, check=False)
    return result.returncode == 0


def run_pulse() -> list[dict[str, Any]]:
    import trio

    started_dir = None
    if not pulse_answers():
        started_dir = tempfile.mkdtemp(prefix="xswarm-echo-pulse-")
        out = subprocess.run(
            ["bash", str(SCRIPT), "start", started_dir],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=True,
        )
        line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith("export "))
        os.environ.update(dict(item.split("=", 1) for item in line[len("export ") :].split()))
    try:
        far = np.concatenate(
            [room.espeak(s) for s in room.FAR_SENTENCES[:2]] + [np.zeros(SAMPLE_RATE, np.float32)]
        )
        runs = []
        for reference in ("tap", "handed"):
            canceller = EchoCanceller()
            run = trio.run(
                functools.partial(room.play_through_null_sink, reference=reference), far, canceller
            )
            runs.append(pulse_result(run, canceller, reference))
        return runs
    finally:
        if started_dir is not None:
            subprocess.run(["bash", str(SCRIPT), "stop", started_dir], timeout=30, check=False)


def pulse_result(run: room.LoopbackRun, canceller: EchoCanceller, reference: str) -> dict[str, Any]:
    changes = run.delay_changes()
    delay = room.loopback_delay(run.played, run.mic, since=changes[-1] if changes else 0.0)
    echo = room.after(room.above(run.mic, room.ACTIVE_RMS), CONVERGED_SECONDS + delay)
    for change in changes[1:]:  # a second to reconverge after each underrun moved the delay
        echo[round(change * SAMPLE_RATE) : round((change + 1.0) * SAMPLE_RATE)] = False
    return {
        "scenario": "pulse null sink monitor (speaker actor -> sink -> monitor -> mic actor)",
        "canceller": "xswarm",
        "reference": reference,  # tap: what the speaker played; handed: frames given to it
        "delay_true_s": round(delay, 4),
        "delay_estimated_s": canceller.stats.delay_seconds,
        "delay_changes_at_s": changes,
        "underruns": run.underruns,
        "erle_db": round(room.erle_db(run.mic, run.out, echo), 1),
        "erle_db_all": round(
            room.erle_db(run.mic, run.out, room.above(run.mic, room.ACTIVE_RMS)), 1
        ),
        "converged_s": round(CONVERGED_SECONDS + delay, 3),
        "wall_ms_p50": round(1000 * float(np.percentile(run.seconds_per_frame, 50)), 3),
        "wall_ms_p99": round(1000 * float(np.percentile(run.seconds_per_frame, 99)), 3),
        "frames": len(run.seconds_per_frame),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pulse", action="store_true", help="also run the null-sink loopback")
    args = parser.parse_args()
    for delay in DELAYS:
        for echo_db in ECHO_LEVELS:
            for which in ("xswarm", "aec3_alone"):
                print(json.dumps(run_room(delay, echo_db, which)), flush=True)
    for which in ("xswarm", "aec3_alone"):  # a loud little speaker: non-linear echo
        print(json.dumps(run_room(0.25, -6.0, which, drive=SATURATED_DRIVE)), flush=True)
    if args.pulse:
        for line in run_pulse():
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
