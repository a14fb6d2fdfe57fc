"""The cascade's own logic with exact stand-ins for the models (tests/cascade_fakes.py).

The LLM is the real HTTP test server (tests/llm_server.py) and the session is
the real talk session (run_talk); only STT and TTS are scripted, so every
word's frame, the barge-in's frame and the turn timings can be checked exactly.
The same paths with the real models are in tests/test_cascade.py.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import trio

from tests.cascade_fakes import TTS_LEVEL, FakeStt, FakeTts
from tests.llm_server import LlmServer, Script
from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from xswarm.cascade import (
    APOLOGY,
    BARGE_IN_FRAMES,
    CascadeEngine,
    TurnDetector,
)
from xswarm.errors import UsageError
from xswarm.history import read_sessions
from xswarm.inference.worker import open_mlx_worker
from xswarm.talk import TalkConfig, TalkIO, TalkParts, run_talk

PERSONA = """
name = "tutor"
display_name = "Tutor"
description = "test persona"
color = "green"
greeting = ""
system_prompt = "You are Tutor, who answers in riddles."
mode = "cascade"

[voice]
moshi = "tiny-random"
"""


@pytest.fixture
def tutor(isolated_home: Path) -> str:
    from xswarm.personas import user_dir

    user_dir().mkdir(parents=True, exist_ok=True)
    (user_dir() / "tutor.toml").write_text(PERSONA)
    return "tutor"


def speech_file(path: Path, spans: list[tuple[float, float]], seconds: float) -> None:
    """A file that is loud (a 200 Hz tone, like a voice to an energy detector) in ``spans``."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = np.zeros_like(t, dtype=np.float32)
    for start, end in spans:
        inside = (t >= start) & (t < end)
        audio[inside] = 0.3 * np.sin(2 * np.pi * 200 * t[inside])
    sf.write(path, audio, SAMPLE_RATE, subtype="FLOAT")


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def run(
    tmp_path: Path,
    server: LlmServer,
    *,
    words: list[str],
    persona: str = "tutor",
    tts: FakeTts | None = None,
    stt: FakeStt | None = None,
    **config: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]], str, FakeTts]:
    tts = tts or FakeTts()
    stt = stt or FakeStt(words)
    cfg = TalkConfig(
        persona=persona,
        mode="cascade",
        input_path=str(tmp_path / "in.wav"),
        output_path=config.pop("output_path", str(tmp_path / "out.wav")),
        fast=config.pop("fast", True),
        json=True,
        llm_url=server.url,
        llm_model="test-model",
        **config,
    )
    out, err = io.StringIO(), io.StringIO()
    talk_io = TalkIO(out, err, stdout_tty=False, stderr_tty=False, color=False)
    parts = TalkParts(
        engine_factory=lambda progress: CascadeEngine(stt, tts),
        model_name="fake-cascade",
        worker_factory=open_mlx_worker,  # the real FIFO thread: call order as in a session
        handle_signals=False,
    )
    with trio.fail_after(30):
        summary = await run_talk(cfg, talk_io, parts)
    return summary, json_lines(out.getvalue()), err.getvalue(), tts


async def test_one_turn_user_words_to_llm_to_tts_and_back(
    tmp_path: Path, tutor: str, llm_server: LlmServer
) -> None:
    speech_file(tmp_path / "in.wav", [(0.4, 1.2)], 2.5)
    llm_server.push(Script(text="Riddle me this now.", delay=0.02))
    summary, lines, err, tts = await run(tmp_path, llm_server, words=["why"])
    assert summary["mode"] == "cascade" and summary["turns"] == 1, err
    (request,) = llm_server.chat_requests
    messages = request.messages
    assert messages[0]["role"] == "system"
    assert "You are Tutor, who answers in riddles." in messages[0]["content"]
    assert messages[-1] == {"role": "user", "content": "why"}
    said = [w for w in lines if w["type"] == "word" and w["speaker"] == "assistant"]
    assert [w["text"] for w in said] == ["Riddle", "me", "this", "now."]
    user = [w for w in lines if w["type"] == "word" and w["speaker"] == "user"]
    assert [w["text"] for w in user] == ["why"]
    (turn,) = [line for line in lines if line["type"] == "turn"]
    assert turn["user"] == "why" and turn["assistant"] == "Riddle me this now."
    assert turn["end"] == "done" and turn["detected_by"] == "pause"
    assert turn["endpoint_ms"] == pytest.approx(640, abs=1)
    for key in ("stt_flush_ms", "llm_first_token_ms", "tts_first_audio_ms", "response_ms"):
        assert turn[key] is not None and turn[key] >= 0, key
    # The reply reached the TTS piece by piece, in order.
    assert "".join(tts.pushed) == "Riddle me this now." and len(tts.pushed) >= 4
    audio, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    loud = np.flatnonzero(np.abs(audio) > TTS_LEVEL / 2) / SAMPLE_RATE
    assert loud.size and loud[0] >= 1.2 + 0.64  # the answer comes after the pause
    (session,) = list(read_sessions("tutor"))
    assert [(w.speaker, w.text) for w in session.words] == [
        ("user", "why"),
        ("assistant", "Riddle"),
        ("assistant", "me"),
        ("assistant", "this"),
        ("assistant", "now."),
    ]


