"""The playback jitter buffer: order, bounds, prefill, underrun accounting, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from xswarm.audio import FRAME_SAMPLES
from xswarm.audio.jitter import JitterBuffer


def ramp(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.float32)


def test_plays_in_order_across_the_ring_edge() -> None:
    buffer = JitterBuffer(capacity=FRAME_SAMPLES, prefill=0)
    out = np.empty(700, dtype=np.float32)
    played: list[np.ndarray] = []
    pushed = 0
    for _ in range(10):  # 10 x 500 through a 1920-sample ring wraps it twice
        buffer.push(ramp(pushed, 500))
        pushed += 500
        while buffer.depth >= len(out):
            buffer.pull_into(out)
            played.append(out.copy())
    assert np.array_equal(np.concatenate(played), ramp(0, len(played) * 700))
    stats = buffer.stats()
    assert stats.dropped == 0 and stats.underruns == 0
    assert stats.pushed == 5000 and stats.played == len(played) * 700
    assert stats.depth == 5000 - stats.played


def test_full_buffer_drops_the_oldest_and_counts() -> None:
    buffer = JitterBuffer(capacity=2 * FRAME_SAMPLES, prefill=0)
    for i in range(5):
        buffer.push(ramp(i * FRAME_SAMPLES, FRAME_SAMPLES))
    stats = buffer.stats()
    assert stats.dropped == 3 * FRAME_SAMPLES
    assert stats.depth == 2 * FRAME_SAMPLES
    out = np.empty(2 * FRAME_SAMPLES, dtype=np.float32)
    buffer.pull_into(out)
    assert np.array_equal(out, ramp(3 * FRAME_SAMPLES, 2 * FRAME_SAMPLES))  # the newest survived


def test_a_push_larger_than_capacity_keeps_its_tail() -> None:
    buffer = JitterBuffer(capacity=FRAME_SAMPLES, prefill=0)
    buffer.push(ramp(0, 100))
    assert buffer.push(ramp(100, 2 * FRAME_SAMPLES)) == 100 + FRAME_SAMPLES
    out = np.empty(FRAME_SAMPLES, dtype=np.float32)
    buffer.pull_into(out)
    assert np.array_equal(out, ramp(100 + FRAME_SAMPLES, FRAME_SAMPLES))


def test_no_underrun_before_the_first_frame_or_during_prefill() -> None:
    buffer = JitterBuffer(prefill=2 * FRAME_SAMPLES)
    out = np.ones(FRAME_SAMPLES, dtype=np.float32)
    assert buffer.pull_into(out) == 0
    assert not out.any()  # silence
    buffer.push(ramp(1, FRAME_SAMPLES))
    assert buffer.pull_into(out) == 0  # below prefill: still waiting, silently
    assert buffer.stats().underruns == 0
    buffer.push(ramp(1 + FRAME_SAMPLES, FRAME_SAMPLES))
    assert buffer.pull_into(out) == FRAME_SAMPLES
    assert np.array_equal(out, ramp(1, FRAME_SAMPLES))
    stats = buffer.stats()
    assert stats.started and stats.underruns == 0 and stats.silence == 2 * FRAME_SAMPLES


def test_underruns_are_counted_when_the_producer_stops() -> None:
    buffer = JitterBuffer(prefill=0)
    buffer.push(ramp(1, FRAME_SAMPLES + 100))
    out = np.empty(FRAME_SAMPLES, dtype=np.float32)
    assert buffer.pull_into(out) == FRAME_SAMPLES
    assert buffer.pull_into(out) == 100  # partial block: the rest is silence, one underrun
    assert np.array_equal(out[:100], ramp(1 + FRAME_SAMPLES, 100)) and not out[100:].any()
    buffer.pull_into(out)
    buffer.pull_into(out)
    assert buffer.stats().underruns == 3


def test_running_dry_after_a_declared_end_is_not_an_underrun() -> None:
    buffer = JitterBuffer(prefill=0)
    buffer.push(ramp(1, FRAME_SAMPLES))
    buffer.end()
    out = np.empty(FRAME_SAMPLES, dtype=np.float32)
    for _ in range(3):
        buffer.pull_into(out)
    assert buffer.stats().underruns == 0
    buffer.push(ramp(1, 10))  # a new utterance revives underrun accounting
    buffer.pull_into(out)
    assert buffer.stats().underruns == 1


def test_fills_every_channel_of_a_2d_block() -> None:
    buffer = JitterBuffer(prefill=0)
    buffer.push(ramp(1, 10))
    out = np.ones((16, 2), dtype=np.float32)
    assert buffer.pull_into(out) == 10
    assert np.array_equal(out[:10, 0], ramp(1, 10)) and np.array_equal(out[:10, 1], ramp(1, 10))
    assert not out[10:].any()


def test_clear_empties_and_counts_apart_from_drops() -> None:
    buffer = JitterBuffer(prefill=0)
    buffer.push(ramp(0, 500))
    assert buffer.clear() == 500  # what was never played
    stats = buffer.stats()
    assert (stats.cleared, stats.dropped, buffer.depth) == (500, 0, 0)  # asked for: not a drop
    assert buffer.clear() == 0


def test_after_clear_playback_waits_for_the_prefill_again() -> None:
    buffer = JitterBuffer(prefill=2 * FRAME_SAMPLES)
    buffer.push(ramp(0, 3 * FRAME_SAMPLES))
    out = np.zeros(FRAME_SAMPLES, dtype=np.float32)
    assert buffer.pull_into(out) == FRAME_SAMPLES
    buffer.clear()
    buffer.push(ramp(0, FRAME_SAMPLES))  # less than the prefill: silence, not an underrun
    assert buffer.pull_into(out) == 0 and buffer.stats().underruns == 0
    buffer.push(ramp(0, FRAME_SAMPLES))
    assert buffer.pull_into(out) == FRAME_SAMPLES and buffer.stats().underruns == 0


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity must be at least one frame"):
        JitterBuffer(capacity=10)
    with pytest.raises(ValueError, match="prefill must be between 0 and capacity"):
        JitterBuffer(capacity=FRAME_SAMPLES, prefill=FRAME_SAMPLES + 1)


def test_concurrent_push_and_pull_keep_order_and_conservation() -> None:
    """A producer thread and a 'callback' thread: every sample is played, dropped or queued."""
    buffer = JitterBuffer(capacity=4 * FRAME_SAMPLES, prefill=0)
    total = 200 * 480
    played: list[np.ndarray] = []
    done = threading.Event()

    def produce() -> None:
        for start in range(0, total, 480):
            buffer.push(ramp(start, 480))
        done.set()

    def consume() -> None:
        out = np.empty(512, dtype=np.float32)
        while not done.is_set() or buffer.depth:
            n = buffer.pull_into(out)
            played.append(out[:n].copy())

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    samples = np.concatenate(played)
    stats = buffer.stats()
    assert stats.played + stats.dropped + stats.depth == total
    assert len(samples) == stats.played
    assert np.all(np.diff(samples) > 0)  # strictly increasing: never reordered or duplicated
