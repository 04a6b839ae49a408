"""Find and run the fenced code blocks of docs/ and README.md (the convention is docs/contributing-docs.md).

A block is a fence whose info string starts with its language.  An HTML comment on the line just before
the fence, ``<!-- docs-test: KIND [ARG] -->``, changes how it is run:

- (none)            ``python``: run as a script; ``bash``: run with ``bash -euo pipefail``; must exit 0
- ``file PATH``     the block is the content of PATH in the page's workspace (written, syntax-checked)
- ``append PATH``   the block is added at the end of PATH (then the whole file is syntax-checked)
- ``patch``         a ``diff`` block: applied with ``patch -p1`` in the workspace
- ``services``      run while the example services are up; their URLs are in the environment
- ``output``        a ``text`` block: every non-blank line must be in the previous block's output
- ``skip REASON``   not run (syntax-checked only); the reason says what runs it instead
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = ("python", "bash")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<info>[^`\n]*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*(?P<arg>.*?)\s*-->\s*$")
KINDS = ("file", "append", "patch", "services", "output", "skip")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    kind: str = ""
    arg: str = ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        lang = (opening["info"].strip().split() or [""])[0].lower()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[i + 1 : end]]
        marker = _MARKER.match(lines[i - 1]) if i > 0 else None
        kind, arg = (marker["kind"], marker["arg"]) if marker else ("", "")
        found.append(Block(page, i + 1, lang, "\n".join(body) + "\n", kind, arg))
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks(page)]


_PORT = re.compile(r"(?<=127\.0\.0\.1:)80\d\d\b|(?<=localhost:)80\d\d\b|(?<=--port )80\d\d\b")


def with_free_ports(code: str, ports: dict[str, str], free_port: object) -> str:
    """Ports 8000-8099 in a snippet become free ports, the same one for the same number within a page."""

    def replace(match: re.Match[str]) -> str:
        if match[0] not in ports:
            ports[match[0]] = str(free_port())  # type: ignore[operator]
        return ports[match[0]]

    return _PORT.sub(replace, code)