def test_turn_detector_pause_vad_and_barge_in() -> None:
    detector = TurnDetector(has_vad=False)
    frames = [True] * 5 + [False] * 8
    started, ended = [], []
    for i, loud in enumerate(frames):
        if detector.speech(i * FRAME_SECONDS, loud):
            started.append(i)
        if detector.end(None):
            ended.append(i)
    assert started == [BARGE_IN_FRAMES - 1]  # the second loud frame in a row
    assert ended == [4 + 8]  # 8 quiet frames (640 ms) after the last loud one
    assert detector.speech_end == pytest.approx(5 * FRAME_SECONDS)
    # A click (two loud frames) interrupts but is not a turn; a VAD says when it is over.
    detector = TurnDetector(has_vad=True)
    assert [detector.speech(0.0, True), detector.speech(0.08, True)] == [False, True]
    assert detector.speech(0.16, False) is False and detector.end(0.9) is None  # too short
    for t in range(3):
        detector.speech(0.24 + t * 0.08, True)
    detector.speech(0.48, False)
    assert detector.end(0.2) is None and detector.end(0.7) == "vad"


async def test_barge_in_silences_the_very_next_frame_and_keeps_the_words_played(
    tmp_path: Path, tutor: str, llm_server: LlmServer
) -> None:
    # Question 0.4-1.2 s; the answer starts after the pause; the user cuts in at 3.2 s.
    speech_file(tmp_path / "in.wav", [(0.4, 1.2), (3.2, 4.0)], 7.0)
    reply = " ".join(f"w{i}" for i in range(40))
    llm_server.push(Script(text=reply), Script(text="Fine."))
    summary, lines, _, tts = await run(tmp_path, llm_server, words=["why", "stop"])
    first, second = [t for t in lines if t["type"] == "turn"]
    assert first["end"] == "interrupted" and first["interrupted"] is True
    assert second["user"] == "stop" and second["assistant"] == "Fine."
    audio, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    frames = audio.reshape(-1, FRAME_SAMPLES)
    loud = np.abs(frames).max(axis=1) > 0
    onset = round(3.2 / FRAME_SECONDS)  # the first frame of the user's voice
    stop = onset + BARGE_IN_FRAMES - 1  # detected on the second loud frame: silent from it
    assert loud[onset - 1] and loud[stop - 1]  # speaking up to there
    assert not loud[stop : round(4.0 / FRAME_SECONDS)].any()
    # Exactly the words of the frames that were written before it, in the transcript.
    said = [w for w in lines if w["type"] == "word" and w["speaker"] == "assistant"]
    first_said = [w["text"] for w in said if w["start"] < 4.0]
    assert first["assistant"] == " ".join(first_said)
    assert first_said == reply.split()[: len(first_said)]
    worded = [i for i in range(len(frames)) if loud[i] and np.abs(frames[i]).max() > TTS_LEVEL / 2]
    assert len(first_said) == len([i for i in worded if i < stop])
    assert "cancel" in tts.calls
    assert summary["interruptions"] == 1


async def test_an_answer_cut_before_it_was_heard_carries_the_question_over(
    tmp_path: Path, tutor: str, llm_server: LlmServer
) -> None:
    # The user pauses (turn ends), then goes on before any answer audio comes out.
    # In real time: the LLM takes 1 s to its first word, the user goes on after 0.3 s.
    speech_file(tmp_path / "in.wav", [(0.4, 1.2), (2.16, 2.8)], 4.5)
    llm_server.push(Script(text="Too early.", mode="slow-first-token", first_token_delay=1.0))
    llm_server.push(Script(text="Now I see."))
    _, lines, _, _ = await run(tmp_path, llm_server, words=["what", "time"], fast=False)
    turns = [t for t in lines if t["type"] == "turn"]
    assert [t["end"] for t in turns] == ["interrupted", "done"]
    assert turns[0]["assistant"] == ""
    assert turns[1]["user"] == "what time"  # both parts of the question, together
    assert llm_server.chat_requests[-1].messages[-1] == {"role": "user", "content": "what time"}
    assert [m["role"] for m in llm_server.chat_requests[-1].messages] == ["system", "user"]
    # The first answer's stream was cancelled before its first word: the client hung up.
    first_request = llm_server.chat_requests[0]
    assert first_request.finished.wait(5) and first_request.client_closed
    assert first_request.chunks == []


