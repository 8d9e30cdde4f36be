"""The three edgecl model families, each split into an extractor and a classifier.

A model is an :class:`EdgeModel`: ``extractor`` maps an input batch to an
``(N, embed_dim)`` embedding (the part that is exported to ONNX and frozen on the
device), ``classifier`` maps the embedding to logits (replaced on the device by
the streaming learner). ``forward(x) = classifier(extractor(x))``.

* ``mlp`` — the reference EWC network (Kirkpatrick et al. 2017, as in the
  MNIST → Fashion-MNIST table): ``784-100-100-10``, BatchNorm1d after each
  hidden Linear, then ReLU. The embedding is the last hidden layer (100-d by
  default; ``embed_dim`` sets its width, ``width`` the first hidden layer's).
* ``cnn`` — a small conv net for images ``(H, W)`` or ``(C, H, W)``: two
  conv-BN-ReLU-maxpool blocks, then Linear → ReLU to ``embed_dim``.
* ``imu-cnn`` — a 1-D conv net for raw sensor windows ``(length, channels)``
  (channels last, as rows arrive from a sensor): three conv-BN-ReLU blocks,
  global average pooling over time, Linear → ReLU to ``embed_dim``. About 30 k
  parameters at the defaults, so the ONNX file is ~0.1 MB and one window takes
  tens of µs on one core.

:attr:`EdgeModel.spec` is a JSON-able dict that rebuilds the same architecture
with ``build_model(**spec)`` (checkpoints store it).

>>> import torch
>>> m = build_model("imu-cnn", (100, 6), n_classes=7)
>>> m.spec["embed_dim"], tuple(m.extractor(torch.zeros(2, 100, 6)).shape)
(64, (2, 64))
>>> build_model("mlp", (28, 28), 10).spec["embed_dim"]
100
>>> tuple(build_model(**m.spec)(torch.zeros(3, 100, 6)).shape)
(3, 7)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edgecl.errors import ConfigError

__all__ = ["ARCHS", "EdgeModel", "build_model", "n_parameters"]

ARCHS = ("mlp", "cnn", "imu-cnn")

# Per-architecture defaults: (embedding width, "width" = first hidden layer / conv channels).
_DEFAULTS = {"mlp": (100, 100), "cnn": (64, 32), "imu-cnn": (64, 32)}


class EdgeModel(nn.Module):
    """An extractor (input → embedding) followed by a linear classifier.

    Parameters
    ----------
    extractor : nn.Module
        Maps ``(N, *in_shape)`` to ``(N, embed_dim)``.
    classifier : nn.Module
        Maps ``(N, embed_dim)`` to ``(N, n_classes)`` logits.
    spec : dict
        The :func:`build_model` arguments that rebuild this architecture.
    """

    def __init__(self, extractor: nn.Module, classifier: nn.Module, spec: dict[str, Any]) -> None:
        super().__init__()
        self.extractor = extractor
        self.classifier = classifier
        self._spec = dict(spec)

    @property
    def spec(self) -> dict[str, Any]:
        """``{"arch", "in_shape", "n_classes", "embed_dim", "width", "batchnorm"}`` (a copy)."""
        out = dict(self._spec)
        out["in_shape"] = list(out["in_shape"])
        return out

    @property
    def embed_dim(self) -> int:
        return int(self._spec["embed_dim"])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding of ``x`` (same as ``extractor(x)``)."""
        return self.extractor(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.extractor(x))


class _ChannelsLast1d(nn.Module):
    """(N, length, channels) → (N, channels, length): sensors give rows, Conv1d wants channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class _AddChannel(nn.Module):
    """(N, H, W) → (N, 1, H, W) for single-channel images stored without a channel axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


class _MeanOverTime(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2)


def _norm(kind: str, n: int, on: bool) -> nn.Module:
    if not on:
        return nn.Identity()
    return nn.BatchNorm1d(n) if kind == "1d" else nn.BatchNorm2d(n)


def _mlp(in_shape: tuple[int, ...], embed_dim: int, width: int, bn: bool) -> nn.Module:
    n_in = math.prod(in_shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_in, width),
        _norm("1d", width, bn),
        nn.ReLU(),
        nn.Linear(width, embed_dim),
        _norm("1d", embed_dim, bn),
        nn.ReLU(),
    )


