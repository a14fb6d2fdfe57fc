"""``xswarm talk --mode cascade``: the user's speech -> STT -> a text LLM -> TTS, all streaming.

Moshi cannot take a system prompt, tools or memory; the cascade can. It is the
same talk session (:mod:`xswarm.talk`: devices, files, ``--json``, ``--record``,
``--log``, ``--trace``, the status line, the history) with another inference
actor::

    source --frames--> cascade actor (the ONE MLX thread) --frames--> sink
                         |  per 80 ms frame: stt.feed(frame); when answering: tts.step()
                         +-- user words, end of turn --> answer task (trio)
                         |                                  | LLM HTTP stream (xswarm.llm)
                         +<-- tts.push(delta) / tts.end() --+
                         +--events--> logger (both speakers' words, turn reports)

Why both Kyutai models on the one MLX thread, interleaved per frame, rather
than a thread each: MLX is not thread-safe (DESIGN.md), and its CPU backend
already spreads one model call over the cores, so two threads would not
compute more per second here, they would fight for the same two cores and
need locks around every shared array cache. On one thread the order is
exact: a frame's STT step, then its TTS step, so each output frame answers
the input frame that came with it, and barge-in (below) is decided between
two steps with nothing in flight. The LLM is I/O (an HTTP stream), so it runs
as a trio task and costs the MLX thread nothing but the ``tts.push`` calls,
which queue behind the step being computed.

A turn, as the cascade actor sees it:

1. Every input frame is fed to the STT; its words are printed at once
   (``speaker: "user"``). A frame louder than :data:`SPEECH_RMS` is speech.
2. End of the user's turn: after at least :data:`MIN_SPEECH_FRAMES` of
   speech, the STT's semantic VAD head says > :data:`VAD_END_PROBABILITY`
   (checkpoints that have it), else :data:`PAUSE_SECONDS` without speech.
3. The STT is flushed (``stt.flush()``: the words still inside the model's
   delay come out), and the turn's words go to the LLM with the persona's
   prompt, speech rules, memory facts and the conversation so far
   (:func:`xswarm.llm.build_messages`).
4. Each text delta goes into the TTS as it arrives (``tts.push``), so the
   voice starts on the first words, not after the whole answer.
5. The TTS is stepped once per input frame (a few steps per frame while it
   has no audio yet, to make up its text-to-audio delay); its frames go to
   the sink in place of silence. A word is "said" once the frame its audio
   starts in has left for the sink and, on a speaker, begun to play (not
   still waiting in its jitter buffer); only said words reach the transcript
   and the history (``speaker: "assistant"``).
6. A ``{"type": "turn"}`` report closes the exchange, with per-stage timings.

Barge-in: when the user speaks (:data:`BARGE_IN_FRAMES` frames of speech)
while an answer is pending or playing, the answer task is cancelled (the HTTP
stream is closed), the TTS is cancelled, the output frames still queued are
taken back from the channel and the speaker's jitter buffer is cleared; the
unsaid rest never reaches the history. The frame that triggers it is
already silent, so playback stops within two frames (160 ms) of the user's
first word, plus the sound card's own buffer on a live device. An answer
interrupted before any of it was heard is not an answer: the user's words are
carried into their next turn. A greeting interrupted before any of it was heard
is no turn at all: neither reported nor counted as an interruption (one cut
after its first word is both, like any answer).

Endpoint failures (refused, timeout, HTTP error, garbage, a stream cut short):
the assistant says and prints :data:`APOLOGY`, stderr gets the client's one
line (a ``warning``), and the session goes on.

``--fast`` (files only): frames are not paced, so an LLM's wall-clock wait has
no place in the audio's time line. After a turn the actor waits for the
answer's first text before taking the next input frame: the file is answered
as if the LLM were instant, which keeps fast runs meaningful (and testable).
At the end of an input file, silence is fed until the answer being spoken is
done (at most :data:`DRAIN_LIMIT_SECONDS`).
"""

from __future__ import annotations

import collections
import contextlib
import difflib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS
from xswarm.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import trio

    from xswarm.audio.frame import AudioFrame
    from xswarm.llm import ChatClient, ChatMessage, LlmConfig
    from xswarm.log import SessionOutput
    from xswarm.runtime import Receiver, Sender
    from xswarm.talk import Echo, InferenceStats, RecordFrame, TalkConfig, TalkPersona
    from xswarm.transcript import Word

DEFAULT_STT: Final = "stt-1b-en_fr-mlx"  # Kyutai's streaming STT, English and French, with VAD
DEFAULT_TTS: Final = "tts-1.6b-en_fr"  # Kyutai's streaming TTS, English and French
SPEECH_RMS: Final = 0.02  # full scale (-34 dBFS): louder frames are the user speaking; a quiet
# room and the echo canceller's residue stay well below, flite and a close mic well above
BARGE_IN_FRAMES: Final = 2  # frames (160 ms) of speech in a row that interrupt the assistant:
# one loud frame is a click or a cough, two are a voice; the 200 ms promise leaves one frame
MIN_SPEECH_FRAMES: Final = 3  # frames (240 ms) of speech before a pause can end a turn
PAUSE_SECONDS: Final = 0.64  # s without speech that end the user's turn when there is no VAD
VAD_END_PROBABILITY: Final = 0.5  # the STT's end-of-turn head above this ends the turn
VAD_FALLBACK_SECONDS: Final = 2.0  # s of silence end the turn even if the VAD head never says so
PREROLL_STEPS: Final = 64  # TTS steps (5 s of audio) at most to find an answer's first audio
DRAIN_LIMIT_SECONDS: Final = 60.0  # s of silence fed after the input ends, for the last answer
APOLOGY: Final = "Sorry, I cannot reach my language model right now."


