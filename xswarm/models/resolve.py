"""Find a model's files: a local directory, the Hugging Face cache, or xswarm's generator.

``resolve("moshiko-mlx-q4")`` looks in the Hugging Face cache only (never the
network); ``resolve("./my-checkpoint")`` uses the directory as it is;
``resolve("tiny-random")`` generates the tiny test model on first use. The
result, :class:`ResolvedModel`, holds the local path of every file and the LM
config dict in the published ``config.json`` format, which is all the loaders
in :mod:`xswarm.models.load` need.

Missing files raise :class:`~xswarm.errors.ModelError` (exit 1) with the one
command that fixes it; an unknown name or a directory that does not exist
raises :class:`~xswarm.errors.UsageError` (exit 2).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from xswarm import paths
from xswarm.errors import ModelError, UsageError
from xswarm.models.registry import (
    CONFIG_FILE,
    LM_FILES,
    MIMI_FILE,
    MIMI_STT_FILE,
    MOSHI_TOKENIZER_FILE,
    MOSHIKO_CONFIG,
    Kind,
    ModelSpec,
    Quantization,
    get_spec,
)

MODELS_SUBDIR: Final = "models"  # generated models live in cache_dir()/models/<name>/
DEFAULT_LM_FILE: Final = "model.safetensors"  # moshi_mlx's default for a missing moshi_name


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
    """A model whose files are all on this machine.

    ``config`` is the LM config in the published ``config.json`` format (what
    ``moshi_mlx.models.LmConfig.from_config_dict`` reads), including
    ``stt_config`` for STT models and ``xswarm_mimi_config`` for generated
    models with a tiny codec.
    """

    spec: ModelSpec
    directory: Path
    lm_weights: Path
    codec_weights: Path
    text_tokenizer: Path
    config: Mapping[str, Any]
    config_path: Path | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> Kind:
        return self.spec.kind

    @property
    def quantization(self) -> Quantization:
        return quantization_of_file(self.lm_weights.name)

    @property
    def stt_config(self) -> Mapping[str, Any] | None:
        """``audio_delay_seconds`` / ``audio_silence_prefix_seconds`` for STT models."""
        value = self.config.get("stt_config")
        return value if isinstance(value, Mapping) else None

    def lm_weights_for(self, bits: int | None) -> Path | None:
        """The sibling weights file holding ``bits``-bit weights (None: bf16), if present."""
        name = LM_FILES["bf16" if bits is None else f"q{bits}"]
        path = self.directory / name
        return path if path.is_file() else None


def quantization_of_file(filename: str) -> Quantization:
    """moshi_mlx's rule: ``*.q4.safetensors`` is 4-bit, ``*.q8.safetensors`` 8-bit, else bf16."""
    if filename.endswith(".q4.safetensors"):
        return "q4"
    if filename.endswith(".q8.safetensors"):
        return "q8"
    return "bf16"


def generated_dir(name: str) -> Path:
    """Where the generated model ``name`` lives (whether or not it exists yet)."""
    return paths.cache_dir() / MODELS_SUBDIR / name


def _looks_like_path(value: str) -> bool:
    """A path has a separator or a leading ``.``/``~``; a bare word is a path only
    when it is no registered name and such a directory exists."""
    from xswarm.models.registry import REGISTRY

    return (
        os.sep in value
        or (os.altsep is not None and os.altsep in value)
        or value.startswith((".", "~"))
        or (value not in REGISTRY and Path(value).is_dir())
    )


def resolve(name_or_path: str, *, pull: bool = False) -> ResolvedModel:
    """Resolve a registry name or a checkpoint directory to local files.

    - A directory (contains a path separator, starts with ``.``/``~``, or is
      an existing directory that is not also a registered name) is used as
      is: its ``config.json`` names the files, or, without one, the moshiko
      MLX layout is assumed (``model[.q4|.q8].safetensors``, the Mimi file,
      ``tokenizer_spm_32k_3.model``, 7B config).
    - A published name is looked up in the Hugging Face cache, local files
      only; with ``pull=True`` missing files are downloaded first.
    - ``tiny-random`` and ``tiny-random-stt`` are generated on first use; the
      large ``random-*`` models only with ``pull=True`` (``xswarm models pull``).

    Raises :class:`UsageError` for an unknown name or a missing directory and
    :class:`ModelError` for missing or unreadable files.
    """
    if _looks_like_path(name_or_path):
        return resolve_directory(Path(name_or_path).expanduser(), shown=name_or_path)
    spec = get_spec(name_or_path)
    if spec.generated:
        return _resolve_generated(spec, generate=pull or not spec.on_demand)
    if pull:
        from xswarm.models.pull import pull_files

        pull_files(spec)
    return _resolve_from_hf_cache(spec)


