"""Model management: which models exist, where their files are, and loading them.

- :mod:`~xswarm.models.registry`: Kyutai's published checkpoints and the
  generated ones, by name (plain data, cheap to import).
- :mod:`~xswarm.models.resolve`: a name or directory -> :class:`ResolvedModel`
  (local paths and LM config), from the Hugging Face cache, never the network.
- :mod:`~xswarm.models.pull`: downloads into the Hugging Face cache.
- :mod:`~xswarm.models.tiny`: the generated ``tiny-random`` models (tests) and
  the real-architecture random ones (benchmarks).
- :mod:`~xswarm.models.load`: LM, text tokenizer and Mimi codec loaders with
  integrity checks, shared by real and generated checkpoints.

Only the registry and resolution are imported here; the loaders import MLX,
so they are reached lazily through this module's attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xswarm.models.registry import (
    DEFAULT_MODEL,
    DEFAULT_STT_MODEL,
    REGISTRY,
    ModelSpec,
    get_spec,
    model_names,
)
from xswarm.models.resolve import (
    ModelStatus,
    ResolvedModel,
    generated_dir,
    list_models,
    resolve,
    status,
)

if TYPE_CHECKING:
    from xswarm.models.load import (
        Codec,
        MlxMimiCodec,
        RustMimiCodec,
        load_codec,
        load_lm,
        load_text_tokenizer,
    )
    from xswarm.models.pull import PullProgress, pull_files

_LAZY = {
    "Codec": "xswarm.models.load",
    "MlxMimiCodec": "xswarm.models.load",
    "RustMimiCodec": "xswarm.models.load",
    "load_codec": "xswarm.models.load",
    "load_lm": "xswarm.models.load",
    "load_text_tokenizer": "xswarm.models.load",
    "PullProgress": "xswarm.models.pull",
    "pull_files": "xswarm.models.pull",
}

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_STT_MODEL",
    "REGISTRY",
    "Codec",
    "MlxMimiCodec",
    "ModelSpec",
    "ModelStatus",
    "PullProgress",
    "ResolvedModel",
    "RustMimiCodec",
    "generated_dir",
    "get_spec",
    "list_models",
    "load_codec",
    "load_lm",
    "load_text_tokenizer",
    "model_names",
    "pull_files",
    "resolve",
    "status",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
