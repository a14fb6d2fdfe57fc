"""What history and memory cost the talk loop, against its 80 ms frame.

Prints one JSON object. Measured side by side in one run, in a temporary
XSWARM_HOME: ``SessionLog.word`` (one write), ``SessionLog.end_turn`` (write +
fsync, plus the fact rules over a user turn), ``extract_facts`` alone on a
30-word turn, and ``list_sessions`` over many stored sessions (what
``xswarm history`` reads). Each per-call figure is also given as a fraction of
the 80 ms frame, which is what decides whether talk may call it inline.

    python benchmarks/history.py [--words 5000] [--turns 200] [--sessions 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

FRAME_MS = 80.0  # Moshi's frame: the budget a talk actor must stay well inside
USER_TURN = (
    "well my name is Ada and I live in Leeds these days, I work as a nurse at the "
    "hospital and honestly I love jazz but I hate mornings so be gentle"
)


def _timed(calls: int, fn: Callable[[int], object]) -> list[float]:
    times = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _stats(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "p50_ms": round(p50, 4),
        "p99_ms": round(p99, 4),
        "p99_frame_fraction": round(p99 / FRAME_MS, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--words", type=int, default=5000)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--session-words", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["XSWARM_HOME"] = home
        from xswarm.history import SessionLog, list_sessions
        from xswarm.memory import extract_facts

        log = SessionLog.open("jarvis", "tiny-random")
        word_ms = _timed(
            args.words, lambda i: log.word("assistant", "word", i * 0.1, i * 0.1 + 0.1)
        )
        plain_turn_ms = _timed(args.turns, lambda i: log.end_turn())

        def user_turn(i: int) -> None:
            for w in USER_TURN.split():
                log.word("user", w, 0.0, 0.1)
            start = time.perf_counter()
            log.end_turn()
            user_turn_ms.append((time.perf_counter() - start) * 1000)

        user_turn_ms: list[float] = []
        for i in range(args.turns):
            user_turn(i)
        log.close()
        extract_ms = _timed(args.turns * 10, lambda i: extract_facts(USER_TURN))

        start_time = datetime(2026, 1, 1, tzinfo=timezone.utc)
        for s in range(args.sessions):
            with SessionLog.open(
                "jarvis", "tiny-random", memory=False, now=start_time + timedelta(minutes=s)
            ) as stored:
                for i in range(args.session_words):
                    stored.word(
                        "assistant" if i % 20 < 10 else "user", "word", i * 0.3, i * 0.3 + 0.3
                    )
                    if i % 20 == 19:
                        stored.end_turn()
        list_start = time.perf_counter()
        listed = list_sessions()
        list_s = time.perf_counter() - list_start
        assert len(listed.sessions) == args.sessions + 1

    result = {
        "benchmark": "history",
        "frame_ms": FRAME_MS,
        "word": {"calls": args.words, **_stats(word_ms)},
        "end_turn_no_user_words": {"calls": args.turns, **_stats(plain_turn_ms)},
        "end_turn_with_user_turn": {"calls": args.turns, **_stats(user_turn_ms)},
        "extract_facts_30_words": {"calls": args.turns * 10, **_stats(extract_ms)},
        "end_turn_over_word_p50": round(
            statistics.median(plain_turn_ms) / statistics.median(word_ms), 1
        ),
        "list_sessions": {
            "sessions": args.sessions + 1,
            "words_each": args.session_words,
            "seconds": round(list_s, 3),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
