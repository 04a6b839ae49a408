import re
from pathlib import Path

from otel_dist._settings import settings_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_quickstart_has_exactly_two_commands():
    section = re.search(r"^## Quickstart\s*$(.*?)(?=^## |\Z)", README, re.M | re.S).group(1)
    block = re.search(r"```[^\n]*\n(.*?)```", section, re.S).group(1)
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 2
    assert "otel-dist demo" in lines[0] and "pytest" in lines[1]


def test_every_setting_is_in_the_readme_table():
    missing = [env for row in settings_table() for env in row["env"] if f"`{env}`" not in README]
    assert missing == []