# -- the pieces, as the cascade uses them (contracts 1-3 of the session brief) -------------


class SttUpdateLike(Protocol):
    @property
    def words(self) -> tuple[Word, ...]: ...

    @property
    def end_of_turn(self) -> float | None: ...


class SttStreamLike(Protocol):
    """:class:`xswarm.stt.stream.SttStream`; every call on the MLX thread."""

    name: str
    has_vad: bool

    def feed(self, pcm: np.ndarray) -> SttUpdateLike: ...

    def flush(self) -> tuple[Word, ...]: ...


class TtsFrameLike(Protocol):
    @property
    def pcm(self) -> np.ndarray: ...

    @property
    def words(self) -> tuple[str, ...]: ...


class PlaybackLike(Protocol):
    """The speaker's jitter buffer (:class:`xswarm.audio.jitter.JitterBuffer`): the frames
    the sink took are played from it on the sound card's clock."""

    @property
    def depth(self) -> int:
        """Samples queued, not yet played."""
        ...

    def clear(self) -> int:
        """Drop what is queued (barge-in); returns the samples dropped."""
        ...


class TtsStreamLike(Protocol):
    """:class:`xswarm.tts.TtsStream`; every call on the MLX thread."""

    def start(self) -> None: ...

    def push(self, text: str) -> None: ...

    def end(self) -> None: ...

    def step(self) -> TtsFrameLike | None: ...

    @property
    def done(self) -> bool: ...

    def cancel(self) -> None: ...


# -- the MLX side: both models, one step per frame --------------------------------------------


@dataclass(frozen=True, slots=True)
class CascadeStep:
    """What one frame's work on the MLX thread produced."""

    words: tuple[Word, ...]  # the user's words completed by this frame
    end_of_turn: float | None  # the STT's VAD head (None: it has none)
    audio: TtsFrameLike | None  # the TTS frame for this output frame (None: silence)
    tts_done: bool  # the TTS has said everything it was given (after end())
    stt_seconds: float
    tts_seconds: float


class CascadeEngine:
    """The STT and TTS streams of a session. Lives on the MLX thread: call every method there."""

    def __init__(self, stt: SttStreamLike, tts: TtsStreamLike, *, seed: int | None = None) -> None:
        self.stt = stt
        self.tts = tts
        self.seed = seed
        self.warmup_seconds = 0.0

    def step(self, pcm: np.ndarray, speak: bool) -> CascadeStep:
        """Feed ``pcm`` to the STT; if ``speak``, one TTS step for this frame's answer audio."""
        t0 = time.perf_counter()
        update = self.stt.feed(pcm)
        t1 = time.perf_counter()
        audio = None
        done = False
        if speak:
            if not self.tts.done:
                audio = self.tts.step()
            done = self.tts.done
        t2 = time.perf_counter()
        return CascadeStep(tuple(update.words), update.end_of_turn, audio, done, t1 - t0, t2 - t1)

    def tts_step(self) -> tuple[TtsFrameLike | None, bool, float]:
        """One TTS step alone (the pre-roll): its frame, whether the TTS is done, its seconds."""
        t0 = time.perf_counter()
        audio = None if self.tts.done else self.tts.step()
        return audio, self.tts.done, time.perf_counter() - t0

    def flush(self) -> tuple[tuple[Word, ...], float]:
        """The STT's delayed words at the end of a turn, and the seconds it took."""
        t0 = time.perf_counter()
        words = tuple(self.stt.flush())
        return words, time.perf_counter() - t0


def cascade_engine_factory(
    stt_model: str, tts_model: str, voice: str | None, seed: int | None
) -> Callable[[Callable[..., None]], CascadeEngine]:
    """The real models: :func:`xswarm.stt.stream.open_stt_stream` and :func:`xswarm.tts.load_tts`,
    loaded on the MLX thread (the factory runs there), with progress 0/2, 1/2, 2/2."""

    def build(progress: Callable[..., None]) -> CascadeEngine:
        from xswarm.stt.stream import open_stt_stream
        from xswarm.tts import load_tts

        progress(0, 2)
        stt = open_stt_stream(stt_model)
        progress(1, 2)
        tts = load_tts(tts_model, voice, seed=seed)
        progress(2, 2)
        return CascadeEngine(stt, tts, seed=seed)

    return build


# -- turn taking ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnSignal:
    """What :class:`TurnDetector` made of a frame."""

    started: bool = False  # the user began speaking (barge-in)
    ended: str | None = None  # the user's turn ended: "vad" or "pause"


