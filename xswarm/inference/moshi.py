"""The Moshi engine: one model step per 80 ms frame, on the MLX thread.

Each call to :meth:`MoshiEngine.step` takes the 1920 samples the user just
said, encodes them with the Mimi codec, runs one ``moshi_mlx`` ``LmGen`` step
(main transformer, text sampling, depformer audio sampling), decodes the
model's own audio codes back to 1920 samples, and returns a
:class:`StepResult` with the text piece and the frame to play.

API
---
``load_engine(model, *, sampling=SamplingConfig(), quantize=None, progress=None,
max_steps=DEFAULT_MAX_STEPS, warmup_steps=None) -> MoshiEngine``
    Resolve, load and warm up a model (``xswarm.models``). Must run on the MLX
    thread: ``engine = await worker.run(functools.partial(load_engine, "tiny-random"))``,
    or ``await open_engine(worker, "tiny-random")``.
``MoshiEngine(lm, codec, tokenizer, *, sampling, max_steps, warmup_steps, load_seconds)``
    Wrap objects that are already loaded (tests, benchmarks). Also on the MLX thread.
``engine.step(pcm) -> StepResult``
    ``pcm`` is a ``(1920,)`` float32 array; anything else raises
    :class:`FrameError`. Synchronous; the inference actor calls
    ``await worker.run(engine.step, frame)``.
``engine.force_text(text) -> int``
    Queue text the model will say next (a persona's greeting); returns the
    number of steps queued.
``engine.reset()``
    Start a new conversation on the same weights (same seed, clean state).

Threading: MLX is not thread-safe, so every method runs on the thread that
built the engine (the MLX worker); a call from any other thread raises
``RuntimeError`` before touching MLX. ``engine.thread_ident`` names that thread.

Output audio: the model speaks with a delay of a few frames (``LmGen``'s
acoustic delay: 1 frame for the 7B, 2 for the 1B). During those first frames
:attr:`StepResult.pcm` is silence and ``audio_ready`` is False, so the output
is always exactly one frame per input frame and playback runs at a steady rate.

No conversation length cap: see :meth:`MoshiEngine._roll` and
:func:`window_cache` for how the engine carries on past ``LmGen``'s
``max_steps`` buffer and the transformer's context. Neither is a restart: the
output is what an endless buffer would give (no seam to hear), and the model
keeps remembering the last ``context`` frames (3000, four minutes, for the
published models) as it was trained to, however long the conversation runs.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np

from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from xswarm.errors import UsageError
from xswarm.inference.sampling import RandomStream, SamplingConfig

if TYPE_CHECKING:
    import mlx.core as mx
    from moshi_mlx.models.generate import LmGen
    from moshi_mlx.models.lm import Lm
    from moshi_mlx.modules.transformer import LayerCache

    from xswarm.inference.worker import MlxWorker

# Moshi's text stream (kyutai-labs/moshi: existing_text_padding_id / end_of_text_padding_id).
TEXT_PAD_ID: Final = 3  # "nothing new to say this frame": most frames carry it
TEXT_EPAD_ID: Final = 0  # "padding ends": the frame just before a word starts
WORD_START: Final = "\u2581"  # SentencePiece's "▁": the piece begins a new word
ASCII_END: Final = 0x80  # byte-fallback pieces below this are whole characters

DEFAULT_MAX_STEPS: Final = 256  # frames (20 s) in LmGen's token buffer before the engine rolls it
MIN_WARMUP_STEPS: Final = 4  # frames: compiles the samplers and runs the codec both ways
SPEECH_CHARS_PER_SECOND: Final = 14.0  # ~150 words/min: how fast forced text is paced

QUANTIZE_BITS: Final[dict[str, int | None]] = {"q4": 4, "q8": 8, "bf16": None}  # --quant names

_SILENCE: Final = np.zeros(FRAME_SAMPLES, dtype=np.float32)
_SILENCE.flags.writeable = False  # shared by every result before the audio delay has passed


class FrameError(UsageError, ValueError):
    """A frame handed to :meth:`MoshiEngine.step` is not 1920 float32 samples."""


class Codec(Protocol):
    """The streaming Mimi codec as ``xswarm.models.load_codec`` returns it."""

    def encode_step(self, pcm: np.ndarray) -> np.ndarray:
        """``(1920,)`` float32 -> integer codes, one per codebook (flattened by the engine)."""
        ...

    def decode_step(self, codes: np.ndarray) -> np.ndarray:
        """``(K,)`` int codes -> ``(1920,)`` float32 samples."""
        ...

    def reset(self) -> None:
        """Forget the streaming state (a new conversation starts)."""
        ...


class TextTokenizer(Protocol):
    """The subset of ``sentencepiece.SentencePieceProcessor`` the engine uses."""

    def encode(self, text: str) -> list[int]: ...

    def id_to_piece(self, id: int) -> str: ...

    def vocab_size(self) -> int: ...


@dataclass(frozen=True)
class StepResult:
    """What the model produced for one 80 ms input frame."""

    index: int  # frame number since the conversation started (warm-up not counted)
    text_token: int  # the text token id of this frame (sampled, or forced)
    text: str | None  # its piece with "▁" as a space; None for padding and control tokens
    pcm: np.ndarray  # (1920,) float32 to play; read-only silence while audio_ready is False
    audio_ready: bool  # False during the model's first few frames (its acoustic delay)
    forced: bool  # the text token came from force_text, not from sampling
    seconds: float  # wall time of this step: encode + LM + decode


def check_frame(pcm: object) -> np.ndarray:
    """Return ``pcm`` if it is a ``(1920,)`` float32 array, else raise :class:`FrameError`."""
    if isinstance(pcm, np.ndarray) and pcm.dtype == np.float32 and pcm.shape == (FRAME_SAMPLES,):
        return pcm
    if isinstance(pcm, np.ndarray):
        got = f"an array of shape {pcm.shape} and dtype {pcm.dtype}"
    else:
        got = f"a {type(pcm).__name__}"
    raise FrameError(
        f"expected a frame of {FRAME_SAMPLES} float32 samples "
        f"({FRAME_SECONDS * 1000:.0f} ms at {SAMPLE_RATE // 1000} kHz), got {got}"
    )


def window_cache(lm: Lm, *, slots: int | None = None) -> list[LayerCache]:
    """KV caches for ``lm``'s main transformer that stay correct for ever.

    ``slots`` defaults to the config's ``context``; the STT engine passes
    ``context + 1`` (:func:`xswarm.stt.kyutai.stt_caches`), the most a layer
    attends to before moshi_mlx's own ring wraps, which keeps it token-identical
    to ``run_inference``. Any ring of at most ``context + 1`` slots is never
    sliced by the layer, so the argument below holds for both.

    moshi_mlx gives the main transformer ``RotatingKVCache(max_size=max_seq_len)``
    (4096) and each attention layer keeps the *last* ``context`` (3000) entries
    of what the cache returns. That is right until the cache wraps: after 4096
    steps the ring buffer is no longer in time order, so "the last 3000 slots"
    are a mix of old and new keys, and the newest ones are dropped. A
    conversation would slowly lose its short-term memory after ~5.5 minutes.

    A ring of exactly ``context`` slots fixes this. The layer then never slices
    (``1 + min(context, k_len - 1) == k_len``), and attends to all slots, which
    always hold exactly the last ``context`` steps: the sliding window the model
    was trained with (PyTorch Moshi uses a ring of ``context`` too). Order in
    the ring does not matter: a single query attends to keys and values as a
    set, and each key carries its own position, rotated in by RoPE with the
    cache's ever-growing offset; RoPE scores depend only on the distance
    between query and key, which stays below ``context``. The offset is a
    float32 angle multiplier, so after hours precision degrades gently
    (~0.01 rad after 3 hours at the highest frequency), never abruptly.
    """
    from moshi_mlx.modules.kv_cache import RotatingKVCache
    from moshi_mlx.modules.transformer import LayerCache

    cfg = lm.transformer.cfg
    return [
        LayerCache(
            RotatingKVCache(
                head_dim=cfg.head_dim,
                n_kv_heads=cfg.num_heads // cfg.kv_repeat,
                max_size=cfg.context if slots is None else slots,
            )
        )
        for _ in lm.transformer.layers
    ]


class MoshiEngine:
    """A full-duplex Moshi conversation, one :meth:`step` per 80 ms frame.

    Build it (or :func:`load_engine`) on the MLX worker thread and call every
    method there. It owns ``codec`` from then on. It shares ``lm``'s weights
    but keeps its own transformer caches (see :func:`window_cache`) and puts
    them in place on ``lm`` at every step, so several engines may share one
    set of weights (each step is one LM call on the one MLX thread).

    ``max_steps`` sizes ``LmGen``'s token buffer; it is not a limit (the engine
    rolls the buffer, see :meth:`_roll`). ``warmup_steps`` silent frames run
    through the whole pipeline before the state is reset, so the first real
    frame is not slowed by MLX's lazy compilation; ``None`` picks enough to
    reach the codec's decoder.
    """

    def __init__(
        self,
        lm: Lm,
        codec: Codec,
        tokenizer: TextTokenizer,
        *,
        sampling: SamplingConfig = SamplingConfig(),  # noqa: B008 - frozen, shared safely
        max_steps: int = DEFAULT_MAX_STEPS,
        warmup_steps: int | None = None,
        load_seconds: float = 0.0,
    ) -> None:
        self.thread_ident: Final = threading.get_ident()
        cfg = lm.cfg
        self._lm = lm
        self._codec = codec
        self._tokenizer = tokenizer
        self.sampling: Final = sampling.validated(
            text_vocab=cfg.text_out_vocab_size, audio_vocab=cfg.audio_vocab_size - 1
        )
        self.seed: Final[int] = self.sampling.seed  # type: ignore[assignment]
        self._max_delay = max(cfg.audio_delays)
        self._keep = self._max_delay + 1  # LmGen reads back at most this many frames
        if max_steps < 2 * self._keep:
            raise UsageError(
                f"max_steps must be at least {2 * self._keep} for this model "
                f"(twice its acoustic delay plus one), got {max_steps}"
            )
        self.max_steps: Final = max_steps
        self._other_codebooks = cfg.other_codebooks
        self._text_vocab = cfg.text_out_vocab_size
        self._pieces = _piece_table(tokenizer)
        self._forced: deque[int] = deque()
        self._forced_this_step = False
        self.load_seconds: float = load_seconds
        self._caches = window_cache(lm)
        self._gen: LmGen
        self._rng: RandomStream
        self._index = 0
        self.rolls = 0  # how many times the token buffer has been rolled
        if warmup_steps is None:
            warmup_steps = max(MIN_WARMUP_STEPS, self._keep + 1)
        self.warmup_seconds: float = self._warm_up(warmup_steps)

    # -- public API --------------------------------------------------------------------------

    def step(self, pcm: np.ndarray) -> StepResult:
        """Run one frame: ``pcm`` (1920 float32) in, text and 1920 samples out.

        Raises :class:`FrameError` for a wrong frame (nothing is consumed), and
        ``RuntimeError`` when called off the MLX thread.
        """
        self._check_thread()
        frame = check_frame(pcm)
        start = time.perf_counter()
        import mlx.core as mx

        if self._gen.step_idx >= self._gen.max_steps:
            self._roll()
        codes = np.asarray(self._codec.encode_step(frame)).reshape(-1)
        other = mx.array(codes[: self._other_codebooks][None, :].astype(np.int32))
        self._forced_this_step = False
        self._lm.transformer_cache = self._caches  # this conversation's memory, see __init__
        with self._rng:
            text_tokens, _ = self._gen.step(other)
            audio_tokens = self._gen.last_audio_tokens()
            token = int(text_tokens.item())
        if audio_tokens is None:
            out, ready = _SILENCE, False
        else:
            decoded = self._codec.decode_step(np.asarray(audio_tokens).reshape(-1))
            out, ready = np.asarray(decoded, dtype=np.float32).reshape(-1), True
        index = self._index
        self._index += 1
        return StepResult(
            index=index,
            text_token=token,
            text=self._pieces[token] if token < len(self._pieces) else None,
            pcm=out,
            audio_ready=ready,
            forced=self._forced_this_step,
            seconds=time.perf_counter() - start,
        )

    def force_text(self, text: str) -> int:
        """Make the model say ``text`` next, paced like speech; return the steps queued.

        The text is tokenised with the model's tokenizer and laid out the way
        Moshi's text stream looks in training: for each word, an end-of-padding
        token, the word's tokens, then padding until the word has lasted about
        as long as it takes to say (:data:`SPEECH_CHARS_PER_SECOND`). Each
        queued token replaces the sampled text token of one coming step, and the
        depformer then samples the audio for that forced text. Queues add up;
        :meth:`reset` clears them. Raises :class:`UsageError` for text the model
        cannot represent.
        """
        self._check_thread()
        stream = self._pace(self._tokenizer.encode(text))
        self._forced.extend(stream)
        return len(stream)

    def reset(self) -> None:
        """Start a new conversation: fresh LM, codec and sampler state, same seed."""
        self._check_thread()
        from moshi_mlx.models.generate import LmGen

        for cache in (*self._caches, *self._lm.depformer_cache):
            cache.reset()
        self._codec.reset()
        self._gen = LmGen(
            self._lm,
            max_steps=self.max_steps,
            text_sampler=self.sampling.text_sampler(),
            audio_sampler=self.sampling.audio_sampler(),
            on_text_hook=self._on_text,
        )
        self._rng = RandomStream(self.seed)
        self._forced.clear()
        self._index = 0
        self.rolls = 0

    @property
    def steps(self) -> int:
        """Frames stepped since the conversation started."""
        return self._index

    @property
    def pending_forced_steps(self) -> int:
        """Forced text tokens still queued."""
        return len(self._forced)

    # -- internals ---------------------------------------------------------------------------

    def _roll(self) -> None:
        """Make room in ``LmGen``'s token buffer by keeping only its recent tail.

        ``LmGen.gen_sequence`` holds every token of the conversation, and
        ``LmGen`` raises "reached max-steps" when it is full. But a step only
        reads back ``max_delay + 1`` frames: the previous text token and, per
        codebook with delay ``d``, the audio token at ``step - 1 - d``;
        ``last_audio_tokens`` reads ``step - 1 - max_delay``. Everything older
        lives on only in the transformer's KV cache, which is separate. So the
        engine copies the last ``max_delay + 1`` columns to the front of a fresh
        buffer and moves ``step_idx`` back by the same amount. The next step
        sees exactly the tokens it would have seen in an endless buffer, and the
        KV cache is untouched: the output is identical to an uncapped run (a
        test checks it bit for bit), and the user hears no seam at all.
        """
        import mlx.core as mx

        gen = self._gen
        tail = gen.gen_sequence[:, :, gen.step_idx - self._keep : gen.step_idx]
        fresh = mx.full(gen.gen_sequence.shape, gen.ungenerated_token, dtype=mx.int32)
        fresh[:, :, : self._keep] = tail
        mx.eval(fresh)
        gen.gen_sequence = fresh
        gen.step_idx = self._keep
        self.rolls += 1

    def _on_text(self, text_tokens: mx.array) -> None:
        """LmGen's text hook: overwrite the sampled token with a forced one, if queued.

        This is how moshi_mlx's own TTS forces text (``models/tts.py``): the hook
        runs after text sampling and before the depformer, and the array it is
        given is the one LmGen stores and feeds on, so an in-place write steers
        both the audio of this step and the text input of the next.
        """
        if self._forced:
            text_tokens[:] = self._forced.popleft()
            self._forced_this_step = True

    def _pace(self, ids: list[int]) -> list[int]:
        for token in ids:
            if not 0 <= token < min(self._text_vocab, len(self._pieces)):
                raise UsageError(
                    f"cannot force text: token {token} is outside the model's text "
                    f"vocabulary of {self._text_vocab}: tokenizer and model do not match"
                )
        words: list[list[int]] = []
        for token in ids:
            if not words or (self._pieces[token] or "").startswith(" "):
                words.append([])
            words[-1].append(token)
        steps_per_char = (1 / FRAME_SECONDS) / SPEECH_CHARS_PER_SECOND
        stream: list[int] = []
        for word in words:
            chars = sum(len(self._pieces[token] or "?") for token in word)
            stream.append(TEXT_EPAD_ID)
            stream.extend(word)
            length = 1 + len(word)
            stream.extend([TEXT_PAD_ID] * max(0, math.ceil(chars * steps_per_char) - length))
        return stream

    def _warm_up(self, steps: int) -> float:
        """Run ``steps`` silent frames through everything, then reset; return the seconds."""
        start = time.perf_counter()
        self.reset()
        silence = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        for _ in range(steps):
            self.step(silence)
        self.reset()
        return time.perf_counter() - start

    def _check_thread(self) -> None:
        if threading.get_ident() != self.thread_ident:
            raise RuntimeError(
                f"MoshiEngine called from thread {threading.get_ident()}, but it lives on the "
                f"MLX thread {self.thread_ident}: go through the MLX worker (worker.run)"
            )


def _piece_table(tokenizer: TextTokenizer) -> list[str | None]:
    """Every token's printable piece, looked up once.

    None for padding and control tokens, and for byte-fallback pieces that are
    not a whole character (a UTF-8 byte of a longer sequence); an ASCII byte
    piece (``<0x5A>``) becomes its character.
    """
    is_control = getattr(tokenizer, "is_control", None)
    is_byte = getattr(tokenizer, "is_byte", None)
    table: list[str | None] = []
    for token in range(tokenizer.vocab_size()):
        piece: str | None = tokenizer.id_to_piece(token)
        if token in (TEXT_PAD_ID, TEXT_EPAD_ID) or (is_control and is_control(token)):
            piece = None
        elif is_byte and is_byte(token):
            value = int(piece[3:-1], 16)  # type: ignore[index]
            piece = chr(value) if value < ASCII_END else None
        else:
            piece = piece.replace(WORD_START, " ")  # type: ignore[union-attr]
        table.append(piece)
    return table


def load_engine(
    model: str | Path | Any,
    *,
    sampling: SamplingConfig = SamplingConfig(),  # noqa: B008 - frozen, shared safely
    quantize: str | int | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    warmup_steps: int | None = None,
) -> MoshiEngine:
    """Resolve ``model`` (a name, a directory, or a ``ResolvedModel``), load it, warm it up.

    Runs on the MLX thread (all loading is MLX work). ``quantize`` ("q4", "q8",
    "bf16", 4, 8 or None: the checkpoint's own) and ``progress(done_bytes,
    total_bytes)`` go to ``xswarm.models.load_lm``; ``progress`` is called on
    the MLX thread, so it must be thread-safe and quick (a rich progress bar
    is). ``engine.load_seconds`` is the time spent resolving and loading,
    ``engine.warmup_seconds`` the warm-up after it. Raises whatever the models
    module raises (``ModelError`` / ``UsageError``) for missing or bad weights.
    """
    from xswarm import models

    bits = QUANTIZE_BITS.get(quantize) if isinstance(quantize, str) else quantize
    if isinstance(quantize, str) and quantize not in QUANTIZE_BITS:
        raise UsageError(f"unknown quantisation {quantize!r}: use q4, q8 or bf16")
    start = time.perf_counter()
    resolved = models.resolve(str(model)) if isinstance(model, (str, Path)) else model
    lm, cfg = models.load_lm(resolved, quantize=bits, progress=progress)
    tokenizer = models.load_text_tokenizer(resolved)
    codec = models.load_codec(
        resolved, num_codebooks=max(cfg.generated_codebooks, cfg.other_codebooks)
    )
    return MoshiEngine(
        lm,
        codec,
        tokenizer,
        sampling=sampling,
        max_steps=max_steps,
        warmup_steps=warmup_steps,
        load_seconds=time.perf_counter() - start,
    )


async def open_engine(worker: MlxWorker, model: str | Path | Any, **options: Any) -> MoshiEngine:
    """Load an engine on ``worker``'s MLX thread (see :func:`load_engine` for ``options``)."""
    engine: MoshiEngine = await worker.run(functools.partial(load_engine, model, **options))
    return engine
