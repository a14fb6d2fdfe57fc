"""Lag control: a model slower than real time skips input frames, and latency stays bounded.

The mic never waits: frames reach the inference actor through a drop-oldest
channel of ``FRAMES_CAPACITY`` frames (xswarm.talk). When a step takes longer
than a frame, the channel fills and its oldest frames are skipped, so a frame
that reaches the model waited at most ``FRAMES_CAPACITY`` steps. The bound
this test states: capture -> answer queued for playback <= (FRAMES_CAPACITY +
1) x step (0.6 s for a 120 ms step), however long the session; the skipped
frames are counted in the summary (``drops_by.frames``).

A 60 s session runs in a few seconds of real time: the engine's step is a
``trio.sleep`` on the mock clock (``autojump_clock``) and ``time.monotonic``
follows that clock, so capture and queue times are the session's own.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from tests.fake_engine import EchoEngine
from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS
from xswarm.audio.frame import AudioFrame
from xswarm.talk import FRAMES_CAPACITY, TalkConfig, TalkIO, TalkParts, run_talk

SESSION_SECONDS = 60.0  # s of conversation, the measure
SLOWDOWN = 1.5  # the engine's step over the frame time
STEP_SECONDS = SLOWDOWN * FRAME_SECONDS  # 120 ms
LATENCY_BOUND = (FRAMES_CAPACITY + 1) * STEP_SECONDS  # s: queue full of frames + its own step


class SlowWorker:
    """The MLX worker's interface; every call takes STEP_SECONDS of (mock) time."""

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        await trio.sleep(STEP_SECONDS)
        return fn(*args)


@contextlib.asynccontextmanager
async def slow_worker() -> AsyncIterator[SlowWorker]:
    yield SlowWorker()


async def mic_like_source(send: Any) -> None:
    """Frames released on the frame clock, never waiting (like the mic), then end of input."""
    start = trio.current_time()
    with send:
        for index in range(round(SESSION_SECONDS / FRAME_SECONDS)):
            await trio.sleep_until(start + index * FRAME_SECONDS)
            pcm = np.full(FRAME_SAMPLES, 0.01, np.float32)
            send.send_nowait(AudioFrame(pcm, index, time.monotonic()))


async def discard(frames: Any) -> None:
    async with frames:
        async for _ in frames:
            pass


async def test_a_slow_engine_skips_frames_and_latency_stays_bounded(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(time, "monotonic", trio.current_time)
    log_path = tmp_path / "log.jsonl"
    config = TalkConfig(json=True, quiet=True, log_path=log_path, history=False)
    talk_io = TalkIO(io.StringIO(), io.StringIO(), stdout_tty=False, stderr_tty=False, color=False)
    parts = TalkParts(
        engine_factory=lambda progress: EchoEngine(STEP_SECONDS),
        model_name="slow-echo",
        worker_factory=slow_worker,
        handle_signals=False,
        source_actor=mic_like_source,
        sink_actor=discard,
    )
    with trio.fail_after(SESSION_SECONDS + 30):
        summary = await run_talk(config, talk_io, parts)

    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    frames = [r for r in records if r.get("type") == "frame"]
    latencies = np.array([r["latency_ms"] for r in frames]) / 1000
    total = round(SESSION_SECONDS / FRAME_SECONDS)  # 750 frames offered
    # About one frame in three is skipped (1.5x too slow), and every one is counted.
    assert summary["frames"] == len(frames)
    assert summary["frames"] + summary["drops_by"]["frames"] >= total - FRAMES_CAPACITY
    assert summary["drops_by"]["frames"] == pytest.approx(total / 3, rel=0.05)
    # Latency: bounded, and not growing over the minute.
    assert float(latencies.max()) <= LATENCY_BOUND + 1e-6
    # (the last few frames are the queue draining after the end of input: no new arrivals)
    steady = latencies[: -(FRAMES_CAPACITY + 1)]
    ten_seconds = round(10 / STEP_SECONDS)
    assert float(steady[-ten_seconds:].max()) <= float(steady[:ten_seconds].max()) + 1e-6
    assert summary["latency_ms_p99"] <= LATENCY_BOUND * 1000
