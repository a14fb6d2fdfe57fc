"""Text to speech for the cascade mode: Kyutai TTS streaming on moshi_mlx.

:func:`load_tts` gives a :class:`TtsStream` that speaks an answer while its
text still arrives (push words, step 80 ms frames); see
:mod:`xswarm.tts.kyutai`. Importing this package is cheap: numpy only, MLX
is imported when a model is loaded.
"""

from __future__ import annotations

from xswarm.tts.kyutai import DEFAULT_VOICE, TtsFrame, TtsStream, load_tts, voice_path

__all__ = ["DEFAULT_VOICE", "TtsFrame", "TtsStream", "load_tts", "voice_path"]