@dataclass
class TurnDetector:
    """Says when the user starts speaking and when their turn ends, frame by frame.

    Pure and synchronous: :meth:`speech` is called with the frame's loudness
    before the models step (so barge-in silences that very frame), :meth:`end`
    with the STT's VAD probability after. ``speech_end`` is the audio time (s)
    the user's last speech frame ended.
    """

    has_vad: bool
    pause_frames: int = round(PAUSE_SECONDS / FRAME_SECONDS)
    vad_fallback_frames: int = round(VAD_FALLBACK_SECONDS / FRAME_SECONDS)
    speech_run: int = 0  # speech frames in a row
    speech_frames: int = 0  # speech frames in this turn
    silence_run: int = 0  # quiet frames since the last speech frame
    speech_end: float = 0.0

    @property
    def heard(self) -> bool:
        """The user has said enough for a pause to end a turn."""
        return self.speech_frames >= MIN_SPEECH_FRAMES

    def speech(self, t: float, loud: bool) -> bool:
        """Take the frame at audio time ``t``; True when the user just began speaking."""
        if not loud:
            self.speech_run = 0
            self.silence_run += 1
            return False
        self.speech_run += 1
        self.speech_frames += 1
        self.silence_run = 0
        self.speech_end = t + FRAME_SECONDS
        return self.speech_run == BARGE_IN_FRAMES

    def end(self, vad: float | None) -> str | None:
        """After the frame's STT step: "vad" or "pause" when the user's turn just ended."""
        if not self.heard or self.silence_run == 0:
            return None
        ended = None
        if self.has_vad and vad is not None and vad > VAD_END_PROBABILITY:
            ended = "vad"
        elif self.silence_run >= (self.vad_fallback_frames if self.has_vad else self.pause_frames):
            ended = "pause"
        if ended:
            self.speech_frames = 0
        return ended


# -- one answer -----------------------------------------------------------------------------


@dataclass(eq=False)
class Answer:
    """The state of one assistant answer, shared by the answer task and the cascade actor.

    Both run on the Trio thread, so plain attributes are enough. Times are
    ``time.monotonic()`` seconds; ``None`` until the moment happened.
    """

    turn: int
    user_text: str
    fixed_text: str | None = None  # the greeting: said as is, no LLM
    detected_by: str | None = None
    speech_end: float | None = None  # audio s: the user's last speech frame ended
    detected_at: float | None = None  # audio s: the turn end was detected
    t_detected: float = 0.0
    stt_flush_seconds: float = 0.0
    stt_flush_compute: float = 0.0
    scope: Any = None  # trio.CancelScope of the answer task
    first_text: Any = None  # trio.Event: text reached the TTS, or the text ended
    speakable: bool = False  # text was pushed: the TTS may step
    preroll_scope: Any = None  # trio.CancelScope of the pre-roll task
    preroll_done: Any = None  # trio.Event: the pre-roll ended (first audio found, or not)
    prerolling: bool = False  # the pre-roll task steps the TTS: the frame loop must not
    ready: TtsFrameLike | None = None  # the first audio frame, found by the pre-roll
    text_done: bool = False  # tts.end() was called
    tts_done: bool = False
    cancelled: bool = False
    error: str | None = None
    t_request: float | None = None
    t_first_token: float | None = None
    t_first_push: float | None = None
    t_first_audio: float | None = None  # the first audio frame was queued for the sink
    tts_compute: float = 0.0  # s of TTS steps until the first audio
    stt_compute: float = 0.0  # s of STT steps between the turn end and the first audio
    pushed: list[str] = field(default_factory=list)
    push_times: list[float] = field(default_factory=list)  # when each delta reached the TTS
    unreleased: int = 0  # frames with words sent to the sink, not yet taken by it
    said: list[Word] = field(default_factory=list)
    held: tuple[str, float] | None = None  # the last word said: its end is the next's start
    last_audio_end: float = 0.0
    reported: bool = False

    @property
    def over(self) -> bool:
        """Nothing more will be said (the words still queued for the sink aside)."""
        if self.cancelled or self.tts_done:
            return True
        return self.text_done and not self.speakable  # an empty answer


@dataclass(frozen=True, slots=True)
class _Queued:
    """An output frame whose TTS audio carries words, waiting to be taken by the sink."""

    seq: int  # its place among the frames sent to the sink (1-based)
    answer: Answer
    index: int
    words: tuple[str, ...]


@dataclass
class CascadeStats:
    """Counters for the summary."""

    turns: int = 0
    interruptions: int = 0
    llm_errors: int = 0


# -- the plan: options -> what the session runs ------------------------------------------------


