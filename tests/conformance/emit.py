"""One conformance case's workload, through the OpenTelemetry API only.

The same script runs under otel-dist's and upstream's ``opentelemetry-instrument``:
CONFORMANCE_SPANS spans ``work-<i>`` with three attributes, one WARNING log record and
one counter increment each, then a span ``inject`` whose injected headers are printed
as JSON on stdout.  Everything is flushed by the SDK's exit handlers.
"""

import json
import logging
import os

from opentelemetry import metrics, propagate, trace

spans = int(os.environ.get("CONFORMANCE_SPANS", "3"))
tracer = trace.get_tracer("conformance")
counter = metrics.get_meter("conformance").create_counter("conformance.items")
log = logging.getLogger("conformance")
for i in range(spans):
    with tracer.start_as_current_span(f"work-{i}", attributes={"item.index": i, "item.text": "x" * 40, "ok": True}):
        log.warning("item %d", i)
        counter.add(1)
carrier: dict[str, str] = {}
with tracer.start_as_current_span("inject"):
    propagate.inject(carrier)
print(json.dumps({"injected": carrier}), flush=True)
