"""Personas: who the assistant is — voice, colour, greeting, prompt and sampling.

A persona is a small TOML file. The built-in ones ship with the package (the
top-level ``personas/`` directory of the source tree, installed as
``xswarm/_builtin_personas``); a user's own live in
``config_dir()/personas/*.toml`` and shadow a built-in of the same name, so
``xswarm personas new jarvis`` is how you change JARVIS.

Why TOML and a hand-written validator rather than a schema library: the files
are written by people, so every mistake must come back as one line naming the
file, the line (when known) and the key, with the fix — ``tomllib`` gives us the
line of a syntax error, and :func:`_line_of` finds the line of a bad key by a
simple scan (good enough for the flat files personas are). An unknown key is
an error, not ignored, because a typo (``colour``) silently falling back to a
default is worse than a message.

The file format (every key is documented in :func:`render_template`'s output)::

    name = "jarvis"                  # must match the file name
    display_name = "JARVIS"
    description = "..."
    color = "bright_cyan"            # any rich colour: name, #rrggbb, color(n)
    greeting = "Good evening, sir."  # forced into Moshi's text stream first ("" for none)
    system_prompt = "..."            # for the text-LLM (cascade) mode
    memory = true                    # remember facts about the user (optional)
    mode = "duplex"                  # or "cascade" (optional)

    [voice]
    moshi = "moshiko-mlx-q4"         # a Moshi model name (xswarm models list) or a path
    tts = "vctk/p244_023.wav"        # a voice of kyutai/tts-voices, for cascade mode
    stt = "stt-1b-en_fr-mlx"         # cascade: the STT model (optional)
    tts_model = "tts-1.6b-en_fr"     # cascade: the TTS model (optional)

    [llm]                            # cascade: an OpenAI-compatible chat server (optional)
    url = "http://127.0.0.1:11434/v1"
    model = "llama3.2"

    [sampling]                       # all optional; Moshi's defaults otherwise
    temperature = 0.8                # audio tokens, 0 = greedy
    text_temperature = 0.7
    top_k = 250                      # audio tokens
    text_top_k = 25

Everything here is standard library only (``rich`` is imported when a colour is
checked), so the CLI can import it cheaply.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from xswarm.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from xswarm.inference.sampling import SamplingConfig

PERSONA_ENV: Final = "XSWARM_PERSONA"  # names the default persona, above the config file
FALLBACK_PERSONA: Final = "jarvis"  # the default when neither env nor config names one
BUILTIN_PACKAGE_DIR: Final = "_builtin_personas"  # inside the xswarm package (a link to personas/)
SUFFIX: Final = ".toml"
NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")  # file-name safe, short
MODES: Final = ("duplex", "cascade")
MAX_TEMPERATURE: Final = 2.0  # above this Moshi produces noise; a persona has no use for it
AUDIO_VOCAB: Final = 2048  # Mimi codebook size: audio top-k must be below it
TEXT_VOCAB: Final = 32000  # Moshi's SentencePiece vocabulary: text top-k must be below it


# --- the typed persona -------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    """How the persona sounds.

    ``moshi`` is a Moshi model name from the registry (``xswarm models list``)
    or a path; it is resolved when talk starts, not here. ``tts`` is a voice
    file of the ``kyutai/tts-voices`` repository for the cascade mode's Kyutai
    TTS, or ``None`` for that mode's default voice.
    """

    moshi: str
    tts: str | None = None
    stt: str | None = None  # the cascade's STT model (name or path); None: the default
    tts_model: str | None = None  # the cascade's TTS model (name or path); None: the default


@dataclass(frozen=True)
class Llm:
    """The text LLM of the cascade mode: an OpenAI-compatible server and a model name.

    Either may be None (then ``--llm-url`` / ``--llm-model`` must give it). The
    API key is never stored here: it comes from the environment.
    """

    url: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class Sampling:
    """Sampling temperatures and top-k, with the field names of the engine's
    :class:`~xswarm.inference.sampling.SamplingConfig` (see :meth:`to_config`)."""

    temperature: float
    text_temperature: float
    top_k: int
    text_top_k: int

    def to_config(self, seed: int | None = None) -> SamplingConfig:
        """The engine's sampling config with these values and ``seed``."""
        from xswarm.inference.sampling import SamplingConfig

        return SamplingConfig(**asdict(self), seed=seed)


