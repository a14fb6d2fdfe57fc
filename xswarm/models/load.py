"""Load a resolved model: the LM, its text tokenizer and its audio codec.

The same code loads Kyutai's published checkpoints and xswarm's generated
ones. Before MLX sees a weights file, its header is checked against the model
built from the config (:mod:`xswarm.models.safetensors`), so a truncated file,
a wrong model or a wrong quantisation is one :class:`~xswarm.errors.ModelError`
naming the file, never a traceback.

Threading: everything here runs on the caller's thread, and MLX is not
thread-safe, so the inference actor calls these on its one MLX worker thread.

Quantisation follows moshi_mlx: ``model.q4.safetensors`` / ``model.q8.safetensors``
hold weights made by ``nn.quantize(bits=4, group_size=32)`` /
``(bits=8, group_size=64)``, applied to the bf16 model before
``load_weights``. Asking for ``quantize=8`` on a bf16-only checkpoint
quantises in memory after loading (as moshi_mlx's ``run_tts.py`` does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from xswarm.audio import FRAME_SAMPLES
from xswarm.errors import ModelError
from xswarm.models.registry import GROUP_SIZES, LM_FILES
from xswarm.models.resolve import ResolvedModel, quantization_of_file
from xswarm.models.safetensors import Header, check_against, quantization_of, read_header

if TYPE_CHECKING:
    import numpy as np
    from moshi_mlx.models import Lm, LmConfig
    from sentencepiece import SentencePieceProcessor

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (bytes loaded, total bytes)
CodecBackend = Literal["auto", "rust", "mlx"]
MIMI_CODEBOOKS: Final = 32  # codebooks in the published Mimi checkpoint (and the generated ones)
# Tensors are read in batches of about this many bytes: small enough for a smooth
# progress bar, large enough that per-call overhead stays out of the load time.
EVAL_BATCH_BYTES: Final = 64 * 1024 * 1024
PROBE_LAYER: Final = "text_linear"  # a layer every LM has, quantised with the rest


def _bits_of(filename: str) -> int | None:
    q = quantization_of_file(filename)
    return None if q == "bf16" else int(q[1:])


def lm_config_of(resolved: ResolvedModel) -> LmConfig:
    """The moshi_mlx ``LmConfig`` of ``resolved``; a bad config is a :class:`ModelError`."""
    from moshi_mlx.models import LmConfig

    where = resolved.config_path or f"the built-in config of {resolved.name}"
    try:
        return LmConfig.from_config_dict(dict(resolved.config))
    except KeyError as error:
        raise ModelError(f"{where}: missing key {error} (not a Kyutai LM config?)") from None
    except (TypeError, ValueError) as error:
        raise ModelError(f"{where}: invalid LM config ({error})") from None


def _choose_weights(
    resolved: ResolvedModel, quantize: int | None
) -> tuple[Path, int | None, int | None]:
    """(file to load, its bits, bits to quantise to after loading) for a request."""
    if quantize is not None and quantize not in GROUP_SIZES:
        raise ModelError(f"unsupported quantisation {quantize} bits: use 4 or 8")
    path = resolved.lm_weights
    file_bits = _bits_of(path.name)
    if quantize is None or quantize == file_bits:
        return path, file_bits, None
    sibling = resolved.lm_weights_for(quantize)
    if sibling is not None:
        return sibling, quantize, None
    if file_bits is None:
        return path, None, quantize  # bf16 on disk: quantise in memory after loading
    raise ModelError(
        f"model {resolved.name} holds {file_bits}-bit weights ({path.name}); it cannot be "
        f"loaded as {quantize}-bit: use a {quantize}-bit checkpoint ({LM_FILES[f'q{quantize}']}) "
        "or leave the quantisation to the model"
    )


def _check_quantization(header: Header, bits: int | None) -> None:
    path = header.path
    found = quantization_of(header, PROBE_LAYER) if header.quantized else None
    if bits is None and header.quantized:
        got = f"{found[0]}-bit" if found else "quantised"
        raise ModelError(
            f"{path}: holds {got} quantised weights but is loaded as unquantised bf16 "
            f"(wrong quantisation: a {f'q{found[0]}' if found else 'quantised'} file "
            f"named {path.name}?)"
        )
    if bits is not None and not header.quantized:
        raise ModelError(
            f"{path}: holds unquantised weights but is loaded as {bits}-bit "
            f"(wrong quantisation: a bf16 file named {path.name}?)"
        )
    if bits is not None and found is not None and found != (bits, GROUP_SIZES[bits]):
        raise ModelError(
            f"{path}: holds {found[0]}-bit weights (group {found[1]}) but is loaded as "
            f"{bits}-bit (group {GROUP_SIZES[bits]}) (wrong quantisation: "
            f"a q{found[0]} file named {path.name}?)"
        )


def _load_tensors(header: Header, progress: ProgressCallback | None) -> dict[str, Any]:
    """All tensors of the file, evaluated one by one so progress can be reported."""
    import mlx.core as mx

    try:
        arrays = mx.load(str(header.path))
    except (RuntimeError, ValueError, OSError) as error:
        raise ModelError(
            f"{header.path}: cannot be read by MLX ({error}); fetch it again"
        ) from None
    total = header.data_bytes
    done = 0
    if progress is not None:
        progress(0, total)
    order = sorted(arrays, key=lambda k: header.tensors[k].start if k in header.tensors else 0)
    batch: list[Any] = []
    batch_bytes = 0
    for index, key in enumerate(order):
        batch.append(arrays[key])
        batch_bytes += header.tensors[key].nbytes if key in header.tensors else 0
        if batch_bytes >= EVAL_BATCH_BYTES or index == len(order) - 1:
            mx.eval(*batch)
            done += batch_bytes
            batch, batch_bytes = [], 0
            if progress is not None:
                progress(done, total)
    return arrays


def load_lm(
    resolved: ResolvedModel,
    *,
    quantize: int | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[Lm, LmConfig]:
    """Build the LM from the config and load its weights; returns ``(model, config)``.

    ``quantize`` (4 or 8) picks ``model.q4/q8.safetensors`` beside the weights
    when present, else quantises bf16 weights in memory after loading; a
    checkpoint quantised differently than asked is a :class:`ModelError`.
    ``progress(done_bytes, total_bytes)`` is called as tensors are read. Runs
    on the caller's thread; the load time is logged at INFO.
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from moshi_mlx.models import Lm

    started = time.perf_counter()
    config = lm_config_of(resolved)
    path, bits, quantize_after = _choose_weights(resolved, quantize)
    header = read_header(path)
    model = Lm(config)
    model.set_dtype(mx.bfloat16)
    if resolved.spec.weights_format == "pytorch":
        # moshi_mlx renames and loads the whole file in one call: progress is all or nothing.
        if progress is not None:
            progress(0, header.data_bytes)
        _load_pytorch_lm(model, config, header)
        if progress is not None:
            progress(header.data_bytes, header.data_bytes)
    else:
        if bits is not None:
            nn.quantize(model, bits=bits, group_size=GROUP_SIZES[bits])
        _check_quantization(header, bits)
        expected = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
        check_against(header, expected, what=f"the config of {resolved.name}")
        arrays = _load_tensors(header, progress)
        try:
            model.load_weights(list(arrays.items()), strict=True)
        except ValueError as error:
            first = str(error).splitlines()[0]
            raise ModelError(
                f"{path}: does not fit the config of {resolved.name} ({first})"
            ) from None
    if quantize_after is not None:
        nn.quantize(model, bits=quantize_after, group_size=GROUP_SIZES[quantize_after])
    mx.eval(model.parameters())
    logger.info(
        "loaded %s from %s in %.2f s%s",
        resolved.name,
        path,
        time.perf_counter() - started,
        f", quantised to {quantize_after} bits after loading" if quantize_after else "",
    )
    return model, config