@dataclass
class CascadePlan:
    """What :func:`xswarm.talk.run_talk` needs to run a cascade session."""

    factory: Callable[[Callable[..., None]], Any]
    model_name: str  # for the ready line, the summary and the history
    stt_model: str
    tts_model: str
    llm: LlmConfig
    persona: TalkPersona
    chat_factory: Callable[..., contextlib.AbstractAsyncContextManager[Any]] | None = None
    stats: CascadeStats = field(default_factory=CascadeStats)
    pushes: list[tuple[float, int, str]] = field(default_factory=list)  # (time, turn, text) to TTS

    @property
    def slow_hint(self) -> str:
        """The fix the "slower than real time" warning suggests: the cascade's own models."""
        return (
            f"use smaller models (--stt-model, now {self.stt_model}: e.g. sphinx-en; "
            f"--tts-model, now {self.tts_model}; see xswarm models list)"
        )

    def summary(self) -> dict[str, Any]:
        return {
            "mode": "cascade",
            "stt_model": self.stt_model,
            "tts_model": self.tts_model,
            "llm_model": self.llm.model,
            "turns": self.stats.turns,
            "interruptions": self.stats.interruptions,
            "llm_errors": self.stats.llm_errors,
        }

    def actor(self, drain: Receiver[AudioFrame], extra: dict[str, Any]) -> Callable[..., Any]:
        """The inference actor for :func:`xswarm.talk.run_talk` (same arguments as
        :func:`xswarm.talk.inference_actor`). ``drain`` is a receiver clone of the
        output channel (barge-in takes queued frames back); ``extra["playback"]``, when
        set, is the speaker's jitter buffer (:class:`PlaybackLike`)."""
        return functools.partial(
            cascade_actor, plan=self, drain=drain, playback=extra.get("playback")
        )


OFFLINE_STT: Final = ("sphinx-en",)  # engines without a model directory


def check_model(name: str, kind: str, option: str) -> str:
    """``name`` for ``option`` (``--stt-model``): a path, or a registry name of ``kind``.

    Returns the name with aliases applied (``tiny-random`` -> ``tiny-random-stt``);
    raises :class:`UsageError` naming the option, the bad name and the fix.
    """
    from xswarm.models.registry import REGISTRY, TINY_RANDOM

    aliases = {"tiny-random": TINY_RANDOM[kind]}
    offline = OFFLINE_STT if kind == "stt" else ()
    name = aliases.get(name, name)
    if name in offline:
        return name
    if name.startswith((".", "~", "/")) or "/" in name:
        if not Path(name).expanduser().is_dir():
            raise UsageError(f"{option} {name}: no such model directory")
        return name
    spec = REGISTRY.get(name)
    if spec is not None and spec.kind == kind:
        return name
    choices = [n for n, s in REGISTRY.items() if s.kind == kind] + list(offline)
    if spec is not None:
        article = "an" if kind == "stt" else "a"  # "an STT", "a TTS"
        problem = f"{name!r} is not {article} {kind.upper()} model (it is a {spec.kind} model)"
    else:
        close = difflib.get_close_matches(name, choices + list(aliases), n=1, cutoff=0.5)
        problem = f"unknown {kind.upper()} model {name!r}" + (
            f" (did you mean {close[0]!r}?)" if close else ""
        )
    raise UsageError(
        f"{option}: {problem}; use one of {', '.join(sorted(set(choices)))}, "
        "tiny-random or a model directory (xswarm models list)"
    )


def plan_cascade(
    config: TalkConfig,
    persona: TalkPersona,
    *,
    factory: Callable[[Callable[..., None]], Any] | None = None,
    model_name: str | None = None,
) -> CascadePlan:
    """Check the cascade's options (fast, before any load) and say what to run.

    Models: ``--stt-model`` / ``--tts-model``, else the persona's ``[voice] stt`` /
    ``tts_model``, else :data:`DEFAULT_STT` / :data:`DEFAULT_TTS`. The LLM:
    ``--llm-url`` / ``--llm-model``, else the persona's ``[llm]``; the key from
    ``XSWARM_LLM_API_KEY`` or ``OPENAI_API_KEY``. ``factory`` replaces the real
    models (tests). Raises :class:`UsageError` (exit 2) for a missing LLM, a bad
    URL, a model name that does not exist, or a duplex-only option.
    """
    from xswarm.llm import LlmConfig, api_key_from_env
    from xswarm.llm.client import MLX_PREFIX, chat_endpoint

    if config.model is not None:
        raise UsageError(
            "--model names a Moshi model, which cascade mode does not use; choose the models "
            "with --stt-model and --tts-model (or use --mode duplex)"
        )
    url = config.llm_url or persona.llm_url
    llm_model = config.llm_model or persona.llm_model
    in_process = bool(llm_model and llm_model.startswith(MLX_PREFIX))
    if not llm_model or (not url and not in_process):
        missing = " and ".join(
            flag
            for flag, value in (
                ("--llm-url URL", url or in_process),
                ("--llm-model NAME", llm_model),
            )
            if not value
        )
        raise UsageError(
            f"cascade mode needs a text LLM: give {missing} (an OpenAI-compatible server, e.g. "
            "ollama: --llm-url http://127.0.0.1:11434/v1 --llm-model llama3.2), or set url and "
            f"model in the [llm] table of persona {persona.name!r}; or use --mode duplex"
        )
    if url and not in_process:
        chat_endpoint(url)  # a malformed URL is a usage error now, not an apology later
    stt = check_model(
        config.stt_model or persona.stt_model or DEFAULT_STT,
        "stt",
        "--stt-model" if config.stt_model else f"persona {persona.name!r}: voice.stt",
    )
    tts = check_model(
        config.tts_model or persona.tts_model or DEFAULT_TTS,
        "tts",
        "--tts-model" if config.tts_model else f"persona {persona.name!r}: voice.tts_model",
    )
    llm = LlmConfig(url=url or "", model=llm_model, api_key=api_key_from_env())
    if config.llm_timeout is not None:
        from dataclasses import replace

        llm = replace(llm, stall_timeout=config.llm_timeout)
    if factory is None:
        factory = cascade_engine_factory(stt, tts, persona.tts_voice, config.seed)
    return CascadePlan(
        factory=factory,
        model_name=model_name or f"{stt}+{llm_model}+{tts}",
        stt_model=stt,
        tts_model=tts,
        llm=llm,
        persona=persona,
    )


