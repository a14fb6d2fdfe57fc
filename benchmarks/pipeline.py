"""What the actor runtime costs per frame: a 4-actor pass-through pipeline vs a bare loop.

Frames (1920 float32 samples, 80 ms at 24 kHz) go source -> a -> b -> sink over
``xswarm.runtime`` channels in a :class:`~xswarm.runtime.Session`; actors ``a``
and ``b`` each copy the frame. The bare loop makes the same two copies with no
tasks and no channels. Both run in the same process, one after the other, in
two modes:

- ``paced``: 12.5 frames/s, like a microphone (real-time channel policy,
  ``DROP_OLDEST``). Per frame: latency from the source's send to the sink's
  receive, vs the bare loop's time for the two copies. Overhead at a
  percentile = pipeline latency - bare time at that percentile.
- ``flat_out``: as fast as possible, like a file read in fast mode (``BLOCK``
  backpressure). Per frame: the sink's inter-arrival interval (the pipeline's
  steady-state cost per frame) vs the bare loop's time per frame; plus the
  amortised overhead (total pipeline time - total bare time) / frames. The same
  pipeline on raw ``trio.open_memory_channel`` shows what the wrappers add.

Target (issue 3): p99 overhead < 1 ms per frame in both modes.

    python benchmarks/pipeline.py [--paced-frames 100] [--flat-frames 5000]

Prints one JSON object to stdout.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import trio

from xswarm.runtime import Actor, Overflow, Receiver, Sender, Session

FRAME_SAMPLES: Final = 1920  # 80 ms at 24 kHz, Moshi's 12.5 Hz frame
FRAME_SECONDS: Final = 0.08  # the real-time pace of one frame
CAPACITY: Final = 4  # frames per channel: 320 ms, a typical real-time bound
TARGET_MS: Final = 1.0  # issue 3: per-frame overhead p99 under 1 ms


@dataclass
class Stamped:
    """A frame and the perf_counter_ns when the source sent it."""

    frame: np.ndarray
    sent_ns: int


def _percentiles(values_ns: list[int] | np.ndarray) -> dict[str, float]:
    ms = np.asarray(values_ns, dtype=np.float64) / 1e6
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "max_ms": round(float(ms.max()), 4),
    }


def _frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(FRAME_SAMPLES).astype(np.float32) for _ in range(count)]


# --------------------------------------------------------------------------- bare loop


async def bare_loop(frames: list[np.ndarray], paced: bool) -> list[int]:
    """Per-frame time of the same two copies, with no tasks or channels."""
    times: list[int] = []
    start = trio.current_time()
    for i, frame in enumerate(frames):
        if paced:
            await trio.sleep_until(start + i * FRAME_SECONDS)
        t0 = time.perf_counter_ns()
        out = frame.copy()
        out = out.copy()
        t1 = time.perf_counter_ns()
        times.append(t1 - t0)
    del out
    return times


# --------------------------------------------------------------------------- xswarm pipeline


async def _source(tx: Sender[Stamped], frames: list[np.ndarray], paced: bool) -> None:
    with tx:
        start = trio.current_time()
        for i, frame in enumerate(frames):
            if paced:
                await trio.sleep_until(start + i * FRAME_SECONDS)
            await tx.send(Stamped(frame, time.perf_counter_ns()))


async def _copier(rx: Receiver[Stamped], tx: Sender[Stamped]) -> None:
    with rx, tx:
        async for item in rx:
            await tx.send(Stamped(item.frame.copy(), item.sent_ns))


async def _sink(rx: Receiver[Stamped], latencies: list[int], arrivals: list[int]) -> None:
    with rx:
        async for item in rx:
            now = time.perf_counter_ns()
            latencies.append(now - item.sent_ns)
            arrivals.append(now)


async def xswarm_pipeline(frames: list[np.ndarray], paced: bool) -> dict[str, Any]:
    session = Session()
    overflow = Overflow.DROP_OLDEST if paced else Overflow.BLOCK
    s_tx, s_rx = session.open_channel("source", CAPACITY, overflow=overflow)
    a_tx, a_rx = session.open_channel("a", CAPACITY, overflow=overflow)
    b_tx, b_rx = session.open_channel("b", CAPACITY, overflow=overflow)
    latencies: list[int] = []
    arrivals: list[int] = []
    t0 = time.perf_counter_ns()
    await session.run(
        [
            Actor("source", functools.partial(_source, s_tx, frames, paced)),
            Actor("a", functools.partial(_copier, s_rx, a_tx)),
            Actor("b", functools.partial(_copier, a_rx, b_tx)),
            Actor("sink", functools.partial(_sink, b_rx, latencies, arrivals)),
        ],
        handle_signals=False,
    )
    total = time.perf_counter_ns() - t0
    return {
        "latencies": latencies,
        "intervals": np.diff(np.asarray(arrivals)),
        "total_ns": total,
        "dropped": sum(s.dropped for s in session.channel_metrics()),
        "max_depth": max(s.max_depth for s in session.channel_metrics()),
    }


# --------------------------------------------------------------------------- raw trio, for scale


async def raw_trio_pipeline(frames: list[np.ndarray]) -> int:
    """The same flat-out pipeline on bare trio memory channels; total ns."""
    s_tx, s_rx = trio.open_memory_channel[Stamped](CAPACITY)
    a_tx, a_rx = trio.open_memory_channel[Stamped](CAPACITY)
    b_tx, b_rx = trio.open_memory_channel[Stamped](CAPACITY)

    async def source() -> None:
        async with s_tx:
            for frame in frames:
                await s_tx.send(Stamped(frame, time.perf_counter_ns()))

    async def copier(rx: Any, tx: Any) -> None:
        async with rx, tx:
            async for item in rx:
                await tx.send(Stamped(item.frame.copy(), item.sent_ns))

    async def sink() -> None:
        async with b_rx:
            async for _ in b_rx:
                pass

    t0 = time.perf_counter_ns()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(source)
        nursery.start_soon(copier, s_rx, a_tx)
        nursery.start_soon(copier, a_rx, b_tx)
        nursery.start_soon(sink)
    return time.perf_counter_ns() - t0


# --------------------------------------------------------------------------- report


def _overhead(pipeline: dict[str, float], bare: dict[str, float]) -> dict[str, float]:
    return {key: round(pipeline[key] - bare[key], 4) for key in ("p50_ms", "p99_ms") if key in bare}


async def run(paced_frames: int, flat_frames: int) -> dict[str, Any]:
    paced_in = _frames(paced_frames)
    flat_in = _frames(flat_frames)
    await xswarm_pipeline(_frames(200), paced=False)  # warm up imports, caches, allocator

    bare_paced = _percentiles(await bare_loop(paced_in, paced=True))
    pipe_paced = await xswarm_pipeline(paced_in, paced=True)
    paced_latency = _percentiles(pipe_paced["latencies"])

    bare_flat_times = await bare_loop(flat_in, paced=False)
    bare_flat = _percentiles(bare_flat_times)
    bare_flat_total = sum(bare_flat_times)
    pipe_flat = await xswarm_pipeline(flat_in, paced=False)
    flat_interval = _percentiles(pipe_flat["intervals"])
    raw_total = await raw_trio_pipeline(flat_in)

    paced_overhead = _overhead(paced_latency, bare_paced)
    flat_overhead = _overhead(flat_interval, bare_flat)
    amortised_ms = (pipe_flat["total_ns"] - bare_flat_total) / flat_frames / 1e6
    return {
        "benchmark": "pipeline",
        "machine": f"{platform.machine()} {platform.python_implementation()} "
        f"{platform.python_version()}",
        "frame_samples": FRAME_SAMPLES,
        "channel_capacity": CAPACITY,
        "paced": {
            "frames": paced_frames,
            "rate_hz": 1 / FRAME_SECONDS,
            "bare_copy": bare_paced,
            "pipeline_latency": paced_latency,
            "overhead": paced_overhead,
            "dropped": pipe_paced["dropped"],
            "received": len(pipe_paced["latencies"]),
        },
        "flat_out": {
            "frames": flat_frames,
            "bare_copy": bare_flat,
            "pipeline_interval": flat_interval,
            "overhead": flat_overhead,
            "amortised_overhead_ms": round(amortised_ms, 4),
            "pipeline_frames_per_s": round(flat_frames / (pipe_flat["total_ns"] / 1e9)),
            "raw_trio_frames_per_s": round(flat_frames / (raw_total / 1e9)),
            "xswarm_over_raw_trio_time_ratio": round(pipe_flat["total_ns"] / raw_total, 3),
            "max_depth": pipe_flat["max_depth"],
            "dropped": pipe_flat["dropped"],
        },
        "target_p99_overhead_ms": TARGET_MS,
        "meets_target": paced_overhead["p99_ms"] < TARGET_MS
        and flat_overhead["p99_ms"] < TARGET_MS,
    }


def main(argv: list[str] | None = None, *, out: Callable[[str], None] = print) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paced-frames", type=int, default=100)
    parser.add_argument("--flat-frames", type=int, default=5000)
    args = parser.parse_args(argv)
    if args.paced_frames < 2 or args.flat_frames < 2:
        parser.error("--paced-frames and --flat-frames need at least 2 frames")
    out(json.dumps(trio.run(run, args.paced_frames, args.flat_frames)))


if __name__ == "__main__":
    main()
