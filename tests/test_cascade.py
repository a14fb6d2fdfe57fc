"""``xswarm talk --mode cascade`` with the real pieces: STT -> a real HTTP LLM server -> TTS.

The models are the real code on generated weights (``tiny-random`` STT and
TTS) or pocketsphinx (``sphinx-en``) on speech synthesised by flite; the LLM
is a real OpenAI-compatible streaming server on 127.0.0.1 (tests/llm_server.py).
Sessions run headless from WAV files, in process (where the test must see
inside: what reached the TTS and when) or as the CLI subprocess users run.
"""

from __future__ import annotations

import io
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import trio

from tests.cli_helpers import run_xswarm
from tests.llm_server import LlmServer, Script
from tests.speech import flite_speech
from xswarm import cascade as cascade_module
from xswarm.audio import FRAME_SECONDS, SAMPLE_RATE
from xswarm.cascade import APOLOGY, CascadePlan
from xswarm.history import SessionLog, read_sessions
from xswarm.memory import memory_facts
from xswarm.talk import TalkConfig, TalkIO, TalkParts, run_talk

QUESTION = "what is the capital of france"
REPLY = "Paris is the capital of France. It is a big city on the river Seine."
GAP = 9.0  # s of silence between questions: the random TTS says the apology in about 6 s
LONG_REPLY = " ".join(["one two three four five six seven eight nine ten"] * 6) + "."


@dataclass
class Run:
    summary: dict[str, Any]
    lines: list[dict[str, Any]]
    stderr: str
    plan: CascadePlan

    def words(self, speaker: str) -> list[dict[str, Any]]:
        return [w for w in self.lines if w["type"] == "word" and w["speaker"] == speaker]

    @property
    def turns(self) -> list[dict[str, Any]]:
        return [t for t in self.lines if t["type"] == "turn" and t["turn"] > 0]


