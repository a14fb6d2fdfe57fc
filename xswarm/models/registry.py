"""The models xswarm knows by name: Kyutai's published checkpoints and the generated ones.

Each :class:`ModelSpec` says where a model comes from (a Hugging Face repo, or
xswarm's own generator), which files make it up, and what it is (kind and
quantisation), so that ``xswarm models list`` can show it and resolution can
find its files. This module is plain data and the standard library: the CLI
imports it for ``--help`` and name completion without paying for MLX.

What was checked and what was not (no hub access from here):

- The moshiko/moshika MLX repos and their file names (``model.q4.safetensors``,
  ``model.q8.safetensors``, ``model.safetensors``, the Mimi file
  ``tokenizer-e351c8d8-checkpoint125.safetensors`` and
  ``tokenizer_spm_32k_3.model``) are the ones moshi_mlx's ``local.py`` /
  ``local_web.py`` download. These repos publish no ``config.json``: moshi_mlx
  uses its ``config_v0_1()``; :data:`MOSHIKO_CONFIG` is that preset written in
  the published config format (checked equal by the tests).
- The STT MLX repos read ``config.json`` and then ``mimi_name``,
  ``tokenizer_name`` and ``moshi_name`` (default ``model.safetensors``) from it
  (delayed-streams-modeling ``scripts/stt_from_file_mlx.py``). The file names
  listed below (``mimi-pytorch-e351c8d8@125.safetensors``,
  ``tokenizer_en_fr_audio_8000.model``, ``tokenizer_en_audio_4000.model``) are
  those of the PyTorch/candle STT repos, seen in public code; that the ``-mlx``
  repos use the same names is an assumption. Resolution always re-reads the
  names from the downloaded ``config.json``, so a wrong guess here only
  affects what ``pull`` fetches first, not loading.
- ``kyutai/tts-1.6b-en_fr`` is a PyTorch-format checkpoint (moshi_mlx's
  ``run_tts.py`` loads it with ``load_pytorch_weights``); the weights file name
  ``dsm_tts_1e68beda@240.safetensors`` and the tokenizer
  ``tokenizer_spm_8k_en_fr_audio.model`` come from public code, unconfirmed.
  Its voices live in ``kyutai/tts-voices``, fetched one by one by name.
- Sizes are approximate: for the LMs computed from the architecture
  (parameters x bytes per parameter, quantisation scales included), for the
  2.6B STT and Mimi files the byte counts seen in public manifests.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, Final, Literal

from xswarm.errors import UsageError

Kind = Literal["moshi", "stt", "tts"]
Quantization = Literal["q4", "q8", "bf16"]
WeightsFormat = Literal["mlx", "pytorch"]

MIMI_FILE: Final = "tokenizer-e351c8d8-checkpoint125.safetensors"  # Mimi in the moshiko repos
MIMI_STT_FILE: Final = "mimi-pytorch-e351c8d8@125.safetensors"  # same codec, STT repos' name
MOSHI_TOKENIZER_FILE: Final = "tokenizer_spm_32k_3.model"  # 32000-piece SentencePiece
CONFIG_FILE: Final = "config.json"

# Lm weights file name per quantisation, as moshi_mlx names them.
LM_FILES: Final[Mapping[str, str]] = {
    "bf16": "model.safetensors",
    "q8": "model.q8.safetensors",
    "q4": "model.q4.safetensors",
}
# Quantisation group sizes moshi_mlx uses (bits -> group size): dims must divide by them.
GROUP_SIZES: Final[Mapping[int, int]] = {4: 32, 8: 64}

MIMI_BYTES: Final = 384_644_900  # the published Mimi file, float32 (a public manifest)
MB: Final = 1_000_000
GB: Final = 1_000_000_000

# moshi_mlx.models.config_v0_1() (the 7B Moshi) in the published config.json format,
# for the MLX moshiko/moshika repos that ship no config. LmConfig.from_config_dict
# turns it into a config equal to config_v0_1() (tests/test_models.py checks it).
MOSHIKO_CONFIG: Final[Mapping[str, Any]] = {
    "model_type": "moshi",
    "dim": 4096,
    "text_card": 32000,
    "existing_text_padding_id": 3,
    "n_q": 16,
    "dep_q": 8,
    "card": 2048,
    "num_heads": 32,
    "num_layers": 32,
    "hidden_scale": 4.125,
    "causal": True,
    "layer_scale": None,
    "context": 3000,
    "max_period": 10000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "depformer_dim": 1024,
    "depformer_num_heads": 16,
    "depformer_num_layers": 6,
    "depformer_dim_feedforward": 4096,
    "depformer_context": 8,
    "depformer_max_period": 10000,
    "depformer_multi_linear": True,
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
    "conditioners": {},
    "cross_attention": False,
    "mimi_name": MIMI_FILE,
    "tokenizer_name": MOSHI_TOKENIZER_FILE,
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model xswarm can resolve by name.

    ``files`` are the names inside the repo (or generated directory) that
    ``pull`` fetches and resolution requires; ``lm_file``, ``codec_file`` and
    ``tokenizer_file`` say which is which when there is no ``config.json``.
    """

    name: str
    kind: Kind
    quantization: Quantization
    description: str
    lm_file: str
    codec_file: str
    tokenizer_file: str
    approx_bytes: int
    repo: str | None = None  # Hugging Face repo; None for generated models
    has_config: bool = True  # a config.json is published (else builtin_config applies)
    builtin_config: Mapping[str, Any] | None = None
    weights_format: WeightsFormat = "mlx"  # "pytorch": loaded with load_pytorch_weights
    voice_repo: str | None = None  # TTS voice embeddings, fetched by voice name
    generated: bool = False  # built by xswarm.models.tiny, never downloaded
    on_demand: bool = False  # generated only by ``xswarm models pull`` (large)

    @property
    def files(self) -> tuple[str, ...]:
        names = [self.lm_file, self.codec_file, self.tokenizer_file]
        if self.has_config:
            names.insert(0, CONFIG_FILE)
        return tuple(names)

    @property
    def pull_command(self) -> str:
        return f"xswarm models pull {self.name}"


