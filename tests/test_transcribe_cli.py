"""``xswarm transcribe`` as users run it: a subprocess, real files, pipes, bad inputs."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.cli_helpers import run_xswarm
from tests.speech import flite_speech, parse_srt, parse_vtt
from xswarm.transcribe import TranscribeOptions, transcribe_files

FORMATS = ("jsonl", "json", "txt", "srt", "vtt")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("cli-speech")
    return flite_speech("please open the window", directory / "window.wav")


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose XSWARM_HOME holds the generated tiny-random-stt (made once)."""
    home = tmp_path_factory.mktemp("tiny-home")
    env = {**os.environ, "XSWARM_HOME": str(home), "HF_HOME": str(home / "hf"),
           "HF_HUB_OFFLINE": "1"}
    from xswarm.models import resolve

    previous = os.environ.get("XSWARM_HOME")
    os.environ["XSWARM_HOME"] = str(home)
    try:
        resolve("tiny-random-stt")  # generates it
    finally:
        if previous is None:
            del os.environ["XSWARM_HOME"]
        else:
            os.environ["XSWARM_HOME"] = previous
    return env


def bad_inputs(directory: Path) -> dict[str, Path]:
    """Every kind of bad input the issue lists, written into ``directory``."""
    bad: dict[str, Path] = {"missing": directory / "missing.wav", "directory": directory / "dir"}
    bad["directory"].mkdir()
    bad["empty"] = directory / "empty.wav"
    bad["empty"].write_bytes(b"")
    bad["zero samples"] = directory / "zero.wav"
    sf.write(bad["zero samples"], np.zeros(0, np.float32), 16_000)
    good = directory / "good.wav"
    sf.write(good, np.zeros(16_000, np.float32), 16_000)
    bad["truncated header"] = directory / "truncated.wav"
    bad["truncated header"].write_bytes(good.read_bytes()[:30])
    bad["text"] = directory / "notes.wav"
    bad["text"].write_text("just some text, not audio\n" * 20)
    # a WAV header naming a codec libsndfile does not decode (format tag 0x1234)
    data = np.zeros(1600, np.int16).tobytes()
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 16_000, 32_000, 2, 16)
    bad["unsupported codec"] = directory / "codec.wav"
    bad["unsupported codec"].write_bytes(
        b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", len(data)) + data
    )
    nan = np.zeros(16_000, np.float32)
    nan[4000] = np.nan
    bad["nan"] = directory / "nan.wav"
    sf.write(bad["nan"], nan, 16_000, subtype="FLOAT")
    inf = np.zeros(16_000, np.float32)
    inf[9000] = np.inf
    bad["inf"] = directory / "inf.wav"
    sf.write(bad["inf"], inf, 16_000, subtype="FLOAT")
    return bad


def test_all_bad_inputs_in_one_call(speech, tmp_path: Path) -> None:
    bad = bad_inputs(tmp_path)
    paths = [str(p) for p in bad.values()]
    result = run_xswarm("transcribe", "--model", "sphinx-en", *paths[:5], str(speech.path),
                        *paths[5:], "--format", "txt")
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(bad)
    for path, line in zip(paths, errors, strict=True):  # one line each, naming the file
        assert line.startswith(f"xswarm: error: {path}:"), line
    assert "Traceback" not in result.stderr
    assert result.stdout == f"==> {speech.path} <==\n{speech.text}\n"


def test_default_model_falls_back_to_sphinx_with_one_note(speech) -> None:
    result = run_xswarm("transcribe", str(speech.path), str(speech.path))
    assert result.returncode == 0
    notes = result.stderr.strip().splitlines()
    assert len(notes) == 1 and "sphinx-en" in notes[0] and "xswarm models pull" in notes[0]
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == [speech.text] * 2


def test_stdin_and_closed_stdout(speech) -> None:
    data = speech.path.read_bytes()
    result = run_xswarm("transcribe", "-m", "sphinx-en", "-", "--format", "txt", input=data)
    assert (result.returncode, result.stdout) == (0, speech.text + "\n")
    # `| head -1` with several files: the reader goes away after the first line
    command = [sys.executable, "-m", "xswarm", "transcribe", "-m", "sphinx-en", "--words",
               *[str(speech.path)] * 3]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    assert json.loads(first)["type"] == "word"
    assert code == 0 and "Traceback" not in stderr and "error" not in stderr


def test_usage_errors() -> None:
    result = run_xswarm("transcribe", "a.wav", "b.wav", "--format", "srt", "-m", "sphinx-en")
    assert result.returncode == 2 and "--output-dir" in result.stderr
    result = run_xswarm("transcribe", "a.wav", "--format", "docx")
    assert result.returncode == 2 and "unknown format" in result.stderr
    result = run_xswarm("transcribe", "a.wav", "--model", "moshiko-mlx-q4")
    assert result.returncode == 2 and "not speech-to-text" in result.stderr


