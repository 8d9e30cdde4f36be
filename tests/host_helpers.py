"""Tiny synthetic data for the host tests (seconds on one CPU core)."""

from __future__ import annotations

import numpy as np


def blobs(n_classes: int = 6, per_class: int = 40, dim: int = 6, sep: float = 3.0, seed: int = 0):
    """Well-separated Gaussian blobs: class c centred on sep * e_(c mod dim)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    centres = sep * np.eye(max(dim, n_classes), dtype=np.float32)[:n_classes, :dim]
    x = centres[y] + rng.normal(scale=0.5, size=(len(y), dim)).astype(np.float32)
    order = rng.permutation(len(y))
    return x[order].astype(np.float32), y[order].astype(np.int64)


def write_image_npz(path, n_classes: int = 6, per_class: int = 40, dim: int = 6, seed: int = 0):
    x, y = blobs(n_classes, per_class, dim, seed=seed)
    xt, yt = blobs(n_classes, per_class // 2, dim, seed=seed + 1)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


def write_imu_npz(path, seed: int = 0):
    """A row stream: 3 subjects x 4 recordings of 3 classes, 3 channels, 50 Hz."""
    rng = np.random.default_rng(seed)
    xs, ys, ss, rs = [], [], [], []
    rec = 0
    for subject in (1, 2, 3):
        for k in range(4):
            cls = k % 3
            t = np.arange(80) / 50.0
            sig = np.stack(
                [np.sin(2 * np.pi * (cls + 1) * t), np.cos(2 * np.pi * t) * cls, t * 0 + cls],
                axis=1,
            )
            xs.append(sig + rng.normal(scale=0.2, size=sig.shape) + 5.0)
            ys.append(np.full(80, cls))
            ss.append(np.full(80, subject))
            rs.append(np.full(80, rec))
            rec += 1
    np.savez(
        path,
        x=np.concatenate(xs).astype(np.float32),
        y=np.concatenate(ys).astype(np.int64),
        subject=np.concatenate(ss).astype(np.int64),
        recording=np.concatenate(rs).astype(np.int64),
        channels=np.array(["a", "b", "c"]),
        classes=np.array(["slow", "mid", "fast"]),
        rate_hz=np.array(50),
    )
    return path
