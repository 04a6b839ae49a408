"""The spec-conformance page is generated from the settings table and REFUSED, so it cannot drift."""

import sys
from pathlib import Path

from otel_dist._conformance import conformance_rows
from otel_dist._settings import REFUSED, settings_table

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "reference" / "otel-spec.md"


def test_the_table_lists_every_standard_variable_a_row_reads_and_every_refusal():
    rows = {variable: status for variable, status, _ in conformance_rows()}
    standard = {e for r in settings_table() for e in r["env"] if e.startswith("OTEL_") and "OTEL_DIST_" not in e}
    assert {v for v, status in rows.items() if status == "honoured"} == standard
    assert {v for v, status in rows.items() if status == "refused"} == set(REFUSED)
    assert {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED", "OTEL_BLRP_EXPORT_TIMEOUT"} <= standard


def test_the_docs_page_renders_it_from_the_code():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import mkdocs_hooks
    finally:
        sys.path.remove(str(ROOT / "tools"))
    source = PAGE.read_text(encoding="utf-8")
    assert source.count(mkdocs_hooks.CONFORMANCE_MARKER) == 1
    rendered = mkdocs_hooks.on_page_markdown(source)
    assert mkdocs_hooks.CONFORMANCE_MARKER not in rendered
    for variable, status, _ in conformance_rows():
        assert f"| `{variable}` | {status} |" in rendered
