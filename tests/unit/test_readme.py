"""The README is a landing page into the docs site; the site builds strictly and documents every setting."""

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from otel_dist._settings import settings_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_quickstart_has_exactly_two_commands():
    # .ci/run takes the second line as the test command: keep this parsing in step with it.
    section = re.search(r"^## Quickstart\s*$(.*?)(?=^## |\Z)", README, re.M | re.S).group(1)
    block = re.search(r"```[^\n]*\n(.*?)```", section, re.S).group(1)
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 2
    assert "otel-dist demo" in lines[0] and "pytest" in lines[1]


def test_readme_is_a_short_landing_page_whose_links_resolve():
    assert len(README.splitlines()) <= 80
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert len(links) >= 10
    assert [link for link in links if not (ROOT / link).is_file()] == []


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def entries(nav):
        for item in nav:
            for value in item.values():
                yield from entries(value) if isinstance(value, list) else [value]

    in_nav = set(entries(config["nav"]))
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert in_nav == on_disk


def test_the_site_builds_strictly_and_lists_every_setting(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    page = html.unescape((tmp_path / "site" / "reference" / "configuration" / "index.html").read_text())
    rows = settings_table()
    assert len(rows) > 50
    missing = [env for row in rows for env in row["env"] if f"<code>{env}</code>" not in page]
    assert missing == []
    assert "otel-dist: settings-table" not in page  # the marker was replaced
