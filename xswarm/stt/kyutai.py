"""Kyutai delayed-streams STT (stt-1b-en_fr, stt-2.6b-en) on moshi_mlx, several inputs per LM batch.

The model hears one Mimi frame (80 ms, 32 codebooks) per step and writes one
text token per step, ``audio_delay_seconds`` behind the audio. As in
``moshi_mlx/run_inference.py``, each input is fed as ``audio_silence_prefix``
seconds of silence, the audio, then ``audio_delay + 1`` seconds of silence so
the last words come out; the text tokens become timed words in
:class:`~xswarm.transcript.WordAssembler` (the timing rule is documented
there).

Batching: the inputs of one :meth:`KyutaiSttEngine.transcribe` call are rows
of one LM batch, stepped together (one transformer call for all rows). KV
caches take their batch size from their first use, so every call gets fresh
caches of its own size; the weights are shared. A row whose input has ended
is fed silence until the longest one ends, and its tokens are ignored. The
rows never mix: each row's tokens are exactly those of a batch of one (checked
by the tests), because the text sampler is argmax (temperature 0, as Kyutai
runs STT) and every row has its own codec state.

The step is the same computation as moshi_mlx's ``LmGen.step`` for a model
without audio output (``dep_q == 0``): the previous text token and each
codebook's code from ``1 + delay`` steps back, summed embeddings, transformer,
text head, argmax. It is written here rather than calling ``LmGen`` because
``LmGen`` keeps a token buffer of ``max_steps`` (fixed up front) and syncs
with the device once per codebook per step; and the main transformer gets a
ring KV cache of ``context + 1`` slots instead of moshi_mlx's 4096-slot ring,
which holds the same keys for the first 4096 steps (identical output) and
stays correct after it wraps, at a quarter of the memory for stt-1b.

Every MLX call runs on the MLX worker thread (``worker.call``).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from xswarm.audio import FRAME_SAMPLES, SAMPLE_RATE
from xswarm.errors import ModelError, UsageError, XswarmError
from xswarm.stt.engine import AudioStream, ProgressEvent, StreamEnd, SttEvent, WordEvent
from xswarm.transcript import PieceTable, WordAssembler

if TYPE_CHECKING:
    import mlx.core as mx
    import numpy as np
    from moshi_mlx.models import Lm

R = TypeVar("R")

FLUSH_SECONDS: Final = 1.0  # s of silence after audio + delay, as run_inference.py pads
PROGRESS_EVERY: Final = 6  # steps (0.48 s of audio) between progress events
END_OF_TURN_HEAD: Final = 2  # the extra head Kyutai reads for end of turn (stt_from_mic_mlx.py)


class Codec(Protocol):
    """A streaming Mimi encoder for one input (``xswarm.models.load_codec`` returns one)."""

    def encode_step(self, pcm: np.ndarray) -> np.ndarray:
        """``(1920,)`` float32 -> integer codes, one per codebook (any shape, flattened)."""
        ...

    def reset(self) -> None:
        """Forget the streaming state: the next frame starts a new input."""
        ...


class Caller(Protocol):
    """Runs a function on the MLX thread (:class:`xswarm.inference.worker.MlxWorker`)."""

    def call(self, fn: Callable[..., R], *args: Any) -> R: ...


class _Direct:
    """Run MLX calls on the calling thread (tests and benchmarks that own the only thread)."""

    def call(self, fn: Callable[..., R], *args: Any) -> R:
        return fn(*args)


@dataclasses.dataclass(frozen=True)
class SttConfig:
    """The ``stt_config`` block of a Kyutai STT ``config.json``."""

    audio_delay_seconds: float  # how far the text lags the audio
    audio_silence_prefix_seconds: float  # silence fed before the audio

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any], *, model: str) -> SttConfig:
        """Read it from a model's config dict; :class:`UsageError` if it is not an STT model."""
        block = config.get("stt_config")
        if not isinstance(block, Mapping):
            raise UsageError(
                f"{model}: not a speech-to-text model (its config.json has no stt_config); "
                "use an STT model (xswarm models list) or --model sphinx-en"
            )
        return cls(
            audio_delay_seconds=float(block.get("audio_delay_seconds", 0.0)),
            audio_silence_prefix_seconds=float(block.get("audio_silence_prefix_seconds", 0.0)),
        )

    @property
    def prefix_samples(self) -> int:
        return int(self.audio_silence_prefix_seconds * SAMPLE_RATE)

    @property
    def tail_samples(self) -> int:
        return int((self.audio_delay_seconds + FLUSH_SECONDS) * SAMPLE_RATE)

    @property
    def offset_seconds(self) -> float:
        """Token time minus this = input time (see :class:`~xswarm.transcript.WordAssembler`)."""
        return self.prefix_samples / SAMPLE_RATE + self.audio_delay_seconds


