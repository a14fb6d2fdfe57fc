"""README's set-up commands are the ones CI runs, so a green CI proves the README."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _sh_blocks(text: str) -> list[list[str]]:
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [[line for line in b.splitlines() if line.strip()] for b in blocks]


def test_readme_install_and_test_commands_are_what_ci_runs() -> None:
    readme_blocks = _sh_blocks((ROOT / "README.md").read_text())
    install, test = readme_blocks[0], readme_blocks[1]
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for command in install + test:
        assert command in ci_lines, f"README command not run by .ci/run: {command}"
    assert install == ["python3 -m venv .venv", ".venv/bin/pip install -q -e '.[test]'"]
    assert test == [".venv/bin/pytest"]
