"""``xswarm talk``: the full-duplex conversation as one Trio nursery of actors.

DESIGN.md's graph, built here from a :class:`TalkConfig`::

    source --frames--> inference --pcm--> sink         (speaker, or --output FILE)
    (mic or --input)       |  \\--record--> recorder   (--record FILE, stereo)
                           +--events--> logger        (transcript, status, --log, --trace)

- The *source* is the mic actor (live) or the file source (headless,
  ``--input``), paced to real time unless ``--fast``.
- The *inference* actor owns the MLX worker thread and the engine: it loads the
  model (with a progress bar) before any device is opened, then steps the
  engine once per frame and hands the answer frame to the sink. It never
  waits on the terminal or a disk: reports go to the logger over a channel.
- The *sink* is the speaker actor (a jitter buffer that plays silence on
  underrun) or an aligned file writer.
- The *logger* (:mod:`xswarm.log`) prints the transcript and the status line.
- In cascade mode (``--mode cascade`` or the persona's ``mode``), the
  inference actor is :mod:`xswarm.cascade`'s: STT -> a text LLM -> TTS on the
  same MLX thread, with the same channels, files and logger.
- The *persona* (:mod:`xswarm.personas`) names the speaker and its colour,
  gives its sampling and its default model, and its greeting is forced into
  Moshi's text stream so the assistant speaks first.

Channels between real-time actors drop the oldest item when full (counted:
``drops``); with ``--fast`` every channel blocks instead, so a file is
processed whole, as fast as the model goes.

Ending: end of input (the file ends) flows down the channels and every actor
returns; ``--duration`` stops the source after that many seconds of audio;
Ctrl-C / SIGTERM cancel everything (:class:`~xswarm.errors.Interrupted`,
exit 130 / 143); a failing actor (a device lost mid-session) ends the session
with its error (exit 1). On every path :meth:`SessionOutput.finish` flushes the
transcript, writes the summary, completes the files and restores the terminal.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO

from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS
from xswarm.errors import Interrupted, UsageError

if TYPE_CHECKING:
    import numpy as np

    from xswarm.audio.frame import AudioFrame
    from xswarm.log import SessionOutput
    from xswarm.runtime import Receiver, Sender

DEFAULT_MODEL: Final = (
    "moshiko-mlx-q8"  # Kyutai's published Moshi (male voice), 8-bit: fits 16 GB Macs
)
FRAMES_CAPACITY: Final = 4  # frames (320 ms) from source to model: more is latency, not safety
OUTPUT_CAPACITY: Final = 8  # frames (640 ms) from model to sink, the jitter buffer's own bound
EVENTS_CAPACITY: Final = 1024  # reports (82 s) to the logger: a stalled stdout pipe shows as drops
RECORD_CAPACITY: Final = 64  # frame pairs (5 s) to the --record writer: a slow disk has slack
TALK_MODES: Final = ("duplex", "cascade")  # Moshi alone, or STT -> text LLM -> TTS
PROGRESS_REFRESH: Final = 0.1  # s between redraws of the load bar
JITTER_PREFILL: Final = 3 * FRAME_SAMPLES  # samples (240 ms) queued before playback starts:
# mic and speaker share a clock but not a phase (one frame), and on a busy 2-core machine a
# run of slow steps lagged 140 ms (measured): two more frames of slack absorb that


# -- configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class TalkConfig:
    """Everything a talk session needs, parsed and checked by the CLI.

    ``input_path`` / ``output_path`` replace the mic / speaker (``"-"``:
    stdin / stdout). ``duration`` caps the conversation in seconds of audio.
    ``fast`` runs a file input as fast as the model goes (headless only).
    """

    model: str | None = None  # None: the persona's voice (its Moshi model)
    persona: str | None = None  # None: the default persona (XSWARM_PERSONA, config, jarvis)
    input_device: str | None = None
    output_device: str | None = None
    input_path: str | None = None
    output_path: str | None = None
    record_path: str | None = None
    duration: float | None = None
    fast: bool = False
    seed: int | None = None
    json: bool = False
    quiet: bool = False
    log_path: Path | None = None
    trace_path: Path | None = None
    history: bool = True  # save the session in the history (``--no-history``: don't)
    aec: bool | None = None  # echo cancellation; None: on when both ends are real devices
    # The cascade (xswarm.cascade): None means the persona's setting, then the default.
    mode: str | None = None  # "duplex" (Moshi alone) or "cascade" (STT -> LLM -> TTS)
    stt_model: str | None = None
    tts_model: str | None = None
    llm_url: str | None = None
    llm_model: str | None = None
    llm_timeout: float | None = None  # s without text from the LLM's stream before giving up

    @property
    def live(self) -> bool:
        """Both ends are sound devices: the mic can hear the speaker."""
        return self.input_path is None and self.output_path is None

    @property
    def use_aec(self) -> bool:
        return self.live if self.aec is None else self.aec

    @property
    def realtime(self) -> bool:
        """Frames arrive at the wall clock's pace: channels drop instead of blocking."""
        return not self.fast

    @property
    def max_frames(self) -> int | None:
        return None if self.duration is None else max(1, math.ceil(self.duration / FRAME_SECONDS))

    def check(self) -> None:
        """Raise :class:`UsageError` for options that contradict each other."""
        if self.fast and self.input_path is None:
            raise UsageError(
                "--fast needs --input FILE: a microphone cannot go faster than real time"
            )
        if self.input_path is not None and self.input_device is not None:
            raise UsageError("--input FILE and --input-device DEV both name the input; pick one")
        if self.output_path is not None and self.output_device is not None:
            raise UsageError("--output FILE and --output-device DEV both name the output; pick one")
        if self.mode is not None and self.mode not in TALK_MODES:
            raise UsageError(f"--mode must be duplex or cascade, not {self.mode!r}")
        if self.llm_timeout is not None and not self.llm_timeout > 0:
            raise UsageError(f"--llm-timeout must be more than 0 seconds, got {self.llm_timeout}")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise UsageError(f"--seed must be between 0 and 2**64 - 1, got {self.seed}")
        if self.duration is not None and not self.duration > 0:
            raise UsageError(f"--duration must be more than 0 seconds, got {self.duration}")
        if self.output_path == "-" and self.input_path == "-":
            pass  # legal: a filter, WAV in on stdin, WAV out on stdout
        if self.aec and not self.live:
            raise UsageError(
                "--aec cancels the speaker's echo from the microphone; it needs both devices "
                "(drop --input/--output, or --aec)"
            )
        if self.output_path == "-" and self.json:
            raise UsageError(
                "--output - writes audio to stdout, so the transcript cannot go there too; "
                "drop --json or write the audio to a file"
            )


