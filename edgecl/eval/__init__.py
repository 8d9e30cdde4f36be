"""Evaluation: datasets → features → continual-learning streams → runner → metrics and plots;
adaptation to new users and new classes on held-out recordings (:mod:`.adapt`, :mod:`.new_class`).

>>> from edgecl import LearnerConfig
>>> from edgecl.eval import build_stream, load_dataset, run_stream
>>> stream = build_stream(load_dataset(), "domain-il", limit=10)
>>> cfg = LearnerConfig(dim=stream.dim, max_classes=stream.n_classes, head="slda")
>>> result = run_stream(stream, cfg, progress=False)
>>> len(result.to_json()["accuracy_matrix"]), len(result.holdout_accuracy)
(5, 5)
"""

from __future__ import annotations

from edgecl.eval.adapt import new_user_split, run_new_user
from edgecl.eval.datasets import DEFAULT_DATA, Dataset, load_dataset
from edgecl.eval.features import feature_names, window_features
from edgecl.eval.metrics import (
    avg_accuracy,
    bwt,
    forgetting,
    fwt,
    percentiles,
    prequential_majority,
    prequential_repeat_last,
)
from edgecl.eval.new_class import run_new_class
from edgecl.eval.plots import plot_result
from edgecl.eval.runner import EvalResult, accuracy, masked_predict, run_stream
from edgecl.eval.streams import SCENARIOS, Stream, Task, build_stream

__all__ = [
    "DEFAULT_DATA",
    "SCENARIOS",
    "Dataset",
    "EvalResult",
    "Stream",
    "Task",
    "accuracy",
    "avg_accuracy",
    "build_stream",
    "bwt",
    "feature_names",
    "forgetting",
    "fwt",
    "load_dataset",
    "masked_predict",
    "new_user_split",
    "percentiles",
    "plot_result",
    "prequential_majority",
    "prequential_repeat_last",
    "run_new_class",
    "run_new_user",
    "run_stream",
    "window_features",
]