def _resolve_generated(spec: ModelSpec, *, generate: bool) -> ResolvedModel:
    directory = generated_dir(spec.name)
    if (directory / CONFIG_FILE).is_file() and not directory.is_symlink():
        made_by = _generator_version(directory)
        if made_by != _current_generator_version():
            if spec.on_demand and not generate:
                raise ModelError(
                    f"model {spec.name} was generated by an older xswarm (generator "
                    f"v{made_by}, now v{_current_generator_version()}): run "
                    f"`{spec.pull_command}` to generate it again"
                )
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
    if not (directory / CONFIG_FILE).is_file():
        if not generate:
            raise ModelError(
                f"model {spec.name} is not generated yet (about {spec.approx_bytes / 1e9:.1f} GB "
                f"of random weights): run `{spec.pull_command}`"
            )
        import shutil

        from xswarm.models.tiny import generate as generate_model

        if directory.is_dir() and not directory.is_symlink():
            shutil.rmtree(directory, ignore_errors=True)  # a leftover without its config
        generate_model(spec.name, directory)
    return resolve_directory(directory, spec=spec)


def _current_generator_version() -> int:
    from xswarm.models.tiny import GENERATOR_VERSION

    return GENERATOR_VERSION


def _generator_version(directory: Path) -> int | None:
    """The generator version recorded in a generated model's config.json (None: unreadable)."""
    try:
        made = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        version = made.get("xswarm_generated", {}).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, int) else None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise ModelError(f"{path}: not valid JSON ({error}); fetch it again") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object with the model config")
    return data


def _infer_kind(config: Mapping[str, Any]) -> Kind:
    model_type = config.get("model_type")
    if model_type == "stt" or "stt_config" in config:
        return "stt"
    if model_type == "tts" or "tts_config" in config:
        return "tts"
    return "moshi"


def _first_existing(directory: Path, names: tuple[str, ...]) -> str:
    for name in names:
        if (directory / name).is_file():
            return name
    return names[0]


def resolve_directory(
    directory: Path, *, spec: ModelSpec | None = None, shown: str | None = None
) -> ResolvedModel:
    """Resolve the checkpoint in ``directory`` (see :func:`resolve`).

    ``spec`` is the registry entry when the directory is a known model's
    (cache snapshot or generated); otherwise one is made up from the files.
    """
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise UsageError(
            f"model directory {shown or directory} {what}: give a checkpoint directory "
            "(config.json, weights, Mimi and tokenizer files) or a name from xswarm models list"
        )
    config_path: Path | None = directory / CONFIG_FILE
    if config_path is not None and config_path.is_file():
        config = _read_config(config_path)
        lm_name = str(config.get("moshi_name") or DEFAULT_LM_FILE)
        codec_name = str(
            config.get("mimi_name") or _first_existing(directory, (MIMI_FILE, MIMI_STT_FILE))
        )
        tok_name = str(config.get("tokenizer_name") or MOSHI_TOKENIZER_FILE)
    elif spec is not None and spec.builtin_config is not None:
        config_path = None
        config = dict(spec.builtin_config)
        lm_name, codec_name, tok_name = spec.lm_file, spec.codec_file, spec.tokenizer_file
    else:
        # The MLX moshiko/moshika layout: no config.json, the 7B config.
        config_path = None
        config = dict(MOSHIKO_CONFIG)
        lm_name = _first_existing(directory, tuple(LM_FILES.values()))
        codec_name = _first_existing(directory, (MIMI_FILE, MIMI_STT_FILE))
        tok_name = MOSHI_TOKENIZER_FILE
    if spec is None:
        spec = ModelSpec(
            name=str(directory),
            kind=_infer_kind(config),
            quantization=quantization_of_file(lm_name),
            description=f"local checkpoint in {directory}",
            lm_file=lm_name,
            codec_file=codec_name,
            tokenizer_file=tok_name,
            approx_bytes=0,
            has_config=config_path is not None,
            weights_format="pytorch" if _infer_kind(config) == "tts" else "mlx",
        )
    missing = [n for n in (lm_name, codec_name, tok_name) if not (directory / n).is_file()]
    if missing:
        if spec.generated:
            fix = f"delete {directory} to generate it again"
        elif spec.repo is not None:
            fix = f"run `{spec.pull_command}`"
        else:
            fix = "copy them there or point --model at a complete checkpoint"
        raise ModelError(
            f"model {spec.name} is incomplete: missing {', '.join(missing)} in {directory}: {fix}"
        )
    return ResolvedModel(
        spec=spec,
        directory=directory,
        lm_weights=directory / lm_name,
        codec_weights=directory / codec_name,
        text_tokenizer=directory / tok_name,
        config=config,
        config_path=config_path,
    )


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment as it is now.

    Same rules as ``huggingface_hub.constants`` (``HF_HUB_CACHE``, else
    ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), but read at call time:
    huggingface_hub reads them once at import.
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    return Path(home).expanduser() / "hub"


