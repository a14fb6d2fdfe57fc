"""What a Tab costs: the generated bash completion against typer's own dynamic completion.

completions/xswarm.bash completes commands and options inside bash and starts
Python only for values xswarm alone knows (``xswarm _complete personas``).
typer's built-in completion (the ``_XSWARM_COMPLETE`` protocol, which its
``--install-completion`` script uses) starts Python and imports the whole CLI
on every Tab. Interleaved in one run, per Tab, median of ``--runs``:

- ``static``: ``xswarm ta<Tab>`` through completions/xswarm.bash (no Python);
- ``values``: ``xswarm talk --persona <Tab>`` through completions/xswarm.bash
  (one ``xswarm _complete personas``);
- ``typer_command`` / ``typer_values``: the same two through typer's protocol.

Each figure includes starting ``bash`` (measured alone as ``bash_alone``), so
subtract it for the completion's own cost. Prints one JSON object.

    python benchmarks/completion.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
SCRIPT: Final = ROOT / "completions" / "xswarm.bash"


def _bash_tab(words: list[str]) -> list[str]:
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    return [
        "bash", "--norc", "--noprofile", "-c",
        f"source {SCRIPT}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _xswarm; "
        'printf "%s\\n" "${COMPREPLY[@]}"',
    ]


def _typer_tab(words: list[str]) -> tuple[list[str], dict[str, str]]:
    env = {"_XSWARM_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(words),
           "COMP_CWORD": str(len(words) - 1)}
    return ["xswarm"], env


def _time(cmd: list[str], extra_env: dict[str, str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, env={**env, **extra_env}, capture_output=True, text=True,
                         check=False, timeout=60).stdout
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    command, values = ["xswarm", "ta"], ["xswarm", "talk", "--persona", ""]
    cases = {
        "bash_alone": (["bash", "--norc", "--noprofile", "-c", ":"], {}),
        "static": (_bash_tab(command), {}),
        "values": (_bash_tab(values), {}),
        "typer_command": _typer_tab(command),
        "typer_values": _typer_tab(values),
    }
    outputs = {name: _time(cmd, extra, env)[1] for name, (cmd, extra) in cases.items()}  # warm
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (cmd, extra) in cases.items():
            times[name].append(_time(cmd, extra, env)[0])
    medians = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "benchmark": "completion",
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cpus",
        "load_average": round(os.getloadavg()[0], 2),
        "runs": args.runs,
        "median_ms": {name: round(m * 1000, 1) for name, m in medians.items()},
        "static_offers": outputs["static"].split(),
        "values_offer": outputs["values"].split(),
        "typer_values_offer": outputs["typer_values"].split(),
        "typer_over_static_command_ratio": round(medians["typer_command"] / medians["static"], 1),
        "typer_over_script_values_ratio": round(medians["typer_values"] / medians["values"], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
