"""The settings and conformance tables in the docs are generated from the settings table and cannot drift."""

from pathlib import Path

from otel_dist import _tables
from otel_dist._settings import REFUSED, settings_table

ROOT = Path(__file__).resolve().parents[2]


def test_generated_tables_are_current():
    assert _tables.main(["--check"]) == 0, "run: python -m otel_dist._tables"


def test_each_table_is_in_the_docs_exactly_once():
    text = "".join(path.read_text(encoding="utf-8") for path in _tables.documents(ROOT))
    for name in _tables.REGIONS:
        assert text.count(f"<!-- generated: {name} -->") == 1, name


def test_the_conformance_table_lists_every_standard_variable_and_every_refusal():
    rows = {variable: status for variable, status, _ in _tables.conformance_rows()}
    standard = {e for r in settings_table() for e in r["env"] if e.startswith("OTEL_") and "OTEL_DIST_" not in e}
    assert {v for v, status in rows.items() if status == "honoured"} == standard
    assert {v for v, status in rows.items() if status == "refused"} == set(REFUSED)
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in standard and "OTEL_SDK_DISABLED" in standard
