"""The initial head of a bundle: fitted on the pre-training data, measured on held-out data.

A device should start useful, so ``edgecl export`` ships a
:class:`~edgecl.learner.StreamingLearner` (a streaming LDA head by default,
Hayes & Kanan 2020, "Lifelong machine learning with deep streaming linear
discriminant analysis") already fitted with ``learn_many`` on the pre-training
inputs. The embeddings come from the exported ONNX model itself, through
onnxruntime, so the head sees exactly what a device's extractor will give it.

Inputs are kept raw (:class:`HeadData`): the bundle's graph applies the
normalisation, so the head data is de-normalised once when it is read. With
subjects (IMU data) and an NCM/SLDA head the learner standardises embeddings
per user (AdaBN-style, Li et al. 2016; :mod:`edgecl.learner.usernorm`): it is
fitted on embeddings z-scored per pre-training subject. Held-out accuracy is
measured twice (:func:`fit_and_measure`):

* ``heldout``: the head frozen as shipped (prior statistics, no user data);
* ``heldout_standardised``: each held-out subject's statistics first observed
  from all of that subject's windows (no labels), as a device would after a
  while.

Used by :func:`edgecl.host.export.export_bundle` (a trained extractor) and
:func:`edgecl.host.stage_bundle.export_stage_bundle` (a random-feature stage
alone).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecl.errors import DataError
from edgecl.learner import LearnerConfig, StreamingLearner, plan_budget
from edgecl.learner.slda_woodbury import large_dim_options
from edgecl.runtime.extractor import OnnxExtractor

if TYPE_CHECKING:
    from edgecl.host.data import TrainingData

__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "HeadData",
    "fit_and_measure",
    "head_config",
    "head_data",
    "head_provenance",
]

DEFAULT_BUDGET_BYTES = 4_000_000


@dataclass(frozen=True, eq=False)
class HeadData:
    """Raw (un-normalised) pre-training inputs, and held-out ones, for the head."""

    name: str
    sha256: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_name: str
    test_subjects: list[int] | None
    subject_train: np.ndarray | None  # IMU: the subject of every window, for standardisation
    subject_test: np.ndarray | None

    @classmethod
    def from_training(cls, td: TrainingData, shape: tuple[int, ...] | None = None) -> HeadData:
        """``td``'s splits back in raw units (what the bundle's graph takes), of ``shape``."""
        mean = np.asarray(td.normalisation["mean"], np.float32)
        std = np.asarray(td.normalisation["std"], np.float32)
        # load_training_data returns normalised inputs; the bundle's graph takes raw ones.
        raw_tr = (td.x_train * std + mean).astype(np.float32)
        raw_te = (td.x_test * std + mean).astype(np.float32)
        if shape is not None:
            raw_tr = raw_tr.reshape(len(td.y_train), *shape)
            raw_te = raw_te.reshape(len(td.y_test), *shape)
        held = td.test_subjects
        name = "subjects " + ", ".join(str(s) for s in held) if held else "test split"
        return cls(
            td.name, td.sha256, raw_tr, td.y_train, raw_te, td.y_test, name, held,
            td.subject_train, td.subject_test,
        )  # fmt: skip


def head_data(
    data: str | os.PathLike[str], meta: dict[str, Any], limit: int | None, excluded: list[int]
) -> HeadData:
    """The head data of a checkpoint: ``data`` read as its pre-training read it (``meta``).

    Raises :class:`~edgecl.errors.DataError` when the data's normalisation is
    not the checkpoint's (the head must see what the extractor saw).
    """
    from edgecl.host.data import load_training_data

    prov = meta.get("provenance") or {}
    win = meta.get("window") or {}
    held = prov.get("test_subjects", meta.get("test_subjects"))
    td = load_training_data(
        data,
        window=win.get("length"),
        hop=win.get("hop"),
        test_subjects=held,
        limit=prov.get("limit") if limit is None else limit,
        seed=int(prov.get("seed", 0) or 0),
        exclude_classes=excluded,
    )
    norm = meta.get("normalisation")
    if norm is not None and td.normalisation != norm:
        raise DataError(
            f"{data}: its normalisation differs from the checkpoint's; is this the "
            "pre-training data? (the head must see what the extractor saw)"
        )
    return HeadData.from_training(td)


def head_config(
    dim: int,
    head: str,
    hd: HeadData,
    n_classes: int,
    max_classes: int | None,
    budget_bytes: int | None,
    buffer_capacity: int | None,
    standardize: bool,
    seed: int,
) -> LearnerConfig:
    """The initial learner's config; ``budget_bytes=None``: 4 MB, or what the head needs.

    ``max_classes=None`` leaves room for new classes learned on the device:
    ``max(32, n_classes)``, or more when ``hd`` has larger labels. Per-user
    standardisation (``standardize``) applies to NCM/SLDA heads on data with
    subjects only; the config's ``standardize`` says whether it does.

    An SLDA head of ``WOODBURY_MIN_DIM`` or more dimensions keeps its precision by
    Woodbury updates in float32 (:func:`edgecl.learner.slda_woodbury.large_dim_options`).

    SLDA's covariance grows as dim², so an embedding widened by random features
    (``M`` in the thousands) needs more than the 4 MB a plain extractor's head
    fits in; the default then is the head's own size.
    """
    if max_classes is None:
        max_classes = max(32, n_classes, int(hd.y_train.max()) + 1)
    standardize = standardize and head in ("slda", "ncm") and hd.subject_train is not None
    cap = buffer_capacity if buffer_capacity is not None else (1000 if head == "softmax" else 0)
    fields: dict[str, Any] = dict(
        dim=dim, max_classes=max_classes, head=head, buffer_capacity=cap,
        standardize=standardize, seed=seed, **large_dim_options(head, dim),
    )  # fmt: skip
    if budget_bytes is None:
        need = plan_budget(LearnerConfig(**fields, budget_bytes=1 << 40))["state_bytes"]
        budget_bytes = max(DEFAULT_BUDGET_BYTES, need)
    return LearnerConfig(**fields, budget_bytes=budget_bytes)


def head_provenance(hd: HeadData) -> dict[str, Any]:
    """The manifest's ``provenance.head_data``: which data the head was fitted on."""
    return {
        "data": hd.name,
        "sha256": hd.sha256,
        "train_n": int(len(hd.y_train)),
        "heldout": hd.test_name,
        "heldout_n": int(len(hd.y_test)),
    }


