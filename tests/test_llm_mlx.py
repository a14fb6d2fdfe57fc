"""The in-process MLX LLM (``--llm-model mlx:PATH``) on a tiny random chat model.

The model is generated (tests/tiny_llm.py) in mlx-lm's layout and loaded by
the real ``mlx_lm.load``; every MLX call must run on the one MLX worker thread,
the stream must be the model's whole answer, and leaving early must close the
generation on that thread.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx_lm
import pytest
import trio

from tests.tiny_llm import make_tiny_chat_model
from xswarm.errors import ModelError, UsageError
from xswarm.inference.worker import open_mlx_worker
from xswarm.llm import ChatMessage, LlmConfig, build_messages, open_chat
from xswarm.llm.mlx import TEMPERATURE

MESSAGES = build_messages("You are Sage.", ["The user's name is Ada."], [], "Hello there!")


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_chat_model(tmp_path_factory.mktemp("tiny-chat") / "model")


class Spy:
    """Wraps mlx_lm.stream_generate: on which threads it runs, how far, who closes it."""

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.tokens = 0
        self.closed_on: int | None = None
        self.prompt: list[int] = []

    def __call__(self, model: Any, tokenizer: Any, prompt: Any, **options: Any) -> Iterator[Any]:
        self.prompt = list(prompt)
        inner = self.real(model, tokenizer, prompt, **options)
        try:
            for piece in inner:
                self.threads.add(threading.get_ident())
                self.tokens += 1
                yield piece
        finally:
            self.closed_on = threading.get_ident()
            inner.close()

    real = staticmethod(mlx_lm.stream_generate)


def _reference(model_dir: Path, messages: list[ChatMessage], max_tokens: int) -> str:
    """The whole answer straight from mlx-lm with the same seed and sampler (MLX thread)."""
    import mlx.core as mx
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = mlx_lm.load(str(model_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True
    )
    mx.random.seed(7)
    pieces = mlx_lm.stream_generate(
        model, tokenizer, prompt, max_tokens=max_tokens, sampler=make_sampler(temp=TEMPERATURE)
    )
    return "".join(piece.text for piece in pieces)


async def test_mlx_model_streams_its_whole_answer_on_the_mlx_thread(
    tiny_chat: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlx.core as mx

    spy = Spy()
    monkeypatch.setattr(mlx_lm, "stream_generate", spy)
    config = LlmConfig(url="", model=f"mlx:{tiny_chat}", max_tokens=12)
    with trio.fail_after(60):
        async with open_mlx_worker() as worker, open_chat(config, worker=worker) as chat:
            await worker.run(mx.random.seed, 7)
            async with contextlib.aclosing(chat.stream(MESSAGES)) as deltas:
                received = [delta async for delta in deltas]
            monkeypatch.setattr(mlx_lm, "stream_generate", Spy.real)
            expected = await worker.run(_reference, tiny_chat, MESSAGES, 12)
    assert received and all(received)
    assert "".join(received) == expected
    assert spy.threads == {worker.thread_ident} and spy.closed_on == worker.thread_ident
    assert 1 <= spy.tokens <= 13  # max_tokens reached or the end token sampled
    # The prompt is the chat template over the system message (persona, rules, facts).
    tokenizer = mlx_lm.load(str(tiny_chat))[1]
    prompt = tokenizer.decode(spy.prompt)
    assert prompt.startswith("<|system|>You are Sage.")
    assert "The user's name is Ada." in prompt and prompt.endswith(
        "Hello there!<|end|><|assistant|>"
    )


async def test_leaving_early_closes_the_generation_on_the_mlx_thread(
    tiny_chat: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy()
    monkeypatch.setattr(mlx_lm, "stream_generate", spy)
    config = LlmConfig(url="", model=f"mlx:{tiny_chat}", max_tokens=200)
    with trio.fail_after(60):
        async with open_mlx_worker() as worker, open_chat(config, worker=worker) as chat:
            async with contextlib.aclosing(chat.stream(MESSAGES)) as deltas:
                async for _ in deltas:
                    at_break = spy.tokens
                    break
            assert spy.closed_on == worker.thread_ident
    assert spy.tokens == at_break < 200  # not one token more than was consumed


async def test_without_a_worker_it_opens_and_closes_its_own(tiny_chat: Path) -> None:
    before = {t.ident for t in threading.enumerate()}
    config = LlmConfig(url="", model=f"mlx:{tiny_chat}", max_tokens=3)
    with trio.fail_after(60):
        async with (
            open_chat(config) as chat,
            contextlib.aclosing(chat.stream(MESSAGES)) as deltas,
        ):
            assert [d async for d in deltas]
    assert {t.ident for t in threading.enumerate()} <= before


async def test_a_second_mlx_thread_is_refused(tiny_chat: Path) -> None:
    config = LlmConfig(url="", model=f"mlx:{tiny_chat}")
    async with open_mlx_worker():
        with pytest.raises(RuntimeError, match=r"needs the session's MlxWorker \(worker=\.\.\.\)"):
            async with open_chat(config):
                pass


async def test_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(
        UsageError, match=f"^no MLX language model at {re.escape(str(missing))}: pass a directory"
    ):
        async with open_chat(LlmConfig("", f"mlx:{missing}")):
            pass


async def test_a_directory_without_weights_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(
        ModelError, match=f"^cannot load the MLX language model {re.escape(str(tmp_path))}: "
    ):
        async with open_chat(LlmConfig("", f"mlx:{tmp_path}")):
            pass


async def test_a_model_without_chat_template_is_a_model_error(tmp_path: Path) -> None:
    await trio.to_thread.run_sync(
        functools.partial(make_tiny_chat_model, tmp_path / "m", chat_template=False)
    )
    with pytest.raises(ModelError, match=r"has no chat template: use an instruct/chat model$"):
        async with open_chat(LlmConfig("", f"mlx:{tmp_path / 'm'}")):
            pass
