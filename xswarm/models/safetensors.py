"""Read and check a ``.safetensors`` header without loading the tensors.

A weights file is checked before MLX sees it, because MLX's own errors on a
bad file are a C++ exception text or a list of hundreds of names. This module
reads the 8-byte header length and the JSON header (names, dtypes, shapes,
byte ranges), and compares them with what the model built from its config
expects, so each failure becomes one :class:`~xswarm.errors.ModelError`
naming the file, the first offending tensor and the likely cause. Standard
library only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from xswarm.errors import ModelError

MAX_HEADER_BYTES: Final = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
SCALES_SUFFIX: Final = ".scales"  # MLX quantised layers store weight, scales, biases

# Bytes per element of each safetensors dtype.
DTYPE_BYTES: Final[Mapping[str, int]] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One entry of a safetensors header."""

    dtype: str
    shape: tuple[int, ...]
    start: int  # byte offset in the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclasses.dataclass(frozen=True)
class Header:
    """A parsed header: the tensors by name, and the size the file must have."""

    path: Path
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]
    expected_size: int  # 8 + header length + data section

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def quantized(self) -> bool:
        return any(name.endswith(SCALES_SUFFIX) for name in self.tensors)


def read_header(path: Path) -> Header:
    """Parse ``path``'s header and check that the file holds all its data.

    Raises :class:`ModelError` naming the file when it cannot be read, is not a
    safetensors file, or is shorter than its header says (an interrupted
    download or copy).
    """
    name = path.name
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ModelError(
                    f"{path}: truncated or empty ({size} bytes), not a safetensors file"
                )
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES or length > size - 8:
                raise ModelError(
                    f"{path}: not a valid safetensors file or truncated "
                    f"(header says {length} bytes, the file has {size})"
                )
            raw = f.read(length)
    except OSError as error:
        raise ModelError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        document = json.loads(raw.decode("utf-8"))
        if not isinstance(document, dict):
            raise ValueError("header is not a JSON object")
        metadata = document.pop("__metadata__", None) or {}
        tensors: dict[str, TensorInfo] = {}
        for key, entry in document.items():
            start, end = (int(x) for x in entry["data_offsets"])
            tensors[key] = TensorInfo(
                dtype=str(entry["dtype"]),
                shape=tuple(int(d) for d in entry["shape"]),
                start=start,
                end=end,
            )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise ModelError(f"{path}: not a valid safetensors file ({error})") from None
    data_end = max((t.end for t in tensors.values()), default=0)
    expected_size = 8 + length + data_end
    if size < expected_size:
        raise ModelError(
            f"{path}: truncated ({size} of {expected_size} bytes): "
            f"{name} was cut short (an interrupted download or copy); fetch it again"
        )
    for key, t in tensors.items():
        itemsize = DTYPE_BYTES.get(t.dtype)
        if itemsize is not None and t.nbytes != itemsize * math.prod(t.shape):
            raise ModelError(f"{path}: corrupt header: tensor {key} has the wrong byte size")
    return Header(path=path, tensors=tensors, metadata=dict(metadata), expected_size=expected_size)


# moshi_mlx's quantisations, by packed-weight width / scales width = bits * group / 32.
_QUANTIZATIONS: Final[Mapping[int, tuple[int, int]]] = {4: (4, 32), 16: (8, 64)}


def quantization_of(header: Header, probe: str) -> tuple[int, int] | None:
    """``(bits, group_size)`` of a quantised file, read from layer ``probe``.

    MLX packs ``32 / bits`` values per uint32 and keeps one scale per group,
    so the ratio of the two widths tells moshi_mlx's q4 (group 32) from its
    q8 (group 64) whatever the layer's size. None for an unquantised file,
    a missing probe, or another quantisation.
    """
    weight = header.tensors.get(f"{probe}.weight")
    scales = header.tensors.get(f"{probe}{SCALES_SUFFIX}")
    if weight is None or scales is None or not weight.shape or not scales.shape:
        return None
    if scales.shape[-1] == 0 or weight.shape[-1] % scales.shape[-1]:
        return None
    return _QUANTIZATIONS.get(weight.shape[-1] // scales.shape[-1])


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def check_against(
    header: Header,
    expected: Mapping[str, tuple[int, ...]],
    *,
    what: str = "this config",
) -> None:
    """Check that the file holds exactly the ``expected`` tensor names and shapes.

    Raises :class:`ModelError` naming the file and the first missing,
    unexpected or mis-shaped tensor.
    """
    name = header.path.name
    missing = sorted(expected.keys() - header.tensors.keys())
    extra = sorted(header.tensors.keys() - expected.keys())
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing (first: {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (first: {extra[0]})")
        raise ModelError(
            f"{header.path}: {' and '.join(parts)} for {what} "
            f"(wrong model, config or quantisation in {name}?)"
        )
    for key in sorted(expected):
        got = header.tensors[key].shape
        if got != tuple(expected[key]):
            raise ModelError(
                f"{header.path}: tensor {key} has shape {_fmt(got)}, expected "
                f"{_fmt(tuple(expected[key]))} for {what} (wrong model or quantisation?)"
            )
