"""Every conformance check (edgecl.learner.checks) on every head configuration."""

from __future__ import annotations

import pytest

from edgecl import LearnerConfig
from edgecl.learner.checks import yield_checks

CONFIGS = {
    "NCMHead": LearnerConfig(dim=6, max_classes=5, head="ncm", budget_bytes=40_000),
    "SLDAHead": LearnerConfig(dim=6, max_classes=5, head="slda", budget_bytes=40_000),
    "SLDAHead-refresh1": LearnerConfig(
        dim=6, max_classes=5, head="slda", budget_bytes=40_000, slda_refresh_every=1, slda_batch=3
    ),
    "SoftmaxHead": LearnerConfig(dim=6, max_classes=5, head="softmax", budget_bytes=40_000),
    "SoftmaxHead-ewc": LearnerConfig(
        dim=6,
        max_classes=5,
        head="softmax",
        budget_bytes=40_000,
        ewc_lambda=10.0,
        loss_window=10,
        consolidate_every=50,
    ),
    "SoftmaxHead-ewc-true-cbrs-f32": LearnerConfig(
        dim=6,
        max_classes=5,
        head="softmax",
        budget_bytes=40_000,
        ewc_lambda=10.0,
        fisher_mode="true",
        buffer_policy="class_balanced",
        buffer_dtype="float32",
        buffer_capacity=30,
    ),
    "NCMHead-nobuffer": LearnerConfig(
        dim=6, max_classes=5, head="ncm", budget_bytes=40_000, buffer_capacity=0
    ),
    "SLDAHead-woodbury": LearnerConfig(
        dim=6, max_classes=5, head="slda", budget_bytes=40_000, slda_update="woodbury", slda_batch=5
    ),
    "SLDAHead-woodbury-f32-exact7": LearnerConfig(
        dim=6,
        max_classes=5,
        head="slda",
        budget_bytes=40_000,
        slda_update="woodbury",
        slda_dtype="float32",
        slda_batch=3,
        slda_exact_every=7,
        standardize=True,
    ),
    "NCMHead-weighted-standardized": LearnerConfig(
        dim=6, max_classes=5, head="ncm", budget_bytes=40_000, label_weight=4.0, standardize=True
    ),
    "SLDAHead-weighted-standardized": LearnerConfig(
        dim=6,
        max_classes=5,
        head="slda",
        budget_bytes=40_000,
        label_weight=0.25,
        standardize=True,
        standardize_prior_n=3.0,
    ),
}

CASES = [(name, check) for name in CONFIGS for check in yield_checks()]


@pytest.mark.parametrize(("name", "check"), CASES, ids=[f"{n}:{c.__name__}" for n, c in CASES])
def test_conformance(name, check, tmp_path):
    check(CONFIGS[name], tmp_path)
