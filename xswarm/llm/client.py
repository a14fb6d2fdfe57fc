"""The LLM seen by the cascade: messages in, a stream of text deltas out.

The cascade (STT -> LLM -> TTS) needs one thing from a text LLM: given the
conversation, the answer's text *as it is generated*, so that text-to-speech
can start on the first words. :class:`ChatClient` is that, and nothing more;
:func:`open_chat` picks the implementation from :class:`LlmConfig`:

- an OpenAI-compatible ``/chat/completions`` endpoint with ``"stream": true``
  (ollama, llama.cpp's server, LM Studio, vLLM, OpenAI): :mod:`xswarm.llm.openai`;
- ``model="mlx:PATH"``: an MLX model in this process, see :mod:`xswarm.llm.mlx`.

Every failure of the LLM is an :class:`LlmError` with a one-line message that
names the endpoint, so the cascade can apologise, print the line and go on.

Reasoning models (deepseek-r1, qwen3, served by ollama or llama.cpp, or run with
mlx-lm) write their thinking into the answer between ``<think>`` and
``</think>``; it must never be spoken. :func:`open_chat` therefore wraps every
client in :class:`ReasoningFilter`, which drops those blocks from the deltas,
tags split across deltas included, holding back only text that may be the start
of a tag. (Servers that send the thinking in a separate ``reasoning_content``
field are simply not read there: only ``content`` is the answer.)
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol

from xswarm.errors import UsageError, XswarmError

if TYPE_CHECKING:
    from xswarm.inference.worker import MlxWorker

API_KEY_VARIABLES: Final = ("XSWARM_LLM_API_KEY", "OPENAI_API_KEY")  # first one set wins
MLX_PREFIX: Final = "mlx:"  # --llm-model mlx:PATH runs the model in-process
THINK_OPEN: Final = "<think>"  # deepseek-r1 and qwen3 open their reasoning with this
THINK_CLOSE: Final = "</think>"  # ... and close it with this; the answer follows


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat: who said it and what."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class LlmConfig:
    """Where the LLM is and how long to wait for it.

    ``url`` is the base URL of an OpenAI-compatible API, the part before
    ``/chat/completions`` (``http://127.0.0.1:11434/v1`` for ollama); a URL that
    already ends in ``/chat/completions`` is accepted too. ``api_key`` is sent
    as a Bearer token and never shown (it is left out of ``repr``); see
    :func:`api_key_from_env`.
    """

    url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0  # s to open the TCP connection
    stall_timeout: float = 15.0  # s without text (keep-alives do not count) -> LlmError
    max_tokens: int | None = None  # cap on the answer's length; None: the server's default


class LlmError(XswarmError):
    """The LLM failed: one line naming the endpoint and what went wrong."""


class ChatClient(Protocol):
    """A chat model that streams its answer.

    ``stream(messages)`` is an async generator (an ``AsyncIterator[str]`` that
    can be closed) of text deltas, in order, to be
    joined with ``""``. It raises :class:`LlmError` when the endpoint is
    unreachable, times out, answers with an HTTP error or with something that is
    not a chat stream, or ends the stream before the answer is complete (deltas
    already yielded stay valid: the caller decides what to keep).

    Consume it inside ``contextlib.aclosing`` so that leaving early (barge-in)
    or a cancellation closes the underlying connection at once::

        async with contextlib.aclosing(chat.stream(messages)) as deltas:
            async for delta in deltas:
                ...
    """

    def stream(self, messages: Sequence[ChatMessage]) -> AsyncGenerator[str, None]: ...


def api_key_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The API key: ``XSWARM_LLM_API_KEY``, else ``OPENAI_API_KEY``, else None."""
    env = os.environ if environ is None else environ
    for name in API_KEY_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def chat_endpoint(url: str) -> str:
    """``{url}/chat/completions``, checked: a UsageError names a URL that is not http(s)."""
    base = url.strip().rstrip("/")
    try:
        parts = urllib.parse.urlsplit(base)
        parts.port  # noqa: B018 - raises ValueError for a bad port
        valid = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid or any(c.isspace() for c in base):
        raise UsageError(
            f'LLM URL "{without_password(url)}" is not an http(s) URL; pass the API base '
            "with --llm-url, e.g. http://127.0.0.1:11434/v1"
        )
    if base.endswith("/chat/completions"):
        return base
    return f"{base}/chat/completions"


def without_password(url: str) -> str:
    """``url`` fit to print: a password in it (``http://user:secret@host``) is masked."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


class ReasoningFilter:
    """Drops ``<think> ... </think>`` blocks from a stream of text deltas.

    ``feed(delta)`` returns the part of the text so far that is surely answer:
    everything outside reasoning blocks, except a tail that could still turn
    into a tag (``"<thi"``), held until the next delta says; ``end()`` returns
    what is held when the stream ends (an unclosed block is dropped whole).
    Whitespace right after a closing tag (the model's blank line between its
    thinking and its answer) is dropped too, and so is a stray closing tag.
    """

    def __init__(self) -> None:
        self._held = ""  # text not yet decided: a possible tag start, or inside a block
        self._thinking = False
        self._after_block = False  # just closed a block: drop the whitespace that follows

    def feed(self, delta: str) -> str:
        """The answer text ``delta`` completes (possibly ``""``)."""
        text = self._held + delta
        self._held = ""
        spoken: list[str] = []
        while text:
            if self._thinking:
                end = text.find(THINK_CLOSE)
                if end < 0:
                    self._held = text[len(text) - _tag_prefix(text, (THINK_CLOSE,)) :]
                    break
                text = text[end + len(THINK_CLOSE) :]
                self._thinking = False
                self._after_block = True
                continue
            if self._after_block:
                text = text.lstrip()
                if not text:
                    break
                self._after_block = False
            starts = [(i, tag) for tag in (THINK_OPEN, THINK_CLOSE) if (i := text.find(tag)) >= 0]
            if not starts:
                keep = _tag_prefix(text, (THINK_OPEN, THINK_CLOSE))
                spoken.append(text[: len(text) - keep])
                self._held = text[len(text) - keep :]
                break
            start, tag = min(starts)
            spoken.append(text[:start])
            text = text[start + len(tag) :]
            if tag == THINK_OPEN:
                self._thinking = True
            else:
                self._after_block = True  # a closing tag without its opening: drop it
        return "".join(spoken)

    def end(self) -> str:
        """What was held back, at the end of the stream: answer text unless in a block."""
        held, self._held = self._held, ""
        return "" if self._thinking or self._after_block else held


def _tag_prefix(text: str, tags: tuple[str, ...]) -> int:
    """The length of the longest end of ``text`` that begins one of ``tags`` (0: none)."""
    for size in range(min(len(text), max(map(len, tags)) - 1), 0, -1):
        if any(tag.startswith(text[-size:]) for tag in tags):
            return size
    return 0


class _WithoutReasoning:
    """A :class:`ChatClient` whose deltas carry no reasoning blocks (:class:`ReasoningFilter`)."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncGenerator[str, None]:
        """The wrapped client's deltas, filtered; closing this closes the wrapped stream."""
        reasoning = ReasoningFilter()
        async with contextlib.aclosing(self.client.stream(messages)) as deltas:
            async for delta in deltas:
                text = reasoning.feed(delta)
                if text:
                    yield text
        tail = reasoning.end()
        if tail:
            yield tail


@contextlib.asynccontextmanager
async def open_chat(
    config: LlmConfig, *, worker: MlxWorker | None = None
) -> AsyncIterator[ChatClient]:
    """A :class:`ChatClient` for ``config``, open for the duration of the block.

    The HTTP client (its connection pool) or the in-process model is released
    when the block exits, cancelled or not. Raises :class:`UsageError` for a
    malformed URL or an unusable ``mlx:`` model, before anything is sent; a
    server that cannot be reached is only noticed by ``stream``. ``worker`` is
    the session's MLX thread, which an ``mlx:`` model must share when a session
    runs one (RuntimeError otherwise: two MLX threads crash the process); alone,
    it opens its own. An HTTP endpoint ignores it. The client's deltas carry no
    ``<think>`` blocks (:class:`ReasoningFilter`).
    """
    if config.model.startswith(MLX_PREFIX):
        from xswarm.llm.mlx import open_mlx_chat

        async with open_mlx_chat(config, worker) as client:
            yield _WithoutReasoning(client)
        return
    from xswarm.llm.openai import open_openai_chat

    async with open_openai_chat(config) as client:
        yield _WithoutReasoning(client)
