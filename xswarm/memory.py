"""What a persona remembers about the user across sessions: salient facts.

Facts are pulled out of the *user's* words of each talk session by a small set
of rules (regular expressions), kept per persona in
``data_dir()/memory/<persona>.jsonl`` (one JSON object per line, readable and
editable by hand), and given to the text-LLM (cascade) mode to put in its
prompt (:func:`memory_prompt`).

Why rules and not a model: the memory must be inspectable and predictable.
Anyone can read the table below to know what will be remembered, see in
``xswarm history facts`` the exact sentence each fact came from, and remove it
with ``xswarm history forget``. A model-based extractor would catch more and
explain less, and would need a model on the machine; the rules cost
microseconds and nothing to install.

What the rules catch (case-insensitive; STT output without capitals works):

==============  =======================================  ======================
kind            said                                     remembered (key)
==============  =======================================  ======================
name            my name is X, call me X, I'm called X    one value (``name``)
age             I'm 42 (years old)                       one value (``age``)
location        I live in X, I moved to X                one value
origin          I'm from X, I come from X                one value
occupation      I work as (a) X                          one value
workplace       I work at/for X                          one value
identity        I am a/an X, I'm a/an X                  one per X
likes/dislikes  I (really) like/love/enjoy X;            one per X: the newest
                I hate/dislike/don't like X              of like and dislike wins
favourite       my favourite/favorite T is X             one per T
relation        I have a T called/named X                one per T and X
==============  =======================================  ======================

A value runs to the end of its clause (punctuation, or a joining word such as
"and", "but", "because"), at most :data:`MAX_VALUE_WORDS` words. Each key holds
one fact and the newest one wins, which is both the dedup rule and how "I live
in Lyon now" replaces Paris.

What the rules deliberately skip: questions ("do I like jazz?"), sentences with
a negation or a condition before the pattern ("I'm not a doctor", "if I lived
in Rome", "I don't think I like it"), reported speech ("she said I love
pizza"), requests ("I'd like a coffee", "call me later"), pronouns as values
("I love it", "I like you"), and hedges ("I'm a bit tired").

What they miss: anything said indirectly or spread over sentences ("Ada here",
"name's Ada, by the way" works but "it's Ada" does not), numbers spelled out
("I'm forty"), facts about other people beyond the ``relation`` rule, and
changes of mind that do not repeat the pattern ("not any more"). Duplex mode
has no transcript of the user's speech, so it remembers nothing; the cascade
mode transcribes the user and feeds this module.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Final

from xswarm.errors import UsageError

MEMORY_DIR: Final = "memory"  # under data_dir()
MAX_VALUE_WORDS: Final = 6  # a fact is a phrase, not a paragraph
MAX_FACTS: Final = 200  # per persona, newest kept: the LLM prompt must stay short
SINGLE_KINDS: Final = ("name", "age", "location", "origin", "occupation", "workplace")


@dataclass(frozen=True)
class Fact:
    """One thing the user said about themselves.

    ``key`` identifies the slot a fact fills (``name``, ``likes:jazz``,
    ``favourite:colour``): a newer fact with the same key replaces an older one.
    ``quote`` is the user's sentence it was taken from; ``session`` and ``at``
    say when (``None`` for facts not yet stored).
    """

    key: str
    kind: str
    value: str
    quote: str
    topic: str | None = None
    session: str | None = None
    at: str | None = None

    def sentence(self) -> str:
        """The fact as a short English sentence about "the user"."""
        v = self.value
        return {
            "name": f"The user's name is {v}.",
            "age": f"The user is {v} years old.",
            "location": f"The user lives in {v}.",
            "origin": f"The user is from {v}.",
            "occupation": f"The user works as {_with_article(v)}.",
            "workplace": f"The user works at {v}.",
            "identity": f"The user is {_with_article(v)}.",
            "likes": f"The user likes {v}.",
            "dislikes": f"The user dislikes {v}.",
            "favourite": f"The user's favourite {self.topic} is {v}.",
            "relation": f"The user has a {self.topic} called {v}.",
        }.get(self.kind, f"{self.kind}: {v}")

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _with_article(value: str) -> str:
    return value if re.match(r"(a|an|the)\s", value, re.I) else f"a {value}"


# --- the rules ----------------------------------------------------------------------

_I_AM: Final = r"\bi(?:\s+am|'m|’m)"


def _word_set(*lines: str) -> frozenset[str]:
    return frozenset(" ".join(lines).split())


# Words that end a value: they start a new clause.
_CLAUSE_END: Final = _word_set(
    "and but because so though although when while which who whom that since if or as "
    "then where whereas until unless whose "
    # time phrases: "I moved to Berlin last year" is about Berlin
    "last next yesterday today tonight tomorrow recently ago every"
)
# Words that cannot start a value: pronouns and hedges ("I love it", "I'm a bit tired").
_BAD_START: Final = _word_set(
    "it that this them you him her me us those these one what how when where why who "
    "not no never nothing anything something everything some bit little lot few kind sort "
    "later back now tomorrow today tonight again anytime soon maybe going gonna trying "
    "about just very really sure"
)
# Trailing words that carry nothing ("I like jazz a lot", "I live in Paris now").
_TRAILING: Final = _word_set(
    "a an the of in at to for with near on lot much too also now anyway though really "
    "very so quite actually"
)
# Before the pattern in the same sentence, any of these makes the statement
# negated, hypothetical or someone else's: skip it.
_DOUBT: Final = re.compile(
    r"\b(?:not|never|no longer|if|unless|wish|maybe|perhaps|doubt|whether|suppose|imagine|"
    r"pretend|used to|said|says|told|tells|asked|thinks?|thought|when i was)\b|n't\b|n’t\b",
    re.I,
)
_QUESTION_START: Final = re.compile(
    r"^(?:do|does|did|am|is|are|was|were|can|could|would|will|should|shall|what|who|whom|"
    r"where|why|how|which|whose|have|has|may|might)\b",
    re.I,
)


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    max_words: int = MAX_VALUE_WORDS
    proper: bool = False  # a proper noun: title-case it when said in lower case


def _rule(kind: str, pattern: str, **options: object) -> _Rule:
    return _Rule(kind, re.compile(pattern, re.I), **options)  # type: ignore[arg-type]


_RULES: Final = (
    _rule("name", r"\bmy\s+name\s+is\s+", max_words=3, proper=True),
    _rule("name", r"\bmy\s+name's\s+", max_words=3, proper=True),
    _rule("name", r"\bname's\s+", max_words=3, proper=True),
    _rule("name", r"\bcall\s+me\s+", max_words=3, proper=True),
    _rule("name", _I_AM + r"\s+called\s+", max_words=3, proper=True),
    # "I'm 42", "I'm 42 years old", but not "I'm 5 minutes away"
    _rule(
        "age",
        _I_AM + r"\s+(?=\d{1,3}(?:\s+years?\s+old\b|\s*[.,;!]|\s*$|\s+(?:and|but|so)\b))",
        max_words=3,
    ),
    _rule("location", r"\bi\s+(?:live|am\s+living|'m\s+living)\s+in\s+", proper=True),
    _rule("location", r"\bi\s+(?:just\s+|recently\s+)?moved\s+to\s+", proper=True),
    _rule("origin", _I_AM + r"\s+(?:originally\s+)?from\s+", proper=True),
    _rule("origin", r"\bi\s+come\s+from\s+", proper=True),
    _rule("occupation", r"\bi\s+work\s+as\s+(?:an?\s+)?"),
    _rule("workplace", r"\bi\s+work\s+(?:at|for)\s+", proper=True),
    _rule("identity", _I_AM + r"\s+(?:an?)\s+"),
    _rule(
        "likes", r"\bi\s+(?:really\s+|also\s+|just\s+|absolutely\s+)?(?:like|love|enjoy|adore)\s+"
    ),
    _rule(
        "dislikes",
        r"\bi\s+(?:really\s+|also\s+)?(?:hate|dislike|detest|can't\s+stand|cannot\s+stand|"
        r"don't\s+like|do\s+not\s+like)\s+",
    ),
    _rule("favourite", r"\bmy\s+(?:favou?rite|fave?)\s+(?P<topic>\w+(?:\s+\w+)?)\s+is\s+"),
    _rule("relation", r"\bi\s+have\s+an?\s+(?P<topic>\w+)\s+(?:called|named)\s+", max_words=2),
)

_SENTENCE_SPLIT: Final = re.compile(r"(?<=[.!?;])\s+|\n+")
_WORD: Final = re.compile(r"[\w][\w'’\-]*|[^\w\s]")


def _sentences(text: str) -> Iterator[str]:
    for sentence in _SENTENCE_SPLIT.split(text):
        sentence = " ".join(sentence.split())
        if sentence:
            yield sentence


def _value(rest: str, rule: _Rule) -> str | None:
    """The value after a rule's pattern: words up to the end of the clause."""
    words: list[str] = []
    for token in _WORD.findall(rest):
        if not re.match(r"\w", token) or token.lower() in _CLAUSE_END:
            break
        words.append(token)
        if len(words) > rule.max_words:
            return None  # a long run-on is not a phrase we can trust
    while words and words[-1].lower() in _TRAILING:
        words.pop()
    if not words or words[0].lower() in _BAD_START:
        return None
    if rule.kind == "age":
        return words[0] if words[0].isdigit() and 0 < int(words[0]) < 130 else None
    if rule.kind == "name" and not all(re.fullmatch(r"[^\W\d_][\w'’\-]*", w) for w in words):
        return None
    value = " ".join(words)
    if rule.proper and value == value.lower():
        value = " ".join(w[:1].upper() + w[1:] for w in words)
    return value