def _load_pytorch_lm(model: Lm, config: LmConfig, header: Header) -> None:
    """PyTorch-named LM weights (the TTS checkpoint), renamed by moshi_mlx."""
    try:
        model.load_pytorch_weights(str(header.path), config, strict=True)
    except KeyError as error:
        raise ModelError(f"{header.path}: missing tensor {error} (wrong model?)") from None
    except (ValueError, RuntimeError) as error:
        first = str(error).splitlines()[0]
        raise ModelError(f"{header.path}: does not fit its config ({first})") from None


def load_text_tokenizer(resolved: ResolvedModel) -> SentencePieceProcessor:
    """The SentencePiece text tokenizer; it must cover every text token the LM emits."""
    import sentencepiece

    path = resolved.text_tokenizer
    try:
        processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(
            f"{path}: not a valid SentencePiece model ({first}); fetch it again"
        ) from None
    text_card = resolved.config.get("text_card")
    if isinstance(text_card, int) and processor.vocab_size() < text_card:
        raise ModelError(
            f"{path}: has {processor.vocab_size()} pieces but {resolved.name} emits "
            f"{text_card} text tokens (wrong tokenizer for this model?)"
        )
    return processor


class Codec(Protocol):
    """One Mimi stream: 80 ms of 24 kHz audio <-> one frame of codes.

    ``encode_step`` takes ``(1920,)`` float32 PCM and returns ``(num_codebooks,)``
    int32 codes; ``decode_step`` is the inverse. Both keep streaming state
    between calls; ``reset`` starts a new stream. Not thread-safe: use it from
    one thread (the MLX one, for the MLX implementation).
    """

    num_codebooks: int

    def encode_step(self, pcm: np.ndarray) -> np.ndarray: ...

    def decode_step(self, codes: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...


def _frame(pcm: np.ndarray) -> np.ndarray:
    import numpy as np

    if pcm.shape != (FRAME_SAMPLES,):
        raise ValueError(
            f"Mimi takes frames of {FRAME_SAMPLES} samples, got an array of shape {pcm.shape}"
        )
    return np.ascontiguousarray(pcm, dtype=np.float32).reshape(1, 1, FRAME_SAMPLES)


def _codes(codes: np.ndarray, num_codebooks: int) -> np.ndarray:
    import numpy as np

    if codes.shape != (num_codebooks,):
        raise ValueError(f"expected {num_codebooks} codes, got an array of shape {codes.shape}")
    return np.ascontiguousarray(codes, dtype=np.uint32).reshape(1, num_codebooks, 1)


class RustMimiCodec:
    """The full-size Mimi through ``rustymimi.Tokenizer`` (about 5x MLX Mimi on CPU)."""

    def __init__(self, path: Path, num_codebooks: int) -> None:
        import rustymimi

        self.num_codebooks = num_codebooks
        try:
            self._tokenizer = rustymimi.Tokenizer(str(path), num_codebooks=num_codebooks)
        except Exception as error:  # rustymimi raises ValueError with a Rust backtrace
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelError(f"{path}: rustymimi cannot load this Mimi ({first})") from None

    def encode_step(self, pcm: np.ndarray) -> np.ndarray:
        import numpy as np

        codes = self._tokenizer.encode_step(_frame(pcm))  # (1, num_codebooks, 1) uint32
        return np.asarray(codes[0, :, 0], dtype=np.int32)

    def decode_step(self, codes: np.ndarray) -> np.ndarray:
        import numpy as np

        pcm = self._tokenizer.decode_step(_codes(codes, self.num_codebooks))  # (1, 1, 1920)
        return np.asarray(pcm, dtype=np.float32).reshape(-1)

    def reset(self) -> None:
        self._tokenizer.reset()


class MlxMimiCodec:
    """Mimi in MLX (moshi_mlx ``Mimi``): any size, including generated tiny codecs."""

    def __init__(self, path: Path, mimi_config: Any, num_codebooks: int) -> None:
        from moshi_mlx.models.mimi import Mimi

        self.num_codebooks = num_codebooks
        self._mimi = Mimi(mimi_config)
        try:
            self._mimi.load_pytorch_weights(str(path), strict=True)
        except (ValueError, KeyError, RuntimeError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelError(f"{path}: does not fit this Mimi config ({first})") from None

    def encode_step(self, pcm: np.ndarray) -> np.ndarray:
        import mlx.core as mx
        import numpy as np

        codes = self._mimi.encode_step(mx.array(_frame(pcm)))  # (1, quantizer_nq, 1)
        return np.array(codes[0, : self.num_codebooks, 0], dtype=np.int32)

    def decode_step(self, codes: np.ndarray) -> np.ndarray:
        import mlx.core as mx
        import numpy as np

        pcm = self._mimi.decode_step(mx.array(_codes(codes, self.num_codebooks)))
        return np.array(pcm, dtype=np.float32).reshape(-1)

    def reset(self) -> None:
        self._mimi.reset_all()


def _check_codec_file(path: Path, mimi_config: Any) -> None:
    """Header check of a Mimi file against the names and shapes ``mimi_config`` needs.

    Extra tensors are tolerated (rustymimi ignores them); missing or
    mis-shaped ones are a :class:`ModelError` naming the file.
    """
    from moshi_mlx.models.mimi import Mimi

    from xswarm.models.mimi import pytorch_state_from_mlx

    header = read_header(path)
    expected = {k: tuple(v.shape) for k, v in pytorch_state_from_mlx(Mimi(mimi_config)).items()}
    present = {k: v for k, v in expected.items() if k in header.tensors}
    if len(present) < len(expected):
        missing = sorted(expected.keys() - header.tensors.keys())
        raise ModelError(
            f"{path}: {len(missing)} Mimi tensors missing (first: {missing[0]}) "
            "(not a Mimi checkpoint, or a different codec?)"
        )
    check_against(
        Header(
            path, {k: header.tensors[k] for k in expected}, header.metadata, header.expected_size
        ),
        expected,
        what="this Mimi codec",
    )


def load_codec(
    resolved: ResolvedModel,
    *,
    num_codebooks: int,
    backend: CodecBackend = "auto",
) -> Codec:
    """The Mimi codec of ``resolved``, producing ``num_codebooks`` codes per frame.

    A generated tiny codec (config key ``xswarm_mimi_config``) is MLX Mimi;
    the full-size one is rustymimi by default (``backend="mlx"`` forces MLX
    Mimi, for comparisons). Callers pass ``max(generated, other)`` codebooks
    of the LM, as moshi_mlx does.
    """
    from xswarm.models.mimi import CONFIG_KEY, mimi_config_from_dict

    if not 1 <= num_codebooks <= MIMI_CODEBOOKS:
        raise ModelError(f"Mimi has {MIMI_CODEBOOKS} codebooks; {num_codebooks} were asked for")
    path = resolved.codec_weights
    tiny = resolved.config.get(CONFIG_KEY)
    if isinstance(tiny, Mapping):
        try:
            mimi_config = mimi_config_from_dict(tiny)
        except (KeyError, TypeError) as error:
            raise ModelError(f"{resolved.config_path}: invalid {CONFIG_KEY} ({error})") from None
        if backend == "rust":
            raise ModelError(
                f"{path}: a tiny generated Mimi; rustymimi only runs the full-size codec"
            )
        _check_codec_file(path, mimi_config)
        return MlxMimiCodec(path, mimi_config, num_codebooks)
    from moshi_mlx.models.mimi import mimi_202407

    full = mimi_202407(MIMI_CODEBOOKS)
    _check_codec_file(path, full)
    if backend == "mlx":
        return MlxMimiCodec(path, full, num_codebooks)
    return RustMimiCodec(path, num_codebooks)
