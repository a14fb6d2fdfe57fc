"""Session history and memory: written as it happens, readable after a kill, searchable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.cli_helpers import run_xswarm
from xswarm.errors import UsageError
from xswarm.history import (
    SessionLog,
    find_session,
    history_dir,
    list_sessions,
    new_session_id,
    read_session,
    search,
    session_info,
)
from xswarm.memory import extract_facts, forget, memory_facts, memory_path, memory_prompt, remember
from xswarm.personas import load_persona

T0 = datetime(2026, 11, 25, 17, 3, 1, tzinfo=timezone.utc)


def _say(log: SessionLog, speaker: str, text: str, t: float, step: float = 0.25) -> float:
    for word in text.split():
        log.word(speaker, word, t, t + step)
        t += step
    return t


def _session(persona: str, lines: list[tuple[str, str]], now: datetime = T0) -> SessionLog:
    log = SessionLog.open(load_persona(persona), "tiny-random", now=now)
    t = 0.0
    for speaker, text in lines:
        t = _say(log, speaker, text, t)
        log.end_turn()
    log.close({"duration": t + 0.5, "frames": 42})
    return log


def test_session_file_has_header_words_turns_and_summary() -> None:
    log = _session("glados", [("assistant", "Oh. It's you."), ("user", "Hello there")])
    lines = [json.loads(line) for line in log.path.read_text().splitlines()]
    header = lines[0]
    assert header["type"] == "session" and header["id"] == log.id
    assert (header["persona"], header["model"]) == ("glados", "tiny-random")
    assert header["start"] == T0.isoformat()
    assert header["version"] and header["schema"] == 1
    assert [e["type"] for e in lines[1:]] == ["word"] * 3 + ["turn_end"] + ["word"] * 2 + [
        "turn_end",
        "summary",
    ]
    assert lines[1] == {
        "type": "word",
        "speaker": "assistant",
        "start": 0.0,
        "end": 0.25,
        "text": "Oh.",
    }
    assert lines[-1] == {"type": "summary", "duration": 1.75, "frames": 42}
    assert log.path == history_dir() / f"{log.id}.jsonl"


def test_fsync_happens_at_turn_boundaries_not_per_word(monkeypatch: pytest.MonkeyPatch) -> None:
    log = SessionLog.open("jarvis", "tiny-random")
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    _say(log, "assistant", "one two three four", 0.0)
    assert synced == []
    # ...yet every word is already in the file for another reader (flushed to the OS).
    assert len(log.path.read_text().splitlines()) == 5
    log.end_turn()
    assert len(synced) == 1
    log.close()
    assert len(synced) == 2
    log.close()  # a second close does nothing
    assert len(synced) == 2


def test_ids_sort_by_time_and_are_unique_within_a_second() -> None:
    times = [T0 + timedelta(seconds=s) for s in (0, 1, 59, 3600, 86400 * 40)]
    ids = [new_session_id(t) for t in times]
    assert ids == sorted(ids)
    assert ids[0].startswith("20261125-170301-") and len(ids[0]) == len("20261125-170301-ab12")
    logs = [SessionLog.open("jarvis", "m", now=T0) for _ in range(20)]
    assert len({log.id for log in logs}) == 20
    for log in logs:
        log.close()


def test_a_line_cut_mid_write_is_skipped_and_counted() -> None:
    log = SessionLog.open("jarvis", "tiny-random", now=T0)
    _say(log, "user", "my name is Ada", 0.0)
    log.end_turn()
    _say(log, "assistant", "Welcome back", 1.0)
    log.word("assistant", "madam", 2.0, 2.5)
    size = log.path.stat().st_size
    os.truncate(log.path, size - 9)  # the last line loses its end, as in a crash
    session = read_session(log.path)
    assert session.skipped == 1 and not session.complete
    assert [w.text for w in session.words] == ["my", "name", "is", "Ada", "Welcome", "back"]
    assert [(line.speaker, line.text) for line in session.lines()] == [
        ("user", "my name is Ada"),
        ("assistant", "Welcome back"),
    ]
    assert session.duration == 1.5


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from xswarm.history import SessionLog
    log = SessionLog.open("glados", "tiny-random")
    print(log.path, flush=True)
    t = 0.0
    turn = 0
    while True:  # words forever, a turn boundary every 7 words, until killed
        for i in range(7):
            log.word("assistant" if turn % 2 else "user", f"w{turn}x{i}", t, t + 0.1)
            t += 0.1
        log.end_turn()
        turn += 1
        if turn == 3:
            print("turns", flush=True)
    """
)


