"""How long `otel-dist --help` takes, next to a bare interpreter and a full import of otel-dist.

    python -m benchmarks.cli_startup [--runs 10]

The three commands run alternately (machine noise hits all alike); medians, with the load average.
The goal (issue 14): `otel-dist --help` under 0.3 s, which lazy imports in ``otel_dist/__init__.py``
and ``otel_dist/cli.py`` make possible: --help imports neither FastAPI, SQLAlchemy nor the SDK.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "otel-dist --help": [str(BIN / "otel-dist"), "--help"],
    "python -c 'import otel_dist; otel_dist.create_app'": [
        sys.executable,
        "-c",
        "import otel_dist; otel_dist.create_app",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, argv in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - started)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{runs} alternating runs each, load average {load} ({os.cpu_count()} cores)")
    for name, values in times.items():
        print(f"  {name:<55} median {statistics.median(values):.3f} s  (min {min(values):.3f}, max {max(values):.3f})")


if __name__ == "__main__":
    main()