# -- the actor --------------------------------------------------------------------------------


async def cascade_actor(
    factory: Callable[[Callable[..., None]], Any],
    frames: Receiver[AudioFrame],
    output: Sender[AudioFrame],
    events: Sender[Any],
    record: Sender[RecordFrame] | None,
    *,
    realtime: bool,
    max_frames: int | None,
    stats: InferenceStats,
    log: SessionOutput,
    model_name: str,
    on_done: Callable[[], None] = lambda: None,
    worker_factory: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None,
    echo: Echo | None = None,
    task_status: Any = None,
    plan: CascadePlan,
    drain: Receiver[AudioFrame],
    playback: PlaybackLike | None = None,
) -> None:
    """The cascade's inference actor: :func:`xswarm.talk.inference_actor`'s contract.

    Loads both models on its MLX worker (then ``task_status.started()``), opens
    the LLM client, and runs :class:`_Cascade` over the input frames. Owns and
    closes ``frames``, ``output``, ``events``, ``record`` and ``drain``; the
    answer task and the HTTP client are closed on every exit path.
    """
    import trio

    from xswarm.talk import load_announced

    if worker_factory is None:
        from xswarm.inference.worker import open_mlx_worker

        worker_factory = open_mlx_worker
    chat_factory = plan.chat_factory
    if chat_factory is None:
        from xswarm.llm import open_chat

        chat_factory = open_chat

    with contextlib.ExitStack() as ends:
        for end in (frames, output, events, record, drain):
            if end is not None:
                ends.enter_context(end)
        async with worker_factory() as worker:
            engine = await load_announced(
                worker,
                factory,
                events,
                stats=stats,
                log=log,
                model_name=model_name,
                realtime=realtime,
                task_status=task_status,
            )
            from xswarm.llm.client import MLX_PREFIX

            # An in-process MLX LLM must share the session's one MLX thread.
            in_process = plan.llm.model.startswith(MLX_PREFIX)
            chat_context = (
                chat_factory(plan.llm, worker=worker) if in_process else chat_factory(plan.llm)
            )
            async with chat_context as chat, trio.open_nursery() as tasks:
                cascade = _Cascade(
                    plan,
                    engine,
                    worker,
                    chat,
                    tasks,
                    output=output,
                    drain=drain,
                    events=events,
                    record=record,
                    realtime=realtime,
                    echo=echo,
                    playback=playback,
                )
                try:
                    await cascade.run(frames, max_frames, stats, on_done)
                finally:
                    tasks.cancel_scope.cancel()