def _moshi(name: str, voice: str, quant: Quantization, approx_lm: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        kind="moshi",
        quantization=quant,
        description=f"Moshi 7B, {voice} voice, {quant} (MLX)",
        repo=f"kyutai/{name}",
        lm_file=LM_FILES[quant],
        codec_file=MIMI_FILE,
        tokenizer_file=MOSHI_TOKENIZER_FILE,
        approx_bytes=approx_lm + MIMI_BYTES,
        has_config=False,
        builtin_config=MOSHIKO_CONFIG,
    )


# Computed from config_v0_1: parameters x bytes, q8 = group 64, q4 = group 32 (bf16 scales).
_MOSHI_7B_BYTES: Final[Mapping[Quantization, int]] = {
    "bf16": 15_375_630_336,
    "q8": 8_168_645_376,
    "q4": 4_805_385_728,
}

_PUBLISHED: tuple[ModelSpec, ...] = (
    *(
        _moshi(f"{base}-mlx-{q}", voice, q, _MOSHI_7B_BYTES[q])
        for base, voice in (("moshiko", "male"), ("moshika", "female"))
        for q in ("q4", "q8", "bf16")
    ),
    ModelSpec(
        name="stt-1b-en_fr-mlx",
        kind="stt",
        quantization="bf16",
        description="Kyutai STT 1B, English and French, 0.5 s delay (MLX)",
        repo="kyutai/stt-1b-en_fr-mlx",
        lm_file="model.safetensors",
        codec_file=MIMI_STT_FILE,
        tokenizer_file="tokenizer_en_fr_audio_8000.model",
        approx_bytes=1_980 * MB + MIMI_BYTES,  # ~0.99B parameters in bf16
    ),
    ModelSpec(
        name="stt-2.6b-en-mlx",
        kind="stt",
        quantization="bf16",
        description="Kyutai STT 2.6B, English, 2.5 s delay (MLX)",
        repo="kyutai/stt-2.6b-en-mlx",
        lm_file="model.safetensors",
        codec_file=MIMI_STT_FILE,
        tokenizer_file="tokenizer_en_audio_4000.model",
        approx_bytes=5_234_275_128 + MIMI_BYTES,  # the PyTorch repo's file size
    ),
    ModelSpec(
        name="tts-1.6b-en_fr",
        kind="tts",
        quantization="bf16",
        description="Kyutai TTS 1.6B, English and French (PyTorch format, loads in MLX)",
        repo="kyutai/tts-1.6b-en_fr",
        lm_file="dsm_tts_1e68beda@240.safetensors",
        codec_file=MIMI_FILE,
        tokenizer_file="tokenizer_spm_8k_en_fr_audio.model",
        approx_bytes=3_680 * MB + MIMI_BYTES,
        weights_format="pytorch",
        voice_repo="kyutai/tts-voices",
    ),
)