async def test_nothing_heard_asks_nothing(
    tmp_path: Path, tutor: str, llm_server: LlmServer
) -> None:
    speech_file(tmp_path / "in.wav", [(0.4, 1.2)], 2.5)
    summary, lines, _, _ = await run(tmp_path, llm_server, words=[])
    assert llm_server.chat_requests == [] and summary["turns"] == 0
    assert not [t for t in lines if t["type"] == "turn"]


async def test_both_speakers_on_a_terminal_in_their_colours(
    tmp_path: Path, tutor: str, llm_server: LlmServer
) -> None:
    speech_file(tmp_path / "in.wav", [(0.4, 1.2)], 3.0)
    llm_server.push(Script(text="Riddle me this."))
    stt, tts = FakeStt(["why"]), FakeTts()
    out, err = io.StringIO(), io.StringIO()
    talk_io = TalkIO(out, err, stdout_tty=True, stderr_tty=False, color=True)
    cfg = TalkConfig(
        persona="tutor",
        input_path=str(tmp_path / "in.wav"),
        output_path=str(tmp_path / "out.wav"),
        fast=True,
        llm_url=llm_server.url,
        llm_model="test-model",
    )  # the persona's mode is cascade: no --mode needed
    parts = TalkParts(
        engine_factory=lambda progress: CascadeEngine(stt, tts),
        worker_factory=open_mlx_worker,  # the real FIFO thread: call order as in a session
        handle_signals=False,
    )
    with trio.fail_after(30):
        await run_talk(cfg, talk_io, parts)
    assert out.getvalue() == ("\x1b[1mYou:\x1b[0m why\n\x1b[1;32mTutor:\x1b[0m Riddle me this.\n")


@pytest.mark.parametrize("mode", [None, "duplex"])
async def test_cascade_options_in_duplex_mode_are_refused(
    tmp_path: Path, mode: str | None, llm_server: LlmServer
) -> None:
    speech_file(tmp_path / "in.wav", [], 1.0)
    config = TalkConfig(
        mode=mode, input_path=str(tmp_path / "in.wav"), fast=True, stt_model="sphinx-en"
    )
    talk_io = TalkIO(io.StringIO(), io.StringIO(), stdout_tty=False, stderr_tty=False, color=False)
    with pytest.raises(
        UsageError, match=r"--stt-model applies only to cascade mode.*--mode cascade"
    ):
        await run_talk(config, talk_io, TalkParts(handle_signals=False))


async def test_a_greeting_is_said_first_without_asking_the_llm(
    tmp_path: Path, isolated_home: Path, llm_server: LlmServer
) -> None:
    from xswarm.personas import user_dir

    user_dir().mkdir(parents=True, exist_ok=True)
    (user_dir() / "tutor.toml").write_text(PERSONA.replace('greeting = ""', 'greeting = "Hi you."'))
    speech_file(tmp_path / "in.wav", [], 2.0)
    summary, lines, _, tts = await run(tmp_path, llm_server, words=[])
    said = [w["text"] for w in lines if w["type"] == "word" and w["speaker"] == "assistant"]
    assert said == ["Hi", "you."] and tts.pushed == ["Hi you."]
    assert llm_server.chat_requests == [] and summary["turns"] == 0
    (greeting,) = [t for t in lines if t["type"] == "turn"]
    assert greeting["turn"] == 0 and greeting["assistant"] == "Hi you."


def test_apology_is_short_and_plain() -> None:
    assert len(APOLOGY.split()) <= 12 and APOLOGY.endswith(".")


async def test_what_the_user_says_is_remembered_and_told_to_the_llm_next_time(
    tmp_path: Path, tutor: str, llm_server: LlmServer
) -> None:
    from xswarm.memory import memory_facts

    speech_file(tmp_path / "in.wav", [(0.4, 1.6)], 3.5)
    llm_server.push(Script(text="Nice to meet you."), Script(text="Hello again Ada."))
    await run(tmp_path, llm_server, words=["my name is Ada and I love jazz"])
    assert {(f.key, f.value) for f in memory_facts("tutor")} == {
        ("name", "Ada"),
        ("likes:jazz", "jazz"),
    }
    await run(tmp_path, llm_server, words=["hello"])
    system = llm_server.chat_requests[1].messages[0]["content"]
    assert "The user's name is Ada." in system and "The user likes jazz." in system
    # The first session's history has both turns and the turn report.
    sessions = sorted(read_sessions("tutor"), key=lambda s: s.start)
    first = next(s for s in sessions if any(w.text == "Ada" for w in s.words))
    assert [line.speaker for line in first.lines()] == ["user", "assistant"]
    assert [e["type"] for e in first.events if e["type"] in ("turn", "turn_end")] == [
        "turn",
        "turn_end",
    ]


