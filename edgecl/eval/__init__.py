"""Evaluation: datasets → features → continual-learning streams → runner → metrics and plots.

>>> from edgecl import LearnerConfig
>>> from edgecl.eval import build_stream, load_dataset, run_stream
>>> stream = build_stream(load_dataset(), "domain-il", limit=10)
>>> cfg = LearnerConfig(dim=stream.dim, max_classes=stream.n_classes, head="slda")
>>> result = run_stream(stream, cfg, progress=False)
>>> len(result.to_json()["accuracy_matrix"]), len(result.holdout_accuracy)
(5, 5)
"""

from __future__ import annotations

from edgecl.eval.datasets import DEFAULT_DATA, Dataset, load_dataset
from edgecl.eval.features import feature_names, window_features
from edgecl.eval.metrics import avg_accuracy, bwt, forgetting, fwt, percentiles
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
    "percentiles",
    "plot_result",
    "run_stream",
    "window_features",
]
