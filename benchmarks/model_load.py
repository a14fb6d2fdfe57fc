"""Cost of xswarm's checked model loading against moshi_mlx's bare loading, and the codecs.

For one model (default ``tiny-random``; ``--model random-1b`` after
``xswarm models pull random-1b``) and each weights file present (bf16, q8,
q4), loads the LM both ways, interleaved so machine noise hits both alike:

- bare: what moshi_mlx's scripts do (``Lm``, ``set_dtype``, ``nn.quantize``,
  ``load_weights(file, strict=True)``, evaluate);
- xswarm: :func:`xswarm.models.load_lm` (header and shape checks, quantisation
  check, per-tensor progress callback).

Then times one Mimi frame (encode + decode) with the model's codec, and with
the other implementation too when the codec is full-size (rustymimi vs MLX).
Prints one JSON object.

    python benchmarks/model_load.py [--model NAME] [--runs 5] [--frames 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any


def _bare_load(path: str, raw_config: dict[str, Any], bits: int | None) -> float:
    import mlx.core as mx
    import mlx.nn as nn
    from moshi_mlx import models

    start = time.perf_counter()
    model = models.Lm(models.LmConfig.from_config_dict(raw_config))
    model.set_dtype(mx.bfloat16)
    if bits is not None:
        nn.quantize(model, bits=bits, group_size=32 if bits == 4 else 64)
    model.load_weights(path, strict=True)
    mx.eval(model.parameters())
    return time.perf_counter() - start


def _checked_load(resolved: Any, bits: int | None) -> float:
    from xswarm.models import load_lm

    calls = 0

    def progress(done: int, total: int) -> None:
        nonlocal calls
        calls += 1

    start = time.perf_counter()
    load_lm(resolved, quantize=bits, progress=progress)
    elapsed = time.perf_counter() - start
    assert calls > 0
    return elapsed


def _codec_frame_ms(codec: Any, frames: int) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    pcm = (0.1 * rng.standard_normal((frames + 2, 1920))).astype(np.float32)
    times = []
    for i in range(frames + 2):
        start = time.perf_counter()
        codec.decode_step(codec.encode_step(pcm[i]))
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times[2:]), 3)  # the first frames warm up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()

    from xswarm.models import load_codec, resolve
    from xswarm.models.mimi import CONFIG_KEY

    resolved = resolve(args.model)
    result: dict[str, Any] = {"benchmark": "model_load", "model": resolved.name, "runs": args.runs}
    for bits in (None, 8, 4):
        path = resolved.lm_weights_for(bits)
        if path is None:
            continue
        _bare_load(str(path), dict(resolved.config), bits)  # warm the page cache
        bare, checked = [], []
        for _ in range(args.runs):
            bare.append(_bare_load(str(path), dict(resolved.config), bits))
            checked.append(_checked_load(resolved, bits))
        key = "bf16" if bits is None else f"q{bits}"
        result[key] = {
            "file_bytes": path.stat().st_size,
            "bare_median_s": round(statistics.median(bare), 4),
            "xswarm_median_s": round(statistics.median(checked), 4),
            "ratio": round(statistics.median(checked) / statistics.median(bare), 3),
        }
    codecs = {"model": load_codec(resolved, num_codebooks=8)}
    if CONFIG_KEY not in resolved.config:
        codecs["mlx"] = load_codec(resolved, num_codebooks=8, backend="mlx")
    result["codec_frame_ms"] = {
        f"{name} ({type(codec).__name__})": _codec_frame_ms(codec, args.frames)
        for name, codec in codecs.items()
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
