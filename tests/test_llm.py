"""The LLM client against a real OpenAI-style streaming server on 127.0.0.1.

Every test talks HTTP to :mod:`tests.llm_server` through the real client
(httpx under trio): deltas must arrive as the server sends them, each way an
endpoint fails must end in one :class:`LlmError` line naming the endpoint,
quickly, and a barge-in must hang up on the server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Literal

import httpx
import pytest
import trio

from tests.llm_server import MODEL, LlmServer, Recorded, Script, serve_llm
from xswarm.errors import ExitCode, UsageError
from xswarm.llm import (
    SPEECH_RULES,
    ChatMessage,
    LlmConfig,
    LlmError,
    api_key_from_env,
    build_messages,
    open_chat,
    remembered_facts,
)
from xswarm.llm.client import ReasoningFilter
from xswarm.llm.openai import SseDecoder
from xswarm.memory import extract_facts, remember

QUESTION = [ChatMessage("user", "Hi!")]
LONG_REPLY = " ".join(f"word{i}" for i in range(20))


def config(server_url: str, **options: object) -> LlmConfig:
    return LlmConfig(url=server_url, model=MODEL, **options)  # type: ignore[arg-type]


async def collect(cfg: LlmConfig, messages: list[ChatMessage] = QUESTION) -> list[str]:
    async with (
        open_chat(cfg) as chat,
        contextlib.aclosing(chat.stream(messages)) as deltas,
    ):
        return [delta async for delta in deltas]


async def failure(cfg: LlmConfig, received: list[str] | None = None) -> tuple[str, float]:
    """The LlmError line a stream ends with, and how long it took."""
    start = time.monotonic()
    with trio.fail_after(10), pytest.raises(LlmError) as caught:
        async with open_chat(cfg) as chat, contextlib.aclosing(chat.stream(QUESTION)) as deltas:
            async for delta in deltas:
                if received is not None:
                    received.append(delta)
    message = caught.value.message
    assert "\n" not in message and "Traceback" not in message
    return message, time.monotonic() - start


async def handler_done(request: Recorded, seconds: float = 2.0) -> bool:
    """Wait (in a thread) until the server's handler for ``request`` returns."""
    return await trio.to_thread.run_sync(request.finished.wait, seconds)


# --- streaming ----------------------------------------------------------------------------


async def test_deltas_arrive_while_the_server_is_still_sending(llm_server: LlmServer) -> None:
    reply = "One two three four five six seven eight."
    llm_server.push(Script(text=reply, delay=0.05))
    arrivals: list[float] = []
    deltas: list[str] = []
    with trio.fail_after(10):
        async with (
            open_chat(config(llm_server.url)) as chat,
            contextlib.aclosing(chat.stream(QUESTION)) as stream,
        ):
            async for delta in stream:
                arrivals.append(time.monotonic())
                deltas.append(delta)
    (request,) = llm_server.chat_requests
    assert "".join(deltas) == reply
    assert deltas == request.chunks == ["One", " two", " three", " four", " five", " six",
                                        " seven", " eight."]  # fmt: skip
    # The first word was in the client's hands before the server sent its last.
    assert arrivals[0] < request.chunk_times[-1] - 0.2
    assert request.body["stream"] is True and request.body["model"] == MODEL


