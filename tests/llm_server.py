"""A real OpenAI-compatible streaming chat server on 127.0.0.1, for tests.

Tests of the LLM client and of the cascade need an endpoint that speaks the
real protocol over a real socket (HTTP/1.1, chunked transfer, server-sent
events) and that can be told to fail in each way a real one does. This is it:
a stdlib ``ThreadingHTTPServer`` on port 0 in a thread, serving

- ``POST /v1/chat/completions`` with ``"stream": true``: a role chunk, the
  reply word by word as ``choices[0].delta.content`` chunks, a
  ``finish_reason`` chunk and ``data: [DONE]``, as OpenAI sends them;
- ``GET /v1/models``: the one model, for clients that list models.

Each request takes the next :class:`Script` queued with :meth:`LlmServer.push`
(or the default one): the reply text, the delay between chunks, and a failure
mode. Every request is recorded (:class:`Recorded`: body, headers, the
monotonic time each chunk was sent, whether the client hung up).

Use the ``llm_server`` fixture, or ``with serve_llm() as server:``. Closing
the server releases stalled handlers, closes every connection and joins every
handler thread: nothing outlives the test.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Literal

import pytest

MODEL: Final = "test-model"
POLL_SECONDS: Final = 0.02  # s between checks for shutdown or a client hang-up while waiting
SOCKET_TIMEOUT: Final = 10.0  # s an idle keep-alive connection is kept by a handler

Mode = Literal[
    "ok",  # the reply, then [DONE]
    "http",  # an HTTP error: `status` with an OpenAI error body carrying `error`
    "http500",  # the same with status 500
    "cut",  # `after` content chunks, then the connection is closed mid-body
    "no-done",  # `after` content chunks, then a clean end of the body without [DONE]
    "stall",  # `after` content chunks, then nothing for `stall` s, then the rest
    "garbage",  # an event stream whose data is not JSON
    "html",  # 200 with an HTML page instead of an event stream
    "json",  # the whole answer as one non-streamed JSON completion
    "slow-first-token",  # the role chunk, `first_token_delay` s, then the reply
    "raw",  # `raw` bytes as the event stream's body, sent in `piece`-byte chunks
    "hangup",  # read the request, then close the connection without a byte of answer
    "keepalive",  # `after` content chunks, then for `stall` s only keep-alives every
    # `ping_every` s (`ping`: SSE comments or empty delta chunks), then the rest
]


@dataclass
class Script:
    """What the server does for one request."""

    text: str = "Hello there. How can I help you today?"
    mode: Mode = "ok"
    delay: float = 0.0  # s between content chunks
    first_token_delay: float = 1.0  # s, in mode "slow-first-token"
    headers_delay: float = 0.0  # s before the response's status line (the model's queue)
    after: int = 2  # content chunks sent before "cut", "no-done" or "stall" strike
    stall: float = 30.0  # s of silence in mode "stall" (released early when the server closes)
    status: int = 500  # in mode "http"
    error: str = "the model crashed"  # the error message in mode "http"
    raw: bytes = b""  # the body in mode "raw"
    piece: int = 7  # bytes per HTTP chunk in mode "raw": lines split across reads
    think: str = ""  # a reasoning model's thinking, sent word by word as content before the
    # reply (wrap it in <think>...</think> yourself), before `first_token_delay`
    reasoning: str = ""  # thinking sent word by word in `reasoning_content` delta fields
    ping: Literal["comment", "empty"] = "comment"  # keep-alives in mode "keepalive"
    ping_every: float = 0.05  # s between keep-alives in mode "keepalive"


@dataclass
class Recorded:
    """One request as the server saw it, and what it sent back."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body (None for GET)
    script: Script | None = None
    chunk_times: list[float] = field(default_factory=list)  # time.monotonic() of each content chunk
    chunks: list[str] = field(default_factory=list)  # the content of each chunk sent
    client_closed: bool = False  # the client hung up before the server was done
    closed_at: float | None = None  # time.monotonic() when the server noticed the hang-up
    finished: threading.Event = field(default_factory=threading.Event)  # handler done

    @property
    def messages(self) -> list[dict[str, str]]:
        return list(self.body["messages"]) if isinstance(self.body, dict) else []


class _ClientGone(Exception):
    """The client closed the connection."""


