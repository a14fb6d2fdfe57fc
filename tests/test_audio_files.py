"""Audio files in and out: every format and rate becomes 24 kHz mono frames; bad files say why."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import trio
import trio.lowlevel
import trio.testing

from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from xswarm.audio.files import (
    AudioSource,
    file_sink_actor,
    file_source_actor,
    open_sink,
    open_source,
)
from xswarm.audio.frame import AudioFrame
from xswarm.errors import ExitCode, UsageError

TONE_HZ = 440.0
AMPLITUDE = 0.5


def tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    mono = (AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    return mono if channels == 1 else np.repeat(mono[:, None], channels, axis=1)


def dominant_frequency(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    """The strongest frequency, by FFT peak with parabolic interpolation."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    peak = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return (peak + offset) * rate / len(samples)


def read_all(path: str | Path) -> tuple[AudioSource, np.ndarray]:
    with open_source(path) as source:
        frames = list(source.frames())
    assert all(f.shape == (FRAME_SAMPLES,) and f.dtype == np.float32 for f in frames)
    return source, np.concatenate(frames)


# (extension, libsndfile format, subtype, rate, exact): every format this libsndfile writes
FORMATS = [
    ("wav", "WAV", "PCM_U8", 44_100, True),  # 8-bit WAV is unsigned
    ("wav", "WAV", "PCM_16", 44_100, True),
    ("wav", "WAV", "PCM_24", 44_100, True),
    ("wav", "WAV", "PCM_32", 44_100, True),
    ("wav", "WAV", "FLOAT", 44_100, True),
    ("wav", "WAV", "DOUBLE", 44_100, True),
    ("flac", "FLAC", "PCM_16", 44_100, True),
    ("flac", "FLAC", "PCM_24", 44_100, True),
    ("ogg", "OGG", "VORBIS", 44_100, False),
    ("ogg", "OGG", "OPUS", 48_000, False),  # Opus only runs at 8/12/16/24/48 kHz
    ("mp3", "MP3", "MPEG_LAYER_III", 44_100, False),
]