class _Cascade:
    """The cascade actor's state and its per-frame work (see the module docstring)."""

    def __init__(
        self,
        plan: CascadePlan,
        engine: CascadeEngine,
        worker: Any,
        chat: ChatClient,
        tasks: trio.Nursery,
        *,
        output: Sender[AudioFrame],
        drain: Receiver[AudioFrame],
        events: Sender[Any],
        record: Sender[RecordFrame] | None,
        realtime: bool,
        echo: Echo | None,
        playback: PlaybackLike | None,
    ) -> None:
        import numpy as np

        from xswarm.llm import remembered_facts

        self.plan = plan
        self.persona = plan.persona
        self.engine = engine
        self.worker = worker
        self.chat = chat
        self.tasks = tasks
        self.output = output
        self.drain = drain
        self.events = events
        self.record = record
        self.realtime = realtime
        self.echo = echo
        self.playback = playback
        self.detector = TurnDetector(has_vad=bool(getattr(engine.stt, "has_vad", False)))
        self.silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        self.facts = remembered_facts(self.persona.name) if self.persona.memory else []
        self.history: list[ChatMessage] = []  # the conversation as actually spoken
        self.heard: list[Word] = []  # the user's words of the turn being spoken
        self.carry = ""  # the user's words of an answer interrupted before it was heard
        self.answer: Answer | None = None  # the latest answer
        self.unreported: list[Answer] = []  # answers whose turn report is still due, in order
        self.queued: collections.deque[_Queued] = collections.deque()
        self.sent = 0  # frames sent to the sink, less those taken back by a barge-in
        self.taken_back = 0  # frames sent but never played (taken back from the channel, or
        # cleared from the speaker's buffer): the channel counts them as received
        self.turns = 0
        self.outbox: list[Any] = []  # events for the logger, sent by _send_outbox

    # -- the frame loop --------------------------------------------------------------------

    async def run(
        self,
        frames: Receiver[AudioFrame],
        max_frames: int | None,
        stats: InferenceStats,
        on_done: Callable[[], None],
    ) -> None:
        import trio

        from xswarm.audio.frame import AudioFrame

        if self.persona.greeting:
            self._start_answer(Answer(turn=0, user_text="", fixed_text=self.persona.greeting))
        index = -1
        stopped = False  # --duration reached: stop now, mid-answer or not
        async for frame in frames:
            index = frame.index
            await self._frame(frame)
            stats.frames += 1
            if max_frames is not None and stats.frames >= max_frames:
                on_done()
                stopped = True
                break
        # The input ended: feed silence until the last turn is answered and said. Paced on
        # Trio's clock (sleep_until takes its time, not time.monotonic(), which it offsets).
        t_next = trio.current_time()
        for _ in range(0 if stopped else round(DRAIN_LIMIT_SECONDS / FRAME_SECONDS)):
            if not self._busy():
                break
            if max_frames is not None and stats.frames >= max_frames:
                on_done()  # --duration counts the answer after the input too
                break
            if self.realtime:
                t_next += FRAME_SECONDS
                await trio.sleep_until(t_next)
            index += 1
            await self._frame(AudioFrame(self.silence, index, time.monotonic()))
            stats.frames += 1
        self._release(everything=True)  # the sink writes what is queued before it ends
        for answer in self.unreported:
            if not answer.over:
                answer.cancelled = True  # cut short by the end of the session
        self._finish_answer()
        await self._send_outbox()

    def _busy(self) -> bool:
        return self.detector.heard or bool(self.unreported)

    async def _frame(self, frame: AudioFrame) -> None:
        from xswarm.audio.frame import AudioFrame
        from xswarm.log import FrameReport, SpeakerWord
        from xswarm.talk import RecordFrame, _rms

        t_start = time.monotonic()
        if self.echo is not None:
            frame = self.echo.canceller.cancel_frame(frame, self.echo.tap)
        mic_rms = _rms(frame.pcm)
        t_audio = frame.index * FRAME_SECONDS
        if self.detector.speech(t_audio, mic_rms > SPEECH_RMS) and self._answering():
            await self._barge_in(t_audio)
        answer = self.answer
        if answer is not None and not answer.over and not self.realtime:
            # --fast: as if the LLM (and the TTS's delay) took no time (see above)
            await answer.first_text.wait()
            await answer.preroll_done.wait()
        speak = (
            answer is not None and answer.speakable and not answer.over and not answer.prerolling
        )
        ready = None  # the pre-roll's frame stands in for this frame's TTS step
        if speak and answer is not None and answer.ready is not None:
            ready, answer.ready = answer.ready, None
        step: CascadeStep = await self.worker.run(
            self.engine.step, frame.pcm, speak and ready is None
        )
        t_end = time.monotonic()
        for word in step.words:
            self.heard.append(word)
            await self._put(self.events, SpeakerWord("user", word))
        pcm = self.silence
        if speak and answer is not None:
            if answer.t_first_audio is None:
                answer.tts_compute += step.tts_seconds
                answer.stt_compute += step.stt_seconds
            audio = ready if ready is not None else step.audio
            if audio is not None:
                pcm = audio.pcm
                if audio.words:
                    answer.unreleased += 1
                    self.queued.append(
                        _Queued(self.sent + 1, answer, frame.index, tuple(audio.words))
                    )
                answer.last_audio_end = t_audio + FRAME_SECONDS
            if ready is None:
                answer.tts_done = step.tts_done
        elif answer is not None and answer.t_first_audio is None and answer.turn:
            answer.stt_compute += step.stt_seconds
        await self._put(self.output, AudioFrame(pcm, frame.index, frame.t_capture))
        self.sent += 1
        t_queued = time.monotonic()
        if answer is not None and pcm is not self.silence and answer.t_first_audio is None:
            answer.t_first_audio = t_queued
        if self.record is not None:
            await self._put(self.record, RecordFrame(frame.index, frame.pcm, pcm))
        await self._put(
            self.events,
            FrameReport(
                index=frame.index,
                t_capture=frame.t_capture,
                t_start=t_start,
                t_end=t_end,
                t_queued=t_queued,
                mic_rms=mic_rms,
                assistant_rms=_rms(pcm),
                engine_seconds=step.stt_seconds + step.tts_seconds,
                stages=(("stt", step.stt_seconds), ("tts", step.tts_seconds)),
            ),
        )
        self._release()
        self._finish_answer()
        await self._send_outbox()
        ended = self.detector.end(step.end_of_turn)
        if ended is not None:
            await self._end_of_turn(ended, t_audio + FRAME_SECONDS)

    async def _put(self, sender: Sender[Any], item: Any) -> None:
        if self.realtime:
            sender.send_nowait(item)
        else:
            await sender.send(item)

    # -- turns ------------------------------------------------------------------------------

    async def _end_of_turn(self, detected_by: str, detected_at: float) -> None:
        """The user stopped: flush the STT, then ask the LLM (in a task) with their words."""
        from xswarm.log import SpeakerWord

        t_detected = time.monotonic()
        words, compute = await self.worker.run(self.engine.flush)
        flush_seconds = time.monotonic() - t_detected
        for word in words:
            self.heard.append(word)
            await self._put(self.events, SpeakerWord("user", word))
        text = " ".join(w.text.strip() for w in self.heard if w.text.strip())
        self.heard = []
        if self.carry:
            text = f"{self.carry} {text}".strip()
            self.carry = ""
        if not text:
            return  # the STT heard no word: nothing to answer
        if self._answering():
            await self._barge_in(detected_at)  # still going: the user's new turn replaces it
        self.turns += 1
        self._start_answer(
            Answer(
                turn=self.turns,
                user_text=text,
                detected_by=detected_by,
                speech_end=self.detector.speech_end,
                detected_at=detected_at,
                t_detected=t_detected,
                stt_flush_seconds=flush_seconds,
                stt_flush_compute=compute,
            )
        )

    def _start_answer(self, answer: Answer) -> None:
        import trio

        answer.scope = trio.CancelScope()
        answer.preroll_scope = trio.CancelScope()
        answer.first_text = trio.Event()
        answer.preroll_done = trio.Event()
        self.answer = answer
        self.unreported.append(answer)
        self.tasks.start_soon(self._produce, answer)

    def _answering(self) -> bool:
        return self.answer is not None and not self.answer.over

    async def _produce(self, answer: Answer) -> None:
        """The answer task: LLM deltas into the TTS as they come; an apology on failure.

        Cancelled by a barge-in (its scope): the HTTP stream is closed by
        ``aclosing`` and the TTS is cancelled by the barge-in itself.
        """
        from xswarm.llm import LlmError
        from xswarm.log import Notice

        with answer.scope:
            await self.worker.run(self.engine.tts.start)
            try:
                if answer.fixed_text is not None:
                    await self._push(answer, answer.fixed_text)
                else:
                    from xswarm.llm import build_messages

                    messages = build_messages(
                        self.persona.system_prompt, self.facts, self.history, answer.user_text
                    )
                    answer.t_request = time.monotonic()
                    async with contextlib.aclosing(self.chat.stream(messages)) as deltas:
                        async for delta in deltas:
                            if not answer.pushed:
                                # Nothing to say yet in leading blank lines: the first
                                # token is the first text to be spoken (the client has
                                # already dropped any <think> block).
                                delta = delta.lstrip()
                            if not delta:
                                continue
                            if answer.t_first_token is None:
                                answer.t_first_token = time.monotonic()
                            await self._push(answer, delta)
            except LlmError as error:
                answer.error = error.message
                self.plan.stats.llm_errors += 1
                await self._put(
                    self.events,
                    Notice("warning", error.message, {"llm_error": True, "turn": answer.turn}),
                )
                await self._push(answer, (" " if answer.pushed else "") + APOLOGY)
            await self.worker.run(self.engine.tts.end)
            answer.text_done = True
            answer.first_text.set()
            if not answer.speakable:
                answer.preroll_done.set()  # an empty answer: no pre-roll will ever run

    async def _push(self, answer: Answer, text: str) -> None:
        await self.worker.run(self.engine.tts.push, text)
        now = time.monotonic()
        if answer.t_first_push is None:
            answer.t_first_push = now
        answer.pushed.append(text)
        answer.push_times.append(now)
        self.plan.pushes.append((now, answer.turn, text))
        if not answer.speakable:
            answer.prerolling = True  # from now until the pre-roll ends, only it steps the TTS
            self.tasks.start_soon(self._preroll, answer)
        answer.speakable = True
        answer.first_text.set()

    async def _preroll(self, answer: Answer) -> None:
        """Step the TTS back to back from the first text to the first audio frame.

        The TTS needs a number of steps (its text-to-audio delay) before any
        audio; taken one per input frame, they would cost that many frames of
        wall time. Here they run on the MLX thread as fast as it goes (an input
        frame's STT step still gets in between, the worker being a FIFO), and
        the frame found is played on the next input frame. Cancelled by a barge-in.
        """
        try:
            with answer.preroll_scope:
                for _ in range(PREROLL_STEPS):
                    if answer.over:
                        break
                    audio, done, seconds = await self.worker.run(self.engine.tts_step)
                    answer.tts_compute += seconds
                    if audio is not None:
                        answer.ready = audio
                        break
                    if done:
                        answer.tts_done = True
                        break
        finally:
            answer.prerolling = False
            answer.preroll_done.set()

    async def _barge_in(self, t_audio: float) -> None:
        """The user speaks over the answer (at audio time ``t_audio``): stop it, take back
        what was not played yet."""
        import trio

        answer = self.answer
        if answer is None:
            return
        answer.last_audio_end = min(answer.last_audio_end, t_audio)
        answer.cancelled = True
        answer.first_text.set()
        answer.preroll_done.set()
        answer.scope.cancel("barge-in")
        answer.preroll_scope.cancel("barge-in")
        answer.ready = None
        taken = 0  # frames never played: still in the channel, or in the speaker's buffer
        with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            while True:
                self.drain.receive_nowait()
                taken += 1
        if self.playback is not None:
            # The sink took these (the last ones it took) but the speaker never started
            # them: a frame partly played keeps its words, so round down.
            taken += self.playback.clear() // FRAME_SAMPLES
        self.taken_back += taken
        self.sent -= taken
        self._release()  # what the sink took and began to play was said
        unplayed = [q for q in self.queued if q.seq > self.sent]
        for queued in unplayed:
            self.queued.remove(queued)
            queued.answer.unreleased -= 1
        await self.worker.run(self.engine.tts.cancel)
        heard = bool(answer.said) or answer.held is not None
        if heard or answer.turn:
            # A greeting cut before a word of it was heard interrupted nothing (nor is it
            # reported: see _report_said); an answer to the user was asked for, and cut.
            self.plan.stats.interruptions += 1
        if not heard and answer.user_text:
            self.carry = f"{self.carry} {answer.user_text}".strip()  # never heard: not an answer
        self._finish_answer()
        await self._send_outbox()

    # -- words said, and the turn report -----------------------------------------------------

    def _release(self, *, everything: bool = False) -> None:
        """Words of the frames the sink has taken (or will, at the end) and, on a speaker,
        begun to play: now they were said."""
        metrics = self.output.metrics
        left = metrics.received + metrics.dropped - self.taken_back
        if self.playback is not None and not everything:
            left -= self.playback.depth // FRAME_SAMPLES  # taken, but not begun to play
        while self.queued and (everything or self.queued[0].seq <= left):
            queued = self.queued.popleft()
            queued.answer.unreleased -= 1
            count = len(queued.words)
            for i, text in enumerate(queued.words):
                self._say(queued.answer, text, (queued.index + i / count) * FRAME_SECONDS)

    def _say(self, answer: Answer, text: str, start: float) -> None:
        if answer.held is not None:
            self._emit_said(answer, answer.held[0], answer.held[1], start)
        answer.held = (text, start)

    def _emit_said(self, answer: Answer, text: str, start: float, end: float) -> None:
        from xswarm.log import SpeakerWord
        from xswarm.transcript import Word

        word = Word(start, max(end, start), text)
        answer.said.append(word)
        self.outbox.append(SpeakerWord("assistant", word))

    def _finish_answer(self) -> None:
        """Report answers, in order, once nothing more of them will be said or played."""
        while self.unreported:
            answer = self.unreported[0]
            if not answer.over or answer.unreleased:
                return
            self.unreported.pop(0)
            self._report_said(answer)

    def _report_said(self, answer: Answer) -> None:
        if answer.held is not None:
            self._emit_said(answer, answer.held[0], answer.held[1], answer.last_audio_end)
            answer.held = None
        answer.reported = True
        if not answer.turn and answer.cancelled and not answer.said:
            return  # a greeting cut before a word of it was heard: no turn to report
        said = " ".join(w.text for w in answer.said)
        if answer.turn:
            self.plan.stats.turns += 1
            if answer.said or not answer.cancelled:
                self.history.append(_message("user", answer.user_text))
                if said:
                    self.history.append(_message("assistant", said))
        self._report(answer, said)

    def _report(self, answer: Answer, said: str) -> None:
        from xswarm.log import TurnReport

        def ms(start: float | None, end: float | None) -> float | None:
            return None if start is None or end is None else round((end - start) * 1e3, 1)

        endpoint = ms(answer.speech_end, answer.detected_at) if answer.turn else None
        response = ms(answer.t_detected, answer.t_first_audio) if answer.turn else None
        models = answer.stt_flush_compute + answer.stt_compute + answer.tts_compute
        fields = {
            "turn": answer.turn,
            "user": answer.user_text,
            "assistant": said,
            # How the answer ended: the LLM failed (an apology was said), the user spoke
            # over it, or it was said whole; "interrupted" also marks a failed one cut short.
            "end": "error" if answer.error else ("interrupted" if answer.cancelled else "done"),
            "interrupted": answer.cancelled,
            "error": answer.error,
            "speech_end": None if answer.speech_end is None else round(answer.speech_end, 2),
            "detected_by": answer.detected_by,
            "endpoint_ms": endpoint,  # audio time: the pause (or the VAD's wait) after speech
            "stt_flush_ms": round(answer.stt_flush_seconds * 1e3, 1) if answer.turn else None,
            "llm_first_token_ms": ms(answer.t_request, answer.t_first_token),
            "tts_first_audio_ms": ms(answer.t_first_push, answer.t_first_audio),
            "response_ms": response,  # turn end detected -> first audio frame queued
            "total_ms": None if endpoint is None or response is None else endpoint + response,
            "models_ms": round(models * 1e3, 1) if response is not None else None,
        }
        self.outbox.append(TurnReport(fields))

    async def _send_outbox(self) -> None:
        """Hand the logger the words said and the reports made by the synchronous steps."""
        events, self.outbox = self.outbox, []
        for event in events:
            await self._put(self.events, event)


def _message(role: str, content: str) -> ChatMessage:
    from xswarm.llm import ChatMessage

    return ChatMessage(role, content)  # type: ignore[arg-type]
