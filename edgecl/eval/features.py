"""Hand-made per-window features for raw IMU windows.

Until a bundle's ONNX extractor provides embeddings, the streaming learner is
evaluated on classic activity-recognition features (Bulling et al. 2014, "A
tutorial on human activity recognition using body-worn inertial sensors"):
for every channel the mean, standard deviation, minimum, maximum, energy (mean
square) and the power in a few log-spaced frequency bands. When the channel
count is a multiple of 3, every consecutive xyz triple (accelerometer, gyroscope,
...) also yields its Euclidean magnitude as an extra, orientation-free channel.

Band power is the one-sided periodogram ``2|X_k|² / n²`` (``|X_k|²/n²`` for the
DC and Nyquist bins), so a pure tone of amplitude ``A`` puts ``A²/2`` — its mean
square — into the band holding its frequency. Bands are log-spaced over the
non-DC bins because movement information concentrates at low frequencies.

>>> import numpy as np
>>> w = np.zeros((2, 100, 6), dtype=np.float32)
>>> window_features(w).shape
(2, 72)
>>> feature_names(["ax", "ay", "az", "wx", "wy", "wz"])[:3]
['ax_mean', 'ax_std', 'ax_min']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["STATS", "band_edges", "feature_names", "window_features"]

STATS = ("mean", "std", "min", "max", "energy")


def band_edges(length: int, n_bands: int = 4) -> np.ndarray:
    """Bin edges of ``n_bands`` log-spaced bands over the non-DC rfft bins.

    Band ``b`` holds rfft bins ``edges[b] <= k < edges[b+1]``. Short windows can
    give empty bands (equal edges); their power is then 0, so the feature count
    never depends on the window length.

    >>> band_edges(100).tolist()  # at 50 Hz: 0.5-1.5, 1.5-3.5, 3.5-9.5, 9.5-25 Hz
    [1, 3, 7, 19, 51]
    """
    if length < 2:
        raise ValueError(f"length = {length}: spectral bands need windows of >= 2 rows")
    if n_bands < 1:
        raise ValueError(f"n_bands = {n_bands}: must be >= 1")
    n_freq = length // 2 + 1
    edges = np.round(np.geomspace(1, n_freq, n_bands + 1)).astype(np.int64)
    edges[0], edges[-1] = 1, n_freq
    return np.maximum.accumulate(edges)


def feature_names(channels: Sequence[str], n_bands: int = 4, magnitudes: bool = True) -> list[str]:
    """Names of the columns :func:`window_features` returns, in order.

    >>> feature_names(["x"], n_bands=2, magnitudes=False)
    ['x_mean', 'x_std', 'x_min', 'x_max', 'x_energy', 'x_band0', 'x_band1']
    """
    chans = list(channels)
    if magnitudes and len(chans) % 3 == 0:
        chans += ["|" + ",".join(chans[i : i + 3]) + "|" for i in range(0, len(chans), 3)]
    per = [*STATS, *(f"band{b}" for b in range(n_bands))]
    return [f"{c}_{s}" for c in chans for s in per]


def window_features(windows: np.ndarray, n_bands: int = 4, magnitudes: bool = True) -> np.ndarray:
    """Per-channel statistics and band powers of every window.

    Parameters
    ----------
    windows : ndarray, shape (n_windows, length, n_channels)
    n_bands : int
        Number of log-spaced spectral bands per channel.
    magnitudes : bool
        Add the magnitude of every consecutive xyz channel triple as an extra
        channel (only when ``n_channels`` is a multiple of 3).

    Returns
    -------
    ndarray, shape (n_windows, n_channels' * (5 + n_bands)), float32
        Columns grouped by channel: mean, std, min, max, energy, band0..; the
        names come from :func:`feature_names`.

    >>> t = np.arange(100) / 50.0                       # 2 s at 50 Hz
    >>> tone = 2.0 * np.cos(2 * np.pi * 5.0 * t)        # 5 Hz, amplitude 2: in band 2
    >>> f = window_features(tone[None, :, None], magnitudes=False)[0]
    >>> [round(float(v), 3) + 0.0 for v in f]  # + 0.0 turns -0.0 into 0.0
    [0.0, 1.414, -2.0, 2.0, 2.0, 0.0, 0.0, 2.0, 0.0]
    """
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3:
        raise ValueError(f"windows must be 3-D (n_windows, length, n_channels), got {w.shape}")
    n, length, c = w.shape
    if magnitudes and c % 3 == 0 and c > 0:
        mags = np.sqrt(np.square(w.reshape(n, length, c // 3, 3)).sum(axis=3))
        w = np.concatenate([w, mags], axis=2)

    stats = [w.mean(axis=1), w.std(axis=1), w.min(axis=1), w.max(axis=1)]
    stats.append(np.square(w).mean(axis=1))

    spec = np.square(np.abs(np.fft.rfft(w, axis=1))) / float(length * length)
    # One-sided spectrum: every bin except DC (and Nyquist for even n) stands for two.
    weight = np.full(spec.shape[1], 2.0)
    weight[0] = 1.0
    if length % 2 == 0:
        weight[-1] = 1.0
    spec *= weight[None, :, None]
    # Band sums via a cumulative sum, so empty bands come out as exact zeros.
    csum = np.concatenate([np.zeros((n, 1, w.shape[2])), np.cumsum(spec, axis=1)], axis=1)
    edges = band_edges(length, n_bands)
    bands = [csum[:, edges[b + 1]] - csum[:, edges[b]] for b in range(n_bands)]

    # (n, channels, features) → channel-major columns, matching feature_names().
    out = np.stack(stats + bands, axis=2).reshape(n, -1)
    return out.astype(np.float32)
