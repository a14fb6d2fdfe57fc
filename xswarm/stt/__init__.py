"""Speech-to-text engines behind one interface (frames in, timed words out).

- :mod:`xswarm.stt.engine`: the :class:`SttEngine` protocol and its events;
- :mod:`xswarm.stt.kyutai`: Kyutai's delayed-streams STT models on moshi_mlx,
  several inputs decoded as one LM batch;
- :mod:`xswarm.stt.sphinx`: pocketsphinx's bundled English model, the offline
  fallback (``sphinx-en``);
- :mod:`xswarm.stt.stream`: the same engines pushed a frame at a time for
  conversation (``open_stt_stream``: words and end-of-turn per frame, flush
  per turn).

Importing this package is cheap; numpy, MLX and pocketsphinx are imported by
the engines when they are built.
"""

from xswarm.stt.engine import AudioStream, ProgressEvent, StreamEnd, SttEngine, SttEvent, WordEvent

__all__ = ["AudioStream", "ProgressEvent", "StreamEnd", "SttEngine", "SttEvent", "WordEvent"]