def parse(fmt: str, text: str, file: str) -> list[tuple[float, float, str]]:
    """(start, end, text) entries of one file's output in any format."""
    if fmt == "jsonl":
        return [(d["start"], d["end"], d["text"]) for d in map(json.loads, text.splitlines())
                if d["file"] == file]
    if fmt == "json":
        doc = json.loads(text)
        assert doc["file"] == file
        return [(s["start"], s["end"], s["text"]) for s in doc["segments"]]
    if fmt == "srt":
        return [(c.start, c.end, c.text) for c in parse_srt(text)]
    if fmt == "vtt":
        return [(c.start, c.end, c.text) for c in parse_vtt(text)]
    return [(0.0, 0.0, line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def tiny_engine(tiny_home):
    """tiny-random-stt loaded once in this process (batch 3), for the many-format runs."""
    from xswarm.stt.kyutai import load_kyutai_engine

    previous = os.environ.get("XSWARM_HOME")
    os.environ["XSWARM_HOME"] = tiny_home["XSWARM_HOME"]
    try:
        return load_kyutai_engine("tiny-random-stt", batch_size=3)
    finally:
        if previous is None:
            del os.environ["XSWARM_HOME"]
        else:
            os.environ["XSWARM_HOME"] = previous


def run_in_process(engine, paths: list[str], fmt: str, **options) -> str:
    out = io.StringIO()
    failures = transcribe_files(
        paths, engine, TranscribeOptions(format=fmt, **options), stdout=out,
        report=lambda e: pytest.fail(e.message),
    )
    assert failures == 0
    return out.getvalue()


def test_tiny_random_stt_every_format(speech, tiny_home, tiny_engine, tmp_path: Path) -> None:
    # short inputs: the tiny model costs ~20 ms a step whatever the audio says
    audio, rate = sf.read(speech.path, dtype="float32")
    short = tmp_path / "window.wav"
    sf.write(short, audio[rate : 2 * rate], rate)
    other = tmp_path / "other.flac"
    sf.write(other, audio[rate // 2 : 2 * rate], rate)
    inputs = [str(short), str(other)]
    durations = [1.0, 1.5]
    # the command line with the real model path, once
    result = run_xswarm("transcribe", "-m", "tiny-random-stt", *inputs, env=tiny_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == run_in_process(tiny_engine, inputs, "jsonl")
    words_by_format = {}
    for fmt in FORMATS:
        out = tmp_path / fmt
        run_in_process(tiny_engine, inputs, fmt, output_dir=out)
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [f"window.{fmt}", f"other.{fmt}"])
        for path, duration in zip(inputs, durations, strict=True):
            text = (out / f"{Path(path).stem}.{fmt}").read_text()
            entries = parse(fmt, text, path)
            if fmt in ("srt", "vtt"):  # the usual subtitle limits
                cues = parse_srt(text) if fmt == "srt" else parse_vtt(text)
                for cue in cues:
                    assert len(cue.lines) <= 2 and all(len(line) <= 42 for line in cue.lines)
                    assert cue.end - cue.start <= 7.0
            if fmt != "txt":
                starts = [start for start, _, _ in entries]
                assert starts == sorted(starts)
                assert all(0 <= s <= e <= duration + 1e-3 for s, e, _ in entries)
            words_by_format.setdefault(path, {})[fmt] = " ".join(t for _, _, t in entries).split()
    for path in inputs:
        per_format = words_by_format[path]
        assert per_format["jsonl"], "random weights still emit words"
        for fmt in FORMATS:
            assert per_format[fmt] == per_format["jsonl"], (path, fmt)


def test_tiny_random_stt_batch_equals_single_runs(speech, tiny_engine, tmp_path: Path) -> None:
    audio, rate = sf.read(speech.path, dtype="float32")
    paths = []
    for i in range(3):
        path = tmp_path / f"in{i}.wav"
        sf.write(path, audio[rate : rate + rate * (i + 2) // 4], rate)
        paths.append(str(path))
    assert tiny_engine.batch_size == 3
    batched = run_in_process(tiny_engine, paths, "jsonl", words=True)
    tiny_engine.batch_size = 1
    try:
        single = "".join(run_in_process(tiny_engine, [p], "jsonl", words=True) for p in paths)
    finally:
        tiny_engine.batch_size = 3
    assert batched == single and batched


def test_default_model_is_the_first_cached_kyutai_stt(speech, tiny_home, tmp_path: Path) -> None:
    """With stt-1b-en_fr-mlx in the Hugging Face cache, no --model uses it, with no note.

    The cached "stt-1b-en_fr-mlx" here is tiny-random-stt's files in the hub
    cache layout (its config.json names them), so the output must equal
    ``--model tiny-random-stt``'s.
    """
    import shutil

    from xswarm.models.resolve import generated_dir

    previous = os.environ.get("XSWARM_HOME")
    os.environ["XSWARM_HOME"] = tiny_home["XSWARM_HOME"]
    try:
        tiny = generated_dir("tiny-random-stt")
    finally:
        if previous is None:
            del os.environ["XSWARM_HOME"]
        else:
            os.environ["XSWARM_HOME"] = previous
    hub = tmp_path / "hf" / "hub" / "models--kyutai--stt-1b-en_fr-mlx"
    snapshot = hub / "snapshots" / "0123456789abcdef"
    shutil.copytree(tiny, snapshot)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("0123456789abcdef")
    env = {**tiny_home, "HF_HOME": str(tmp_path / "hf")}
    audio, rate = sf.read(speech.path, dtype="float32")
    short = tmp_path / "short.wav"
    sf.write(short, audio[rate : 2 * rate], rate)
    default = run_xswarm("transcribe", str(short), env=env)
    assert default.returncode == 0, default.stderr
    assert default.stderr == ""  # no fallback note
    chosen = run_xswarm("transcribe", "-m", "tiny-random-stt", str(short), env=env)
    assert default.stdout == chosen.stdout and default.stdout
