"""An MLX language model in this process, as a :class:`~xswarm.llm.client.ChatClient`.

``--llm-model mlx:PATH`` runs a chat model with ``mlx-lm`` on the MLX thread
instead of calling a server: nothing else to install or start on a Mac. PATH is
a directory in the mlx-lm layout (``config.json``, ``*.safetensors``, a Hugging
Face tokenizer with a chat template; e.g. ``mlx-community/...-4bit`` snapshots),
or a Hugging Face repo id already in the cache.

Compatibility (measured on Linux x86_64, Python 3.11, CPU): moshi_mlx 0.3.0
pins ``mlx<0.27``. mlx-lm 0.26.0-0.26.4 need ``mlx>=0.26.0``, and 0.26.4 runs
on mlx 0.26.5 (CPU backend here); mlx-lm 0.27.x needs ``mlx>=0.29`` and 0.28+
``mlx>=0.29.2``, so none later fits. mlx-lm needs ``transformers``; current
transformers needs ``huggingface_hub>=0.30`` (1.x/2.x), while xswarm pins
``huggingface_hub<0.29``, so pip settles on ``transformers 4.50.3`` with
``tokenizers 0.21.4``: the ``mlx-llm`` extra pins ``mlx-lm>=0.26,<0.27`` and
``transformers<4.51`` so it resolves at once.

Threading: MLX is not thread-safe and every MLX call of the session goes through
the one :class:`~xswarm.inference.worker.MlxWorker` (the cascade passes its own:
the LLM then interleaves with STT and TTS frames). Loading, the prompt's prefill
and each generated token are separate worker calls, so STT/TTS frames queued
meanwhile wait at most one token's compute, except behind the prefill (the
first token), which takes the whole prompt at once.

Cancellation (barge-in): the token being computed finishes on the MLX thread
and is thrown away; the generator is then closed on the MLX thread (shielded,
time-limited), so nothing of the answer runs after the caller leaves.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from xswarm.errors import ModelError, UsageError
from xswarm.llm.client import MLX_PREFIX, ChatMessage, LlmConfig, LlmError

if TYPE_CHECKING:
    from xswarm.inference.worker import MlxWorker

DEFAULT_MAX_TOKENS: Final = 256  # tokens: a spoken answer is short; stops a runaway model
TEMPERATURE: Final = 0.7  # the usual chat default: varied but on topic
CLOSE_SECONDS: Final = 5.0  # s to wait for the MLX thread to close a cancelled generation
INSTALL_HINT: Final = "pip install 'xswarm[mlx-llm]'"


def _load(source: str) -> tuple[Any, Any]:
    """mlx-lm's model and tokenizer for ``source`` (on the MLX thread)."""
    try:
        import mlx_lm
    except ImportError:
        raise UsageError(f"{MLX_PREFIX}{source} needs the mlx-lm package: {INSTALL_HINT}") from None
    path = Path(source).expanduser()
    if not path.exists() and ("/" not in source or source.startswith((".", "/", "~"))):
        raise UsageError(
            f"no MLX language model at {source}: pass a directory with config.json, "
            "*.safetensors and a tokenizer (or a cached Hugging Face repo id) as "
            f"--llm-model {MLX_PREFIX}PATH"
        )
    try:
        model, tokenizer = mlx_lm.load(str(path) if path.exists() else source)
    except Exception as error:  # mlx-lm raises all kinds: FileNotFound, ValueError, hub errors
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise ModelError(f"cannot load the MLX language model {source}: {reason}") from None
    if tokenizer.chat_template is None:
        raise ModelError(
            f"the MLX language model {source} has no chat template: use an instruct/chat model"
        )
    return model, tokenizer


class MlxChat:
    """A :class:`~xswarm.llm.client.ChatClient` running an mlx-lm model on ``worker``."""

    def __init__(self, config: LlmConfig, worker: MlxWorker, model: Any, tokenizer: Any) -> None:
        self.config = config
        self.source = config.model.removeprefix(MLX_PREFIX)
        self._worker = worker
        self._model = model
        self._tokenizer = tokenizer

    def _start(self, messages: Sequence[ChatMessage]) -> Any:
        """The token generator for ``messages`` (on the MLX thread; nothing computed yet)."""
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        prompt = self._tokenizer.apply_chat_template(
            [asdict(message) for message in messages], add_generation_prompt=True
        )
        max_tokens = self.config.max_tokens or DEFAULT_MAX_TOKENS
        return stream_generate(
            self._model,
            self._tokenizer,
            prompt,
            max_tokens=max_tokens,
            sampler=make_sampler(temp=TEMPERATURE),
        )

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncGenerator[str, None]:
        """The answer as text deltas; see :class:`~xswarm.llm.client.ChatClient`.

        Raises :class:`LlmError` when generation fails. One worker call per token.
        """
        run = self._worker.run
        try:
            generation = await run(self._start, messages)
        except Exception as error:
            raise self._error(error) from None
        try:
            while True:
                try:
                    piece = await run(next, generation, None)
                except Exception as error:
                    raise self._error(error) from None
                if piece is None:
                    return
                if piece.text:
                    yield piece.text
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_SECONDS):
                await run(generation.close)

    def _error(self, error: Exception) -> LlmError:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        return LlmError(f"the MLX language model {self.source} failed: {reason}")


@contextlib.asynccontextmanager
async def open_mlx_chat(
    config: LlmConfig, worker: MlxWorker | None = None
) -> AsyncIterator[MlxChat]:
    """An :class:`MlxChat` for ``config.model`` = ``mlx:PATH``, loaded on ``worker``.

    Without ``worker``, a worker of its own is opened and closed with the block
    (fine alone); when an MLX worker thread already runs (a session), ``worker``
    must be that session's worker, else RuntimeError: two MLX threads crash. Raises
    :class:`UsageError` (mlx-lm not installed, no such path) or
    :class:`ModelError` (not a loadable chat model).
    """
    source = config.model.removeprefix(MLX_PREFIX)
    async with contextlib.AsyncExitStack() as stack:
        if worker is None:
            from xswarm.inference.worker import THREAD_NAME, open_mlx_worker

            if any(thread.name == THREAD_NAME for thread in threading.enumerate()):
                # A second MLX thread next to the session's crashes the process (seen:
                # SIGSEGV in talk --mode cascade): a programming error, said plainly.
                raise RuntimeError(
                    "open_chat() for an mlx: model needs the session's MlxWorker "
                    "(worker=...): an MLX worker thread is already running"
                )
            worker = await stack.enter_async_context(open_mlx_worker())
        model, tokenizer = await worker.run(functools.partial(_load, source))
        yield MlxChat(config, worker, model, tokenizer)
