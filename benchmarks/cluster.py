"""``xswarm transcribe --ray`` throughput: 1 vs 2 worker processes, and what each file costs.

Prints one JSON object. Everything runs in one process, side by side, on one
local Ray runtime (``ray.init(num_cpus=2)``, started once) with ``sphinx-en``
(pocketsphinx, one CPU per worker) on flite speech generated first:

- ``in_process``: :func:`xswarm.transcribe.transcribe_files` on the corpus in
  this process, no Ray: the single-process baseline.
- ``ray_1_worker`` / ``ray_2_workers``: :func:`xswarm.cluster.job.run_job`, the
  whole corpus job (inputs, manifest, actors, batches, fsync-ed outputs) with 1
  and 2 actors. ``audio_s_per_wall_s`` counts from the first worker ready to the
  last result (``wall_seconds``; the model loads in parallel before that, see
  ``sphinx_load_s``), ``job_s`` the whole call including actor start.
- ``per_file_overhead_ms``: tiny inputs (``--tiny`` files of 0.1 s), 1 worker,
  minus the same files in process, per file: what scheduling, the Ray hop, the
  result and its manifest line (an fsync) cost per file. ``manifest_line_ms``
  times the manifest append alone.
- ``runs``: every run (``--rounds``, order reversed each round, medians
  reported above): ``in_process`` in audio s per wall s, ``tiny_in_process``
  in seconds, the Ray runs as their summaries.

Scaling on paper to N machines (one worker per CPU, sphinx-en, or one per
node for Kyutai's MLX models, which use every core of a node):

- Workers: throughput is N x cores x (one worker's audio s per wall s) as
  long as files outnumber workers by a few times (batches are handed out
  longest first, so the last batches are the short ones and the tail is short).
- Model load, once per worker: 0.5 s for sphinx-en; for Kyutai's 1B about 2 GB
  of weights read from each node's own Hugging Face cache (``xswarm models
  pull`` on every node first): a fixed start-up cost of tens of seconds,
  amortised over the job, not a per-file cost.
- File I/O: every worker reads its audio from the shared filesystem. 16 kHz
  16-bit WAV is 32 kB per audio second, so M audio s per wall s need 32 x M kB/s
  from the file server (0.3 GB/s for M = 10000, e.g. 100 nodes at 100x real
  time each): past that the file server, not the workers, is the limit
  (compressed FLAC/Opus divides it by 2 to 20). Outputs are a few kB per file.
- The driver: one process handles every result and appends one fsync-ed
  manifest line per file, ``per_file_overhead_ms`` each (measured below).
  At 5 ms per file it keeps up with 200 files/s, i.e. 200 x (mean file length)
  audio s per wall s: short files (a few seconds) make the driver the
  bottleneck first; Kyutai's batches and long files push it far out.

    python benchmarks/cluster.py                 # 24 speech files, 60 tiny files
    python benchmarks/cluster.py --files 48 --tiny 100
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import soundfile as sf

from tests.speech import SENTENCES, flite_speech
from xswarm.cluster.inputs import InputFile
from xswarm.cluster.job import ClusterOptions, ProgressLine, run_job
from xswarm.cluster.manifest import Manifest
from xswarm.stt.sphinx import SphinxEngine
from xswarm.transcribe import TranscribeOptions, transcribe_files

TINY_SECONDS = 0.1  # s of near-silence per tiny file: the work is all overhead


def in_process(paths: list[Path], out: Path) -> float:
    engine = SphinxEngine()
    started = time.perf_counter()
    transcribe_files([str(p) for p in paths], engine, TranscribeOptions(output_dir=out),
                     stdout=io.StringIO(), report=lambda error: None)
    return time.perf_counter() - started


def on_ray(paths: list[Path], out: Path, workers: int) -> dict[str, float]:
    progress = ProgressLine(io.StringIO(), live=False, report=lambda text: None)
    started = time.perf_counter()
    summary = run_job([InputFile(str(p), str(p)) for p in paths],
                      ClusterOptions(output_dir=out, workers=workers, model="sphinx-en"),
                      progress=progress, note=lambda text: None)
    job = time.perf_counter() - started
    assert summary.done == len(paths) and not summary.failed, summary
    return {
        "workers": summary.workers,
        "audio_s": round(summary.audio_seconds, 2),
        "wall_s": round(summary.wall_seconds, 2),
        "job_s": round(job, 2),
        "audio_s_per_wall_s": round(summary.audio_seconds / summary.wall_seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=24, help="speech files (flite, ~2 s)")
    parser.add_argument("--tiny", type=int, default=60, help="0.1 s files for the overhead")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of the three paths, order reversed each round (ABC CBA)")
    args = parser.parse_args()

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="xsb") as temp:
        root = Path(temp)
        speech = []
        for i in range(args.files):
            path = root / "speech" / f"s{i:03d}.wav"
            path.parent.mkdir(exist_ok=True)
            flite_speech(SENTENCES[i % len(SENTENCES)], path, lead_seconds=0.3,
                         tail_seconds=0.3)
            speech.append(path)
        audio = sum(sf.info(str(p)).duration for p in speech)
        tiny = []
        noise = np.random.default_rng(0).normal(0, 1e-3, int(16_000 * TINY_SECONDS))
        for i in range(args.tiny):
            path = root / "tiny" / f"t{i:03d}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, noise.astype(np.float32), 16_000)
            tiny.append(path)

        started = time.perf_counter()
        SphinxEngine()
        load = time.perf_counter() - started
        started = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 object_store_memory=100 * 1024 * 1024, log_to_driver=False,
                 logging_level=logging.ERROR)
        ray_start = time.perf_counter() - started
        # This machine is shared: each path runs in every round, the order reversed
        # from one round to the next, and the medians are compared.
        runs: dict[str, list] = {"in_process": [], "ray_1_worker": [], "ray_2_workers": [],
                                 "tiny_in_process": [], "tiny_ray_1_worker": []}
        paths = {
            "in_process": lambda out: audio / in_process(speech, out),
            "ray_1_worker": lambda out: on_ray(speech, out, 1),
            "ray_2_workers": lambda out: on_ray(speech, out, 2),
            "tiny_in_process": lambda out: in_process(tiny, out),
            "tiny_ray_1_worker": lambda out: on_ray(tiny, out, 1),
        }
        try:
            for round_ in range(args.rounds):
                order = list(paths) if round_ % 2 == 0 else list(paths)[::-1]
                for name in order:
                    runs[name].append(paths[name](root / f"out-{name}-{round_}"))
        finally:
            ray.shutdown()
        local = statistics.median(runs["in_process"])
        one = statistics.median(r["audio_s_per_wall_s"] for r in runs["ray_1_worker"])
        two = statistics.median(r["audio_s_per_wall_s"] for r in runs["ray_2_workers"])
        local_tiny_s = statistics.median(runs["tiny_in_process"])
        tiny_ray_s = statistics.median(r["wall_s"] for r in runs["tiny_ray_1_worker"])

        with Manifest(root / "m.jsonl") as manifest:
            started = time.perf_counter()
            for i in range(200):
                manifest.append({"type": "file", "file": f"f{i}.wav", "status": "done"})
            manifest_ms = (time.perf_counter() - started) / 200 * 1000

    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]},
        "corpus": {"files": len(speech), "audio_s": round(audio, 2), "tiny_files": len(tiny)},
        "sphinx_load_s": round(load, 3),
        "ray_start_s": round(ray_start, 2),
        "audio_s_per_wall_s": {
            "in_process": round(local, 2), "ray_1_worker": round(one, 2),
            "ray_2_workers": round(two, 2),
        },
        "speedup_2_vs_1": round(two / one, 2),
        "ray_1_worker_vs_in_process": round(one / local, 2),
        "per_file_overhead_ms": round((tiny_ray_s - local_tiny_s) / len(tiny) * 1000, 1),
        "tiny_in_process_ms_per_file": round(local_tiny_s / len(tiny) * 1000, 1),
        "tiny_ray_ms_per_file": round(tiny_ray_s / len(tiny) * 1000, 1),
        "runs": {name: [r if isinstance(r, dict) else round(r, 2) for r in found]
                 for name, found in runs.items()},
        "manifest_line_ms": round(manifest_ms, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