async def test_request_carries_persona_prompt_facts_history_and_key(
    llm_server: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XSWARM_LLM_API_KEY", "sk-secret-123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-other")
    history = [ChatMessage("user", "Hello."), ChatMessage("assistant", "Good evening.")]
    messages = build_messages(
        "You are Jarvis.", ["The user's name is Ada."], history, "What is my name?"
    )
    cfg = LlmConfig(llm_server.url, MODEL, api_key=api_key_from_env(), max_tokens=64)
    assert "sk-secret" not in repr(cfg)
    with trio.fail_after(10):
        assert "".join(await collect(cfg, messages)) == llm_server.default.text
    (request,) = llm_server.chat_requests
    assert request.method == "POST" and request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-secret-123"
    assert "text/event-stream" in request.headers["Accept"]
    assert request.body["max_tokens"] == 64
    system = request.messages[0]
    assert system["role"] == "system"
    assert system["content"].startswith("You are Jarvis.")
    assert SPEECH_RULES in system["content"]
    assert "- The user's name is Ada." in system["content"]
    assert request.messages[1:] == [
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Good evening."},
        {"role": "user", "content": "What is my name?"},
    ]


async def test_no_key_no_authorization_header(llm_server: LlmServer) -> None:
    with trio.fail_after(10):
        await collect(config(llm_server.url))
    assert "Authorization" not in llm_server.chat_requests[0].headers


def test_api_key_from_env_prefers_xswarm_then_openai() -> None:
    assert api_key_from_env({"XSWARM_LLM_API_KEY": "a", "OPENAI_API_KEY": "b"}) == "a"
    assert api_key_from_env({"XSWARM_LLM_API_KEY": " ", "OPENAI_API_KEY": "b"}) == "b"
    assert api_key_from_env({}) is None


async def test_sse_framing_crlf_comments_multiline_and_split_reads(
    llm_server: LlmServer,
) -> None:
    chunk = '{"choices":[{"delta":{"content":"%s"}}]}'
    raw = (
        ": keep-alive\r\n\r\n"
        "event: message\r\nid: 1\r\n"
        f"data: {chunk % 'Bon'}\r\n\r\n"
        'data: {"choices":[{"delta":\r\ndata: {"content":"jour"}}]}\r\n\r\n'  # two data lines
        'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
        'data: {"choices":[]}\n\n'  # a usage-only chunk
        f"retry: 100\ndata:{chunk % ' à tous'}\n\n"  # no space after the colon
        "data: [DONE]\r\n\r\n"
    ).encode()
    llm_server.push(Script(mode="raw", raw=raw, piece=5))
    with trio.fail_after(10):
        assert await collect(config(llm_server.url)) == ["Bon", "jour", " à tous"]


def test_sse_decoder_events() -> None:
    decoder = SseDecoder()
    assert decoder.line(": ping") is None
    assert decoder.line("event: error") is None
    assert decoder.line("data: a") is None
    assert decoder.line("data") is None
    assert decoder.line("data: b") is None
    assert decoder.line("") == ("error", "a\n\nb")
    assert decoder.line("") is None
    assert decoder.line("data: [DONE]") is None
    assert decoder.end() == ("", "[DONE]")


async def test_a_server_that_ignores_stream_still_answers(llm_server: LlmServer) -> None:
    llm_server.push(Script(text="All at once.", mode="json"))
    with trio.fail_after(10):
        assert await collect(config(llm_server.url)) == ["All at once."]


async def test_slow_first_token_within_the_stall_timeout_is_fine(llm_server: LlmServer) -> None:
    llm_server.push(Script(text="Thinking done.", mode="slow-first-token", first_token_delay=0.6))
    with trio.fail_after(10):
        assert await collect(config(llm_server.url, stall_timeout=2.0)) == ["Thinking", " done."]


async def test_the_client_reuses_its_connection_between_turns(llm_server: LlmServer) -> None:
    with trio.fail_after(10):
        async with open_chat(config(llm_server.url)) as chat:
            for _ in range(3):
                async with contextlib.aclosing(chat.stream(QUESTION)) as deltas:
                    assert "".join([d async for d in deltas]) == llm_server.default.text
    assert len(llm_server.chat_requests) == 3


async def test_a_kept_alive_connection_dropped_by_the_server_is_replaced(
    llm_server: LlmServer,
) -> None:
    with trio.fail_after(10):
        async with open_chat(config(llm_server.url)) as chat:
            async with contextlib.aclosing(chat.stream(QUESTION)) as deltas:
                assert "".join([d async for d in deltas]) == llm_server.default.text
            assert await handler_done(llm_server.chat_requests[0])
            llm_server.drop_connections()  # between turns: an idle timeout, a restart
            await trio.sleep(0.05)  # the FIN reaches the client's pooled socket
            async with contextlib.aclosing(chat.stream(QUESTION)) as deltas:
                assert "".join([d async for d in deltas]) == llm_server.default.text


async def test_models_route(llm_server: LlmServer) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{llm_server.url}/models")
    assert answer.json()["data"][0]["id"] == MODEL


# --- reasoning models ---------------------------------------------------------------------


def _filtered(deltas: list[str]) -> tuple[list[str], str]:
    """What a ReasoningFilter passes on for each delta, and the whole answer."""
    reasoning = ReasoningFilter()
    out = [reasoning.feed(delta) for delta in deltas] + [reasoning.end()]
    return out, "".join(out)


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("<think>\nHmm, a greeting. </think>\n\nHello there.", "Hello there."),
        ("Hello <think>x<y</think>there.", "Hello there."),
        ("a < b and c <th> d.", "a < b and c <th> d."),
        ("No tags at all.", "No tags at all."),
        ("Stray </think>close.", "Stray close."),
        ("<think>never closed, all thinking", ""),
        ("Ends on a tag start <thi", "Ends on a tag start <thi"),
        ("<think>a</think>One.<think>b</think> Two.", "One.Two."),
    ],
)
def test_reasoning_blocks_are_dropped_however_the_deltas_split(text: str, spoken: str) -> None:
    for size in (1, 2, 3, 5, len(text)):
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        assert _filtered(pieces)[1] == spoken, size
    for cut in range(len(text) + 1):  # every place one split can fall, tags included
        assert _filtered([text[:cut], text[cut:]])[1] == spoken, cut


