"""What a person sees: ``xswarm talk``'s screen captured through tmux, against snapshots.

A scripted session (the fake engine of tests/test_talk.py, so the words are
known) runs on a real terminal made by ``tmux new-session -d -x W -y 24``;
``tmux capture-pane -p -e`` reads the screen, colours included, in the middle
of the session (status line below the transcript) and after it (status line
gone, summary printed, cursor visible again). Volatile numbers (step times,
levels, elapsed time) are masked before comparing with the committed files in
tests/snapshots/talk/. Run with ``XSWARM_UPDATE_SNAPSHOTS=1`` to rewrite them
after an intended change, and read the diff.

The real CLI with tiny-random is checked the same way for what cannot be
scripted: Ctrl-C in the middle leaves a usable terminal (cursor shown, no
status line left behind).

This module is also the driver that runs inside tmux:
``python -m tests.test_talk_tmux drive IN.WAV OUT.WAV``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots" / "talk"
HEIGHT = 24
ESCAPE = re.compile(r"(\x1b\[[0-9;?]*[A-Za-z])")


def mask(screen: str) -> str:
    """Digits outside escape sequences become ``#``; meters become ``=``; trailing blanks go."""
    parts = ESCAPE.split(screen)
    for i in range(0, len(parts), 2):  # even items are text, odd ones escape sequences
        parts[i] = re.sub(r"[█·]+", "=", re.sub(r"\d+", "#", parts[i]))
    lines = "".join(parts).split("\n")
    return "\n".join(line.rstrip() for line in lines).rstrip("\n") + "\n"


class Tmux:
    """One detached tmux server/session, killed at the end (its own socket: -L)."""

    def __init__(self, width: int, command: str, env: dict[str, str], after: str = "") -> None:
        self.socket = f"xswarm-test-{uuid.uuid4().hex[:8]}"
        self.name = "talk"
        self.env = env
        self._tmux(
            "new-session",
            "-d",
            "-x",
            str(width),
            "-y",
            str(HEIGHT),
            "-s",
            self.name,
            f"{command}; echo '[exit '$?']'; {after} sleep 120",
        )

    def _tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout

    def capture(self) -> str:
        return self._tmux("capture-pane", "-p", "-e", "-t", self.name)

    def plain(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name)

    def cursor_visible(self) -> bool:
        return self._tmux("display", "-p", "-t", self.name, "#{cursor_flag}").strip() == "1"

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.name, *keys)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.plain()
            if predicate(screen):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"screen never matched; last screen:\n{self.plain()}")

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30, check=False
        )


