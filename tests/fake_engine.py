"""Stand-ins for the Moshi engine in talk tests: what ``inference_actor`` needs of one.

An engine has a ``seed`` and a ``step(pcm)`` returning an object with
``text_token``, ``text``, ``pcm`` and ``seconds`` (like
:class:`xswarm.inference.moshi.StepResult`). :func:`thread_worker` stands in for
the MLX worker (talk and cascade tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio


@dataclass
class FakeStep:
    text_token: int
    text: str | None
    pcm: np.ndarray
    seconds: float  # the step time the engine reports


class EchoEngine:
    """Answers each frame with itself and says nothing (padding token 3).

    ``step_seconds`` is only reported, not slept: tests that need a slow
    engine slow the worker instead.
    """

    seed = 7

    def __init__(self, step_seconds: float = 0.0) -> None:
        self.step_seconds = step_seconds

    def step(self, pcm: np.ndarray) -> FakeStep:
        return FakeStep(3, None, pcm, self.step_seconds)


class ThreadWorker:
    """A stand-in for the MLX worker: one thread per call is fine for fake models (no MLX)."""

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args)


@contextlib.asynccontextmanager
async def thread_worker() -> AsyncIterator[ThreadWorker]:
    """The ``worker_factory`` of talk tests with fake engines."""
    yield ThreadWorker()
