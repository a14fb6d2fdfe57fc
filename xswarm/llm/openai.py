"""An OpenAI-compatible chat-completions client that streams, under trio.

``POST {url}/chat/completions`` with ``"stream": true`` answers with
server-sent events (SSE): ``data: {json chunk}`` lines separated by blank
lines, each chunk carrying ``choices[0].delta.content``, and a final
``data: [DONE]``. ollama, llama.cpp's server, LM Studio, vLLM and OpenAI all
speak it, so one client covers them.

Why httpx: its ``AsyncClient`` runs under trio (through anyio), streams a
response body as it arrives, and has separate connect and read timeouts. The
read timeout catches a silent server (no byte for ``stall_timeout`` seconds),
but it restarts on every byte, so a server that only sends SSE keep-alive
comments (``: ping``) or empty chunks while its model hangs would never
stall. Hence a second rule, on progress: no text of the answer (or of its
reasoning) for ``stall_timeout`` seconds since the request or the last text
is a stall too. A slow but live model, which sends text, is never cut off.
The SSE framing is twenty lines here; the
``httpx-sse`` package would save those lines but not the error handling
around them, which is most of this module.

Errors: every failure becomes one :class:`~xswarm.llm.client.LlmError` line
naming the endpoint (refused, connect timeout, stalled, HTTP status with the
server's own message, not an event stream, garbage in the stream, stream cut
before ``[DONE]``). Cancellation (barge-in) closes the response, and with it
the TCP connection, before the cancellation propagates: the server sees the
client go and can stop generating.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import asdict
from typing import Any, Final

import httpx
import trio

from xswarm.llm.client import ChatMessage, LlmConfig, LlmError, chat_endpoint, without_password

ERROR_BODY_LIMIT: Final = 16_384  # bytes of an error response read for its message
MESSAGE_LIMIT: Final = 200  # characters of a server's message kept in our one line
USER_AGENT: Final = "xswarm"


class OpenAiChat:
    """A :class:`~xswarm.llm.client.ChatClient` for one OpenAI-compatible endpoint.

    Built by :func:`open_openai_chat`, which owns (and closes) the HTTP client.
    """

    def __init__(self, config: LlmConfig, http: httpx.AsyncClient) -> None:
        self.config = config
        self.endpoint = chat_endpoint(config.url)
        self._http = http

    def _request_body(self, messages: Sequence[ChatMessage]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [asdict(message) for message in messages],
            "stream": True,
        }
        if self.config.max_tokens is not None:
            body["max_tokens"] = self.config.max_tokens
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "User-Agent": USER_AGENT}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    async def _send(self, messages: Sequence[ChatMessage]) -> httpx.Response:
        """POST the request; the response's body is left to stream (the caller closes it).

        A connection kept alive from an earlier answer may have been closed by the
        server meanwhile (idle timeout, restart) just as the request went out: the
        server then hangs up without a byte of answer. That is retried once, on a
        fresh connection; a second hang-up is an error.
        """
        request = self._http.build_request(
            "POST", self.endpoint, json=self._request_body(messages), headers=self._headers()
        )
        try:
            return await self._http.send(request, stream=True)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            return await self._http.send(request, stream=True)

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncGenerator[str, None]:
        """The answer to ``messages`` as text deltas; see :class:`ChatClient`.

        Raises :class:`LlmError`. Closing the generator early or cancelling the
        consuming task closes the HTTP response (and its connection).
        """
        where = f"the LLM at {without_password(self.endpoint)}"
        stall = self.config.stall_timeout
        deadline = trio.current_time() + stall  # for the first text: see _sse_deltas
        try:
            async with contextlib.AsyncExitStack() as stack:
                response = await self._send(messages)
                stack.push_async_callback(response.aclose)
                if response.status_code >= 400:
                    raise _status_error(where, response, await _read_limited(response))
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind == "text/event-stream":
                    events = _sse_deltas(where, response, deadline, stall)
                    async with contextlib.aclosing(events) as deltas:
                        async for delta in deltas:
                            yield delta
                elif kind.endswith("json"):
                    # A server that ignores "stream": the whole answer at once is still an answer.
                    yield _whole_answer(where, await _read_limited(response))
                else:
                    raise LlmError(
                        f"{where} answered with {kind or 'no content type'}, not an event "
                        "stream: is --llm-url the API base (for example http://HOST:PORT/v1)?"
                    )
        except httpx.ConnectTimeout:
            raise LlmError(
                f"{where} did not accept a connection within {self.config.connect_timeout:g} s"
            ) from None
        except httpx.ConnectError as error:
            hint = "check the host in --llm-url" if _unknown_host(error) else "is it running?"
            raise LlmError(f"cannot connect to {where}: {_reason(error)} ({hint})") from None
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
            raise LlmError(
                f"{where} stalled: nothing received for {self.config.stall_timeout:g} s"
            ) from None
        except httpx.RemoteProtocolError as error:
            raise LlmError(
                f"{where} closed the connection before the answer was complete ({_reason(error)})"
            ) from None
        except httpx.HTTPError as error:
            raise LlmError(f"{where} failed: {_reason(error)}") from None


@contextlib.asynccontextmanager
async def open_openai_chat(config: LlmConfig) -> AsyncIterator[OpenAiChat]:
    """An :class:`OpenAiChat` whose connection pool lives as long as the block."""
    chat_endpoint(config.url)  # UsageError for a bad URL, before any I/O
    timeout = httpx.Timeout(
        connect=config.connect_timeout,
        read=config.stall_timeout,
        write=config.stall_timeout,
        pool=config.connect_timeout,
    )
    async with httpx.AsyncClient(timeout=timeout) as http:
        yield OpenAiChat(config, http)


# --- server-sent events -----------------------------------------------------------------


class _NotAnEventStream(Exception):
    """A line that no SSE stream contains."""


class SseDecoder:
    """Server-sent events from lines (the ``data`` of each event).

    Follows the SSE rules that matter here: ``data:`` lines of one event join
    with newlines, a blank line ends the event, ``:`` lines are comments
    (keep-alives), ``event``/``id``/``retry`` are read and ignored except an
    ``error`` event name. Any other line means the body is not SSE at all.
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""

    def line(self, line: str) -> tuple[str, str] | None:
        """Feed one line (without its end); returns ``(event, data)`` when an event ends."""
        if not line:
            return self.end()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name not in ("id", "retry"):
            raise _NotAnEventStream(line)
        return None

    def end(self) -> tuple[str, str] | None:
        """The pending event, if any (the body ended without a final blank line)."""
        if not self._data:
            self._event = ""
            return None
        event = (self._event, "\n".join(self._data))
        self._data, self._event = [], ""
        return event


