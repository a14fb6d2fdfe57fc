"""``xswarm transcribe`` throughput (Kyutai stt-1b architecture) and memory on a 1-hour input.

Prints one JSON object.

Throughput (``--part throughput``): the published stt-1b-en_fr architecture
(dim 2048, 16 layers, context 750, 32 codebooks in, text vocabulary 8000,
``stt_config`` delay 0.5 s) with random bf16 weights, built in memory (same
seed for everything), and the full-size Mimi codec (random weights,
generated once into the cache, read by rustymimi as the published file is).
On the same weights and the same audio, in one run:

- ``reference``: ``moshi_mlx/run_inference.py``'s loop (rustymimi
  ``encode_step``, ``LmGen.step`` with a temperature-0 text sampler,
  ``.item()``), one input;
- ``batch_1`` / ``batch_8``: xswarm's Kyutai engine step
  (``xswarm.stt.kyutai._Batch.step``: one codec per row, one LM call for all
  rows) with 1 and 8 inputs.

A step of the 1B takes seconds on this CPU (FACTS.md: 2.1-2.35 s), so each
path runs a bounded number of steps (``--steps``, after one untimed warm-up
step) instead of a whole file, the three interleaved step by step (this
machine is shared: load hits all three alike); audio seconds per wall second
= rows x 0.08 s / median step time. The tokens are compared too: batch 1
must equal the reference, and every row of the batch must equal batch 1.
``matmul_ceiling`` measures what one bf16 matmul of the 1B's shape costs for
8 rows against 1 on this CPU: the most batching can gain here.

Memory (``--part memory``): a 1-hour 16 kHz WAV is written block by block
(speech-like bursts of noise and pauses), then transcribed through the real
file loop (``open_source`` -> engine -> segmenter -> JSON lines to a null
stream) with ``--memory-model`` (default ``tiny-random-stt``: the 1B would
take a day here). Resident memory is sampled every 0.2 s; the report gives it
after the model is loaded and warmed up, its peak during the run, and the
peak above the loaded model (target: under 200 MB). What grows with model
size is the KV ring: ``context + 1`` slots per layer, computed for stt-1b.

    python benchmarks/transcribe.py                      # both parts
    python benchmarks/transcribe.py --part throughput --steps 6
    python benchmarks/transcribe.py --part memory --hours 1
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

STEP_SECONDS = 0.08  # s of audio per model step (12.5 Hz)
SEED = 299_792_458  # moshi_mlx's seed

# kyutai/stt-1b-en_fr in the published config.json format (the fields LmConfig reads).
STT_1B_CONFIG: dict[str, Any] = {
    "model_type": "stt",
    "dim": 2048,
    "text_card": 8000,
    "existing_text_padding_id": 3,
    "n_q": 32,
    "dep_q": 0,
    "card": 2048,
    "num_heads": 16,
    "num_layers": 16,
    "hidden_scale": 4.125,
    "causal": True,
    "layer_scale": None,
    "context": 750,
    "max_period": 100000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "depformer_dim": 1024,
    "depformer_num_heads": 16,
    "depformer_num_layers": 6,
    "depformer_dim_feedforward": 4224,
    "depformer_multi_linear": True,
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "delays": [0] * 33,
    "conditioners": {},
    "cross_attention": False,
    "extra_heads_num_heads": 4,
    "extra_heads_dim": 6,
    "stt_config": {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0},
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Samples resident memory every ``interval`` seconds on a thread; keeps the peak."""

    def __init__(self, interval: float = 0.2) -> None:
        self.peak = rss_bytes()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def random_mimi_path() -> Path:
    """A full-size Mimi with random weights in the published layout (made once, ~385 MB)."""
    from xswarm import paths

    path = paths.cache_dir() / "benchmarks" / "mimi-random-full.safetensors"
    if not path.is_file():
        import mlx.core as mx
        from moshi_mlx.models.mimi import Mimi, mimi_202407

        from xswarm.models.mimi import pytorch_state_from_mlx, randomize

        path.parent.mkdir(parents=True, exist_ok=True)
        mx.random.seed(SEED + 1)
        mimi = Mimi(mimi_202407(32))
        randomize(mimi, SEED + 2)
        partial = path.with_name("mimi-random-full.partial.safetensors")  # MLX wants the suffix
        mx.save_safetensors(str(partial), pytorch_state_from_mlx(mimi))
        partial.replace(path)
    return path


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """24 kHz float32: bursts of shaped noise (0.2-0.6 s) separated by pauses."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * 24_000), np.float32)
    t = 0
    while t < len(out):
        burst = int(rng.uniform(0.2, 0.6) * 24_000)
        envelope = np.hanning(burst).astype(np.float32)
        chunk = (rng.standard_normal(burst).astype(np.float32) * 0.2 * envelope)[: len(out) - t]
        out[t : t + len(chunk)] = chunk
        t += burst + int(rng.uniform(0.05, 0.5) * 24_000)
    return out


def throughput(steps: int, batch: int) -> dict[str, Any]:
    import mlx.core as mx
    from moshi_mlx import models, utils

    from xswarm.models.load import RustMimiCodec
    from xswarm.stt.kyutai import _Batch

    mimi_path = random_mimi_path()
    mx.random.seed(SEED)
    config = models.LmConfig.from_config_dict(STT_1B_CONFIG)
    lm = models.Lm(config)
    lm.set_dtype(mx.bfloat16)
    mx.eval(lm.parameters())
    parameters = sum(v.size for _, v in _flatten(lm.parameters()))
    audio = speechlike((steps + 1) * STEP_SECONDS, seed=1)
    frames = [audio[i * 1920 : (i + 1) * 1920] for i in range(steps + 1)]

    # Three paths on the same weights and audio, interleaved step by step so that
    # the load of this shared machine hits them alike: moshi_mlx/run_inference.py's
    # loop (one input), and the engine's step with 1 and with `batch` inputs.
    import rustymimi

    tokenizer = rustymimi.Tokenizer(str(mimi_path), num_codebooks=32)
    lm.transformer_cache = lm.transformer.make_rot_cache()
    gen = models.LmGen(
        model=lm, max_steps=steps + 1, text_sampler=utils.Sampler(top_k=25, temp=0),
        audio_sampler=utils.Sampler(top_k=250, temp=0), check=False,
    )

    def reference_step(frame: np.ndarray) -> int:
        codes = tokenizer.encode_step(frame[None, None, :])
        codes = mx.array(codes).transpose(0, 2, 1)[:, :, :32]
        token: int = gen.step(codes[0])[0].item()
        return token

    single = _Batch(lm, [RustMimiCodec(mimi_path, 32)])
    batched = _Batch(lm, [RustMimiCodec(mimi_path, 32) for _ in range(batch)])
    paths = {
        "reference": (1, reference_step),
        "batch_1": (1, lambda frame: single.step([frame])),
        f"batch_{batch}": (batch, lambda frame: batched.step([frame] * batch)),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    tokens: dict[str, list[Any]] = {name: [] for name in paths}
    names = list(paths)
    for i, frame in enumerate(frames):
        # alternate who goes first: no path always runs right after the big batch
        order = names if i % 2 == 0 else [names[1], names[0], names[2]]
        for name in order:
            step = paths[name][1]
            start = time.perf_counter()
            tokens[name].append(step(frame))
            if i > 0:  # the first step of each path is its warm-up
                times[name].append(time.perf_counter() - start)
    result: dict[str, Any] = {
        "model": "stt-1b-en_fr architecture, random bf16 weights",
        "parameters": parameters,
        "codec": "full-size Mimi (random weights) via rustymimi, one per input",
        "steps_timed": steps,
        "note": f"{steps} steps per path after one warm-up step, interleaved; "
        "a whole file would take 12.5 steps per audio second",
    }
    for name, (rows, _) in paths.items():
        result[name] = _rate(rows, times[name])
    result["batch_1_tokens_equal_reference"] = [t[0] for t in tokens["batch_1"]] == tokens[
        "reference"
    ]
    result[f"batch_{batch}_rows_equal_batch_1"] = all(
        row == one[0]
        for rows, one in zip(tokens[f"batch_{batch}"], tokens["batch_1"], strict=True)
        for row in rows
    )
    ref = result["reference"]["audio_seconds_per_second"]
    for name in ("batch_1", f"batch_{batch}"):
        result[f"{name}_vs_reference"] = round(result[name]["audio_seconds_per_second"] / ref, 3)
    result["kv_ring_bytes_per_row"] = 16 * 2 * (750 + 1) * 2048 * 2  # layers, k+v, slots, dim, bf16
    result["matmul_ceiling"] = matmul_ceiling(batch)
    return result


def matmul_ceiling(batch: int) -> dict[str, float]:
    """How much more a bf16 matmul of the 1B's MLP shape costs for ``batch`` rows than for 1.

    On a memory-bound device (a GPU, Apple silicon) this is close to 1 and a
    batch of 8 costs about one step; the MLX CPU backend here computes bf16
    matmuls at a few GFLOPS, so the cost grows with the rows and caps what
    batching can gain on this machine.
    """
    import mlx.core as mx

    weight = mx.random.normal((11264, 2048)).astype(mx.bfloat16)
    mx.eval(weight)
    cost = {}
    for rows in (1, batch):
        x = mx.random.normal((rows, 1, 2048)).astype(mx.bfloat16)
        mx.eval(x @ weight.T)
        start = time.perf_counter()
        for _ in range(10):
            mx.eval(x @ weight.T)
        cost[rows] = (time.perf_counter() - start) / 10
    return {
        "ms_batch_1": round(cost[1] * 1000, 2),
        f"ms_batch_{batch}": round(cost[batch] * 1000, 2),
        "max_batch_gain": round(batch * cost[1] / cost[batch], 2),
    }


def _flatten(tree: Any) -> list[tuple[str, Any]]:
    from mlx.utils import tree_flatten

    return tree_flatten(tree)


def _rate(rows: int, seconds: list[float]) -> dict[str, float]:
    import statistics

    median = statistics.median(seconds)
    return {
        "rows": rows,
        "median_seconds_per_step": round(median, 3),
        "min_seconds_per_step": round(min(seconds), 3),
        "audio_seconds_per_second": round(rows * STEP_SECONDS / median, 4),
    }


def write_long_wav(path: Path, hours: float) -> float:
    """A 16 kHz 16-bit WAV of ``hours``, written in 60 s blocks (flat memory)."""
    import soundfile as sf
    import soxr

    seconds = hours * 3600
    with sf.SoundFile(path, "w", samplerate=16_000, channels=1, subtype="PCM_16") as out:
        done = 0.0
        block = 0
        while done < seconds:
            length = min(60.0, seconds - done)
            out.write(soxr.resample(speechlike(length, seed=block), 24_000, 16_000))
            done += length
            block += 1
    return seconds


class _Null(io.TextIOBase):
    """A text sink that counts lines (stands in for a pipe to ``jq``)."""

    lines = 0

    def write(self, text: str) -> int:  # type: ignore[override]
        self.lines += text.count("\n")
        return len(text)


def memory(hours: float, model: str) -> dict[str, Any]:
    import tempfile

    from xswarm.stt.kyutai import load_kyutai_engine
    from xswarm.transcribe import TranscribeOptions, transcribe_files

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "long.wav"
        seconds = write_long_wav(path, hours)
        engine = load_kyutai_engine(model, batch_size=1)
        warm = Path(directory) / "warm.wav"
        import soundfile as sf

        sf.write(warm, speechlike(2.0, seed=99), 24_000)
        transcribe_files([str(warm)], engine, TranscribeOptions(), stdout=_Null(),
                         report=print)
        loaded = rss_bytes()
        sink = _Null()
        start = time.perf_counter()
        with RssSampler() as sampler:
            failures = transcribe_files([str(path)], engine, TranscribeOptions(), stdout=sink,
                                        report=print)
        wall = time.perf_counter() - start
    return {
        "model": model,
        "input_seconds": seconds,
        "failures": failures,
        "segments_written": sink.lines,
        "wall_seconds": round(wall, 1),
        "audio_seconds_per_second": round(seconds / wall, 2),
        "rss_loaded_mb": round(loaded / 1e6, 1),
        "rss_peak_mb": round(sampler.peak / 1e6, 1),
        "peak_above_loaded_mb": round((sampler.peak - loaded) / 1e6, 1),
        "target_mb": 200,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("throughput", "memory", "both"), default="both")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per path (1B)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--memory-model", default="tiny-random-stt")
    args = parser.parse_args()
    report: dict[str, Any] = {"benchmark": "transcribe"}
    if args.part in ("throughput", "both"):
        report["throughput"] = throughput(args.steps, args.batch)
    if args.part == "memory":
        report["memory"] = memory(args.hours, args.memory_model)
    elif args.part == "both":
        # a fresh process: the 1B's freed buffers must not hide the growth we measure
        import subprocess

        child = subprocess.run(
            [sys.executable, __file__, "--part", "memory", "--hours", str(args.hours),
             "--memory-model", args.memory_model],
            check=True, capture_output=True, text=True,
        )
        report["memory"] = json.loads(child.stdout)["memory"]
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