@pytest.fixture
def tmux_env(tmp_path: Path) -> dict[str, str]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: apt install tmux")
    env = dict(os.environ)
    env.update(TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8", PYTHONPATH=str(REPO))
    env.pop("NO_COLOR", None)
    return env


@pytest.fixture
def session(tmux_env: dict[str, str]) -> Iterator[Callable[..., Tmux]]:
    made: list[Tmux] = []

    def start(width: int, command: str, *, no_color: bool, after: str = "") -> Tmux:
        env = dict(tmux_env)
        if no_color:
            env["NO_COLOR"] = "1"
        prefix = "NO_COLOR=1 " if no_color else ""
        made.append(Tmux(width, f"cd {shlex.quote(str(REPO))} && {prefix}{command}", env, after))
        return made[-1]

    yield start
    for tmux in made:
        tmux.kill()


def check_snapshot(name: str, screen: str) -> None:
    path = SNAPSHOTS / f"{name}.txt"
    masked = mask(screen)
    if os.environ.get("XSWARM_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(masked, encoding="utf-8")
    assert path.exists(), f"no snapshot {path}; run with XSWARM_UPDATE_SNAPSHOTS=1 and review it"
    assert masked == path.read_text(encoding="utf-8"), f"screen differs from {path}"


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("no_color", [False, True], ids=["color", "no_color"])
def test_status_line_and_pretty_transcript(
    width: int, no_color: bool, session: Callable[..., Tmux], tmp_path: Path
) -> None:
    python = shlex.quote(sys.executable)
    driver = f"{python} -m tests.test_talk_tmux drive {tmp_path}/in.wav {tmp_path}/out.wav"
    tmux = session(width, driver, no_color=no_color)
    name = f"w{width}-{'nocolor' if no_color else 'color'}"

    mid = tmux.wait_for(lambda s: "Good" in s and "drops" in s, timeout=30)
    assert "\x1b[" not in mid
    lines = [line for line in mid.splitlines() if line.strip()]
    assert lines[-1].startswith("mic ") and len(lines[-1]) <= width - 1  # status at the bottom
    assert not tmux.cursor_visible()  # hidden while the status line is live
    check_snapshot(f"{name}-live", tmux.capture())

    tmux.wait_for(lambda s: "[exit 0]" in s, timeout=30)
    end = tmux.capture()
    assert "drops" not in tmux.plain().split("xswarm: talked")[0]  # the live line was erased
    assert tmux.cursor_visible()
    assert ("\x1b[" in end) is not no_color
    check_snapshot(f"{name}-end", end)


def test_ctrl_c_leaves_the_terminal_usable(session: Callable[..., Tmux], tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "in.wav", np.zeros(24_000 * 60, dtype=np.float32), 24_000)
    home = tmp_path / "home"
    command = (
        f"XSWARM_HOME={home} HF_HOME={home}/hf HF_HUB_OFFLINE=1 {shlex.quote(sys.executable)} "
        f"-m xswarm talk --model tiny-random --input {tmp_path}/in.wav --output {tmp_path}/out.wav"
    )
    # After the exit, the pane prints the terminal's echo flags: both must be on again.
    flags = "stty -a | tr ' ' '\\n' | grep -x -e echo -e echoctl | tr '\\n' ' '; echo;"
    tmux = session(80, command, no_color=False, after=flags)
    tmux.wait_for(lambda s: "drops" in s, timeout=120)
    tmux.keys("C-c")
    screen = tmux.wait_for(lambda s: "[exit 130]" in s and "echoctl" in s, timeout=10)
    assert "echo echoctl" in screen
    assert tmux.cursor_visible()
    assert "Traceback" not in screen
    assert "xswarm: error: interrupted by SIGINT" in screen
    assert "mic " not in screen  # no status line left behind
    assert re.search(r"xswarm: talked 0:\d\d: \d+ frames", screen)


# -- the driver run inside tmux ----------------------------------------------------------------


def drive(in_path: str, out_path: str) -> int:
    """A real-time talk session with the scripted engine, on this process's terminal."""
    import numpy as np
    import soundfile as sf
    import trio

    from tests.test_talk import FakeEngine, thread_worker
    from xswarm.cli._app import env
    from xswarm.errors import XswarmError
    from xswarm.talk import TalkConfig, TalkIO, TalkParts, run_talk

    rng = np.random.default_rng(0)
    sf.write(
        in_path, rng.normal(0, 0.1, int(24_000 * 3.0)).astype(np.float32), 24_000, subtype="FLOAT"
    )
    engine = FakeEngine(step_seconds=0.002)
    config = TalkConfig(input_path=in_path, output_path=out_path)
    io = TalkIO(
        sys.stdout, sys.stderr, sys.stdout.isatty(), sys.stderr.isatty(), env.color, sys.stdin
    )
    parts = TalkParts(
        engine_factory=lambda progress: engine, model_name="scripted", worker_factory=thread_worker
    )
    try:
        trio.run(run_talk, config, io, parts)
    except XswarmError as error:
        print(f"xswarm: error: {error.message}", file=sys.stderr)
        return int(error.exit_code)
    # Hold the last screen a moment so the test can see the status line is gone.
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["drive"]:
    sys.exit(drive(sys.argv[2], sys.argv[3]))
