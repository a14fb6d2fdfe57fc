"""``xswarm talk`` as users run it: a subprocess with the real tiny-random model.

Headless file sessions (fast and real time), Ctrl-C and SIGTERM in the middle
of a session, and the bad inputs: each must end with a clear line on stderr,
the right exit code, no traceback, and complete output files.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.cli_helpers import NO_PORTAUDIO_DIR, run_xswarm
from xswarm.audio import FRAME_SAMPLES, SAMPLE_RATE

MODEL = "tiny-random"


def write_tone(path: Path, seconds: float, rate: int = SAMPLE_RATE) -> int:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    return len(t)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One XSWARM_HOME for the module, so tiny-random is generated once, not per test."""
    home = tmp_path_factory.mktemp("talk-home")
    environ = dict(os.environ)
    environ.update(XSWARM_HOME=str(home), HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="1")
    environ.pop("XSWARM_PERSONA", None)
    return environ


def test_headless_fast_json_session(tmp_path: Path, model_home: dict[str, str]) -> None:
    samples = write_tone(tmp_path / "in.wav", 3.0, rate=16_000)  # any rate: resampled to 24 kHz
    result = run_xswarm(
        "talk",
        "--model",
        MODEL,
        "--input",
        str(tmp_path / "in.wav"),
        "--output",
        str(tmp_path / "out.wav"),
        "--record",
        str(tmp_path / "rec.wav"),
        "--fast",
        "--json",
        "--seed",
        "7",
        env=model_home,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    expected = samples * SAMPLE_RATE // 16_000
    out = sf.info(tmp_path / "out.wav")
    assert out.samplerate == SAMPLE_RATE and out.channels == 1
    assert abs(out.frames - expected) < FRAME_SAMPLES
    rec = sf.info(tmp_path / "rec.wav")
    assert rec.channels == 2 and rec.frames == out.frames
    lines = json_lines(result.stdout)
    assert all("type" in line for line in lines)
    assert lines[0]["type"] == "status" and lines[0]["status"] == "ready"
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["reason"] == "end"
    assert summary["frames"] == out.frames // FRAME_SAMPLES
    assert summary["drops"] == 0 and summary["model"] == MODEL and summary["seed"] == 7
    words = [line for line in lines if line["type"] == "word"]
    for word in words:
        assert word["speaker"] == "assistant" and word["text"]
        assert 0 <= word["start"] <= word["end"] <= summary["duration"]
    # The default persona (JARVIS) greets first: its greeting is forced into the text stream.
    assert " ".join(w["text"] for w in words).startswith("Good evening. How may I")
    assert summary["persona"] == "jarvis"


def test_fast_without_output_needs_no_sound_device(
    tmp_path: Path, model_home: dict[str, str]
) -> None:
    write_tone(tmp_path / "in.wav", 1.0)
    env = dict(model_home)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(NO_PORTAUDIO_DIR), env.get("PYTHONPATH")) if p
    )
    result = run_xswarm("talk", "--model", MODEL, "-i", str(tmp_path / "in.wav"), "--fast", env=env)
    assert result.returncode == 0, result.stderr
    summary = json_lines(result.stdout)[-1]
    assert summary["type"] == "summary" and summary["frames"] == 13


def test_closed_stdout_ends_the_session_quietly(tmp_path: Path, model_home: dict[str, str]) -> None:
    write_tone(tmp_path / "in.wav", 30.0)  # far more than one line's worth
    script = (
        f"{shlex.quote(sys.executable)} -m xswarm talk --model {MODEL} -i {tmp_path}/in.wav "
        f"--fast --log {tmp_path}/log.jsonl 2>{tmp_path}/err | head -1; "
        "echo ${PIPESTATUS[0]}"
    )
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", script], env=model_home, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    lines = result.stdout.splitlines()
    assert json.loads(lines[0])["status"] == "ready"
    assert lines[1] == "0"  # xswarm's own exit code
    assert (tmp_path / "err").read_text() == ""
    summary = json_lines((tmp_path / "log.jsonl").read_text())[-1]
    assert summary["reason"] == "stdout_closed" and summary["frames"] < 375
    assert time.monotonic() - started < 60