def extract_facts(text: str) -> list[Fact]:
    """The facts in ``text`` (the user's words), in the order said.

    Pure: no I/O, no time. ``session`` and ``at`` are left ``None``.
    """
    facts: list[Fact] = []
    for sentence in _sentences(text):
        if sentence.endswith("?") or _QUESTION_START.match(sentence):
            continue
        for rule in _RULES:
            for match in rule.pattern.finditer(sentence):
                if _DOUBT.search(sentence[: match.start()]):
                    continue
                value = _value(sentence[match.end() :], rule)
                if value is None:
                    continue
                topic = match.groupdict().get("topic")
                topic = topic.lower() if topic else None
                facts.append(
                    Fact(_key(rule.kind, value, topic), rule.kind, value, sentence, topic=topic)
                )
    return facts


def _key(kind: str, value: str, topic: str | None) -> str:
    if kind in SINGLE_KINDS:
        return kind
    if kind in ("likes", "dislikes"):
        return f"likes:{value.casefold()}"  # one slot: the newest of like/dislike wins
    if kind == "favourite":
        return f"favourite:{(topic or '').replace('color', 'colour')}"
    if kind == "relation":
        return f"relation:{topic}:{value.casefold()}"
    return f"{kind}:{value.casefold()}"


# --- the store ----------------------------------------------------------------------


