"""The byte budget: every array preallocated, accounted, never above budget_bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import BudgetError, ConfigError, LearnerConfig, StreamingLearner
from edgecl.learner import plan_budget


@settings(max_examples=80, deadline=None)
@given(
    dim=st.integers(1, 64),
    classes=st.integers(2, 40),
    head=st.sampled_from(["ncm", "slda", "softmax"]),
    budget=st.integers(1, 400_000),
    dtype=st.sampled_from(["float16", "float32"]),
    policy=st.sampled_from(["reservoir", "class_balanced"]),
    ewc=st.sampled_from([0.0, 5.0]),
    capacity=st.one_of(st.none(), st.integers(0, 3000)),
    standardize=st.booleans(),
    woodbury=st.sampled_from([None, "float64", "float32"]),
)
def test_random_configs_never_exceed_budget(
    dim, classes, head, budget, dtype, policy, ewc, capacity, standardize, woodbury
):
    if head != "softmax" and capacity:
        with pytest.raises(ConfigError, match="only the softmax head replays"):
            LearnerConfig(dim=dim, max_classes=classes, head=head, buffer_capacity=capacity)
        capacity = None
    cfg = LearnerConfig(
        dim=dim,
        max_classes=classes,
        head=head,
        budget_bytes=budget,
        buffer_dtype=dtype,
        buffer_policy=policy,
        ewc_lambda=ewc,
        buffer_capacity=capacity,
        standardize=standardize,
        **({} if woodbury is None else {"slda_update": "woodbury", "slda_dtype": woodbury}),
    )
    try:
        plan = plan_budget(cfg)
    except BudgetError as exc:
        assert str(budget) in str(exc).replace(",", "")
        with pytest.raises(BudgetError):
            StreamingLearner(cfg)
        return
    lr = StreamingLearner(cfg)
    rep = lr.memory_report()
    # Every array of every part the learner holds (saved state and derived caches).
    arrays = []
    for part in lr.parts().values():
        arrays += [part.arrays(), getattr(part, "cache_arrays", dict)()]
    allocated = sum(a.nbytes for part in arrays for a in part.values())
    assert allocated == rep["state_bytes"] == plan["state_bytes"] <= budget
    if head != "softmax":
        # Heads without replay own no buffer and no Fisher, whatever the budget.
        assert lr.buffer is None and lr.fisher is None and rep["buffer_bytes"] == 0
        assert set(lr.parts()) == ({"head", "user"} if standardize else {"head"})
    elif capacity is None:
        # The buffer took what the fixed parts left: one more slot would not fit.
        per_item = dim * np.dtype(dtype).itemsize + 4
        assert budget - rep["state_bytes"] < per_item


def test_budget_error_names_the_numbers():
    cfg = LearnerConfig(dim=784, max_classes=10, head="slda", budget_bytes=1_000_000)
    with pytest.raises(BudgetError, match=r"budget_bytes=1,000,000.*slda head needs 10,160,980 B"):
        StreamingLearner(cfg)


def test_explicit_capacity_that_does_not_fit():
    cfg = LearnerConfig(
        dim=16, max_classes=4, head="softmax", budget_bytes=10_000, buffer_capacity=10**4
    )
    with pytest.raises(BudgetError, match="at most"):
        StreamingLearner(cfg)


def test_softmax_replay_needs_a_buffer():
    cfg = LearnerConfig(
        dim=16, max_classes=4, head="softmax", budget_bytes=10_000, buffer_capacity=0
    )
    with pytest.raises(BudgetError, match="replay_k=8"):
        StreamingLearner(cfg)
    StreamingLearner(cfg.replace(replay_k=0))  # no replay, no buffer: fine
