"""Benchmark: PortAudio callback -> Trio hand-off latency, and callback duration.

Runs the real mic and speaker actors (xswarm.audio.devices) on a PulseAudio
null sink, starting a private daemon with tests/pulse-null-sink.sh when none
answers at ``PULSE_SERVER``. Measures, per captured frame:

- hand-off latency: ``time.monotonic()`` at mic-callback entry -> the moment
  the ``offer`` scheduled with ``TrioToken.run_sync_soon`` runs on the Trio
  thread and sends the frame;
- callback duration: mic and speaker callbacks, entry to return (target p99 <
  1 ms: the callback must copy and hand over, nothing else).

Two conditions side by side in one run: an idle event loop, and a loaded one
(a task that holds the loop for LOAD_BLOCK_MS out of every LOAD_PERIOD_MS,
like a logger formatting output or an actor doing numpy work between
checkpoints). The ratio shows how much of the hand-off latency is the loop's
business rather than PortAudio's. A third run repeats the loaded case with
the GIL switch interval at 1 ms instead of Python's 5 ms: the callbacks need
the GIL, and busy Python on the Trio thread holds it for a whole interval.

Usage: python benchmarks/handoff.py [--seconds 10]   (prints one JSON object)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "pulse-null-sink.sh"
LOAD_BLOCK_MS = 5.0  # ms the loaded loop is held per period
LOAD_PERIOD_MS = 20.0  # ms; 25% of the loop's time is busy
FAST_SWITCH_INTERVAL = 0.001  # s, vs Python's 5 ms: how long a callback may wait for the GIL


def pulse_answers() -> bool:
    if not os.environ.get("PULSE_SERVER"):
        return False
    result = subprocess.run(["pactl", "info"], capture_output=True, timeout=10, check=False)
    return result.returncode == 0


def start_pulse() -> str:
    runtime_dir = tempfile.mkdtemp(prefix="xswarm-bench-pulse-")
    out = subprocess.run(
        ["bash", str(SCRIPT), "start", runtime_dir],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=True,
    ).stdout
    line = next(x for x in reversed(out.splitlines()) if x.startswith("export "))
    os.environ.update(dict(kv.split("=", 1) for kv in line.removeprefix("export ").split()))
    return runtime_dir


def stop_pulse(runtime_dir: str) -> None:
    subprocess.run(["bash", str(SCRIPT), "stop", runtime_dir], capture_output=True, check=False)
    shutil.rmtree(runtime_dir, ignore_errors=True)


def percentiles_ms(values: list[float]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {"n": 0}
    a = np.asarray(values) * 1000
    return {
        "n": len(values),
        "p50_ms": round(float(np.percentile(a, 50)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "max_ms": round(float(a.max()), 4),
    }


async def measure(seconds: float, loaded: bool) -> dict[str, Any]:
    import numpy as np
    import trio

    from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
    from xswarm.audio.devices import StreamStats, mic_actor, speaker_actor
    from xswarm.audio.frame import AudioFrame
    from xswarm.audio.jitter import JitterBuffer
    from xswarm.runtime import Overflow, open_channel

    handoff: list[float] = []
    mic_tx, mic_rx = open_channel("mic", 8, overflow=Overflow.DROP_OLDEST)

    class Timed:
        """The mic's send end, noting when each offer runs on the Trio thread."""

        def send_nowait(self, frame: AudioFrame) -> None:
            handoff.append(time.monotonic() - frame.t_capture)
            mic_tx.send_nowait(frame)

        def close(self) -> None:
            mic_tx.close()

    spk_tx, spk_rx = open_channel("speaker", 8, overflow=Overflow.DROP_OLDEST)
    mic_stats, spk_stats = StreamStats(), StreamStats()
    buffer = JitterBuffer()
    t = np.arange(FRAME_SAMPLES) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)  # 500 Hz: whole cycles per frame

    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: speaker_actor(
                spk_rx, buffer=buffer, stats=spk_stats, task_status=task_status
            )
        )
        await nursery.start(
            lambda task_status: mic_actor(Timed(), stats=mic_stats, task_status=task_status)
        )

        async def consume() -> None:
            async for frame in mic_rx:  # pass the mic straight to the speaker (loopback)
                spk_tx.send_nowait(AudioFrame(tone, frame.index, frame.t_capture))

        async def load() -> None:
            while True:
                end = time.perf_counter() + LOAD_BLOCK_MS / 1000
                while time.perf_counter() < end:  # hold the event loop, as busy code would
                    pass
                await trio.sleep((LOAD_PERIOD_MS - LOAD_BLOCK_MS) / 1000)

        nursery.start_soon(consume)
        if loaded:
            nursery.start_soon(load)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()

    skip = int(0.5 / FRAME_SECONDS)  # leave out start-up (first callbacks, stream warm-up)
    jitter = buffer.stats()
    return {
        "handoff": percentiles_ms(handoff[skip:]),
        "mic_callback": percentiles_ms(list(mic_stats.callback_seconds)[skip:]),
        "speaker_callback": percentiles_ms(list(spk_stats.callback_seconds)[skip:]),
        "mic_frames": mic_stats.callbacks,
        "mic_xruns": mic_stats.xruns,
        "speaker_xruns": spk_stats.xruns,
        "speaker_underruns": jitter.underruns,
        "channel_drops": mic_tx.metrics.dropped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per condition (default 10)")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    started_dir = None if pulse_answers() else start_pulse()
    try:
        import trio  # imported after the daemon is up: PortAudio lists devices at import

        idle = trio.run(measure, args.seconds, False)
        loaded = trio.run(measure, args.seconds, True)
        default_switch = sys.getswitchinterval()
        sys.setswitchinterval(FAST_SWITCH_INTERVAL)
        try:
            loaded_fast_switch = trio.run(measure, args.seconds, True)
        finally:
            sys.setswitchinterval(default_switch)
    finally:
        if started_dir is not None:
            stop_pulse(started_dir)

    def ratio(key: str) -> float | None:
        a, b = idle["handoff"].get(key), loaded["handoff"].get(key)
        return round(b / a, 2) if a and b else None

    result = {
        "benchmark": "handoff",
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
        "load_average_1m_before": round(load_before, 2),  # other work on the machine skews tails
        "seconds_per_condition": args.seconds,
        "load": f"{LOAD_BLOCK_MS:g} ms busy every {LOAD_PERIOD_MS:g} ms",
        "idle_loop": idle,
        "loaded_loop": loaded,
        "loaded_loop_switch_interval_1ms": loaded_fast_switch,
        "gil_switch_interval_ms": {"default": default_switch * 1000, "fast": 1.0},
        "handoff_p50_loaded_over_idle": ratio("p50_ms"),
        "handoff_p99_loaded_over_idle": ratio("p99_ms"),
        "target_callback_p99_ms": 1.0,
        "callback_p99_within_target": all(
            r[k].get("p99_ms", 0) < 1.0
            for r in (idle, loaded, loaded_fast_switch)
            for k in ("mic_callback", "speaker_callback")
        ),
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
