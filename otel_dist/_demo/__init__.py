"""``otel-dist demo``: three services, real traffic, a fault, a breaker that opens and heals.

What it does, in order:

1. finds the example services (``services/`` of the source checkout otel-dist runs from);
2. picks where telemetry goes: ``OTEL_EXPORTER_OTLP_ENDPOINT`` if set, else the local
   collector stack if ``otel-dist stack up`` is running, else a span sink inside this
   process (embedded default: nothing else needs to be installed);
3. starts auth, orders and gateway as separate processes on free loopback ports with one
   fresh service secret (auth and orders with plain uvicorn, whose app calls ``bootstrap()``;
   the gateway under ``opentelemetry-instrument``), each with its own SQLite file in a run
   folder, stdout (JSON log lines) in ``<run folder>/<service>.log``;
4. registers a few users, logs them in, and drives traffic through the gateway for
   ``--duration`` seconds, printing one progress line per second;
5. from 30 % to 60 % of the run, makes orders fail every request (``POST /_faults`` with a
   service token), so the gateway's breaker for orders opens, answers 503 at once, then
   probes and closes again once orders recovers;
6. prints a summary: requests and outcomes, one trace across the three services, the breaker
   transitions, where to look; then stops every process it started (also on Ctrl-C).

The parts: ``_sink`` (the in-process OTLP span sink, spans and trace trees), ``_model``
(options and records), ``_services`` (the processes and their environment), ``_traffic``
(requests, the fault phase, breaker transitions from the logs), ``_summary`` (example trace,
metrics, the printed summary), ``_run`` (:func:`run_demo`, the orchestration).
"""

from __future__ import annotations

from ._model import SERVICES as SERVICES
from ._model import DemoError as DemoError
from ._model import DemoOptions as DemoOptions
from ._model import DemoUser as DemoUser
from ._model import Outcome as Outcome
from ._model import Service as Service
from ._model import Traffic as Traffic
from ._run import _Demo as _Demo
from ._run import _interrupt as _interrupt
from ._run import run_demo as run_demo
from ._services import _collector_stack as _collector_stack
from ._services import _services_root as _services_root
from ._services import _stop_all as _stop_all
from ._services import _tail as _tail
from ._services import load_stack_module as load_stack_module
from ._services import source_root as source_root
from ._sink import _KINDS as _KINDS
from ._sink import SinkSpan as SinkSpan
from ._sink import SpanSink as SpanSink
from ._sink import _json_attributes as _json_attributes
from ._sink import _value as _value
from ._sink import span_tree as span_tree
from ._sink import spans_from_otlp_json as spans_from_otlp_json
from ._summary import _short_name as _short_name
from ._traffic import _breaker_transitions as _breaker_transitions
from ._traffic import _classify as _classify
from ._traffic import _read_transitions as _read_transitions
from ._traffic import _trace_id as _trace_id

__all__ = ["DemoOptions", "SinkSpan", "SpanSink", "run_demo", "spans_from_otlp_json"]