@dataclass(frozen=True)
class Persona:
    """A validated persona. ``source`` is the file it came from; ``builtin`` says
    whether that file ships with xswarm."""

    name: str
    display_name: str
    description: str
    color: str
    greeting: str
    system_prompt: str
    voice: Voice
    sampling: Sampling
    memory: bool = True
    mode: str = "duplex"
    llm: Llm = field(default_factory=Llm)
    source: Path | None = field(default=None, compare=False)
    builtin: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The persona as a JSON-ready dict (``xswarm personas show --json``)."""
        data = asdict(self)
        data["source"] = str(self.source) if self.source else None
        return data


# --- the schema ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    """One key of the file: its TOML type, whether it is required, a comment."""

    name: str
    kind: type
    required: bool
    doc: str


_TOP_KEYS: Final = (
    _Key("name", str, True, "the persona's name; must match the file name"),
    _Key("display_name", str, True, "how the transcript names the assistant"),
    _Key("description", str, True, "one line for `xswarm personas list`"),
    _Key("color", str, True, "a rich colour: a name (bright_cyan), #rrggbb or color(N)"),
    _Key("greeting", str, True, 'said first, forced into the text stream; "" for none'),
    _Key("system_prompt", str, True, "the character, for the text-LLM (cascade) mode"),
    _Key("memory", bool, False, "remember facts the user tells about themselves"),
    _Key("mode", str, False, 'talk mode: "duplex" (Moshi alone) or "cascade" (STT+LLM+TTS)'),
)
_VOICE_KEYS: Final = (
    _Key("moshi", str, True, "Moshi model: a name from `xswarm models list` or a path"),
    _Key("tts", str, False, "Kyutai TTS voice, a file of the kyutai/tts-voices repo"),
    _Key("stt", str, False, "cascade: speech-to-text model, a name (xswarm models list) or path"),
    _Key("tts_model", str, False, "cascade: text-to-speech model, a name or a path"),
)
_LLM_KEYS: Final = (
    _Key("url", str, False, "cascade: OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1"),
    _Key("model", str, False, "cascade: the model name the server knows, e.g. llama3.2"),
)
_SAMPLING_KEYS: Final = (
    _Key("temperature", float, False, f"audio tokens, 0 (greedy) to {MAX_TEMPERATURE}"),
    _Key("text_temperature", float, False, f"text tokens, 0 (greedy) to {MAX_TEMPERATURE}"),
    _Key("top_k", int, False, f"audio tokens, 1 to {AUDIO_VOCAB - 1}"),
    _Key("text_top_k", int, False, f"text tokens, 1 to {TEXT_VOCAB - 1}"),
)
_TABLES: Final = {"voice": _VOICE_KEYS, "sampling": _SAMPLING_KEYS, "llm": _LLM_KEYS}
_TOML_TYPE_NAMES: Final = {
    str: "a string",
    bool: "true or false",
    int: "an integer",
    float: "a number",
    dict: "a table",
    list: "an array",
}


class _Problem(Exception):
    """A validation failure at a key; turned into a one-line UsageError with file and line."""

    def __init__(self, message: str, table: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.key = key


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in _TOML_TYPE_NAMES.items():
        if type(value) is kind:
            return name
    return type(value).__name__  # dates and times


def _label(table: str | None, key: str) -> str:
    return f"{table}.{key}" if table else key


def _check_keys(data: Mapping[str, Any], keys: tuple[_Key, ...], table: str | None) -> None:
    allowed = [k.name for k in keys] + ([] if table else list(_TABLES))
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f'did you mean "{close[0]}"? ' if close else ""
            where = f" in [{table}]" if table else ""
            raise _Problem(
                f'unknown key "{key}"{where} ({hint}allowed: {", ".join(allowed)})', table, key
            )
    for spec in keys:
        if spec.name not in data:
            if spec.required:
                raise _Problem(f'missing key "{_label(table, spec.name)}" ({spec.doc})', table)
            continue
        value = data[spec.name]
        ok = (
            isinstance(value, (int, float)) and not isinstance(value, bool)
            if spec.kind is float
            else type(value) is spec.kind
        )
        if not ok:
            raise _Problem(
                f'key "{_label(table, spec.name)}" must be {_TOML_TYPE_NAMES[spec.kind]}, '
                f"not {_type_name(value)} ({spec.doc})",
                table,
                spec.name,
            )


def _check_color(value: str) -> None:
    from rich.color import Color, ColorParseError

    try:
        Color.parse(value)
    except ColorParseError:
        raise _Problem(
            f'key "color": "{value}" is not a rich colour '
            '(use a name like "bright_cyan", "#ff8800" or "color(208)")',
            None,
            "color",
        ) from None


def _check_moshi_model(value: str) -> None:
    """A registered Moshi model name, or something that looks like a path (checked at talk)."""
    from xswarm.models.registry import REGISTRY

    if value.startswith((".", "~", "/")) or "/" in value or os.sep in value:
        return
    spec = REGISTRY.get(value)
    if spec is not None and spec.kind == "moshi":
        return
    if spec is not None:
        problem = f'"{value}" is a {spec.kind} model, not a Moshi one'
    else:
        moshi = [name for name, s in REGISTRY.items() if s.kind == "moshi"]
        close = difflib.get_close_matches(value, moshi, n=1, cutoff=0.5)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        problem = f'unknown model "{value}"{hint}'
    raise _Problem(
        f'key "voice.moshi": {problem}; use a Moshi model from `xswarm models list` or a path',
        "voice",
        "moshi",
    )


def _check_cascade_model(value: str, kind: str, key: str) -> None:
    """A registered STT/TTS model name (:func:`xswarm.cascade.check_model`'s rules), or
    something that looks like a path (checked at talk)."""
    from xswarm.cascade import check_model

    if value.startswith((".", "~", "/")) or "/" in value or os.sep in value:
        return
    try:
        check_model(value, kind, f'key "voice.{key}"')
    except UsageError as error:
        raise _Problem(error.message, "voice", key) from None


def _check_llm_url(value: str) -> None:
    """An http(s) URL (:func:`xswarm.llm.client.chat_endpoint`'s rules)."""
    from xswarm.llm.client import chat_endpoint, without_password

    try:
        chat_endpoint(value)
    except UsageError:
        raise _Problem(
            f'key "llm.url": "{without_password(value)}" is not an http(s) URL '
            "(the API base, e.g. http://127.0.0.1:11434/v1)",
            "llm",
            "url",
        ) from None


def _in_range(table: str, key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:  # also rejects NaN
        raise _Problem(
            f'key "{table}.{key}" must be between {low:g} and {high:g}, got {value:g}', table, key
        )


def _build(data: Mapping[str, Any], expect_name: str | None) -> Persona:
    from xswarm.inference import sampling as engine

    _check_keys(data, _TOP_KEYS, None)
    for table, keys in _TABLES.items():
        if table in data and not isinstance(data[table], dict):
            raise _Problem(
                f'key "{table}" must be a table ([{table}]), not {_type_name(data[table])}',
                None,
                table,
            )
        if table == "voice" and table not in data:
            raise _Problem('missing table [voice] (with at least moshi = "MODEL")')
        _check_keys(data.get(table, {}), keys, table)

    name = data["name"]
    if not NAME_PATTERN.match(name):
        raise _Problem(
            f'key "name": "{name}" is not a valid persona name '
            "(lower-case letters, digits, - and _, at most 40)",
            None,
            "name",
        )
    if expect_name is not None and name != expect_name:
        raise _Problem(
            f'key "name" is "{name}" but the file is {expect_name}{SUFFIX} '
            "(personas are found by file name: make them the same)",
            None,
            "name",
        )
    _check_color(data["color"])
    mode = data.get("mode", "duplex")
    if mode not in MODES:
        raise _Problem(f'key "mode" must be "duplex" or "cascade", not "{mode}"', None, "mode")

    voice = data["voice"]
    _check_moshi_model(voice["moshi"])
    tts = voice.get("tts")
    if tts is not None and (not tts.endswith(".wav") or tts.startswith("/") or ".." in tts):
        raise _Problem(
            f'key "voice.tts": "{tts}" is not a kyutai/tts-voices voice '
            '(a relative path ending in .wav, like "vctk/p244_023.wav")',
            "voice",
            "tts",
        )

    for key, kind in (("stt", "stt"), ("tts_model", "tts")):
        if voice.get(key) is not None:
            _check_cascade_model(voice[key], kind, key)
    llm = data.get("llm", {})
    if llm.get("url") is not None:
        _check_llm_url(llm["url"])

    raw = data.get("sampling", {})
    sampling = Sampling(
        temperature=float(raw.get("temperature", engine.DEFAULT_TEMPERATURE)),
        text_temperature=float(raw.get("text_temperature", engine.DEFAULT_TEXT_TEMPERATURE)),
        top_k=raw.get("top_k", engine.DEFAULT_TOP_K),
        text_top_k=raw.get("text_top_k", engine.DEFAULT_TEXT_TOP_K),
    )
    _in_range("sampling", "temperature", sampling.temperature, 0.0, MAX_TEMPERATURE)
    _in_range("sampling", "text_temperature", sampling.text_temperature, 0.0, MAX_TEMPERATURE)
    _in_range("sampling", "top_k", sampling.top_k, 1, AUDIO_VOCAB - 1)
    _in_range("sampling", "text_top_k", sampling.text_top_k, 1, TEXT_VOCAB - 1)

    return Persona(
        name=name,
        display_name=data["display_name"],
        description=data["description"],
        color=data["color"],
        greeting=data["greeting"],
        system_prompt=data["system_prompt"],
        voice=Voice(
            moshi=voice["moshi"], tts=tts, stt=voice.get("stt"), tts_model=voice.get("tts_model")
        ),
        sampling=sampling,
        memory=data.get("memory", True),
        mode=mode,
        llm=Llm(url=llm.get("url"), model=llm.get("model")),
    )


_HEADER: Final = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]")


def _line_of(text: str, table: str | None, key: str | None) -> int | None:
    """The 1-based line where ``key`` is set in ``[table]`` (top level when None).

    A plain scan, not a TOML parser: it tracks ``[table]`` headers and looks for
    ``key =`` (bare or quoted). Dotted keys and inline tables fall back to the
    first ``key =`` anywhere; when nothing matches the error has no line.
    """
    if key is None:
        return None
    key_re = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""")
    current: str | None = None
    fallback: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header and not line.lstrip().startswith("[["):
            current = header.group(1).strip("\"' ")
            if table is None and current == key:  # the bad key is a table: [key]
                return number
            continue
        if key_re.match(line):
            if current == table:
                return number
            fallback = fallback or number
        elif re.search(rf"(?:^|[{{,.\s]){re.escape(key)}\s*=", line) and fallback is None:
            fallback = number
    return fallback


def parse_persona(
    text: str, *, source: Path | str, expect_name: str | None = None, builtin: bool = False
) -> Persona:
    """Parse and validate a persona file's text.

    ``source`` names the file in messages. ``expect_name`` (the file's stem)
    makes a differing ``name`` key an error. Raises :class:`UsageError` with one
    line: ``SOURCE:LINE: message`` (``SOURCE: message`` when the line is unknown).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        at = re.search(r"\(at line (\d+), column \d+\)", str(error))
        where = f"{source}:{at.group(1)}" if at else f"{source}"
        raise UsageError(f"{where}: invalid TOML: {error}") from None
    try:
        persona = _build(data, expect_name)
    except _Problem as problem:
        line = _line_of(text, problem.table, problem.key)
        where = f"{source}:{line}" if line else f"{source}"
        raise UsageError(f"{where}: {problem}") from None
    return replace(persona, source=Path(source), builtin=builtin)


def load_persona_file(path: Path, *, builtin: bool = False) -> Persona:
    """Read and validate one persona file; its name must match the file's stem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such persona file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a persona file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text (persona files are TOML)") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror}") from None
    return parse_persona(text, source=path, expect_name=path.stem, builtin=builtin)


# --- where personas live -----------------------------------------------------------


def builtin_dir() -> Path:
    """The directory of the built-in persona files, in a source tree or a wheel."""
    from importlib.resources import files

    # resolve(): in a source tree the directory is a link to personas/; show the real path.
    return Path(str(files("xswarm").joinpath(BUILTIN_PACKAGE_DIR))).resolve()


def user_dir() -> Path:
    """Where user personas live: ``config_dir()/personas``."""
    from xswarm.paths import config_dir

    return config_dir() / "personas"


@dataclass(frozen=True)
class PersonaFile:
    """A persona file found on disk, not yet parsed. ``shadows`` is the built-in
    file a user file hides, if any."""

    name: str
    path: Path
    builtin: bool
    shadows: Path | None = None


def persona_files() -> dict[str, PersonaFile]:
    """Every persona by name, user files shadowing built-ins, sorted by name."""
    found: dict[str, PersonaFile] = {}
    for path in sorted(builtin_dir().glob(f"*{SUFFIX}")):
        found[path.stem] = PersonaFile(path.stem, path, builtin=True)
    directory = user_dir()
    if directory.is_dir():
        for path in sorted(directory.glob(f"*{SUFFIX}")):
            hidden = found.get(path.stem)
            found[path.stem] = PersonaFile(
                path.stem, path, builtin=False, shadows=hidden.path if hidden else None
            )
    return dict(sorted(found.items()))


def default_persona_name() -> tuple[str, str]:
    """The default persona's name and where it came from (for messages).

    ``XSWARM_PERSONA`` first, then ``persona = "..."`` in the config file, then
    ``jarvis``.
    """
    value = os.environ.get(PERSONA_ENV, "").strip()
    if value:
        return value, PERSONA_ENV
    from xswarm.config import load_config

    config = load_config()
    if config.persona:
        return config.persona, f"{config.path} (persona)"
    return FALLBACK_PERSONA, "the built-in default"


def unknown_persona(name: str, available: list[str], origin: str | None = None) -> UsageError:
    """The error for a persona name that does not exist, with a did-you-mean."""
    close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    where = f" (from {origin})" if origin else ""
    return UsageError(
        f'unknown persona "{name}"{where}{hint}; available: {", ".join(available)} '
        f"(create one with: xswarm personas new {name})"
    )


def load_persona(name: str | None = None) -> Persona:
    """The persona called ``name``, or the default one when ``name`` is None.

    A user file shadows a built-in of the same name. Raises :class:`UsageError`
    for an unknown name (listing the available ones) or an invalid file.
    """
    origin: str | None = None
    if name is None:
        name, origin = default_persona_name()
    files = persona_files()
    found = files.get(name)
    if found is None:
        raise unknown_persona(name, list(files), origin)
    return load_persona_file(found.path, builtin=found.builtin)


@dataclass(frozen=True)
class Listing:
    """All personas that load, and one error line for each file that does not."""

    personas: list[Persona]
    errors: list[str]
    files: dict[str, PersonaFile]


def list_personas() -> Listing:
    """Load every persona; a broken file is reported, not fatal to the others."""
    files = persona_files()
    personas: list[Persona] = []
    errors: list[str] = []
    for entry in files.values():
        try:
            personas.append(load_persona_file(entry.path, builtin=entry.builtin))
        except UsageError as error:
            errors.append(error.message)
    return Listing(personas, errors, files)


# --- writing a new persona ----------------------------------------------------------


def _toml_string(value: str) -> str:
    """A TOML string for ``value``: a literal multi-line string for prose that
    allows it, else a basic string (JSON escapes are valid TOML escapes)."""
    import json

    if "\n" in value and "'''" not in value and not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", value):
        return "'''\n" + value + ("'''" if value.endswith("\n") else "\n'''")
    return json.dumps(value, ensure_ascii=False)


def _comment(key: _Key) -> str:
    return f"# {key.doc}{'' if key.required else ' (optional)'}"


def render_template(base: Persona, name: str) -> str:
    """A commented persona file named ``name``, with ``base``'s values.

    The result parses back (with :func:`parse_persona`) to ``base`` renamed.
    """
    display = base.display_name if base.name == name else name.replace("-", " ").title()
    values: dict[str, Any] = {
        "name": name,
        "display_name": display,
        "description": base.description,
        "color": base.color,
        "greeting": base.greeting,
        "system_prompt": base.system_prompt,
        "memory": base.memory,
        "mode": base.mode,
    }
    tables: dict[str, dict[str, Any]] = {
        "voice": {
            "moshi": base.voice.moshi,
            "tts": base.voice.tts,
            "stt": base.voice.stt,
            "tts_model": base.voice.tts_model,
        },
        "sampling": asdict(base.sampling),
        "llm": {"url": base.llm.url, "model": base.llm.model},
    }

    def render(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return _toml_string(value)
        return repr(value)

    lines = [
        f"# xswarm persona {name!r}, made from {base.name!r}.",
        "# Edit it, then check it with: xswarm personas check <this file>",
        f"# Use it with: xswarm talk --persona {name}  (or XSWARM_PERSONA={name})",
        "",
    ]
    for key in _TOP_KEYS:
        lines += [_comment(key), f"{key.name} = {render(values[key.name])}", ""]
    for table, keys in _TABLES.items():
        lines.append(f"[{table}]")
        for key in keys:
            value = tables[table][key.name]
            if value is None:
                lines.append(f'# {key.name} = "..."  {_comment(key)}')
            else:
                lines.append(f"{key.name} = {render(value)}  {_comment(key)}")
        lines.append("")
    return "\n".join(lines)


def new_persona(name: str, base: str | None = None) -> Path:
    """Write a commented template for persona ``name`` into the user directory.

    ``base`` is the persona to copy (default: ``name`` itself when it exists,
    so ``new jarvis`` makes an editable copy of JARVIS; else ``jarvis``).
    Refuses to overwrite an existing file. Returns the path written.
    """
    if not NAME_PATTERN.match(name):
        raise UsageError(
            f'"{name}" is not a valid persona name (lower-case letters, digits, - and _, '
            "at most 40, starting with a letter or digit)"
        )
    target = user_dir() / f"{name}{SUFFIX}"
    if target.exists():
        raise UsageError(f"{target} already exists; edit it, or remove it to start again")
    if base is None:
        base = name if name in persona_files() else FALLBACK_PERSONA
    template = render_template(load_persona(base), name)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "x", encoding="utf-8") as out:  # "x": never clobber a racing writer
            out.write(template)
    except FileExistsError:
        raise UsageError(f"{target} already exists; edit it, or remove it to start again") from None
    return target
