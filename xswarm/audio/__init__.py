"""Sound in and out: device actors (sounddevice), file sources and sinks, jitter buffer.

Every frame that moves through xswarm is :data:`FRAME_SAMPLES` float32 samples
of mono audio at :data:`SAMPLE_RATE`. Importing this package is cheap: numpy
and sounddevice are imported by the modules that use them.
"""

from typing import Final

SAMPLE_RATE: Final = 24_000  # Hz, Mimi's sample rate
FRAME_SAMPLES: Final = 1920  # 80 ms at 24 kHz, Moshi's 12.5 Hz frame
FRAME_SECONDS: Final = FRAME_SAMPLES / SAMPLE_RATE  # 0.08 s
CHANNELS: Final = 1  # the model hears and speaks mono
