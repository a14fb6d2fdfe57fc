"""``xswarm personas ...`` as users run it: exit codes, one-line errors, files written."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_helpers import run_xswarm

REPO = Path(__file__).resolve().parent.parent
JARVIS = (REPO / "personas" / "jarvis.toml").read_text()
BUILTIN_NAMES = sorted(p.stem for p in (REPO / "personas").glob("*.toml"))


def _replace_line(text: str, start: str, new: str) -> str:
    """``text`` with its (one) line starting with ``start`` replaced by ``new``."""
    lines = text.splitlines()
    (index,) = [i for i, line in enumerate(lines) if line.startswith(start)]
    lines[index] = new
    return "\n".join(lines) + "\n"


def _line_number(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(needle))


# Each case: how to break the file, the line the break is on, and what the message says.
Mutation = Callable[[str], str]
MALFORMED: dict[str, tuple[Mutation, str | None, str]] = {
    "unknown key": (
        lambda t: _replace_line(t, "color =", 'colour = "cyan"'),
        "colour =",
        r'unknown key "colour" \(did you mean "color"\? allowed: name, ',
    ),
    "unknown key in a table": (
        lambda t: _replace_line(t, "text_top_k =", "txt_top_k = 3"),
        "txt_top_k =",
        r'unknown key "txt_top_k" in \[sampling\] \(did you mean "text_top_k"\?',
    ),
    "wrong type": (
        lambda t: _replace_line(t, "greeting =", "greeting = 42"),
        "greeting =",
        r'key "greeting" must be a string, not an integer',
    ),
    "boolean for a number": (
        lambda t: _replace_line(t, "top_k =", "top_k = true"),
        "top_k =",
        r'key "sampling.top_k" must be an integer, not a boolean',
    ),
    "bad colour": (
        lambda t: _replace_line(t, "color =", 'color = "blurple"'),
        "color =",
        r'key "color": "blurple" is not a rich colour',
    ),
    "toml syntax": (
        lambda t: _replace_line(t, "mode =", "mode = duplex"),
        "mode =",
        r"invalid TOML: Invalid value \(at line \d+, column 8\)",
    ),
    "temperature out of range": (
        lambda t: _replace_line(t, "temperature =", "temperature = 3.5"),
        "temperature =",
        r'key "sampling.temperature" must be between 0 and 2, got 3.5',
    ),
    "top_k out of range": (
        lambda t: _replace_line(t, "top_k =", "top_k = 5000"),
        "top_k =",
        r'key "sampling.top_k" must be between 1 and 2047, got 5000',
    ),
    "missing key": (
        lambda t: _replace_line(t, "description =", ""),
        None,
        r'missing key "description"',
    ),
    "bad mode": (
        lambda t: _replace_line(t, "mode =", 'mode = "simplex"'),
        "mode =",
        r'key "mode" must be "duplex" or "cascade", not "simplex"',
    ),
    "name differs from the file": (
        lambda t: _replace_line(t, "name =", 'name = "glados"'),
        "name =",
        r'key "name" is "glados" but the file is jarvis.toml',
    ),
    "unknown moshi model": (
        lambda t: _replace_line(t, "moshi =", 'moshi = "moshiko-q8"'),
        "moshi =",
        r'key "voice.moshi": unknown model "moshiko-q8" \(did you mean "moshiko-mlx-q8"\?\)',
    ),
    "not a moshi model": (
        lambda t: _replace_line(t, "moshi =", 'moshi = "stt-1b-en_fr-mlx"'),
        "moshi =",
        r'key "voice.moshi": "stt-1b-en_fr-mlx" is a stt model, not a Moshi one',
    ),
    "unknown cascade stt model": (
        lambda t: _replace_line(t, "tts =", 'tts = "ears/p010/a.wav"\nstt = "sphnx"'),
        "stt =",
        r'key "voice.stt": unknown STT model \'sphnx\' \(did you mean \'sphinx-en\'\?\)',
    ),
    "cascade tts model that is not one": (
        lambda t: _replace_line(
            t, "tts =", 'tts = "ears/p010/a.wav"\ntts_model = "moshiko-mlx-q8"'
        ),
        "tts_model =",
        r'key "voice.tts_model": \'moshiko-mlx-q8\' is not a TTS model \(it is a moshi model\)',
    ),
    "llm url that is not a URL": (
        lambda t: t + '\n[llm]\nurl = "htp:/bad url"\n',
        "url =",
        r'key "llm.url": "htp:/bad url" is not an http\(s\) URL',
    ),
    "tts voice outside the voice repo": (
        lambda t: _replace_line(t, "tts =", 'tts = "/etc/passwd"'),
        "tts =",
        r'key "voice.tts": "/etc/passwd" is not a kyutai/tts-voices voice',
    ),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_check_reports_a_malformed_persona_in_one_line(tmp_path: Path, case: str) -> None:
    mutate, line_start, message = MALFORMED[case]
    text = mutate(JARVIS)
    path = tmp_path / "jarvis.toml"
    path.write_text(text)
    result = run_xswarm("personas", "check", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    where = f"{path}:{_line_number(text, line_start)}: " if line_start else f"{path}: "
    assert line.startswith(f"xswarm: error: {where}"), line
    assert re.search(message, line), line


def test_check_accepts_every_builtin_and_reports_each_bad_file(tmp_path: Path) -> None:
    good = [str(REPO / "personas" / f"{name}.toml") for name in BUILTIN_NAMES]
    result = run_xswarm("personas", "check", good[0])
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")
    bad = tmp_path / "jarvis.toml"
    bad.write_text(_replace_line(JARVIS, "color =", 'color = "blurple"'))
    result = run_xswarm("personas", "check", *good, str(bad), str(tmp_path / "none.toml"))
    assert result.returncode == 2
    assert result.stdout.splitlines() == [f"{path}: ok" for path in good]
    assert result.stderr.splitlines() == [
        f'xswarm: error: {bad}:5: key "color": "blurple" is not a rich colour '
        '(use a name like "bright_cyan", "#ff8800" or "color(208)")',
        f"xswarm: error: {tmp_path / 'none.toml'}: no such persona file",
    ]


def test_new_writes_a_template_that_check_accepts(isolated_home: Path) -> None:
    result = run_xswarm("personas", "new", "friday", "--from", "glados")
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == isolated_home / "config" / "personas" / "friday.toml"
    assert path.read_text().startswith("# xswarm persona 'friday', made from 'glados'.")
    check = run_xswarm("personas", "check", str(path))
    assert (check.returncode, check.stdout) == (0, "ok\n")
    shown = json.loads(run_xswarm("personas", "show", "friday", "--json").stdout)
    glados = json.loads(run_xswarm("personas", "show", "glados", "--json").stdout)
    assert shown["name"] == "friday" and shown["display_name"] == "Friday"
    for key in ("voice", "sampling", "color", "greeting", "system_prompt", "memory", "mode"):
        assert shown[key] == glados[key]
    again = run_xswarm("personas", "new", "friday")
    assert again.returncode == 2
    assert (
        again.stderr
        == f"xswarm: error: {path} already exists; edit it, or remove it to start again\n"
    )


def test_user_persona_shadows_builtin_in_list_and_show(isolated_home: Path) -> None:
    path = Path(run_xswarm("personas", "new", "jarvis").stdout.strip())
    path.write_text(_replace_line(path.read_text(), "display_name =", 'display_name = "Mine"'))
    listed = {p["name"]: p for p in json.loads(run_xswarm("personas", "list", "--json").stdout)}
    assert sorted(listed) == BUILTIN_NAMES
    assert listed["jarvis"]["display_name"] == "Mine"
    assert listed["jarvis"]["builtin"] is False
    assert listed["jarvis"]["shadows"].endswith("jarvis.toml")
    assert listed["glados"]["builtin"] is True and listed["glados"]["shadows"] is None
    text = run_xswarm("personas", "list").stdout
    assert "jarvis" in text and "(user, shadows built-in)" in text
    shown = json.loads(run_xswarm("personas", "show", "jarvis", "--json").stdout)
    assert shown["source"] == str(path)


def test_env_picks_the_default_and_a_typo_gets_a_suggestion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def default() -> list[str]:
        personas = json.loads(run_xswarm("personas", "list", "--json").stdout)
        return [p["name"] for p in personas if p["default"]]

    assert default() == ["jarvis"]
    monkeypatch.setenv("XSWARM_PERSONA", "glados")
    assert default() == ["glados"]
    assert run_xswarm("personas", "list").stdout.splitlines()[0].startswith("* glados")
    monkeypatch.setenv("XSWARM_PERSONA", "gladso")
    result = run_xswarm("personas", "list")
    assert result.returncode == 0
    assert (
        'unknown persona "gladso" (from XSWARM_PERSONA) (did you mean "glados"?)' in result.stderr
    )


def test_show_unknown_persona_suggests_and_lists() -> None:
    result = run_xswarm("personas", "show", "jarvs")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith('xswarm: error: unknown persona "jarvs" (did you mean "jarvis"?); ')
    assert f"available: {', '.join(BUILTIN_NAMES)}" in line


def test_show_prints_the_persona() -> None:
    result = run_xswarm("personas", "show", "glados")
    assert result.returncode == 0
    assert "GLaDOS" in result.stdout and "bright_yellow" in result.stdout
    assert "\x1b[" not in result.stdout  # no colour codes into a pipe


def test_list_reports_a_broken_user_persona_and_still_lists(isolated_home: Path) -> None:
    directory = isolated_home / "config" / "personas"
    directory.mkdir(parents=True)
    (directory / "broken.toml").write_text('name = "broken"\ncolor = \n')
    result = run_xswarm("personas", "list")
    assert result.returncode == 2
    for name in BUILTIN_NAMES:
        assert name in result.stdout
    (warning,) = result.stderr.splitlines()
    assert warning.startswith(f"xswarm: warning: {directory / 'broken.toml'}:2: invalid TOML")


def test_new_rejects_bad_names_and_bases() -> None:
    result = run_xswarm("personas", "new", "Bad Name")
    assert result.returncode == 2 and "not a valid persona name" in result.stderr
    result = run_xswarm("personas", "new", "cave", "--from", "gladso")
    assert result.returncode == 2 and 'did you mean "glados"' in result.stderr


@pytest.mark.parametrize("command", ["list", "show", "new", "check"])
def test_each_command_has_examples_in_its_help(command: str) -> None:
    result = run_xswarm("personas", command, "--help")
    assert result.returncode == 0
    assert "Examples:" in result.stdout
    assert f"xswarm personas {command}" in result.stdout


def test_shell_completion_offers_persona_names() -> None:
    env = {
        **os.environ,
        "_XSWARM_COMPLETE": "complete_bash",
        "COMP_WORDS": "xswarm personas show s",
        "COMP_CWORD": "3",
    }
    result = run_xswarm(env=env)
    assert result.stdout.split() == [n for n in BUILTIN_NAMES if n.startswith("s")]