class LlmServer(ThreadingHTTPServer):
    """The server; see the module docstring. ``url`` is the API base (``.../v1``)."""

    daemon_threads = False  # server_close() joins every handler thread
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        self.default = Script()
        self.requests: list[Recorded] = []
        self.closing = threading.Event()
        self._scripts: list[Script] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    def push(self, *scripts: Script) -> None:
        """Queue scripts for the next requests, in order (then ``default`` again)."""
        with self._lock:
            self._scripts.extend(scripts)

    def next_script(self) -> Script:
        with self._lock:
            return self._scripts.pop(0) if self._scripts else self.default

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, args=(POLL_SECONDS,), name="llm-server", daemon=True
        )
        self._thread.start()

    def drop_connections(self) -> None:
        """Hang up on every client connection (as a server restart or idle timeout does)."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Release stalled handlers, hang up on every client, join every thread."""
        self.closing.set()
        self.shutdown()
        self.drop_connections()
        self.server_close()
        if self._thread is not None:
            self._thread.join()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up is the client's right (barge-in); anything else is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def _track(self, connection: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(connection)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked transfer, as real servers
    server: LlmServer
    timeout = SOCKET_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.server._track(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows the test's own output

    # --- routes -------------------------------------------------------------------------

    def do_GET(self) -> None:
        record = self._record(None)
        if self.path.rstrip("/") == "/v1/models":
            body = {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
            self._send_json(200, body)
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
        record.finished.set()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        record = self._record(body)
        try:
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            script = record.script = self.server.next_script()
            self._answer(script, record)
        except _ClientGone:
            record.client_closed = True
            record.closed_at = time.monotonic()
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            record.client_closed = True
            record.closed_at = time.monotonic()
            self.close_connection = True
        finally:
            record.finished.set()

    def _record(self, body: Any) -> Recorded:
        record = Recorded(self.command, self.path, dict(self.headers.items()), body)
        with self.server._lock:
            self.server.requests.append(record)
        return record

    # --- answers ------------------------------------------------------------------------

    def _answer(self, script: Script, record: Recorded) -> None:
        mode = script.mode
        if script.headers_delay:
            self._wait(script.headers_delay)
        if mode in ("http", "http500"):
            status = 500 if mode == "http500" else script.status
            body = {"error": {"message": script.error, "type": "server_error", "code": status}}
            self._send_json(status, body)
            return
        if mode == "hangup":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if mode == "html":
            self._send_body(200, "text/html; charset=utf-8", b"<html><body>It works!</body></html>")
            return
        words = _words(script.text)
        if mode == "json":
            message = {"role": "assistant", "content": script.text}
            body = _completion({"message": message}, "chat.completion", finish="stop")
            self._send_json(200, body)
            record.chunks.append(script.text)
            record.chunk_times.append(time.monotonic())
            return

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if mode == "raw":
            for start in range(0, len(script.raw), script.piece):
                self._chunk(script.raw[start : start + script.piece])
            self._end_body()
            return
        if mode == "garbage":
            self._chunk(b": keep-alive\r\n\r\ndata: {this is not json\r\n\r\n")
            self._end_body()
            return
        self._event({"role": "assistant", "content": ""})
        for word in _words(script.reasoning) if script.reasoning else []:
            self._event({"content": "", "reasoning_content": word})
        for word in _words(script.think) if script.think else []:
            self._event({"content": word})
            record.chunks.append(word)
            record.chunk_times.append(time.monotonic())
        if mode == "slow-first-token":
            self._wait(script.first_token_delay)
        for index, word in enumerate(words):
            if index == script.after and mode == "keepalive":
                self._keep_alive(script)
                if self.server.closing.is_set():
                    return
            if index == script.after and mode in ("cut", "no-done", "stall"):
                if mode == "cut":
                    self.connection.shutdown(socket.SHUT_RDWR)  # mid-body: no final chunk
                    self.close_connection = True
                    return
                if mode == "no-done":
                    self._end_body()
                    return
                self._wait(script.stall)
                if self.server.closing.is_set():
                    return
            if index and script.delay:
                self._wait(script.delay)
            self._event({"content": word})
            record.chunks.append(word)
            record.chunk_times.append(time.monotonic())
        self._event({}, finish="stop")
        self._chunk(b"data: [DONE]\n\n")
        self._end_body()

    def _keep_alive(self, script: Script) -> None:
        """Keep-alives only, for ``script.stall`` s (a server whose model hangs)."""
        deadline = time.monotonic() + script.stall
        while time.monotonic() < deadline and not self.server.closing.is_set():
            if script.ping == "comment":
                self._chunk(b": ping\n\n")
            else:
                self._event({"role": "assistant", "content": ""})
            self._wait(min(script.ping_every, max(0.0, deadline - time.monotonic())))

    def _event(self, delta: dict[str, str], finish: str | None = None) -> None:
        chunk = _completion({"delta": delta}, "chat.completion.chunk", finish=finish)
        self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_body(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _send_json(self, status: int, body: Any) -> None:
        self._send_body(status, "application/json", json.dumps(body).encode())

    def _send_body(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _wait(self, seconds: float) -> None:
        """Sleep, but stop early when the server closes; raise when the client hangs up."""
        deadline = time.monotonic() + seconds
        while not self.server.closing.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select([self.connection], [], [], min(left, POLL_SECONDS))
            if readable:
                try:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    peeked = b""
                if not peeked:
                    raise _ClientGone


def _words(text: str) -> list[str]:
    """The reply split into word chunks that join back into ``text`` ("Hello", " there.")."""
    words = text.split(" ")
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]


def _completion(choice: dict[str, Any], kind: str, finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": kind,
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, **choice, "finish_reason": finish}],
    }


@contextlib.contextmanager
def serve_llm() -> Iterator[LlmServer]:
    """A running :class:`LlmServer`, closed (threads joined) when the block exits."""
    server = LlmServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def llm_server() -> Iterator[LlmServer]:
    """A running :class:`LlmServer` for one test (``llm_server.url`` is the API base)."""
    with serve_llm() as server:
        yield server
