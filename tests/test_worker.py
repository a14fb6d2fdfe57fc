"""Tests of xswarm.inference.worker: all MLX calls on one thread; results, errors, cancel, close."""

from __future__ import annotations

import functools
import gc
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from xswarm.inference.worker import THREAD_NAME, MlxWorker, WorkerClosedError, open_mlx_worker

CAP = 10.0  # seconds: longer means hung


def mlx_matmul(seed: int, seen: list[int]) -> np.ndarray:
    """Real MLX work: build arrays, multiply, evaluate; record the thread it ran on."""
    import mlx.core as mx

    seen.append(threading.get_ident())
    a = np.random.default_rng(seed).standard_normal((32, 48)).astype(np.float32)
    b = np.random.default_rng(seed + 1).standard_normal((48, 16)).astype(np.float32)
    product = mx.matmul(mx.array(a), mx.array(b))
    mx.eval(product)
    return np.array(product)


def expected_matmul(seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((32, 48)).astype(np.float32)
    b = np.random.default_rng(seed + 1).standard_normal((48, 16)).astype(np.float32)
    return a @ b


def thread_names() -> list[str]:
    return sorted(t.name for t in threading.enumerate())


async def test_many_concurrent_tasks_all_run_on_the_one_worker_thread() -> None:
    before = set(threading.enumerate())
    seen: list[int] = []
    results: dict[int, np.ndarray] = {}
    with trio.fail_after(CAP):
        async with open_mlx_worker() as worker:
            assert THREAD_NAME in thread_names()

            async def client(first: int) -> None:
                for seed in range(first, first + 10):
                    results[seed] = await worker.run(mlx_matmul, seed, seen)

            async with trio.open_nursery() as nursery:
                for first in range(0, 60, 10):
                    nursery.start_soon(client, first)
            ident = worker.thread_ident
    assert sorted(results) == list(range(60))
    for seed, result in results.items():
        np.testing.assert_allclose(result, expected_matmul(seed), rtol=1e-4, atol=1e-4)
    assert len(seen) == 60
    assert set(seen) == {ident}
    assert ident != threading.get_ident()
    assert set(threading.enumerate()) == before


async def test_calls_from_one_task_run_in_order() -> None:
    order: list[int] = []
    async with open_mlx_worker() as worker:
        for i in range(20):
            await worker.run(order.append, i)
    assert order == list(range(20))


def _raise_deep(message: str) -> None:
    raise ValueError(message)


def _calls_deep(message: str) -> None:
    _raise_deep(message)


async def test_exception_reaches_the_caller_with_its_original_traceback() -> None:
    async with open_mlx_worker() as worker:
        with pytest.raises(ValueError, match=r"^bad frame$") as info:
            await worker.run(_calls_deep, "bad frame")
        # The worker is still usable after a failed call.
        assert await worker.run(sum, [1, 2, 3]) == 6
    names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert names[-2:] == ["_calls_deep", "_raise_deep"]


async def test_mlx_error_propagates() -> None:
    def bad_shapes() -> Any:
        import mlx.core as mx

        return mx.matmul(mx.zeros((2, 3)), mx.zeros((4, 5)))

    async with open_mlx_worker() as worker:
        with pytest.raises(ValueError, match=r"matmul"):
            await worker.run(bad_shapes)


def _blocking_call(
    token: trio.lowlevel.TrioToken,
    entered: trio.Event,
    release: threading.Event,
    log: list[str],
    fail: bool,
) -> str:
    token.run_sync_soon(entered.set)
    release.wait(CAP)
    log.append("abandoned call finished")
    if fail:
        raise RuntimeError("nobody hears this")
    return "thrown away"


@pytest.mark.parametrize("fail", [False, True])
async def test_cancel_mid_call_returns_at_once_and_abandons_the_result(fail: bool) -> None:
    before = set(threading.enumerate())
    token = trio.lowlevel.current_trio_token()
    entered = trio.Event()
    release = threading.Event()
    log: list[str] = []
    outcome: list[str] = []
    with trio.fail_after(CAP):
        async with open_mlx_worker() as worker:
            async with trio.open_nursery() as nursery:

                async def caller() -> None:
                    try:
                        outcome.append(
                            await worker.run(_blocking_call, token, entered, release, log, fail)
                        )
                    except trio.Cancelled:
                        outcome.append("cancelled")
                        raise

                nursery.start_soon(caller)
                await entered.wait()
                nursery.cancel_scope.cancel()
            # The task is back while the MLX call is still blocked.
            assert outcome == ["cancelled"]
            assert log == []
            release.set()
            # The next call queues behind the abandoned one and gets its own result.
            assert await worker.run(lambda: "next") == "next"
            assert log == ["abandoned call finished"]
    assert set(threading.enumerate()) == before


async def test_cancel_while_queued_skips_the_call() -> None:
    token = trio.lowlevel.current_trio_token()
    entered = trio.Event()
    release = threading.Event()
    log: list[str] = []
    ran: list[str] = []
    with trio.fail_after(CAP):
        async with open_mlx_worker() as worker, trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(worker.run, _blocking_call, token, entered, release, log, False)
            )
            await entered.wait()
            with trio.CancelScope() as scope:
                scope.cancel()  # the task is cancelled while its call waits in the queue
                await worker.run(ran.append, "queued")
            assert scope.cancelled_caught
            release.set()
        assert log == ["abandoned call finished"]  # the first call ran to the end ...
    assert ran == []  # ... the cancelled one never ran