async def test_in_real_time_the_answer_after_the_input_ends_is_paced_too(
    tmp_path: Path, tutor: str, llm_server: LlmServer
) -> None:
    # The input file ends before the answer is said: the silence fed after it (the drain)
    # must keep the wall clock's pace, or a speaker gets the answer faster than it plays.
    speech_file(tmp_path / "in.wav", [(0.2, 0.8)], 1.6)
    llm_server.push(Script(text=" ".join(f"w{i}" for i in range(16))))
    t0 = time.monotonic()
    summary, lines, err, _ = await run(tmp_path, llm_server, words=["go"], fast=False)
    wall = time.monotonic() - t0
    (turn,) = [t for t in lines if t["type"] == "turn"]
    assert turn["end"] == "done", err
    assert summary["duration"] > 1.6 + 8 * FRAME_SECONDS  # the answer ran past the input
    assert wall >= summary["duration"] - 2 * FRAME_SECONDS, (wall, summary["duration"])


class SlowStt(FakeStt):
    """An STT whose every step takes 250 ms: three times slower than real time."""

    def feed(self, pcm: np.ndarray) -> Any:
        time.sleep(0.25)
        return super().feed(pcm)


async def test_too_slow_models_are_named_by_the_cascade_options(
    tmp_path: Path, tutor: str, llm_server: LlmServer
) -> None:
    # Cascade mode has no --model: the warning must point at the options that apply.
    speech_file(tmp_path / "in.wav", [], 1.0)
    _, lines, _, _ = await run(
        tmp_path, llm_server, words=[], stt=SlowStt([]), fast=False, duration=0.8
    )
    (warning,) = [line for line in lines if line.get("status") == "warning"]
    assert "slower than real time" in warning["message"]
    assert "--stt-model" in warning["message"] and "--tts-model" in warning["message"]
    assert "--model," not in warning["message"]