def speech(tmp_path: Path, *parts: tuple[str, float]) -> Path:
    """A 24 kHz WAV: each (sentence, seconds of silence before it), then 2 s of silence."""
    chunks = []
    for i, (text, silence) in enumerate(parts):
        spoken = flite_speech(text, tmp_path / f"part{i}.wav", lead_seconds=silence, tail_seconds=0)
        audio, rate = sf.read(spoken.path, dtype="float32")
        chunks.append(
            np.interp(np.arange(0, len(audio), rate / SAMPLE_RATE), np.arange(len(audio)), audio)
        )
    chunks.append(np.zeros(2 * SAMPLE_RATE))
    path = tmp_path / "in.wav"
    sf.write(path, np.concatenate(chunks).astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
    return path


async def talk(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    *,
    persona: str = "sage",
    stt: str = "tiny-random",
    **config: Any,
) -> Run:
    """One in-process session, real models on the real MLX worker; the plan is kept."""
    config.setdefault("llm_model", "test-model")
    plans: list[CascadePlan] = []
    real_plan = cascade_module.plan_cascade

    def keep(*args: Any, **kwargs: Any) -> CascadePlan:
        plans.append(real_plan(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(cascade_module, "plan_cascade", keep)
    cfg = TalkConfig(
        persona=persona,
        mode="cascade",
        stt_model=stt,
        tts_model="tiny-random",
        llm_url=url or None,
        input_path=str(tmp_path / "in.wav"),
        output_path=str(tmp_path / "out.wav"),
        fast=True,
        json=True,
        seed=5,
        **config,
    )
    out, err = io.StringIO(), io.StringIO()
    talk_io = TalkIO(out, err, stdout_tty=False, stderr_tty=False, color=False)
    with trio.fail_after(60):
        summary = await run_talk(cfg, talk_io, TalkParts(handle_signals=False))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return Run(summary, lines, err.getvalue(), plans[0])


def loud_frames(path: Path) -> np.ndarray:
    """Indices of the output's frames that carry any sound (the cascade's silence is 0.0)."""
    audio, rate = sf.read(path, dtype="float32")
    assert rate == SAMPLE_RATE
    frame = int(FRAME_SECONDS * SAMPLE_RATE)
    usable = len(audio) // frame * frame
    return np.flatnonzero(np.abs(audio[:usable]).reshape(-1, frame).max(axis=1) > 0)


async def test_a_full_turn_with_tiny_models_and_a_streaming_server(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    llm_server: LlmServer,
    tiny_random_stt: object,
    tiny_random_tts: object,
) -> None:
    # A previous session in which the user said who they are: sage remembers it.
    with SessionLog.open("sage", "earlier") as earlier:
        for i, word in enumerate(["my", "name", "is", "Ada", "and", "I", "live", "in", "Lyon"]):
            earlier.word("user", word, i * 0.3, i * 0.3 + 0.3)
        earlier.end_turn()
    assert {f.key for f in memory_facts("sage")} == {"name", "location"}

    speech(tmp_path, (QUESTION, 1.0))
    llm_server.push(Script(text=REPLY, delay=0.15))
    run = await talk(tmp_path, monkeypatch, llm_server.url)

    # The server got the persona's prompt, the speech rules and the remembered facts.
    (request,) = llm_server.chat_requests
    assert request.body["stream"] is True and request.body["model"] == "test-model"
    system = request.messages[0]
    assert system["role"] == "system"
    assert "You are Sage, a patient and warm tutor." in system["content"]
    assert "The user's name is Ada." in system["content"]
    assert "The user lives in Lyon." in system["content"]
    (turn,) = run.turns
    assert request.messages[-1] == {"role": "user", "content": turn["user"]}
    heard = [w["text"] for w in run.words("user")]  # a random STT keeps "hearing" words
    assert turn["user"] and " ".join(heard).startswith(turn["user"])  # its first turn's words

    # The reply reached the TTS word by word, the first words long before the reply ended.
    chunks = request.chunks
    assert len(chunks) == len(REPLY.split())
    pushes = [(t, text) for t, turn_number, text in run.plan.pushes if turn_number == 1]
    assert [text for _, text in pushes] == chunks
    first_push = pushes[0][0]
    assert first_push < request.chunk_times[1] < request.chunk_times[-1]

    # Audio came out, after the question, and the answer was said whole.
    loud = loud_frames(tmp_path / "out.wav")
    assert loud.size > len(REPLY.split())
    assert turn["assistant"] == REPLY and turn["end"] == "done"
    greeting, said = [], []  # sage greets first (interrupted by the question)
    for word in run.words("assistant"):
        (said if word["start"] >= turn["speech_end"] else greeting).append(word["text"])
    assert " ".join(said) == REPLY
    assert "Hello." in greeting
    for key in ("endpoint_ms", "stt_flush_ms", "llm_first_token_ms", "tts_first_audio_ms"):
        assert turn[key] is not None and turn[key] >= 0, key
    assert turn["total_ms"] == pytest.approx(turn["endpoint_ms"] + turn["response_ms"])
    assert run.summary["turns"] == 1 and run.summary["llm_errors"] == 0

    # The history file has both speakers' turns.
    sessions = [s for s in read_sessions("sage") if s.model != "earlier"]
    (session,) = sessions
    spoken = [(w.speaker, w.text) for w in session.words]
    assert ("assistant", "Paris") in spoken and spoken[-1] == ("assistant", "Seine.")
    user_words = [w.text for w in session.words if w.speaker == "user"]
    assert " ".join(user_words).startswith(turn["user"])
    assert [e["assistant"] for e in session.events if e["type"] == "turn" and e["turn"]] == [REPLY]


def test_sphinx_hears_the_flite_question_exactly(
    tmp_path: Path, llm_server: LlmServer, tiny_random_tts: object
) -> None:
    wav = speech(tmp_path, (QUESTION, 1.0))
    llm_server.push(Script(text=REPLY, delay=0.02))
    result = run_xswarm(
        "talk",
        "--persona",
        "sage",
        "--stt-model",
        "sphinx-en",
        "--tts-model",
        "tiny-random",
        "--llm-url",
        llm_server.url,
        "--llm-model",
        "test-model",
        "--input",
        str(wav),
        "--output",
        str(tmp_path / "out.wav"),
        "--fast",
        "--json",
        "--seed",
        "5",
    )
    assert result.returncode == 0, result.stderr
    (request,) = llm_server.chat_requests
    assert request.messages[-1] == {"role": "user", "content": QUESTION}
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    user = [w["text"] for w in lines if w["type"] == "word" and w["speaker"] == "user"]
    assert user == QUESTION.split()
    (turn,) = [t for t in lines if t["type"] == "turn" and t["turn"]]
    assert turn["assistant"] == REPLY and turn["detected_by"] == "pause"
    assert lines[-1]["type"] == "summary" and lines[-1]["mode"] == "cascade"


async def test_barge_in_stops_playback_and_keeps_only_what_was_said(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    llm_server: LlmServer,
    tiny_random_stt: object,
    tiny_random_tts: object,
) -> None:
    # The question, then the user speaks again while the long answer is being said.
    wav = speech(tmp_path, (QUESTION, 1.0), ("stop please stop", 5.0))
    llm_server.push(Script(text=LONG_REPLY), Script(text="Sorry."))
    audio, _ = sf.read(wav, dtype="float32")
    second = flite_speech("stop please stop", tmp_path / "probe.wav", lead_seconds=0)
    onset_frames = np.flatnonzero(
        np.abs(audio).reshape(-1, 1920)[: len(audio) // 1920].max(axis=1) > 0.02
    )
    run = await talk(tmp_path, monkeypatch, llm_server.url, persona="sage")

    first, *rest = run.turns
    assert first["end"] == "interrupted"
    # The barge-in's speech starts after the question's end + 5 s of silence.
    question_end = first["speech_end"]
    onset = min(i for i in onset_frames if i * FRAME_SECONDS > question_end + 1.0) * FRAME_SECONDS
    said = first["assistant"].split()
    assert 0 < len(said) < len(LONG_REPLY.split())  # some of it, not all
    assert LONG_REPLY.startswith(first["assistant"])
    # Playback stopped within 200 ms of the user's voice: silence from there on, until
    # the next answer (after the second utterance and its pause).
    loud = loud_frames(tmp_path / "out.wav") * FRAME_SECONDS
    before = loud[loud < onset]
    assert before.size and before[-1] > onset - 0.5  # it was speaking when interrupted
    stop_by = onset + 0.2
    next_answer = onset + second.duration
    assert not loud[(loud >= stop_by) & (loud < next_answer)].size
    # Only the words said are in the transcript and the history.
    words = [w for w in run.words("assistant") if question_end <= w["start"] < next_answer]
    assert [w["text"] for w in words] == said
    assert all(w["start"] < stop_by for w in words)
    (session,) = list(read_sessions("sage"))
    history_said = [
        w.text
        for w in session.words
        if w.speaker == "assistant" and question_end <= w.start < next_answer
    ]
    assert history_said == said
    assert run.summary["interruptions"] >= 1
    assert rest and rest[0]["end"] == "done"  # the session went on: the next turn was answered
    assert len(llm_server.chat_requests) == 2
    # The second request carries the conversation as it was actually spoken.
    history = llm_server.chat_requests[1].messages[1:-1]
    assert history[-1] == {"role": "assistant", "content": first["assistant"]}


async def test_endpoint_failures_apologise_and_the_session_goes_on(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    llm_server: LlmServer,
    tiny_random_stt: object,
    tiny_random_tts: object,
) -> None:
    speech(
        tmp_path,
        (QUESTION, 1.0),
        ("please open the window", GAP),
        ("turn off the lights please", GAP),
        ("thank you very much", GAP),
    )
    llm_server.push(
        Script(mode="http500", error="the model crashed"),
        Script(text=REPLY, mode="cut", after=3),
        Script(text=REPLY, mode="stall", after=2, stall=30.0),
        Script(text="You are welcome."),
    )
    with trio.fail_after(50):
        run = await talk(tmp_path, monkeypatch, llm_server.url, llm_timeout=1.0)

    turns = run.turns
    assert [t["end"] for t in turns] == ["error", "error", "error", "done"]
    assert "500" in turns[0]["error"] and "the model crashed" in turns[0]["error"]
    assert turns[0]["assistant"] == APOLOGY  # nothing else was said first
    # Cut and stalled streams: the words that came are said, then the apology (the slow
    # random voice may still be saying it when the next question interrupts it).
    for turn, kept in ((turns[1], 3), (turns[2], 2)):
        expected = " ".join(REPLY.split()[:kept]) + " " + APOLOGY
        assert expected.startswith(turn["assistant"]), turn
        assert len(turn["assistant"].split()) > kept + 1  # the apology was being said
    assert turns[3]["assistant"] == "You are welcome."
    assert run.summary["llm_errors"] == 3 and run.summary["reason"] == "end"
    # One clear line on stderr per failure, naming the endpoint.
    errors = [line for line in run.stderr.splitlines() if line.startswith("xswarm: warning:")]
    assert len(errors) == 3, run.stderr
    assert all("127.0.0.1" in line for line in errors)
    assert "Traceback" not in run.stderr
    stall = llm_server.chat_requests[2]
    assert stall.client_closed or stall.finished.wait(5)


async def test_an_unreachable_server_gets_an_apology(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_random_stt: object,
    tiny_random_tts: object,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    speech(tmp_path, (QUESTION, 1.0))
    run = await talk(tmp_path, monkeypatch, f"http://127.0.0.1:{port}/v1")
    (turn,) = run.turns
    assert turn["end"] == "error" and turn["assistant"] == APOLOGY
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("xswarm: warning:")]
    assert f"127.0.0.1:{port}" in line
    answer = [w["text"] for w in run.words("assistant") if w["start"] >= turn["speech_end"]]
    assert " ".join(answer) == APOLOGY


SAGE_WITH_LLM = ["--persona", "sage", "--llm-url", "http://h/v1", "--llm-model", "m"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--mode", "cascade"],
            "cascade mode needs a text LLM: give --llm-url URL and --llm-model",
        ),
        (["--persona", "sage", "--llm-url", "http://127.0.0.1:9/v1"], "give --llm-model NAME"),
        (
            [*SAGE_WITH_LLM, "--stt-model", "stt-1b"],
            "--stt-model: unknown STT model 'stt-1b' (did you mean 'stt-1b-en_fr-mlx'?)",
        ),
        (
            [*SAGE_WITH_LLM, "--tts-model", "tiny-random-stt"],
            "--tts-model: 'tiny-random-stt' is not a TTS model (it is a stt model)",
        ),
        (
            [*SAGE_WITH_LLM, "--stt-model", "moshiko-mlx-q4"],
            "--stt-model: 'moshiko-mlx-q4' is not an STT model (it is a moshi model)",
        ),
        (
            [*SAGE_WITH_LLM, "--tts-model", "./no/such"],
            "--tts-model ./no/such: no such model directory",
        ),
        (
            ["--persona", "sage", "--llm-url", "ftp://h", "--llm-model", "m"],
            "is not an http(s) URL",
        ),
        (["--mode", "banana"], "--mode must be duplex or cascade, not 'banana'"),
        (["--llm-model", "m"], "--llm-model applies only to cascade mode"),
        (["--persona", "sage", "--model", "tiny-random"], "cascade mode does not use"),
    ],
)
def test_bad_cascade_options_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    wav = tmp_path / "q.wav"
    sf.write(wav, np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    result = run_xswarm("talk", *args, "--input", str(wav), "--fast")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not list(read_sessions())  # nothing was started, nothing saved