async def _sse_deltas(
    where: str, response: httpx.Response, deadline: float, stall: float
) -> AsyncGenerator[str, None]:
    """The text deltas of an SSE body; LlmError when no text came by ``deadline``.

    ``deadline`` (trio time) moves to ``stall`` s after each text, of the answer or
    of its reasoning (``reasoning_content``, not yielded), and after the consumer
    took a delta (its own time is not the server's). Keep-alive comments and empty
    chunks do not move it. The waits are scoped to each read, never across a
    ``yield``: the consumer's code never runs inside this generator's cancel scope.
    """
    decoder = SseDecoder()
    received = False  # lines came since the last text: the server is alive, its model not

    def deltas(event: tuple[str, str] | None) -> tuple[list[str], bool] | None:
        """The event's text deltas and whether it carried any text; None for [DONE]."""
        if event is None:
            return [], False
        name, data = event
        if data.strip() == "[DONE]":
            return None
        try:
            chunk = json.loads(data)
        except ValueError:
            raise LlmError(f"{where} sent garbage in its event stream: {_clip(data)}") from None
        if name == "error" or (isinstance(chunk, dict) and "error" in chunk):
            raise LlmError(f"{where} reported an error mid-answer: {_error_message(chunk)}")
        return _chunk_text(where, chunk)

    def stalled() -> LlmError:
        if received:
            return LlmError(
                f"{where} stalled: no text of the answer for {stall:g} s (only keep-alives)"
            )
        return LlmError(f"{where} stalled: nothing received for {stall:g} s")

    try:
        async with contextlib.aclosing(response.aiter_lines()) as lines:
            while True:
                line: str | None = None
                with trio.move_on_at(deadline) as wait:
                    line = await anext(lines, None)
                if wait.cancelled_caught:
                    raise stalled()
                if line is None:
                    break
                received = True
                got = deltas(decoder.line(line))
                if got is None:
                    return
                texts, progress = got
                if progress:
                    deadline, received = trio.current_time() + stall, False
                for text in texts:
                    yield text
                    deadline = max(deadline, trio.current_time() + stall)
        got = deltas(decoder.end())
    except _NotAnEventStream as error:
        raise LlmError(
            f"{where} did not send a server-sent event stream (got {_clip(str(error))})"
        ) from None
    if got is None:
        return
    for text in got[0]:
        yield text
    raise LlmError(f"{where} ended the stream before the answer was complete (no [DONE])")


