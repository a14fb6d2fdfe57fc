"""Streaming Kyutai TTS on moshi_mlx: speak an answer while its text is still arriving.

Kyutai's TTS (delayed streams modelling) co-generates a padded text stream and
audio from plain words: at each 80 ms step the model says whether the next step
starts a new word or pads, and a state machine feeds it the next word's tokens
(plus, on a second stream, the word ``second_stream_ahead`` words later). The
audio trails the text by ``tts_config.audio_delay`` (1.28 s, 16 steps) plus the
acoustic delay of the codebooks (2 steps).

moshi_mlx's ``TTSModel.generate`` takes every word up front and runs until the
state machine says the text has ended. A conversation cannot wait for the whole
answer, so :class:`TtsStream` drives ``LmGen`` itself, one step per call, and
reuses moshi_mlx's pieces for everything else: ``TTSModel`` (as the model's
description: state machine, delays, voice file suffix, conditioning attributes),
``StateMachine.process`` for every text decision, ``script_to_entries`` to turn
text into words. The one difference is starvation: when the LLM has not yet
delivered enough words for the state machine to take the next one (it needs
``second_stream_ahead`` words of lookahead) and :meth:`TtsStream.end` was not
called, the step is forced to pad instead of starting a word, so the model
breathes instead of deciding the text is over. With all the text pushed and
ended before the first step, the tokens are exactly ``TTSModel.generate``'s for
the same seed (a test checks it).

Threading: MLX is not thread-safe; every method runs on the thread that built
the stream (the MLX worker thread); a call from any other thread raises
``RuntimeError`` before touching MLX.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from xswarm.audio import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE
from xswarm.errors import ModelError, UsageError
from xswarm.models.registry import TINY_RANDOM

if TYPE_CHECKING:
    import mlx.core as mx
    from moshi_mlx.models.generate import LmGen
    from moshi_mlx.models.lm import Lm
    from moshi_mlx.models.tts import State, TTSModel
    from sentencepiece import SentencePieceProcessor

    from xswarm.models import ResolvedModel
    from xswarm.models.load import Codec

DEFAULT_TTS_MODEL: Final = "tts-1.6b-en_fr"
TINY_ALIAS: Final = {"tiny-random": TINY_RANDOM["tts"]}  # "tiny-random" means the TTS one here
DEFAULT_VOICE: Final = "expresso/ex03-ex01_happy_001_channel1_334s.wav"  # DSM scripts' default
VOICE_REPO: Final = "kyutai/tts-voices"  # where published voice embeddings live
FRAME_RATE: Final = 1 / FRAME_SECONDS  # 12.5 Hz: Mimi frames (and model steps) per second

# Generation settings: moshi_mlx run_tts.py's defaults (what Kyutai ships and tuned).
TEMPERATURE: Final = 0.6  # text and audio
CFG_COEF: Final = 2.0  # the published model is CFG-distilled: this is a conditioning value
MAX_PADDING: Final = 8  # steps of padding in a row before a new word is forced
INITIAL_PADDING: Final = 2  # steps before the first word, so it is not clipped
FINAL_PADDING: Final = 4  # steps of audio kept after the text ends (run_tts's trim)
PADDING_BETWEEN: Final = 1  # forced pad steps between words: clearer articulation
MAX_STEPS: Final = 30_000  # LmGen's token buffer (moshi_mlx's max_gen_length): 40 min per answer

_VOICE_NAME_RE: Final = re.compile(r"^[\w.\-]+(/[\w.\-]+)*$")  # a relative repo path, no ".."


@dataclass(frozen=True)
class TtsFrame:
    """One 80 ms frame of speech."""

    pcm: np.ndarray  # float32, shape (FRAME_SAMPLES,), 24 kHz
    words: tuple[str, ...]  # words whose audio starts in this frame, in text order


class _MimiRate:
    """What ``TTSModel`` needs of a codec: the frame rate (the stream owns the real codec).

    ``reset_all`` lets moshi_mlx's own ``generate`` run on the same model for
    comparisons (it resets the codec it is given, which decodes nothing here).
    """

    frame_rate: float = FRAME_RATE
    sample_rate: int = SAMPLE_RATE

    def reset_all(self) -> None:
        pass


class TtsStream:
    """One voice speaking one answer at a time, a step per call.

    Call :meth:`start` for each answer, :meth:`push` its text as it streams,
    :meth:`end` when the text is complete, and :meth:`step` once per 80 ms
    frame until :attr:`done`. :meth:`cancel` (barge-in) drops the answer.
    NOT thread-safe: every method runs on the MLX thread that built it.

    Each :meth:`start` re-seeds the sampler with ``seed``: the same text gives
    the same audio. ``push``/``end`` with no answer started (or after
    :meth:`cancel`) are ignored: a late LLM delta after a barge-in is harmless.
    """

    sample_rate: int = SAMPLE_RATE

    def __init__(
        self,
        lm: Lm,
        codec: Codec,
        tokenizer: SentencePieceProcessor,
        config: Mapping[str, Any],
        voice: Path | None,
        *,
        seed: int,
        temperature: float = TEMPERATURE,
        cfg_coef: float = CFG_COEF,
        max_padding: int = MAX_PADDING,
        initial_padding: int = INITIAL_PADDING,
        final_padding: int = FINAL_PADDING,
        padding_between: int = PADDING_BETWEEN,
        max_steps: int = MAX_STEPS,
        load_seconds: float = 0.0,
    ) -> None:
        from moshi_mlx.models.tts import TTSModel

        from xswarm.inference.moshi import window_cache

        self.thread_ident: Final = threading.get_ident()
        self._lm = lm
        self._codec = codec
        self.seed: Final = seed
        self.voice: Final = voice  # the voice embedding file
        self.load_seconds = load_seconds
        self._max_steps = max_steps
        self._padding_between = padding_between
        self.model: TTSModel = TTSModel(
            lm,
            _MimiRate(),  # type: ignore[arg-type]
            tokenizer,
            temp=temperature,
            final_padding=final_padding,
            initial_padding=initial_padding,
            max_padding=max_padding,
            raw_config=dict(config),
        )
        self._zero = self.model.machine.token_ids.zero
        self._max_delay = max(lm.delays)
        self._lookahead = self.model.machine.second_stream_ahead
        cfg_value = cfg_coef if self.model.valid_cfg_conditionings else None
        voices = [voice] if voice is not None and self.model.multi_speaker else []
        self._ct, self._cross = self._conditions(voices, cfg_value)
        self._caches = window_cache(lm)
        self._gen: LmGen | None = None
        self._state: State | None = None
        self._rng: Any = None
        self._pending = ""  # pushed text not yet made into words (a partial last word)
        self._ended = False
        self._speaker_marked = False  # the main speaker token went with the first word
        self._offset = 0  # model steps in this answer
        self._emitted = 0  # audio frames returned in this answer
        self._words_at: defaultdict[int, list[str]] = defaultdict(list)
        self._done = False
        self.last_codes: np.ndarray | None = None  # the audio codes of the last frame returned
        self.warmup_seconds = self._warm_up()

    # -- public API --------------------------------------------------------------------------

    def start(self) -> None:
        """Begin a new answer: fresh caches, codec, state machine and sampler seed."""
        self._check_thread()
        from moshi_mlx.models.generate import LmGen
        from moshi_mlx.utils.sampling import Sampler

        from xswarm.inference.sampling import RandomStream

        for cache in (*self._caches, *self._lm.depformer_cache):
            cache.reset()
        self._codec.reset()
        self._gen = LmGen(
            self._lm,
            max_steps=self._max_steps,
            text_sampler=Sampler(temp=self.model.temp),
            audio_sampler=Sampler(temp=self.model.temp),
            cfg_coef=1.0,
            on_text_hook=self._on_text,
            on_audio_hook=self._on_audio,
        )
        self._state = self.model.machine.new_state([])
        self._rng = RandomStream(self.seed)
        self._pending = ""
        self._ended = False
        self._speaker_marked = False
        self._offset = 0
        self._emitted = 0
        self._words_at.clear()
        self._done = False
        self.last_codes = None

    def push(self, text: str) -> None:
        """Queue more answer text; a trailing partial word waits for the next push or end.

        Ignored with no answer started, after :meth:`cancel`, or after :meth:`end`.
        """
        self._check_thread()
        if self._state is None or self._ended:
            return
        self._pending += text
        cut = _last_boundary(self._pending)
        if cut > 0:
            self._queue(self._pending[:cut])
            self._pending = self._pending[cut:]

    def end(self) -> None:
        """The answer's text is complete: speak what is queued, then finish."""
        self._check_thread()
        if self._state is None or self._ended:
            return
        self._queue(self._pending)
        self._pending = ""
        self._ended = True

    def step(self) -> TtsFrame | None:
        """Run one 80 ms model step; return its frame, or None while there is no audio.

        None during the text-to-audio delay at the start of an answer, with no
        answer started, and once :attr:`done`. Raises ``ModelError`` if an answer
        outgrows ``max_steps`` (40 minutes by default).
        """
        self._check_thread()
        if self._gen is None or self._done:
            return None
        import mlx.core as mx

        if self._gen.step_idx >= self._gen.max_steps:
            raise ModelError(
                f"TTS answer longer than {self._max_steps} steps "
                f"({self._max_steps * FRAME_SECONDS:.0f} s): split it"
            )
        missing = self._lm.n_q - self._lm.dep_q
        other = mx.full((1, missing), self._zero, dtype=mx.int64)
        self._lm.transformer_cache = self._caches  # this stream's memory (see window_cache)
        with self._rng:
            self._gen.step(other, ct=self._ct, cross_attention_src=self._cross)
            frame = self._gen.last_audio_tokens()
        self._offset += 1
        if frame is None:
            return None
        codes = np.array(frame).reshape(-1)
        if (codes == self._zero).any():  # before audio_delay: the model's text-only steps
            return None
        pcm = np.asarray(self._codec.decode_step(codes), dtype=np.float32).reshape(-1)
        index = self._emitted
        self._emitted += 1
        self.last_codes = codes
        words = tuple(self._words_at.pop(index, ()))
        state = self._state
        assert state is not None
        if (
            self._ended
            and state.end_step is not None
            and self._emitted >= state.end_step + self.model.final_padding
        ):
            self._done = True
        return TtsFrame(pcm=pcm, words=words)

    @property
    def done(self) -> bool:
        """After :meth:`end`: every word spoken and the final padding produced."""
        return self._done

    def cancel(self) -> None:
        """Barge-in: drop the answer (text, state, audio); the next :meth:`start` begins fresh."""
        self._check_thread()
        self._gen = None
        self._state = None
        self._pending = ""
        self._ended = False
        self._words_at.clear()
        self._done = False

    @property
    def delay_steps(self) -> int:
        """Steps from the first model step to the first audio frame (text delay + acoustic)."""
        return self.model.delay_steps + self._max_delay + 1

    @property
    def queued_words(self) -> int:
        """Words pushed but not yet taken by the model (the partial last word not counted)."""
        state = self._state
        return 0 if state is None else sum(1 for entry in state.entries if entry.tokens)

    # -- internals ---------------------------------------------------------------------------

    def _conditions(self, voices: list[Path], cfg_value: float | None) -> tuple[Any, Any]:
        """The summed LUT conditions and the cross-attention source, as ``generate`` builds them."""
        import mlx.core as mx
        from moshi_mlx.modules.conditioner import ConditionTensor

        provider = self._lm.condition_provider
        if provider is None:
            return None, None
        attributes = self.model.make_condition_attributes(voices, cfg_value)
        ct = None
        for key, value in attributes.text.items():
            if value is None or key not in provider.conditioners:
                continue  # no such conditioner / no CFG value: generate would fail here
            tensor = provider.condition_tensor(key, value).tensor.squeeze(0)
            ct = tensor if ct is None else ct + tensor
        cross = None
        for key, value in attributes.tensor.items():
            cross = provider.conditioners[key].condition(value)
        if cross is None and self._lm.cfg.transformer.cross_attention:
            raise ModelError("this TTS model needs a voice (speaker conditioning) but got none")
        return (None if ct is None else ConditionTensor(mx.stack([ct], axis=0))), cross

    def _queue(self, text: str) -> None:
        from moshi_mlx.models.tts import script_to_entries

        state = self._state
        assert state is not None
        entries = script_to_entries(
            self.model.tokenizer,
            self.model.machine.token_ids,
            FRAME_RATE,
            [text],
            multi_speaker=self.model.multi_speaker and not self._speaker_marked,
            padding_between=self._padding_between,
        )
        if any(entry.tokens for entry in entries):
            self._speaker_marked = True
        state.entries.extend(entries)

    def _starved(self, state: State) -> bool:
        """Not ended, and too few words queued for the state machine to take the next one."""
        return not self._ended and self.queued_words <= self._lookahead

    def _on_text(self, text_tokens: mx.array) -> None:
        """LmGen's text hook: the state machine decides the text input (moshi_mlx's logic).

        When starved, the model's choice is replaced by a pad and the state
        machine is told it may still pad, so it neither takes a word it does
        not have nor ends the text.
        """
        import mlx.core as mx

        state = self._state
        assert state is not None
        token = int(text_tokens.tolist()[0][0])
        if self._starved(state):
            token = self.model.machine.token_ids.pad
            state.remaining_padding = max(state.remaining_padding, 1)
        out, consumed = self.model.machine.process(self._offset, state, token)
        if consumed:
            self._words_at[self._offset].append(state.transcript[-1][0])
        text_tokens[:] = mx.array([[out]], dtype=mx.int64)

    def _on_audio(self, audio_tokens: mx.array) -> None:
        """LmGen's audio hook: no audio before each codebook's delay (as ``generate``)."""
        for q in range(audio_tokens.shape[1]):
            if self._offset < self._lm.delays[q] + self.model.delay_steps:
                audio_tokens[:, q] = self._zero

    def _warm_up(self) -> float:
        """Two steps and one decode, so the first answer does not pay MLX's lazy compilation."""
        started = time.perf_counter()
        self.start()
        self.push("Hello there, how are you? ")
        self.end()
        self.step()
        self.step()
        self._codec.decode_step(np.zeros(self._lm.dep_q, dtype=np.int32))
        self.cancel()
        return time.perf_counter() - started

    def _check_thread(self) -> None:
        if threading.get_ident() != self.thread_ident:
            raise RuntimeError(
                f"TtsStream called from thread {threading.get_ident()}, but it lives on the "
                f"MLX thread {self.thread_ident}: go through the MLX worker (worker.run)"
            )


