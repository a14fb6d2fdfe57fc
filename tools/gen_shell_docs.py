"""Generate the shell completions and the man page from xswarm's CLI definition.

    python tools/gen_shell_docs.py            # rewrite completions/* and man/xswarm.1
    python tools/gen_shell_docs.py --out DIR  # write them under DIR instead (tests)
    python tools/gen_shell_docs.py --check    # exit 1 if any of them is out of date

The CLI (typer, over a click-like command tree) is the single source of truth:
this script walks ``typer.main.get_command(xswarm.cli.app)`` and writes

- ``completions/xswarm.bash``, ``completions/_xswarm`` (zsh), ``completions/xswarm.fish``:
  commands, sub-commands and options complete from the script alone (no Python
  start-up per key press); values only xswarm knows at run time (personas,
  models, devices, session ids) come from the hidden ``xswarm _complete KIND``
  (``xswarm/cli/complete.py``); file, directory and choice values use the
  shell's own completion;
- ``man/xswarm.1``: ``man/xswarm.1.in`` with its ``@SYNOPSIS@``,
  ``@GLOBAL_OPTIONS@`` and ``@COMMANDS@`` lines replaced by what the CLI says
  (each command's help text, usage, options and Examples block). The rest of
  the page (JSON-line schemas, exit codes, environment, files) is written by
  hand in the template.

What a value completes to is decided, in order, by: :data:`PARAM_VALUES`
(command path and parameter), the parameter's typer ``autocompletion=``
callback (:data:`CALLBACK_VALUES`), :data:`OPTION_VALUES` (option name), then
the parameter's type (paths, choices). Anything else is free text (a number, a
search string): the scripts then offer nothing rather than file names.

The output is deterministic (no dates, no machine paths), so
``tests/test_shell_docs.py`` can regenerate it and require byte-identical files.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any, Final, Literal

ROOT: Final = Path(__file__).resolve().parent.parent
PROG: Final = "xswarm"
REGENERATE: Final = "python tools/gen_shell_docs.py"
BASH_FILE: Final = "completions/xswarm.bash"
ZSH_FILE: Final = "completions/_xswarm"
FISH_FILE: Final = "completions/xswarm.fish"
MAN_FILE: Final = "man/xswarm.1"
MAN_TEMPLATE: Final = "man/xswarm.1.in"
OUTPUTS: Final = (BASH_FILE, ZSH_FILE, FISH_FILE, MAN_FILE)

ValueKind = Literal["files", "dirs", "choices", "names", "free"]


@dataclasses.dataclass(frozen=True)
class Values:
    """What an option's or argument's value completes to.

    ``names`` is a KIND of ``xswarm _complete``; ``or_dirs`` adds directory
    names (``--model`` takes a model name or a checkpoint directory).
    """

    kind: ValueKind
    choices: tuple[str, ...] = ()
    names: str = ""
    or_dirs: bool = False


FILES: Final = Values("files")
DIRS: Final = Values("dirs")
FREE: Final = Values("free")


def names(kind: str, *, or_dirs: bool = False) -> Values:
    return Values("names", names=kind, or_dirs=or_dirs)


def choices(*values: str) -> Values:
    return Values("choices", choices=values)


def _transcript_formats() -> Values:
    from xswarm.transcript import FORMATS

    return choices(*FORMATS)


# (command path, parameter name) -> values: where the name alone would be ambiguous.
PARAM_VALUES: Final[Mapping[tuple[str, str], Values]] = {
    ("talk", "model"): names("moshi-models", or_dirs=True),
    ("transcribe", "model"): names("stt-models", or_dirs=True),
    ("transcribe", "fmt"): _transcript_formats(),
    ("transcribe", "files"): FILES,
    ("models/pull", "name"): names("models"),
    ("models/path", "name"): names("models", or_dirs=True),
    ("models/check", "name"): names("models", or_dirs=True),
    ("models/check", "quantize"): choices("4", "8"),
}

# typer autocompletion callbacks (by function name) -> the same list from `xswarm _complete`.
CALLBACK_VALUES: Final[Mapping[str, Values]] = {
    "complete_persona": names("personas"),
    "complete_session": names("sessions"),
}

# Option name -> values, for options typed as plain strings.
OPTION_VALUES: Final[Mapping[str, Values]] = {
    "--persona": names("personas"),
    "--from": names("personas"),
    "--model": names("models", or_dirs=True),
    "--stt-model": names("stt-models", or_dirs=True),
    "--tts-model": names("tts-models", or_dirs=True),
    "--mode": choices("duplex", "cascade"),
    "--input-device": names("input-devices"),
    "--output-device": names("output-devices"),
    "--input": FILES,
    "--output": FILES,
    "--record": FILES,
    "--log": FILES,
    "--trace": FILES,
    "--output-dir": DIRS,
    "--config": FILES,
}

# Metavars in the man page for values that have none of their own.
METAVARS: Final[Mapping[str, str]] = {
    "personas": "PERSONA",
    "sessions": "ID",
    "models": "MODEL",
    "moshi-models": "MODEL",
    "stt-models": "MODEL",
    "tts-models": "MODEL",
    "input-devices": "DEVICE",
    "output-devices": "DEVICE",
}


# Metavars by parameter name, where the name alone reads badly (--duration DURATION).
NAME_METAVARS: Final[Mapping[str, str]] = {"duration": "SECONDS", "text": "TEXT"}


# --- the CLI as plain data ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of one command: every spelling, whether it takes a value, and which."""

    name: str  # the parameter's Python name
    longs: tuple[str, ...]  # --persona
    shorts: tuple[str, ...]  # -p
    secondary: tuple[str, ...]  # the off switch of an on/off pair: --fast of --realtime/--fast
    help: str
    values: Values | None  # None: a flag
    metavar: str
    default: str | None  # shown in the man page
    envvar: str | None

    @property
    def spellings(self) -> tuple[str, ...]:
        return (*self.shorts, *self.longs, *self.secondary)

    @property
    def primary(self) -> tuple[str, ...]:
        return (*self.shorts, *self.longs)

    def switches(self) -> list[tuple[tuple[str, ...], str]]:
        """(spellings, help) for menus: an off switch gets its own line and text."""
        pairs = [(self.primary, self.help)]
        off = f"The opposite of {self.longs[0] if self.longs else self.shorts[0]}."
        pairs += [((s,), off) for s in self.secondary]
        return pairs


