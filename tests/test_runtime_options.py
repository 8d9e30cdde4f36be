"""edgecl run says once, on stderr, when --head/--max-classes/--budget-bytes cannot apply."""

from __future__ import annotations

import io

import pytest

from edgecl.runtime.options import ignored_options_note, warn_ignored_options

ALL = {"head": "softmax", "max_classes": 5, "budget_bytes": 100_000}


def test_all_three_flags_are_named_with_the_origin():
    note = ignored_options_note(ALL, "checkpoint /var/lib/edgecl/state-000012.safetensors")
    assert note == (
        "edgecl run: --head/--max-classes/--budget-bytes ignored: "
        "the learner comes from checkpoint /var/lib/edgecl/state-000012.safetensors"
    )


@pytest.mark.parametrize(
    "options, named",
    [
        ({"head": None, "max_classes": 3, "budget_bytes": None}, "--max-classes"),
        ({"budget_bytes": 10, "head": "ncm"}, "--head/--budget-bytes"),
    ],
)
def test_only_the_flags_given_are_named(options, named):
    assert (
        ignored_options_note(options, "X")
        == f"edgecl run: {named} ignored: the learner comes from X"
    )


@pytest.mark.parametrize("options", [None, {}, {"head": None, "max_classes": None}])
def test_no_flag_given_says_nothing(options):
    out = io.StringIO()
    warn_ignored_options(options, "bundle head h.safetensors", file=out)
    assert ignored_options_note(options, "X") is None and out.getvalue() == ""


def test_the_warning_goes_to_stderr_as_one_line(capsys):
    warn_ignored_options(ALL, "bundle head h.safetensors")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("edgecl run: --head/")


def test_build_daemon_warns_once_when_the_bundle_head_is_used(capsys):
    from edgecl.runtime.daemon import DaemonConfig
    from edgecl.runtime.launch import build_daemon

    build_daemon(DaemonConfig(source="loop://"), learner_options={**ALL, "max_classes": None})
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "ignored" in ln]
    assert len(lines) == 1, err  # once
    prefix = "edgecl run: --head/--budget-bytes ignored: the learner comes from bundle head "
    assert lines[0].startswith(prefix) and lines[0].endswith("head.safetensors")
    build_daemon(DaemonConfig(source="loop://"), features=8, learner_options=ALL)  # a new learner
    assert "ignored" not in capsys.readouterr().err