async def test_barge_in_on_a_speaker_does_not_count_the_words_its_buffer_never_played(
    tmp_path: Path, tutor: str, llm_server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sound card's jitter buffer holds frames the sink has taken but nobody heard yet;
    # a barge-in clears them, so their words were not said.
    import xswarm.talk
    from xswarm.audio.jitter import JitterBuffer

    played: list[np.ndarray] = []
    cleared: list[int] = []

    class Buffer(JitterBuffer):
        def clear(self) -> int:
            cleared.append(super().clear())
            return cleared[-1]

    def speaker_sink(config: TalkConfig, extra: dict[str, Any]) -> Callable[..., Any]:
        buffer = Buffer(prefill=xswarm.talk.JITTER_PREFILL)
        extra["playback"] = buffer

        async def speaker(frames: Any) -> None:
            # The card plays one frame per frame received, once its prefill is reached.
            out = np.zeros(FRAME_SAMPLES, np.float32)
            with frames:
                async for frame in frames:
                    buffer.push(frame.pcm)
                    if buffer.stats().started:
                        buffer.pull_into(out)
                        played.append(out.copy())
            while buffer.depth:
                buffer.pull_into(out)
                played.append(out.copy())

        return speaker

    monkeypatch.setattr(xswarm.talk, "_speaker_sink", speaker_sink)
    speech_file(tmp_path / "in.wav", [(0.4, 1.2), (3.2, 4.0)], 6.0)
    llm_server.push(Script(text=" ".join(f"w{i}" for i in range(40))), Script(text="Fine."))
    _, lines, err, _ = await run(
        tmp_path, llm_server, words=["why", "stop"], fast=False, output_path=None
    )
    first, second = [t for t in lines if t["type"] == "turn"]
    assert first["end"] == "interrupted" and second["assistant"] == "Fine.", err
    assert cleared and cleared[0] >= FRAME_SAMPLES  # the barge-in found unplayed frames
    heard = sum(1 for pcm in played if np.abs(pcm).max() > TTS_LEVEL / 2)  # frames with a word
    said = [w for w in lines if w["type"] == "word" and w["speaker"] == "assistant"]
    assert len(said) == heard
    assert len(first["assistant"].split()) == heard - 1  # "Fine." is the other one


async def test_an_empty_answer_neither_hangs_a_fast_run_nor_is_said(
    tmp_path: Path, tutor: str, llm_server: LlmServer
) -> None:
    # The LLM streams no text at all ("[DONE]" at once): nothing to say, and --fast,
    # which waits for an answer's first audio, must go on with the next frames.
    speech_file(tmp_path / "in.wav", [(0.4, 1.2), (2.4, 3.2)], 5.0)
    llm_server.push(Script(text=""), Script(text="Now then."))
    _, lines, err, _ = await run(tmp_path, llm_server, words=["hello", "again"])
    first, second = [t for t in lines if t["type"] == "turn"]
    assert first["user"] == "hello" and first["assistant"] == "" and first["end"] == "done", err
    assert second["user"] == "again" and second["assistant"] == "Now then."


async def test_duration_also_stops_an_answer_that_goes_on_after_the_input(
    tmp_path: Path, tutor: str, llm_server: LlmServer
) -> None:
    # A 1.6 s question file and --duration 2.4: the session ends at 2.4 s, mid-answer.
    speech_file(tmp_path / "in.wav", [(0.2, 0.8)], 1.6)
    llm_server.push(Script(text=" ".join(f"w{i}" for i in range(40))))
    summary, lines, err, _ = await run(tmp_path, llm_server, words=["go"], duration=2.4)
    assert summary["frames"] == round(2.4 / FRAME_SECONDS), err
    assert sf.info(tmp_path / "out.wav").frames == round(2.4 / FRAME_SECONDS) * FRAME_SAMPLES
    (turn,) = [t for t in lines if t["type"] == "turn"]
    assert turn["end"] == "interrupted" and turn["assistant"]  # cut short, but begun


@pytest.mark.parametrize("think", ["<think> The user asks why. Riddles! </think>", "\n\n"])
async def test_thinking_and_blank_lines_are_not_said_nor_timed_as_the_first_token(
    tmp_path: Path, tutor: str, llm_server: LlmServer, think: str
) -> None:
    # A reasoning model: its thinking (or a blank line) at once, the answer 0.4 s later.
    speech_file(tmp_path / "in.wav", [(0.4, 1.2)], 3.0)
    llm_server.push(
        Script(text="Riddle me.", think=think, mode="slow-first-token", first_token_delay=0.4)
    )
    _, lines, err, tts = await run(tmp_path, llm_server, words=["why"])
    (turn,) = [t for t in lines if t["type"] == "turn"]
    assert turn["assistant"] == "Riddle me." and "".join(tts.pushed) == "Riddle me.", err
    assert turn["llm_first_token_ms"] >= 400  # the first word to be spoken, not the thinking


@pytest.mark.parametrize("heard", [False, True])
async def test_a_greeting_cut_before_it_was_heard_is_no_turn_and_no_interruption(
    tmp_path: Path, isolated_home: Path, llm_server: LlmServer, heard: bool
) -> None:
    from xswarm.personas import user_dir

    user_dir().mkdir(parents=True, exist_ok=True)
    greeting = "Hello there, I am your tutor for today."
    (user_dir() / "tutor.toml").write_text(
        PERSONA.replace('greeting = ""', f'greeting = "{greeting}"')
    )
    # The user speaks at once (0.0 s), before the greeting's first audio (the TTS needs
    # 80 steps: 64 pre-roll steps, then one a frame), or after two of its words (0.5 s,
    # the first audio being at once).
    start = 0.5 if heard else 0.0
    speech_file(tmp_path / "in.wav", [(start, start + 0.8)], 5.0)
    llm_server.push(Script(text="Fine."))
    tts = FakeTts(delay=0 if heard else 80)
    summary, lines, err, _ = await run(tmp_path, llm_server, words=["hi"], tts=tts)
    turns = [t for t in lines if t["type"] == "turn"]
    assert turns[-1]["turn"] == 1 and turns[-1]["assistant"] == "Fine.", err
    assert summary["turns"] == 1
    if heard:
        (cut,) = turns[:-1]
        assert cut["turn"] == 0 and cut["end"] == "interrupted"
        assert greeting.startswith(cut["assistant"]) and cut["assistant"]
        assert summary["interruptions"] == 1
    else:
        assert len(turns) == 1  # no {"turn": 0, "assistant": "", "end": "interrupted"}
        assert summary["interruptions"] == 0
    said = [w["text"] for w in lines if w["type"] == "word" and w["speaker"] == "assistant"]
    assert said[-1] == "Fine." and bool(said[:-1]) == heard
