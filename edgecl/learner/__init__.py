"""The numpy-only streaming learner: config, buffer, Fisher, heads, learner, state."""

from __future__ import annotations

from edgecl.learner.config import HEADS, LearnerConfig
from edgecl.learner.fisher import OnlineFisher
from edgecl.learner.heads import NCMHead, SLDAHead
from edgecl.learner.learner import StreamingLearner, plan_budget
from edgecl.learner.merge import HeadStats
from edgecl.learner.reservoir import ReservoirBuffer
from edgecl.learner.softmax_head import SoftmaxHead

__all__ = [
    "HEADS",
    "HeadStats",
    "LearnerConfig",
    "NCMHead",
    "OnlineFisher",
    "ReservoirBuffer",
    "SLDAHead",
    "SoftmaxHead",
    "StreamingLearner",
    "plan_budget",
]