def cached_file(spec: ModelSpec, filename: str) -> Path | None:
    """Where ``filename`` of ``spec``'s repo is in the Hugging Face cache; None (no network)."""
    if spec.repo is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec.repo, filename, cache_dir=hf_cache_dir())
    return Path(found) if isinstance(found, str) else None


def _resolve_from_hf_cache(spec: ModelSpec) -> ResolvedModel:
    wanted = list(spec.files)
    found = {name: cached_file(spec, name) for name in wanted}
    config_file = found.get(CONFIG_FILE)
    if config_file is not None:
        # The config names the files; trust it over the registry's guesses.
        config = _read_config(config_file)
        for key, default in (
            ("moshi_name", spec.lm_file),
            ("mimi_name", spec.codec_file),
            ("tokenizer_name", spec.tokenizer_file),
        ):
            name = str(config.get(key) or default)
            if name not in found:
                found[name] = cached_file(spec, name)
        wanted = [CONFIG_FILE, str(config.get("moshi_name") or spec.lm_file),
                  str(config.get("mimi_name") or spec.codec_file),
                  str(config.get("tokenizer_name") or spec.tokenizer_file)]  # fmt: skip
    missing = [name for name in wanted if found.get(name) is None]
    if missing:
        raise ModelError(
            f"model {spec.name} is not downloaded: missing {', '.join(missing)} "
            f"from {spec.repo} in the Hugging Face cache: run `{spec.pull_command}`"
        )
    paths_found = [found[name] for name in wanted]
    directory = paths_found[0].parent if paths_found[0] is not None else Path()
    return resolve_directory(directory, spec=spec)


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    """One row of ``xswarm models list``."""

    name: str
    kind: Kind
    quantization: Quantization
    approx_bytes: int
    cached: bool
    path: str | None
    repo: str | None
    description: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def status(spec: ModelSpec) -> ModelStatus:
    """Whether ``spec``'s files are all here, and where; never downloads or generates."""
    path: Path | None
    if spec.generated:
        directory = generated_dir(spec.name)
        cached = all((directory / f).is_file() for f in (CONFIG_FILE, spec.lm_file)) and (
            _generator_version(directory) == _current_generator_version()
        )  # an outdated one is made again on use (tiny) or by pull (large)
        path = directory if cached else None
    else:
        try:
            path = _resolve_from_hf_cache(spec).directory
            cached = True
        except ModelError:
            path, cached = None, False
    return ModelStatus(
        name=spec.name,
        kind=spec.kind,
        quantization=spec.quantization,
        approx_bytes=spec.approx_bytes,
        cached=cached,
        path=str(path) if path is not None else None,
        repo=spec.repo,
        description=spec.description,
    )


def list_models() -> list[ModelStatus]:
    """:func:`status` of every registered model, in registry order (no network, no generation)."""
    from xswarm.models.registry import REGISTRY

    return [status(spec) for spec in REGISTRY.values()]