def test_a_session_killed_with_sigkill_reads_back() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert process.stdout is not None
        path = Path(process.stdout.readline().strip())
        # Killed right after its third turn: it is busy writing the fourth.
        assert process.stdout.readline().strip() == "turns"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1].splitlines()
    assert all(json.loads(line) for line in complete)  # every complete line parses
    session = read_session(path)
    assert not session.complete and session.skipped <= 1
    assert len(session.words) >= 21
    turns = sum(1 for e in session.events if e["type"] == "turn_end")
    assert turns >= 3
    result = run_xswarm("history", "show", session.id[:-2])
    assert result.returncode == 0, result.stderr
    assert "(unfinished)" in result.stdout
    assert "user: w0x0 w0x1 w0x2 w0x3 w0x4 w0x5 w0x6" in result.stdout
    assert "assistant: w1x0" in result.stdout


@pytest.mark.parametrize("cut", ["none", "in the summary", "in the last word", "after a prefix"])
def test_quick_listing_agrees_with_a_full_read(cut: str) -> None:
    log = _session("glados", [("assistant", "one two three four five six seven"), ("user", "a b")])
    data = log.path.read_bytes()
    if cut == "in the summary":  # a crash cut the file
        os.truncate(log.path, len(data) - 9)
    elif cut == "in the last word":
        os.truncate(log.path, data.rfind(b'{"type": "word"') + 10)
    elif cut == "after a prefix":  # the cut line still starts like a word
        os.truncate(log.path, data.rfind(b'{"type": "word"') + 20)
    info = session_info(log.path)
    full = read_session(log.path)
    assert (info.id, info.persona, info.model, info.start) == (
        full.id,
        full.persona,
        full.model,
        full.start,
    )
    assert info.words == len(full.words)
    assert info.duration == full.duration
    assert info.complete == full.complete == (cut == "none")
    assert info.words == (8 if cut in ("in the last word", "after a prefix") else 9)
    assert info.preview == full.preview()


def test_find_session_by_unique_prefix_and_clear_errors() -> None:
    a = _session("jarvis", [("user", "one")], now=T0)
    b = _session("jarvis", [("user", "two")], now=T0 + timedelta(hours=1))
    assert find_session(a.id) == a.path
    assert find_session(a.id[:12]) == a.path  # 20261125-17 + "0" differs from b's "1"
    with pytest.raises(UsageError, match=r'session id "2026" is ambiguous: 2 sessions match'):
        find_session("2026")
    with pytest.raises(UsageError, match=r'no session "nope" in .*history \(2 sessions'):
        find_session("nope")
    assert [s.id for s in list_sessions().sessions] == [b.id, a.id]


def test_search_is_case_insensitive_and_names_the_lines() -> None:
    _session("glados", [("assistant", "The cake is a lie."), ("user", "I want CAKE now")])
    _session("jarvis", [("user", "no dessert today")], now=T0 + timedelta(minutes=5))
    matches = search("cake")
    assert [(m.session.persona, m.line.speaker, m.line.text) for m in matches] == [
        ("glados", "assistant", "The cake is a lie."),
        ("glados", "user", "I want CAKE now"),
    ]
    assert search("DESSERT")[0].session.persona == "jarvis"
    assert search("cake", persona="jarvis") == []


