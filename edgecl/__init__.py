"""edgecl — continual learning on edge devices.

A frozen ONNX extractor turns sensor windows into embeddings, and a numpy
learner keeps learning from them one sample at a time, under a fixed memory
budget, without forgetting.

>>> import numpy as np
>>> from edgecl import LearnerConfig, StreamingLearner
>>> lr = StreamingLearner(LearnerConfig(dim=4, max_classes=3, head="ncm", budget_bytes=50_000))
>>> lr.predict_one(np.zeros(4))
-1
>>> lr.learn_one(np.array([1.0, 0, 0, 0]), 0)
>>> lr.learn_one(np.array([0, 1.0, 0, 0]), 2)
>>> lr.predict_one(np.array([0.1, 0.9, 0, 0]))
2
"""

from __future__ import annotations

from edgecl.errors import (
    BudgetError,
    BundleError,
    ConfigError,
    DataError,
    EdgeclError,
    InputError,
    ProfileError,
    StateFileError,
)
from edgecl.learner import (
    LearnerConfig,
    NCMHead,
    OnlineFisher,
    ReservoirBuffer,
    SLDAHead,
    SoftmaxHead,
    StreamingLearner,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetError",
    "BundleError",
    "ConfigError",
    "DataError",
    "EdgeclError",
    "InputError",
    "LearnerConfig",
    "NCMHead",
    "OnlineFisher",
    "ProfileError",
    "ReservoirBuffer",
    "SLDAHead",
    "SoftmaxHead",
    "StateFileError",
    "StreamingLearner",
    "__version__",
]
