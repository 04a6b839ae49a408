"""The spec-conformance table: every standard ``OTEL_*`` variable, honoured or refused.

Built from the settings table (honoured: a row reads it) and ``REFUSED``; the docs site
renders it where a page says ``<!-- otel-dist: conformance-table -->`` (tools/mkdocs_hooks.py).
"""

from __future__ import annotations

from typing import Any

from ._settings import REFUSED, settings_table


def shown_default(value: Any) -> str:
    """A setting's default as the docs print it (also used by the settings reference)."""
    if value is None:
        return "(unset)"
    if isinstance(value, tuple):
        return ",".join("=".join(v) if isinstance(v, tuple) else str(v) for v in value) or "(empty)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def conformance_rows() -> list[tuple[str, str, str]]:
    """(variable, "honoured" | "refused", note), sorted by variable."""
    rows = [
        (env, "honoured", f"default `{shown_default(row['default'])}`; {row['doc']}")
        for row in settings_table()
        for env in row["env"]
        if env.startswith("OTEL_") and not env.startswith("OTEL_DIST_")
    ]
    rows += [(variable, "refused", why) for variable, why in REFUSED.items()]
    return sorted(rows)


def conformance_markdown() -> str:
    lines = ["| variable | otel-dist | note |", "|---|---|---|"]
    for variable, status, note in conformance_rows():
        lines.append(f"| `{variable}` | {status} | {note.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)
