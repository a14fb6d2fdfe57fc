"""The talk session's actor graph, driven in-process with small fake engines.

The real engine and model are exercised end to end in tests/test_talk_cli.py;
here a scripted engine makes every outcome exact: which words, which frames,
how slow a step is, when a device fails.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import trio

from tests.fake_engine import FakeStep, thread_worker
from xswarm.audio import FRAME_SAMPLES, SAMPLE_RATE
from xswarm.audio.frame import AudioFrame
from xswarm.errors import AudioError, ModelError, UsageError
from xswarm.log import AssistantWords
from xswarm.status import (
    HIDE_CURSOR,
    SHOW_CURSOR,
    LiveDisplay,
    StatusSnapshot,
    format_progress,
    format_status,
)
from xswarm.talk import TalkConfig, TalkIO, TalkParts, run_talk

# Script of the fake engine: step number -> (token id, piece). Everything else is padding.
SCRIPT = {4: (10, " Hello"), 5: (11, " wor"), 6: (12, "ld."), 11: (13, " Good"), 12: (14, " bye")}
PAD = 3


class FakeEngine:
    """Answers each frame with half of it, and says SCRIPT's words; optionally slow."""

    seed = 1234

    def __init__(self, step_seconds: float = 0.0) -> None:
        self.steps = 0
        self.step_seconds = step_seconds
        self.threads: set[int] = set()

    def step(self, pcm: np.ndarray) -> FakeStep:
        assert pcm.shape == (FRAME_SAMPLES,) and pcm.dtype == np.float32
        self.threads.add(threading.get_ident())
        if self.step_seconds:
            time.sleep(self.step_seconds)
        token, text = SCRIPT.get(self.steps, (PAD, None))
        self.steps += 1
        return FakeStep(token, text, pcm * 0.5, self.step_seconds)