def test_same_seed_same_session(tmp_path: Path, model_home: dict[str, str]) -> None:
    write_tone(tmp_path / "in.wav", 1.0)
    outputs = []
    for run in range(2):
        result = run_xswarm(
            "talk",
            "--model",
            MODEL,
            "--input",
            str(tmp_path / "in.wav"),
            "--output",
            str(tmp_path / f"out{run}.wav"),
            "--fast",
            "--seed",
            "3",
            env=model_home,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(sf.read(tmp_path / f"out{run}.wav")[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_output_to_stdout_is_a_wav_and_the_transcript_moves_to_stderr(
    tmp_path: Path, model_home: dict[str, str]
) -> None:
    samples = write_tone(tmp_path / "in.wav", 1.0)
    result = subprocess.run(
        [sys.executable, "-m", "xswarm", "talk", "--model", MODEL, "--input", "-", "--output", "-",
         "--fast"],
        env=model_home, input=(tmp_path / "in.wav").read_bytes(), capture_output=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    assert rate == SAMPLE_RATE and abs(len(audio) - samples) < FRAME_SAMPLES
    stderr = result.stderr.decode()
    assert '"type": "summary"' in stderr  # JSON lines: stderr is not a terminal here


def test_bad_log_path_fails_before_the_load_and_leaves_no_output(
    tmp_path: Path, model_home: dict[str, str]
) -> None:
    write_tone(tmp_path / "in.wav", 1.0)
    result = run_xswarm(
        "talk", "--model", MODEL, "--input", str(tmp_path / "in.wav"),
        "--output", str(tmp_path / "out.wav"), "--log", str(tmp_path / "no" / "log.jsonl"),
        env=model_home,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr == f"xswarm: error: --log {tmp_path}/no/log.jsonl: cannot write "
        "(No such file or directory); check the path\n"
    )
    assert not (tmp_path / "out.wav").exists()


def _start_talk(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "xswarm", "talk", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_ready(proc: subprocess.Popen[bytes], timeout: float = 90) -> list[bytes]:
    """Read stdout lines until the ready status line (the session runs from then on)."""
    assert proc.stdout is not None
    seen: list[bytes] = []
    found = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if b'"ready"' in line:
                found.set()

    threading.Thread(target=reader, daemon=True).start()
    assert found.wait(timeout), (
        f"no ready line; stderr: {proc.stderr.read() if proc.stderr else ''}"
    )
    return seen


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_session_exits_fast_with_complete_files(
    tmp_path: Path, model_home: dict[str, str], signum: int, code: int
) -> None:
    write_tone(tmp_path / "in.wav", 30.0)  # real time: far longer than the test waits
    proc = _start_talk(
        [
            "--model",
            MODEL,
            "--input",
            str(tmp_path / "in.wav"),
            "--output",
            str(tmp_path / "out.wav"),
            "--record",
            str(tmp_path / "rec.wav"),
            "--log",
            str(tmp_path / "log.jsonl"),
            "--trace",
            str(tmp_path / "trace.json"),
            "--json",
        ],
        model_home,
    )
    try:
        seen = _wait_for_ready(proc)
        time.sleep(1.5)
        sent = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode == code, stderr
    assert elapsed < 1.0, f"took {elapsed:.2f} s to stop"
    assert "Traceback" not in stderr
    assert f"interrupted by {signal.Signals(signum).name}" in stderr
    time.sleep(0.1)  # the reader thread takes the last lines
    lines = json_lines(b"".join(seen).decode())
    assert lines[-1]["type"] == "summary" and lines[-1]["reason"] == "interrupted"
    frames = lines[-1]["frames"]
    assert frames >= 10  # ~1.5 s of real-time frames went through
    out = sf.info(tmp_path / "out.wav")
    rec = sf.info(tmp_path / "rec.wav")
    assert out.frames >= frames * FRAME_SAMPLES - FRAME_SAMPLES and rec.channels == 2
    assert sf.read(tmp_path / "rec.wav")[0].shape[0] == rec.frames  # header matches data
    json.loads((tmp_path / "trace.json").read_text())
    assert json_lines((tmp_path / "log.jsonl").read_text())[-1]["type"] == "summary"


def test_missing_model_fails_before_any_device(tmp_path: Path, model_home: dict[str, str]) -> None:
    # PortAudio hidden: had talk touched a device first, the error would be about PortAudio.
    env = dict(model_home)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(NO_PORTAUDIO_DIR), env.get("PYTHONPATH")) if p
    )
    result = run_xswarm("talk", "--model", "moshiko-mlx-q8", env=env)
    assert result.returncode == 1
    assert "xswarm models pull moshiko-mlx-q8" in result.stderr
    assert "PortAudio" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_input_device_lists_devices_and_suggests_a_file(model_home: dict[str, str]) -> None:
    result = run_xswarm(
        "talk", "--model", MODEL, "--input-device", "no-such-mic-xyz", env=model_home
    )
    assert result.returncode == 2, result.stderr
    assert "no input device matches 'no-such-mic-xyz'" in result.stderr
    assert "--input FILE" in result.stderr and "Traceback" not in result.stderr


def test_no_sound_device_at_all_suggests_files(tmp_path: Path, model_home: dict[str, str]) -> None:
    # No sound card and no PulseAudio server: PortAudio lists no device.
    env = {
        **model_home,
        "PULSE_SERVER": "unix:/nonexistent/pulse",
        "XDG_RUNTIME_DIR": "/nonexistent",
    }
    result = run_xswarm("talk", "--model", MODEL, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("xswarm: error: no input device found")
    assert "--input FILE" in result.stderr
    write_tone(tmp_path / "in.wav", 0.5)
    result = run_xswarm("talk", "--model", MODEL, "--input", str(tmp_path / "in.wav"), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("xswarm: error: no output device found")
    assert "--output FILE" in result.stderr


def test_no_portaudio_names_the_fix(model_home: dict[str, str]) -> None:
    env = dict(model_home)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(NO_PORTAUDIO_DIR), env.get("PYTHONPATH")) if p
    )
    result = run_xswarm("talk", "--model", MODEL, env=env)
    assert result.returncode == 1
    assert "PortAudio is missing" in result.stderr and "--input FILE" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--persona", "nobody-here"], "nobody-here"),
        (["--input", "/no/such/file.wav"], "/no/such/file.wav: no such file"),
        (["--fast"], "--fast needs --input FILE"),
        (["--duration", "-3", "--input", "x.wav"], "--duration must be more than 0"),
        (["--model", "/no/such/model-dir"], "/no/such/model-dir"),
        (["--model", "stt-1b-en_fr-mlx-nope"], "stt-1b-en_fr-mlx-nope"),
        (["--seed", "-1"], "--seed must be between 0 and 2**64 - 1, got -1"),
        (["--model", "tiny-random-stt"], "'tiny-random-stt' is not a Moshi model"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str], message: str, model_home: dict[str, str]
) -> None:
    result = run_xswarm("talk", *args, env=model_home)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("xswarm: error: ")
