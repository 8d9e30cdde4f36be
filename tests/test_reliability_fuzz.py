"""tools/fuzz_protocol.py on 20k messages: no crash, exact reject counters, state untouched."""

from __future__ import annotations

import json

from helpers import import_tool


def _tool():
    return import_tool("fuzz_protocol")


def test_fuzzer_20k_messages(tmp_path, capsys):
    out = tmp_path / "fuzz.json"
    rc = _tool().main(["--messages", "20000", "--seed", "3", "--json", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0, res
    assert res["messages"] == 20000 and res["crashes"] == 0 and res["counters_match"]
    assert res["daemon_rejects"] == res["injected_rejects"]
    # Every reason the fuzzer knows how to provoke did occur.
    assert set(res["injected_rejects"]) >= {
        "too_long", "bad_utf8", "bad_json", "bad_type", "bad_dim", "non_finite",
        "bad_label", "bad_seq", "control_disabled", "crc", "bad_frame",
        "unknown_seq", "duplicate_seq", "truncated",
    }  # fmt: skip
    assert res["state_checks"] >= 1 and res["state_changed_by_rejects"] == 0
    assert res["learned"] > 0 and res["learner_still_predicts"]


def test_the_fuzzer_notices_a_miscounted_reject(monkeypatch):
    """The counters check is not vacuous: a daemon that drops one reason fails it."""
    mod = _tool()
    from edgecl.runtime.stats import Stats

    real = Stats.reject

    def lossy(self, reason):
        if reason != "crc":
            real(self, reason)

    monkeypatch.setattr(Stats, "reject", lossy)
    res = mod.run(3000, seed=1)
    assert res["crashes"] == 0 and not res["counters_match"]
