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

from collections.abc import Hashable
from time import time_ns
from typing import Any

from opentelemetry.context import get_current
from opentelemetry.sdk.metrics._internal.measurement import Measurement

__all__ = ["LeanHistogram"]

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
