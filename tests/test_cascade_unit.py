"""The cascade's own logic with exact stand-ins for the models (tests/cascade_fakes.py).

The LLM is the real HTTP test server (tests/llm_server.py) and the session is
the real talk session (run_talk); only STT and TTS are scripted, so every
word's frame, the barge-in's frame and the turn timings can be checked exactly.
The same paths with the real models are in tests/test_cascade.py.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator, Callable
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


class ThreadWorker:
    """One thread per call is fine for stand-in models (no MLX)."""

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args)


@contextlib.asynccontextmanager
async def thread_worker() -> AsyncIterator[ThreadWorker]:
    yield ThreadWorker()


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
    **config: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]], str, FakeTts]:
    tts = tts or FakeTts()
    stt = FakeStt(words)
    cfg = TalkConfig(
        persona=persona,
        mode="cascade",
        input_path=str(tmp_path / "in.wav"),
        output_path=str(tmp_path / "out.wav"),
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
        worker_factory=thread_worker,
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
