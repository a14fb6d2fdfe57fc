"""How the Moshi engine draws its tokens: temperatures, top-k, and a seed.

A :class:`SamplingConfig` is chosen by the caller (CLI options, a persona) and
handed to the engine. The seed makes a session reproducible: the same seed and
the same input frames give the same text tokens and the same audio.

moshi_mlx's samplers draw from MLX's *global* random state
(``mx.random.state``), shared by everything that runs on the MLX thread. So
that two engines (Moshi and STT, say) cannot disturb each other's sequence,
each engine keeps its own key in a :class:`RandomStream` and swaps it into the
global state only for the duration of its own step.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from xswarm.errors import UsageError

if TYPE_CHECKING:
    import mlx.core as mx
    from moshi_mlx.utils.sampling import Sampler

# Moshi's published defaults (kyutai-labs/moshi, LMGen): what the model was tuned with.
DEFAULT_TEMPERATURE: Final = 0.8  # audio tokens
DEFAULT_TEXT_TEMPERATURE: Final = 0.7  # text tokens: a little more conservative than audio
DEFAULT_TOP_K: Final = 250  # audio tokens, out of Mimi's 2048 codes
DEFAULT_TEXT_TOP_K: Final = 25  # text tokens, out of the 32k/48k SentencePiece vocabulary
SEED_BITS: Final = 32  # a drawn seed fits in a uint32, like mx.random.seed expects


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters for one conversation.

    A temperature of 0 means greedy (argmax) decoding. ``seed=None`` draws a
    fresh random seed when the engine starts; the engine reports the seed it
    used (``MoshiEngine.seed``) so that a session can be replayed.
    """

    temperature: float = DEFAULT_TEMPERATURE
    text_temperature: float = DEFAULT_TEXT_TEMPERATURE
    top_k: int = DEFAULT_TOP_K
    text_top_k: int = DEFAULT_TEXT_TOP_K
    seed: int | None = None

    def validated(self, *, text_vocab: int, audio_vocab: int) -> SamplingConfig:
        """Return this config with a concrete seed, or raise :class:`UsageError`.

        ``text_vocab`` and ``audio_vocab`` are the sizes the model samples from;
        top-k must lie strictly between 0 and them (moshi_mlx's top-k sampler
        rejects anything else with a bare ValueError deep in a step).
        """
        for name, value in (
            ("temperature", self.temperature),
            ("text_temperature", self.text_temperature),
        ):
            if not value >= 0.0:  # also rejects NaN
                raise UsageError(f"sampling {name} must be 0 or more, got {value}")
        for name, value, vocab in (
            ("top_k", self.top_k, audio_vocab),
            ("text_top_k", self.text_top_k, text_vocab),
        ):
            if not 0 < value < vocab:
                raise UsageError(
                    f"sampling {name} must be between 1 and {vocab - 1} "
                    f"(this model's vocabulary), got {value}"
                )
        seed = self.seed
        if seed is None:
            seed = secrets.randbits(SEED_BITS)
        elif not 0 <= seed < 2**64:
            raise UsageError(f"sampling seed must be between 0 and 2**64 - 1, got {seed}")
        return SamplingConfig(
            temperature=self.temperature,
            text_temperature=self.text_temperature,
            top_k=self.top_k,
            text_top_k=self.text_top_k,
            seed=seed,
        )

    def text_sampler(self) -> Sampler:
        from moshi_mlx.utils.sampling import Sampler

        return Sampler(temp=self.text_temperature, top_k=self.text_top_k)

    def audio_sampler(self) -> Sampler:
        from moshi_mlx.utils.sampling import Sampler

        return Sampler(temp=self.temperature, top_k=self.top_k)


class RandomStream:
    """A private MLX random key, swapped into the global state around a step.

    Use as ``with stream: ...`` on the MLX thread. On entry the engine's key
    becomes ``mx.random.state[0]``; on exit the advanced key is saved back and
    whatever key was there before is restored, so other MLX users on the same
    thread neither see nor move this engine's sequence.
    """

    def __init__(self, seed: int) -> None:
        import mlx.core as mx

        self._key: mx.array = mx.random.key(seed)
        self._saved: mx.array | None = None

    def __enter__(self) -> None:
        import mlx.core as mx

        self._saved = mx.random.state[0]
        mx.random.state[0] = self._key

    def __exit__(self, *exc_info: object) -> None:
        import mlx.core as mx

        self._key = mx.random.state[0]
        mx.random.state[0] = self._saved
        self._saved = None