# Generated models: file names match the configs written by xswarm.models.tiny.
TINY_MIMI_FILE: Final = "mimi-tiny-random.safetensors"
TINY_TOKENIZER_FILE: Final = "tokenizer_tiny_en_512.model"
RANDOM_MIMI_FILE: Final = MIMI_FILE  # full-size Mimi, same name as the published file
RANDOM_TOKENIZER_FILE: Final = "tokenizer_random_spm.model"
# Generated TTS LMs are named like the published one (dsm_tts_<sig>@<epoch>), with their own sig.
TINY_TTS_LM_FILE: Final = "dsm_tts_7e57c0de@0.safetensors"
TTS_VOICES_SUBDIR: Final = "voices"  # generated TTS models keep their voice embeddings here

_GENERATED: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="tiny-random",
        kind="moshi",
        quantization="bf16",
        description="Tiny random Moshi-shaped model for tests (noise; q4/q8 files too)",
        lm_file="model.safetensors",
        codec_file=TINY_MIMI_FILE,
        tokenizer_file=TINY_TOKENIZER_FILE,
        approx_bytes=52 * MB,  # measured: bf16 + q8 + q4 LM, codec, tokenizer
        generated=True,
    ),
    ModelSpec(
        name="tiny-random-stt",
        kind="stt",
        quantization="bf16",
        description="Tiny random STT-shaped model for tests (text only; q4/q8 files too)",
        lm_file="model.safetensors",
        codec_file=TINY_MIMI_FILE,
        tokenizer_file=TINY_TOKENIZER_FILE,
        approx_bytes=74 * MB,  # measured
        generated=True,
    ),
    ModelSpec(
        name="tiny-random-tts",
        kind="tts",
        quantization="bf16",
        description="Tiny random Kyutai-TTS-shaped model for tests (PyTorch naming, voices)",
        lm_file=TINY_TTS_LM_FILE,
        codec_file=TINY_MIMI_FILE,
        tokenizer_file=TINY_TOKENIZER_FILE,
        approx_bytes=9 * MB,  # measured
        weights_format="pytorch",
        generated=True,
    ),
    ModelSpec(
        name="random-tts-1.6b",
        kind="tts",
        quantization="bf16",
        description="1.6B Kyutai TTS architecture, random weights, for benchmarks",
        lm_file=TINY_TTS_LM_FILE,
        codec_file=RANDOM_MIMI_FILE,
        tokenizer_file=RANDOM_TOKENIZER_FILE,
        approx_bytes=3_600 * MB + MIMI_BYTES,  # bf16 LM (~1.8B parameters) + full Mimi
        weights_format="pytorch",
        generated=True,
        on_demand=True,
    ),
    ModelSpec(
        name="random-1b",
        kind="moshi",
        quantization="bf16",
        description="1B Moshi architecture (config1b_202412), random weights, for benchmarks",
        lm_file="model.safetensors",
        codec_file=RANDOM_MIMI_FILE,
        tokenizer_file=RANDOM_TOKENIZER_FILE,
        approx_bytes=7_020 * MB,  # bf16 3.6 + q8 1.9 + q4 1.1 GB + full Mimi
        generated=True,
        on_demand=True,
    ),
    *(
        ModelSpec(
            name=f"random-7b-{q}",
            kind="moshi",
            quantization=q,
            description=f"7B Moshi architecture (config_v0_1), random weights, {q}, for benchmarks",
            lm_file=LM_FILES[q],
            codec_file=RANDOM_MIMI_FILE,
            tokenizer_file=RANDOM_TOKENIZER_FILE,
            approx_bytes=_MOSHI_7B_BYTES[q] + MIMI_BYTES,
            generated=True,
            on_demand=True,
        )
        for q in ("q4", "q8")
    ),
)

REGISTRY: Final[Mapping[str, ModelSpec]] = {s.name: s for s in (*_PUBLISHED, *_GENERATED)}
DEFAULT_MODEL: Final = "moshiko-mlx-q4"  # the smallest 7B that fits an 8 GB Mac
DEFAULT_STT_MODEL: Final = "stt-1b-en_fr-mlx"
# What "tiny-random" names where a model of one kind is expected (talk --stt-model, ...).
TINY_RANDOM: Final[Mapping[str, str]] = {
    "moshi": "tiny-random",
    "stt": "tiny-random-stt",
    "tts": "tiny-random-tts",
}


def model_names() -> list[str]:
    """Every registered name, in registry order (published first)."""
    return list(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``.

    Raises :class:`~xswarm.errors.UsageError` (exit 2) for an unknown name,
    with the closest names ("did you mean") and the full list.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UsageError(
        f"unknown model {name!r}: {hint}known models: {', '.join(REGISTRY)} "
        "(or give a directory with --model PATH; see xswarm models list)"
    )