def stt_caches(lm: Lm) -> list[Any]:
    """Fresh KV caches for ``lm``'s main transformer: rings of ``context + 1`` slots.

    Each attention layer attends to the current step and the ``context``
    before it; a ring of exactly that many slots is never sliced, so order in
    the ring does not matter (RoPE was applied before caching); see
    :func:`xswarm.inference.moshi.window_cache`. The caches take their batch
    size from their first use.
    """
    from xswarm.inference.moshi import window_cache

    return window_cache(lm, slots=lm.transformer.cfg.context + 1)


class _Batch:
    """The LM state of one batch: caches, the previous text tokens, recent input codes.

    Lives on the MLX thread: every method is called through the worker.
    """

    def __init__(self, lm: Lm, codecs: Sequence[Codec]) -> None:
        import mlx.core as mx

        cfg = lm.cfg
        self.lm = lm
        self.codecs = codecs
        self.codebooks = cfg.other_codebooks
        self.delays = list(cfg.audio_delays)[: self.codebooks]
        self.pad = cfg.audio_padding_token
        self.caches = stt_caches(lm)
        size = len(codecs)
        self.text = mx.full((size, 1), cfg.text_out_vocab_size, dtype=mx.int32)  # start token
        self.history: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(self.delays, default=0) + 2
        )

    def step(self, frames: Sequence[np.ndarray]) -> list[int]:
        """Encode one frame per row, run one LM step, return each row's text token."""
        tokens = self._tokens(self._forward(frames))
        result: list[int] = tokens.tolist()  # evaluates the step
        return result

    def step_with_end_of_turn(self, frames: Sequence[np.ndarray]) -> tuple[list[int], list[float]]:
        """:meth:`step`, plus each row's probability that the speaker's turn has ended.

        The same numbers as moshi_mlx's ``LmGen.step_with_extra_heads``: a
        softmax over each extra head applied to the normed transformer output;
        the end-of-turn probability is element 0 of head
        :data:`END_OF_TURN_HEAD`. Only for a model with that head (see
        :func:`has_end_of_turn_head`).
        """
        import mlx.core as mx

        out = self._forward(frames)
        tokens = self._tokens(out)
        head = self.lm.extra_heads[END_OF_TURN_HEAD]
        ended = mx.softmax(head(out), axis=-1)[:, 0, 0]
        mx.eval(tokens, ended)
        return tokens.tolist(), ended.astype(mx.float32).tolist()

    def _tokens(self, out: mx.array) -> mx.array:
        import mlx.core as mx

        logits = self.lm.text_linear(out)
        tokens = mx.argmax(logits[:, 0, :], axis=-1).astype(mx.int32)
        self.text = tokens[:, None]
        return tokens

    def _forward(self, frames: Sequence[np.ndarray]) -> mx.array:
        """Encode one frame per row and run the transformer: its normed output, not evaluated."""
        import mlx.core as mx
        import numpy as np

        codes = np.stack([
            np.asarray(codec.encode_step(frame)).reshape(-1)[: self.codebooks]
            for codec, frame in zip(self.codecs, frames, strict=True)
        ]).astype(np.int32)
        self.history.append(codes)
        # Step t hears codebook k's code from step t - 1 - delay_k (LmGen's rule);
        # before the first one exists, the padding token.
        columns = []
        for k, delay in enumerate(self.delays):
            back = 2 + delay
            if len(self.history) >= back:
                columns.append(self.history[-back][:, k])
            else:
                columns.append(np.full(len(frames), self.pad, np.int32))
        audio = mx.array(np.stack(columns, axis=1))
        lm = self.lm
        xs = lm.text_emb(self.text)
        for k, emb in enumerate(lm.audio_embs):
            xs = xs + emb(audio[:, k : k + 1])
        out: mx.array = lm.out_norm(lm.transformer(xs, cache=self.caches))
        return out