def fit_and_measure(
    model: bytes, hd: HeadData, cfg: LearnerConfig
) -> tuple[StreamingLearner, dict[str, Any], np.ndarray, np.ndarray]:
    """Embed the head data with ``model``, fit the initial head, measure it.

    Returns the learner, the manifest's accuracy fields and the train/held-out embeddings.
    """
    ex = OnnxExtractor(model)
    Etr, Ete = ex.embed_many(hd.x_train), ex.embed_many(hd.x_test)
    learner = _fit_head(Etr, hd.y_train, cfg, hd.subject_train)
    measured = {
        **_measure(learner, Etr, Ete, hd),
        "heldout_name": hd.test_name,
        "heldout_n": len(hd.y_test),
        "train_n": len(hd.y_train),
    }
    return learner, measured, Etr, Ete


def _fit_head(
    E: np.ndarray, y: np.ndarray, cfg: LearnerConfig, groups: np.ndarray | None
) -> StreamingLearner:
    learner = StreamingLearner(cfg)
    if cfg.standardize:
        learner.learn_many(E.astype(np.float64), y, groups=groups)
    else:
        learner.learn_many(E.astype(np.float64), y)
    return learner


def _measure(
    learner: StreamingLearner, Etr: np.ndarray, Ete: np.ndarray, hd: HeadData
) -> dict[str, Any]:
    standardised = None
    if learner.config.standardize and hd.subject_test is not None:
        standardised = _standardised_accuracy(learner, Ete, hd.y_test, hd.subject_test)
    return {
        "train": _accuracy(learner, Etr, hd.y_train),
        "heldout": _accuracy(learner, Ete, hd.y_test),
        "heldout_standardised": standardised,
    }


def _accuracy(learner: StreamingLearner, E: np.ndarray, y: np.ndarray) -> float | None:
    """Accuracy of the learner as shipped: a fresh copy, no user statistics observed."""
    if len(y) == 0:
        return None
    frozen = copy.deepcopy(learner)
    return float(np.mean(frozen.predict_many(E.astype(np.float64)) == y))


def _standardised_accuracy(
    learner: StreamingLearner, E: np.ndarray, y: np.ndarray, groups: np.ndarray
) -> float | None:
    """Pooled accuracy when each group's statistics are observed first (no labels).

    For every subject, a copy of the learner observes all of that subject's
    windows (unsupervised per-user standardisation, as a device would after a
    while) and then predicts them.
    """
    if len(y) == 0:
        return None
    E = E.astype(np.float64)
    correct = 0
    for g in np.unique(groups):
        rows = groups == g
        user = copy.deepcopy(learner)
        user.observe_many(E[rows])
        correct += int(np.sum(user.predict_many(E[rows]) == y[rows]))
    return correct / len(y)
