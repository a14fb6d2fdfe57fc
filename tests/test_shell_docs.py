"""The man page and the shell completions: current, complete, and working in real shells.

completions/* and man/xswarm.1 are generated from the CLI by
tools/gen_shell_docs.py. These tests regenerate them and require identical
bytes (so a changed option cannot ship with stale docs), walk the live CLI to
require every command and option in the man page and in each completion file,
drive the completion scripts in real bash, fish and zsh, and render the man
page with man and groff.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.cli_helpers import run_xswarm

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "tools" / "gen_shell_docs.py"
REGENERATE = "python tools/gen_shell_docs.py"
BUILTIN_PERSONAS = sorted(p.stem for p in (ROOT / "personas").glob("*.toml"))
VENV_BIN = str(Path(sys.executable).parent)  # where the `xswarm` console script is


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_shell_docs", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return _generator()


def _shell_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


# --- generated files are current --------------------------------------------------------


def test_generated_files_are_current(gen: ModuleType, tmp_path: Path) -> None:
    written = gen.write(tmp_path, gen.generate())
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(gen.OUTPUTS)
    stale = [
        name
        for name in gen.OUTPUTS
        if not (ROOT / name).exists()
        or (ROOT / name).read_bytes() != (tmp_path / name).read_bytes()
    ]
    assert not stale, (
        f"{', '.join(stale)} out of date with the CLI definition: run `{REGENERATE}` "
        "and commit the result"
    )


def test_generator_runs_as_a_script_and_checks(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=60)

    assert run("--check").returncode == 1  # nothing there yet
    written = run()
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "man" / "xswarm.1").read_bytes() == (ROOT / "man" / "xswarm.1").read_bytes()
    assert (run("--check").returncode, run("--check").stderr) == (0, "")
    with (tmp_path / "completions" / "_xswarm").open("a") as script:
        script.write("# edited by hand\n")
    check = run("--check")
    assert check.returncode == 1
    assert check.stderr == f"completions/_xswarm: out of date; run {REGENERATE}\n"


# --- every command and option is documented and completed -------------------------------


def _live_tree() -> Iterator[tuple[tuple[str, ...], Any, list[Any]]]:
    """(path, command, visible params) for every visible command, walked from the CLI itself."""
    import typer.main
    from typer._click import Context

    import xswarm.cli

    def walk(cmd: Any, path: tuple[str, ...], parent: Any) -> Iterator[Any]:
        ctx = Context(cmd, info_name=path[-1] if path else "xswarm", parent=parent,
                      **(cmd.context_settings or {}))
        params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False)]
        yield path, cmd, params
        for name, sub in getattr(cmd, "commands", {}).items():
            if not sub.hidden:
                yield from walk(sub, (*path, name), ctx)

    yield from walk(typer.main.get_command(xswarm.cli.app), (), None)


def _roff(spelling: str) -> str:
    return spelling.replace("-", "\\-")


def _man_sections() -> dict[tuple[str, ...], str]:
    """Man page text per command: the GLOBAL OPTIONS section for (), `.SS xswarm X` for X."""
    text = (ROOT / "man" / "xswarm.1").read_text()
    sections: dict[tuple[str, ...], str] = {}
    glob = re.search(r"^\.SH GLOBAL OPTIONS\n(.*?)^\.SH ", text, re.S | re.M)
    assert glob, "man page has no GLOBAL OPTIONS section"
    sections[()] = glob.group(1)
    for match in re.finditer(r"^\.SS xswarm (.+?)\n(.*?)(?=^\.S[SH] )", text, re.S | re.M):
        sections[tuple(match.group(1).split())] = match.group(2)
    return sections


def _zsh_functions() -> dict[str, str]:
    text = (ROOT / "completions" / "_xswarm").read_text()
    return dict(re.findall(r"^(_xswarm\w*)\(\) \{\n(.*?)^\}", text, re.S | re.M))


def test_every_command_and_option_is_in_the_man_page_and_each_completion() -> None:
    man = _man_sections()
    bash = (ROOT / "completions" / "xswarm.bash").read_text()
    fish = (ROOT / "completions" / "xswarm.fish").read_text()
    zsh = _zsh_functions()
    missing: list[str] = []
    checked = 0
    for path, cmd, params in _live_tree():
        where = " ".join(["xswarm", *path])
        key = "/".join(path)
        if path and path not in man:
            missing.append(f"man: no section for {where}")
        zsh_body = zsh.get("_" + "_".join(["xswarm", *path]).replace("-", "_"))
        if zsh_body is None:
            missing.append(f"zsh: no function for {where}")
        fish_lines = [
            line for line in fish.splitlines()
            if f"'__xswarm_at {'/'.join(['xswarm', *path])}" in line
        ]
        bash_key = f"'{key}'" if key else '""'
        bash_options = re.search(
            rf"^\s+{re.escape(bash_key)}\) _xswarm_words '([^']*)'", bash, re.M
        )
        for name in getattr(cmd, "commands", {}):
            if cmd.commands[name].hidden:
                continue
            if f"'{key}:{name}'" not in bash:
                missing.append(f"bash: {where} {name}")
            if not any(f"-a '{name}' " in line for line in fish_lines):
                missing.append(f"fish: {where} {name}")
            if zsh_body is not None and f"'{name}:" not in zsh_body:
                missing.append(f"zsh: {where} {name}")
        for param in params:
            if param.param_type_name == "argument":
                continue
            for spelling in [*param.opts, *param.secondary_opts]:
                checked += 1
                if path in man and f"\\fB{_roff(spelling)}\\fR" not in man[path]:
                    missing.append(f"man: {where} {spelling}")
                if bash_options is None or spelling not in bash_options.group(1).split():
                    missing.append(f"bash: {where} {spelling}")
                flag = f"-l {spelling[2:]}" if spelling.startswith("--") else f"-s {spelling[1:]}"
                if not any(re.search(rf"{re.escape(flag)}( |$)", line) for line in fish_lines):
                    missing.append(f"fish: {where} {spelling}")
                if zsh_body is not None and not re.search(
                    rf"[{{,')]{re.escape(spelling)}[=\[,}}]", zsh_body
                ):
                    missing.append(f"zsh: {where} {spelling}")
    assert checked > 40  # the walk saw the real CLI
    assert not missing, f"missing (run `{REGENERATE}`): " + "; ".join(missing)


def test_scripts_only_ask_for_kinds_that_complete_knows() -> None:
    from xswarm.cli.complete import KINDS

    asked = set()
    for name in ("xswarm.bash", "_xswarm", "xswarm.fish"):
        text = (ROOT / "completions" / name).read_text()
        asked |= set(re.findall(r"_xswarm_names ([a-z-]+)", text))
    assert {"personas", "sessions", "moshi-models", "stt-models", "input-devices"} <= asked
    assert asked <= set(KINDS)


# --- the hidden value lister --------------------------------------------------------------


def test_complete_lists_personas_models_and_nothing_for_unknown_kinds() -> None:
    personas = run_xswarm("_complete", "personas")
    assert personas.returncode == 0 and personas.stderr == ""
    assert [line.split("\t")[0] for line in personas.stdout.splitlines()] == BUILTIN_PERSONAS
    stt = run_xswarm("_complete", "stt-models").stdout.splitlines()
    names = [line.split("\t")[0] for line in stt]
    assert "sphinx-en" in names and "tiny-random-stt" in names and "tiny-random" not in names
    assert all(line.count("\t") == 1 for line in stt)
    unknown = run_xswarm("_complete", "no-such-kind")
    assert (unknown.returncode, unknown.stdout, unknown.stderr) == (0, "", "")


def test_complete_devices_without_portaudio_prints_nothing() -> None:
    for kind in ("input-devices", "output-devices"):
        result = run_xswarm("_complete", kind, hide_portaudio=True)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.pulse
def test_complete_devices_lists_the_null_sink() -> None:
    inputs = run_xswarm("_complete", "input-devices").stdout.splitlines()
    assert "pulse" in [line.split("\t")[0] for line in inputs]
    assert any("default" in line.split("\t")[1] for line in inputs)


def test_complete_does_not_load_mlx_or_numpy() -> None:
    code = (
        "import sys; from xswarm.cli import app; "
        "sys.argv = ['xswarm', '_complete', 'models']; "
        "app(prog_name='xswarm', standalone_mode=False); "
        "print('loaded:', sorted(m for m in ('mlx', 'numpy', 'moshi_mlx') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "loaded: []"
    assert "tiny-random\t" in result.stdout


def test_did_you_mean_for_commands_and_subcommands_but_never_the_hidden_one() -> None:
    top = run_xswarm("tlk")
    assert top.returncode == 2 and "Did you mean 'talk'?" in top.stderr
    sub = run_xswarm("models", "lst")
    assert sub.returncode == 2 and "Did you mean 'list'?" in sub.stderr
    hidden = run_xswarm("complete")
    assert hidden.returncode == 2 and "No such command 'complete'" in hidden.stderr
    assert "_complete" not in hidden.stderr


# --- real shells --------------------------------------------------------------------------

# (command line up to the cursor, what completion must offer exactly)
CASES: list[tuple[str, list[str]]] = [
    ("xswarm ta", ["talk"]),
    ("xswarm talk --per", ["--persona"]),
    ("xswarm talk --persona ", BUILTIN_PERSONAS),
    ("xswarm talk -p g", ["glados"]),
    ("xswarm models ", ["check", "list", "path", "pull"]),
    ("xswarm models pull tiny-random-", ["tiny-random-stt", "tiny-random-tts"]),
    ("xswarm transcribe --format ", ["json", "jsonl", "srt", "txt", "vtt"]),
    ("xswarm transcribe --model sp", ["sphinx-en"]),
    ("xswarm history forget ", BUILTIN_PERSONAS),
    ("xswarm --debug t", ["talk", "transcribe"]),
    ("xswarm talk --input sp", ["speech one.wav"]),
    ("xswarm personas check no", ["notes.txt"]),
    ("xswarm talk --duration ", []),
]


def _bash_complete(line: str, cwd: Path) -> list[str]:
    words = line.split(" ")
    script = (
        f"source {ROOT / 'completions' / 'xswarm.bash'}\n"
        "complete -p xswarm\n"
        f"COMP_WORDS=({' '.join(_bash_quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_xswarm\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True,
                            text=True, cwd=cwd, env=_shell_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    spec, *replies = result.stdout.splitlines()
    assert spec == "complete -F _xswarm xswarm"
    return sorted(reply.replace("\\ ", " ") for reply in replies if reply)


def _bash_quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "speech one.wav").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    return tmp_path


@pytest.mark.parametrize(("line", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bash_completes(line: str, expected: list[str], workdir: Path) -> None:
    assert _bash_complete(line, workdir) == sorted(expected)


def test_bash_completes_an_option_value_after_equals(workdir: Path) -> None:
    # bash splits `--persona=ja` into `--persona` `=` `ja`
    assert _bash_complete("xswarm talk --persona = ja", workdir) == ["jarvis"]
    assert _bash_complete("xswarm talk --persona = jarvis --js", workdir) == ["--json"]


def test_bash_and_fish_complete_session_ids(workdir: Path) -> None:
    from datetime import datetime, timezone

    from xswarm.history import SessionLog
    from xswarm.personas import load_persona

    started = datetime(2026, 11, 25, 17, 3, 1, tzinfo=timezone.utc)
    ids = []
    for days in (0, 1):
        log = SessionLog.open(load_persona("jarvis"), "tiny-random",
                              now=started.replace(day=25 + days))
        log.close({"duration": 1.0})
        ids.append(log.id)
    assert _bash_complete("xswarm history show 2026112", workdir) == sorted(ids)
    assert _bash_complete("xswarm history rm x", workdir) == []
    assert _fish_complete("xswarm history show 2026112", workdir) == sorted(ids)


def _fish_complete(line: str, cwd: Path) -> list[str]:
    fish = shutil.which("fish")
    assert fish, "fish is not installed (apt-get install fish; .ci/run installs it)"
    script = f"source {ROOT / 'completions' / 'xswarm.fish'}; complete -C {_bash_quote(line)}"
    result = subprocess.run([fish, "--no-config", "-c", script], capture_output=True, text=True,
                            cwd=cwd, env=_shell_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    return sorted(out.split("\t")[0] for out in result.stdout.splitlines())


@pytest.mark.parametrize(("line", "expected"), CASES, ids=[c[0] for c in CASES])
def test_fish_completes(line: str, expected: list[str], workdir: Path) -> None:
    assert _fish_complete(line, workdir) == sorted(expected)


def test_zsh_script_parses() -> None:
    zsh = shutil.which("zsh")
    assert zsh, "zsh is not installed (apt-get install zsh; .ci/run installs it)"
    result = subprocess.run([zsh, "-n", str(ROOT / "completions" / "_xswarm")],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr) == (0, "")


ZSH_DEADLINE = 30.0  # s to wait for a completion to show in the pane (a loaded 2-core CI box)


def test_zsh_completes_in_an_interactive_shell(tmp_path: Path) -> None:
    """Real zsh in tmux: compinit loads _xswarm from $fpath, Tab completes."""
    zsh, tmux = shutil.which("zsh"), shutil.which("tmux")
    assert zsh and tmux, "zsh and tmux are needed (.ci/run installs them)"
    fpath = tmp_path / "zfunc"
    fpath.mkdir()
    shutil.copy(ROOT / "completions" / "_xswarm", fpath / "_xswarm")
    rc = tmp_path / "zshrc"
    rc.write_text(
        f"fpath=({fpath} $fpath)\n"
        f"autoload -U compinit && compinit -u -d {tmp_path / 'zcompdump'}\n"
        "PS1='%% '\n"
    )
    socket = str(tmp_path / "tmux.sock")
    env = _shell_env(HOME=str(tmp_path), TERM="xterm", ZDOTDIR=str(tmp_path))

    def tmux_cmd(*args: str) -> str:
        return subprocess.run([tmux, "-S", socket, *args], capture_output=True, text=True,
                              env=env, timeout=30, check=True).stdout

    def wait_for(pattern: str) -> str:
        deadline = time.monotonic() + ZSH_DEADLINE
        while True:
            pane = tmux_cmd("capture-pane", "-p", "-t", "t")
            if re.search(pattern, pane, re.M):
                return pane
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{pane}"
            time.sleep(0.2)

    tmux_cmd("new-session", "-d", "-s", "t", "-x", "120", "-y", "30", f"{zsh} -f")
    try:
        tmux_cmd("send-keys", "-t", "t", "--", f"source {rc}", "Enter")
        wait_for(r"^%\s*$")
        tmux_cmd("send-keys", "-t", "t", "--", "xswarm ta", "Tab")
        wait_for(r"^% xswarm talk\s*$")
        tmux_cmd("send-keys", "-t", "t", "--", "--per", "Tab")
        wait_for(r"^% xswarm talk --persona\s*$")
        tmux_cmd("send-keys", "-t", "t", "--", "Tab")
        pane = wait_for(r"^.*\bjarvis\b")
        assert all(name in pane for name in BUILTIN_PERSONAS), pane
    finally:
        subprocess.run([tmux, "-S", socket, "kill-server"], env=env, capture_output=True,
                       timeout=30)


# --- the man page ---------------------------------------------------------------------------


def test_groff_prints_no_warning() -> None:
    result = subprocess.run(["groff", "-man", "-ww", "-z", str(ROOT / "man" / "xswarm.1")],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")


def test_man_renders_the_page() -> None:
    result = subprocess.run(["man", "--warnings", "-l", str(ROOT / "man" / "xswarm.1")],
                            capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat"})
    assert (result.returncode, result.stderr) == (0, "")
    text = re.sub(r".\x08", "", result.stdout)  # overstrike bold/underline, if any
    assert text.splitlines()[0].split() == ["XSWARM(1)", "User", "Commands", "XSWARM(1)"]
    for heading in ("SYNOPSIS", "COMMANDS", "OUTPUT", "EXIT STATUS", "ENVIRONMENT", "FILES"):
        assert re.search(rf"^{heading}$", text, re.M), heading
    assert "xswarm talk --input q.wav --output a.wav --fast" in text


def test_help_names_the_man_page() -> None:
    result = run_xswarm("--help")
    assert result.returncode == 0
    assert "man xswarm" in result.stdout


# --- installed with the package -------------------------------------------------------------

DATA_FILES = {
    "share/man/man1/xswarm.1": "man/xswarm.1",
    "share/bash-completion/completions/xswarm.bash": "completions/xswarm.bash",
    "share/zsh/site-functions/_xswarm": "completions/_xswarm",
    "share/fish/vendor_completions.d/xswarm.fish": "completions/xswarm.fish",
}


def test_wheel_installs_the_man_page_and_completions(xswarm_wheel: Path) -> None:
    # The real wheel (tests/wheel.py): the data files land under <prefix>/share,
    # where man-db (via PATH) and bash-completion look.
    wheel = xswarm_wheel
    with zipfile.ZipFile(wheel) as archive:
        data = {
            name.split(".data/data/", 1)[1]: archive.read(name)
            for name in archive.namelist()
            if ".data/data/" in name
        }
    assert sorted(data) == sorted(DATA_FILES)
    for installed, source in DATA_FILES.items():
        assert data[installed] == (ROOT / source).read_bytes(), installed


# --- README's map of the tree -----------------------------------------------------------------


def _architecture_block() -> str:
    section = (ROOT / "README.md").read_text().split("## Architecture", 1)[1]
    match = re.search(r"```\n(.*?)```", section, re.S)
    assert match, "README's Architecture section has no tree"
    return match.group(1)


def test_readme_architecture_is_true_to_the_tree() -> None:
    block = _architecture_block()
    package = ROOT / "xswarm"
    unnamed = [
        str(path.relative_to(ROOT))
        for path in sorted(package.rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py")
        and path.parent.name != "cli"  # the map says: one module per command
        and not re.search(rf"\b{re.escape(path.name)}\b", block)
    ]
    unnamed += [
        f"{path.relative_to(ROOT)}/"
        for path in sorted(package.iterdir())
        if path.is_dir() and (path / "__init__.py").exists() and f"{path.name}/" not in block
    ]
    assert not unnamed, f"README's Architecture section does not name: {', '.join(unnamed)}"
    everything = {p.name for p in ROOT.rglob("*") if ".git" not in p.parts}
    named_files = set(re.findall(r"(?<![\w.-])[\w.-]+\.(?:py|bash|fish|sh|in)\b", block))
    ghosts = sorted(named_files - everything)
    ghosts += [
        entry for entry in re.findall(r"^([\w.-]+)/", block, re.M) if not (ROOT / entry).is_dir()
    ]
    assert not ghosts, f"README's Architecture section names what does not exist: {ghosts}"


# --- help text ------------------------------------------------------------------------------


def test_every_command_has_a_summary_and_examples_in_its_help() -> None:
    from typer.testing import CliRunner

    import xswarm.cli

    runner = CliRunner()
    problems = []
    paths = [path for path, _, _ in _live_tree()]
    assert len(paths) > 15
    for path in paths:
        result = runner.invoke(xswarm.cli.app, [*path, "--help"], prog_name="xswarm",
                               env={"COLUMNS": "200", "NO_COLOR": "1"})
        where = " ".join(["xswarm", *path])
        text = result.output
        if result.exit_code != 0 or f"Usage: {where}" not in text:
            problems.append(f"{where}: --help failed ({result.exit_code})")
            continue
        after_usage = text.split(f"Usage: {where}", 1)[1].splitlines()[1:]
        summary = next((line.strip() for line in after_usage if line.strip()), "")
        if not summary or summary.startswith(("╭", "Options", "Arguments")):
            problems.append(f"{where}: no one-line summary")
        examples = text.split("Examples:", 1)[1] if "Examples:" in text else ""
        if not re.search(rf"^\s*{re.escape(where)}\b", examples, re.M):
            problems.append(f"{where}: no Examples block showing `{where} ...`")
    assert not problems, "; ".join(problems)