class _Feed:
    """One input as the model hears it: prefix silence, the audio, then flush silence.

    Frames are cut at 1920 samples from that sample stream (the prefix need not
    be a whole number of frames), as run_inference.py does; the input's steps
    end at the last whole frame. Past its end the feed gives silence.
    """

    def __init__(self, stream: AudioStream, stt: SttConfig) -> None:
        import numpy as np

        self.stream = stream
        self._stt = stt
        self._buffer = np.zeros(stt.prefix_samples, np.float32)
        self._yielded = 0
        self.duration: float | None = None  # s, once the audio has ended
        self.steps: int | None = None  # this input's step count, once known
        self.error: XswarmError | None = None
        self.ended = False  # its StreamEnd was sent

    def next_frame(self) -> np.ndarray:
        import numpy as np

        # Keep one frame of look-ahead: the last audio frame's padding is trimmed
        # when the iterator ends, which changes where the next frame is cut.
        while self.duration is None and len(self._buffer) < 2 * FRAME_SAMPLES:
            try:
                frame = next(self.stream.frames)
            except StopIteration:
                self._end_audio(self.stream.samples(self._yielded))
            except XswarmError as error:
                self.error = error
                self._end_audio(self.stream.samples(self._yielded))
            else:
                self._yielded += len(frame)
                self._buffer = np.concatenate([self._buffer, frame])
        if len(self._buffer) < FRAME_SAMPLES:
            return np.zeros(FRAME_SAMPLES, np.float32)
        frame, self._buffer = self._buffer[:FRAME_SAMPLES], self._buffer[FRAME_SAMPLES:]
        return frame

    def _end_audio(self, real: int) -> None:
        import numpy as np

        padding = self._yielded - real
        if padding > 0:
            self._buffer = self._buffer[: len(self._buffer) - padding]
        self.duration = real / SAMPLE_RATE
        total = self._stt.prefix_samples + real + self._stt.tail_samples
        self.steps = total // FRAME_SAMPLES
        self._buffer = np.concatenate([self._buffer, np.zeros(self._stt.tail_samples, np.float32)])

    @property
    def heard(self) -> float:
        """Seconds of the input decoded so far (for progress)."""
        return self._yielded / SAMPLE_RATE if self.duration is None else self.duration


class KyutaiSttEngine:
    """A Kyutai STT model behind the :class:`~xswarm.stt.engine.SttEngine` interface.

    ``codec_factory`` makes one streaming codec per batch row (rows keep
    theirs across calls and reset it per input). ``worker`` runs every MLX
    call; ``None`` runs them on the calling thread. The engine is not
    thread-safe: one :meth:`transcribe` at a time.
    """

    def __init__(
        self,
        lm: Lm,
        tokenizer: PieceTable,
        codec_factory: Callable[[], Codec],
        stt: SttConfig,
        *,
        name: str,
        batch_size: int = 8,
        worker: Caller | None = None,
    ) -> None:
        if batch_size < 1:
            raise UsageError(f"--batch-size {batch_size}: must be at least 1")
        if lm.cfg.generated_codebooks:
            raise UsageError(
                f"{name}: a speech model with audio output, not speech-to-text; "
                "use an STT model (xswarm models list) or --model sphinx-en"
            )
        self.name = name
        self.batch_size = batch_size
        self.stt = stt
        self._lm = lm
        self._tokenizer = tokenizer
        self._codec_factory = codec_factory
        self._codecs: list[Codec] = []
        self._worker: Caller = worker if worker is not None else _Direct()

    def transcribe(self, streams: Sequence[AudioStream]) -> Iterator[SttEvent]:
        if not streams:
            return
        if len(streams) > self.batch_size:
            raise ValueError(f"{len(streams)} streams for a batch of {self.batch_size}")
        codecs = self._worker.call(self._prepare_codecs, len(streams))
        batch = self._worker.call(_Batch, self._lm, codecs)
        feeds = [_Feed(stream, self.stt) for stream in streams]
        assemblers = [
            WordAssembler(self._tokenizer, offset_seconds=self.stt.offset_seconds)
            for _ in streams
        ]
        step = 0
        while not all(feed.ended for feed in feeds):
            frames = [feed.next_frame() for feed in feeds]
            tokens = self._worker.call(batch.step, frames)
            step += 1
            for feed, assembler, token in zip(feeds, assemblers, tokens, strict=True):
                if feed.ended:
                    continue
                index = feed.stream.index
                horizon = math.inf if feed.duration is None else feed.duration
                if feed.error is None:
                    word = assembler.push(token, horizon=horizon)
                    if word is not None:
                        yield WordEvent(index, word)
                if feed.error is not None or (feed.steps is not None and step >= feed.steps):
                    word = None if feed.error else assembler.finish(horizon=horizon)
                    if word is not None:
                        yield WordEvent(index, word)
                    feed.ended = True
                    yield StreamEnd(index, feed.duration or 0.0, feed.error)
                elif step % PROGRESS_EVERY == 0:
                    yield ProgressEvent(index, feed.heard)

    def _prepare_codecs(self, count: int) -> list[Codec]:
        while len(self._codecs) < count:
            self._codecs.append(self._codec_factory())
        for codec in self._codecs[:count]:
            codec.reset()
        return self._codecs[:count]