@pytest.mark.parametrize(("ext", "major", "subtype", "rate", "exact"), FORMATS)
def test_every_format_decodes_to_the_tone(
    tmp_path: Path, ext: str, major: str, subtype: str, rate: int, exact: bool
) -> None:
    assert major in sf.available_formats()
    path = tmp_path / f"tone-{subtype}.{ext}"
    sf.write(path, tone(rate, 1.0), rate, format=major, subtype=subtype)
    source, audio = read_all(path)
    assert source.info.format == major and source.info.subtype == subtype
    assert source.info.sample_rate == rate and source.info.channels == 1
    if exact:
        assert source.info.frames == rate
    assert source.info.duration == pytest.approx(1.0, rel=0.01)
    assert source.samples == source.info.output_samples
    assert source.info.output_samples == pytest.approx(SAMPLE_RATE, rel=0.01)
    assert len(audio) == math.ceil(source.samples / FRAME_SAMPLES) * FRAME_SAMPLES
    real = audio[: source.samples]
    assert dominant_frequency(real) == pytest.approx(TONE_HZ, rel=0.01)
    # Level survives: RMS of a sine is amplitude / sqrt(2) (lossy codecs: looser).
    middle = real[len(real) // 4 : -len(real) // 4]
    rms = float(np.sqrt(np.mean(middle**2)))
    assert rms == pytest.approx(AMPLITUDE / math.sqrt(2), rel=0.02 if exact else 0.1)


@pytest.mark.parametrize(
    ("rate", "channels"), [(8_000, 1), (24_000, 1), (44_100, 2), (96_000, 1), (48_000, 6)]
)
def test_any_rate_and_channel_count_gives_the_right_duration_and_tone(
    tmp_path: Path, rate: int, channels: int
) -> None:
    seconds = 2.3  # not a whole number of frames: the last frame is padded
    path = tmp_path / f"tone-{rate}-{channels}.wav"
    sf.write(path, tone(rate, seconds, channels), rate, subtype="FLOAT")
    source, audio = read_all(path)
    assert source.info.channels == channels
    assert source.info.duration == pytest.approx(seconds, abs=1 / rate)
    assert source.samples == round(seconds * SAMPLE_RATE)
    assert source.duration == pytest.approx(seconds, abs=1 / SAMPLE_RATE)
    assert source.frames_read == math.ceil(seconds / FRAME_SECONDS)
    assert not audio[source.samples :].any()  # padding is silence
    real = audio[: source.samples]
    assert dominant_frequency(real) == pytest.approx(TONE_HZ, rel=0.01)
    middle = real[len(real) // 4 : -len(real) // 4]
    assert float(np.sqrt(np.mean(middle**2))) == pytest.approx(AMPLITUDE / math.sqrt(2), rel=0.02)


def test_a_long_file_is_read_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays flat: no read asks for more than one block of input."""
    rate = 16_000
    path = tmp_path / "long.wav"
    sf.write(path, tone(rate, 30.0), rate)
    asked: list[int] = []
    real_read = sf.SoundFile.read

    def spy(self: sf.SoundFile, frames: int = -1, *args: object, **kwargs: object) -> np.ndarray:
        asked.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    source, _ = read_all(path)
    assert source.samples == 30 * SAMPLE_RATE
    assert len(asked) > 30 and max(asked) == rate // 2 and min(asked) > 0


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def unsupported_codec_wav(path: Path) -> Path:
    """A WAVE_FORMAT_EXTENSIBLE file whose sub-format GUID says AAC (0x1600)."""
    sf.write(path, np.zeros(4800, np.float32), SAMPLE_RATE, format="WAVEX", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    guid = data.find(b"fmt ") + 8 + 24
    data[guid : guid + 2] = (0x1600).to_bytes(2, "little")
    return write_bytes(path, bytes(data))


def non_finite_wav(path: Path, value: float, index: int) -> Path:
    samples = np.zeros(SAMPLE_RATE, np.float32)
    samples[index] = value
    sf.write(path, samples, SAMPLE_RATE, subtype="FLOAT")
    return path


BAD_FILES = {
    "missing": (lambda d: d / "nope.wav", r"nope\.wav: no such file; check the path$"),
    "directory": (lambda d: d, r": is a directory, not an audio file; name a file inside it$"),
    "empty": (lambda d: write_bytes(d / "e.wav", b""), r"e\.wav: is empty \(0 bytes\)"),
    "text": (
        lambda d: write_bytes(d / "t.wav", b"hello\n" * 20),
        r"t\.wav: not an audio file libsndfile can read \(Format not recognised\); "
        r"convert it to WAV or FLAC, e\.g\. ffmpeg -i .*t\.wav out\.wav$",
    ),
    "truncated header": (
        lambda d: write_bytes(d / "h.wav", b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00"),
        r"h\.wav: not an audio file libsndfile can read \(.+\)",
    ),
    "unsupported codec": (
        lambda d: unsupported_codec_wav(d / "aac.wav"),
        r"aac\.wav: not an audio file libsndfile can read "
        r"\(File contains data in an unimplemented format\)",
    ),
    "zero samples": (
        lambda d: (sf.write(d / "z.wav", np.zeros(0, np.float32), SAMPLE_RATE), d / "z.wav")[1],
        r"z\.wav: holds no audio samples \(0 frames\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_name_the_file_and_the_fix(tmp_path: Path, case: str) -> None:
    make, message = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(UsageError, match=message) as caught:
        open_source(str(path))
    assert caught.value.exit_code == ExitCode.USAGE
    assert "\n" not in caught.value.message


def test_a_wav_cut_mid_data_yields_the_samples_it_has(tmp_path: Path) -> None:
    """A download cut short is not an error: its header overstates, the data decides."""
    path = tmp_path / "cut.wav"
    sf.write(path, tone(16_000, 2.0), 16_000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: 44 + 16_000 * 2])  # header + 1 s of 16-bit samples
    source, audio = read_all(path)
    assert source.input_frames == 16_000
    assert source.samples == SAMPLE_RATE
    assert dominant_frequency(audio[: source.samples]) == pytest.approx(TONE_HZ, rel=0.01)


@pytest.mark.parametrize(
    ("value", "index", "message"),
    [
        (np.nan, 2500, r"n\.wav: NaN sample at 0\.104 s \(channel 1\); the file is corrupt"),
        (np.inf, 20_000, r"n\.wav: infinite sample at 0\.833 s \(channel 1\)"),
    ],
)
def test_non_finite_samples_are_refused_with_their_time(
    tmp_path: Path, value: float, index: int, message: str
) -> None:
    path = non_finite_wav(tmp_path / "n.wav", value, index)
    with open_source(path) as source, pytest.raises(UsageError, match=message):
        list(source.frames())


def test_stdin_is_read_from_a_buffer(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, tone(16_000, 1.0), 16_000, format="FLAC")
    with open_source("-", stdin=io.BytesIO(buffer.getvalue())) as source:
        audio = np.concatenate(list(source.frames()))
    assert source.info.name == "<stdin>" and source.info.format == "FLAC"
    assert source.samples == SAMPLE_RATE
    assert dominant_frequency(audio[: source.samples]) == pytest.approx(TONE_HZ, rel=0.01)


def test_empty_stdin_says_what_to_do() -> None:
    with pytest.raises(UsageError, match=r"^<stdin>: no data on stdin; pipe an audio file in"):
        open_source("-", stdin=io.BytesIO(b""))


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_stdin_works_on_a_real_pipe(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"in.{ext}"
    sf.write(path, tone(44_100, 1.0), 44_100)
    script = (
        "from xswarm.audio.files import open_source\n"
        "with open_source('-') as s:\n"
        "    n = sum(1 for _ in s.frames())\n"
        "print(s.info.format, s.samples, n)\n"
    )
    with path.open("rb") as data:
        cat = subprocess.Popen(["cat"], stdin=data, stdout=subprocess.PIPE)
        result = subprocess.run(
            [sys.executable, "-c", script], stdin=cat.stdout, capture_output=True, timeout=60
        )
        cat.wait(timeout=10)
    assert result.returncode == 0, result.stderr.decode()
    major, samples, frames = result.stdout.decode().split()
    assert major == ext.upper() and int(frames) == math.ceil(int(samples) / FRAME_SAMPLES)
    assert int(samples) == pytest.approx(SAMPLE_RATE, rel=0.01)


# --- sinks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "major"), [("wav", "WAV"), ("flac", "FLAC"), ("ogg", "OGG"), ("mp3", "MP3")]
)
@pytest.mark.parametrize("channels", [1, 2])
def test_sink_writes_each_format(tmp_path: Path, ext: str, major: str, channels: int) -> None:
    path = tmp_path / f"out.{ext}"
    with open_sink(path, channels=channels) as sink:
        for _ in range(10):
            sink.write(tone(SAMPLE_RATE, FRAME_SECONDS))
    assert sink.frames_written == 10 * FRAME_SAMPLES
    info = sf.info(path)
    assert info.format == major and info.channels == channels and info.samplerate == SAMPLE_RATE
    data, _ = sf.read(path, always_2d=True)
    assert abs(len(data) - 10 * FRAME_SAMPLES) <= (0 if ext in ("wav", "flac") else 2000)
    assert dominant_frequency(data[:, 0]) == pytest.approx(TONE_HZ, rel=0.01)


def test_sink_to_a_stdout_pipe_is_a_streaming_wav() -> None:
    pipe = io.BytesIO()  # no fileno: written like a pipe
    with open_sink("-", stdout=pipe) as sink:
        sink.write(tone(SAMPLE_RATE, 0.5))
    data, rate = sf.read(io.BytesIO(pipe.getvalue()), dtype="float32")
    assert rate == SAMPLE_RATE and len(data) == SAMPLE_RATE // 2
    assert np.allclose(data, tone(SAMPLE_RATE, 0.5), atol=1 / 32767)


def test_sink_to_stdout_redirected_to_a_file_gets_an_exact_header(tmp_path: Path) -> None:
    path = tmp_path / "redirected.wav"
    with path.open("wb") as stdout, open_sink("-", stdout=stdout) as sink:
        sink.write(tone(SAMPLE_RATE, 0.5))
    assert sf.info(path).frames == SAMPLE_RATE // 2


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("out.xyz", r"out\.xyz: unknown audio format '\.xyz'; use \.wav, \.flac, \.ogg, \.mp3$"),
        ("missing/out.wav", r"out\.wav: directory .*missing does not exist; create it first$"),
        (".", r"\.: unknown audio format"),
    ],
)
def test_bad_sink_paths_say_why(tmp_path: Path, name: str, message: str) -> None:
    os.chdir(tmp_path)
    with pytest.raises(UsageError, match=message):
        open_sink(name)


# --- actors ------------------------------------------------------------------


async def test_sink_actor_leaves_a_valid_file_when_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "cancelled.wav"
    send, receive = trio.open_memory_channel[AudioFrame](4)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(file_sink_actor, receive, open_sink(path))
            for index in range(7):
                await send.send(AudioFrame(tone(SAMPLE_RATE, FRAME_SECONDS), index, 0.0))
            while receive.statistics().current_buffer_used:
                await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    info = sf.info(path)
    assert info.frames == 7 * FRAME_SAMPLES and info.format == "WAV"


async def test_realtime_source_follows_the_frame_schedule(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "speech.wav"
    seconds = 3.0
    sf.write(path, tone(16_000, seconds), 16_000)
    send, receive = trio.open_memory_channel[AudioFrame](2)
    arrivals: list[float] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            nursery.start_soon(
                lambda: file_source_actor(
                    open_source(path), send, realtime=True, decode_in_thread=False
                )
            )
            async for frame in receive:
                assert frame.index == len(arrivals)
                arrivals.append(trio.current_time() - start)
    expected = math.ceil(seconds / FRAME_SECONDS)
    assert len(arrivals) == expected
    # Frame i is released at i * 80 ms exactly: a fixed schedule, no drift.
    assert arrivals == pytest.approx([i * FRAME_SECONDS for i in range(expected)], abs=1e-9)


async def test_realtime_source_drops_instead_of_waiting_for_a_slow_consumer(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "speech.wav"
    sf.write(path, tone(SAMPLE_RATE, 2.0), SAMPLE_RATE)
    send, receive = trio.open_memory_channel[AudioFrame](math.inf)
    sent: list[int] = []

    class Counting:
        def send_nowait(self, frame: AudioFrame) -> None:
            sent.append(frame.index)
            send.send_nowait(frame)

        async def send(self, frame: AudioFrame) -> None:  # pragma: no cover - must not be used
            raise AssertionError("a real-time source must not wait for its consumer")

        def close(self) -> None:
            send.close()

    with trio.fail_after(60):
        start = trio.current_time()
        await file_source_actor(
            open_source(path), Counting(), realtime=True, decode_in_thread=False
        )
        elapsed = trio.current_time() - start
    assert sent == list(range(25))
    assert elapsed == pytest.approx(24 * FRAME_SECONDS)
    with pytest.raises(trio.EndOfChannel):
        for _ in range(26):
            receive.receive_nowait()


async def test_fast_source_uses_backpressure_and_a_worker_thread(tmp_path: Path) -> None:
    path = tmp_path / "speech.flac"
    sf.write(path, tone(44_100, 5.0), 44_100)
    send, receive = trio.open_memory_channel[AudioFrame](1)  # tiny: the source must wait
    received: list[AudioFrame] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: file_source_actor(open_source(path), send, realtime=False))
            async for frame in receive:
                received.append(frame)
                await trio.lowlevel.checkpoint()
    assert [f.index for f in received] == list(range(math.ceil(5.0 / FRAME_SECONDS)))
    audio = np.concatenate([f.pcm for f in received])
    assert dominant_frequency(audio[: 5 * SAMPLE_RATE]) == pytest.approx(TONE_HZ, rel=0.01)


async def test_source_actor_closes_its_file_and_channel_on_cancel(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"
    sf.write(path, tone(SAMPLE_RATE, 10.0), SAMPLE_RATE)
    source = open_source(path)
    send, receive = trio.open_memory_channel[AudioFrame](1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: file_source_actor(source, send, realtime=False))
            await receive.receive()
            nursery.cancel_scope.cancel()
    assert source.closed
    with pytest.raises(trio.ClosedResourceError):
        send.send_nowait(AudioFrame(np.zeros(FRAME_SAMPLES, np.float32), 0, 0.0))


async def test_decoding_errors_reach_the_actor_caller(tmp_path: Path) -> None:
    path = non_finite_wav(tmp_path / "bad.wav", np.nan, 12_000)
    send, receive = trio.open_memory_channel[AudioFrame](100)
    with trio.fail_after(10), pytest.raises(UsageError, match=r"bad\.wav: NaN sample at 0\.500 s"):
        await file_source_actor(open_source(path), send, realtime=False)
    assert receive.statistics().current_buffer_used == 6  # frames before the bad block went out


async def test_source_stops_quietly_when_its_consumer_leaves(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"
    sf.write(path, tone(SAMPLE_RATE, 5.0), SAMPLE_RATE)
    source = open_source(path)
    send, receive = trio.open_memory_channel[AudioFrame](1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: file_source_actor(source, send, realtime=False))
            await receive.receive()
            receive.close()  # the consumer is gone: the source must end, not fail
    assert source.closed and source.frames_read < 5 / FRAME_SECONDS


def test_stdin_on_a_terminal_is_refused_instead_of_waiting() -> None:
    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    with pytest.raises(UsageError, match=r"^<stdin>: is a terminal, not audio; pipe an audio"):
        open_source("-", stdin=Terminal(b"never read"))


async def test_sink_actor_writes_stdout_through_a_thread_and_closes_its_channel() -> None:
    pipe = io.BytesIO()
    send, receive = trio.open_memory_channel[AudioFrame](4)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(file_sink_actor, receive, open_sink("-", stdout=pipe))
            async with send:
                for index in range(3):
                    await send.send(AudioFrame(tone(SAMPLE_RATE, FRAME_SECONDS), index, 0.0))
    data, _ = sf.read(io.BytesIO(pipe.getvalue()), dtype="float32")
    assert len(data) == 3 * FRAME_SAMPLES
    with pytest.raises(trio.ClosedResourceError):
        receive.receive_nowait()
