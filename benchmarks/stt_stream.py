"""What a turn's end costs in the conversation STT (xswarm.stt.stream): flush() against feed().

Prints one JSON object. For each model, in one run: a stream is opened, fed
a flite sentence frame by frame (``feed``, timed per frame) and flushed
(``flush``, timed), ``--turns`` times on the same stream (the cascade's use).
Reported per model: median ``feed`` ms per frame, median ``flush`` ms,
``flush_frames``, and ``flush_over_steps`` = flush / (flush_frames x feed):
how the flush compares with feeding that many frames (about 1 for Kyutai,
whose flush is exactly that; sphinx's flush also ends the utterance, a
search over all of it).

- ``tiny-random-stt``: the generated tiny model (real files, real loaders);
- ``sphinx-en``: pocketsphinx;
- ``stt-1b-random`` (``--stt-1b``, minutes): the published stt-1b-en_fr
  architecture (``benchmarks/transcribe.py``'s ``STT_1B_CONFIG``, with the
  end-of-turn heads) at random bf16 weights built in memory, the full-size
  random Mimi through rustymimi; fewer frames per turn (a step takes seconds
  on this CPU). Its words are noise; the cost is the real one.

    python benchmarks/stt_stream.py                 # tiny-random-stt and sphinx-en
    python benchmarks/stt_stream.py --stt-1b        # and the 1B architecture
"""

from __future__ import annotations

import argparse
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

from tests.speech import flite_speech  # noqa: E402
from xswarm.audio import FRAME_SAMPLES, SAMPLE_RATE  # noqa: E402
from xswarm.stt.stream import SttStream, open_stt_stream  # noqa: E402

SENTENCE = "please set a timer for ten minutes"  # ~2 s of flite speech


def speech_frames(directory: Path) -> list[np.ndarray]:
    import soundfile as sf
    import soxr

    spoken = flite_speech(SENTENCE, directory / "turn.wav", lead_seconds=0.3, tail_seconds=0.1)
    audio, rate = sf.read(spoken.path, dtype="float32")
    audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
    audio = np.pad(audio, (0, -len(audio) % FRAME_SAMPLES))
    return [audio[i : i + FRAME_SAMPLES] for i in range(0, len(audio), FRAME_SAMPLES)]


def measure(stream: SttStream, frames: list[np.ndarray], turns: int) -> dict[str, Any]:
    feed_ms: list[float] = []
    flush_ms: list[float] = []
    words = 0
    for _ in range(turns):
        for frame in frames:
            start = time.perf_counter()
            words += len(stream.feed(frame).words)
            feed_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        words += len(stream.flush())
        flush_ms.append((time.perf_counter() - start) * 1000)
    feed = statistics.median(feed_ms)
    flush = statistics.median(flush_ms)
    return {
        "flush_frames": stream.flush_frames,
        "has_vad": stream.has_vad,
        "turns": turns,
        "frames_per_turn": len(frames),
        "feed_ms_median": round(feed, 2),
        "flush_ms_median": round(flush, 2),
        "flush_ms": [round(ms, 1) for ms in flush_ms],
        "flush_over_steps": round(flush / (stream.flush_frames * feed), 2),
        "words": words,
    }


class _Pieces:
    """A stand-in for the 8000-piece tokenizer: every fourth piece starts a word."""

    def id_to_piece(self, id: int, /) -> str:
        return f"▁w{id}" if id % 4 == 0 else f"p{id}"

    def decode(self, ids: list[int], /) -> str:
        return "".join(self.id_to_piece(i) for i in ids).replace("▁", " ").strip()


def stt_1b_stream() -> SttStream:
    import functools

    import mlx.core as mx
    from moshi_mlx import models

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import transcribe as file_benchmark  # benchmarks/transcribe.py: the config and the codec

    from xswarm.models.load import RustMimiCodec
    from xswarm.stt.kyutai import KyutaiModel, SttConfig
    from xswarm.stt.stream import KyutaiSttStream

    mimi = file_benchmark.random_mimi_path()
    mx.random.seed(file_benchmark.SEED)
    config = file_benchmark.STT_1B_CONFIG
    lm = models.Lm(models.LmConfig.from_config_dict(config))
    lm.set_dtype(mx.bfloat16)
    mx.eval(lm.parameters())
    model = KyutaiModel(
        lm=lm,
        tokenizer=_Pieces(),
        codec_factory=functools.partial(RustMimiCodec, mimi, 32),
        stt=SttConfig.from_model_config(config, model="stt-1b-random"),
        name="stt-1b-random",
    )
    return KyutaiSttStream(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5, help="turns per small model")
    parser.add_argument("--stt-1b", action="store_true", help="also the 1B architecture (slow)")
    parser.add_argument("--stt-1b-frames", type=int, default=3, help="frames per 1B turn")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        frames = speech_frames(Path(scratch))
    result: dict[str, Any] = {"sentence": SENTENCE, "models": {}}
    for name in ("tiny-random-stt", "sphinx-en"):
        start = time.perf_counter()
        stream = open_stt_stream(name)
        opened = time.perf_counter() - start
        stream.feed(frames[0])  # warm-up: first-call costs are not a turn's
        stream.reset()
        result["models"][name] = {"open_s": round(opened, 2), **measure(stream, frames, args.turns)}
    if args.stt_1b:
        start = time.perf_counter()
        stream = stt_1b_stream()
        opened = time.perf_counter() - start
        stream.feed(frames[0])
        result["models"]["stt-1b-random"] = {
            "open_s": round(opened, 2),
            **measure(stream, frames[10 : 10 + args.stt_1b_frames], 1),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