def _last_boundary(text: str) -> int:
    """Where the complete words of ``text`` end: after its last whitespace, before an open tag.

    A ``<break time="0.5s"/>`` tag holds a space, so text from an unclosed
    ``<`` on waits for its ``>``.
    """
    open_tag = text.rfind("<")
    if open_tag > text.rfind(">"):
        text = text[:open_tag]
    for index in range(len(text) - 1, -1, -1):
        if text[index].isspace():
            return index + 1
    return 0


def voice_path(resolved: ResolvedModel, voice: str | None) -> Path:
    """The local voice embedding file for ``voice`` (a kyutai/tts-voices name or a file path).

    Names resolve, in order, in the model directory's ``voices/`` (generated
    and hand-made checkpoints) and in the Hugging Face cache of the voice
    repo; never the network. Raises :class:`ModelError` naming what to fetch.
    """
    from xswarm.models.registry import TTS_VOICES_SUBDIR
    from xswarm.models.resolve import hf_cache_dir

    name = voice or DEFAULT_VOICE
    candidate = Path(name).expanduser()
    if name.endswith(".safetensors") or name.startswith(("/", ".", "~")):
        if candidate.is_file():
            return candidate
        raise ModelError(f"voice file {name} does not exist: give a voice embedding file")
    model_id = resolved.config.get("model_id")
    if not isinstance(model_id, Mapping) or "sig" not in model_id or "epoch" not in model_id:
        raise ModelError(
            f"{resolved.config_path or resolved.name}: no model_id (sig, epoch) to name "
            "its voice files (not a Kyutai TTS config?)"
        )
    if not _VOICE_NAME_RE.match(name) or ".." in name.split("/"):
        raise UsageError(
            f"voice {name!r} is not a kyutai/tts-voices name (like {DEFAULT_VOICE}) "
            "nor a .safetensors file"
        )
    filename = f"{name}.{model_id['sig']}@{model_id['epoch']}.safetensors"
    local = resolved.directory / TTS_VOICES_SUBDIR / filename
    if local.is_file():
        return local
    repo = resolved.spec.voice_repo or VOICE_REPO
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir())
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    pull = (
        f"`xswarm models pull {resolved.name} --voice {name}`"
        if resolved.spec.repo is not None
        else f"`huggingface-cli download {repo} {filename}`"
    )
    raise ModelError(
        f"voice {name!r} of TTS model {resolved.name} is not here "
        f"({filename} not in {resolved.directory / TTS_VOICES_SUBDIR} nor in the Hugging Face "
        f"cache of {repo}): run {pull}, or give a voice embedding file"
    )


