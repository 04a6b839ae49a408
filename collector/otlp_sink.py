"""OTLP/HTTP-JSON sink: records what the collector exported, for tests and the local stack.

The collector's ``otlp_http/sink`` exporter (``encoding: json``) posts OTLP-JSON batches
here. Each POST body to ``/v1/traces``, ``/v1/logs`` or ``/v1/metrics`` is appended as
ONE line to ``<dir>/traces.jsonl``, ``logs.jsonl`` or ``metrics.jsonl`` (the same
layout the contrib fileexporter would have written) and answered ``200 {}``, which
OTLP/HTTP accepts as "everything accepted".

Run:  python collector/otlp_sink.py --dir /tmp/sink --port 4320
Import:  ``make_app(directory)`` returns the Starlette app (e.g. for an in-process server).

It exists because the contrib fileexporter does not resolve at v0.165.1
(see builder-config.yaml). Starlette + uvicorn are project dependencies.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SIGNALS = ("traces", "logs", "metrics")


def make_app(directory: str | Path) -> Starlette:
    """Build the sink app writing ``<signal>.jsonl`` files into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)

    def receiver(signal: str):
        path = out / f"{signal}.jsonl"

        async def receive(request: Request) -> JSONResponse:
            if "json" not in request.headers.get("content-type", ""):
                # The collector must be configured with `encoding: json`.
                return JSONResponse({"message": "only application/json is accepted"}, status_code=415)
            try:
                batch = json.loads(await request.body())
            except ValueError as exc:
                return JSONResponse({"message": f"invalid JSON: {exc}"}, status_code=400)
            # Re-serialise compactly so one batch is exactly one line. The handler
            # never awaits between open and write, so lines cannot interleave.
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(batch, separators=(",", ":")) + "\n")
            return JSONResponse({})

        return receive

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "dir": str(out)})

    routes = [Route(f"/v1/{s}", receiver(s), methods=["POST"]) for s in SIGNALS]
    routes.append(Route("/healthz", healthz, methods=["GET"]))
    return Starlette(routes=routes)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="folder for traces.jsonl / logs.jsonl / metrics.jsonl")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4320)
    args = parser.parse_args(argv)
    uvicorn.run(make_app(args.dir), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
