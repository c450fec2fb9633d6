"""Viseme rules: lips shut on /p b m/, open vowels open the jaw, silence relaxes to neutral; brows, blinks."""
from __future__ import annotations

import numpy as np
import pytest

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES
from lsf_core.data.prosody import blink_curve, brow_curves, pitch_track
from lsf_core.data.visemes import FPS, PHONE_VISEMES, mouth_curves

JAW, CLOSE = ARKIT_INDEX["jawOpen"], ARKIT_INDEX["mouthClose"]
MOUTH = [i for i, n in enumerate(ARKIT_NAMES) if n.startswith(("mouth", "jaw", "tongue", "cheek"))]


def _segments(spec: list[tuple[str, float]]):
    phones = [p for p, _ in spec]
    ends = np.cumsum([d for _, d in spec]).astype(np.float32)
    starts = np.concatenate([[0.0], ends[:-1]]).astype(np.float32)
    return phones, starts, ends


def _frame_at(t: float) -> int:
    return int(t * FPS)


@pytest.mark.parametrize("rate", [1.0, 1.6])   # normal and fast speech (shorter closures)
def test_bilabials_close_the_lips_between_open_vowels(rate):
    spec = [("SIL", 0.3), ("AA", 0.15), ("B", 0.06), ("AA", 0.15), ("P", 0.05), ("AE", 0.15), ("M", 0.06),
            ("AA", 0.15), ("SIL", 0.4)]
    phones, starts, ends = _segments([(p, d / rate) for p, d in spec])
    n = int(np.ceil(ends[-1] * FPS))
    c = mouth_curves(phones, starts, ends, n)
    assert c.shape == (n, 52) and c.dtype == np.float32 and c.min() >= 0 and c.max() <= 1
    for p, s, e in zip(phones, starts, ends):
        f = _frame_at(0.5 * (s + e))
        if p in ("B", "P", "M"):
            assert c[f, JAW] < 0.2 and c[f, CLOSE] > 0.2, (p, c[f, JAW], c[f, CLOSE])
        if p in ("AA", "AE"):
            assert c[f, JAW] > 0.35 / rate, (p, c[f, JAW])


def test_open_vowels_open_the_jaw_more_than_closed_ones_and_rounded_vowels_pucker():
    phones, starts, ends = _segments([("SIL", 0.2), ("AA", 0.2), ("SIL", 0.3), ("IY", 0.2), ("SIL", 0.3),
                                      ("UW", 0.2), ("SIL", 0.3)])
    c = mouth_curves(phones, starts, ends, int(np.ceil(ends[-1] * FPS)))
    aa, iy, uw = (c[_frame_at(0.5 * (starts[i] + ends[i]))] for i in (1, 3, 5))
    assert aa[JAW] > iy[JAW] + 0.2 and aa[JAW] > uw[JAW] + 0.2
    assert uw[ARKIT_INDEX["mouthPucker"]] > 0.4 > aa[ARKIT_INDEX["mouthPucker"]]
    assert iy[ARKIT_INDEX["mouthStretchLeft"]] > 0.2


def test_labiodentals_roll_the_lower_lip():
    phones, starts, ends = _segments([("SIL", 0.2), ("AH", 0.15), ("F", 0.1), ("AH", 0.15), ("SIL", 0.2)])
    c = mouth_curves(phones, starts, ends, int(np.ceil(ends[-1] * FPS)))
    f = c[_frame_at(0.5 * (starts[2] + ends[2]))]
    assert f[ARKIT_INDEX["mouthRollLower"]] > 0.3


def test_silence_returns_to_neutral_within_200ms():
    phones, starts, ends = _segments([("AA", 0.3), ("SIL", 1.0)])
    c = mouth_curves(phones, starts, ends, int(np.ceil(ends[-1] * FPS)))
    after = c[_frame_at(0.3 + 0.2):, MOUTH]
    assert c[_frame_at(0.15), JAW] > 0.4
    assert after.max() < 0.05


def test_every_phone_has_a_viseme_and_unknown_phones_are_named():
    from lsf_core.data.align import PHONES

    assert set(PHONES) <= set(PHONE_VISEMES)
    with pytest.raises(ValueError, match="'QQ'"):
        mouth_curves(["QQ"], np.array([0.0]), np.array([0.1]), 3)


def test_brows_rise_on_a_pitch_peak_and_blinks_are_plausible(rng):
    sr = 16000
    t = np.arange(int(2.0 * sr)) / sr
    f0 = np.where((t > 1.0) & (t < 1.3), 260.0, 140.0)          # an accent on the third vowel
    audio = (0.3 * np.sin(2 * np.pi * np.cumsum(f0) / sr)).astype(np.float32)
    track = pitch_track(audio)
    assert abs(np.median(track[(track > 0)][:50]) - 140) < 10
    phones = ["AA", "SIL", "AA", "SIL", "AA", "SIL"]
    starts = np.array([0.1, 0.4, 0.5, 0.95, 1.0, 1.3], np.float32)
    ends = np.array([0.4, 0.5, 0.95, 1.0, 1.3, 2.0], np.float32)
    brows = brow_curves(audio, phones, starts, ends, 50)
    assert brows[_frame_at(1.15), 0] > 0.15 and brows[_frame_at(0.25), 0] < 0.05
    blink = blink_curve(25 * 600, rng)                              # ten minutes
    onsets = np.flatnonzero((blink[1:] > 0.5) & (blink[:-1] <= 0.5))
    assert 8 * 10 <= onsets.size <= 30 * 10 and blink.max() == pytest.approx(1.0, abs=0.05)
