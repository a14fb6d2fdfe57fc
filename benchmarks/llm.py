"""What the cascade's LLM client adds to an answer's latency, beside the model itself.

Prints one JSON object. Measured side by side in one run against the test
server of tests/llm_server.py (a real HTTP server on 127.0.0.1, in this same
process, so the GIL is shared: the numbers are an upper bound):

- ``first_delta``: from calling ``stream()`` to the first text delta, with the
  server answering at once, on a kept-alive connection (one ``open_chat`` for
  the session, as the cascade does) and on a fresh connection each time;
- ``chunk_delivery``: from the server writing a chunk to the client yielding it
  (the per-word overhead while an answer streams);
- ``mlx_token``: one token of a tiny mlx-lm model through the MLX worker (one
  worker call per token, as :mod:`xswarm.llm.mlx` does) against the same
  generator advanced directly on one thread: the worker's cost per token;
- ``build_messages``: the prompt of a turn with a long history and facts.

Each is also given as a fraction of the 80 ms frame.

    python benchmarks/llm.py [--requests 50] [--tokens 64]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.llm_server import MODEL, Script, serve_llm
from xswarm.llm import ChatMessage, LlmConfig, build_messages, open_chat

FRAME_MS = 80.0  # Moshi's frame: the budget a talk actor must stay well inside
QUESTION = [ChatMessage("user", "Hello?")]


def _stats(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "p50_frame_fraction": round(p50 / FRAME_MS, 4),
    }


async def _first_delta(url: str, requests: int, reuse: bool) -> list[float]:
    config = LlmConfig(url, MODEL)
    times: list[float] = []
    async with open_chat(config) as shared:
        for _ in range(requests):
            async with contextlib.AsyncExitStack() as stack:
                chat = shared if reuse else await stack.enter_async_context(open_chat(config))
                start = time.perf_counter()
                deltas = await stack.enter_async_context(contextlib.aclosing(chat.stream(QUESTION)))
                async for _ in deltas:
                    times.append((time.perf_counter() - start) * 1000)
                    break
    return times


def _mlx_tokens(tokens: int) -> dict[str, object]:
    """Per-token time: through the MLX worker vs directly, on a tiny random chat model."""
    import mlx_lm

    from tests.tiny_llm import make_tiny_chat_model
    from xswarm.inference.worker import MlxWorker

    with tempfile.TemporaryDirectory() as directory, MlxWorker() as worker:
        path = worker.call(make_tiny_chat_model, Path(directory) / "m")
        model, tokenizer = worker.call(mlx_lm.load, str(path))
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hello?"}], add_generation_prompt=True
        )

        def generator() -> object:
            # eos never ends it: a fixed number of steps for both ways
            return mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=tokens)

        def direct() -> list[float]:
            gen = generator()
            times = []
            while True:
                start = time.perf_counter()
                piece = next(gen, None)  # type: ignore[call-overload]
                times.append((time.perf_counter() - start) * 1000)
                if piece is None:
                    return times[1:]  # the first call is the prefill

        async def through_worker() -> list[float]:
            gen = await worker.run(generator)
            times = []
            while True:
                start = time.perf_counter()
                piece = await worker.run(next, gen, None)
                times.append((time.perf_counter() - start) * 1000)
                if piece is None:
                    return times[1:]

        direct_ms = worker.call(direct)
        worker_ms = trio.run(through_worker)
    d, w = statistics.median(direct_ms), statistics.median(worker_ms)
    return {
        "tokens": len(worker_ms),
        "direct": _stats(direct_ms),
        "through_worker": _stats(worker_ms),
        "worker_overhead_ms": round(w - d, 3),
        "ratio_worker_to_direct": round(w / d, 2),
    }


def _build(turns: int) -> dict[str, float]:
    history = [
        ChatMessage("user" if i % 2 == 0 else "assistant", f"turn {i} " + "words " * 20)
        for i in range(turns)
    ]
    facts = [f"The user likes thing {i}." for i in range(50)]
    times = []
    for _ in range(200):
        start = time.perf_counter()
        build_messages("You are Sage.", facts, history, "And now?")
        times.append((time.perf_counter() - start) * 1000)
    return {"history_turns": turns, **_stats(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    with serve_llm() as server:
        server.default = Script(text="Hi there, I am listening to you now.")
        reused = trio.run(_first_delta, server.url, args.requests, True)
        fresh = trio.run(_first_delta, server.url, args.requests, False)

        server.default = Script(text=" ".join(f"w{i}" for i in range(20)), delay=0.01)
        start = len(server.chat_requests)

        async def delivery() -> list[float]:
            lags: list[float] = []
            async with open_chat(LlmConfig(server.url, MODEL)) as chat:
                for index in range(args.requests // 5 or 1):
                    arrivals: list[float] = []
                    async with contextlib.aclosing(chat.stream(QUESTION)) as deltas:
                        async for _ in deltas:
                            arrivals.append(time.monotonic())
                    sent = server.chat_requests[start + index].chunk_times
                    lags += [(got - put) * 1000 for got, put in zip(arrivals, sent, strict=True)]
            return lags

        lags = trio.run(delivery)

    result = {
        "benchmark": "llm",
        "first_delta": {
            "kept_alive": _stats(reused),
            "fresh_connection": _stats(fresh),
            "ratio_fresh_to_kept_alive": round(
                statistics.median(fresh) / statistics.median(reused), 2
            ),
        },
        "chunk_delivery": {"chunks": len(lags), **_stats(lags)},
        "mlx_token": _mlx_tokens(args.tokens),
        "build_messages": _build(200),
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