def memory_dir() -> Path:
    from xswarm.paths import data_dir

    return data_dir() / MEMORY_DIR


def memory_path(persona: str) -> Path:
    """``data_dir()/memory/<persona>.jsonl``."""
    return memory_dir() / f"{persona}.jsonl"


def memory_facts(persona: str) -> list[Fact]:
    """The persona's remembered facts, oldest first. Unreadable lines are skipped."""
    path = memory_path(persona)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    facts: list[Fact] = []
    fields = set(Fact.__dataclass_fields__)
    for line in lines:
        try:
            data = json.loads(line)
            facts.append(Fact(**{k: v for k, v in data.items() if k in fields}))
        except (ValueError, TypeError):
            continue  # a hand edit gone wrong costs that fact, not the memory
    return facts


def _write(persona: str, facts: list[Fact]) -> None:
    """Replace the persona's memory file atomically (write, fsync, rename)."""
    path = memory_path(persona)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".jsonl.tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        for fact in facts:
            out.write(json.dumps(fact.to_json(), ensure_ascii=False) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def remember(
    persona: str, facts: Iterable[Fact], *, session: str | None = None, at: datetime | None = None
) -> list[Fact]:
    """Add ``facts`` to the persona's memory; the newest fact per key wins.

    Returns the facts that were new or changed a value; the file is rewritten
    (atomically, fsync'd) only when there is one. Keeps at most
    :data:`MAX_FACTS`, dropping the oldest.
    """
    stamp = (at or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    by_key = {fact.key: fact for fact in memory_facts(persona)}
    changed: list[Fact] = []
    for fact in facts:
        stored = Fact(
            fact.key, fact.kind, fact.value, fact.quote, fact.topic, session or fact.session, stamp
        )
        old = by_key.pop(fact.key, None)  # pop: the newest moves to the end
        by_key[fact.key] = stored
        if old is None or (old.kind, old.value) != (fact.kind, fact.value):
            changed.append(stored)
    if changed:  # a fact repeated unchanged keeps its stored date: no rewrite, no fsync
        _write(persona, list(by_key.values())[-MAX_FACTS:])
    return changed


def forget(persona: str, keys: Iterable[str] | None = None) -> list[Fact]:
    """Remove facts by key (all of them when ``keys`` is None); returns those removed.

    Raises :class:`UsageError` for a key the memory does not hold.
    """
    facts = memory_facts(persona)
    if keys is None:
        memory_path(persona).unlink(missing_ok=True)
        return facts
    wanted = list(keys)
    held = {fact.key for fact in facts}
    missing = [key for key in wanted if key not in held]
    if missing:
        import difflib

        close = difflib.get_close_matches(missing[0], sorted(held), n=1)
        hint = f'did you mean "{close[0]}"? ' if close else ""
        known = ", ".join(sorted(held)) or "none"
        raise UsageError(
            f'{persona} remembers no fact with key "{missing[0]}" ({hint}keys: {known}; '
            f"see xswarm history facts {persona})"
        )
    removed = [fact for fact in facts if fact.key in wanted]
    _write(persona, [fact for fact in facts if fact.key not in wanted])
    return removed


def memory_prompt(persona: str) -> str:
    """The persona's facts as prompt text for the LLM, or "" when there are none."""
    return facts_prompt(fact.sentence() for fact in memory_facts(persona))


def facts_prompt(sentences: Iterable[str]) -> str:
    """Fact sentences (:meth:`Fact.sentence`) as prompt text, or "" when there are none."""
    lines = "\n".join(f"- {sentence}" for sentence in sentences if sentence.strip())
    if not lines:
        return ""
    return f"What the user told you in earlier conversations:\n{lines}"
