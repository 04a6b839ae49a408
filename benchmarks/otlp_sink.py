"""A local OTLP/HTTP sink: answers 200 to POST /v1/{traces,metrics,logs} and counts what it got.

    python -m benchmarks.otlp_sink --port 4318

``GET /stats`` returns ``{"traces": [requests, bytes], ...}`` so the harness can
check that a scenario really exported what it claims (a broken exporter
would otherwise look fast).
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI, Request, Response

SIGNALS = ("traces", "metrics", "logs")


def build_sink() -> FastAPI:
    app = FastAPI(title="otlp-sink", telemetry={"tracing": False, "metrics": False, "logs": False})
    stats: dict[str, list[int]] = {s: [0, 0] for s in SIGNALS}

    @app.post("/v1/{signal}")
    async def receive(signal: str, request: Request) -> Response:
        body = await request.body()
        if signal in stats:
            stats[signal][0] += 1
            stats[signal][1] += len(body)
        # An empty protobuf Export*ServiceResponse: everything accepted.
        return Response(b"", media_type="application/x-protobuf")

    @app.get("/stats")
    async def get_stats() -> dict[str, list[int]]:
        return stats

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build_sink(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
