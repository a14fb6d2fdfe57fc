"""The cascade's latency: end of the user's speech -> the first sample of the assistant's answer.

Prints one JSON object. Each configuration runs one real talk session
(``xswarm.talk.run_talk``, ``--mode cascade --fast``, headless from a WAV of
flite questions) against the real streaming LLM test server on 127.0.0.1
(tests/llm_server.py) answering at once (no thinking time: the LLM's own
compute is zero here, so what the LLM stage costs is the HTTP round trip).
From each turn's ``{"type": "turn"}`` report:

- ``endpoint_ms``: end of speech -> end of turn detected, in audio time (the
  pause threshold or the VAD's wait: a policy, not compute);
- ``stt_flush_ms``: the STT flush (words held in the model's delay);
- ``llm_first_token_ms``: request sent -> first text delta;
- ``tts_first_audio_ms``: first text into the TTS -> first audio frame queued;
- ``response_ms``: end of turn detected -> first audio frame queued for the sink;
- ``models_ms``: of that, the STT and TTS models' own compute (MLX-thread time
  of the flush, of the TTS steps and of the STT steps in between);
- ``overhead_ms`` = ``response_ms - models_ms``: what the pipeline adds (the
  HTTP round trip, trio hand-offs, the MLX thread hops, event reports).
  The target on the tiny models: under 50 ms.

Configurations:

- ``tiny-random``: the generated tiny STT and TTS (real files, real code);
- ``sphinx-en+tiny-tts``: pocketsphinx STT, tiny TTS;
- ``--realtime``: the same paced in real time, as from a microphone: the
  first audio frame then waits for the next input frame (0 to 80 ms);
- ``--big``: the published stt-1b-en_fr architecture (random weights built in
  memory, benchmarks/stt_stream.py) and ``random-tts-1.6b`` (generated on
  demand, about 4 GB), one turn; each model step takes seconds on this CPU,
  so this takes many minutes.

    python benchmarks/cascade.py
    python benchmarks/cascade.py --turns 5 --realtime --big
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = (
    "what is the capital of france",
    "please open the window",
    "the train leaves at seven",
    "thank you very much",
    "where is the nearest station",
)
REPLY = "Paris is the capital of France."
GAP_SECONDS = 8.0  # s of silence after each question: time for the answer to be said
KEYS = (
    "endpoint_ms",
    "stt_flush_ms",
    "llm_first_token_ms",
    "tts_first_audio_ms",
    "response_ms",
    "models_ms",
    "total_ms",
)


def questions_wav(directory: Path, count: int, gap: float) -> Path:
    import soundfile as sf

    from tests.speech import flite_speech
    from xswarm.audio import SAMPLE_RATE

    chunks = []
    for i in range(count):
        spoken = flite_speech(
            QUESTIONS[i % len(QUESTIONS)], directory / f"q{i}.wav", lead_seconds=1.0, tail_seconds=0
        )
        audio, rate = sf.read(spoken.path, dtype="float32")
        grid = np.arange(0, len(audio), rate / SAMPLE_RATE)
        chunks += [np.interp(grid, np.arange(len(audio)), audio), np.zeros(int(gap * SAMPLE_RATE))]
    path = directory / "questions.wav"
    sf.write(path, np.concatenate(chunks).astype(np.float32), SAMPLE_RATE, subtype="FLOAT")
    return path


def stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "min": None, "max": None}
    return {
        "p50": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def run_session(
    wav: Path,
    server: Any,
    stt: str,
    tts: str,
    factory: Any = None,
    name: str | None = None,
    *,
    fast: bool = True,
    reply: str = REPLY,
) -> dict[str, Any]:
    import trio

    from tests.llm_server import Script
    from xswarm.talk import TalkConfig, TalkIO, TalkParts, run_talk

    server.default = Script(text=reply)
    config = TalkConfig(
        persona="sage",
        mode="cascade",
        stt_model=stt,
        tts_model=tts,
        llm_url=server.url,
        llm_model="test-model",
        input_path=str(wav),
        output_path=str(wav.parent / f"answer-{stt}.wav"),
        fast=fast,
        json=True,
        seed=7,
        history=False,
    )
    out = io.StringIO()
    talk_io = TalkIO(out, io.StringIO(), stdout_tty=False, stderr_tty=False, color=False)
    parts = TalkParts(handle_signals=False, engine_factory=factory, model_name=name)
    started = time.perf_counter()
    summary = trio.run(run_talk, config, talk_io, parts)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    turns = [t for t in lines if t["type"] == "turn" and t["turn"] and t["end"] == "done"]
    result: dict[str, Any] = {
        "turns": len(turns),
        "seconds": round(time.perf_counter() - started, 1),
        "load_seconds": summary["load_seconds"],
        "step_ms_p50": summary["step_ms_p50"],
    }
    for key in KEYS:
        result[key] = stats([t[key] for t in turns if t[key] is not None])
    overheads = [t["response_ms"] - t["models_ms"] for t in turns if t["response_ms"] is not None]
    result["overhead_ms"] = stats(overheads)
    return result


def big_factory(seed: int) -> Any:
    """The 1B STT (in memory, random) and random-tts-1.6b, on the MLX thread."""

    def build(progress: Any) -> Any:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import stt_stream  # benchmarks/stt_stream.py

        from xswarm.cascade import CascadeEngine
        from xswarm.tts import load_tts

        stt = stt_stream.stt_1b_stream()
        tts = load_tts("random-tts-1.6b", None, seed=seed)
        return CascadeEngine(stt, tts, seed=seed)

    return build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=3, help="questions per small configuration")
    parser.add_argument("--big", action="store_true", help="also the 1B STT + 1.6B TTS (slow)")
    parser.add_argument(
        "--realtime", action="store_true", help="also sphinx-en + tiny TTS paced in real time"
    )
    args = parser.parse_args()

    import os

    from tests.llm_server import serve_llm

    result: dict[str, Any] = {"reply": REPLY, "configs": {}}
    with tempfile.TemporaryDirectory() as scratch:
        os.environ.setdefault("XSWARM_HOME", str(Path(scratch) / "home"))
        directory = Path(scratch)
        wav = questions_wav(directory, args.turns, GAP_SECONDS)
        with serve_llm() as server:
            for label, stt in (("tiny-random", "tiny-random"), ("sphinx-en+tiny-tts", "sphinx-en")):
                result["configs"][label] = run_session(wav, server, stt, "tiny-random")
            if args.realtime:
                # Paced like a microphone: the first audio waits for the next input frame
                # (0-80 ms), which --fast hides.
                result["configs"]["sphinx-en+tiny-tts realtime"] = run_session(
                    wav, server, "sphinx-en", "tiny-random", fast=False
                )
            if args.big:
                big_wav = directory / "big.wav"
                _short_question(big_wav)
                result["configs"]["stt-1b+tts-1.6b (random)"] = run_session(
                    big_wav,
                    server,
                    "tiny-random",
                    "random-tts-1.6b",
                    factory=big_factory(7),
                    name="stt-1b-random+test-model+random-tts-1.6b",
                    reply="Yes.",  # one word: each frame of the answer costs seconds here
                )
    tiny = result["configs"]["tiny-random"]["overhead_ms"]["p50"]
    result["tiny_overhead_under_50_ms"] = tiny is not None and tiny < 50
    print(json.dumps(result, indent=2))


def _short_question(path: Path) -> None:
    """A short question (about 0.6 s) and 2.2 s of silence: few frames for slow models."""
    import soundfile as sf

    from tests.speech import flite_speech
    from xswarm.audio import SAMPLE_RATE

    spoken = flite_speech(
        "hello there", path.with_suffix(".raw.wav"), lead_seconds=0.2, tail_seconds=0
    )
    audio, rate = sf.read(spoken.path, dtype="float32")
    grid = np.arange(0, len(audio), rate / SAMPLE_RATE)
    audio = np.concatenate(
        [np.interp(grid, np.arange(len(audio)), audio), np.zeros(int(2.2 * SAMPLE_RATE))]
    )
    sf.write(path, audio.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")


if __name__ == "__main__":
    main()
