"""A simulated room for echo-cancellation tests and benchmarks.

The far end (what xswarm plays: espeak-ng speech) reaches the microphone
through a room: delayed, attenuated and smeared by a short synthetic impulse
response (a direct path and a decaying tail of reflections). The near end
(the person at the keyboard: flite's ``slt`` voice, so the two voices differ)
reaches the microphone directly. A faint noise floor keeps every measure
finite. Everything is at 24 kHz mono float32, the pipeline's format, and the
recording is a whole number of 80 ms frames.

Timeline of :func:`record` (seconds, at the default lengths)::

    far-end only (echo-only) | near-end only | double talk | far-end only (echo-only)

so one recording shows the canceller converging, keeping near-end speech
alone and during double talk, and staying converged after double talk.
Segment masks say where each signal is active, so measures never have to
guess. :func:`erle_db` and :func:`energy_change_db` are the two measures the
echo issue asks for.

:func:`play_through_null_sink` is the other room: the real speaker and mic
actors on the PulseAudio null sink, whose monitor hears exactly what is
played, after an unknown delay (:func:`loopback_delay` measures it afterwards).

The synthesisers run once per sentence and process (``functools.cache``);
``record`` itself is deterministic for given arguments.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import soundfile as sf  # type: ignore[import-untyped]
import soxr  # type: ignore[import-untyped]

from xswarm.audio import FRAME_SAMPLES, SAMPLE_RATE

if TYPE_CHECKING:
    from xswarm.audio.aec import EchoCanceller

FAR_SENTENCES: Final = (
    "Good evening. The forecast for tomorrow is mostly sunny, with a light breeze "
    "from the west and temperatures around twenty degrees.",
    "I have added the meeting to your calendar for Thursday at three, and I will "
    "remind you fifteen minutes before it starts.",
    "The train to London leaves from platform four at a quarter past nine; "
    "tickets are still available in the second carriage.",
)  # what the assistant says: long enough to cover each segment
NEAR_SENTENCES: Final = (
    "please open the window and turn off the lights",
    "i would like a cup of coffee before the meeting",
)  # what the person says

FAR_RMS: Final = 0.1  # full scale; -20 dBFS, a loud but unclipped playback level
NEAR_RMS: Final = 0.05  # full scale; -26 dBFS, speech a little way from a laptop mic
NOISE_RMS: Final = 10 ** (-75 / 20)  # full scale; -75 dBFS mic noise floor
TAIL_SECONDS: Final = 0.06  # s of reflections after the direct path
TAIL_DB: Final = -12.0  # dB: energy of the reflections relative to the direct path
ACTIVE_RMS: Final = 0.005  # 20 ms blocks above this RMS count as "speaking"
PRESENT_RMS: Final = 1e-5  # 20 ms blocks above this RMS hold some of the signal (its quiet tails)
ACTIVITY_BLOCK: Final = SAMPLE_RATE // 50  # samples; 20 ms


@functools.cache
def espeak(text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng, at 24 kHz float32, scaled to :data:`FAR_RMS`."""
    wav = subprocess.run(
        ["espeak-ng", "--stdout", "-s", "165", text], check=True, capture_output=True
    ).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return _level(_trim(soxr.resample(audio, rate, SAMPLE_RATE)), FAR_RMS)


