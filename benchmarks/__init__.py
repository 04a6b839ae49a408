"""Overhead benchmarks for otel-dist (issue 7).

``python -m benchmarks.run --quick`` (a minute or two) or ``python -m benchmarks.run``
(the full, alternating-rounds run that writes ``benchmarks/RESULTS.md``).  See the
docs/explanation/benchmarks.md for what each scenario measures.
"""
