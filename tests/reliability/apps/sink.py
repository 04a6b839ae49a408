"""An OTLP/HTTP protobuf sink that counts what it receives (spans, log records, metric exports).

    python -m tests.reliability.apps.sink --port 4318

It decodes every ``POST /v1/traces`` and ``/v1/logs`` body (the SDK exporters send
``application/x-protobuf``) and counts spans and log records per ``service.name``.
``GET /counts`` returns the totals; ``GET /dump`` the decoded batches as OTLP-JSON
(for the secrets scan; capped); ``POST /reset`` zeroes everything.  It runs as its
own process so a test can kill it mid-load and start it again on the same port.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request, Response
from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

DUMP_CAP = 64 * 1024 * 1024  # bytes of OTLP-JSON kept for /dump


def _service(resource: Any) -> str:
    for attr in resource.attributes:
        if attr.key == "service.name":
            return str(attr.value.string_value)
    return "?"


def build_sink() -> FastAPI:
    app = FastAPI(title="otlp-sink", telemetry={"tracing": False, "metrics": False, "logs": False})
    state: dict[str, Any] = {}

    def reset() -> None:
        state.update(spans=Counter(), logs=Counter(), span_names=Counter(), requests=Counter(), dump=[], dump_bytes=0)

    reset()

    def keep(message: Any) -> None:
        if state["dump_bytes"] < DUMP_CAP:
            text = MessageToJson(message, indent=None)
            state["dump"].append(text)
            state["dump_bytes"] += len(text)

    @app.post("/v1/traces")
    async def traces(request: Request) -> Response:
        batch = ExportTraceServiceRequest.FromString(await request.body())
        state["requests"]["traces"] += 1
        for rs in batch.resource_spans:
            service = _service(rs.resource)
            for ss in rs.scope_spans:
                state["spans"][service] += len(ss.spans)
                for span in ss.spans:
                    state["span_names"][f"{service} {span.name}"] += 1
        keep(batch)
        return Response(b"", media_type="application/x-protobuf")

    @app.post("/v1/logs")
    async def logs(request: Request) -> Response:
        batch = ExportLogsServiceRequest.FromString(await request.body())
        state["requests"]["logs"] += 1
        for rl in batch.resource_logs:
            service = _service(rl.resource)
            for sl in rl.scope_logs:
                state["logs"][service] += len(sl.log_records)
        keep(batch)
        return Response(b"", media_type="application/x-protobuf")

    @app.post("/v1/metrics")
    async def metrics(request: Request) -> Response:
        batch = ExportMetricsServiceRequest.FromString(await request.body())
        state["requests"]["metrics"] += 1
        keep(batch)
        return Response(b"", media_type="application/x-protobuf")

    @app.get("/counts")
    async def counts() -> dict[str, Any]:
        return {
            "spans": dict(state["spans"]),
            "logs": dict(state["logs"]),
            "span_names": dict(state["span_names"]),
            "requests": dict(state["requests"]),
        }

    @app.get("/dump")
    async def dump() -> Response:
        return Response("[" + ",".join(state["dump"]) + "]", media_type="application/json")

    @app.post("/reset")
    async def do_reset() -> dict[str, str]:
        reset()
        return {"status": "reset"}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(build_sink(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