def test_reasoning_filter_holds_back_only_a_possible_tag_start() -> None:
    out, _ = _filtered(["Hello", " there <", "b>", " and <th", "ink>secret</thi", "nk> ok"])
    assert out == ["Hello", " there ", "<b>", " and ", "", "ok", ""]


async def test_thinking_is_never_spoken_in_content_or_reasoning_fields(
    llm_server: LlmServer,
) -> None:
    think = "<think> The user says hi. I should greet them back. </think>"
    llm_server.push(Script(text="\n\nHello there.", think=think, reasoning="Let me think."))
    with trio.fail_after(10):
        deltas = await collect(config(llm_server.url))
    assert "".join(deltas) == "Hello there."
    assert all("think" not in d and "greet" not in d for d in deltas)
    (request,) = llm_server.chat_requests
    assert "".join(request.chunks).startswith("<think> The user")  # it was sent, as content


# --- failures -----------------------------------------------------------------------------


async def test_connection_refused() -> None:
    with socket.socket() as bound:  # bound, not listening: connecting is refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/v1"
        message, seconds = await failure(config(url))
    assert message == (
        f"cannot connect to the LLM at {url}/chat/completions: Connection refused (is it running?)"
    )
    assert seconds < 1


async def test_connect_timeout() -> None:
    with socket.socket() as listener:  # a full accept queue: the SYN goes unanswered
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        try:
            url = f"http://127.0.0.1:{port}/v1"
            message, seconds = await failure(config(url, connect_timeout=0.3))
        finally:
            for filler in fillers:
                filler.close()
    assert message == (
        f"the LLM at {url}/chat/completions did not accept a connection within 0.3 s"
    )
    assert 0.25 < seconds < 2


async def test_http_500_names_the_server_message(llm_server: LlmServer) -> None:
    llm_server.push(Script(mode="http500", error="CUDA out of memory"))
    message, seconds = await failure(config(llm_server.url))
    endpoint = f"{llm_server.url}/chat/completions"
    assert message == (
        f"the LLM at {endpoint} answered HTTP 500 Internal Server Error: CUDA out of memory"
    )
    assert seconds < 2


async def test_http_401_hints_at_the_key_variables(llm_server: LlmServer) -> None:
    llm_server.push(Script(mode="http", status=401, error="Incorrect API key provided"))
    message, _ = await failure(config(llm_server.url))
    assert message.endswith(
        "answered HTTP 401 Unauthorized: Incorrect API key provided "
        "(set the API key in XSWARM_LLM_API_KEY or OPENAI_API_KEY)"
    )