@functools.cache
def flite(text: str) -> np.ndarray:
    """``text`` spoken by flite's ``slt`` voice, at 24 kHz float32, scaled to :data:`NEAR_RMS`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "near.wav"
        subprocess.run(
            ["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True, capture_output=True
        )
        audio, rate = sf.read(path, dtype="float32")
    return _level(_trim(soxr.resample(audio, rate, SAMPLE_RATE)), NEAR_RMS)


def _trim(audio: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
    return audio[loud[0] : loud[-1] + 1].astype(np.float32)


def _level(audio: np.ndarray, rms: float) -> np.ndarray:
    return (audio * (rms / np.sqrt(np.mean(audio**2)))).astype(np.float32)


def impulse_response(delay_samples: int, echo_db: float, seed: int = 7) -> np.ndarray:
    """The room's echo path: a direct path of gain ``echo_db`` after ``delay_samples``,
    then :data:`TAIL_SECONDS` of exponentially decaying reflections :data:`TAIL_DB`
    below it (random signs, fixed ``seed``)."""
    tail_len = int(TAIL_SECONDS * SAMPLE_RATE)
    rng = np.random.default_rng(seed)
    decay = np.exp(-np.arange(tail_len) / (tail_len / 4))
    tail = rng.standard_normal(tail_len) * decay
    tail *= 10 ** (TAIL_DB / 20) / np.sqrt(np.sum(tail**2))
    response = np.zeros(delay_samples + 1 + tail_len, np.float64)
    response[delay_samples] = 1.0
    response[delay_samples + 1 :] = tail
    return (response * 10 ** (echo_db / 20)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Recording:
    """What the microphone heard in the simulated room, and its parts.

    All arrays have the same length, a whole number of frames. ``far`` is the
    reference (what the speaker was given, sample-aligned with ``mic``: its
    echo shows up ``delay_samples`` later), ``echo`` and ``near`` are the two
    components of ``mic`` (plus the noise floor). The masks are per sample.
    """

    far: np.ndarray
    near: np.ndarray
    echo: np.ndarray
    mic: np.ndarray
    echo_only: np.ndarray  # bool: echo active, near end silent
    near_only: np.ndarray  # bool: near end active, no echo
    double_talk: np.ndarray  # bool: both active
    delay_samples: int
    echo_db: float

    @property
    def delay_seconds(self) -> float:
        return self.delay_samples / SAMPLE_RATE

    def frames(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(mic frame, reference frame) pairs, 1920 float32 samples each, in order."""
        return [
            (self.mic[i : i + FRAME_SAMPLES], self.far[i : i + FRAME_SAMPLES])
            for i in range(0, len(self.mic), FRAME_SAMPLES)
        ]


