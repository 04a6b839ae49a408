"""A real OTLP receiver for the conformance suite: OTLP/HTTP (uvicorn) and OTLP/gRPC (grpcio), one process.

Every export request is decoded with the official protobuf classes and kept as a record:
transport, path (HTTP) or method (gRPC), request headers / metadata, Content-Encoding,
and the message as JSON (``MessageToDict``).  ``GET /records`` returns them all.
HTTP paths are free (per-signal endpoints are used as given): the signal is the one
named in the path (``trace``, ``metric`` or ``log``).

    python -m tests.conformance.receiver --http-port 4318 --grpc-port 4317 \
        [--tls-dir DIR --https-port 4319 --grpcs-port 4316]

With ``--tls-dir`` (``certs.make``) it also listens with mutual TLS: HTTPS and gRPC, both requiring a
client certificate signed by the directory's CA; those records say ``https`` / ``grpcs``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import ssl
import threading
import zlib
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REQUESTS = {
    "traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "metrics": (metrics_service_pb2.ExportMetricsServiceRequest, metrics_service_pb2.ExportMetricsServiceResponse),
    "logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
}
_records: list[dict[str, Any]] = []
_lock = threading.Lock()


def _keep(record: dict[str, Any]) -> None:
    with _lock:
        _records.append(record)


def _signal_of(path: str) -> str | None:
    for word, signal in (("trace", "traces"), ("metric", "metrics"), ("log", "logs")):
        if word in path:
            return signal
    return None


async def export(request: Request) -> Response:
    path = request.url.path
    signal = _signal_of(path)
    if signal is None:
        return JSONResponse({"message": f"no signal in path {path}"}, status_code=404)
    body = await request.body()
    encoding = request.headers.get("content-encoding", "")
    if encoding == "gzip":
        body = gzip.decompress(body)
    elif encoding == "deflate":
        body = zlib.decompress(body)
    message = REQUESTS[signal][0]()
    message.ParseFromString(body)
    _keep(
        {
            "transport": request.url.scheme,
            "path": path,
            "signal": signal,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "content_encoding": encoding,
            "body": MessageToDict(message),
        }
    )
    return Response(REQUESTS[signal][1]().SerializeToString(), media_type="application/x-protobuf")


async def records(request: Request) -> JSONResponse:
    with _lock:
        return JSONResponse(list(_records))


def _servicer(base: type, signal: str, transport: str) -> Any:
    _request_class, response_class = REQUESTS[signal]

    class Servicer(base):  # type: ignore[misc, valid-type]
        def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
            _keep(
                {
                    "transport": transport,
                    "path": f"{signal}/Export",
                    "signal": signal,
                    "headers": {k: v for k, v in context.invocation_metadata()},
                    "content_encoding": "",
                    "body": MessageToDict(request),
                }
            )
            return response_class()

    return Servicer()


def serve_grpc(port: int, tls: Path | None = None) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    transport = "grpcs" if tls else "grpc"
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
        _servicer(trace_service_pb2_grpc.TraceServiceServicer, "traces", transport), server
    )
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
        _servicer(metrics_service_pb2_grpc.MetricsServiceServicer, "metrics", transport), server
    )
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(
        _servicer(logs_service_pb2_grpc.LogsServiceServicer, "logs", transport), server
    )
    if tls is None:
        server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        credentials = grpc.ssl_server_credentials(
            [((tls / "server.key").read_bytes(), (tls / "server.pem").read_bytes())],
            root_certificates=(tls / "ca.pem").read_bytes(),
            require_client_auth=True,
        )
        server.add_secure_port(f"127.0.0.1:{port}", credentials)
    server.start()
    return server


app = Starlette(routes=[Route("/records", records, methods=["GET"]), Route("/{path:path}", export, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--tls-dir", type=Path, help="certs.make() output: also listen with mutual TLS")
    parser.add_argument("--https-port", type=int)
    parser.add_argument("--grpcs-port", type=int)
    args = parser.parse_args()
    servers = [serve_grpc(args.grpc_port)]
    configs = [uvicorn.Config(app, host="127.0.0.1", port=args.http_port, log_level="warning")]
    if args.tls_dir:
        servers.append(serve_grpc(args.grpcs_port, args.tls_dir))
        configs.append(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=args.https_port,
                log_level="warning",
                ssl_certfile=str(args.tls_dir / "server.pem"),
                ssl_keyfile=str(args.tls_dir / "server.key"),
                ssl_ca_certs=str(args.tls_dir / "ca.pem"),
                ssl_cert_reqs=ssl.CERT_REQUIRED,
            )
        )

    async def serve() -> None:  # uvicorn chains its signal handlers: SIGTERM stops both servers
        await asyncio.gather(*(uvicorn.Server(config).serve() for config in configs))

    try:
        asyncio.run(serve())
    finally:
        for server in servers:
            server.stop(0)


if __name__ == "__main__":
    main()
