"""Augmentation keeps length and finiteness, and does what it says."""
from __future__ import annotations

import numpy as np
import pytest

from lsf_core.data import augment as A


def test_chain_keeps_length_and_is_finite_and_reproducible(speech):
    for seed in range(12):
        y = A.augment(speech, np.random.default_rng(seed))
        assert y.shape == speech.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
        assert np.abs(y).max() <= 1.0 + 1e-6
    a = A.augment(speech, np.random.default_rng(3))
    b = A.augment(speech, np.random.default_rng(3))
    assert np.array_equal(a, b)


def test_noise_hits_the_requested_snr(speech, rng):
    y = A.add_noise(speech, rng, 10.0)
    noise = y - speech
    snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert abs(snr - 10.0) < 0.5


def test_pitch_shift_moves_a_tone_and_keeps_length():
    sr = 16000
    x = (0.3 * np.sin(2 * np.pi * 200 * np.arange(2 * sr) / sr)).astype(np.float32)
    y = A.pitch_shift(x, 3.0)
    assert y.size == x.size
    spec = np.abs(np.fft.rfft(y[4000:-4000]))
    peak = np.argmax(spec) * sr / (y.size - 8000)
    assert abs(peak - 200 * 2 ** (3 / 12)) < 5


def test_speed_changes_length_and_targets_follow():
    x = np.zeros(32000, np.float32)
    y = A.speed(x, 1.25)
    assert abs(y.size - 32000 / 1.25) < 40
    t = np.random.default_rng(0).random((50, 52)).astype(np.float32)
    assert A.resample_frames(t, 40).shape == (40, 52)
    with pytest.raises(ValueError, match="speed factor"):
        A.speed(x, 3.0)


def test_band_limit_removes_low_frequencies_and_reverb_spreads_energy(rng):
    sr = 16000
    n = np.arange(sr)
    low = (0.5 * np.sin(2 * np.pi * 60 * n / sr)).astype(np.float32)
    assert np.std(A.band_limit(low, 300.0, 3400.0)) < 0.02
    click = np.zeros(sr, np.float32)
    click[100] = 1.0
    wet = A.reverb(click, rng, 0.5)
    assert wet.size == sr and np.abs(wet[4000:]).max() > 1e-3
    with pytest.raises(ValueError, match="band_limit"):
        A.band_limit(low, 500.0, 100.0)