def write_noise(path: Path, seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    samples = np.random.default_rng(0).normal(0, 0.1, int(seconds * rate)).astype(np.float32)
    sf.write(path, samples, rate, subtype="FLOAT")
    return samples


def make_io(*, tty: bool = False) -> tuple[TalkIO, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return TalkIO(out, err, stdout_tty=tty, stderr_tty=tty, color=False), out, err


def parts(engine: FakeEngine, **kw: Any) -> TalkParts:
    return TalkParts(
        engine_factory=lambda progress: engine,
        model_name="fake",
        worker_factory=thread_worker,
        handle_signals=False,
        **kw,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_headless_fast_writes_output_record_log_trace_and_json(tmp_path: Path) -> None:
    source = write_noise(tmp_path / "in.wav", 1.5)
    config = TalkConfig(
        input_path=str(tmp_path / "in.wav"),
        output_path=str(tmp_path / "out.wav"),
        record_path=str(tmp_path / "rec.wav"),
        log_path=tmp_path / "log.jsonl",
        trace_path=tmp_path / "trace.json",
        fast=True,
    )
    talk_io, out, _ = make_io()
    engine = FakeEngine()
    with trio.fail_after(20):
        summary = await run_talk(config, talk_io, parts(engine))

    frames = -(-len(source) // FRAME_SAMPLES)  # the last frame is padded
    assert engine.steps == frames == summary["frames"]
    output, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    assert rate == SAMPLE_RATE and len(output) == frames * FRAME_SAMPLES
    assert abs(len(output) - len(source)) < FRAME_SAMPLES
    # The fake answers each frame with half of it, in step: the output is the input halved.
    np.testing.assert_allclose(output[: len(source)], source * 0.5, atol=1e-4)

    record, _ = sf.read(tmp_path / "rec.wav", dtype="float32")
    assert record.shape == (frames * FRAME_SAMPLES, 2)
    np.testing.assert_allclose(record[: len(source), 0], source, atol=1e-4)
    np.testing.assert_allclose(record[: len(source), 1], source * 0.5, atol=1e-4)

    lines = json_lines(out.getvalue())
    assert lines[0]["type"] == "status" and lines[0]["status"] == "ready"
    words = [line for line in lines if line["type"] == "word"]
    assert [w["text"] for w in words] == ["Hello", "world.", "Good", "bye"]
    assert all(w["speaker"] == "assistant" for w in words)
    assert words[0]["start"] == pytest.approx(4 * 0.08)
    assert all(a["end"] <= b["start"] + 1e-9 for a, b in itertools.pairwise(words))
    assert lines[-1]["type"] == "summary" and lines[-1] == summary
    assert summary["reason"] == "end" and summary["drops"] == 0 and summary["words"] == 4
    assert summary["step_ms_p50"] is not None
    assert summary["latency_ms_p99"] is None  # --fast: frames wait for the model by design

    log = json_lines((tmp_path / "log.jsonl").read_text())
    assert [e["index"] for e in log if e["type"] == "frame"] == list(range(frames))
    assert log[-1]["type"] == "summary"
    trace = json.loads((tmp_path / "trace.json").read_text())
    steps = [e for e in trace["traceEvents"] if e.get("name") == "step"]
    assert [e["args"]["frame"] for e in steps] == list(range(frames))
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["tid"] == 2]
    assert spans[0]["name"] == "load" and spans[0]["ts"] <= spans[1]["ts"]  # load, then steps
    tracks = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert tracks == {"mic", "inference", "playback", "logger"}
    # Complete spans on one track must nest or follow each other (viewers draw them as a
    # stack); waits, which overlap with --fast, are async begin/end pairs per frame.
    for tid in (2, 3, 4):
        ends: list[float] = []
        for start, end in sorted(
            (e["ts"], e["ts"] + e["dur"]) for e in trace["traceEvents"]
            if e["ph"] == "X" and e["tid"] == tid
        ):  # fmt: skip
            while ends and ends[-1] <= start:
                ends.pop()
            assert not ends or end <= ends[-1] + 0.2, f"overlapping spans on track {tid}"
            ends.append(end)
    waits = [e for e in trace["traceEvents"] if e["name"] == "wait"]
    assert [e["ph"] for e in waits[:2]] == ["b", "e"] and len(waits) == 2 * frames


async def test_duration_stops_the_source_after_that_many_frames(tmp_path: Path) -> None:
    write_noise(tmp_path / "in.wav", 3.0)
    config = TalkConfig(
        input_path=str(tmp_path / "in.wav"),
        output_path=str(tmp_path / "out.wav"),
        fast=True,
        duration=0.8,
    )
    talk_io, _, _ = make_io()
    with trio.fail_after(20):
        summary = await run_talk(config, talk_io, parts(FakeEngine()))
    assert summary["frames"] == 10 and summary["reason"] == "duration"
    assert sf.info(tmp_path / "out.wav").frames == 10 * FRAME_SAMPLES


async def test_slow_engine_drops_frames_keeps_timing_and_warns_once(tmp_path: Path) -> None:
    # 2 s of input in real time against a 250 ms step: about 3 of every 4 frames must drop.
    source = write_noise(tmp_path / "in.wav", 2.0)
    config = TalkConfig(
        input_path=str(tmp_path / "in.wav"),
        output_path=str(tmp_path / "out.wav"),
        log_path=tmp_path / "log.jsonl",
    )
    talk_io, out, err = make_io()
    engine = FakeEngine(step_seconds=0.25)
    with trio.fail_after(30):
        summary = await run_talk(config, talk_io, parts(engine))

    assert summary["drops"] > 0
    assert summary["frames"] == engine.steps < len(source) // FRAME_SAMPLES
    assert summary["latency_ms_p50"] >= 250  # real time: the step's 250 ms at least
    # Dropped frames become silence, so the output still lasts as long as the input.
    assert abs(sf.info(tmp_path / "out.wav").frames - len(source)) < FRAME_SAMPLES
    warnings = [line for line in json_lines(out.getvalue()) if line.get("status") == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["step_ms"] == pytest.approx(250, rel=0.2)
    assert re.search(r"slower than real time: a step takes 2\d\d ms", warnings[0]["message"])
    assert "quantised model" in warnings[0]["message"]
    assert err.getvalue().count("xswarm: warning: inference is slower than real time") == 1
    # Three times too slow is named after three steps, not after a second's worth of them.
    log = [(e["type"], e.get("status")) for e in json_lines((tmp_path / "log.jsonl").read_text())]
    # (written while handling the third step, before that step's own frame record)
    assert log.index(("status", "warning")) == log.index(("status", "ready")) + 3


async def test_fast_slow_engine_neither_drops_nor_warns(tmp_path: Path) -> None:
    write_noise(tmp_path / "in.wav", 1.2)
    config = TalkConfig(
        input_path=str(tmp_path / "in.wav"), output_path=str(tmp_path / "out.wav"), fast=True
    )
    talk_io, _, _ = make_io()
    with trio.fail_after(30):
        summary = await run_talk(config, talk_io, parts(FakeEngine(step_seconds=0.09)))
    assert summary["drops"] == 0 and summary["frames"] == 15 and summary["warnings"] == 0


async def test_device_failing_mid_session_flushes_transcript_and_raises(tmp_path: Path) -> None:
    frames_seen = 0

    async def failing_speaker(frames: Any) -> None:
        nonlocal frames_seen
        with frames:
            async for _ in frames:
                frames_seen += 1
                if frames_seen == 9:  # after "Hello world." was said (steps 4-6)
                    raise AudioError("output device 'pulse' stopped: device unplugged")

    write_noise(tmp_path / "in.wav", 3.0)
    config = TalkConfig(input_path=str(tmp_path / "in.wav"), fast=True)
    talk_io, out, _ = make_io()
    with trio.fail_after(20), pytest.raises(AudioError, match="device unplugged"):
        await run_talk(config, talk_io, parts(FakeEngine(), sink_actor=failing_speaker))
    lines = json_lines(out.getvalue())
    assert [w["text"] for w in lines if w["type"] == "word"][:2] == ["Hello", "world."]
    assert lines[-1]["type"] == "summary" and lines[-1]["reason"] == "failed"


async def test_model_error_during_load_opens_no_device(tmp_path: Path) -> None:
    opened: list[str] = []

    async def mic(frames: Any) -> None:
        opened.append("mic")

    async def speaker(frames: Any) -> None:
        opened.append("speaker")

    def broken(progress: Any) -> Any:
        raise ModelError("model.q8.safetensors: truncated file; run xswarm models pull NAME")

    talk_io, _, _ = make_io()
    p = TalkParts(
        engine_factory=broken,
        model_name="fake",
        worker_factory=thread_worker,
        handle_signals=False,
        source_actor=mic,
        sink_actor=speaker,
    )
    with trio.fail_after(10), pytest.raises(ModelError, match="truncated file"):
        await run_talk(TalkConfig(), talk_io, p)
    assert opened == []


async def test_ctrl_c_during_a_long_load_stops_within_a_second(tmp_path: Path) -> None:
    from xswarm.errors import Interrupted
    from xswarm.inference.worker import open_mlx_worker

    reports: list[int] = []

    def slow_load(progress: Callable[[int, int], None]) -> FakeEngine:
        for done in range(100):  # a 10 s load, reporting progress every 0.1 s
            progress(done, 100)
            reports.append(done)
            time.sleep(0.1)
        return FakeEngine()

    write_noise(tmp_path / "in.wav", 1.0)
    config = TalkConfig(input_path=str(tmp_path / "in.wav"), output_path=str(tmp_path / "o.wav"))
    talk_io, out, err = make_io(tty=False)
    talk_io.stderr_tty = True  # the load bar is drawn
    p = TalkParts(engine_factory=slow_load, model_name="big", worker_factory=open_mlx_worker)
    before = set(threading.enumerate())

    async def interrupt() -> None:
        await trio.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(interrupt)
            started = time.monotonic()
            with pytest.raises(Interrupted):
                await run_talk(config, talk_io, p)
            elapsed = time.monotonic() - started
    assert 0.5 < elapsed < 1.0
    assert len(reports) < 10  # the load stopped, not just abandoned
    assert set(threading.enumerate()) <= before  # the MLX thread is gone
    assert not (tmp_path / "o.wav").exists()  # never ready: no empty output left behind
    assert "loading big" in err.getvalue() and "%" in err.getvalue()
    assert json_lines(out.getvalue())[-1]["reason"] == "interrupted"


async def test_pretty_transcript_on_a_terminal(tmp_path: Path) -> None:
    write_noise(tmp_path / "in.wav", 1.5)
    config = TalkConfig(
        input_path=str(tmp_path / "in.wav"), output_path=str(tmp_path / "o.wav"), fast=True
    )
    out, err = io.StringIO(), io.StringIO()
    talk_io = TalkIO(out, err, stdout_tty=True, stderr_tty=False, color=False)
    with trio.fail_after(20):
        await run_talk(config, talk_io, parts(FakeEngine()))
    assert out.getvalue() == "JARVIS: Hello world.\nJARVIS: Good bye\n"  # the default persona
    assert "ready: talking with fake" in err.getvalue()
    assert re.search(r"talked 0:01: 19 frames, 4 words, drops 0, underruns 0\n", err.getvalue())


async def test_persona_names_the_speaker_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    write_noise(tmp_path / "in.wav", 1.0)
    config = TalkConfig(
        persona="glados",
        input_path=str(tmp_path / "in.wav"),
        fast=True,
        output_path=str(tmp_path / "o.wav"),
    )
    out, err = io.StringIO(), io.StringIO()
    talk_io = TalkIO(out, err, stdout_tty=True, stderr_tty=False, color=True)
    with trio.fail_after(20):
        summary = await run_talk(config, talk_io, parts(FakeEngine()))
    assert summary["persona"] == "glados"
    assert out.getvalue().startswith("\x1b[1;93mGLaDOS:\x1b[0m Hello world.\n")  # bright_yellow
    talk_io, _, _ = make_io()
    with pytest.raises(UsageError, match='unknown persona "nobody-at-all"'):
        await run_talk(TalkConfig(persona="nobody-at-all"), talk_io, parts(FakeEngine()))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TalkConfig(fast=True), "--fast needs --input FILE"),
        (TalkConfig(duration=0), "--duration must be more than 0"),
        (TalkConfig(input_path="a.wav", input_device="1"), "pick one"),
        (TalkConfig(output_path="-", json=True), "cannot go there too"),
    ],
)
def test_contradicting_options_are_usage_errors(config: TalkConfig, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        config.check()


# -- the terminal display --------------------------------------------------------------------


@pytest.mark.parametrize("width", [40, 80, 120, 200])
def test_status_line_never_wider_than_the_terminal(width: int) -> None:
    snap = StatusSnapshot(
        mic_db=-12, assistant_db=-60, step_ms=14.2, drops=3, underruns=2, elapsed=75.0
    )
    for color in (False, True):
        line = format_status(snap, width, color=color)
        visible = re.sub(r"\x1b\[[0-9;]*m", "", line)
        assert len(visible) <= width - 1
        assert ("\x1b[" in line) is color
    wide = format_status(snap, 120, color=False)
    assert wide.startswith("mic ") and "drops 3" in wide and "underruns 2" in wide
    assert wide.endswith("1:15") and "step  14 ms" in wide


def test_progress_bar_shows_fraction_and_size() -> None:
    line = format_progress("loading tiny", 5_000_000, 20_000_000, 80, color=False)
    assert "25%" in line and "5.0/20.0 MB" in line and len(line) <= 79


def test_live_display_keeps_status_below_transcript_and_restores_cursor() -> None:
    out, err = io.StringIO(), io.StringIO()
    display = LiveDisplay(out, err, show_live=True, stdout_tty=True, width=80)
    display.set_status("STATUS 1")
    display.set_partial("moshi: Hello")
    display.set_status("STATUS 2")
    display.commit_partial()
    display.print_err_line("xswarm: warning: slow")
    display.close()
    display.close()  # idempotent
    assert err.getvalue().startswith(HIDE_CURSOR)
    assert err.getvalue().endswith(SHOW_CURSOR)
    assert err.getvalue().count(SHOW_CURSOR) == 1
    assert out.getvalue().count("moshi: Hello\n") >= 1


def test_assistant_words_skip_dropped_steps_as_silence() -> None:
    words = AssistantWords()
    got = []
    for index, token, piece in [(0, 3, None), (1, 10, " Hi"), (5, 11, " there"), (6, 3, None)]:
        got += words.push(index, token, piece)
    got += words.flush()
    assert [(w.text, round(w.start, 2)) for w in got] == [("Hi", 0.08), ("there", 0.4)]


async def test_audio_frames_keep_capture_time_for_latency(tmp_path: Path) -> None:
    captured: list[AudioFrame] = []

    async def sink(frames: Any) -> None:
        with frames:
            async for frame in frames:
                captured.append(frame)

    write_noise(tmp_path / "in.wav", 0.4)
    talk_io, _, _ = make_io()
    config = TalkConfig(input_path=str(tmp_path / "in.wav"), fast=True)
    with trio.fail_after(10):
        await run_talk(config, talk_io, parts(FakeEngine(), sink_actor=sink))
    assert [f.index for f in captured] == [0, 1, 2, 3, 4]
    assert all(f.t_capture <= time.monotonic() for f in captured)


ALSA_PROBE = """
import ctypes, ctypes.util, sys
if sys.argv[1] == "mute":
    from xswarm.talk import mute_alsa_messages
    mute_alsa_messages()
lib = ctypes.CDLL(ctypes.util.find_library("asound"))
pcm = ctypes.c_void_p()
print(lib.snd_pcm_open(ctypes.byref(pcm), b"no_such_pcm_xyz", 0, 0))
"""


@pytest.mark.parametrize("mode", ["loud", "mute"])
def test_alsa_notices_are_muted_while_the_status_line_is_live(mode: str) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", ALSA_PROBE, mode], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "-2"  # ENOENT: the PCM does not exist either way
    assert ("Unknown PCM no_such_pcm_xyz" in result.stderr) is (mode == "loud")


def test_pretty_lines_never_wider_than_the_terminal() -> None:
    from xswarm.log import FrameReport, LogOptions, SessionOutput

    out, err = io.StringIO(), io.StringIO()
    display = LiveDisplay(out, err, show_live=True, stdout_tty=True, width=40)
    log = SessionOutput(LogOptions(json=False, live=True), display, err, AssistantWords())
    pieces = [
        " " + "x" * 100,
        " short",
        " words",
        " that",
        " fill",
        " more",
        " than",
        " a",
        " line",
    ]
    for index, piece in enumerate([*pieces, None, None, None]):
        token = 3 if piece is None else 10 + index
        log.handle(FrameReport(index, 0.0, 0.0, 0.01, 0.01, 0.1, 0.1, 0.01, token, piece))
    log.finish("end")
    lines = out.getvalue().splitlines()
    assert lines[0] == "moshi: " + "x" * 31 + "…"  # one word wider than the terminal, cut
    assert all(len(line) <= 39 for line in lines), lines
    assert " ".join(line.removeprefix("moshi: ") for line in lines[1:]) == (
        "short words that fill more than a line"
    )
