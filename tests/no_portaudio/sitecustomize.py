"""Hide PortAudio from a subprocess, the way a machine without libportaudio2 does.

Put this directory first on PYTHONPATH: importing ``sounddevice`` then raises
the same ``OSError`` that sounddevice raises when ``libportaudio2`` is not
installed, so the CLI's handling of that case is tested for real.
"""

import importlib.abc
import sys


class _NoPortAudio(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


sys.meta_path.insert(0, _NoPortAudio())
