"""Device resilience: a mic lost mid-session is reopened and the conversation goes on.

A fake mic lives on one timeline (a frame every 80 ms, like the hardware);
each time it is opened it counts its frames from 0, as PortAudio's stream
does. The first stream raises AudioError mid-session ("unplugged"); reopening
fails a few times, then works. The session (run_talk, a fast fake engine, the
mock clock) must go on, say so once, and the model must see every frame
except those that were never captured, numbered without any other gap.
"""

from __future__ import annotations

import contextlib
import functools
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
from xswarm.audio.resilient import (
    REOPEN_SECONDS,
    RETRY_SECONDS,
    ReopenStats,
    keep_mic,
    keep_speaker,
)
from xswarm.errors import AudioError, UsageError
from xswarm.talk import TalkConfig, TalkIO, TalkParts, run_talk

TOTAL_FRAMES = 100  # 8 s of conversation
LOST_AT = 40  # the first stream dies after this many frames


class InlineWorker:
    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return fn(*args)


@contextlib.asynccontextmanager
async def inline_worker() -> AsyncIterator[InlineWorker]:
    yield InlineWorker()


class FakeMic:
    """A mic actor with mic_actor's signature, on a shared frame timeline."""

    def __init__(
        self, failed_reopens: int, refusal: type[Exception] = AudioError, flaky: bool = False
    ) -> None:
        self.failed_reopens = failed_reopens
        self.refusal = refusal
        self.flaky = flaky  # every reopened stream dies again after 5 frames
        self.opened: list[Any] = []  # the device asked for at each open
        self.start: float | None = None

    async def __call__(
        self, send: Any, *, device: Any, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.opened.append(device)
        if len(self.opened) > 1 and self.failed_reopens:
            self.failed_reopens -= 1
            await trio.sleep(0.01)
            raise self.refusal("cannot open input device: Device unavailable")
        task_status.started()
        if self.start is None:
            self.start = trio.current_time()
        # The next frame on the hardware's timeline, counted from 0 by this stream.
        first = int(-(-(trio.current_time() - self.start) // FRAME_SECONDS))
        for count, k in enumerate(range(first, TOTAL_FRAMES)):
            await trio.sleep_until(self.start + k * FRAME_SECONDS)
            if len(self.opened) == 1 and k == LOST_AT:
                raise AudioError('the input stream on device 3 "USB mic" stopped (device lost?)')
            if self.flaky and len(self.opened) > 1 and count == 5:
                raise AudioError("no audio callbacks from input device 0 after 5 s")
            pcm = np.full(FRAME_SAMPLES, k / 1000, np.float32)  # the frame knows its time
            send.send_nowait(AudioFrame(pcm, count, time.monotonic()))


async def run_session(
    mic: FakeMic, tmp_path: Path
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str], ReopenStats]:
    announced: list[str] = []
    stats = ReopenStats()
    log_path = tmp_path / "log.jsonl"

    async def discard(frames: Any) -> None:
        async with frames:
            async for _ in frames:
                pass

    parts = TalkParts(
        engine_factory=lambda progress: EchoEngine(),
        model_name="echo",
        worker_factory=inline_worker,
        handle_signals=False,
        source_actor=functools.partial(
            keep_mic, mic, device=3, announce=announced.append, stats=stats
        ),
        sink_actor=discard,
    )
    config = TalkConfig(json=True, quiet=True, log_path=log_path, history=False)
    talk_io = TalkIO(io.StringIO(), io.StringIO(), stdout_tty=False, stderr_tty=False, color=False)
    try:
        summary = await run_talk(config, talk_io, parts)
    finally:
        records = [json.loads(x) for x in log_path.read_text().splitlines()]
    return summary, [r for r in records if r.get("type") == "frame"], announced, stats


async def test_a_lost_mic_is_reopened_and_only_the_lost_frames_are_missing(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(time, "monotonic", trio.current_time)
    mic = FakeMic(failed_reopens=3)  # back after 3 failed tries (0.75 s)
    with trio.fail_after(60):
        summary, frames, announced, stats = await run_session(mic, tmp_path)

    assert mic.opened == [3, None, None, None, None]  # then the default device
    assert (stats.losses, stats.reopens) == (1, 1)
    assert len(announced) == 2
    assert announced[0].startswith('the input stream on device 3 "USB mic" stopped')
    assert announced[0].endswith("; reopening the default input device")
    assert announced[1] == "the input is back on the default device"
    # Frames were lost only while no stream ran: 3 retries x 0.25 s, plus the open.
    assert 3 * RETRY_SECONDS / FRAME_SECONDS <= stats.lost_frames <= REOPEN_SECONDS / FRAME_SECONDS
    resumed = LOST_AT + stats.lost_frames
    indexes = [f["index"] for f in frames]
    assert indexes == [*range(LOST_AT), *range(resumed, TOTAL_FRAMES)]
    assert summary["reason"] == "end" and summary["frames"] == len(indexes)


@pytest.mark.parametrize("refusal", [AudioError, UsageError])  # UsageError: no device listed
async def test_a_mic_that_does_not_come_back_ends_the_session_with_the_first_error(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    refusal: type[Exception],
) -> None:
    monkeypatch.setattr(time, "monotonic", trio.current_time)
    mic = FakeMic(failed_reopens=1000, refusal=refusal)
    with trio.fail_after(60), pytest.raises(AudioError, match=r"stopped \(device lost\?\)$"):
        await run_session(mic, tmp_path)
    attempts = len(mic.opened) - 1
    assert REOPEN_SECONDS / RETRY_SECONDS - 1 <= attempts <= REOPEN_SECONDS / RETRY_SECONDS + 1


async def test_a_device_that_comes_back_only_to_fail_again_ends_the_session(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(time, "monotonic", trio.current_time)
    mic = FakeMic(failed_reopens=0, flaky=True)
    with trio.fail_after(60), pytest.raises(AudioError, match=r"^no audio callbacks"):
        await run_session(mic, tmp_path)
    assert mic.opened == [3, None]  # one reopening, then the session ends instead of looping


async def test_a_device_that_never_opened_is_not_retried() -> None:
    calls = 0

    async def refusing(send: Any, *, device: Any, task_status: Any) -> None:
        nonlocal calls
        calls += 1
        raise AudioError("cannot open input device 9")

    send, _receive = trio.open_memory_channel[AudioFrame](1)
    with trio.fail_after(5), pytest.raises(AudioError, match="cannot open input device 9"):
        await keep_mic(refusing, send, device=9, announce=lambda message: None)
    assert calls == 1


async def test_a_lost_speaker_is_reopened_and_keeps_playing_the_same_channel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    played: list[tuple[Any, int]] = []  # (device, frame index)
    opened: list[Any] = []

    async def speaker(receive: Any, *, device: Any, task_status: Any) -> None:
        opened.append(device)
        task_status.started()
        try:
            async for frame in receive:
                played.append((device, frame.index))
                if len(opened) == 1 and frame.index == 9:
                    raise AudioError("the output device 2 stopped calling back (device lost?)")
        finally:
            receive.close()  # as speaker_actor does: must not end the real channel

    send, receive = trio.open_memory_channel[AudioFrame](64)
    announced: list[str] = []
    stats = ReopenStats()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(
                keep_speaker, speaker, receive, device=2, announce=announced.append, stats=stats
            )
        )
        with trio.fail_after(10):
            async with send:
                for index in range(20):
                    await send.send(AudioFrame(np.zeros(FRAME_SAMPLES, np.float32), index, 0.0))
                    await trio.sleep(FRAME_SECONDS)
    assert opened == [2, None]
    assert [index for _, index in played] == list(range(20))  # nothing lost, nothing twice
    assert {device for device, index in played if index >= 10} == {None}
    assert (stats.losses, stats.reopens) == (1, 1) and len(announced) == 2
    assert announced[0].endswith("reopening the default output device")


async def test_talk_reopens_a_lost_mic_and_says_so(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same loss through talk's own mic path (xswarm.talk._mic with the device
    actor replaced): the warnings reach the transcript stream, the session goes on."""
    import xswarm.audio.devices as devices

    monkeypatch.setattr(time, "monotonic", trio.current_time)
    mic = FakeMic(failed_reopens=2)

    async def fake_mic_actor(send: Any, *, device: Any, stats: Any, task_status: Any) -> None:
        assert stats.last_callback == 0.0  # reset for every stream, else a stall at once
        stats.last_callback = 1.0
        await mic(send, device=device, task_status=task_status)

    usb = devices.DeviceInfo(3, "USB mic", "ALSA", 1, 0, 48_000.0, False, False)
    monkeypatch.setattr(devices, "resolve_device", lambda spec, kind, listed=None: usb)
    monkeypatch.setattr(devices, "mic_actor", fake_mic_actor)

    async def discard(frames: Any) -> None:
        async with frames:
            async for _ in frames:
                pass

    parts = TalkParts(
        engine_factory=lambda progress: EchoEngine(),
        model_name="echo",
        worker_factory=inline_worker,
        handle_signals=False,
        sink_actor=discard,
    )
    config = TalkConfig(input_device="USB mic", json=True, history=False)
    out, err = io.StringIO(), io.StringIO()
    talk_io = TalkIO(out, err, stdout_tty=False, stderr_tty=False, color=False)
    with trio.fail_after(60):
        summary = await run_talk(config, talk_io, parts)

    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    warnings = [x["message"] for x in lines if x.get("status") == "warning"]
    assert len(warnings) == 2 and "reopening the default input device" in warnings[0]
    assert warnings[1] == "the input is back on the default device"
    assert err.getvalue().count("xswarm: warning: ") == 2
    assert mic.opened == [3, None, None, None]
    assert summary["reason"] == "end" and summary["warnings"] == 2
    assert LOST_AT < summary["frames"] < TOTAL_FRAMES  # the lost frames only are missing
