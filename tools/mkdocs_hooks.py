"""MkDocs hooks: the parts of the site generated from the code, so they cannot drift from it.

``<!-- otel-dist: settings-table -->`` in a page becomes the table of every setting in
``otel_dist/_settings.py`` (one row per field of ``Settings``); ``<!-- otel-dist: conformance-table -->``
the table of every standard ``OTEL_*`` variable, honoured or refused (``otel_dist/_conformance.py``).
"""

from __future__ import annotations

from typing import Any

from otel_dist._conformance import conformance_markdown, shown_default
from otel_dist._settings import SERVICE_URL_DOC, SERVICE_URL_RULE, settings_table

SETTINGS_MARKER = "<!-- otel-dist: settings-table -->"
CONFORMANCE_MARKER = "<!-- otel-dist: conformance-table -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_markdown() -> str:
    """The settings table as Markdown: variable(s), default, accepted values, secret, meaning."""
    rows = [
        "| environment variable(s) | default | accepted | secret | what | keyword |",
        "|---|---|---|---|---|---|",
    ]
    for row in settings_table():
        envs = " / ".join(f"`{env}`" for env in row["env"])
        rows.append(
            f"| {envs} | `{_cell(shown_default(row['default']))}` | {_cell(row['accepts'])} | "
            f"{'yes' if row['secret'] else ''} | {_cell(row['doc'])} | `{row['name']}` |"
        )
    rows.append(f"| `{SERVICE_URL_RULE}` | `(unset)` | an http:// or https:// URL |  | {SERVICE_URL_DOC} |  |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if SETTINGS_MARKER in markdown:
        markdown = markdown.replace(SETTINGS_MARKER, settings_markdown())
    if CONFORMANCE_MARKER in markdown:
        markdown = markdown.replace(CONFORMANCE_MARKER, conformance_markdown())
    return markdown