def _cnn(in_shape: tuple[int, ...], embed_dim: int, width: int, bn: bool) -> nn.Module:
    if len(in_shape) == 2:
        pre: list[nn.Module] = [_AddChannel()]
        c, h, w = 1, *in_shape
    elif len(in_shape) == 3:
        pre = []
        c, h, w = in_shape
    else:
        raise ConfigError(f"in_shape = {tuple(in_shape)}: cnn takes (H, W) or (C, H, W) images")
    if h < 4 or w < 4:
        raise ConfigError(f"in_shape = {tuple(in_shape)}: cnn needs images of at least 4x4")
    w2 = 2 * width
    return nn.Sequential(
        *pre,
        nn.Conv2d(c, width, 3, padding=1, bias=not bn),
        _norm("2d", width, bn),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, w2, 3, padding=1, bias=not bn),
        _norm("2d", w2, bn),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(w2 * (h // 4) * (w // 4), embed_dim),
        nn.ReLU(),
    )


def _imu_cnn(in_shape: tuple[int, ...], embed_dim: int, width: int, bn: bool) -> nn.Module:
    if len(in_shape) != 2:
        raise ConfigError(f"in_shape = {tuple(in_shape)}: imu-cnn takes (length, channels)")
    length, channels = in_shape
    if length < 8:
        raise ConfigError(f"in_shape = {tuple(in_shape)}: imu-cnn needs windows of >= 8 rows")
    w2 = 2 * width
    return nn.Sequential(
        _ChannelsLast1d(),
        nn.Conv1d(channels, width, 5, padding=2, bias=not bn),
        _norm("1d", width, bn),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(width, w2, 5, padding=2, bias=not bn),
        _norm("1d", w2, bn),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(w2, w2, 3, padding=1, bias=not bn),
        _norm("1d", w2, bn),
        nn.ReLU(),
        _MeanOverTime(),
        nn.Linear(w2, embed_dim),
        nn.ReLU(),
    )


_BUILDERS = {"mlp": _mlp, "cnn": _cnn, "imu-cnn": _imu_cnn}


def build_model(
    arch: str,
    in_shape: Sequence[int],
    n_classes: int,
    embed_dim: int | None = None,
    *,
    width: int | None = None,
    batchnorm: bool = True,
) -> EdgeModel:
    """Build an :class:`EdgeModel` of family ``arch``.

    Parameters
    ----------
    arch : {"mlp", "cnn", "imu-cnn"}
    in_shape : sequence of int
        One input, without the batch axis: ``(28, 28)`` or ``(784,)`` for the
        mlp, ``(H, W)``/``(C, H, W)`` for the cnn, ``(length, channels)`` for imu-cnn.
    n_classes : int
        Logits of the classifier (>= 2).
    embed_dim : int, optional
        Embedding width. Default 100 for the mlp (the reference network's last
        hidden layer), 64 otherwise.
    width : int, optional
        mlp: first hidden layer (default 100); cnn/imu-cnn: channels of the first
        conv block, doubled in the next ones (default 32).
    batchnorm : bool
        BatchNorm after every hidden Linear/conv (default True).

    Raises
    ------
    ConfigError
        Unknown ``arch`` or an out-of-range size, naming the value.

    >>> build_model("cnn", (28, 28), 10, embed_dim=32).spec
    {'arch': 'cnn', 'in_shape': [28, 28], 'n_classes': 10, 'embed_dim': 32, 'width': 32, \
'batchnorm': True}
    >>> build_model("rnn", (3,), 2)
    Traceback (most recent call last):
    ...
    edgecl.errors.ConfigError: arch = 'rnn': must be one of mlp, cnn, imu-cnn
    """
    if arch not in _BUILDERS:
        raise ConfigError(f"arch = {arch!r}: must be one of {', '.join(ARCHS)}")
    shape = tuple(int(s) for s in in_shape)
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(f"in_shape = {shape}: must be a non-empty tuple of positive sizes")
    d_embed, d_width = _DEFAULTS[arch]
    embed_dim = d_embed if embed_dim is None else int(embed_dim)
    width = d_width if width is None else int(width)
    for name, v, lo in (
        ("n_classes", n_classes, 2),
        ("embed_dim", embed_dim, 1),
        ("width", width, 1),
    ):
        if isinstance(v, bool) or int(v) != v or v < lo:
            raise ConfigError(f"{name} = {v!r}: must be an integer >= {lo}")
    extractor = _BUILDERS[arch](shape, embed_dim, width, bool(batchnorm))
    classifier = nn.Linear(embed_dim, int(n_classes))
    spec = {
        "arch": arch,
        "in_shape": shape,
        "n_classes": int(n_classes),
        "embed_dim": embed_dim,
        "width": width,
        "batchnorm": bool(batchnorm),
    }
    return EdgeModel(extractor, classifier, spec)


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters.

    >>> n_parameters(build_model("mlp", (784,), 10))
    90010
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
