"""The opt-in soak (`python -m benchmarks.soak --minutes N`) still runs: a few seconds of it, end to end."""

from __future__ import annotations

import json

from benchmarks import soak


def test_a_short_soak_passes_and_reports(tmp_path, capsys):
    out = tmp_path / "soak.json"
    code = soak.main(["--minutes", "0.1", "--sample", "3", "--connections", "10", "--out", str(out)])
    report = json.loads(out.read_text())
    print(capsys.readouterr().out[-3000:])
    assert code == 0, report["verdict"]["failures"]
    verdict = report["verdict"]
    assert verdict["requests"] > 0 and verdict["server_errors"] == 0 and verdict["transport_errors"] == 0
    assert len(report["samples"]) >= 2
    for counts in verdict["sent_vs_received"].values():
        assert counts["spans_sent"] == counts["spans_received"] > 0