async def test_wrong_url_path_gives_404_with_a_hint(llm_server: LlmServer) -> None:
    url = llm_server.url.removesuffix("/v1")  # a common slip: the server, not its API base
    message, _ = await failure(config(url))
    assert message == (
        f"the LLM at {url}/chat/completions answered HTTP 404 Not Found: no route "
        "/chat/completions (check --llm-url, the API base ending in /v1, and --llm-model)"
    )


async def test_stream_cut_mid_answer(llm_server: LlmServer) -> None:
    llm_server.push(Script(text=LONG_REPLY, mode="cut", after=3))
    received: list[str] = []
    message, seconds = await failure(config(llm_server.url), received)
    assert message.startswith(
        f"the LLM at {llm_server.url}/chat/completions closed the connection before the "
        "answer was complete ("
    )
    assert received == ["word0", " word1", " word2"]
    assert seconds < 2


async def test_a_hang_up_before_any_answer_is_retried_once(llm_server: LlmServer) -> None:
    llm_server.push(Script(mode="hangup"))
    with trio.fail_after(10):
        assert "".join(await collect(config(llm_server.url))) == llm_server.default.text
    assert len(llm_server.chat_requests) == 2
    llm_server.push(Script(mode="hangup"), Script(mode="hangup"))
    message, _ = await failure(config(llm_server.url))
    assert message == (
        f"the LLM at {llm_server.url}/chat/completions closed the connection before the "
        "answer was complete (Server disconnected without sending a response.)"
    )
    assert len(llm_server.chat_requests) == 4


async def test_stream_ended_without_done(llm_server: LlmServer) -> None:
    llm_server.push(Script(text=LONG_REPLY, mode="no-done", after=2))
    received: list[str] = []
    message, _ = await failure(config(llm_server.url), received)
    assert message == (
        f"the LLM at {llm_server.url}/chat/completions ended the stream before the answer "
        "was complete (no [DONE])"
    )
    assert received == ["word0", " word1"]


async def test_stall_gives_up_after_stall_timeout(llm_server: LlmServer) -> None:
    llm_server.push(Script(text=LONG_REPLY, mode="stall", after=2, stall=30))
    received: list[str] = []
    message, seconds = await failure(config(llm_server.url, stall_timeout=0.5), received)
    assert message == (
        f"the LLM at {llm_server.url}/chat/completions stalled: nothing received for 0.5 s"
    )
    assert received == ["word0", " word1"]
    assert 0.45 < seconds < 1.5
    (request,) = llm_server.chat_requests
    assert await handler_done(request)  # the server sees the client give up
    assert request.client_closed


@pytest.mark.parametrize("ping", ["comment", "empty"])
@pytest.mark.parametrize("after", [0, 2])
async def test_keep_alives_without_text_are_a_stall_too(
    llm_server: LlmServer, ping: Literal["comment", "empty"], after: int
) -> None:
    # The server is alive (": ping" or an empty chunk every 50 ms, so no read ever
    # times out) but its model sends nothing: after 0.5 s without text, give up.
    llm_server.push(Script(text=LONG_REPLY, mode="keepalive", after=after, stall=30, ping=ping))
    received: list[str] = []
    message, seconds = await failure(config(llm_server.url, stall_timeout=0.5), received)
    assert message == (
        f"the LLM at {llm_server.url}/chat/completions stalled: no text of the answer "
        "for 0.5 s (only keep-alives)"
    )
    assert received == llm_server.chat_requests[0].chunks and len(received) == after
    assert 0.45 < seconds < 1.5
    (request,) = llm_server.chat_requests
    assert await handler_done(request)  # the server sees the client give up
    assert request.client_closed