# -- engines ----------------------------------------------------------------------------


class StepLike(Protocol):
    """What the inference actor reads of an engine step (``inference.moshi.StepResult``)."""

    @property
    def text_token(self) -> int: ...

    @property
    def text(self) -> str | None: ...

    @property
    def pcm(self) -> np.ndarray: ...

    @property
    def seconds(self) -> float: ...


class EngineLike(Protocol):
    """The engine the inference actor drives (``MoshiEngine``); lives on the MLX thread."""

    @property
    def seed(self) -> int: ...

    def step(self, pcm: np.ndarray) -> StepLike: ...


# Builds the engine on the MLX thread; gets a progress callback (done, total) -> None.
EngineFactory = Callable[[Callable[..., None]], EngineLike]


def moshi_engine_factory(resolved: Any, sampling: Any, greeting: str = "") -> EngineFactory:
    """The real engine: ``load_engine`` for a resolved model, then the persona's greeting.

    The greeting is forced into Moshi's text stream, so the assistant speaks
    first, in its own voice, the moment the session starts.
    """

    def build(progress: Callable[..., None]) -> EngineLike:
        from xswarm.inference.moshi import load_engine

        engine = load_engine(resolved, sampling=sampling, progress=progress)
        if greeting:
            engine.force_text(greeting)
        return engine

    return build


@dataclass(frozen=True)
class TalkPersona:
    """What the session takes from a persona (:mod:`xswarm.personas`)."""

    name: str
    label: str  # shown before the assistant's words
    color: str  # a rich colour name
    greeting: str  # forced into Moshi's text stream first ("" for none)
    model: str  # its Moshi model, when --model is not given
    _sampling: Any = None  # xswarm.personas.Sampling
    memory: bool = True  # remember facts across sessions (xswarm.memory)
    # For the cascade mode (xswarm.cascade); duplex ignores them.
    mode: str = "duplex"
    system_prompt: str = ""
    tts_voice: str | None = None  # [voice] tts
    stt_model: str | None = None  # [voice] stt
    tts_model: str | None = None  # [voice] tts_model
    llm_url: str | None = None  # [llm] url
    llm_model: str | None = None  # [llm] model

    def sampling(self, seed: int | None) -> Any:
        from xswarm.inference.sampling import SamplingConfig

        if self._sampling is None:
            return SamplingConfig(seed=seed)
        return self._sampling.to_config(seed)

    def sgr(self, color: bool) -> str:
        """The ANSI sequence that starts the persona's colour (bold), or "" without colour."""
        if not color:
            return ""
        from rich.color import ColorSystem
        from rich.style import Style

        rendered = Style.parse(f"bold {self.color}").render("|", color_system=ColorSystem.EIGHT_BIT)
        return rendered.split("|", 1)[0]


