"""The user's config file, ``config_dir()/config.toml``: defaults people choose once.

Today it holds the default persona::

    persona = "glados"

The file is optional; a missing file means built-in defaults. Keys this module
does not know are kept in :attr:`Config.raw` and not rejected, so that another
part of xswarm can add its own setting without this reader refusing old or
new files; the keys it does know are type-checked, and a TOML syntax error is
one line with the file and line (exit 2).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from xswarm.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CONFIG_NAME: Final = "config.toml"


@dataclass(frozen=True)
class Config:
    """The settings read from the config file (``path``, which may not exist)."""

    path: Path
    persona: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


def config_path() -> Path:
    """``config_dir()/config.toml``."""
    from xswarm.paths import config_dir

    return config_dir() / CONFIG_NAME


def load_config(path: Path | None = None) -> Config:
    """Read the config file; a missing file gives the defaults.

    Raises :class:`UsageError` for unreadable or invalid TOML and for a known
    key of the wrong type.
    """
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(path)
    except OSError as error:
        raise UsageError(f"{path}: cannot read the config file: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: the config file is not UTF-8 text (it is TOML)") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        at = re.search(r"\(at line (\d+), column \d+\)", str(error))
        where = f"{path}:{at.group(1)}" if at else str(path)
        raise UsageError(f"{where}: invalid TOML: {error}") from None
    persona = data.get("persona")
    if persona is not None and (not isinstance(persona, str) or not persona.strip()):
        raise UsageError(f'{path}: key "persona" must be a persona name (a string), like "jarvis"')
    return Config(path, persona=persona.strip() if persona else None, raw=data)