def test_history_cli_list_show_search_rm() -> None:
    first = _session("glados", [("assistant", "Oh. It's you."), ("user", "Hello cake")])
    second = _session("sage", [("user", "teach me")], now=T0 + timedelta(minutes=1))
    listed = json.loads(run_xswarm("history", "list", "--json").stdout)
    assert [s["id"] for s in listed] == [second.id, first.id]
    assert listed[1]["persona"] == "glados" and listed[1]["duration"] == 1.75
    assert listed[1]["preview"] == "Oh. It's you. Hello cake" and listed[1]["complete"] is True
    text = run_xswarm("history").stdout.splitlines()
    assert text[0].startswith(second.id) and "sage" in text[0] and "teach me" in text[0]

    shown = run_xswarm("history", "show", first.id)
    assert shown.returncode == 0
    assert shown.stdout.splitlines()[1:] == [
        "   0:00 assistant: Oh. It's you.",
        "   0:01 user: Hello cake",  # said at 0.75 s
    ]
    events = [
        json.loads(line)
        for line in run_xswarm("history", "show", first.id, "--json").stdout.splitlines()
    ]
    assert events == [json.loads(line) for line in first.path.read_text().splitlines()]

    found = run_xswarm("history", "search", "CAKE", "--json")
    assert [json.loads(line)["session"] for line in found.stdout.splitlines()] == [first.id]
    missing = run_xswarm("history", "search", "zebra")
    assert (missing.returncode, missing.stdout) == (1, "")

    unknown = run_xswarm("history", "rm", first.id, "zzz")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith('xswarm: error: no session "zzz"')
    assert first.path.exists()  # nothing deleted when one id is bad
    removed = run_xswarm("history", "rm", first.id[:-1])
    assert removed.returncode == 0 and not first.path.exists()
    again = run_xswarm("history", "show", first.id)
    assert again.returncode == 2 and "Traceback" not in again.stderr


# --- memory ----------------------------------------------------------------------------

KNOWN_FACTS = {
    "My name is Ada Lovelace and I live in London.": [
        ("name", "Ada Lovelace"),
        ("location", "London"),
    ],
    "my name is ada": [("name", "Ada")],
    "Call me Bob.": [("name", "Bob")],
    "I'm 42 years old.": [("age", "42")],
    "I am from Lyon, but I live in Paris now.": [("location", "Paris"), ("origin", "Lyon")],
    "I work as a nurse at night.": [("occupation", "nurse at night")],
    "I work at Kyutai.": [("workplace", "Kyutai")],
    "I'm a vegetarian.": [("identity:vegetarian", "vegetarian")],
    "I really love jazz a lot.": [("likes:jazz", "jazz")],
    "I don't like spiders.": [("likes:spiders", "spiders")],
    "My favourite colour is green.": [("favourite:colour", "green")],
    "My favorite color is blue.": [("favourite:colour", "blue")],
    "I have a dog called Rex.": [("relation:dog:rex", "Rex")],
    "I moved to Berlin last year.": [("location", "Berlin")],
    "i live in new york city": [("location", "New York City")],
}

NOT_FACTS = [
    "I am not sure.",
    "I'm going to the shop.",
    "I'm not a doctor.",
    "Do I like jazz?",
    "if I lived in Rome I would be happy",
    "She said I love pizza.",
    "I'd like a coffee.",
    "Call me later.",
    "I love it.",
    "I like you.",
    "I'm a bit tired.",
    "What's my name?",
    "My name is not important.",
    "I don't think I like it.",
    "I used to live in Oslo.",
    "I'm 5 minutes away.",
    "do you know where I live",
]


@pytest.mark.parametrize("sentence", KNOWN_FACTS)
def test_extractor_finds_the_known_facts(sentence: str) -> None:
    assert [(f.key, f.value) for f in extract_facts(sentence)] == KNOWN_FACTS[sentence]
    assert all(f.quote == sentence.strip() for f in extract_facts(sentence))


@pytest.mark.parametrize("sentence", NOT_FACTS)
def test_extractor_ignores_what_is_not_a_fact(sentence: str) -> None:
    assert extract_facts(sentence) == []


def test_facts_read_as_sentences_for_the_prompt() -> None:
    remember("sage", extract_facts("My name is Ada. I hate mornings. My favourite tea is oolong."))
    assert memory_prompt("sage").splitlines() == [
        "What the user told you in earlier conversations:",
        "- The user's name is Ada.",
        "- The user dislikes mornings.",
        "- The user's favourite tea is oolong.",
    ]
    assert memory_prompt("glados") == ""