def load_tts(model: str, voice: str | None, *, seed: int | None = None) -> TtsStream:
    """Resolve, load and warm up a Kyutai TTS model with a voice; runs on the caller's thread.

    ``model``: a registry name (``tts-1.6b-en_fr``, ``tiny-random-tts``;
    ``tiny-random`` means ``tiny-random-tts`` here) or a checkpoint directory.
    ``voice``: a ``kyutai/tts-voices`` name (the persona's ``[voice] tts``), a
    path to a voice embedding file, or None for :data:`DEFAULT_VOICE`.
    ``seed``: the sampler seed of every answer (None: drawn at random).
    Missing weights or voice: :class:`ModelError`, one line naming the fix;
    not a TTS model: :class:`UsageError`. Call it on the MLX thread.
    """
    import secrets

    import mlx.core as mx

    from xswarm import models

    started = time.perf_counter()
    name = TINY_ALIAS.get(model, model)
    resolved = models.resolve(name)
    if resolved.kind != "tts" or "tts_config" not in resolved.config:
        raise UsageError(
            f"model {model} is a {resolved.kind} model, not a Kyutai TTS: use "
            f"{DEFAULT_TTS_MODEL}, tiny-random-tts or a TTS checkpoint directory"
        )
    path = voice_path(resolved, voice)
    lm, cfg = models.load_lm(resolved)
    tokenizer = models.load_text_tokenizer(resolved)
    codec = models.load_codec(resolved, num_codebooks=cfg.generated_codebooks)
    try:
        embedding = mx.load(str(path))
    except (RuntimeError, ValueError, OSError) as error:
        raise ModelError(f"{path}: not a voice embedding file ({error})") from None
    if "speaker_wavs" not in embedding or embedding["speaker_wavs"].ndim != 3:
        raise ModelError(f"{path}: not a voice embedding file (no 3-d speaker_wavs tensor)")
    return TtsStream(
        lm,
        codec,
        tokenizer,
        resolved.config,
        path,
        seed=secrets.randbits(32) if seed is None else seed,
        load_seconds=time.perf_counter() - started,
    )


__all__ = [
    "DEFAULT_VOICE",
    "FRAME_SAMPLES",
    "TtsFrame",
    "TtsStream",
    "load_tts",
    "voice_path",
]
