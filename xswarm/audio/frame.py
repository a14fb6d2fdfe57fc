"""The message that carries one frame of audio between actors.

A frame is :data:`~xswarm.audio.FRAME_SAMPLES` mono float32 samples at
:data:`~xswarm.audio.SAMPLE_RATE` (80 ms). It travels with the moment it was
captured, so later actors can measure latency (capture -> model -> speaker)
without guessing, and with its sequence number, so a consumer can see frames
that a drop-oldest channel threw away.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class AudioFrame:
    """One 80 ms frame of mono float32 audio and where it came from.

    ``pcm`` is owned by the frame: producers hand over a private copy (never a
    view of a buffer PortAudio or a file reader will reuse), and consumers must
    not write into it.
    """

    pcm: np.ndarray  # float32, shape (FRAME_SAMPLES,)
    index: int  # 0, 1, 2, ... per source; a gap means frames were dropped
    t_capture: float  # time.monotonic() seconds: mic callback entry, or file frame release
    t_adc: float | None = None  # PortAudio stream time of the first sample (mic only)
