"""LearnerConfig: validated, frozen, readable errors, strict dict round trip."""

from __future__ import annotations

import dataclasses

import pytest

from edgecl import ConfigError, LearnerConfig


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("dim", 0, r"dim = 0: must be an integer in \[1,"),
        ("dim", 2.5, "dim = 2.5"),
        ("max_classes", 1, "max_classes = 1"),
        ("head", "knn", "head = 'knn': must be one of ncm, slda, softmax"),
        ("budget_bytes", 0, "budget_bytes"),
        ("buffer_dtype", "float64", "buffer_dtype"),
        ("lr", 0.0, r"lr = 0.0: must be a number in \(0.0"),
        ("fisher_decay", 1.0, "fisher_decay"),
        ("ewc_lambda", float("nan"), "ewc_lambda"),
        ("consolidate_on_plateau", 1, "true or false"),
        ("replay_k", True, "replay_k"),
        ("slda_shrinkage", 2.0, "slda_shrinkage"),
    ],
)
def test_bad_values_name_field_value_and_range(field, value, match):
    kwargs = {"dim": 4, "max_classes": 3, field: value}
    with pytest.raises(ConfigError, match=match):
        LearnerConfig(**kwargs)


def test_frozen_and_roundtrip():
    cfg = LearnerConfig(dim=4, max_classes=3, head="softmax", lr=1)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dim = 5  # type: ignore[misc]
    assert LearnerConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match="unknown field.*bogus"):
        LearnerConfig.from_dict({"dim": 4, "max_classes": 3, "bogus": 1})
    with pytest.raises(ConfigError, match="unknown"):
        LearnerConfig(dim=4, max_classes=3).replace(bogus=1)
    with pytest.raises(ConfigError):
        LearnerConfig(dim=4, max_classes=3).replace(dim=-1)
