"""The Moshi engine: frame contract, no length cap, reproducibility, text forcing, threading.

The model is the generated ``tiny-random`` (tests/model_fixtures.py), loaded
by the real loaders (``xswarm.models``) with its MLX Mimi codec and trained
SentencePiece tokenizer: it says nonsense, but every step runs the real
``LmGen`` code path, so the properties tested here (rolling the token buffer,
seeds, forcing, threading) are those of the real engine.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
import trio
from moshi_mlx.models import Lm, LmGen
from moshi_mlx.modules.kv_cache import RotatingKVCache

from xswarm import models
from xswarm.errors import UsageError
from xswarm.inference.moshi import (
    TEXT_EPAD_ID,
    TEXT_PAD_ID,
    FrameError,
    MoshiEngine,
    StepResult,
    load_engine,
    open_engine,
    window_cache,
)
from xswarm.inference.sampling import SamplingConfig
from xswarm.inference.worker import open_mlx_worker

MAX_STEPS = 8  # frames: a small token buffer (the least is 4 here), rolled twice in 3x
FRAMES = 60  # 4.8 s of input: enough for every test below
CAP = 60.0  # seconds: longer means hung


@dataclass(frozen=True)
class Tiny:
    """tiny-random, loaded once per module by the real loaders."""

    resolved: models.ResolvedModel
    lm: Lm
    tokenizer: Any

    def codec(self) -> models.Codec:
        cfg = self.lm.cfg
        return models.load_codec(
            self.resolved, num_codebooks=max(cfg.generated_codebooks, cfg.other_codebooks)
        )


@pytest.fixture(scope="module")
def tiny(tiny_models_dir: Path) -> Tiny:
    resolved = models.resolve(str(tiny_models_dir / "tiny-random"))
    lm, _ = models.load_lm(resolved)
    return Tiny(resolved, lm, models.load_text_tokenizer(resolved))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(1920)).astype(np.float32) for _ in range(FRAMES)]


@dataclass(frozen=True)
class Run:
    text_tokens: list[int]
    pcm: bytes
    results: list[StepResult]


def run(engine: MoshiEngine, frames: list[np.ndarray]) -> Run:
    results = [engine.step(frame) for frame in frames]
    return Run(
        text_tokens=[r.text_token for r in results],
        pcm=b"".join(r.pcm.tobytes() for r in results),
        results=results,
    )


def make_engine(tiny: Tiny, *, seed: int = 7, **options: Any) -> MoshiEngine:
    return MoshiEngine(
        tiny.lm, tiny.codec(), tiny.tokenizer, sampling=SamplingConfig(seed=seed), **options
    )


def test_runs_three_times_max_steps(tiny: Tiny, frames: list[np.ndarray]) -> None:
    engine = make_engine(tiny, max_steps=MAX_STEPS)
    out = run(engine, frames[: 3 * MAX_STEPS])
    assert [r.index for r in out.results] == list(range(3 * MAX_STEPS))
    assert engine.rolls >= 2
    assert all(r.pcm.shape == (1920,) and r.pcm.dtype == np.float32 for r in out.results)
    # The model's acoustic delay (1 frame, as in the 7B) is filled with silence, then it speaks.
    ready = [r.audio_ready for r in out.results]
    assert ready == [False] + [True] * (3 * MAX_STEPS - 1)
    assert not out.results[0].pcm.any() and out.results[-1].pcm.any()


def test_rolling_the_buffer_changes_nothing(tiny: Tiny, frames: list[np.ndarray]) -> None:
    rolled = run(make_engine(tiny, max_steps=MAX_STEPS), frames[: 3 * MAX_STEPS])
    unrolled_engine = make_engine(tiny, max_steps=4 * MAX_STEPS)
    unrolled = run(unrolled_engine, frames[: 3 * MAX_STEPS])
    assert unrolled_engine.rolls == 0
    assert rolled.text_tokens == unrolled.text_tokens
    assert rolled.pcm == unrolled.pcm


def test_same_seed_same_output(tiny: Tiny, frames: list[np.ndarray]) -> None:
    first = run(make_engine(tiny, seed=42), frames[:20])
    mx.random.seed(999)  # other MLX users move the global state: it must not matter
    _ = mx.random.uniform(shape=(3,)).tolist()
    second = run(make_engine(tiny, seed=42), frames[:20])
    other_seed = run(make_engine(tiny, seed=43), frames[:20])
    assert first.text_tokens == second.text_tokens
    assert first.pcm == second.pcm
    assert other_seed.text_tokens != first.text_tokens


def test_engine_does_not_disturb_global_random_state(tiny: Tiny, frames: list[np.ndarray]) -> None:
    engine = make_engine(tiny)
    mx.random.seed(5)
    expected = mx.random.uniform(shape=(4,)).tolist()
    mx.random.seed(5)
    engine.step(frames[0])
    assert mx.random.uniform(shape=(4,)).tolist() == expected


def test_reset_starts_the_same_conversation_again(tiny: Tiny, frames: list[np.ndarray]) -> None:
    engine = make_engine(tiny)
    first = run(engine, frames[:10])
    engine.reset()
    assert engine.steps == 0
    again = run(engine, frames[:10])
    assert again.text_tokens == first.text_tokens and again.pcm == first.pcm


def test_warm_up_leaves_no_trace(tiny: Tiny, frames: list[np.ndarray]) -> None:
    warmed = make_engine(tiny, warmup_steps=6)
    cold = make_engine(tiny, warmup_steps=0)
    assert warmed.warmup_seconds > 0 and warmed.steps == 0
    assert run(warmed, frames[:10]).text_tokens == run(cold, frames[:10]).text_tokens


@pytest.mark.parametrize(
    ("frame", "got"),
    [
        (np.zeros(1000, np.float32), "an array of shape (1000,) and dtype float32"),
        (np.zeros(1920, np.float64), "an array of shape (1920,) and dtype float64"),
        (np.zeros((1, 1920), np.float32), "an array of shape (1, 1920) and dtype float32"),
        ([0.0] * 1920, "a list"),
    ],
)
def test_frame_contract(tiny: Tiny, frame: object, got: str) -> None:
    engine = make_engine(tiny)
    message = f"expected a frame of 1920 float32 samples (80 ms at 24 kHz), got {got}"
    with pytest.raises(FrameError) as caught:
        engine.step(frame)  # type: ignore[arg-type]
    assert str(caught.value) == message
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, ValueError)
    assert engine.steps == 0  # nothing was consumed


def test_forced_text_comes_out_in_order(tiny: Tiny, frames: list[np.ndarray]) -> None:
    text = "Hello there, how are you?"
    engine = make_engine(tiny)
    queued = engine.force_text(text)
    assert queued == engine.pending_forced_steps
    out = run(engine, frames[: queued + 5])
    forced = out.results[:queued]
    assert all(r.forced for r in forced) and not any(r.forced for r in out.results[queued:])
    spoken = [r.text_token for r in forced if r.text_token not in (TEXT_PAD_ID, TEXT_EPAD_ID)]
    assert spoken == tiny.tokenizer.encode(text)
    assert "".join(r.text or "" for r in forced) == " " + text
    assert forced[0].text_token == TEXT_EPAD_ID  # a word starts the way Moshi's do
    assert engine.pending_forced_steps == 0


def test_forced_text_is_paced_like_speech(tiny: Tiny) -> None:
    engine = make_engine(tiny)
    text = "one two three four five six seven eight nine ten"
    seconds = engine.force_text(text) * 0.08
    assert 2.5 <= seconds <= 5.0  # ten words: ~3.5 s at 150 words a minute


class OutOfVocabulary:
    """The tiny tokenizer, but encoding to a token the model cannot emit."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return [600]

    def id_to_piece(self, id: int) -> str:
        return str(self.tokenizer.id_to_piece(id))

    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size())


