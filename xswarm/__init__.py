"""xswarm: a full-duplex voice assistant for the terminal, on Kyutai's Moshi and Trio.

The package is split by job (see README's architecture section):
``runtime`` supervises actors, ``audio`` moves sound, ``inference`` holds the
MLX thread and the engines, ``models`` finds weights, ``cli`` parses commands.
Importing ``xswarm`` is cheap on purpose: heavy modules (mlx, numpy,
sounddevice) are imported by the code that needs them, so ``xswarm --help``
starts fast.
"""

__version__ = "0.1.0"