async def test_keep_alives_between_words_within_the_stall_timeout_are_fine(
    llm_server: LlmServer,
) -> None:
    # Keep-alives for 0.3 s between two words, a slow consumer, and thinking sent in
    # reasoning_content for longer than the timeout in all: text keeps the answer alive.
    llm_server.push(
        Script(text="One two three.", mode="keepalive", after=1, stall=0.3, reasoning="a b c")
    )
    deltas: list[str] = []
    with trio.fail_after(10):
        async with (
            open_chat(config(llm_server.url, stall_timeout=0.5)) as chat,
            contextlib.aclosing(chat.stream(QUESTION)) as stream,
        ):
            async for delta in stream:
                deltas.append(delta)
                await trio.sleep(0.3)  # the consumer's own time is not a stall
    assert deltas == ["One", " two", " three."]


async def test_garbage_in_the_event_stream(llm_server: LlmServer) -> None:
    llm_server.push(Script(mode="garbage"))
    message, _ = await failure(config(llm_server.url))
    assert message == (
        f"the LLM at {llm_server.url}/chat/completions sent garbage in its event stream: "
        "{this is not json"
    )


async def test_html_instead_of_an_event_stream(llm_server: LlmServer) -> None:
    llm_server.push(Script(mode="html"))
    message, _ = await failure(config(llm_server.url))
    assert message == (
        f"the LLM at {llm_server.url}/chat/completions answered with text/html, not an event "
        "stream: is --llm-url the API base (for example http://HOST:PORT/v1)?"
    )


async def test_a_body_that_is_not_sse(llm_server: LlmServer) -> None:
    llm_server.push(Script(mode="raw", raw=b"Hello, I am not SSE\n\n"))
    message, _ = await failure(config(llm_server.url))
    assert message == (
        f"the LLM at {llm_server.url}/chat/completions did not send a server-sent event "
        "stream (got Hello, I am not SSE)"
    )


async def test_an_error_event_mid_answer(llm_server: LlmServer) -> None:
    raw = (
        b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
        b'data: {"error":{"message":"model overloaded","code":503}}\n\n'
    )
    llm_server.push(Script(mode="raw", raw=raw))
    received: list[str] = []
    message, _ = await failure(config(llm_server.url), received)
    assert received == ["Hi"]
    assert message == (
        f"the LLM at {llm_server.url}/chat/completions reported an error mid-answer: "
        "model overloaded"
    )


@pytest.mark.parametrize(
    "url",
    [
        "localhost:11434/v1",
        "ftp://x/v1",
        "http://",
        "",
        "http://127.0.0.1:99999/v1",
        "http://127.0.0.1:abc/v1",
        "http://[::1/v1",
        "http://127.0.0.1:8080/v1 x",
    ],
)
async def test_a_url_that_is_not_http_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError, match="is not an http") as caught:
        async with open_chat(LlmConfig(url, MODEL)):
            pass
    assert caught.value.exit_code == ExitCode.USAGE
    assert "--llm-url" in caught.value.message


async def test_a_password_in_the_url_is_never_shown() -> None:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        message, _ = await failure(config(f"http://ada:hunter2@127.0.0.1:{port}/v1"))
    assert "hunter2" not in message
    assert f"the LLM at http://ada:***@127.0.0.1:{port}/v1/chat/completions" in message


async def test_a_full_endpoint_url_is_accepted(llm_server: LlmServer) -> None:
    with trio.fail_after(10):
        await collect(config(f"{llm_server.url}/chat/completions/"))
    assert llm_server.chat_requests[0].path == "/v1/chat/completions"


# --- barge-in -----------------------------------------------------------------------------


async def _wait_closed(server: LlmServer) -> float:
    (request,) = server.chat_requests
    assert await handler_done(request)
    assert request.client_closed and request.closed_at is not None
    assert len(request.chunks) < 20
    return request.closed_at


async def test_cancelling_the_consumer_hangs_up_on_the_server(llm_server: LlmServer) -> None:
    llm_server.push(Script(text=LONG_REPLY, delay=0.1))
    received: list[str] = []
    async with open_chat(config(llm_server.url)) as chat:
        with trio.CancelScope() as scope:
            async with contextlib.aclosing(chat.stream(QUESTION)) as deltas:
                async for delta in deltas:
                    received.append(delta)
                    if len(received) == 2:
                        cancelled_at = time.monotonic()
                        scope.cancel()
                        await trio.sleep(1)  # a checkpoint: the cancellation lands here
        assert scope.cancelled_caught
        closed_at = await _wait_closed(llm_server)
    assert received == ["word0", " word1"]
    assert closed_at - cancelled_at < 0.2


