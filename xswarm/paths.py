"""Where xswarm keeps its state: config, personas, history, generated models.

Everything lives in the platform's usual directories (platformdirs), unless
``XSWARM_HOME`` is set: then every path is under that one directory, which is
what tests and portable installs want. Weights of published Kyutai models stay
in the Hugging Face cache (``HF_HOME``), shared with other tools.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "xswarm"
HOME_ENV = "XSWARM_HOME"


def _home() -> Path | None:
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else None


def config_dir() -> Path:
    """Config file and user personas (``personas/*.toml``)."""
    home = _home()
    if home is not None:
        return home / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME))


def data_dir() -> Path:
    """Conversation history and per-persona memory."""
    home = _home()
    if home is not None:
        return home / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


def cache_dir() -> Path:
    """Generated models (``tiny-random`` and the random-weight benchmark variants)."""
    home = _home()
    if home is not None:
        return home / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))