@dataclasses.dataclass(frozen=True)
class Argument:
    """One positional argument: its place, whether it repeats, and what it completes to."""

    name: str
    metavar: str
    help: str
    required: bool
    variadic: bool
    values: Values


@dataclasses.dataclass(frozen=True)
class Command:
    """A command or group of the tree, with its help text split for the man page."""

    path: tuple[str, ...]  # () for xswarm itself, ("models", "list") for `xswarm models list`
    summary: str  # the first line of the help
    description: tuple[str, ...]  # paragraphs after the summary (help text and epilog prose)
    examples: tuple[str, ...]  # lines of the Examples block
    options: tuple[Option, ...]
    arguments: tuple[Argument, ...]
    subcommands: tuple[Command, ...]
    optional_subcommand: bool = False  # a group that does something alone (`xswarm history`)

    @property
    def key(self) -> str:
        """``talk``, ``models/list``; ``""`` for the root: how the scripts name a command."""
        return "/".join(self.path)

    @property
    def is_group(self) -> bool:
        return bool(self.subcommands)

    def walk(self) -> Iterator[Command]:
        yield self
        for sub in self.subcommands:
            yield from sub.walk()

    def usage(self) -> str:
        words = [PROG, *self.path]
        if self.options:
            words.append("[OPTIONS]")
        if self.is_group:
            words.append("[COMMAND [ARGS]...]" if self.optional_subcommand else "COMMAND [ARGS]...")
        for arg in self.arguments:
            word = arg.metavar + ("..." if arg.variadic else "")
            if not arg.required and not arg.metavar.startswith("["):
                word = f"[{word}]"
            words.append(word)
        return " ".join(words)


def load_app() -> Any:
    """The root click-like command of xswarm's typer app."""
    import typer.main

    import xswarm.cli

    return typer.main.get_command(xswarm.cli.app)


def _callback_name(param: Any) -> str | None:
    """The name of the typer ``autocompletion=`` function behind a parameter, if any."""
    wrapper = getattr(param, "_custom_shell_complete", None)
    if wrapper is None:
        return None
    original = inspect.getclosurevars(wrapper).nonlocals.get("autocompletion", wrapper)
    return str(getattr(original, "__name__", ""))


def _is_path(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, PurePath)


