"""The Moshi engine: frame contract, no length cap, reproducibility, text forcing, threading.

The model is a tiny random-weight ``moshi_mlx`` LM: it says nonsense, but every
step runs the real ``LmGen`` code path, so the properties tested here (rolling
the token buffer, seeds, forcing) are those of the real engine.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import mlx.core as mx
import numpy as np
import pytest
import trio
from moshi_mlx.models import Lm, LmConfig, LmGen
from moshi_mlx.models.lm import DepFormerConfig
from moshi_mlx.modules.kv_cache import RotatingKVCache
from moshi_mlx.modules.transformer import TransformerConfig

from xswarm.errors import UsageError
from xswarm.inference.moshi import (
    TEXT_EPAD_ID,
    TEXT_PAD_ID,
    FrameError,
    MoshiEngine,
    StepResult,
    window_cache,
)
from xswarm.inference.sampling import SamplingConfig
from xswarm.inference.worker import open_mlx_worker

CONTEXT = 12  # steps: small, so that the KV ring wraps within a test
MAX_STEPS = 20  # the smallest token buffer the tests roll through


def _transformer(d_model: int, layers: int, context: int, pos: str) -> TransformerConfig:
    return TransformerConfig(
        d_model=d_model,
        num_heads=4,
        num_layers=layers,
        dim_feedforward=4 * d_model,
        causal=True,
        norm_first=True,
        bias_ff=False,
        bias_attn=False,
        layer_scale=None,
        context=context,
        max_period=10_000,
        use_conv_block=False,
        use_conv_bias=True,
        cross_attention=False,
        gating=True,
        norm="rms_norm",
        positional_embedding=pos,
        conv_layout=False,
        conv_kernel_size=3,
        kv_repeat=1,
        max_seq_len=4096,
    )


class FakeCodec:
    """A deterministic stand-in for Mimi: codes from the samples, a tone from the codes."""

    def __init__(self) -> None:
        self.frames_decoded = 0
        self.threads: set[int] = set()  # where encode/decode ran

    def encode_step(self, pcm: np.ndarray) -> np.ndarray:
        self.threads.add(threading.get_ident())
        return (np.abs(pcm[:8]) * 1e4).astype(np.int64) % 2048

    def decode_step(self, codes: np.ndarray) -> np.ndarray:
        self.threads.add(threading.get_ident())
        self.frames_decoded += 1
        pitch = 1 + int(codes.sum()) % 7
        return np.sin(np.arange(1920, dtype=np.float32) * pitch / 100).astype(np.float32)

    def reset(self) -> None:
        self.frames_decoded = 0


class FakeTokenizer:
    """SentencePiece-like: "w12" is token 16, each word a single "▁wN" piece."""

    pieces = ("<unk>", "<s>", "</s>", "<pad>", *(f"\u2581w{i}" for i in range(996)))

    def encode(self, text: str) -> list[int]:
        return [4 + int(word[1:]) for word in text.split()]

    def id_to_piece(self, id: int) -> str:
        return self.pieces[id]

    def vocab_size(self) -> int:
        return len(self.pieces)


@pytest.fixture(scope="module")
def lm() -> Lm:
    cfg = LmConfig(
        transformer=_transformer(64, 2, CONTEXT, "rope"),
        depformer=DepFormerConfig(transformer=_transformer(32, 1, 8, "none"), num_slices=8),
        text_in_vocab_size=1001,
        text_out_vocab_size=1000,
        audio_vocab_size=2049,
        audio_codebooks=16,
        audio_delays=([0] + [2] * 7) * 2,
        conditioners={},
    )
    mx.random.seed(1234)
    model = Lm(cfg)
    mx.eval(model.parameters())
    return model


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(1920)).astype(np.float32) for _ in range(3 * MAX_STEPS)]


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


def make_engine(lm: Lm, *, seed: int = 7, **options: object) -> MoshiEngine:
    return MoshiEngine(
        lm, FakeCodec(), FakeTokenizer(), sampling=SamplingConfig(seed=seed), **options
    )


def test_runs_three_times_max_steps(lm: Lm, frames: list[np.ndarray]) -> None:
    engine = make_engine(lm, max_steps=MAX_STEPS)
    out = run(engine, frames)
    assert [r.index for r in out.results] == list(range(3 * MAX_STEPS))
    assert engine.rolls >= 2
    assert all(r.pcm.shape == (1920,) and r.pcm.dtype == np.float32 for r in out.results)
    # The model's acoustic delay (2 frames here) is filled with silence, then it speaks.
    ready = [r.audio_ready for r in out.results]
    assert ready == [False, False] + [True] * (3 * MAX_STEPS - 2)
    assert not out.results[0].pcm.any() and out.results[-1].pcm.any()


def test_rolling_the_buffer_changes_nothing(lm: Lm, frames: list[np.ndarray]) -> None:
    rolled = run(make_engine(lm, max_steps=MAX_STEPS), frames)
    unrolled_engine = make_engine(lm, max_steps=4 * MAX_STEPS)
    unrolled = run(unrolled_engine, frames)
    assert unrolled_engine.rolls == 0
    assert rolled.text_tokens == unrolled.text_tokens
    assert rolled.pcm == unrolled.pcm


def test_same_seed_same_output(lm: Lm, frames: list[np.ndarray]) -> None:
    first = run(make_engine(lm, seed=42), frames)
    mx.random.seed(999)  # other MLX users move the global state: it must not matter
    _ = mx.random.uniform(shape=(3,)).tolist()
    second = run(make_engine(lm, seed=42), frames)
    other_seed = run(make_engine(lm, seed=43), frames)
    assert first.text_tokens == second.text_tokens
    assert first.pcm == second.pcm
    assert other_seed.text_tokens != first.text_tokens


def test_engine_does_not_disturb_global_random_state(lm: Lm, frames: list[np.ndarray]) -> None:
    engine = make_engine(lm)
    mx.random.seed(5)
    expected = mx.random.uniform(shape=(4,)).tolist()
    mx.random.seed(5)
    engine.step(frames[0])
    assert mx.random.uniform(shape=(4,)).tolist() == expected


def test_reset_starts_the_same_conversation_again(lm: Lm, frames: list[np.ndarray]) -> None:
    engine = make_engine(lm)
    first = run(engine, frames[:10])
    engine.reset()
    assert engine.steps == 0
    again = run(engine, frames[:10])
    assert again.text_tokens == first.text_tokens and again.pcm == first.pcm


def test_warm_up_leaves_no_trace(lm: Lm, frames: list[np.ndarray]) -> None:
    warmed = make_engine(lm, warmup_steps=6)
    cold = make_engine(lm, warmup_steps=0)
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
def test_frame_contract(lm: Lm, frame: object, got: str) -> None:
    engine = make_engine(lm)
    message = f"expected a frame of 1920 float32 samples (80 ms at 24 kHz), got {got}"
    with pytest.raises(FrameError) as caught:
        engine.step(frame)  # type: ignore[arg-type]
    assert str(caught.value) == message
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, ValueError)
    assert engine.steps == 0  # nothing was consumed


def test_forced_text_comes_out_in_order(lm: Lm, frames: list[np.ndarray]) -> None:
    engine = make_engine(lm)
    queued = engine.force_text("w10 w11 w12")
    assert queued == engine.pending_forced_steps
    out = run(engine, frames[:30])
    forced = [r for r in out.results if r.forced]
    assert len(forced) == queued and all(r.forced for r in out.results[:queued])
    words = [r.text for r in forced if r.text_token not in (TEXT_PAD_ID, TEXT_EPAD_ID)]
    assert words == [" w10", " w11", " w12"]
    assert forced[0].text_token == TEXT_EPAD_ID  # a word starts the way Moshi's do
    assert engine.pending_forced_steps == 0


def test_forced_text_outside_the_vocabulary_is_refused(lm: Lm) -> None:
    engine = make_engine(lm)
    with pytest.raises(UsageError, match="token 1004 is outside the model's text vocabulary"):
        engine.force_text("w1000")
    assert engine.pending_forced_steps == 0


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        (SamplingConfig(top_k=0), "sampling top_k must be between 1 and 2047"),
        (SamplingConfig(text_top_k=1000), "sampling text_top_k must be between 1 and 999"),
        (SamplingConfig(temperature=-1.0), "sampling temperature must be 0 or more, got -1.0"),
    ],
)
def test_bad_sampling_is_a_usage_error(lm: Lm, sampling: SamplingConfig, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        MoshiEngine(lm, FakeCodec(), FakeTokenizer(), sampling=sampling)


def test_seed_is_drawn_and_reported_when_not_given(lm: Lm, frames: list[np.ndarray]) -> None:
    engine = MoshiEngine(lm, FakeCodec(), FakeTokenizer())
    replay = make_engine(lm, seed=engine.seed)
    assert run(engine, frames[:8]).text_tokens == run(replay, frames[:8]).text_tokens


async def test_engine_runs_on_the_mlx_worker_thread(
    lm: Lm, frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    lm_threads: set[int] = set()
    real_step = LmGen._step

    def spy(gen: LmGen, *args: object, **kwargs: object) -> object:
        lm_threads.add(threading.get_ident())
        return real_step(gen, *args, **kwargs)

    monkeypatch.setattr(LmGen, "_step", spy)
    codec = FakeCodec()
    with trio.fail_after(30):
        async with open_mlx_worker() as worker:
            build = functools.partial(
                MoshiEngine, lm, codec, FakeTokenizer(), sampling=SamplingConfig(seed=3)
            )
            engine = await worker.run(build)
            await worker.run(engine.force_text, "w1 w2")
            results = [await worker.run(engine.step, frame) for frame in frames[:6]]
            await worker.run(engine.reset)
            with pytest.raises(RuntimeError, match="go through the MLX worker"):
                engine.step(frames[0])  # from the Trio thread: refused before any MLX call
    assert [r.index for r in results] == list(range(6))
    assert engine.thread_ident == worker.thread_ident
    assert lm_threads == {worker.thread_ident}  # warm-up and real steps
    assert codec.threads == {worker.thread_ident}


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


def test_window_cache_always_attends_to_the_last_context_steps(lm: Lm) -> None:
    (layer_cache, *_) = window_cache(lm)
    attended = list(_attended_positions(layer_cache.self_attn, CONTEXT, 5 * CONTEXT))
    for position, seen in enumerate(attended):
        assert seen == set(range(max(0, position - CONTEXT + 1), position + 1))


def test_stock_rotating_cache_loses_recent_steps_after_wrapping() -> None:
    """Why window_cache exists: moshi_mlx's max_seq_len ring, sliced to context, drops keys."""
    context, max_seq_len = 6, 10  # 3000 and 4096 in the real models, scaled down
    cache = RotatingKVCache(head_dim=1, n_kv_heads=1, max_size=max_seq_len)
    attended = list(_attended_positions(cache, context, 3 * max_seq_len))
    assert attended[max_seq_len - 1] == set(range(3, 10))  # before wrapping: the last 7
    # Then the ring wraps and "the last slots" are stale: at step 12 the layer attends
    # to steps 3..9 only, neither to its own key (12) nor to 10 and 11.
    assert attended[12] == set(range(3, 10))
