"""The settings and spec-conformance tables of the docs, generated from ``_settings``.

``python -m otel_dist._tables`` rewrites every generated region in README.md and
docs/*.md; ``--check`` fails if one is stale (``tests/unit/test_tables.py`` runs it).
A region is the text between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from ._settings import REFUSED, settings_table


def _shown(value: Any) -> str:
    if value is None:
        return "(unset)"
    if value == ():
        return "(empty)"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_markdown() -> str:
    lines = [
        "| setting | environment variable(s) | default | accepted | secret | what |",
        "|---|---|---|---|---|---|",
    ]
    for row in settings_table():
        env = " / ".join(f"`{e}`" for e in row["env"])
        lines.append(
            f"| `{row['name']}` | {env} | `{_cell(_shown(row['default']))}` | {_cell(row['accepts'])} | "
            f"{'yes' if row['secret'] else ''} | {_cell(row['doc'])} |"
        )
    return "\n".join(lines)


def conformance_rows() -> list[tuple[str, str, str]]:
    """(variable, honoured|refused, note) for every standard OTEL_* variable otel-dist knows."""
    rows = [
        (env, "honoured", f"default `{_shown(row['default'])}`; {row['doc']}")
        for row in settings_table()
        for env in row["env"]
        if env.startswith("OTEL_") and not env.startswith("OTEL_DIST_")
    ]
    rows += [(variable, "refused", why) for variable, why in REFUSED.items()]
    return sorted(rows)


def conformance_markdown() -> str:
    lines = ["| variable | otel-dist | note |", "|---|---|---|"]
    lines += [f"| `{v}` | {status} | {_cell(note)} |" for v, status, note in conformance_rows()]
    return "\n".join(lines)


REGIONS = {"settings-table": settings_markdown, "conformance-table": conformance_markdown}


def render(text: str) -> str:
    for name, make in REGIONS.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n)(?:.*?\n)?(<!-- end: {name} -->)", re.S)
        body = make()

        def fill(match: re.Match[str], body: str = body) -> str:
            return match.group(1) + body + "\n" + match.group(2)

        text = pattern.sub(fill, text)
    return text


def documents(root: Path) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("**/*.md"))] if p.is_file()]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(__file__).resolve().parents[1]
    stale = []
    for path in documents(root):
        text = path.read_text(encoding="utf-8")
        fresh = render(text)
        if fresh != text:
            stale.append(str(path.relative_to(root)))
            if "--check" not in args:
                path.write_text(fresh, encoding="utf-8")
    verb = "stale" if "--check" in args else "rewritten"
    print(f"{verb}: {', '.join(stale)}" if stale else "generated tables are up to date")
    return 1 if stale and "--check" in args else 0


if __name__ == "__main__":
    raise SystemExit(main())
