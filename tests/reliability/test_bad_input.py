"""Bad input on every edge: hostile trace headers, bytes that are not UTF-8, huge headers, 404 floods.

A malformed, oversized or duplicated traceparent starts a fresh trace; tracestate
and baggage that are too big are dropped; nothing crashes (no 5xx); no
attacker-controlled value becomes a metric label; span attributes stay bounded.
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import SpanKind

from otel_dist._propagation import clean_correlation_id, extract_from_headers
from otel_dist.testing import capture_telemetry, serve_app

from ._support import prom_samples
from .apps.edge import TEMPLATES, build_app

TRACE, PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
VALID_TP = f"00-{TRACE}-{PARENT}-01"
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER"}
CLEAN_ID = re.compile(r"[A-Za-z0-9._:\-/+=@]{1,128}")
# Bounds on attacker-controlled span attributes (see otel_dist/_server.py).
MAX_LEN = {"url.path": 2048, "server.address": 255, "user_agent.original": 256, "otel_dist.correlation_id": 128}


def server_spans(cap: Any) -> list[Any]:
    return [s for s in cap.spans() if s.kind == SpanKind.SERVER]


def assert_bounded(span: Any) -> None:
    attrs = dict(span.attributes)
    for key, limit in MAX_LEN.items():
        assert len(attrs.get(key, "")) <= limit, (key, len(attrs[key]))
    if "server.port" in attrs:
        assert 0 < attrs["server.port"] <= 65535
    assert attrs["http.request.method"] in KNOWN_METHODS


def assert_labels_bounded(metrics_points: list[tuple[dict[str, Any], Any]]) -> set[tuple[Any, ...]]:
    """Every metric label value comes from a fixed set; returns the distinct series."""
    series = set()
    for attrs, _ in metrics_points:
        assert attrs["http.request.method"] in KNOWN_METHODS, attrs
        assert attrs.get("http.route") in (None, *TEMPLATES), attrs
        assert attrs["url.scheme"] in ("http", "https"), attrs
        assert set(attrs) <= {
            "http.request.method",
            "url.scheme",
            "http.route",
            "http.response.status_code",
            "error.type",
        }
        series.add(tuple(sorted(attrs.items())))
    return series


# ------------------------------------------------------------ header parsing, property-based

header_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=300)
hexes = st.text(alphabet="0123456789abcdef", min_size=0, max_size=40)
near_traceparent = st.builds(
    lambda v, t, s, f, sep: sep.join([v, t, s, f]),
    st.sampled_from(["00", "01", "ff", "0", "zz"]),
    hexes,
    hexes,
    st.sampled_from(["01", "00", "1", "xx", "01-extra"]),
    st.sampled_from(["-", "_", " "]),
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(
    traceparent=st.one_of(st.none(), header_text, near_traceparent),
    tracestate=st.one_of(st.none(), header_text),
    baggage=st.one_of(st.none(), header_text, st.text(max_size=10000)),
)
@example(traceparent=VALID_TP + "x" * 200, tracestate=None, baggage=None)
@example(traceparent=VALID_TP, tracestate="a=" + "b" * 600, baggage="k=" + "v" * 9000)
def test_extract_never_raises_and_only_accepts_well_formed_parents(traceparent, tracestate, baggage):
    context = extract_from_headers(traceparent, tracestate, baggage)
    parent = trace.get_current_span(context).get_span_context() if context is not None else None
    if parent is not None and parent.is_valid:
        assert traceparent is not None and len(traceparent) <= 128
        assert format(parent.trace_id, "032x") in traceparent.lower()
        assert len(str(parent.trace_state.to_header())) <= 512


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(raw=st.one_of(st.none(), header_text, st.text(max_size=400)))
def test_correlation_id_is_kept_only_as_a_short_plain_token(raw):
    cleaned = clean_correlation_id(raw)
    assert cleaned is None or (cleaned == raw and CLEAN_ID.fullmatch(cleaned))


# ------------------------------------------------------------ the ASGI layer, property-based

header_name = st.one_of(
    st.sampled_from([b"traceparent", b"tracestate", b"baggage", b"x-correlation-id", b"host", b"user-agent"]),
    st.binary(min_size=1, max_size=20),
)
header_value = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([VALID_TP.encode(), b"h:1\xb2", b"h:99999999999999999999", b"[::1]:8080", b"x" * 5000]),
    near_traceparent.map(lambda s: s.encode("latin-1")),
)
paths = st.one_of(
    st.sampled_from(["/hello/ada", "/items/7", "/items/not-a-number", "/baggage", "/", ""]),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=200).map(lambda p: "/" + p),
    st.text(max_size=3000, alphabet="ab/%\ufffd").map(lambda p: "/hello/" + p),
)
methods = st.one_of(
    st.sampled_from(["GET", "POST", "HEAD"]), st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", max_size=12)
)


async def call_asgi(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8"),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


def test_asgi_layer_survives_any_method_path_and_headers():
    with capture_telemetry(service_name="edge") as cap:
        app = build_app()

        @settings(
            max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(method=methods, path=paths, headers=st.lists(st.tuples(header_name, header_value), max_size=12))
        @example(method="GET", path="/hello/a", headers=[(b"host", b"h:1\xb2")])
        @example(method="GET", path="/hello/a", headers=[(b"traceparent", VALID_TP.encode())] * 2)
        def check(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> None:
            assume(method)
            cap.clear()
            status = asyncio.run(call_asgi(app, method, path, headers))
            assert status < 500
            (span,) = server_spans(cap)
            assert_bounded(span)
            traceparents = [v for k, v in headers if k == b"traceparent"]
            if len(traceparents) != 1:
                assert span.parent is None  # none, or duplicated: a fresh trace
            elif traceparents[0].strip() == VALID_TP.encode():
                assert span.parent is not None and format(span.parent.trace_id, "032x") == TRACE
            # the first non-empty X-Correlation-ID counts; it is kept only if it is a short plain token
            first_corr = next((v for k, v in headers if k == b"x-correlation-id" and v), None)
            expected = clean_correlation_id(first_corr.decode("latin-1")) if first_corr is not None else None
            assert span.attributes.get("otel_dist.correlation_id") == expected

        check()
        series = assert_labels_bounded(cap.metric_points("http.server.request.duration"))
        # method x route-or-none x status: a handful, however many requests were thrown at it
        assert len(series) <= 40, len(series)


# ------------------------------------------------------------ the real server (uvicorn + h11)


def raw_request(base: str, data: bytes) -> bytes:
    """Send raw bytes on a fresh connection; return the status line ('' if the server closed)."""
    host, port = base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        try:
            while b"\r\n" not in received and (chunk := sock.recv(4096)):
                received += chunk
        except ConnectionResetError:
            pass
    return received.split(b"\r\n", 1)[0]


def request(path: bytes, *headers: bytes, method: bytes = b"GET") -> bytes:
    host = [] if any(h.lower().startswith(b"host:") for h in headers) else [b"Host: 127.0.0.1"]
    lines = [method + b" " + path + b" HTTP/1.1", *host, *headers, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


RAW_CASES = {
    "non-UTF-8 bytes in the path": request(b"/hello/\xff\xfe"),
    "percent-encoded invalid UTF-8 in the path": request(b"/hello/%ff%fe%c3%28"),
    "non-UTF-8 trace headers": request(
        b"/hello/a", b"traceparent: \xff\xfe00-" + TRACE.encode(), b"tracestate: \xc3\x28=1", b"baggage: k=\xff"
    ),
    "non-UTF-8 correlation id and user agent": request(b"/hello/a", b"X-Correlation-ID: \xc3\x28", b"User-Agent: \xff"),
    "NUL in a header value": request(b"/hello/a", b"X-A: a\x00b"),
    "3,000 headers": request(b"/hello/a", *(b"X-H%d: v" % i for i in range(3000))),
    "3,000 tracestate headers": request(
        b"/hello/a", b"traceparent: " + VALID_TP.encode(), *[b"tracestate: k=v"] * 3000
    ),
    "one 200 KB header": request(b"/hello/a", b"X-Big: " + b"a" * 200_000),
    "a 60 KB path": request(b"/hello/" + b"a" * 60_000),
    "a 60 KB unknown path": request(b"/" + b"z" * 60_000),
    "a 10 KB Host": request(b"/hello/a", b"Host: " + b"h" * 10_000),
    "Host port with a superscript digit": request(b"/hello/a", b"Host: h:1\xb2"),
    "Host port out of range": request(b"/hello/a", b"Host: h:99999999999999999999999"),
    "two Host headers": request(b"/hello/a", b"Host: a.example", b"Host: b.example"),
    "unknown method": request(b"/hello/a", method=b"PROPFIND"),
    "garbage request line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
}


def test_raw_hostile_requests_never_5xx_and_the_server_keeps_serving():
    with capture_telemetry(service_name="edge") as cap:
        with serve_app(build_app()) as base:
            statuses = {name: raw_request(base, data) for name, data in RAW_CASES.items()}
            after = raw_request(base, request(b"/hello/still-up"))
        spans = server_spans(cap)  # read once the server stopped: every span has ended
        logs = cap.raw_log_text()
        points = cap.metric_points("http.server.request.duration")
    print("raw hostile requests:", {k: v.decode("latin-1") for k, v in statuses.items()})
    for name, status_line in statuses.items():
        code = int(status_line.split()[1]) if status_line.startswith(b"HTTP/1.1 ") else 0
        assert code < 500, (name, status_line)  # 2xx/4xx, or the connection closed by h11 (0)
    assert after.startswith(b"HTTP/1.1 200"), after
    assert "Exception in ASGI application" not in logs
    for span in spans:
        assert_bounded(span)
    assert_labels_bounded(points)


def test_unknown_routes_and_404_floods_add_no_metric_series():
    with capture_telemetry(service_name="edge") as cap, serve_app(build_app()) as base:
        with suppress_http_instrumentation(), httpx.Client(base_url=base) as client:
            for name in ("a", "b"):
                client.get(f"/hello/{name}")
            before = httpx.get(base + "/metrics").text
            flood = [f"/{uuid.uuid4()}/{i}" for i in range(300)] + [f"/hello/{i}/deeper" for i in range(100)]
            statuses = {
                client.request("GET" if i % 3 else "PROPFIND", path).status_code for i, path in enumerate(flood)
            }
            statuses |= {client.get(f"/%ff%fe/{i}").status_code for i in range(50)}
            after = httpx.get(base + "/metrics").text
        points = cap.metric_points("http.server.request.duration")
    name = "http_server_request_duration_seconds_count"
    series_before = {tuple(sorted(labels.items())) for labels, _ in prom_samples(before, name)}
    series_after = {tuple(sorted(labels.items())) for labels, _ in prom_samples(after, name)}
    print(f"404 flood: 450 unknown paths, statuses {statuses}; series {len(series_before)} -> {len(series_after)}")
    assert statuses == {404}
    # At most one new series per method for "no route", whatever the paths were.
    assert len(series_after - series_before) <= 2
    assert "deeper" not in after and not [p for p in flood[:300] if p.split("/")[1] in after]
    assert_labels_bounded(points)


def get(base: str, path: str, headers: list[tuple[str, bytes]]) -> httpx.Response:
    with suppress_http_instrumentation():
        return httpx.get(base + path, headers=headers)


@pytest.mark.parametrize(
    ("headers", "expect_parent"),
    [
        ([("traceparent", VALID_TP.encode())], True),
        ([("traceparent", VALID_TP.encode()), ("traceparent", VALID_TP.encode())], False),  # duplicated
        (
            [
                ("traceparent", f"00-{TRACE}-{PARENT}-01".replace(TRACE, "1" * 32).encode()),
                ("traceparent", VALID_TP.encode()),
            ],
            False,
        ),
        ([("traceparent", (VALID_TP + "-" + "x" * 200).encode())], False),  # oversized
        ([("traceparent", VALID_TP.upper().encode())], False),  # not lowercase hex
        ([("traceparent", f"00-{'0' * 32}-{PARENT}-01".encode())], False),  # all-zero trace id
        ([("traceparent", b"\xff" * 55)], False),  # not even text
    ],
    ids=["valid", "duplicated", "two-different", "oversized", "uppercase", "zero-trace-id", "binary"],
)
def test_traceparent_edge_cases(headers, expect_parent):
    with capture_telemetry(service_name="edge") as cap:
        with serve_app(build_app()) as base:
            response = get(base, "/hello/a", headers)
        (span,) = server_spans(cap)
    assert response.status_code == 200
    if expect_parent:
        assert format(span.parent.span_id, "016x") == PARENT and format(span.context.trace_id, "032x") == TRACE
    else:
        assert span.parent is None and format(span.context.trace_id, "032x") != TRACE


def test_tracestate_and_baggage_repeated_headers_combine_oversized_ones_are_dropped():
    with capture_telemetry(service_name="edge") as cap:
        with serve_app(build_app()) as base:
            tp = ("traceparent", VALID_TP.encode())
            get(base, "/hello/a", [tp, ("tracestate", b"foo=1,bar=2"), ("tracestate", b""), ("tracestate", b"baz=3")])
            get(base, "/hello/b", [tp, ("tracestate", b"a=" + b"b" * 600)])
            combined = get(base, "/baggage", [("baggage", b"k1=v1"), ("baggage", b"k2=v2")]).json()
            oversized = get(base, "/baggage", [("baggage", b"k=" + b"v" * 9000)]).json()
            many = get(base, "/baggage", [("baggage", b"k%d=v" % i) for i in range(2000)]).json()
        first, second = sorted(server_spans(cap), key=lambda s: s.start_time)[:2]
    # W3C: several tracestate headers are one list; the parent is kept either way.
    assert first.parent.trace_state.to_header() == "foo=1,bar=2,baz=3"
    assert format(second.parent.trace_id, "032x") == TRACE and second.parent.trace_state.to_header() == ""
    assert combined == {"k1": "v1", "k2": "v2"}
    assert oversized == {}
    assert len(many) <= 180  # the W3C cap on baggage members; the 8 KB bound applies to the whole


def test_correlation_id_edge_cases():
    cases = [
        ([("X-Correlation-ID", b"req-1"), ("X-Correlation-ID", b"req-2")], "req-1"),  # duplicated: the first
        ([("X-Correlation-ID", b"a" * 129)], None),  # oversized
        ([("X-Correlation-ID", b"\xc3\x28")], None),  # not UTF-8
        ([("X-Correlation-ID", b"id with spaces")], None),
        ([("X-Correlation-ID", b"Bearer eyJhbGciOi")], None),
    ]
    with capture_telemetry(service_name="edge") as cap:
        with serve_app(build_app()) as base:
            responses = [get(base, "/hello/a", headers) for headers, _ in cases]
        spans = sorted(server_spans(cap), key=lambda s: s.start_time)
    for (_, expected), span, response in zip(cases, spans, responses, strict=True):
        assert span.attributes.get("otel_dist.correlation_id") == expected
        # The response header echoes the clean id, or the trace id: never the raw header.
        assert response.headers["x-correlation-id"] == (expected or format(span.context.trace_id, "032x"))