def test_newest_fact_wins_per_key_and_duplicates_merge() -> None:
    first = remember("jarvis", extract_facts("My name is Ada. I love jazz."), session="s1")
    assert [f.key for f in first] == ["name", "likes:jazz"]
    again = remember("jarvis", extract_facts("I love jazz."), session="s2")
    assert again == []  # nothing new: same key, same value
    changed = remember("jarvis", extract_facts("Call me Lovelace. I hate jazz."), session="s3")
    assert [(f.key, f.kind, f.value) for f in changed] == [
        ("name", "name", "Lovelace"),
        ("likes:jazz", "dislikes", "jazz"),
    ]
    facts = memory_facts("jarvis")
    assert [(f.key, f.value, f.session) for f in facts] == [
        ("name", "Lovelace", "s3"),
        ("likes:jazz", "jazz", "s3"),
    ]


def test_session_log_remembers_user_words_at_turn_end_only() -> None:
    log = SessionLog.open(load_persona("glados"), "tiny-random")
    t = _say(log, "assistant", "My name is GLaDOS.", 0.0)  # the assistant's words: never facts
    log.end_turn()
    assert memory_facts("glados") == []
    _say(log, "user", "My name is Ada and I live in Leeds.", t)
    assert memory_facts("glados") == []
    log.end_turn()
    assert [(f.key, f.value, f.session) for f in memory_facts("glados")] == [
        ("name", "Ada", log.id),
        ("location", "Leeds", log.id),
    ]
    _say(log, "user", "I love cake.", t + 5)
    log.close()  # words after the last boundary are remembered at close
    assert memory_facts("glados")[-1].key == "likes:cake"
    assert log.facts == memory_facts("glados")


def test_persona_without_memory_remembers_nothing() -> None:
    noir = load_persona("noir")
    assert noir.memory is False
    log = SessionLog.open(noir, "tiny-random")
    _say(log, "user", "My name is Ada.", 0.0)
    log.close()
    assert not memory_path("noir").exists()
    assert read_session(log.path).words  # the session itself is still saved


def test_a_bad_line_in_the_memory_file_costs_only_that_fact() -> None:
    remember("sage", extract_facts("My name is Ada. I love tea."))
    path = memory_path("sage")
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n{broken\n" + lines[1] + "\n")
    assert [f.key for f in memory_facts("sage")] == ["name", "likes:tea"]


def test_forget_by_key_or_all_via_cli() -> None:
    remember("jarvis", extract_facts("My name is Ada. I love tea. I live in Leeds."))
    listed = json.loads(run_xswarm("history", "facts", "jarvis", "--json").stdout)
    assert [f["key"] for f in listed] == ["name", "likes:tea", "location"]  # order said
    shown = run_xswarm("history", "facts").stdout  # jarvis is the default persona
    assert "The user's name is Ada." in shown and '"My name is Ada."' in shown
    typo = run_xswarm("history", "forget", "jarvis", "nmae")
    assert typo.returncode == 2
    assert 'no fact with key "nmae" (did you mean "name"?' in typo.stderr
    assert run_xswarm("history", "forget", "jarvis").returncode == 2  # neither keys nor --all
    assert run_xswarm("history", "forget", "jarvis", "name", "likes:tea").returncode == 0
    assert [f.key for f in memory_facts("jarvis")] == ["location"]
    assert run_xswarm("history", "forget", "jarvis", "--all").returncode == 0
    assert memory_facts("jarvis") == [] and not memory_path("jarvis").exists()
    unknown = run_xswarm("history", "facts", "jarvs")
    assert unknown.returncode == 2 and 'did you mean "jarvis"' in unknown.stderr
    assert forget("sage") == []


@pytest.mark.parametrize("command", ["list", "show", "search", "rm", "facts", "forget"])
def test_each_history_command_has_examples(command: str) -> None:
    result = run_xswarm("history", command, "--help")
    assert result.returncode == 0
    assert "Examples:" in result.stdout and f"xswarm history {command}" in result.stdout


def test_shell_completion_offers_session_ids() -> None:
    old = _session("jarvis", [("user", "one")], now=T0)
    new = _session("jarvis", [("user", "two")], now=T0 + timedelta(days=1))
    env = {
        **os.environ,
        "_XSWARM_COMPLETE": "complete_bash",
        "COMP_WORDS": "xswarm history show 2026112",
        "COMP_CWORD": "3",
    }
    assert run_xswarm(env=env).stdout.split() == [new.id, old.id]