def value_of(key: str, param: Any) -> Values:
    """What the value of ``param`` of command ``key`` completes to (see the module doc)."""
    if (key, param.name) in PARAM_VALUES:
        return PARAM_VALUES[(key, param.name)]
    callback = _callback_name(param)
    if callback is not None:
        if callback not in CALLBACK_VALUES:
            raise SystemExit(
                f"{key or PROG}: {param.name} completes with {callback}(), which "
                "tools/gen_shell_docs.py does not know: add it to CALLBACK_VALUES"
            )
        return CALLBACK_VALUES[callback]
    for opt in param.opts:
        if opt in OPTION_VALUES:
            return OPTION_VALUES[opt]
    descriptor = param.type_descriptor
    if descriptor.choices is not None:
        return choices(*(str(getattr(c, "value", c)) for c in descriptor.choices))
    element = typing.get_args(descriptor.annotation) if descriptor.is_list else ()
    if descriptor.is_path or descriptor.is_file or any(_is_path(t) for t in element):
        info = descriptor.parameter_info
        only_dirs = getattr(info, "dir_okay", True) and not getattr(info, "file_okay", True)
        return DIRS if only_dirs else FILES
    return FREE


def _metavar(param: Any, values: Values) -> str:
    if param.metavar:
        return str(param.metavar).removesuffix("...")  # usage() adds it to repeated arguments
    if values.kind == "names":
        return METAVARS.get(values.names, "NAME")
    if values.kind == "files":
        return "FILE"
    if values.kind == "dirs":
        return "DIR"
    if values.kind == "choices":
        return "|".join(values.choices)
    if param.name in NAME_METAVARS:
        return NAME_METAVARS[param.name]
    annotation = param.type_descriptor.annotation
    if annotation is int:
        return "N"
    return str(param.name).upper().replace("_", "-")


def _default(param: Any) -> str | None:
    if not getattr(param, "show_default", False) or getattr(param, "is_flag", False):
        return None
    if param.default in (None, (), []) or callable(param.default):
        return None
    return str(param.default)


def _range(param: Any) -> str:
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None and high is not None:
        return f" From {low} to {high}."
    if low is not None:
        return f" At least {low}."
    if high is not None:
        return f" At most {high}."
    return ""


def _option(key: str, param: Any) -> Option:
    flag = bool(getattr(param, "is_flag", False) or getattr(param, "count", False))  # -vvv
    values = None if flag else value_of(key, param)
    envvar = param.envvar if isinstance(param.envvar, str) else None
    return Option(
        name=param.name,
        longs=tuple(s for s in param.opts if s.startswith("--")),
        shorts=tuple(s for s in param.opts if not s.startswith("--")),
        secondary=tuple(param.secondary_opts),
        help=(getattr(param, "help", None) or "").strip() + _range(param),
        values=values,
        metavar="" if values is None else _metavar(param, values),
        default=_default(param),
        envvar=envvar,
    )


def _argument(key: str, param: Any) -> Argument:
    values = value_of(key, param)
    return Argument(
        name=param.name,
        metavar=_metavar(param, values),
        help=(getattr(param, "help", None) or "").strip(),
        required=bool(param.required),
        variadic=param.nargs == -1,
        values=values,
    )


EXAMPLES_HEADING: Final = re.compile(r"^\s*Examples?:\s*$", re.M)