def above(signal: np.ndarray, rms: float, *, widen: int = 0) -> np.ndarray:
    """Per-sample mask of 20 ms blocks whose RMS is above ``rms``, widened by ``widen``
    blocks on each side."""
    blocks = signal[: len(signal) // ACTIVITY_BLOCK * ACTIVITY_BLOCK].reshape(-1, ACTIVITY_BLOCK)
    loud = np.sqrt(np.mean(blocks**2, axis=1)) > rms
    if widen:
        loud = np.convolve(loud, np.ones(2 * widen + 1), mode="same") > 0
    mask = np.repeat(loud, ACTIVITY_BLOCK)
    return np.concatenate([mask, np.zeros(len(signal) - len(mask), bool)])


def record(
    delay_seconds: float = 0.12,
    echo_db: float = -6.0,
    *,
    gap_seconds: float = 0.5,
    speaker_drive: float = 1.0,
    seed: int = 7,
) -> Recording:
    """Simulate the room: the far end's echo ``delay_seconds`` late and ``echo_db``
    (relative to what is played) plus the near end, as the microphone hears it.
    ``speaker_drive`` above 1 makes the speaker saturate (``tanh(drive x) / drive``,
    a small laptop speaker played loud): an echo no linear filter fully models.

    Segments (each separated by ``gap_seconds`` of silence): far-end sentence 1
    alone; near-end sentence 1 alone; far-end sentence 2 with near-end sentence 2
    starting 1 s into it (double talk); far-end sentence 3 alone.
    """
    if not 0 <= delay_seconds <= 1.0:
        raise ValueError(f"delay_seconds must be within 0..1 s, got {delay_seconds}")
    delay = round(delay_seconds * SAMPLE_RATE)
    gap = np.zeros(round(gap_seconds * SAMPLE_RATE), np.float32)
    far1, far2, far3 = (espeak(s) for s in FAR_SENTENCES)
    near1, near2 = (flite(s) for s in NEAR_SENTENCES)
    lead = round(1.0 * SAMPLE_RATE)  # the near end starts talking 1 s into far sentence 2

    far_parts: list[np.ndarray] = []
    near_parts: list[np.ndarray] = []

    def add(far: np.ndarray | None, near: np.ndarray | None, near_at: int = 0) -> None:
        length = max(
            0 if far is None else len(far), 0 if near is None else near_at + len(near)
        ) + len(gap)
        f = np.zeros(length, np.float32)
        n = np.zeros(length, np.float32)
        if far is not None:
            f[: len(far)] = far
        if near is not None:
            n[near_at : near_at + len(near)] = near
        far_parts.append(f)
        near_parts.append(n)

    add(None, None)  # a little silence first, as when a session starts
    add(far1, None)
    add(None, near1)
    add(far2, near2, near_at=lead)
    add(far3, None)
    far = np.concatenate(far_parts)
    near = np.concatenate(near_parts)
    total = -(-(len(far) + delay) // FRAME_SAMPLES) * FRAME_SAMPLES  # room for the last echo
    far = np.pad(far, (0, total - len(far)))
    near = np.pad(near, (0, total - len(near)))
    sound = np.tanh(speaker_drive * far) / speaker_drive if speaker_drive > 1 else far
    echo = np.convolve(sound, impulse_response(delay, echo_db, seed))[:total].astype(np.float32)
    noise = np.random.default_rng(seed + 1).standard_normal(total).astype(np.float32) * NOISE_RMS
    mic = (echo + near + noise).astype(np.float32)

    # "Only" means the other signal is absent altogether, its quiet tails included.
    echo_active, near_active = above(echo, ACTIVE_RMS), above(near, ACTIVE_RMS)
    echo_present = above(echo, PRESENT_RMS, widen=1)
    near_present = above(near, PRESENT_RMS, widen=1)
    return Recording(
        far=far,
        near=near,
        echo=echo,
        mic=mic,
        echo_only=echo_active & ~near_present,
        near_only=near_active & ~echo_present,
        double_talk=echo_active & near_active,
        delay_samples=delay,
        echo_db=echo_db,
    )


def energy_db(signal: np.ndarray, mask: np.ndarray) -> float:
    """Mean power of ``signal`` where ``mask`` holds, in dB (full scale 1.0 = 0 dB)."""
    selected = signal[: len(mask)][mask[: len(signal)]].astype(np.float64)
    if selected.size == 0:
        raise ValueError("the mask selects no samples")
    return float(10 * np.log10(np.mean(selected**2) + 1e-20))


def erle_db(mic: np.ndarray, out: np.ndarray, mask: np.ndarray) -> float:
    """Echo return loss enhancement: how much weaker the canceller's output is than
    its input where only echo is present (``mask``), in dB. Higher is better."""
    return energy_db(mic, mask) - energy_db(out, mask)


def energy_change_db(reference: np.ndarray, out: np.ndarray, mask: np.ndarray) -> float:
    """Output energy relative to ``reference`` (the clean near end) over ``mask``, in
    dB: 0 means the near end passed unchanged, negative means it was suppressed."""
    return energy_db(out, mask) - energy_db(reference, mask)


def after(mask: np.ndarray, seconds: float) -> np.ndarray:
    """``mask`` with its first ``seconds`` cleared (time for a canceller to converge)."""
    cut = mask.copy()
    cut[: round(seconds * SAMPLE_RATE)] = False
    return cut


# --- the null sink: a real loopback -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoopbackRun:
    """One run through the null sink: what was played, captured and cancelled, frame-aligned
    (sample ``i`` of each belongs to the same pipeline step)."""

    played: np.ndarray  # the reference paired with each captured frame
    mic: np.ndarray  # what the monitor (the mic actor) captured
    out: np.ndarray  # the canceller's output
    underruns: int  # playback underruns (with the "handed" reference each one moves the delay)
    xruns: int  # PortAudio status flags on either stream (a device glitch may move the delay)
    resyncs: int  # times the playback tap re-fixed its alignment
    seconds_per_frame: list[float]  # wall time of each canceller call
    delays: list[float | None]  # the canceller's delay in use after each frame

    def delay_changes(self) -> list[float]:
        """Times (s from the start) at which the canceller changed its delay."""
        return [
            i * FRAME_SAMPLES / SAMPLE_RATE
            for i in range(1, len(self.delays))
            if self.delays[i] != self.delays[i - 1]
        ]


async def play_through_null_sink(
    far: np.ndarray,
    canceller: EchoCanceller,
    *,
    reference: str = "tap",
    withhold: range = range(0),
) -> LoopbackRun:
    """Play ``far`` with the speaker actor and capture the sink's monitor with the mic
    actor (the default devices: run inside the PulseAudio fixture), cancelling online.

    Paced like the inference actor: each captured frame releases the next frame to
    play. The reference paired with a captured frame is, with ``reference="tap"``,
    what the speaker played alongside it (:class:`~xswarm.audio.aec.PlaybackTap`),
    or with ``"handed"`` the frame handed to the speaker at that step (which an
    underrun shifts). At the steps in ``withhold`` nothing is handed over (a stalled
    model: the jitter buffer runs dry). Ends when ``far`` has been handed over; cap
    it with ``trio.fail_after``.
    """
    if reference not in ("tap", "handed"):
        raise ValueError(f"reference must be 'tap' or 'handed', got {reference!r}")
    import trio

    from xswarm.audio.aec import PlaybackTap, TappedJitterBuffer
    from xswarm.audio.devices import StreamStats, mic_actor, speaker_actor
    from xswarm.audio.frame import AudioFrame
    from xswarm.runtime import Overflow, Receiver, Sender, open_channel

    far = np.pad(far, (0, -len(far) % FRAME_SAMPLES)).astype(np.float32)
    frames = far.reshape(-1, FRAME_SAMPLES)
    mic_tx: Sender[AudioFrame]
    mic_rx: Receiver[AudioFrame]
    spk_tx: Sender[AudioFrame]
    spk_rx: Receiver[AudioFrame]
    mic_tx, mic_rx = open_channel("mic", 8, overflow=Overflow.DROP_OLDEST)
    spk_tx, spk_rx = open_channel("speaker", 8, overflow=Overflow.DROP_OLDEST)
    tap = PlaybackTap()
    buffer = TappedJitterBuffer(tap)
    mic_stats, speaker_stats = StreamStats(), StreamStats()
    captured: list[np.ndarray] = []
    played: list[np.ndarray] = []
    outs: list[np.ndarray] = []
    seconds: list[float] = []
    delays: list[float | None] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: speaker_actor(
                spk_rx, buffer=buffer, stats=speaker_stats, task_status=task_status
            )
        )
        await nursery.start(
            lambda task_status: mic_actor(mic_tx, stats=mic_stats, task_status=task_status)
        )
        async for frame in mic_rx:
            step = len(captured)
            if step >= len(frames):
                break
            handed = np.zeros(FRAME_SAMPLES, np.float32)
            if step not in withhold:
                handed = frames[step]
                spk_tx.send_nowait(AudioFrame(handed, step, time.monotonic()))
            tapped = reference == "tap"
            ref = tap.reference_for(frame.index, frame.t_capture) if tapped else handed
            captured.append(frame.pcm)
            played.append(ref)
            started = time.perf_counter()
            outs.append(canceller.process(frame.pcm, ref))
            seconds.append(time.perf_counter() - started)
            delays.append(canceller.stats.delay_seconds)
        nursery.cancel_scope.cancel()
    return LoopbackRun(
        played=np.concatenate(played),
        mic=np.concatenate(captured),
        out=np.concatenate(outs),
        underruns=buffer.stats().underruns,
        xruns=mic_stats.xruns + speaker_stats.xruns,
        resyncs=tap.resyncs,
        seconds_per_frame=seconds,
        delays=delays,
    )


def loopback_delay(
    played: np.ndarray, captured: np.ndarray, *, since: float = 0.0, max_delay: float = 1.0
) -> float:
    """The delay of ``played`` in ``captured`` from ``since`` (s) on, by plain
    cross-correlation over the whole stretch (an underrun moves the delay: measure
    after the last one)."""
    captured = captured.copy()
    captured[: round(since * SAMPLE_RATE)] = 0
    n = 1 << (len(played) + len(captured)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(captured, n) * np.conj(np.fft.rfft(played, n)), n)
    return int(np.argmax(corr[: round(max_delay * SAMPLE_RATE)])) / SAMPLE_RATE
