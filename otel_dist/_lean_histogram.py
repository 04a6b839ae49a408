"""A leaner ``Histogram.record`` for attribute sets that otel-dist builds itself and reuses (the client's).

The SDK's ``record`` re-validates the attribute map on every call (``Measurement.__post_init__``),
copies it, and hashes it again (sorted keys, recursively) in every view of every reader to find
the aggregation it belongs to: ~60 of the ~120 function calls a record costs, on every client
attempt and logical call.  Here the first record of an attribute set takes the SDK's own path
(which creates the aggregations), and then the aggregations it landed in are remembered: later
records go straight to the same aggregation objects, with the same exemplar filter and a
``Measurement`` (a subclass that skips the re-validation of a map known to be clean).

Nothing is remembered, and every record takes the SDK's path, where the shortcut could differ:
a reader whose aggregations are replaced at each collection (delta temporality), an attribute set
past the cardinality limit (overflow), a disabled meter, readers added later, or an SDK whose
internals moved (any missing attribute).  ``tests/unit/test_lean_histogram.py`` checks that both
paths export the same points and exemplars.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Hashable
from time import time_ns
from typing import Any

from opentelemetry.context import get_current
from opentelemetry.sdk.metrics._internal.aggregation import _ExplicitBucketHistogramAggregation
from opentelemetry.sdk.metrics._internal.exemplar import AlignedHistogramBucketExemplarReservoir
from opentelemetry.sdk.metrics._internal.measurement import Measurement

__all__ = ["BatchedHistogram", "LeanHistogram"]

_INF = float("inf")
_MAX_BOUND = 1024  # attribute sets remembered per instrument (a service's targets and statuses are few)


class _CleanMeasurement(Measurement):
    """A measurement whose attribute map was built clean by otel-dist and is never changed afterwards."""

    def __post_init__(self) -> None:
        pass


class LeanHistogram:
    """Wraps one histogram instrument; ``record(value, attributes, key)`` with `key` naming the attribute set."""

    __slots__ = ("_bound", "_consumer", "instrument")

    def __init__(self, instrument: Any) -> None:
        self.instrument = instrument
        consumer = getattr(instrument, "_measurement_consumer", None)  # None: a no-op (or unknown) instrument
        ok = all(hasattr(consumer, name) for name in ("_reader_storages", "_sdk_config"))
        self._consumer = consumer if ok and hasattr(instrument, "_is_enabled") else None
        # key -> (reader storages it was bound under, exemplar filter or None: SDK path, aggregations)
        self._bound: dict[Hashable, tuple[Any, Any, tuple[Any, ...]]] = {}

    def record(self, value: float, attributes: dict[str, Any], key: Hashable) -> None:
        """As ``instrument.record(value, attributes)``; `attributes` must not change after the first call."""
        consumer = self._consumer
        instrument = self.instrument
        if consumer is None:
            instrument.record(value, attributes)
            return
        bound = self._bound.get(key)
        storages = consumer._reader_storages  # replaced, never changed in place, when readers come and go
        if bound is None or bound[0] is not storages or bound[1] is None or not 0 <= value < _INF:
            instrument.record(value, attributes)  # creates the aggregations; drops invalid values with a warning
            if bound is None or bound[0] is not storages:
                self._bind(key, attributes, storages)
            return
        if not instrument._is_enabled():
            return
        context = get_current()
        measurement = _CleanMeasurement(value, time_ns(), instrument, context, attributes)
        sample = bound[1].should_sample(value, measurement.time_unix_nano, attributes, context)
        for aggregation in bound[2]:
            aggregation.aggregate(measurement, sample)

    def _bind(self, key: Hashable, attributes: dict[str, Any], storages: Any) -> None:
        if len(self._bound) >= _MAX_BOUND and key not in self._bound:
            return
        self._bound[key] = (storages, None, ())  # the SDK's path, unless all is found below
        try:
            from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes

            instrument = self.instrument
            aggregations = []
            for storage in storages.values():
                for match in storage._get_or_init_view_instrument_match(instrument):
                    if match._reset_on_collect:
                        return  # delta: the aggregations are replaced at each collection
                    keys = match._view._attribute_keys
                    filtered = attributes if keys is None else {k: v for k, v in attributes.items() if k in keys}
                    aggregation = match._attributes_aggregation.get(_hash_attributes(filtered))
                    if aggregation is None:
                        return  # past the cardinality limit: the SDK routes it to the overflow point
                    aggregations.append(aggregation)
            exemplar_filter = self._consumer._sdk_config.exemplar_filter  # type: ignore[union-attr]
        except (AttributeError, ImportError, TypeError):
            return  # not the SDK this was written for: its own path every time
        self._bound[key] = (storages, exemplar_filter, tuple(aggregations))


class BatchedHistogram(LeanHistogram):
    """A LeanHistogram that aggregates in batches: ``record`` queues the measurement, ``flush`` (at the
    start of every collection, and every `_BATCH` measurements of one attribute set) adds the queue to
    each reader's aggregation in one pass.

    With two metric readers (Prometheus pull + OTLP push) every SDK record aggregates twice, each time
    taking a lock, offering the measurement to an exemplar reservoir and re-reading the span context;
    queued, a measurement costs one append, and each reader's aggregation takes the batch under one lock.
    The collected points are the SDK's: the same bucket counts, sum, min and max, and the same exemplars
    (the reservoir keeps the last sampled measurement of each bucket, so only that one is offered, in
    the order recorded).  Only for the SDK's explicit-bucket histogram with its aligned exemplar
    reservoir; anything else is aggregated per record, as LeanHistogram does.  The owner must call
    :meth:`flush` when a reader collects (the server layer does it from its asynchronous instrument's
    callback, which the SDK runs before each collection).
    """

    __slots__ = ("__weakref__", "_queues")

    def __init__(self, instrument: Any) -> None:
        super().__init__(instrument)
        # key -> (queue, aggregations, attributes, exemplar filter): replaced when the key is bound again
        self._queues: dict[Hashable, tuple[deque[tuple[float, int, Any]], tuple[Any, ...], dict[str, Any], Any]] = {}

    def record(self, value: float, attributes: dict[str, Any], key: Hashable) -> None:
        queued = self._queues.get(key)
        bound = self._bound.get(key)
        consumer = self._consumer
        if (
            queued is None
            or bound is None
            or consumer is None
            or bound[0] is not consumer._reader_storages
            or queued[1] is not bound[2]
            or not 0 <= value < _INF
        ):
            self._flush(key)  # the measurements before this one first, then the SDK's (or lean) path
            super().record(value, attributes, key)
            return
        if not self.instrument._is_enabled():
            return
        now = time_ns()
        context = get_current()
        sample = queued[3].should_sample(value, now, attributes, context)
        queue = queued[0]
        queue.append((value, now, context if sample else None))
        if len(queue) >= _BATCH:
            self._apply(queued)

    def flush(self) -> None:
        """Aggregate every queued measurement (before a collection)."""
        for queued in list(self._queues.values()):
            self._apply(queued)

    def _flush(self, key: Hashable) -> None:
        queued = self._queues.get(key)
        if queued is not None:
            self._apply(queued)

    def _bind(self, key: Hashable, attributes: dict[str, Any], storages: Any) -> None:
        self._flush(key)
        super()._bind(key, attributes, storages)
        bound = self._bound.get(key)
        if bound is None or bound[1] is None or not bound[2]:
            self._queues.pop(key, None)
            return
        for aggregation in bound[2]:
            if type(aggregation) is not _ExplicitBucketHistogramAggregation or (
                type(getattr(aggregation, "_reservoir", None)) is not AlignedHistogramBucketExemplarReservoir
            ):
                self._queues.pop(key, None)
                return
            if not all(hasattr(aggregation, n) for n in ("_value", "_sum", "_min", "_max", "_boundaries", "_lock")):
                self._queues.pop(key, None)
                return
        self._queues[key] = (deque(), bound[2], attributes, bound[1])

    def _apply(self, queued: tuple[deque[tuple[float, int, Any]], tuple[Any, ...], dict[str, Any], Any]) -> None:
        queue, aggregations, attributes, _filter = queued
        items = []
        try:
            while True:  # popleft: atomic, so a record on another thread is never lost
                items.append(queue.popleft())
        except IndexError:
            pass
        if not items:
            return
        instrument = self.instrument
        for aggregation in aggregations:
            bounds = aggregation._boundaries
            last: dict[int, int] = {}  # bucket -> index of its last sampled measurement
            with aggregation._lock:
                if aggregation._value is None:
                    aggregation._value = aggregation._get_empty_bucket_counts()
                counts = aggregation._value
                total = aggregation._sum
                low, high = aggregation._min, aggregation._max
                for i, (value, _when, context) in enumerate(items):
                    bucket = bisect_left(bounds, value)
                    counts[bucket] += 1
                    total += value
                    if value < low:
                        low = value
                    if value > high:
                        high = value
                    if context is not None:
                        last[bucket] = i
                aggregation._sum = total
                if aggregation._record_min_max:
                    aggregation._min, aggregation._max = low, high
            for i in sorted(last.values()):
                value, when, context = items[i]
                aggregation._sample_exemplar(_CleanMeasurement(value, when, instrument, context, attributes), True)


_BATCH = 64  # measurements of one attribute set queued before they are aggregated anyway