def load_kyutai_engine(
    model: str, *, batch_size: int = 8, worker: Caller | None = None
) -> KyutaiSttEngine:
    """Resolve and load a Kyutai STT model (name or directory) on the MLX thread.

    Raises :class:`UsageError` for an unknown name or a model that is not
    speech-to-text, :class:`ModelError` for missing or broken weights (the
    message names ``xswarm models pull``).
    """
    caller: Caller = worker if worker is not None else _Direct()
    return caller.call(functools.partial(_load, model, batch_size, caller))


def _load(model: str, batch_size: int, caller: Caller) -> KyutaiSttEngine:
    loaded = load_kyutai_model(model)
    return KyutaiSttEngine(
        loaded.lm,
        loaded.tokenizer,
        loaded.codec_factory,
        loaded.stt,
        name=loaded.name,
        batch_size=batch_size,
        worker=caller,
    )


def has_end_of_turn_head(lm: Lm) -> bool:
    """Whether the checkpoint has the end-of-turn head (config.json ``extra_heads_num_heads``)."""
    return len(lm.extra_heads) > END_OF_TURN_HEAD


@dataclasses.dataclass(frozen=True)
class KyutaiModel:
    """A loaded Kyutai STT model: what the file engine and the conversation stream are made of."""

    lm: Lm
    tokenizer: PieceTable
    codec_factory: Callable[[], Codec]  # a fresh streaming Mimi encoder per call
    stt: SttConfig
    name: str


def load_kyutai_model(model: str) -> KyutaiModel:
    """Resolve and load a Kyutai STT model (name or directory) on the calling thread.

    Raises :class:`UsageError` for an unknown name or a model that is not
    speech-to-text, :class:`ModelError` for missing or broken weights (the
    message names ``xswarm models pull``).
    """
    from xswarm import models
    from xswarm.models.registry import REGISTRY

    spec = REGISTRY.get(model)
    if spec is not None and spec.kind != "stt":
        raise UsageError(
            f"{model} is a {spec.kind} model, not speech-to-text; use an STT model "
            "(xswarm models list shows their kind) or --model sphinx-en"
        )
    resolved = models.resolve(model)
    stt = SttConfig.from_model_config(resolved.config, model=model)
    lm, cfg = models.load_lm(resolved)
    tokenizer = models.load_text_tokenizer(resolved)
    codebooks = cfg.other_codebooks
    if codebooks <= 0:
        raise ModelError(f"{model}: the model hears no audio codebooks (n_q - dep_q = 0)")
    return KyutaiModel(
        lm,
        tokenizer,
        functools.partial(models.load_codec, resolved, num_codebooks=codebooks),
        stt,
        resolved.name,
    )
