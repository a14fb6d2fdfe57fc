"""The prompt the cascade sends to the LLM: who to be, how to speak, what to remember.

A text LLM writes for a screen; the cascade reads its answer aloud while the
user waits. So the system message adds to the persona's ``system_prompt`` the
rules of speech (:data:`SPEECH_RULES`: short, no markdown, numbers as words)
and what the persona remembers about the user (:mod:`xswarm.memory`), and the
conversation is trimmed from its oldest turns so the prompt stays within what
a small local model reads quickly.

One system message, not several: some chat templates (llama.cpp's, several
ollama models') reject or mangle a second system message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from xswarm.llm.client import ChatMessage
from xswarm.memory import facts_prompt, memory_facts

# ~1,500 tokens at ~4 characters a token: the whole prompt stays a fraction of a small
# model's context (2-8 k tokens) and its prefill a fraction of a second.
HISTORY_BUDGET_CHARS: Final = 6000

SPEECH_RULES: Final = (
    "You are talking with the user by voice: everything you write is read aloud by a "
    "text-to-speech voice, as soon as you write it. "
    "Answer in one to three short sentences, unless the user asks for more. "
    "Write plain spoken sentences only: no markdown, no lists or bullet points, no headings, "
    "no code, no tables, no emoji, no links. "
    "Write numbers, dates, times, units and symbols as words, the way you would say them: "
    "twenty-three degrees, half past four, fifty percent, three dollars. "
    "Do not describe actions or sounds. "
    "The user's words come from speech recognition and may contain mistakes: answer what "
    "they most likely meant, and ask a short question when you cannot tell. "
    "Reply in the language the user speaks."
)


def build_messages(
    system_prompt: str,
    facts: Sequence[str],
    history: Sequence[ChatMessage],
    user_text: str,
    *,
    budget_chars: int = HISTORY_BUDGET_CHARS,
) -> list[ChatMessage]:
    """The messages for one turn: system, the recent conversation, the new user text.

    The system message is ``system_prompt``, :data:`SPEECH_RULES` and ``facts``
    (sentences such as ``"The user's name is Ada."``, see
    :func:`remembered_facts`). ``history`` is the conversation so far (user and
    assistant messages, oldest first, as actually spoken); its oldest messages
    are dropped until the rest fits in ``budget_chars`` characters, and the kept
    part never starts with an assistant message (a reply without its question
    misleads a model). System messages and empty messages in ``history`` are
    skipped. Pure: no I/O.
    """
    parts = [system_prompt.strip(), SPEECH_RULES, facts_prompt(facts)]
    system = ChatMessage("system", "\n\n".join(part for part in parts if part))
    turns = [m for m in history if m.role != "system" and m.content.strip()]
    kept: list[ChatMessage] = []
    used = 0
    for message in reversed(turns):
        used += len(message.content)
        if used > budget_chars:
            break
        kept.append(message)
    kept.reverse()
    while kept and kept[0].role == "assistant":
        kept.pop(0)
    return [system, *kept, ChatMessage("user", user_text.strip())]


def remembered_facts(persona: str) -> list[str]:
    """The persona's remembered facts as sentences, oldest first (for :func:`build_messages`)."""
    return [fact.sentence() for fact in memory_facts(persona)]
