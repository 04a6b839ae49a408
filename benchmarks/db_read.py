"""CPU cost of one ``Database`` read (a pool checkout and a SELECT by id) inside a request span.

    .venv/bin/python -m benchmarks.db_read [--reads 3000] [--rounds 5] [--count]

Rows, measured alternately round by round in one process each (fresh telemetry per variant):

- ``otel-dist spans``: the default (``OTEL_DIST_DB_INSTRUMENTATION=otel-dist``): a ``connect`` span and a
  statement span, plus ``db.client.operation.duration``;
- ``contrib spans``: ``OTEL_DIST_DB_INSTRUMENTATION=contrib`` (opentelemetry-instrumentation-sqlalchemy);
- ``no telemetry``: ``OTEL_SDK_DISABLED=true``.

Spans go to the SDK's in-memory exporter (``otel_dist.testing.capture_telemetry``); SQLite on a temp file.
CPU time (``time.process_time``) per read, median of the rounds; ``--count``: Python and C calls per read
instead (``benchmarks.calls``; the same on any machine), for changes too small to see through the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.calls import counting_calls

VARIANTS = {
    "otel-dist spans": {},
    "contrib spans": {"OTEL_DIST_DB_INSTRUMENTATION": "contrib"},
    "no telemetry": {"OTEL_SDK_DISABLED": "true"},
}


async def _one_round(env: dict[str, str], reads: int, count: bool = False) -> float:
    from sqlalchemy import insert, select

    from otel_dist import Database
    from otel_dist.testing import capture_telemetry
    from tests.unit._notes_db import metadata, notes

    with capture_telemetry(env=env) as cap, tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite+aiosqlite:///{folder}/notes.db", telemetry=cap.telemetry)
        try:
            await database.create_tables(metadata)
            async with database.sessions() as session:
                await session.execute(insert(notes).values(text="hello"))
                await session.commit()
            tracer = cap.telemetry.tracer("benchmark")

            async def read() -> None:
                with tracer.start_as_current_span("request"):
                    async with database.sessions() as session:
                        (await session.execute(select(notes.c.text).where(notes.c.id == 1))).scalar_one()

            if count:
                await read()  # warm: statement caches filled
                with counting_calls() as counted:
                    for _ in range(100):
                        await read()
                return counted[0] / 100
            started = time.process_time()
            for _ in range(reads):
                await read()
            return (time.process_time() - started) / reads * 1e6
        finally:
            await database.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", action="store_true", help="calls per read instead of CPU time")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one round in a child process
    args = parser.parse_args()
    if args.variant:
        print(asyncio.run(_one_round(VARIANTS[args.variant], args.reads, args.count)))
        return
    if args.count:
        for name in VARIANTS:
            argv = [sys.executable, "-m", "benchmarks.db_read", "--variant", name, "--count"]
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            print(f"  {name:<16} {float(out.strip().splitlines()[-1]):7.0f} calls per read")
        return
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_ in range(1, args.rounds + 1):
        for name in VARIANTS:  # a fresh process per round and variant: no instrumentation left behind
            argv = [sys.executable, "-m", "benchmarks.db_read", "--variant", name, "--reads", str(args.reads)]
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            results[name].append(float(out.strip().splitlines()[-1]))
        print(f"round {round_}/{args.rounds}: " + ", ".join(f"{n} {v[-1]:.0f} µs" for n, v in results.items()))
    print(f"\nCPU per read, median of {args.rounds} rounds of {args.reads}:")
    for name, values in results.items():
        print(f"  {name:<16} {statistics.median(values):7.1f} µs")


if __name__ == "__main__":
    main()
