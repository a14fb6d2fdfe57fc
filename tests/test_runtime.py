"""Tests of xswarm.runtime: channels and their overflow policy, supervision, signals."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from xswarm.errors import ExitCode, Interrupted, UsageError, XswarmError
from xswarm.runtime import (
    Actor,
    ChannelStats,
    Overflow,
    Receiver,
    Sender,
    Session,
    cleanup_scope,
    open_channel,
    pump,
    run_actors,
)

CAP = 5.0  # seconds: any test taking longer is hung, not slow

# --------------------------------------------------------------------------- channels


async def test_block_channel_delivers_in_order_and_ends_when_senders_close() -> None:
    tx, rx = open_channel("numbers", 3)
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:

            async def produce() -> None:
                async with tx:
                    for i in range(10):
                        await tx.send(i)

            nursery.start_soon(produce)
            got = [item async for item in rx]
    assert got == list(range(10))
    stats = rx.metrics.snapshot()
    assert (stats.sent, stats.received, stats.dropped, stats.depth) == (10, 10, 0, 0)
    assert stats.max_depth <= 3


async def test_block_channel_send_nowait_raises_wouldblock_when_full() -> None:
    tx, _rx = open_channel("numbers", 2)
    tx.send_nowait(1)
    tx.send_nowait(2)
    with pytest.raises(trio.WouldBlock):
        tx.send_nowait(3)
    assert tx.metrics.snapshot() == ChannelStats(
        name="numbers",
        capacity=2,
        overflow=Overflow.BLOCK,
        sent=2,
        received=0,
        dropped=0,
        depth=2,
        max_depth=2,
    )


async def test_block_channel_send_waits_for_room() -> None:
    tx, rx = open_channel("numbers", 1)
    tx.send_nowait(1)
    sent = trio.Event()
    async with trio.open_nursery() as nursery:

        async def second() -> None:
            await tx.send(2)
            sent.set()

        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()
        assert rx.receive_nowait() == 1
        await sent.wait()
    assert rx.receive_nowait() == 2


def test_full_drop_oldest_channel_drops_oldest_and_counts() -> None:
    tx, rx = open_channel("frames", 3, overflow=Overflow.DROP_OLDEST)
    for item in "abcdefg":
        tx.send_nowait(item)  # never raises WouldBlock
    stats = tx.metrics.snapshot()
    assert (stats.sent, stats.dropped, stats.depth, stats.max_depth) == (7, 4, 3, 3)
    assert [rx.receive_nowait() for _ in range(3)] == ["e", "f", "g"]
    with pytest.raises(trio.WouldBlock):
        rx.receive_nowait()
    assert rx.metrics.received == 3


async def test_drop_oldest_async_send_never_waits() -> None:
    tx, rx = open_channel("frames", 2, overflow=Overflow.DROP_OLDEST)
    with trio.fail_after(CAP):
        for i in range(100):
            await tx.send(i)
    assert [rx.receive_nowait(), rx.receive_nowait()] == [98, 99]
    assert tx.metrics.dropped == 98


async def test_drop_oldest_hands_item_to_waiting_receiver() -> None:
    tx, rx = open_channel("frames", 1, overflow=Overflow.DROP_OLDEST)
    got: list[int] = []
    async with trio.open_nursery() as nursery:

        async def consume() -> None:
            got.append(await rx.receive())

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        tx.send_nowait(7)
    assert got == [7]
    assert tx.metrics.dropped == 0


def test_drop_oldest_sender_sees_consumer_leave() -> None:
    tx, rx = open_channel("frames", 2, overflow=Overflow.DROP_OLDEST)
    rx2 = rx.clone()
    tx.send_nowait(1)
    rx.close()
    tx.send_nowait(2)  # one receiver is still open
    rx2.close()
    with pytest.raises(trio.BrokenResourceError):
        tx.send_nowait(3)


def test_receivers_end_when_every_sender_clone_closes() -> None:
    tx, rx = open_channel("frames", 4, overflow=Overflow.DROP_OLDEST)
    tx2 = tx.clone()
    with tx:
        tx.send_nowait(1)
    tx2.send_nowait(2)
    tx2.close()
    tx2.close()  # idempotent
    assert [rx.receive_nowait(), rx.receive_nowait()] == [1, 2]
    with pytest.raises(trio.EndOfChannel):
        rx.receive_nowait()
    with pytest.raises(trio.ClosedResourceError):
        tx.send_nowait(3)


def test_offer_never_raises_and_counts_what_it_could_not_queue() -> None:
    tx, rx = open_channel("frames", 1)
    assert tx.offer(1) is True
    assert tx.offer(2) is False  # BLOCK channel full: the offered item is dropped
    rx.close()
    assert tx.offer(3) is False  # no receiver left
    tx.close()
    assert tx.offer(4) is False  # closed sender
    assert (tx.metrics.sent, tx.metrics.dropped, tx.metrics.offered_dropped) == (1, 3, 3)


def test_open_channel_rejects_bad_capacity() -> None:
    with pytest.raises(ValueError, match=r"^channel 'x': capacity must be an int >= 0, got -1$"):
        open_channel("x", -1)
    with pytest.raises(ValueError, match=r"capacity must be an int >= 0, got inf"):
        open_channel("x", float("inf"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^channel 'x': DROP_OLDEST needs capacity >= 1, got 0$"):
        open_channel("x", 0, overflow=Overflow.DROP_OLDEST)


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=6),
    ops=st.lists(st.sampled_from(["send", "receive"]), max_size=80),
)
def test_drop_oldest_invariants(capacity: int, ops: list[str]) -> None:
    tx, rx = open_channel("frames", capacity, overflow=Overflow.DROP_OLDEST)
    model: deque[int] = deque()
    received: list[int] = []
    next_item = 0
    for op in ops:
        if op == "send":
            tx.send_nowait(next_item)
            model.append(next_item)
            if len(model) > capacity:
                model.popleft()
            next_item += 1
        else:
            try:
                received.append(rx.receive_nowait())
            except trio.WouldBlock:
                assert not model
            else:
                assert received[-1] == model.popleft()
        m = tx.metrics
        assert m.depth <= capacity
        assert m.depth == len(model)
        assert m.sent == m.received + m.dropped + m.depth
        assert m.max_depth <= capacity
    # Survivors keep their order, and everything received was sent in order.
    assert received == sorted(received)
    drained = [rx.receive_nowait() for _ in range(len(model))]
    assert drained == list(model) == sorted(drained)


# --------------------------------------------------------------------------- supervision


async def _source(tx: Sender[int], count: int) -> None:
    with tx:
        for i in range(count):
            await tx.send(i)


async def _sink(rx: Receiver[int], into: list[int]) -> None:
    with rx:
        async for item in rx:
            into.append(item)


async def test_end_of_input_flows_through_and_run_returns() -> None:
    session = Session()
    a_tx, a_rx = session.open_channel("raw", 2)
    b_tx, b_rx = session.open_channel("doubled", 2)
    c_tx, c_rx = session.open_channel("out", 2, overflow=Overflow.BLOCK)
    got: list[int] = []
    actors = [
        Actor("source", functools.partial(_source, a_tx, 50)),
        Actor("double", functools.partial(pump, a_rx, b_tx, lambda x: 2 * x)),
        Actor("inc", functools.partial(pump, b_rx, c_tx, lambda x: x + 1)),
        Actor("sink", functools.partial(_sink, c_rx, got)),
    ]
    with trio.fail_after(CAP):
        await session.run(actors)
    assert got == [2 * i + 1 for i in range(50)]
    assert [(s.name, s.sent, s.received, s.dropped) for s in session.channel_metrics()] == [
        ("raw", 50, 50, 0),
        ("doubled", 50, 50, 0),
        ("out", 50, 50, 0),
    ]
    assert session.running_actors == frozenset()


def _forever_actor(name: str, started: list[str], finished: list[str]) -> Actor:
    async def run() -> None:
        started.append(name)
        try:
            await trio.sleep_forever()
        finally:
            finished.append(name)

    return Actor(name, run)


async def test_cancellation_reaches_every_actor() -> None:
    started: list[str] = []
    finished: list[str] = []
    session = Session()
    names = ["mic", "inference", "playback", "logger"]
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    session.run,
                    [_forever_actor(n, started, finished) for n in names],
                    handle_signals=False,
                )
            )
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(started) == sorted(names)
            session.cancel("test over")
    assert sorted(finished) == sorted(names)


async def test_outer_cancel_reaches_every_actor_and_propagates() -> None:
    started: list[str] = []
    finished: list[str] = []
    names = ["a", "b", "c"]
    with trio.fail_after(CAP):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(
                        run_actors,
                        [_forever_actor(n, started, finished) for n in names],
                        handle_signals=False,
                    )
                )
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
    assert scope.cancelled_caught
    assert sorted(finished) == sorted(names)


async def test_actor_exception_cancels_the_others_and_becomes_one_clear_error() -> None:
    started: list[str] = []
    finished: list[str] = []

    async def broken() -> None:
        await trio.testing.wait_all_tasks_blocked()
        raise RuntimeError("boom")

    actors = [_forever_actor(n, started, finished) for n in ("a", "b")]
    actors.insert(1, Actor("inference", broken))
    with trio.fail_after(CAP):
        with pytest.raises(XswarmError) as info:
            await run_actors(actors, handle_signals=False)
    assert type(info.value) is XswarmError
    assert info.value.message == "actor 'inference' failed: RuntimeError: boom"
    assert info.value.exit_code == ExitCode.FAILURE
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) == "boom"
    assert sorted(finished) == ["a", "b"]


async def test_actor_xswarm_error_is_raised_as_is_even_from_a_nested_group() -> None:
    error = UsageError("persona 'nope' not found; see `xswarm personas list`")

    async def nested() -> None:
        async with trio.open_nursery() as nursery:  # the actor's own nursery wraps it

            async def fail() -> None:
                raise error

            nursery.start_soon(fail)

    with trio.fail_after(CAP), pytest.raises(UsageError) as info:
        await run_actors([Actor("personas", nested)], handle_signals=False)
    assert info.value is error
    assert info.value.exit_code == ExitCode.USAGE


async def test_failure_message_without_text_names_the_type() -> None:
    async def broken() -> None:
        raise KeyError

    with pytest.raises(XswarmError, match=r"^actor 'x' failed: KeyError$"):
        await run_actors([Actor("x", broken)], handle_signals=False)


async def test_started_actor_is_ready_before_later_actors_launch() -> None:
    order: list[str] = []

    async def loader(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(0.01)  # e.g. loading a model
        order.append("loaded")
        task_status.started()
        order.append("loader done")

    async def mic() -> None:
        order.append("mic")

    with trio.fail_after(CAP):
        await run_actors([Actor("loader", loader, start=True), Actor("mic", mic)])
    assert order.index("loaded") < order.index("mic")


async def test_started_actor_failing_before_ready_gives_clear_error() -> None:
    async def loader(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise OSError("weights missing")

    launched: list[str] = []

    async def mic() -> None:
        launched.append("mic")

    with pytest.raises(XswarmError, match=r"^actor 'loader' failed: OSError: weights missing$"):
        await run_actors([Actor("loader", loader, start=True), Actor("mic", mic)])
    assert launched == []


async def test_duplicate_actor_names_are_refused() -> None:
    async def noop() -> None:
        pass

    with pytest.raises(ValueError, match=r"actor names must be unique"):
        await run_actors([Actor("a", noop), Actor("a", noop)])


async def test_cleanup_scope_runs_async_cleanup_after_cancel_within_the_budget() -> None:
    flushed: list[str] = []

    async def writer() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with cleanup_scope():
                await trio.sleep(0.01)  # an async flush still runs while cancelled
                flushed.append("flushed")
                await trio.sleep(10)  # a stuck cleanup is cut at shutdown_timeout
            flushed.append("gave up")

    session = Session()
    with trio.fail_after(CAP):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    session.run, [Actor("w", writer)], handle_signals=False, shutdown_timeout=0.1
                )
            )
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            session.cancel()
    assert flushed == ["flushed", "gave up"]
    assert trio.current_time() - start < 1.0


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, ExitCode.INTERRUPTED), (signal.SIGTERM, ExitCode.TERMINATED)],
)
async def test_signal_stops_every_actor_and_raises_interrupted(
    signum: signal.Signals, code: ExitCode
) -> None:
    started: list[str] = []
    finished: list[str] = []
    handlers_before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threads_before = set(threading.enumerate())

    async def kill_me() -> None:
        await trio.testing.wait_all_tasks_blocked()
        os.kill(os.getpid(), signum)
        os.kill(os.getpid(), signum)  # a second one during shutdown is ignored
        await trio.sleep_forever()

    names = ["mic", "inference", "playback"]
    actors = [_forever_actor(n, started, finished) for n in names] + [Actor("killer", kill_me)]
    t0 = time.monotonic()
    with trio.fail_after(1.0), pytest.raises(Interrupted) as info:
        await run_actors(actors)
    assert time.monotonic() - t0 < 1.0
    assert info.value.signum == signum
    assert info.value.exit_code == code
    assert sorted(finished) == sorted(names)
    assert {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} == handlers_before
    assert set(threading.enumerate()) == threads_before


async def test_keyboard_interrupt_without_signal_handling_becomes_interrupted() -> None:
    async def ctrl_c() -> None:
        raise KeyboardInterrupt

    with pytest.raises(Interrupted) as info:
        await run_actors([Actor("a", ctrl_c)], handle_signals=False)
    assert info.value.exit_code == ExitCode.INTERRUPTED


# --------------------------------------------------------------------------- a real process

GRAPH_SCRIPT = textwrap.dedent(
    """
    import functools, sys
    import trio
    from xswarm.errors import XswarmError
    from xswarm.runtime import Actor, Overflow, Session, pump

    async def source(tx, task_status=trio.TASK_STATUS_IGNORED):
        with tx:
            task_status.started()
            i = 0
            while True:
                tx.send_nowait(bytearray(1920 * 4))
                i += 1
                await trio.sleep(0.08)

    async def sink(rx):
        with rx:
            async for frame in rx:
                if rx.metrics.received == 2:
                    print("ready", flush=True)

    async def main():
        s = Session()
        a_tx, a_rx = s.open_channel("mic", 4, overflow=Overflow.DROP_OLDEST)
        b_tx, b_rx = s.open_channel("pcm", 4)
        c_tx, c_rx = s.open_channel("out", 4)
        await s.run([
            Actor("mic", functools.partial(source, a_tx), start=True),
            Actor("inference", functools.partial(pump, a_rx, b_tx)),
            Actor("logger", functools.partial(pump, b_rx, c_tx)),
            Actor("playback", functools.partial(sink, c_rx)),
        ])

    try:
        trio.run(main)
    except XswarmError as error:
        print(f"xswarm: {error.message}", file=sys.stderr)
        sys.exit(int(error.exit_code))
    """
)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_actor_graph_process_exits_cleanly_on_signal(signum: signal.Signals, code: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", GRAPH_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        t0 = time.monotonic()
        proc.send_signal(signum)
        returncode = proc.wait(timeout=5)
        elapsed = time.monotonic() - t0
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert returncode == code
    assert elapsed < 1.0
    assert "Traceback" not in stderr
    assert stderr == f"xswarm: interrupted by {signal.Signals(signum).name}\n"


async def test_started_actor_that_never_says_ready_is_named() -> None:
    async def loader(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        return

    with pytest.raises(
        XswarmError, match=r"^actor 'loader' returned without calling task_status.started\(\)$"
    ):
        await run_actors([Actor("loader", loader, start=True)], handle_signals=False)


async def test_no_actors_returns_at_once() -> None:
    with trio.fail_after(CAP):
        await run_actors([])


# --------------------------------------------------------------------------- with the MLX worker


def _mlx_gain(frame: list[float], seen: set[int]) -> list[float]:
    import mlx.core as mx

    seen.add(threading.get_ident())
    out = mx.array(frame) * 2.0
    mx.eval(out)
    return out.tolist()


def _mlx_fails(frame: list[float], seen: set[int]) -> list[float]:
    from xswarm.errors import ModelError

    raise ModelError("model 'tiny' produced NaN; re-pull it with `xswarm models pull tiny`")


def _talk_graph(
    session: Session, step: object, finished: list[str], seen: set[int], got: list[list[float]]
) -> list[Actor]:
    from xswarm.inference.worker import open_mlx_worker

    mic_tx, mic_rx = session.open_channel("frames", 4, overflow=Overflow.DROP_OLDEST)
    pcm_tx, pcm_rx = session.open_channel("pcm", 4, overflow=Overflow.DROP_OLDEST)

    async def mic() -> None:
        try:
            with mic_tx:
                for i in range(10_000):
                    mic_tx.send_nowait([float(i)] * 8)
                    await trio.sleep(0.002)
        finally:
            finished.append("mic")

    async def inference(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with open_mlx_worker() as worker:
                await worker.run(_mlx_gain, [0.0], seen)  # "load the model" first
                task_status.started()
                with mic_rx, pcm_tx:
                    async for frame in mic_rx:
                        pcm_tx.send_nowait(await worker.run(step, frame, seen))
        finally:
            finished.append("inference")

    async def playback() -> None:
        try:
            with pcm_rx:
                async for pcm in pcm_rx:
                    got.append(pcm)
                    if len(got) == 20:
                        os.kill(os.getpid(), signal.SIGINT)
        finally:
            finished.append("playback")

    return [
        Actor("inference", inference, start=True),
        Actor("mic", mic),
        Actor("playback", playback),
    ]


async def test_sigint_stops_a_graph_using_the_mlx_worker_and_leaves_no_thread() -> None:
    before = set(threading.enumerate())
    finished: list[str] = []
    seen: set[int] = set()
    got: list[list[float]] = []
    session = Session()
    with trio.fail_after(CAP), pytest.raises(Interrupted) as info:
        await session.run(_talk_graph(session, _mlx_gain, finished, seen, got))
    assert info.value.exit_code == ExitCode.INTERRUPTED
    assert sorted(finished) == ["inference", "mic", "playback"]
    assert len(seen) == 1 and threading.get_ident() not in seen
    # Every frame was doubled on the worker, and frames stayed in order (drops allowed).
    assert all(len(set(pcm)) == 1 and pcm[0] % 2 == 0 for pcm in got)
    firsts = [pcm[0] for pcm in got]
    assert firsts == sorted(set(firsts))
    assert len(got) >= 20
    assert set(threading.enumerate()) == before


async def test_model_error_in_the_worker_ends_the_session_and_leaves_no_thread() -> None:
    from xswarm.errors import ModelError

    before = set(threading.enumerate())
    finished: list[str] = []
    session = Session()
    with trio.fail_after(CAP), pytest.raises(ModelError) as info:
        await session.run(
            _talk_graph(session, _mlx_fails, finished, set(), []), handle_signals=False
        )
    assert info.value.message == (
        "model 'tiny' produced NaN; re-pull it with `xswarm models pull tiny`"
    )
    assert sorted(finished) == ["inference", "mic", "playback"]
    assert set(threading.enumerate()) == before


async def test_slow_shutdown_is_reported_by_name(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def slow() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(1.0)  # a cleanup ignoring cleanup_scope()

    async def quick() -> None:
        await trio.sleep_forever()

    session = Session()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(
                session.run,
                [Actor("slow", slow), Actor("quick", quick)],
                handle_signals=False,
                shutdown_timeout=0.25,
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        session.cancel()
    assert [r.getMessage() for r in caplog.records] == ["still stopping after 0.25 s: slow"]


async def test_cancel_before_run_ends_the_run_at_once() -> None:
    finished: list[str] = []
    session = Session()
    session.cancel("never mind")
    with trio.fail_after(CAP):
        await session.run([_forever_actor("a", [], finished)], handle_signals=False)
    assert finished == ["a"]
