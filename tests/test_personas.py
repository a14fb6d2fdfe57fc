"""Personas as a library: built-ins, validation, defaults, shadowing, templates, packaging."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from xswarm.errors import UsageError
from xswarm.inference.sampling import SamplingConfig
from xswarm.personas import (
    builtin_dir,
    default_persona_name,
    list_personas,
    load_persona,
    new_persona,
    parse_persona,
    render_template,
    user_dir,
)

REPO = Path(__file__).resolve().parent.parent
SOURCE_PERSONAS = sorted((REPO / "personas").glob("*.toml"))


def test_builtin_dir_holds_the_top_level_persona_files() -> None:
    assert [p.name for p in sorted(builtin_dir().glob("*.toml"))] == [
        p.name for p in SOURCE_PERSONAS
    ]
    assert {"jarvis.toml", "glados.toml"} <= {p.name for p in SOURCE_PERSONAS}
    assert len(SOURCE_PERSONAS) >= 4


@pytest.mark.parametrize("path", SOURCE_PERSONAS, ids=lambda p: p.stem)
def test_every_builtin_persona_loads_and_validates(path: Path) -> None:
    from rich.color import Color

    persona = load_persona(path.stem)
    assert persona.name == path.stem
    assert persona.builtin is True
    assert persona.source is not None and persona.source.read_bytes() == path.read_bytes()
    Color.parse(persona.color)  # raises if the colour is not one rich knows
    assert persona.display_name and persona.description and persona.system_prompt.strip()
    assert persona.voice.moshi
    assert persona.voice.tts is None or persona.voice.tts.endswith(".wav")
    assert persona.mode in ("duplex", "cascade")


def test_builtin_personas_are_distinct_characters() -> None:
    personas = list_personas().personas
    assert len({p.color for p in personas}) == len(personas)
    assert len({p.system_prompt for p in personas}) == len(personas)
    assert len({p.greeting for p in personas}) == len(personas)


def test_sampling_becomes_the_engine_config() -> None:
    glados = load_persona("glados")
    config = glados.sampling.to_config(seed=7)
    assert isinstance(config, SamplingConfig)
    assert (config.temperature, config.text_temperature, config.top_k, config.text_top_k) == (
        glados.sampling.temperature,
        glados.sampling.text_temperature,
        glados.sampling.top_k,
        glados.sampling.text_top_k,
    )
    assert config.seed == 7


def test_missing_sampling_takes_moshi_defaults() -> None:
    text = (REPO / "personas" / "jarvis.toml").read_text()
    text = text[: text.index("[sampling]")]
    persona = parse_persona(text, source="jarvis.toml", expect_name="jarvis")
    defaults = SamplingConfig()
    assert persona.sampling.to_config(seed=defaults.seed) == defaults


def test_default_is_jarvis_then_config_then_env(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_persona_name()[0] == "jarvis"
    assert load_persona().name == "jarvis"
    config = isolated_home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('persona = "sage"\n')
    assert load_persona().name == "sage"
    monkeypatch.setenv("XSWARM_PERSONA", "glados")
    assert load_persona().name == "glados"
    assert default_persona_name() == ("glados", "XSWARM_PERSONA")


def test_bad_config_file_is_one_line_with_its_line(isolated_home: Path) -> None:
    config = isolated_home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('# mine\npersona = "sage\n')
    with pytest.raises(UsageError, match=r"config\.toml:2: invalid TOML: .*\(at line 2"):
        load_persona()
    config.write_text("persona = 3\n")
    with pytest.raises(UsageError, match=r'key "persona" must be a persona name'):
        load_persona()


def test_unknown_name_lists_the_available_with_did_you_mean() -> None:
    with pytest.raises(UsageError) as caught:
        load_persona("gladso")
    message = caught.value.message
    assert 'unknown persona "gladso"' in message
    assert 'did you mean "glados"?' in message
    for path in SOURCE_PERSONAS:
        assert path.stem in message


def test_unknown_env_persona_names_its_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XSWARM_PERSONA", "jarvsi")
    with pytest.raises(
        UsageError, match=r'"jarvsi" \(from XSWARM_PERSONA\) \(did you mean "jarvis"'
    ):
        load_persona()


def test_user_persona_shadows_the_builtin() -> None:
    builtin = load_persona("jarvis")
    path = new_persona("jarvis")  # an editable copy of the built-in
    assert path == user_dir() / "jarvis.toml"
    text = path.read_text()
    assert f'color = "{builtin.color}"' in text
    path.write_text(text.replace(f'color = "{builtin.color}"', 'color = "magenta"'))
    mine = load_persona("jarvis")
    assert mine.builtin is False and mine.source == path
    assert mine.color == "magenta"
    assert dataclasses.replace(mine, color=builtin.color) == builtin
    listing = list_personas()
    assert [p.name for p in listing.personas].count("jarvis") == 1
    assert listing.files["jarvis"].shadows == builtin.source


@pytest.mark.parametrize("path", SOURCE_PERSONAS, ids=lambda p: p.stem)
def test_template_parses_back_to_the_same_persona(path: Path) -> None:
    base = load_persona(path.stem)
    again = parse_persona(render_template(base, base.name), source="t.toml", expect_name=base.name)
    assert again == base
    renamed = parse_persona(render_template(base, "other"), source="t.toml", expect_name="other")
    assert dataclasses.replace(renamed, name=base.name, display_name=base.display_name) == base


def test_template_survives_awkward_strings() -> None:
    base = dataclasses.replace(
        load_persona("jarvis"),
        greeting='Say "hi"\\ there\t',
        system_prompt="Line one '''\nline two\n",
        description="ünïcode — ok",
    )
    again = parse_persona(render_template(base, "jarvis"), source="t.toml", expect_name="jarvis")
    assert again == base


def test_new_refuses_to_overwrite_and_bad_names() -> None:
    path = new_persona("friday", "glados")
    before = path.read_text()
    with pytest.raises(UsageError, match="already exists"):
        new_persona("friday")
    assert path.read_text() == before
    with pytest.raises(UsageError, match="not a valid persona name"):
        new_persona("Bad Name")
    with pytest.raises(UsageError, match='did you mean "glados"'):
        new_persona("cave", "gladso")
    assert not (user_dir() / "cave.toml").exists()


def test_a_broken_user_file_does_not_hide_the_others() -> None:
    user_dir().mkdir(parents=True)
    (user_dir() / "broken.toml").write_text('name = "broken"\n')
    listing = list_personas()
    assert {p.stem for p in SOURCE_PERSONAS} == {p.name for p in listing.personas}
    assert len(listing.errors) == 1 and "broken.toml" in listing.errors[0]


def test_wheel_ships_the_builtin_personas(xswarm_wheel: Path, tmp_path: Path) -> None:
    # A real (non-editable) wheel (tests/wheel.py): the built-ins must be inside
    # the package and found there by the loader.
    wheel = xswarm_wheel
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for path in SOURCE_PERSONAS:
            member = f"xswarm/_builtin_personas/{path.name}"
            assert member in names
            assert archive.read(member) == path.read_bytes()
        archive.extractall(tmp_path / "site")
    code = (
        "import xswarm, xswarm.personas as p\n"
        "print(xswarm.__file__)\n"
        "print(' '.join(x.name for x in p.list_personas().personas))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    location, names_line = run.stdout.splitlines()
    assert location.startswith(str(tmp_path / "site"))
    assert names_line.split() == [p.stem for p in SOURCE_PERSONAS]
