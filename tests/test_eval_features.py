"""Window features: shapes, finiteness, and known values on pure tones."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl.eval.features import STATS, band_edges, feature_names, window_features

RATE = 50.0


def tone(freq: float, amp: float = 1.0, n: int = 100, phase: float = 0.0) -> np.ndarray:
    t = np.arange(n) / RATE
    return amp * np.sin(2 * np.pi * freq * t + phase)


def test_shape_dtype_and_names_six_channels():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 100, 6)).astype(np.float32)
    f = window_features(w)
    names = feature_names(["ax", "ay", "az", "wx", "wy", "wz"])
    # 6 channels + |acc| + |gyro|, each with 5 statistics and 4 bands.
    assert f.shape == (5, 8 * 9) == (5, len(names))
    assert f.dtype == np.float32
    assert np.isfinite(f).all()
    assert names[-1] == "|wx,wy,wz|_band3"


def test_no_magnitudes_when_channels_not_a_multiple_of_three():
    f = window_features(np.ones((2, 64, 4)))
    assert f.shape == (2, 4 * (len(STATS) + 4))
    assert window_features(np.ones((2, 64, 6)), magnitudes=False).shape == (2, 6 * 9)


@pytest.mark.parametrize("freq,band", [(0.5, 0), (2.0, 1), (5.0, 2), (15.0, 3)])
def test_pure_tone_lands_in_its_band(freq, band):
    edges = band_edges(100)
    k = int(freq * 100 / RATE)  # rfft bin of the tone
    assert edges[band] <= k < edges[band + 1]
    amp = 3.0
    f = window_features(tone(freq, amp)[None, :, None], magnitudes=False)[0]
    mean, std, lo, hi, energy, *bands = f
    assert mean == pytest.approx(0.0, abs=1e-5)
    assert std == pytest.approx(amp / np.sqrt(2), rel=1e-5)
    assert energy == pytest.approx(amp**2 / 2, rel=1e-5)
    assert -amp <= lo < 0 < hi <= amp
    # Parseval: the band holding the tone has all of its power, A²/2.
    assert bands[band] == pytest.approx(amp**2 / 2, rel=1e-4)
    assert np.delete(np.array(bands), band) == pytest.approx(0.0, abs=1e-6)


def test_band_powers_sum_to_the_variance():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 101, 2)) + 4.0  # odd length: no Nyquist bin
    f = window_features(w, magnitudes=False).reshape(3, 2, 9)
    var = w.var(axis=1)
    np.testing.assert_allclose(f[:, :, 5:].sum(axis=2), var, rtol=1e-4)
    np.testing.assert_allclose(f[:, :, 1] ** 2, var, rtol=1e-4)


def test_magnitude_channel_of_constant_gravity():
    w = np.zeros((1, 100, 6))
    w[0, :, 2] = 1.0  # gravity on z
    w[0, :, 3:] = [3.0, 4.0, 0.0]  # constant rotation, magnitude 5
    f = window_features(w).reshape(8, 9)
    assert f[6, 0] == pytest.approx(1.0)  # |acc| mean
    assert f[7, 0] == pytest.approx(5.0)  # |gyro| mean
    assert f[7, 1] == pytest.approx(0.0, abs=1e-6)  # constant: no spread


def test_short_windows_keep_the_feature_count():
    assert window_features(np.ones((1, 4, 1)), magnitudes=False).shape == (1, 9)
    assert band_edges(4).tolist() == [1, 1, 2, 2, 3]  # two empty bands


def test_bad_input():
    with pytest.raises(ValueError, match="3-D"):
        window_features(np.zeros((10, 3)))
    with pytest.raises(ValueError, match=">= 2 rows"):
        window_features(np.zeros((1, 1, 3)))
