"""Start-up time of ``xswarm --help`` against a bare ``python -c pass``.

Prints one JSON object. Both commands run interleaved, so machine noise hits
them alike; the target is ``xswarm --help`` under 0.3 s (issue 3).

    python benchmarks/startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    help_cmd = [sys.executable, "-m", "xswarm", "--help"]
    bare_cmd = [sys.executable, "-c", "pass"]
    _time(help_cmd)  # warm the page cache and .pyc files
    help_times, bare_times = [], []
    for _ in range(args.runs):
        help_times.append(_time(help_cmd))
        bare_times.append(_time(bare_cmd))
    result = {
        "benchmark": "startup",
        "runs": args.runs,
        "help_median_s": round(statistics.median(help_times), 4),
        "help_max_s": round(max(help_times), 4),
        "python_median_s": round(statistics.median(bare_times), 4),
        "help_over_python_ratio": round(
            statistics.median(help_times) / statistics.median(bare_times), 2
        ),
        "target_s": 0.3,
    }
    result["meets_target"] = result["help_median_s"] < result["target_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
