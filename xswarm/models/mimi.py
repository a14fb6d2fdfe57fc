"""Mimi codec configs as JSON, and Mimi weights in the published (PyTorch) naming.

The published Mimi checkpoint uses PyTorch ``moshi`` tensor names and
layouts (``encoder.model.0.conv.conv.weight`` as out x in x kernel,
``self_attn.in_proj_weight``, ``_codebook.embedding_sum``); rustymimi reads
it as is and moshi_mlx's ``Mimi.load_pytorch_weights`` renames and transposes
it into the MLX module. Generated models must ship their codec the same way
so the same loaders read them, so :func:`pytorch_state_from_mlx` is the exact
inverse of ``load_pytorch_weights``' renaming: it turns an MLX ``Mimi``'s
parameters into a published-style state dict. The tests check the round
trip (MLX -> file -> ``load_pytorch_weights`` gives the same parameters).

A tiny codec keeps the full architecture's shape (four SEANet ratios
8, 6, 5, 4 with one residual block each, which ``load_pytorch_weights``
hard-codes, so 1920 samples still make one 12.5 Hz frame) with fewer
channels and transformer layers. Its :class:`MimiConfig` is stored in the
model's ``config.json`` under :data:`CONFIG_KEY`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import mlx.core as mx
    from moshi_mlx.models.mimi import Mimi, MimiConfig

CONFIG_KEY: Final = "xswarm_mimi_config"  # config.json key of a generated tiny codec's MimiConfig

# Positions of the SEANet blocks in PyTorch's flat ``encoder.model`` /
# ``decoder.model`` lists, as load_pytorch_weights maps them.
_ENCODER_RESIDUALS: Final = (1, 4, 7, 10)
_ENCODER_DOWNSAMPLES: Final = (3, 6, 9, 12)
_DECODER_UPSAMPLES: Final = (2, 5, 8, 11)
_DECODER_RESIDUALS: Final = (3, 6, 9, 12)
_SEANET_FIRST: Final = 0
_SEANET_LAST: Final = 14


def mimi_config_to_dict(cfg: MimiConfig) -> dict[str, Any]:
    """A JSON-able dict of a moshi_mlx ``MimiConfig`` (nested dataclasses)."""
    return dataclasses.asdict(cfg)


def mimi_config_from_dict(data: Mapping[str, Any]) -> MimiConfig:
    """The inverse of :func:`mimi_config_to_dict`. Raises KeyError/TypeError on a bad dict."""
    from moshi_mlx.models.mimi import MimiConfig
    from moshi_mlx.modules import SeanetConfig, TransformerConfig

    fields = dict(data)
    fields["seanet"] = SeanetConfig(**fields["seanet"])
    fields["transformer"] = TransformerConfig(**fields["transformer"])
    return MimiConfig(**fields)


def tiny_mimi_config(num_codebooks: int = 32, bins: int = 2048) -> MimiConfig:
    """A small Mimi with the published structure: 1920 samples per frame, 12.5 Hz.

    About 1.2 M parameters, mostly the codebooks (``num_codebooks`` x ``bins``
    x 16); encode plus decode of one frame takes a few milliseconds.
    """
    from moshi_mlx.models.mimi import MimiConfig, mimi_202407

    full = mimi_202407(num_codebooks)
    seanet = dataclasses.replace(full.seanet, dimension=32, nfilters=4)
    transformer = dataclasses.replace(
        full.transformer, d_model=32, num_heads=2, num_layers=1, dim_feedforward=64
    )
    return MimiConfig(
        channels=full.channels,
        sample_rate=full.sample_rate,
        frame_rate=full.frame_rate,
        renormalize=full.renormalize,
        seanet=seanet,
        transformer=transformer,
        quantizer_nq=num_codebooks,
        quantizer_bins=bins,
        quantizer_dim=16,
    )


def _rename_to_pytorch(key: str) -> str:
    """One MLX ``Mimi`` parameter name -> its published PyTorch name."""

    def seanet(match: re.Match[str]) -> str:
        side, rest = match.group(1), match.group(2)
        if rest.startswith("init_conv1d."):
            return f"{side}.model.{_SEANET_FIRST}." + rest.removeprefix("init_conv1d.")
        if rest.startswith("final_conv1d."):
            return f"{side}.model.{_SEANET_LAST}." + rest.removeprefix("final_conv1d.")
        layer = re.match(r"layers\.(\d+)\.(residuals\.0|downsample|upsample)\.(.*)", rest)
        if layer is None:
            raise ValueError(f"unexpected SEANet parameter {key}")
        i, part, tail = int(layer.group(1)), layer.group(2), layer.group(3)
        table = {
            ("encoder", "residuals.0"): _ENCODER_RESIDUALS,
            ("encoder", "downsample"): _ENCODER_DOWNSAMPLES,
            ("decoder", "upsample"): _DECODER_UPSAMPLES,
            ("decoder", "residuals.0"): _DECODER_RESIDUALS,
        }[(side, part)]
        return f"{side}.model.{table[i]}.{tail}"

    key = re.sub(r"^(encoder|decoder)\.(.*)$", seanet, key)
    # SEANet residual blocks: PyTorch interleaves ELU modules (block.1, block.3).
    key = key.replace(".block.1.", ".block.3.").replace(".block.0.", ".block.1.")
    key = key.replace(".gating.linear1.weight", ".linear1.weight")
    key = key.replace(".gating.linear2.weight", ".linear2.weight")
    key = key.replace(".self_attn.in_proj.weight", ".self_attn.in_proj_weight")
    key = key.replace(".codebook.", "._codebook.")
    key = key.replace("._codebook.initialized", "._codebook._initialized")
    return key


def pytorch_state_from_mlx(mimi: Mimi) -> dict[str, mx.array]:
    """The parameters of an MLX ``Mimi`` as a published (PyTorch-named) state dict.

    Inverse of ``Mimi.load_pytorch_weights``: names per :func:`_rename_to_pytorch`,
    conv weights back to PyTorch's out x in x kernel, transposed-conv weights
    to in x out x kernel.
    """
    from mlx.utils import tree_flatten

    state: dict[str, mx.array] = {}
    for key, value in tree_flatten(mimi.parameters()):
        if key.endswith((".conv.weight", ".output_proj.weight", ".input_proj.weight")):
            value = value.swapaxes(-1, -2)
        elif key.endswith(".convtr.weight"):
            value = value.transpose(2, 0, 1)
        state[_rename_to_pytorch(key)] = value
    return state


def randomize(mimi: Mimi, seed: int) -> None:
    """Give a freshly built ``Mimi`` random weights that keep the signal alive.

    A new module has zero codebooks (every frame would encode to code 0) and
    small uniform conv weights under which the signal fades to nothing before
    the quantiser (every frame would get the same codes). Draw weight
    matrices from a normal scaled by ``1/sqrt(fan_in)``, codebook sums from a
    unit normal, and set usage and ``initialized`` to ones as a trained
    checkpoint has them. Seeded: the same ``seed`` gives the same codec.
    """
    import math

    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten
    from moshi_mlx.modules import ConvTranspose1d, EuclideanCodebook

    params = sorted(tree_flatten(mimi.parameters()), key=lambda item: item[0])
    keys = mx.random.split(mx.random.key(seed), len(params))
    updated = []
    for key, (name, value) in zip(keys, params, strict=True):
        if name.endswith(".embedding_sum"):
            value = mx.random.normal(value.shape, key=key)
        elif name.endswith((".cluster_usage", ".initialized")):
            value = mx.ones(value.shape)
        elif name.endswith(".weight") and value.ndim >= 2:
            # MLX layouts put the output first: fan-in is the rest, except for
            # the depthwise upsampler (one input channel per group).
            fan_in = math.prod(value.shape[1:]) if value.shape[0] > 1 else value.shape[1]
            value = mx.random.normal(value.shape, key=key) / math.sqrt(fan_in)
        updated.append((name, value))
    mimi.update(tree_unflatten(updated))
    # Module.update does not reach the children's own update(): refresh the
    # caches derived from the weights, as load_pytorch_weights does.
    for _, module in mimi.named_modules():
        if isinstance(module, (EuclideanCodebook, ConvTranspose1d)):
            module.update_in_place()
