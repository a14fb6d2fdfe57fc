"""``xswarm talk`` live, on real PortAudio streams against the PulseAudio null sink.

The mic is the null sink's monitor and the speaker the null sink itself, so
the callbacks, the threads and the jitter buffer are the real ones. A tone
played into the sink by ``pacat`` is what the "user" says: it must arrive in
the left channel of ``--record``. The session runs 30 s at real time with the
tiny-random model and must end on SIGINT with zero underruns, zero drops,
exit 130, within a second.

A device that dies mid-session is a second, private PulseAudio daemon that
the test stops: the session must end with a clear error (exit 1) and the
transcript so far flushed, not hang.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from xswarm.audio import FRAME_SAMPLES, SAMPLE_RATE

SCRIPT = Path(__file__).resolve().parent / "pulse-null-sink.sh"
SESSION_SECONDS = 30.0
TONE_HZ = 440.0


@pytest.fixture(scope="module")
def model_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("talk-live-home")
    env = dict(os.environ)
    env.update(XSWARM_HOME=str(home), HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="1")
    env.pop("XSWARM_PERSONA", None)
    # Generate tiny-random before any timing starts.
    subprocess.run(
        [sys.executable, "-m", "xswarm", "models", "path", "tiny-random"],
        env=env,
        capture_output=True,
        timeout=300,
        check=True,
    )
    return env


class Lines:
    """Collects a subprocess's stdout lines on a thread; waits for one to appear."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._event = threading.Event()
        self._want = ""
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if self._want and self._want in line:
                self._event.set()

    def wait_for(self, text: str, timeout: float) -> None:
        self._want = text
        if any(text in line for line in self.lines):
            return
        assert self._event.wait(timeout), f"{text!r} never came; got {self.lines[-3:]}"

    def json(self) -> list[dict[str, Any]]:
        self._thread.join(timeout=5)
        return [json.loads(line) for line in self.lines if line.strip()]


def play_tone(env: dict[str, str], seconds: float) -> subprocess.Popen[bytes]:
    """Play a 440 Hz tone into the null sink (the "user" speaking into the mic)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<f4").tobytes()
    proc = subprocess.Popen(
        [
            "pacat",
            "--playback",
            "--device=xs",
            "--raw",
            "--format=float32le",
            f"--rate={SAMPLE_RATE}",
            "--channels=1",
            "--latency-msec=40",
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    threading.Thread(target=_feed, args=(proc, tone), daemon=True).start()
    return proc


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except OSError:
        pass


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples - samples.mean()))
    freqs = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    return float(freqs[np.argmax(np.where(freqs > 50, spectrum, 0))])


@pytest.mark.pulse
def test_live_session_30_s_real_time_no_underruns_no_drops(
    tmp_path: Path, model_env: dict[str, str]
) -> None:
    env = {**model_env, **{k: os.environ[k] for k in ("XDG_RUNTIME_DIR", "PULSE_SERVER")}}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xswarm",
            "talk",
            "--model",
            "tiny-random",
            "--json",
            "--seed",
            "5",
            "--record",
            str(tmp_path / "rec.wav"),
            "--log",
            str(tmp_path / "log.jsonl"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    tone = None
    try:
        lines = Lines(proc)
        lines.wait_for('"ready"', timeout=60)
        started = time.monotonic()
        time.sleep(2.0)
        tone = play_tone(env, 4.0)
        time.sleep(SESSION_SECONDS - (time.monotonic() - started))
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        stop_seconds = time.monotonic() - sent
    finally:
        for p in (proc, tone):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode == 130, stderr
    assert stop_seconds < 1.0, f"took {stop_seconds:.2f} s to stop"
    assert "Traceback" not in stderr

    summary = lines.json()[-1]
    assert summary["type"] == "summary" and summary["reason"] == "interrupted"
    expected = SESSION_SECONDS / 0.08
    assert 0.9 * expected <= summary["frames"] <= 1.05 * expected  # real time: 12.5 frames/s
    assert summary["underruns"] == 0, summary
    assert summary["drops"] == 0, summary
    assert summary["latency_ms_p50"] < 80  # the model steps as soon as a frame arrives

    record, rate = sf.read(tmp_path / "rec.wav", dtype="float32")
    assert rate == SAMPLE_RATE and record.shape == (summary["frames"] * FRAME_SAMPLES, 2)
    user = record[:, 0].reshape(-1, FRAME_SAMPLES)
    # Frames where the tone was heard (rms 0.35; the assistant alone stays well below 0.25).
    loud = user[np.sqrt(np.mean(user**2, axis=1)) > 0.25]
    assert len(loud) * 0.08 > 2.0, "the tone played into the sink never reached the mic"
    assert abs(dominant_hz(loud.reshape(-1)) - TONE_HZ) < TONE_HZ * 0.02
    frames = [e for e in map(json.loads, (tmp_path / "log.jsonl").open()) if e["type"] == "frame"]
    assert max(e["mic_db"] for e in frames) > -20  # the status line's mic meter saw it


@pytest.mark.pulse
def test_device_lost_mid_session_ends_cleanly_with_exit_1(
    tmp_path: Path, model_env: dict[str, str]
) -> None:
    runtime = tempfile.mkdtemp(prefix="xswarm-lost-")
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", runtime],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=True,
    )
    exports = started.stdout.strip().splitlines()[-1].removeprefix("export ").split()
    env = {**model_env, **dict(item.split("=", 1) for item in exports)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xswarm",
            "talk",
            "--model",
            "tiny-random",
            "--json",
            "--record",
            str(tmp_path / "rec.wav"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        lines = Lines(proc)
        lines.wait_for('"word"', timeout=60)  # the greeting is being said
        subprocess.run(
            ["bash", str(SCRIPT), "stop", runtime], capture_output=True, timeout=30, check=False
        )
        proc.wait(timeout=15)  # stall detection (2 s) plus a clean shutdown
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(
            ["bash", str(SCRIPT), "stop", runtime], capture_output=True, timeout=30, check=False
        )
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    error = [line for line in stderr.splitlines() if line.startswith("xswarm: error:")]
    assert len(error) == 1 and "device" in error[0], stderr
    events = lines.json()
    assert any(e["type"] == "word" for e in events)
    assert events[-1]["type"] == "summary" and events[-1]["reason"] == "failed"
    info = sf.info(tmp_path / "rec.wav")
    assert info.channels == 2 and info.frames == events[-1]["frames"] * FRAME_SAMPLES


@pytest.mark.pulse
def test_devices_by_name_and_index_and_duration_ends_cleanly(model_env: dict[str, str]) -> None:
    env = {**model_env, **{k: os.environ[k] for k in ("XDG_RUNTIME_DIR", "PULSE_SERVER")}}
    listed = json.loads(
        subprocess.run([sys.executable, "-m", "xswarm", "devices", "--json"], env=env,
                       capture_output=True, timeout=60, check=True).stdout
    )  # fmt: skip
    output_index = next(d["index"] for d in listed if d["name"] == "default")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "xswarm", "talk", "--model", "tiny-random", "--json",
         "--input-device", "puls", "--output-device", str(output_index), "--duration", "2"],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["reason"] == "duration" and summary["frames"] == 25
    assert summary["underruns"] == 0 and summary["drops"] == 0
    assert elapsed < 15  # 2 s of talk, the load, and the playback drained: no hang at the end
