"""collector/backends.py: what a user sees when Zipkin's prerequisites are missing (no download happens)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector import backends


@pytest.fixture
def bare_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No java, mvn or go on PATH; an empty Maven repository and Go bin folder."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv(backends.ENV_MAVEN_REPO, str(tmp_path / "m2"))
    monkeypatch.setenv("GOBIN", str(tmp_path / "gobin"))
    monkeypatch.delenv(backends.ENV_ZIPKIN_JAR, raising=False)
    monkeypatch.delenv(backends.ENV_VICTORIAMETRICS_BIN, raising=False)
    return tmp_path


def test_fetching_zipkin_without_java_and_maven_names_both_and_how_to_install(bare_machine: Path) -> None:
    said: list[str] = []
    with pytest.raises(backends.BackendMissing) as missing:
        backends.install_zipkin(said.append)
    message = str(missing.value)
    assert "java and mvn not found on PATH" in message
    assert "Java 17+" in message and "Maven" in message and "apt-get install default-jre-headless maven" in message
    assert said == []  # nothing claimed to be downloading


def test_a_missing_backend_names_the_install_command(bare_machine: Path) -> None:
    with pytest.raises(backends.BackendMissing, match=r"collector/backends.py install zipkin"):
        backends.zipkin_jar()
    with pytest.raises(backends.BackendMissing, match=r"collector/backends.py install victoriametrics"):
        backends.victoriametrics_bin()
    with pytest.raises(backends.BackendMissing, match=r"the Go toolchain \(go\) is not on PATH"):
        backends.install_victoriametrics(lambda _: None)


def test_the_command_line_exits_1_with_the_reason_and_2_on_a_typo(
    bare_machine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backends.main(["install", "zipkin"]) == 1
    assert "java and mvn not found" in capsys.readouterr().err
    assert backends.main(["install", "zipkn"]) == 2
    assert "unknown: ['zipkn']" in capsys.readouterr().err