def _chunk_text(where: str, chunk: Any) -> tuple[list[str], bool]:
    """``choices[0].delta.content`` of one streamed chunk (empty list when absent), and
    whether the chunk carried text at all: content, or reasoning in ``reasoning_content``
    or ``reasoning`` (servers that split a reasoning model's thinking out; never spoken)."""
    try:
        choices = chunk["choices"]
        if not choices:
            return [], False  # usage-only chunks (stream_options) have no choices
        delta = choices[0].get("delta") or {}
        content = delta.get("content")
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    except (KeyError, TypeError, AttributeError, IndexError):
        raise LlmError(
            f"{where} sent a chunk that is not a chat completion: {_clip(json.dumps(chunk))}"
        ) from None
    thinking = isinstance(reasoning, str) and bool(reasoning)
    if content is None:
        return [], thinking
    if not isinstance(content, str):
        raise LlmError(f"{where} sent non-text content: {_clip(json.dumps(content))}")
    return ([content] if content else []), thinking or bool(content)


def _whole_answer(where: str, body: bytes) -> str:
    """``choices[0].message.content`` of a non-streamed answer."""
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, TypeError, IndexError):
        raise LlmError(f"{where} sent garbage: {_clip(body.decode('utf-8', 'replace'))}") from None
    if not isinstance(content, str):
        raise LlmError(f"{where} sent non-text content: {_clip(json.dumps(content))}")
    return content


# --- error messages ---------------------------------------------------------------------


async def _read_limited(response: httpx.Response) -> bytes:
    body = b""
    async for part in response.aiter_bytes():
        body += part
        if len(body) >= ERROR_BODY_LIMIT:
            break
    return body[:ERROR_BODY_LIMIT]


def _status_error(where: str, response: httpx.Response, body: bytes) -> LlmError:
    status = response.status_code
    text = body.decode("utf-8", "replace").strip()
    try:
        message = _error_message(json.loads(text))
    except ValueError:
        message = text
    line = f"{where} answered HTTP {status} {response.reason_phrase}".rstrip()
    if message:
        line += f": {_clip(message)}"
    if status in (401, 403):
        line += " (set the API key in XSWARM_LLM_API_KEY or OPENAI_API_KEY)"
    elif status == 404:
        line += " (check --llm-url, the API base ending in /v1, and --llm-model)"
    return LlmError(line)


def _error_message(data: Any) -> str:
    """The message in an OpenAI ``{"error": {"message": ...}}`` or ollama ``{"error": "..."}``."""
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if isinstance(error, str):
            return error
        if error is not None:
            return json.dumps(error)
    return json.dumps(data)


def _reason(error: BaseException) -> str:
    """The most specific OS-level reason under an httpx error ("Connection refused")."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    best = str(error) or type(error).__name__
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            code = current.errno
            if not isinstance(current, socket.gaierror) and code is not None and code > 0:
                return os.strerror(code)  # without trio's "Error connecting to ..."
            return current.strerror
        stack.extend(getattr(current, "exceptions", ()))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)
    return best


def _unknown_host(error: BaseException) -> bool:
    """Whether a name lookup failed somewhere under ``error``."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return True
        stack.extend(getattr(current, "exceptions", ()))
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


def _clip(text: str) -> str:
    """One line of at most MESSAGE_LIMIT characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MESSAGE_LIMIT else flat[: MESSAGE_LIMIT - 1] + "…"
