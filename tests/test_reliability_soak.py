"""tools/soak.py, briefly: a daemon process fed labelled samples reports RSS and latency."""

from __future__ import annotations

import json

from helpers import import_tool


def test_short_soak_reports_memory_and_latency_and_plots(tmp_path, capsys):
    png, out = tmp_path / "soak.png", tmp_path / "soak.json"
    rc = import_tool("soak").main(
        ["--samples", "4000", "--every", "0.2", "--json", str(out), "--plot", str(png)]
    )
    res = json.loads(out.read_text())
    assert rc == 0
    # Every well-formed line got a prediction; the malformed ones were counted.
    assert res["predictions"] == res["samples"] == 4000 - sum(res["rejects"].values())
    assert res["learned"] > 1000 and res["checkpoints"] >= 1
    assert res["rss_end_mb"] > 0 and res["p99_us_median"] >= res["p50_us_median"] > 0
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