async def test_close_waits_for_the_running_call_and_joins_even_when_cancelled() -> None:
    before = set(threading.enumerate())
    token = trio.lowlevel.current_trio_token()
    entered = trio.Event()
    release = threading.Event()
    log: list[str] = []
    with trio.fail_after(CAP):
        with trio.CancelScope() as scope:
            async with open_mlx_worker() as worker, trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(
                        worker.run, _blocking_call, token, entered, release, log, False
                    )
                )
                await entered.wait()
                scope.cancel()  # Ctrl-C while the model is mid-step
                # Let the call end a little later, from another (non-trio) thread.
                timer = threading.Timer(0.05, release.set)
                timer.start()
    timer.join()
    assert scope.cancelled_caught
    assert log == ["abandoned call finished"]
    assert worker.closed
    assert set(threading.enumerate()) == before


def test_sync_context_manager_call_and_close() -> None:
    before = set(threading.enumerate())
    seen: list[int] = []
    with MlxWorker() as worker:
        result = worker.call(mlx_matmul, 3, seen)
        with pytest.raises(ValueError, match=r"^bad frame$"):
            worker.call(_calls_deep, "bad frame")
        ident = worker.thread_ident
    np.testing.assert_allclose(result, expected_matmul(3), rtol=1e-4, atol=1e-4)
    assert seen == [ident]
    assert set(threading.enumerate()) == before
    with pytest.raises(WorkerClosedError, match=r"^the MLX worker is closed; open a new one$"):
        worker.call(sum, [1])
    worker.close()  # idempotent


async def test_run_after_close_raises() -> None:
    async with open_mlx_worker() as worker:
        pass
    with pytest.raises(WorkerClosedError):
        await worker.run(sum, [1])


async def test_blocking_call_from_trio_code_is_refused() -> None:
    async with open_mlx_worker() as worker:
        with pytest.raises(RuntimeError, match=r"use `await worker.run"):
            worker.call(sum, [1])


def test_call_from_the_worker_thread_runs_inline() -> None:
    with MlxWorker() as worker:

        def outer() -> tuple[int, int]:
            inner: Callable[[], int] = threading.get_ident
            return threading.get_ident(), worker.call(inner)

        a, b = worker.call(outer)
    assert a == b == worker.thread_ident


def test_forgotten_worker_stops_its_thread_when_collected() -> None:
    before = set(threading.enumerate())
    worker = MlxWorker()
    thread = next(t for t in threading.enumerate() if t.ident == worker.thread_ident)
    assert not thread.daemon
    del worker
    gc.collect()
    thread.join(CAP)
    assert not thread.is_alive()
    assert set(threading.enumerate()) == before


async def test_call_submitted_while_closing_is_refused_not_lost() -> None:
    token = trio.lowlevel.current_trio_token()
    entered = trio.Event()
    release = threading.Event()
    log: list[str] = []
    worker = MlxWorker()
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(worker.run, _blocking_call, token, entered, release, log, False)
            )
            await entered.wait()
            nursery.start_soon(worker.aclose)  # waits for the running call
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(WorkerClosedError):
                await worker.run(sum, [1])
            release.set()
    assert log == ["abandoned call finished"]
    assert not any(t.ident == worker.thread_ident for t in threading.enumerate())


def test_interpreter_exits_even_if_a_worker_was_never_closed() -> None:
    script = (
        "from xswarm.inference.worker import MlxWorker\n"
        "worker = MlxWorker()\n"  # a module global: alive until the interpreter exits
        "print(worker.call(sum, [1, 2]))\n"
    )
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=CAP
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "3\n", "")
    assert time.monotonic() - t0 < 5.0