def split_help(text: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """Help text (and epilog) -> (summary, description paragraphs, example lines)."""
    text = inspect.cleandoc(text.replace("\b", ""))
    match = EXAMPLES_HEADING.search(text)
    prose, examples = (text[: match.start()], text[match.end() :]) if match else (text, "")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", prose) if p.strip()]
    summary = paragraphs[0] if paragraphs else ""
    lines = tuple(line.strip() for line in examples.splitlines() if line.strip())
    return summary, tuple(paragraphs[1:]), lines


def _command(cmd: Any, path: tuple[str, ...], parent: Any) -> Command:
    from typer._click import Context

    ctx = Context(
        cmd, info_name=path[-1] if path else PROG, parent=parent, **(cmd.context_settings or {})
    )
    key = "/".join(path)
    text = (cmd.help or "") + "\n\n" + (cmd.epilog or "" if path else "")
    summary, description, examples = split_help(text)
    options, arguments = [], []
    for param in cmd.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            arguments.append(_argument(key, param))
        else:
            options.append(_option(key, param))
    subs = []
    for name, sub in getattr(cmd, "commands", {}).items():
        if not sub.hidden:
            subs.append(_command(sub, (*path, name), ctx))
    return Command(
        path=path,
        summary=summary,
        description=description,
        examples=examples,
        options=tuple(options),
        arguments=tuple(arguments),
        subcommands=tuple(subs),
        optional_subcommand=bool(getattr(cmd, "invoke_without_command", False)),
    )


def describe(root: Any | None = None) -> Command:
    """The visible command tree (hidden commands and options left out)."""
    return _command(root if root is not None else load_app(), (), None)


# --- shell quoting helpers ------------------------------------------------------------


def sh_single(text: str) -> str:
    """``text`` as one single-quoted word for sh, bash and zsh (not fish: see fish_single)."""
    return "'" + text.replace("'", "'\\''") + "'"


def fish_single(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def first_sentence(text: str, limit: int = 80) -> str:
    """A one-line description for a completion menu."""
    text = " ".join(text.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    text = match.group(1) if match else text
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _header(comment: str, shell: str, install: Iterable[str]) -> str:
    lines = [
        f"{comment} {shell} completion for xswarm.",
        f"{comment} Generated by tools/gen_shell_docs.py from the CLI definition: do not edit,",
        f"{comment} regenerate with: {REGENERATE}",
        f"{comment} Values only xswarm knows (personas, models, devices, sessions) come from",
        f"{comment} `xswarm _complete KIND`. Install:",
        *(f"{comment}   {line}" for line in install),
    ]
    return "\n".join(lines) + "\n"


def _value_options(command: Command) -> list[Option]:
    return [o for o in command.options if o.values is not None]


# --- bash -----------------------------------------------------------------------------


def _bash_action(values: Values) -> str:
    if values.kind == "files":
        return '_xswarm_files "$cur"'
    if values.kind == "dirs":
        return '_xswarm_dirs "$cur"'
    if values.kind == "choices":
        return _bash_words(" ".join(values.choices))
    if values.kind == "names":
        action = f'_xswarm_names {values.names} "$cur"'
        return action + ' || _xswarm_dirs "$cur"' if values.or_dirs else action
    return ":"  # free text: offer nothing


def _bash_words(words: str) -> str:
    return f'_xswarm_words {sh_single(words)} "$cur"'


def _bash_case(patterns: Iterable[str]) -> str:
    """``case`` patterns, quoted; a trailing ``*`` stays a wildcard."""

    def one(pattern: str) -> str:
        if pattern.endswith("*"):
            return (sh_single(pattern[:-1]) if pattern[:-1] else "") + "*"
        return sh_single(pattern) if pattern else '""'

    return "|".join(one(p) for p in patterns)


def render_bash(tree: Command) -> str:
    commands = list(tree.walk())
    out = [
        _header(
            "#",
            "bash",
            [
                "source it from ~/.bashrc, or copy it to",
                "~/.local/share/bash-completion/completions/xswarm (bash-completion loads it).",
            ],
        ),
        BASH_HELPERS,
        "# True when WORD is an option of command PATH that takes a value.",
        "_xswarm_takes_value() {",
        '    case "$1:$2" in',
    ]
    patterns = [f"{c.key}:{s}" for c in commands for o in _value_options(c) for s in o.spellings]
    if patterns:
        out.append(f"        {_bash_case(patterns)}) return 0 ;;")
    out += ["    esac", "    return 1", "}", ""]
    sub_patterns = [f"{c.key}:{s.path[-1]}" for c in commands for s in c.subcommands]
    out += [
        "_xswarm() {",
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev='' path='' word i npos=0",
        "    COMPREPLY=()",
        "    # `--opt=value`: bash splits the word at '=', so the option is one or two words back",
        "    if [[ $cur == = ]]; then",
        "        prev=${COMP_WORDS[COMP_CWORD - 1]} cur=''",
        "    elif ((COMP_CWORD > 1)) && [[ ${COMP_WORDS[COMP_CWORD - 1]} == = ]]; then",
        "        prev=${COMP_WORDS[COMP_CWORD - 2]}",
        "    elif ((COMP_CWORD > 0)); then",
        "        prev=${COMP_WORDS[COMP_CWORD - 1]}",
        "    fi",
        "    # Walk the words before the cursor: the command path, skipping options and values.",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        word=${COMP_WORDS[i]}",
        "        if [[ $word == -* ]]; then",
        '            if _xswarm_takes_value "$path" "$word"; then',
        "                ((i++))",
        "                [[ ${COMP_WORDS[i]} == = ]] && ((i++))",
        "            fi",
        "            continue",
        "        fi",
        '        case "$path:$word" in',
        f"            {_bash_case(sub_patterns)}) path=${{path:+$path/}}$word npos=0 ;;",
        "            *) ((npos++)) ;;",
        "        esac",
        "    done",
        "    # The value of an option.",
        '    case "$path:$prev" in',
    ]
    for c in commands:
        for o in _value_options(c):
            assert o.values is not None
            pattern = _bash_case(f"{c.key}:{s}" for s in o.spellings)
            out.append(f"        {pattern}) {_bash_action(o.values)}; return ;;")
    out += [
        "    esac",
        "    # Options: when the word starts with '-'.",
        "    if [[ $cur == -* ]]; then",
        '        case "$path" in',
    ]
    for c in commands:
        spellings = " ".join(s for o in c.options for s in o.spellings)
        out.append(f"            {_bash_case([c.key])}) {_bash_words(spellings)} ;;")
    out += [
        "        esac",
        "        return",
        "    fi",
        "    # Sub-commands, or positional arguments by their place (npos).",
        '    case "$path:$npos" in',
    ]
    for c in commands:
        if c.is_group:
            words = " ".join(s.path[-1] for s in c.subcommands)
            out.append(f"        {_bash_case([c.key + ':0'])}) {_bash_words(words)} ;;")
            continue
        for place, arg in enumerate(c.arguments):
            pattern = f"{c.key}:*" if arg.variadic else f"{c.key}:{place}"
            out.append(f"        {_bash_case([pattern])}) {_bash_action(arg.values)} ;;")
        if not c.arguments or not c.arguments[-1].variadic:
            # nothing positional left to give: offer the options instead
            spellings = " ".join(s for o in c.options for s in o.spellings)
            out.append(f"        {_bash_case([c.key + ':*'])}) {_bash_words(spellings)} ;;")
    out += [
        "    esac",
        "}",
        "",
        "complete -F _xswarm xswarm",
        "",
    ]
    return "\n".join(out)


BASH_HELPERS: Final = r"""
# Add to COMPREPLY the words of LIST (one string) that start with CUR.
_xswarm_words() {
    local IFS=$' \t\n'
    COMPREPLY+=($(compgen -W "$1" -- "$2"))
}

# Add file (or directory) names starting with CUR; names with spaces stay whole.
_xswarm_files() {
    local IFS=$'\n'
    compopt -o filenames 2>/dev/null
    COMPREPLY+=($(compgen -f -- "$1"))
}

_xswarm_dirs() {
    local IFS=$'\n'
    compopt -o filenames 2>/dev/null
    COMPREPLY+=($(compgen -d -- "$1"))
}

# Add the names `xswarm _complete KIND` lists (NAME<TAB>DESCRIPTION lines) that start
# with CUR, quoted for the command line; false when there is none (xswarm cannot list
# them, or none matches), so that `|| _xswarm_dirs` can offer directories instead.
_xswarm_names() {
    local line name found=1
    while IFS= read -r line; do
        name=${line%%$'\t'*}
        if [[ -n $name && $name == "$2"* ]]; then
            COMPREPLY+=("$(printf '%q' "$name")")
            found=0
        fi
    done < <(command xswarm _complete "$1" 2>/dev/null)
    return $found
}
"""


# --- zsh ------------------------------------------------------------------------------


def _zsh_desc(text: str) -> str:
    """Text for inside ``[...]`` of an _arguments spec (backslashes and brackets escaped)."""
    text = first_sentence(text)
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def _zsh_action(values: Values) -> str:
    if values.kind == "files":
        return "_files"
    if values.kind == "dirs":
        return "_files -/"
    if values.kind == "choices":
        return "(" + " ".join(values.choices) + ")"
    if values.kind == "names":
        # {...}: run as code, without the description options _arguments adds to a command
        return "{_xswarm_names " + values.names + (" dirs" if values.or_dirs else "") + "}"
    return " "


def _zsh_message(metavar: str) -> str:
    return metavar.lower().replace(":", "").replace("|", " or ") or "value"


def _zsh_option_specs(command: Command) -> list[str]:
    specs = []
    for o in command.options:
        if "--help" in o.spellings:
            exclusion = "(- *)"
        elif len(o.spellings) > 1:
            exclusion = "(" + " ".join(o.spellings) + ")"  # each spelling excludes the others
        else:
            exclusion = ""
        tail = ""
        if o.values is not None:
            tail = f":{_zsh_message(o.metavar)}:{_zsh_action(o.values)}"
        for spellings, text in o.switches():
            # the value as the next word, as --help shows it (no `--persona=` insertion)
            body = f"[{_zsh_desc(text)}]{tail}"
            if len(spellings) > 1:  # '(-p --persona)'{-p,--persona}'[help]:persona:action'
                specs.append(
                    sh_single(exclusion) + "{" + ",".join(spellings) + "}" + sh_single(body)
                )
            else:
                specs.append(sh_single(f"{exclusion}{spellings[0]}{body}"))
    return specs


def _zsh_function_name(command: Command) -> str:
    return "_" + "_".join([PROG, *command.path]).replace("-", "_")


def render_zsh(tree: Command) -> str:
    out = [
        "#compdef xswarm",
        _header(
            "#",
            "zsh",
            [
                "copy it as _xswarm into a directory of your $fpath (before compinit runs),",
                "e.g. ~/.zfunc with `fpath=(~/.zfunc $fpath)` in ~/.zshrc.",
            ],
        ),
        ZSH_HELPERS,
    ]
    for command in tree.walk():
        fn = _zsh_function_name(command)
        specs = _zsh_option_specs(command)
        out.append(f"{fn}() {{")
        if command.is_group:
            out += [
                "    local curcontext=$curcontext state state_descr line",
                "    typeset -A opt_args",
                "    _arguments -C -s -S \\",
                *(f"        {spec} \\" for spec in specs),
                "        '1: :->command' \\",
                "        '*:: :->argument'",
                "    case $state in",
                "    command)",
                "        local -a commands=(",
            ]
            for sub in command.subcommands:
                item = f"{sub.path[-1]}:{first_sentence(sub.summary)}"
                out.append(f"            {sh_single(item)}")
            label = " ".join([PROG, *command.path, "command"])
            context = "-".join([PROG, *command.path])
            out += [
                "        )",
                f"        _describe -t commands {sh_single(label)} commands",
                "        ;;",
                "    argument)",
                f"        curcontext=${{curcontext%:*:*}}:{context}-$words[1]:",
                "        case $words[1] in",
            ]
            for sub in command.subcommands:
                out.append(f"        {sub.path[-1]}) {_zsh_function_name(sub)} ;;")
            out += ["        esac", "        ;;", "    esac", "}", ""]
            continue
        for place, arg in enumerate(command.arguments):
            position = "*" if arg.variadic else str(place + 1)
            specs.append(sh_single(f"{position}:{_zsh_message(arg.metavar)}:{_zsh_action(arg.values)}"))
        out.append("    _arguments -s -S \\")
        out += [f"        {spec} \\" for spec in specs[:-1]]
        out += [f"        {specs[-1]}", "}", ""]
    out += [
        'if [[ $zsh_eval_context[-1] == loadautofunc ]]; then',
        '    _xswarm "$@"  # autoloaded from $fpath',
        "else",
        "    compdef _xswarm xswarm  # sourced",
        "fi",
        "",
    ]
    return "\n".join(out)


ZSH_HELPERS: Final = r"""
# Offer the names `xswarm _complete KIND` lists (NAME<TAB>DESCRIPTION lines);
# with a second argument, directories too (a model name or a checkpoint directory).
_xswarm_names() {
    local -a items
    local line name desc
    for line in ${(f)"$(command xswarm _complete $1 2>/dev/null)"}; do
        name=${${line%%$'\t'*}//:/\\:} desc=${line#*$'\t'}
        if [[ -n $desc && $desc != $line ]]; then
            items+=("$name:$desc")
        else
            items+=("$name")
        fi
    done
    _describe -t $1 ${1//-/ } items
    [[ -n $2 ]] && _files -/
    return 0
}
"""


# --- fish -----------------------------------------------------------------------------


def _fish_action(values: Values) -> str:
    if values.kind == "files":
        return "-r -F"
    if values.kind == "dirs":
        return "-x -a '(__fish_complete_directories (commandline -ct))'"
    if values.kind == "choices":
        return "-x -a " + fish_single(" ".join(values.choices))
    if values.kind == "names":
        extra = "; __fish_complete_directories (commandline -ct)" if values.or_dirs else ""
        return f"-x -a '(__xswarm_names {values.names}{extra})'"
    return "-x"


def _fish_key(command: Command) -> str:
    """``xswarm/models/list``: a command's path as the fish script names it (no quoting needed)."""
    key = "/".join([PROG, *command.path])
    assert re.fullmatch(r"[A-Za-z0-9_/-]+", key), key
    return key


def render_fish(tree: Command) -> str:
    commands = list(tree.walk())
    value_patterns = [
        f"{_fish_key(c)}:{s}" for c in commands for o in _value_options(c) for s in o.spellings
    ]
    sub_patterns = [f"{_fish_key(c)}:{s.path[-1]}" for c in commands for s in c.subcommands]
    out = [
        _header(
            "#",
            "fish",
            ["copy it to ~/.config/fish/completions/xswarm.fish"],
        ),
        "# Print the command path so far (xswarm, xswarm/talk, xswarm/models/list, ...)",
        "# and how many positional arguments it has already been given, on two lines.",
        "function __xswarm_state",
        "    set -l path xswarm",
        "    set -l npos 0",
        "    set -l skip 0",
        "    for word in (commandline -opc)[2..-1]",
        "        if test $skip = 1",
        "            set skip 0",
        "            continue",
        "        end",
        '        switch "$path:$word"',
        "            case " + " ".join(fish_single(p) for p in value_patterns),
        "                set skip 1",
        "            case " + " ".join(fish_single(p) for p in sub_patterns),
        "                set path $path/$word",
        "                set npos 0",
        "            case '*:-*'",
        "            case '*'",
        "                set npos (math $npos + 1)",
        "        end",
        "    end",
        "    printf '%s\\n' \"$path\" $npos",
        "end",
        "",
        "# True when the command path is PATH (and, with a second argument N, when the",
        "# positional argument being typed is the N-th, from 0; N+ means N or later).",
        "function __xswarm_at",
        "    set -l state (__xswarm_state)",
        '    test "$state[1]" = "$argv[1]"; or return 1',
        "    set -q argv[2]; or return 0",
        "    set -l n (string replace '+' '' -- $argv[2])",
        '    if string match -q -- "*+" $argv[2]',
        "        test $state[2] -ge $n",
        "    else",
        "        test $state[2] -eq $n",
        "    end",
        "end",
        "",
        "# The names `xswarm _complete KIND` lists, as NAME<TAB>DESCRIPTION lines.",
        "function __xswarm_names",
        "    command xswarm _complete $argv[1] 2>/dev/null",
        "end",
        "",
        "complete -c xswarm -f  # no file names unless an option or argument takes one",
    ]
    for c in commands:
        at = _fish_key(c)
        out.append("")
        out.append(f"# xswarm {' '.join(c.path)}".rstrip())
        for sub in c.subcommands:
            out.append(
                f"complete -c xswarm -n '__xswarm_at {at}' -a {fish_single(sub.path[-1])} "
                f"-d {fish_single(first_sentence(sub.summary))}"
            )
        for o in c.options:
            for spellings, text in o.switches():
                words = [f"complete -c xswarm -n '__xswarm_at {at}'"]
                words += [f"-l {x[2:]}" if x.startswith("--") else f"-s {x[1:]}" for x in spellings]
                if o.values is not None:
                    words.append(_fish_action(o.values))
                words.append(f"-d {fish_single(first_sentence(text))}")
                out.append(" ".join(words))
        for place, arg in enumerate(c.arguments):
            n = f"{place}+" if arg.variadic else str(place)
            action = _fish_action(arg.values)
            if action == "-x":
                continue  # free text: nothing to offer
            action = action.replace("-x ", "").replace("-r ", "")
            out.append(
                f"complete -c xswarm -n '__xswarm_at {at} {n}' {action} "
                f"-d {fish_single(first_sentence(arg.help))}"
            )
    out.append("")
    return "\n".join(out)


# --- man page -------------------------------------------------------------------------

_OPTION_WORD: Final = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")  # -p, --input-device


def roff_text(text: str) -> str:
    """Prose for a roff line: backslashes escaped, the dashes of options as ``\\-``.

    Other hyphens (full-duplex) stay hyphens; an option's are minus signs, so that
    the rendered page can be searched and copied from.
    """
    text = text.replace("\\", "\\e")
    text = _OPTION_WORD.sub(lambda m: m.group(0).replace("-", "\\-"), text)
    return _roff_line_start(text)


def roff_code(text: str) -> str:
    """A line of a literal example: every dash is a real minus (copy-pasteable)."""
    return _roff_line_start(text.replace("\\", "\\e").replace("-", "\\-"))


def _roff_line_start(line: str) -> str:
    return "\\&" + line if line.startswith((".", "'")) else line


def _man_option(o: Option) -> list[str]:
    names = ", ".join(f"\\fB{roff_text(s)}\\fR" for s in o.spellings)
    if o.values is not None:
        names += f" \\fI{roff_text(o.metavar)}\\fR"
    body = o.help or "(no description)"
    if o.values is not None and o.values.kind == "choices" and "|" not in o.metavar:
        body += f" One of: {', '.join(o.values.choices)}."
    if o.default is not None:
        body += f" Default: {o.default}."
    if o.envvar:
        body += f" Environment: {o.envvar}."
    return [".TP", names, roff_text(body)]


def _man_command(c: Command) -> list[str]:
    out = [f".SS {roff_text(' '.join([PROG, *c.path]))}"]
    out += [roff_text(c.usage()).replace(PROG, f"\\fB{PROG}", 1) + "\\fR", ".PP"]
    out.append(roff_text(c.summary))
    for paragraph in c.description:
        out += [".PP", roff_text(paragraph)]
    if c.arguments:
        for arg in c.arguments:
            out += [".TP", f"\\fI{roff_text(arg.metavar)}\\fR", roff_text(arg.help or "")]
    for o in c.options:
        out += _man_option(o)
    if c.examples:
        out += [".PP", "Examples:", ".PP", ".RS 4", ".nf"]
        out += [roff_code(line) for line in c.examples]
        out += [".fi", ".RE"]
    return out


def render_man(tree: Command, template: str) -> str:
    from xswarm import __version__

    synopsis = []
    for c in tree.walk():
        if c.path and not c.is_group:
            synopsis += [roff_text(c.usage()).replace(PROG, f"\\fB{PROG}\\fR", 1), ".br"]
    synopsis += [f"\\fB{PROG}\\fR \\-\\-version", ".br", f"\\fB{PROG}\\fR \\-\\-help"]
    global_options: list[str] = []
    for o in tree.options:
        global_options += _man_option(o)
    commands: list[str] = []
    for c in tree.walk():
        if c.path:
            commands += _man_command(c)
    replacements = {
        "@VERSION@": __version__,
    }
    blocks = {
        "@SYNOPSIS@": synopsis,
        "@GLOBAL_OPTIONS@": global_options,
        "@COMMANDS@": commands,
    }
    out = []
    for line in template.splitlines():
        if line.strip() in blocks:
            out += blocks[line.strip()]
            continue
        for marker, value in replacements.items():
            line = line.replace(marker, value)
        out.append(line)
    text = "\n".join(out) + "\n"
    text_lines = [line for line in out if not line.startswith('.\\"')]  # comments may name them
    leftover = [m for line in text_lines for m in re.findall(r"@[A-Z_]+@", line)]
    if leftover:
        raise SystemExit(f"{MAN_TEMPLATE}: unknown markers {sorted(set(leftover))}")
    return text


# --- driver ---------------------------------------------------------------------------

RENDERERS: Final[Mapping[str, Callable[[Command], str]]] = {
    BASH_FILE: render_bash,
    ZSH_FILE: render_zsh,
    FISH_FILE: render_fish,
}


def generate(tree: Command | None = None) -> dict[str, str]:
    """Every generated file's repository path -> its content."""
    tree = tree or describe()
    files = {path: render(tree) for path, render in RENDERERS.items()}
    files[MAN_FILE] = render_man(tree, (ROOT / MAN_TEMPLATE).read_text(encoding="utf-8"))
    return files


def write(out: Path, files: Mapping[str, str]) -> list[Path]:
    written = []
    for relative, text in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(root: Path, files: Mapping[str, str]) -> list[str]:
    """The generated files under ``root`` whose content differs from ``files``."""
    return [
        name
        for name, text in files.items()
        if not (root / name).is_file() or (root / name).read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write under")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is out of date"
    )
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        outdated = stale(args.out, files)
        for name in outdated:
            print(f"{name}: out of date; run {REGENERATE}", file=sys.stderr)
        return 1 if outdated else 0
    for path in write(args.out, files):
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