def load_talk_persona(name: str | None) -> TalkPersona:
    """The persona for this session; raises :class:`UsageError` for an unknown one."""
    from xswarm.personas import load_persona

    persona = load_persona(name)
    return TalkPersona(
        name=persona.name,
        label=persona.display_name or persona.name,
        color=persona.color,
        greeting=persona.greeting,
        model=persona.voice.moshi,
        _sampling=persona.sampling,
        memory=persona.memory,
        mode=persona.mode,
        system_prompt=persona.system_prompt,
        tts_voice=persona.voice.tts,
        stt_model=persona.voice.stt,
        tts_model=persona.voice.tts_model,
        llm_url=persona.llm.url,
        llm_model=persona.llm.model,
    )


# -- messages between actors ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordFrame:
    """One step for ``--record``: what the user said and what the assistant answered."""

    index: int
    user: np.ndarray
    assistant: np.ndarray


class LoadAborted(Exception):
    """Raised inside the loader (from its progress callback) when the session was cancelled."""


@dataclass
class LoadProgress:
    """Written by the loader on the MLX thread, read by the progress bar on the Trio thread.

    Plain attribute writes of ints are atomic under the GIL; a torn read only
    shows a bar one step behind. It is also how a load is stopped: an MLX call
    cannot be interrupted, and the worker waits for a running call before its
    thread can be joined, so a Ctrl-C during a 10 GB load would wait for the
    whole load. After :meth:`abort`, the loader's next progress report raises
    :class:`LoadAborted` and the load ends within one tensor.
    """

    done: int = 0
    total: int = 0
    aborted: bool = False

    def abort(self) -> None:
        self.aborted = True

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Accept ``(done, total)`` positionally or by keyword (the loader's callback)."""
        if self.aborted:
            raise LoadAborted("the session was cancelled during the model load")
        done = kwargs.get("done", args[0] if args else self.done)
        total = kwargs.get("total", args[1] if len(args) > 1 else self.total)
        with contextlib.suppress(TypeError, ValueError):
            self.done, self.total = int(done), int(total)


# -- actors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Echo:
    """Echo cancellation for a live session (:mod:`xswarm.audio.aec`).

    ``tap`` records what the speaker's callback really played (silence and
    underruns included); ``canceller`` estimates the playback-to-capture delay
    from it and removes that echo from each mic frame.
    """

    canceller: Any  # xswarm.audio.aec.EchoCanceller
    tap: Any  # xswarm.audio.aec.PlaybackTap

    def summary(self) -> dict[str, Any]:
        """The ``"aec"`` part of the session summary."""
        stats = self.canceller.stats
        return {
            "delay_ms": None
            if stats.delay_seconds is None
            else round(stats.delay_seconds * 1e3, 1),
            "delay_updates": stats.delay_updates,
            "resets": stats.resets,
            "cpu_ms_per_frame": round(1e3 * stats.cpu_seconds / stats.frames, 3)
            if stats.frames
            else None,
        }


def plan_echo(config: TalkConfig, warn: Callable[[str], None]) -> Echo | None:
    """The echo canceller for a live session, or None (files, ``--no-aec``).

    Without the canceller's package an explicit ``--aec`` is an error
    (:class:`~xswarm.errors.AudioError`); the default only warns and goes on.
    """
    if not config.use_aec:
        return None
    from xswarm.audio.aec import EchoCanceller, PlaybackTap
    from xswarm.errors import AudioError

    try:
        canceller = EchoCanceller()
    except AudioError as error:
        if config.aec:
            raise
        warn(f"{error.message}; talking without echo cancellation (use headphones)")
        return None
    return Echo(canceller, PlaybackTap())


@dataclass
class InferenceStats:
    """Counters of the inference actor, read by the summary."""

    frames: int = 0
    load_seconds: float = 0.0
    seed: int | None = None


async def inference_actor(
    factory: EngineFactory,
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
) -> None:
    """Load the engine on its own MLX thread, report ready, then step it once per frame.

    Started with ``nursery.start``: ``task_status.started()`` comes after the
    model is loaded and warmed up, so the session opens devices only then, and
    a missing or corrupt model fails before any device is touched.

    For each input frame: one engine step on the MLX thread, the answer frame
    (same index and capture time, for latency) to ``output``, a
    :class:`~xswarm.log.FrameReport` to ``events``, the pair to ``record``.
    With ``echo``, each mic frame first has the speaker's echo removed (about
    1 ms on this thread, cheaper than a hop to another), so the model, the
    record and the level meter get the cleaned voice.
    Under ``realtime`` sends never wait (the channels drop oldest); otherwise
    they wait (``--fast`` files). After ``max_frames`` frames it calls
    ``on_done`` (the session stops the source) and returns.

    Owns ``frames``, ``output``, ``events`` and ``record`` and closes them on
    exit, so the sink and the logger see the end. The MLX worker is closed
    (its thread joined) on every exit path.
    """
    import numpy as np

    from xswarm.audio.frame import AudioFrame
    from xswarm.log import FrameReport

    if worker_factory is None:
        from xswarm.inference.worker import open_mlx_worker

        worker_factory = open_mlx_worker

    async def put(sender: Sender[Any], item: Any) -> None:
        if realtime:
            sender.send_nowait(item)
        else:
            await sender.send(item)

    with contextlib.ExitStack() as ends:
        for end in (frames, output, events, record):
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

            async for frame in frames:
                t_start = time.monotonic()
                if echo is not None:
                    frame = echo.canceller.cancel_frame(frame, echo.tap)
                result = await worker.run(engine.step, frame.pcm)
                t_end = time.monotonic()
                answer = np.asarray(result.pcm, dtype=np.float32)
                await put(output, AudioFrame(answer, frame.index, frame.t_capture))
                t_queued = time.monotonic()
                if record is not None:
                    await put(record, RecordFrame(frame.index, frame.pcm, answer))
                await put(
                    events,
                    FrameReport(
                        index=frame.index,
                        t_capture=frame.t_capture,
                        t_start=t_start,
                        t_end=t_end,
                        t_queued=t_queued,
                        mic_rms=_rms(frame.pcm),
                        assistant_rms=_rms(answer),
                        engine_seconds=float(result.seconds),
                        text_token=int(result.text_token),
                        text_piece=result.text,
                    ),
                )
                stats.frames += 1
                if max_frames is not None and stats.frames >= max_frames:
                    on_done()
                    break


async def load_announced(
    worker: Any,
    factory: Callable[[Callable[..., None]], Any],
    events: Sender[Any],
    *,
    stats: InferenceStats,
    log: SessionOutput,
    model_name: str,
    realtime: bool,
    task_status: Any = None,
) -> Any:
    """Build the engine on the MLX ``worker`` (progress bar on a terminal), then say ready.

    Shared by every inference actor (duplex Moshi, :mod:`xswarm.cascade`): the
    ``ready`` notice, :meth:`SessionOutput.mark_ready` and ``task_status.started()``
    come after the load, so devices open only then. A cancel during the load
    stops it at its next progress report (:class:`LoadProgress`).
    """
    import trio

    from xswarm.log import Notice

    progress = LoadProgress()
    t_load = time.monotonic()
    async with trio.open_nursery() as bar:
        if log.options.live and not log.options.quiet:
            bar.start_soon(_draw_progress, log, progress, f"loading {model_name}")
        try:
            engine = await worker.run(factory, progress.update)
        except trio.Cancelled:
            progress.abort()  # the abandoned load stops at its next progress report
            raise
        bar.cancel_scope.cancel()
    log.display.clear_status()
    stats.load_seconds = time.monotonic() - t_load
    stats.seed = getattr(engine, "seed", None)
    events.send_nowait(
        Notice(
            "ready",
            f"ready: talking with {model_name} (seed {stats.seed}); "
            + ("speak, Ctrl-C to stop" if realtime else "processing"),
            {
                "model": model_name,
                "seed": stats.seed,
                "load_seconds": round(stats.load_seconds, 3),
                # Of which: the engine's warm-up steps (MLX compiles on first use).
                "warmup_seconds": round(getattr(engine, "warmup_seconds", 0.0), 3),
            },
        )
    )
    log.mark_ready()
    if task_status is not None:
        task_status.started()
    return engine


async def _draw_progress(log: SessionOutput, progress: LoadProgress, label: str) -> None:
    import trio

    from xswarm.status import format_progress

    while True:
        log.display.set_status(
            format_progress(
                label,
                progress.done,
                progress.total,
                log.display.width,
                color=log.options.color,
            )
        )
        await trio.sleep(PROGRESS_REFRESH)


def _rms(pcm: np.ndarray) -> float:
    import numpy as np

    return float(np.sqrt(np.mean(np.square(pcm, dtype=np.float32)))) if len(pcm) else 0.0


async def logger_actor(events: Receiver[Any], log: SessionOutput) -> None:
    """Hand every event to :meth:`SessionOutput.handle` until the channel ends. Owns ``events``.

    At each turn boundary the history file is fsync'd in a worker thread, so a
    slow disk never stalls the event loop (and with it the audio hand-off).
    """
    import trio

    with events:
        async for event in events:
            log.handle(event)
            if log.turn_ended and log.history is not None:
                log.turn_ended = False
                await trio.to_thread.run_sync(log.history.end_turn)


async def aligned_sink_actor(frames: Receiver[AudioFrame], sink: Any) -> None:
    """Write each answer frame at its input frame's place; silence where frames were dropped.

    So ``--output`` stays as long as the input and in step with it even when
    inference fell behind. Owns ``frames`` and ``sink``; closes the sink in
    ``finally``, so a cancelled session leaves a complete, valid file.
    """
    import numpy as np

    silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
    written = 0
    try:
        with frames:
            async for frame in frames:
                while written < frame.index:
                    sink.write(silence)
                    written += 1
                sink.write(frame.pcm)
                written += 1
    finally:
        sink.close()


async def recorder_actor(frames: Receiver[RecordFrame], sink: Any) -> None:
    """``--record``: a stereo file, left the user, right the assistant, one frame per step.

    Steps that never happened (frames dropped before the model) are written as
    silence on both channels, so the file keeps the session's timing. Owns
    ``frames`` and ``sink`` (closed in ``finally``: valid after a cancel).
    """
    import numpy as np

    silence = np.zeros((FRAME_SAMPLES, 2), dtype=np.float32)
    written = 0
    try:
        with frames:
            async for pair in frames:
                while written < pair.index:
                    sink.write(silence)
                    written += 1
                sink.write(np.stack([pair.user, pair.assistant], axis=1))
                written += 1
    finally:
        sink.close()


# -- the session -------------------------------------------------------------------------


@dataclass
class TalkIO:
    """Where the session writes, and what it knows about those places (tests replace it)."""

    stdout: TextIO
    stderr: TextIO
    stdout_tty: bool
    stderr_tty: bool
    color: bool
    keyboard: TextIO | None = None  # the terminal's input, if any: echo is off while live


@dataclass
class TalkParts:
    """What :func:`run_talk` needs besides the config; tests substitute fakes."""

    engine_factory: EngineFactory | None = None
    model_name: str | None = None
    worker_factory: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None
    handle_signals: bool = True
    source_actor: Callable[..., Any] | None = None  # async (sender) -> None: replaces mic/file
    sink_actor: Callable[..., Any] | None = None  # async (receiver) -> None: replaces speaker/file


async def run_talk(
    config: TalkConfig, io: TalkIO, parts: TalkParts | None = None
) -> dict[str, Any]:
    """Run one conversation; return the summary record.

    Order matters for the user, so every mistake shows in a moment, before the
    slow load: options are checked, the persona loaded, the input file opened,
    the model resolved (missing weights), the output files created and the
    devices chosen (listed, not opened); then the model loads on the MLX
    thread, and only once it is ready are the devices opened. Files created
    for a session that never became ready are removed. Raises :class:`UsageError`,
    :class:`~xswarm.errors.ModelError`, :class:`~xswarm.errors.AudioError`, or
    :class:`Interrupted` after a clean stop on a signal. The summary is written
    on every path (also before those are raised).
    """
    import trio

    from xswarm.log import AssistantWords, Counters, LogOptions, SessionOutput
    from xswarm.runtime import Actor, Overflow, Session
    from xswarm.status import LiveDisplay

    parts = parts or TalkParts()
    config.check()
    overflow = Overflow.DROP_OLDEST if config.realtime else Overflow.BLOCK
    opened: list[Any] = []  # files opened before the session; closed here if it never runs
    created: list[Path] = []  # files created; removed if the session never became ready
    extra: dict[str, Any] = {}

    # 1. Who talks, and with which model: persona and model errors come first, in a moment.
    persona = load_talk_persona(config.persona)
    mode = config.mode or persona.mode
    if mode == "duplex":
        given = [
            flag
            for flag, value in (
                ("--stt-model", config.stt_model),
                ("--tts-model", config.tts_model),
                ("--llm-url", config.llm_url),
                ("--llm-model", config.llm_model),
                ("--llm-timeout", config.llm_timeout),
            )
            if value is not None
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only to cascade "
                f"mode, and persona {persona.name!r} talks in duplex mode; add --mode cascade"
            )
    cascade = None  # xswarm.cascade.CascadePlan in cascade mode
    history = None
    try:
        source_run = _plan_source_file(config, parts, opened)  # an input file is checked here
        factory = parts.engine_factory
        model_name = parts.model_name or config.model or persona.model
        if mode == "cascade":
            from xswarm.cascade import plan_cascade

            cascade = plan_cascade(config, persona, factory=factory, model_name=parts.model_name)
            factory, model_name = cascade.factory, cascade.model_name
        elif factory is None:
            from xswarm.models import resolve

            resolved = resolve(model_name)
            if getattr(resolved, "kind", "moshi") != "moshi":
                raise UsageError(
                    f"model {model_name!r} is not a Moshi model (it is a {resolved.kind} model); "
                    "talk needs a Moshi model "
                    f"such as {DEFAULT_MODEL} or tiny-random (see xswarm models list)"
                )
            model_name = getattr(resolved, "name", None) or model_name
            factory = moshi_engine_factory(
                resolved, persona.sampling(config.seed), persona.greeting
            )

        # 2. Outputs: files created now (a bad path fails before the slow load), devices resolved
        # (listed and chosen, not opened: that happens once the model is loaded).
        echo = None
        if source_run is None:
            source_run = _mic_source(config, extra)
            if parts.sink_actor is None:
                echo = plan_echo(config, lambda message: _warn(io, config, message))
                extra["aec_tap"] = echo.tap if echo else None
        sink_run = _plan_sink(config, parts, opened, created, extra)
        live_devices = extra

        session = Session()
        frames_tx, frames_rx = session.open_channel("frames", FRAMES_CAPACITY, overflow=overflow)
        out_tx, out_rx = session.open_channel("output", OUTPUT_CAPACITY, overflow=overflow)
        events_tx, events_rx = session.open_channel("events", EVENTS_CAPACITY, overflow=overflow)
        extra["announce"] = functools.partial(_announce, events_tx)  # device lost / back
        record_tx = record_rx = None
        record_sink = None
        if config.record_path is not None:
            from xswarm.audio.files import open_sink

            record_sink = open_sink(config.record_path, channels=2)
            opened.append(record_sink)
            created.append(Path(config.record_path))
            record_tx, record_rx = session.open_channel(
                "record", RECORD_CAPACITY, overflow=overflow
            )

        sink_stats = live_devices.get("sink_stats", lambda: {})

        def counters() -> Counters:
            drops = sum(
                stats.dropped for stats in session.channel_metrics() if stats.name != "events"
            )
            extra = sink_stats()
            return Counters(
                drops=drops + extra.get("drops", 0), underruns=extra.get("underruns", 0)
            )

        if (extra.get("mic_stats") or extra.get("speaker_stats")) and io.stderr_tty:
            mute_alsa_messages()
        # With --output - the audio owns stdout: the transcript goes to stderr instead.
        audio_on_stdout = config.output_path == "-"
        text_out = io.stderr if audio_on_stdout else io.stdout
        text_tty = io.stderr_tty if audio_on_stdout else io.stdout_tty
        display = LiveDisplay(
            text_out,
            io.stderr,
            show_live=io.stderr_tty and not config.quiet,
            stdout_tty=text_tty,
            keyboard=io.keyboard,
        )
        if config.history:
            from xswarm.history import SessionLog

            history = SessionLog.open(persona.name, model_name, memory=persona.memory)
        log = SessionOutput(
            LogOptions(
                json=config.json or not text_tty,
                quiet=config.quiet,
                live=io.stderr_tty,
                color=io.color,
                realtime=config.realtime,
                speaker_label=persona.label,
                speaker_color=persona.sgr(io.color),
                **({"slow_hint": cascade.slow_hint} if cascade is not None else {}),
            ),
            display,
            io.stderr,
            AssistantWords(),
            counters=counters,
            on_stdout_closed=lambda: session.cancel("stdout was closed"),
            log_path=config.log_path,
            trace_path=config.trace_path,
            history=history,
        )
    except BaseException:
        _discard(opened, created)
        if history is not None:
            _discard([history], [history.path])
        raise

    stats = InferenceStats()
    source_scope = trio.CancelScope()

    async def source() -> None:
        with source_scope:
            await source_run(frames_tx)

    async def sink() -> None:
        await sink_run(out_rx)

    actors = [
        Actor("logger", functools.partial(logger_actor, events_rx, log)),
        Actor(
            "inference",
            functools.partial(
                inference_actor if cascade is None else cascade.actor(out_rx.clone(), extra),
                factory,
                frames_rx,
                out_tx,
                events_tx,
                record_tx,
                realtime=config.realtime,
                max_frames=config.max_frames,
                stats=stats,
                log=log,
                model_name=model_name,
                on_done=source_scope.cancel,
                worker_factory=parts.worker_factory,
                echo=echo,
            ),
            start=True,
        ),
        Actor("sink", sink),
    ]
    if record_rx is not None:
        actors.append(Actor("recorder", functools.partial(recorder_actor, record_rx, record_sink)))
    actors.append(Actor("source", source))

    reason = "end"
    try:
        await session.run(actors, handle_signals=parts.handle_signals)
        if log.stdout_closed:
            reason = "stdout_closed"
        elif source_scope.cancelled_caught:
            reason = "duration"
    except Interrupted:
        reason = "interrupted"
        raise
    except BaseException:
        reason = "failed"
        raise
    finally:
        # Files the actors never got to close (a failed load); if the session never
        # became ready, the output files it created are empty: remove them.
        _discard(opened, created if log.t_ready is None else [])
        _drain(events_rx, log)
        summary = log.finish(
            reason,
            {
                "model": model_name,
                "persona": persona.name,
                "seed": stats.seed,
                "load_seconds": round(stats.load_seconds, 3),
                "aec": echo.summary() if echo else None,
                **(cascade.summary() if cascade is not None else {}),
                # Reports the logger could not take in time (a stalled stdout pipe):
                # their words are missing from the transcript, so say so.
                "events_dropped": sum(
                    c.dropped for c in session.channel_metrics() if c.name == "events"
                ),
                # Where the drops happened: before the model (it fell behind), after it
                # (playback fell behind), or in the jitter buffer (a burst after a stall).
                "drops_by": {
                    **{c.name: c.dropped for c in session.channel_metrics() if c.name != "events"},
                    "playback": sink_stats().get("drops", 0),
                },
            },
        )
        if history is not None:
            if log.t_ready is None:  # the session never started: nothing to remember
                _discard([history], [history.path])
            else:
                history.close({k: v for k, v in summary.items() if k != "type"})
    if log.stdout_closed:
        # The reader went away (``| head -1``): the CLI ends quietly with exit 0.
        raise BrokenPipeError("stdout was closed")
    return summary


_alsa_handler: Any = None  # kept alive: libasound holds a raw pointer to it


def mute_alsa_messages() -> None:
    """Stop libasound from printing its own notices (``ALSA lib pcm.c: underrun occurred``).

    libasound writes them straight to file descriptor 2, through the middle of
    the live status line. Nothing is lost by muting them while that line is
    shown: xrun flags and underruns are counted (``StreamStats.xruns``, the
    jitter buffer) and reported in the status line and the summary. A no-op
    where there is no ALSA (macOS) or it cannot be loaded.
    """
    global _alsa_handler
    if _alsa_handler is not None:
        return
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("asound")
    if name is None:
        return
    try:
        library = ctypes.CDLL(name)
        # void handler(const char *file, int line, const char *function, int err,
        # const char *fmt, ...): the variadic tail is ignored by a callback that stops
        # at fmt (the x86-64 and arm64 C ABIs pass it in registers or on the stack).
        prototype = ctypes.CFUNCTYPE(
            None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
        )
        handler = prototype(lambda *_: None)
        library.snd_lib_error_set_handler(handler)
    except (OSError, AttributeError):
        return
    _alsa_handler = handler


def _discard(opened: list[Any], created: list[Path]) -> None:
    """Close what was opened (idempotent closes) and remove ``created`` files."""
    for thing in opened:
        with contextlib.suppress(Exception):
            thing.close()
    for path in created:
        with contextlib.suppress(OSError):
            path.unlink()


def _drain(events: Receiver[Any], log: SessionOutput) -> None:
    """Hand the logger what was still queued when the session was cancelled."""
    import trio

    with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
        while True:
            log.handle(events.receive_nowait())


def _plan_source_file(
    config: TalkConfig, parts: TalkParts, opened: list[Any]
) -> Callable[..., Any] | None:
    """The source actor for an input file (opened and checked now); None for the mic."""
    if parts.source_actor is not None:
        return parts.source_actor
    if config.input_path is None:
        return None
    from xswarm.audio.files import open_source

    audio = open_source(config.input_path)
    opened.append(audio)
    return functools.partial(_file_source, audio, realtime=config.realtime)


def _plan_sink(
    config: TalkConfig,
    parts: TalkParts,
    opened: list[Any],
    created: list[Path],
    extra: dict[str, Any],
) -> Callable[..., Any]:
    """The sink actor: an output file (created now), the speaker (resolved now), or nothing.

    ``--fast`` without ``--output`` keeps only the transcript: audio made faster
    than real time has no speaker to go to, so it is discarded (and no sound
    device is needed).
    """
    if parts.sink_actor is not None:
        return parts.sink_actor
    if config.fast and config.output_path is None:
        return _discard_sink
    if config.output_path is not None:
        from xswarm.audio.files import open_sink

        audio_out = open_sink(config.output_path)
        opened.append(audio_out)
        if config.output_path != "-":
            created.append(Path(config.output_path))
        return functools.partial(_aligned_sink, sink=audio_out)
    return _speaker_sink(config, extra)


async def _discard_sink(frames: Receiver[AudioFrame]) -> None:
    with frames:
        async for _ in frames:
            pass


async def _file_source(audio: Any, frames: Sender[AudioFrame], *, realtime: bool) -> None:
    from xswarm.audio.files import file_source_actor

    await file_source_actor(audio, frames, realtime=realtime)


async def _aligned_sink(frames: Receiver[AudioFrame], *, sink: Any) -> None:
    await aligned_sink_actor(frames, sink)


def _mic_source(config: TalkConfig, extra: dict[str, Any]) -> Callable[..., Any]:
    """The mic actor on the chosen input device (resolved now, opened when the session runs)."""
    from xswarm.audio.devices import StreamStats, resolve_device

    device = resolve_device(config.input_device, "input")
    stats = StreamStats()
    extra["mic_stats"] = stats
    return functools.partial(_mic, device=device.index, stats=stats, extra=extra)


async def _mic(
    frames: Sender[AudioFrame], *, device: int, stats: Any, extra: dict[str, Any]
) -> None:
    """The mic actor, reopened on the default input if the device is lost
    (:mod:`xswarm.audio.resilient`); ``extra["announce"]`` tells the user."""
    import trio

    from xswarm.audio.devices import mic_actor
    from xswarm.audio.resilient import keep_mic

    async def mic(send: Any, *, device: int | None, task_status: Any = None) -> None:
        stats.last_callback = 0.0  # a new stream: the old one's last callback means nothing
        await mic_actor(
            send, device=device, stats=stats, task_status=task_status or trio.TASK_STATUS_IGNORED
        )

    await keep_mic(mic, frames, device=device, announce=extra.get("announce", _no_announce))


def _speaker_sink(config: TalkConfig, extra: dict[str, Any]) -> Callable[..., Any]:
    """The speaker actor on the chosen output device, through a jitter buffer we can read."""
    from xswarm.audio.aec import TappedJitterBuffer
    from xswarm.audio.devices import StreamStats, resolve_device
    from xswarm.audio.jitter import JitterBuffer

    device = resolve_device(config.output_device, "output")
    tap = extra.get("aec_tap")  # echo cancellation reads what the speaker really played
    buffer = (
        TappedJitterBuffer(tap, prefill=JITTER_PREFILL)
        if tap is not None
        else JitterBuffer(prefill=JITTER_PREFILL)
    )
    stats = StreamStats()

    def sink_stats() -> dict[str, int]:
        jitter = buffer.stats()
        return {"underruns": jitter.underruns, "drops": -(-jitter.dropped // FRAME_SAMPLES)}

    extra["sink_stats"] = sink_stats
    extra["speaker_stats"] = stats
    extra["playback"] = buffer  # xswarm.cascade: what is still unplayed, cleared at barge-in
    return functools.partial(_speaker, device=device.index, buffer=buffer, stats=stats, extra=extra)


async def _speaker(
    frames: Receiver[AudioFrame], *, device: int, buffer: Any, stats: Any, extra: dict[str, Any]
) -> None:
    """The speaker actor, reopened on the default output if the device is lost (the
    jitter buffer, and what it holds, carries over)."""
    import trio

    from xswarm.audio.devices import speaker_actor
    from xswarm.audio.resilient import keep_speaker

    async def speaker(receive: Any, *, device: int | None, task_status: Any = None) -> None:
        stats.last_callback = 0.0
        await speaker_actor(
            receive,
            device=device,
            buffer=buffer,
            stats=stats,
            task_status=task_status or trio.TASK_STATUS_IGNORED,
        )

    await keep_speaker(speaker, frames, device=device, announce=extra.get("announce", _no_announce))


def _warn(io: TalkIO, config: TalkConfig, message: str) -> None:
    """A warning before the session runs (its logger does not exist yet)."""
    if not config.quiet:
        print(f"xswarm: warning: {message}", file=io.stderr, flush=True)


def _no_announce(message: str) -> None:
    """Before the session's events channel exists there is nobody to tell."""


def _announce(events: Sender[Any], message: str) -> None:
    """A device warning for the user, through the logger (never raises)."""
    import trio

    from xswarm.log import Notice

    with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
        events.send_nowait(Notice("warning", message, {"device": True}))
