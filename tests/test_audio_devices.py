"""Sound devices: choosing one, PortAudio's absence, and the real mic/speaker path.

Tests marked ``pulse`` run real PortAudio streams against the PulseAudio null
sink started by tests/pulse.py: the speaker actor plays into the sink, the mic
actor records the sink's monitor, so the callback threads and the hand-over to
Trio are the ones users run.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
import pytest
import trio
import trio.testing

from tests.cli_helpers import run_xswarm
from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from xswarm.audio.devices import (
    DeviceInfo,
    StreamStats,
    _StreamWatch,
    list_devices,
    mic_actor,
    resolve_device,
    speaker_actor,
)
from xswarm.audio.frame import AudioFrame
from xswarm.audio.jitter import JitterBuffer
from xswarm.errors import AudioError, ExitCode, UsageError
from xswarm.runtime import Overflow, open_channel

TONE_HZ = 440.0
SILENCE_RMS = 0.01  # below this a captured frame is start-up silence, not the tone


def device(index: int, name: str, inputs: int, outputs: int, **defaults: bool) -> DeviceInfo:
    return DeviceInfo(
        index=index,
        name=name,
        hostapi="ALSA",
        max_input_channels=inputs,
        max_output_channels=outputs,
        default_samplerate=48_000.0,
        is_default_input=defaults.get("default_input", False),
        is_default_output=defaults.get("default_output", False),
    )


DEVICES = [
    device(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", 2, 2),
    device(1, "USB Audio Mic", 1, 0),
    device(2, "pulse", 32, 32),
    device(3, "default", 32, 32, default_input=True, default_output=True),
    device(4, "HDMI 0", 0, 8),
]


@pytest.mark.parametrize(
    ("spec", "kind", "index"),
    [
        (None, "input", 3),
        ("", "output", 3),
        (1, "input", 1),
        ("4", "output", 4),
        ("usb", "input", 1),
        ("PULSE", "output", 2),
        ("hdmi", "output", 4),
        ("default", "input", 3),
    ],
)
def test_resolve_by_default_index_or_name(spec: str | int | None, kind: str, index: int) -> None:
    assert resolve_device(spec, kind, DEVICES).index == index  # type: ignore[arg-type]


def test_an_exact_name_beats_substring_matches() -> None:
    devices = [device(0, "Mic", 1, 0), device(1, "Mic (USB)", 1, 0)]
    assert resolve_device("mic", "input", devices).index == 0


@pytest.mark.parametrize(
    ("spec", "kind", "message"),
    [
        (
            "nope",
            "input",
            r"^no input device matches 'nope'; input devices: 0 \"HDA Intel.*\", "
            r"1 \"USB Audio Mic\", 2 \"pulse\", 3 \"default\"; "
            r"see `xswarm devices`, or use --input FILE$",
        ),
        (
            "a",
            "output",
            r"^'a' matches several output devices: 0 \"HDA.*give the index; .*--output FILE$",
        ),
        (9, "input", r"^no audio device with index 9; input devices: .*--input FILE$"),
        ("4", "input", r"^device 4 \"HDMI 0\" \(0 in, 8 out\) has no input channels; "),
        ("usb", "output", r"^no output device matches 'usb'; output devices: 0 .*4 \"HDMI 0\"; "),
    ],
)
def test_bad_device_specs_list_the_devices_and_suggest_files(
    spec: str | int, kind: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        resolve_device(spec, kind, DEVICES)  # type: ignore[arg-type]
    assert caught.value.exit_code == ExitCode.USAGE


def test_no_device_at_all_is_a_usage_error() -> None:
    with pytest.raises(
        UsageError, match=r"^no input device found; there is no input device; .*--input FILE$"
    ):
        resolve_device(None, "input", [device(0, "HDMI", 0, 2)])


def test_a_missing_sounddevice_module_is_a_one_line_audio_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # `import sounddevice` now fails
    with pytest.raises(AudioError, match=r"^the sounddevice package cannot be imported"):
        list_devices()


def test_cli_without_portaudio_names_the_package_and_exits_1() -> None:
    result = run_xswarm("devices", hide_portaudio=True, timeout=60)
    assert result.returncode == ExitCode.FAILURE
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("xswarm: error: PortAudio is missing")
    assert "apt install libportaudio2" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_json_without_portaudio_is_the_same_error() -> None:
    result = run_xswarm("devices", "--json", hide_portaudio=True, timeout=60)
    assert result.returncode == ExitCode.FAILURE and result.stdout == ""
    assert "libportaudio2" in result.stderr and "Traceback" not in result.stderr


# --- stream health, with a fake stream and a fake clock --------------------------------


class FakeStream:
    def __init__(self) -> None:
        self.active = True


async def test_a_stream_that_stops_by_itself_is_an_audio_error(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "monotonic", trio.current_time)
    stats = StreamStats()
    watch = _StreamWatch("output", DEVICES[2], stats)
    started = trio.current_time()

    class LostAfterOneSecond:
        @property
        def active(self) -> bool:
            stats.last_callback = trio.current_time()  # callbacks kept coming until then
            return trio.current_time() - started < 1.0

    with (
        trio.fail_after(10),
        pytest.raises(AudioError, match=r'^the output stream on device 2 "pulse" .* stopped'),
    ):
        await watch.watch(LostAfterOneSecond(), started)
    assert trio.current_time() - started == pytest.approx(1.0, abs=0.3)


async def test_a_stream_without_callbacks_is_an_audio_error(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # time.monotonic follows the fake clock, so the stall detector can be tested without waiting.
    monkeypatch.setattr(time, "monotonic", trio.current_time)
    stats = StreamStats()
    watch = _StreamWatch("input", DEVICES[1], stats)
    started = trio.current_time()
    with (
        trio.fail_after(60),
        pytest.raises(AudioError, match=r"^no audio callbacks from input device 1"),
    ):
        await watch.watch(FakeStream(), started)
    assert trio.current_time() - started == pytest.approx(5.0, abs=0.3)
    stats.last_callback = trio.current_time()
    with trio.fail_after(60), pytest.raises(AudioError, match=r"stopped calling back for 2\.\d s"):
        await watch.watch(FakeStream(), started)


# --- the real PortAudio path on the null sink ------------------------------------------


def tone_frame(index: int, amplitude: float = 0.5) -> np.ndarray:
    n = np.arange(index * FRAME_SAMPLES, (index + 1) * FRAME_SAMPLES)
    return (amplitude * np.sin(2 * np.pi * TONE_HZ * n / SAMPLE_RATE)).astype(np.float32)


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    peak = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
    return (peak + 0.5 * (a - c) / (a - 2 * b + c)) * SAMPLE_RATE / len(samples)


@pytest.mark.pulse
async def test_the_mic_records_the_tone_the_speaker_plays() -> None:
    """Speaker -> null sink -> monitor -> mic, on real PortAudio streams and threads."""
    play_frames = 30  # 2.4 s of tone
    quiet_frames = 8  # then the producer stops (without ending) for 0.64 s
    mic_tx, mic_rx = open_channel("mic", 8, overflow=Overflow.DROP_OLDEST)
    spk_tx, spk_rx = open_channel("speaker", 8, overflow=Overflow.DROP_OLDEST)
    buffer = JitterBuffer()
    mic_stats, speaker_stats = StreamStats(), StreamStats()
    captured: list[AudioFrame] = []
    underruns_while_playing = -1
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: speaker_actor(
                    spk_rx, buffer=buffer, stats=speaker_stats, task_status=task_status
                )
            )
            await nursery.start(
                lambda task_status: mic_actor(mic_tx, stats=mic_stats, task_status=task_status)
            )

            async def produce() -> None:
                nonlocal underruns_while_playing
                start = trio.current_time()
                for i in range(play_frames):  # paced like the model: one frame per 80 ms
                    await trio.sleep_until(start + i * FRAME_SECONDS)
                    spk_tx.send_nowait(AudioFrame(tone_frame(i), i, time.monotonic()))
                await trio.sleep(FRAME_SECONDS)
                underruns_while_playing = buffer.stats().underruns
                await trio.sleep(quiet_frames * FRAME_SECONDS)  # producer silent, not ended
                nursery.cancel_scope.cancel()

            nursery.start_soon(produce)
            async for frame in mic_rx:
                captured.append(frame)

    # The tone came back: skip start-up silence (stream latency + loopback, ~160-240 ms).
    levels = [float(np.sqrt(np.mean(f.pcm**2))) for f in captured]
    first = next(i for i, level in enumerate(levels) if level > SILENCE_RMS)
    tone_part = np.concatenate([f.pcm for f in captured[first + 1 : first + play_frames - 2]])
    assert len(tone_part) >= 20 * FRAME_SAMPLES
    assert dominant_frequency(tone_part) == pytest.approx(TONE_HZ, rel=0.02)
    assert float(np.sqrt(np.mean(tone_part**2))) == pytest.approx(0.5 / math.sqrt(2), rel=0.1)

    # Frames carry 1920 float32 samples, numbered without gaps (nothing dropped).
    assert all(f.pcm.shape == (FRAME_SAMPLES,) and f.pcm.dtype == np.float32 for f in captured)
    assert [f.index for f in captured] == list(range(len(captured)))
    assert mic_tx.metrics.dropped == 0 and mic_stats.late == 0
    # At most the callback racing the cancel found the channel closed.
    assert mic_stats.dropped <= 1

    # Callbacks at the frame cadence: median 80 ms, and most intervals near it (a median
    # alone would pass for pairs of callbacks 0 and 160 ms apart, the full-duplex failure).
    intervals = np.diff([f.t_capture for f in captured])
    assert float(np.median(intervals)) == pytest.approx(FRAME_SECONDS, rel=0.1)
    near = np.abs(intervals - FRAME_SECONDS) < 0.25 * FRAME_SECONDS
    assert near.mean() >= 0.8, f"bursty callbacks: {np.round(intervals * 1000, 1).tolist()}"
    assert len(captured) <= mic_stats.callbacks <= len(captured) + 2  # + the racing one(s)

    # The speaker played every frame; when the producer stopped, underruns were counted.
    stats = buffer.stats()
    assert stats.pushed == play_frames * FRAME_SAMPLES and stats.dropped == 0
    assert stats.played == play_frames * FRAME_SAMPLES
    assert underruns_while_playing <= 1  # at most the edge of the stop
    assert stats.underruns - underruns_while_playing >= quiet_frames // 2
    assert speaker_stats.frames == play_frames


@pytest.mark.pulse
async def test_the_speaker_drains_and_returns_at_end_of_input() -> None:
    frames = 10
    send, receive = trio.open_memory_channel[AudioFrame](frames)
    buffer = JitterBuffer(capacity=frames * FRAME_SAMPLES)
    for i in range(frames):
        send.send_nowait(AudioFrame(tone_frame(i), i, 0.0))
    send.close()  # end of input
    with trio.fail_after(15):
        started = trio.current_time()
        await speaker_actor(receive, buffer=buffer)
        elapsed = trio.current_time() - started
    stats = buffer.stats()
    assert stats.played == frames * FRAME_SAMPLES and stats.depth == 0
    assert stats.underruns == 0  # running dry after the declared end is not an underrun
    assert elapsed >= frames * FRAME_SECONDS  # it waited for the audio to play out


@pytest.mark.pulse
async def test_the_mic_survives_a_consumer_that_went_away() -> None:
    """offer() must never raise into Trio: a closed channel is counted, not fatal."""
    send, receive = trio.open_memory_channel[AudioFrame](4)
    stats = StreamStats()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: mic_actor(send, stats=stats, task_status=task_status)
            )
            await receive.receive()
            receive.close()  # the consumer is gone: send_nowait raises BrokenResourceError
            dropped_before = stats.dropped
            await trio.sleep(5 * FRAME_SECONDS)
            assert stats.dropped >= dropped_before + 3
            nursery.cancel_scope.cancel()


@pytest.mark.pulse
async def test_an_unknown_device_name_fails_before_opening_a_stream() -> None:
    send, _receive = trio.open_memory_channel[AudioFrame](4)
    with (
        trio.fail_after(10),
        pytest.raises(UsageError, match=r"no input device matches 'no-such-mic'"),
    ):
        await mic_actor(send, device="no-such-mic")


@pytest.mark.pulse
def test_list_devices_sees_the_null_sink() -> None:
    devices = list_devices()
    pulse = [d for d in devices if d.name == "pulse"]
    assert len(pulse) == 1 and pulse[0].max_input_channels > 0 and pulse[0].max_output_channels > 0
    assert sum(d.is_default_input for d in devices) == 1
    assert resolve_device("pulse", "output").index == pulse[0].index


@pytest.mark.pulse
def test_cli_devices_json_parses_and_lists_the_pulse_device() -> None:
    result = run_xswarm("devices", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    devices = json.loads(result.stdout)
    assert isinstance(devices, list)
    pulse = next(d for d in devices if d["name"] == "pulse")
    assert set(pulse) == {
        "index",
        "name",
        "hostapi",
        "max_input_channels",
        "max_output_channels",
        "default_samplerate",
        "is_default_input",
        "is_default_output",
    }
    assert pulse["max_input_channels"] > 0 and pulse["max_output_channels"] > 0


@pytest.mark.pulse
def test_cli_devices_table_names_the_devices() -> None:
    result = run_xswarm("devices", timeout=60)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["#", "name", "api", "in", "out", "rate", "default"]
    assert any(row.split()[1] == "pulse" for row in rows)
    assert sum("in out" in row for row in rows) == 1  # one default device, marked


@pytest.mark.pulse
async def test_a_stream_that_portaudio_ends_mid_session_is_an_audio_error() -> None:
    """PortAudio finishing the stream (here: the callback aborts it, as on device loss)
    reaches the actor through the finished callback and ends it with an AudioError."""
    import sounddevice

    class FailingBuffer(JitterBuffer):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def pull_into(self, out: np.ndarray) -> int:
            self.calls += 1
            if self.calls > 3:
                raise sounddevice.CallbackAbort
            return super().pull_into(out)

    send, receive = trio.open_memory_channel[AudioFrame](4)
    with (
        trio.fail_after(20),
        pytest.raises(
            AudioError, match=r"^the output stream on device .* stopped \(device lost\?\)"
        ),
    ):
        async with send:
            await speaker_actor(receive, buffer=FailingBuffer())


def test_a_device_that_refuses_to_open_is_an_audio_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sounddevice

    import xswarm.audio.devices as devices_module

    def refuse(**kwargs: object) -> None:
        raise sounddevice.PortAudioError(
            "Error opening InputStream: Device unavailable [PaErrorCode -9985]"
        )

    monkeypatch.setattr(devices_module, "list_devices", lambda: DEVICES)
    monkeypatch.setattr(sounddevice, "InputStream", refuse)
    send, _receive = trio.open_memory_channel[AudioFrame](4)
    with pytest.raises(
        AudioError,
        match=r'^cannot open input device 1 "USB Audio Mic" \(1 in, 0 out\): '
        r"Error opening InputStream: Device unavailable \[PaErrorCode -9985\]; "
        r"see `xswarm devices`, or use --input FILE$",
    ):
        trio.run(lambda: mic_actor(send, device="usb"))


@pytest.mark.pulse
async def test_an_exception_in_a_callback_ends_the_actor_without_a_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    class BrokenBuffer(JitterBuffer):
        def pull_into(self, out: np.ndarray) -> int:
            raise RuntimeError("boom")

    send, receive = trio.open_memory_channel[AudioFrame](4)
    with (
        trio.fail_after(20),
        pytest.raises(
            AudioError,
            match=r"^the output callback on device .* failed: RuntimeError: boom; please report",
        ),
    ):
        async with send:
            await speaker_actor(receive, buffer=BrokenBuffer())
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and "Exception ignored" not in captured.err