async def test_cancelling_before_the_answer_starts_hangs_up_too(llm_server: LlmServer) -> None:
    llm_server.push(Script(headers_delay=30))
    async with open_chat(config(llm_server.url)) as chat:
        with trio.move_on_after(0.3) as scope:
            async with contextlib.aclosing(chat.stream(QUESTION)) as deltas:
                async for _ in deltas:
                    raise AssertionError("no delta was sent")
        assert scope.cancelled_caught
        cancelled_at = time.monotonic()
        closed_at = await _wait_closed(llm_server)
    assert closed_at - cancelled_at < 0.2


async def test_leaving_the_stream_early_hangs_up_on_the_server(llm_server: LlmServer) -> None:
    llm_server.push(Script(text=LONG_REPLY, delay=0.1))
    async with open_chat(config(llm_server.url)) as chat:
        async with contextlib.aclosing(chat.stream(QUESTION)) as deltas:
            async for _ in deltas:
                left_at = time.monotonic()
                break
        closed_at = await _wait_closed(llm_server)
    assert closed_at - left_at < 0.2


# --- the test server itself ---------------------------------------------------------------


def _raw_request(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    client = socket.create_connection((host, int(port)))
    body = b'{"model":"m","messages":[],"stream":true}'
    client.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    return client


def _server_threads() -> Iterator[threading.Thread]:
    return (t for t in threading.enumerate() if t.name.startswith(("llm-server", "Thread-")))


def test_closing_the_server_releases_a_stalled_handler_at_once() -> None:
    before = set(_server_threads())
    with serve_llm() as server:
        server.push(Script(mode="stall", stall=30))
        client = _raw_request(server.url)
        deadline = time.monotonic() + 5
        while not server.chat_requests and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.monotonic()
    closed_in = time.monotonic() - start
    client.close()
    assert server.chat_requests[0].finished.is_set()
    assert closed_in < 1
    assert set(_server_threads()) <= before


# --- the prompt ---------------------------------------------------------------------------


def test_build_messages_order_and_speech_rules() -> None:
    messages = build_messages("  You are Sage.  ", [], [], " Hello? ")
    assert messages == [
        ChatMessage("system", f"You are Sage.\n\n{SPEECH_RULES}"),
        ChatMessage("user", "Hello?"),
    ]
    for rule in ("one to three short sentences", "no markdown", "no emoji", "as words"):
        assert rule in SPEECH_RULES


def test_build_messages_trims_the_oldest_turns_past_the_budget() -> None:
    history = [
        ChatMessage("user" if i % 2 == 0 else "assistant", f"turn {i} " + "x" * 90)
        for i in range(10)
    ]  # 10 messages of ~97 characters
    messages = build_messages("P", [], history, "now", budget_chars=350)
    kept = messages[1:-1]
    # The newest three fit in 350 characters; the oldest of them is an assistant
    # reply whose question was trimmed, so it goes too.
    assert [m.content.split()[1] for m in kept] == ["8", "9"]
    assert kept[0].role == "user"
    assert messages[-1] == ChatMessage("user", "now")
    # Everything fits in the default budget, and system messages in history are skipped.
    everything = build_messages("P", [], [ChatMessage("system", "old"), *history], "now")
    assert everything[1:-1] == history


def test_build_messages_with_remembered_facts() -> None:
    remember("sage", extract_facts("My name is Ada. I live in Lyon and I love jazz."))
    facts = remembered_facts("sage")
    assert facts == [
        "The user's name is Ada.",
        "The user lives in Lyon.",
        "The user likes jazz.",
    ]
    system = build_messages("You are Sage.", facts, [], "Hi")[0].content
    assert system.endswith(
        "What the user told you in earlier conversations:\n"
        "- The user's name is Ada.\n- The user lives in Lyon.\n- The user likes jazz."
    )
    assert remembered_facts("nobody") == []