def test_forced_text_outside_the_vocabulary_is_refused(tiny: Tiny) -> None:
    engine = MoshiEngine(tiny.lm, tiny.codec(), OutOfVocabulary(tiny.tokenizer))
    message = "cannot force text: token 600 is outside the model's text vocabulary of 512"
    with pytest.raises(UsageError, match=message):
        engine.force_text("anything")
    assert engine.pending_forced_steps == 0


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        (SamplingConfig(top_k=0), "sampling top_k must be between 1 and 2047"),
        (SamplingConfig(text_top_k=512), "sampling text_top_k must be between 1 and 511"),
        (SamplingConfig(temperature=-1.0), "sampling temperature must be 0 or more, got -1.0"),
    ],
)
def test_bad_sampling_is_a_usage_error(tiny: Tiny, sampling: SamplingConfig, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        MoshiEngine(tiny.lm, tiny.codec(), tiny.tokenizer, sampling=sampling)


def test_seed_is_drawn_and_reported_when_not_given(tiny: Tiny, frames: list[np.ndarray]) -> None:
    engine = MoshiEngine(tiny.lm, tiny.codec(), tiny.tokenizer)
    replay = make_engine(tiny, seed=engine.seed)
    assert run(engine, frames[:8]).text_tokens == run(replay, frames[:8]).text_tokens


async def test_all_mlx_work_runs_on_the_worker_thread(
    tiny_random: models.ResolvedModel, frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading (generation included), warm-up, steps: every MLX call on the worker."""
    threads: dict[str, set[int]] = {}

    def spy(name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            threads.setdefault(name, set()).add(threading.get_ident())
            return fn(*args, **kwargs)

        return recorded

    for name in ("resolve", "load_lm", "load_text_tokenizer", "load_codec"):
        monkeypatch.setattr(models, name, spy(name, getattr(models, name)))
    monkeypatch.setattr(LmGen, "_step", spy("LmGen._step", LmGen._step))
    codec_class = models.MlxMimiCodec  # tiny-random's codec
    for name in ("encode_step", "decode_step"):
        monkeypatch.setattr(codec_class, name, spy(name, getattr(codec_class, name)))
    progress: list[tuple[int, int]] = []
    with trio.fail_after(CAP):
        async with open_mlx_worker() as worker:
            engine = await open_engine(
                worker, "tiny-random", progress=lambda *p: progress.append(p)
            )
            await worker.run(engine.force_text, "hello")
            results = [await worker.run(engine.step, frame) for frame in frames[:6]]
            await worker.run(engine.reset)
            with pytest.raises(RuntimeError, match="go through the MLX worker"):
                engine.step(frames[0])  # from the Trio thread: refused before any MLX call
    assert [r.index for r in results] == list(range(6))
    assert engine.thread_ident == worker.thread_ident
    assert set(threads) == {
        "resolve", "load_lm", "load_text_tokenizer", "load_codec",
        "LmGen._step", "encode_step", "decode_step",
    }  # fmt: skip
    assert all(seen == {worker.thread_ident} for seen in threads.values()), threads
    assert engine.load_seconds > 0 and engine.warmup_seconds > 0
    assert progress and progress[-1][0] == progress[-1][1] > 0  # bytes loaded == total


@pytest.mark.parametrize("quantize", ["q4", "q8"])
def test_quantised_engine_steps(
    tiny_random: models.ResolvedModel, frames: list[np.ndarray], quantize: str
) -> None:
    engine = load_engine("tiny-random", quantize=quantize, sampling=SamplingConfig(seed=1))
    out = run(engine, frames[:5])
    assert all(0 <= token < 512 for token in out.text_tokens)
    assert out.results[-1].audio_ready


def test_unknown_quantisation_is_a_usage_error(tiny_random: models.ResolvedModel) -> None:
    with pytest.raises(UsageError, match="unknown quantisation 'q3': use q4, q8 or bf16"):
        load_engine("tiny-random", quantize="q3")


def test_runs_past_the_context_window(tiny: Tiny, frames: list[np.ndarray]) -> None:
    """The KV ring wraps (context shrunk to 12 steps) and the engine carries on."""
    context = 12
    cfg = models.load.lm_config_of(tiny.resolved)
    cfg.transformer = dataclasses.replace(cfg.transformer, context=context)
    lm = Lm(cfg)
    lm.set_dtype(mx.bfloat16)
    engine = MoshiEngine(lm, tiny.codec(), tiny.tokenizer, sampling=SamplingConfig(seed=2))
    out = run(engine, frames[: 4 * context])
    assert len(out.results) == 4 * context
    ring = engine._caches[0].self_attn
    assert ring.offset == 4 * context and ring.keys.shape[2] == context


def _attended_positions(cache: RotatingKVCache, context: int, steps: int) -> Iterator[set[int]]:
    """Feed positions as keys; yield the positions one attention layer then attends to.

    The slicing is moshi_mlx's ``Attention.__call__`` for a single query.
    """
    for position in range(steps):
        key = mx.full((1, 1, 1, 1), position, dtype=mx.float32)
        keys, _ = cache.update_and_fetch(key, key)
        k_len = keys.shape[2]
        target = 1 + min(context, k_len - 1)
        yield {int(k) for k in keys[0, 0, k_len - target :, 0].tolist()}


def test_window_cache_always_attends_to_the_last_context_steps(tiny: Tiny) -> None:
    context = tiny.lm.cfg.transformer.context
    (layer_cache, *_) = window_cache(tiny.lm)
    assert layer_cache.self_attn.max_size == context
    small = RotatingKVCache(head_dim=1, n_kv_heads=1, max_size=12)  # the same ring, scaled down
    for position, seen in enumerate(_attended_positions(small, 12, 5 * 12)):
        assert seen == set(range(max(0, position - 12 + 1), position + 1))


def test_stock_rotating_cache_loses_recent_steps_after_wrapping() -> None:
    """Why window_cache exists: moshi_mlx's max_seq_len ring, sliced to context, drops keys."""
    context, max_seq_len = 6, 10  # 3000 and 4096 in the real models, scaled down
    cache = RotatingKVCache(head_dim=1, n_kv_heads=1, max_size=max_seq_len)
    attended = list(_attended_positions(cache, context, 3 * max_seq_len))
    assert attended[max_seq_len - 1] == set(range(3, 10))  # before wrapping: the last 7
    # Then the ring wraps and "the last slots" are stale: at step 12 the layer attends
    # to steps 3..9 only, neither to its own key (12) nor to 10 and 11.
    assert attended[12] == set(range(3, 10))
