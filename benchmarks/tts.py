"""Streaming TTS: time to the first audio and step time, against moshi_mlx's own TTS loop.

Prints one JSON object, one entry per model.

For each model (default ``tiny-random-tts``; add ``random-tts-1.6b``, the
published 1.6B architecture at random weights, generated on demand, ~4 GB):

- ``first_audio``: a sentence pushed and ended, stepped back to back from
  ``start()``: steps and seconds to the first frame and to the first word's
  audio (``xswarm.tts.latency.measure_first_audio``); ``first_audio_cold`` is
  the same for the first answer after loading;
- ``first_audio_streaming``: the same with the text not ended (as an LLM
  stream: the model waits for two words of lookahead);
- ``step``: p50/p99 of ``TtsStream.step`` (LM + Mimi decode) over ``--steps``
  steps of speech, and of the Mimi decode alone;
- ``bare_generate`` (``--compare``, default for the tiny model): moshi_mlx's
  ``TTSModel.generate`` on the same weights and text, whole-answer, no decode:
  its mean time per step, and the ratio of the stream's LM time (step minus
  decode) to it, measured in the same run.

    python benchmarks/tts.py
    python benchmarks/tts.py --models tiny-random-tts random-tts-1.6b --steps 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np

TEXT = "Good evening. The weather is nice today, with a clear sky and a light wind."
SEED = 299_792_458


def ms(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
        "mean_ms": round(float(arr.mean()), 2),
        "n": len(values),
    }


def bare_generate(stream: Any, text: str) -> float:
    """moshi_mlx's TTSModel.generate on the stream's weights: seconds per step (no decode)."""
    import mlx.core as mx
    from moshi_mlx.models.tts import TTSModel

    model: TTSModel = stream.model
    entries = model.prepare_script([text], padding_between=1)
    attributes = model.make_condition_attributes([stream.voice], 2.0)  # the stream's voice
    steps: list[int] = []
    mx.random.seed(SEED)
    started = time.perf_counter()
    result = model.generate([entries], [attributes], on_text_hook=lambda tokens: steps.append(1))
    seconds = time.perf_counter() - started
    del result
    return seconds / max(1, len(steps))


def bench(name: str, steps: int, compare: bool) -> dict[str, Any]:
    from xswarm.tts import load_tts
    from xswarm.tts.latency import measure_first_audio

    started = time.perf_counter()
    stream = load_tts(name, None, seed=SEED)
    load = time.perf_counter() - started
    out: dict[str, Any] = {
        "load_s": round(load - stream.warmup_seconds, 3),
        "warmup_s": round(stream.warmup_seconds, 3),
        "delay_steps": stream.delay_steps,
    }
    # the first answer after loading still pays some of MLX's lazy set-up: report it apart
    cold = measure_first_audio(stream, TEXT)
    out["first_audio_cold"] = {k: round(v, 4) for k, v in vars(cold).items()}
    first = measure_first_audio(stream, TEXT)
    out["first_audio"] = {k: round(v, 4) for k, v in vars(first).items()}
    streaming = measure_first_audio(stream, TEXT, end=False)
    out["first_audio_streaming"] = {k: round(v, 4) for k, v in vars(streaming).items()}

    # steady state: speech frames after the delay, LM + decode, and the decode alone
    stream.start()
    stream.push(TEXT)
    stream.end()
    while stream.step() is None:
        pass
    step_s: list[float] = []
    decode_s: list[float] = []
    codec = stream._codec
    for _ in range(steps):
        t0 = time.perf_counter()
        frame = stream.step()
        step_s.append(time.perf_counter() - t0)
        if frame is None or stream.last_codes is None:
            break
        t0 = time.perf_counter()
        codec.decode_step(stream.last_codes)  # a second decode, timed alone
        decode_s.append(time.perf_counter() - t0)
    stream.cancel()
    out["step"] = ms(step_s)
    out["decode"] = ms(decode_s)
    out["real_time_factor"] = round(statistics.median(step_s) / 0.08, 3)
    if compare:
        per_step = bare_generate(stream, TEXT)
        lm_only = statistics.median(step_s) - statistics.median(decode_s)
        out["bare_generate"] = {
            "mean_step_ms": round(per_step * 1000, 2),
            "stream_lm_over_bare": round(lm_only / per_step, 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-random-tts"])
    parser.add_argument("--steps", type=int, default=60, help="steady-state steps to time")
    parser.add_argument("--compare", choices=("auto", "yes", "no"), default="auto")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for name in args.models:
        compare = args.compare == "yes" or (args.compare == "auto" and name.startswith("tiny"))
        print(f"benchmarking {name}...", file=sys.stderr, flush=True)
        results[name] = bench(name, args.steps, compare)
    print(json.dumps({"benchmark": "tts", "text": TEXT, "models": results}, indent=2))


if __name__ == "__main__":
    main()
