"""Prosody-driven upper face: brows from pitch peaks on stressed vowels, blinks, vowel loudness.

Pitch is a plain normalised-autocorrelation estimate per 10 ms frame (enough to find accent
peaks). On each vowel whose pitch peak stands out from the speaker's range, ``browInnerUp`` and
``browOuterUp`` rise in a smooth bump; blinks come at a plausible random rate, partly
synchronised with pauses. Everything here is procedural and reproducible from a numpy Generator.
"""
from __future__ import annotations

import numpy as np

from lsf_core.arkit import ARKIT_INDEX
from lsf_core.audio import MODEL_RATE, pitch_track
from lsf_core.data.visemes import VOWELS, frame_times


def phone_loudness(audio: np.ndarray, phones, starts, ends) -> np.ndarray:
    """Per-phone gain in [0.75, 1.2] for vowels: louder than the clip's median vowel opens wider."""
    gains = np.ones(len(phones), np.float32)
    levels = []
    for i, (p, s, e) in enumerate(zip(phones, starts, ends)):
        seg = audio[int(s * MODEL_RATE): max(int(e * MODEL_RATE), int(s * MODEL_RATE) + 1)]
        level = 10 * np.log10(np.mean(seg.astype(np.float64) ** 2) + 1e-12)
        if p in VOWELS:
            levels.append((i, level))
    if levels:
        ref = np.median([lv for _, lv in levels])
        for i, lv in levels:
            gains[i] = np.clip(1.0 + (lv - ref) / 40.0, 0.75, 1.2)
    return gains


def _bump(t: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def brow_curves(audio: np.ndarray, phones, starts, ends, num_frames: int, fps: int = 25,
                threshold: float = 0.8, amplitude: float = 0.35) -> np.ndarray:
    """(num_frames, 3): browInnerUp, browOuterUpLeft, browOuterUpRight from pitch-accented vowels."""
    f0 = pitch_track(audio)
    t = frame_times(num_frames, fps)
    out = np.zeros((num_frames, 3), np.float32)
    voiced = f0[f0 > 0]
    if voiced.size < 10:
        return out
    logf = np.log(np.maximum(f0, 1.0))
    mu, sd = np.log(voiced).mean(), np.log(voiced).std() + 1e-3
    for p, s, e in zip(phones, starts, ends):
        if p not in VOWELS:
            continue
        seg = logf[int(s * 100): int(e * 100) + 1]
        seg = seg[seg > 0]
        if seg.size == 0:
            continue
        z = (seg.max() - mu) / sd
        if z > threshold:
            a = amplitude * min(1.0, (z - threshold) / 1.2 + 0.3)
            bump = a * _bump(t, 0.5 * (s + e), 0.12 + 0.5 * (e - s))
            out[:, 0] = np.maximum(out[:, 0], bump)
            out[:, 1] = np.maximum(out[:, 1], 0.7 * bump)
            out[:, 2] = np.maximum(out[:, 2], 0.7 * bump)
    return out


def blink_curve(num_frames: int, rng: np.random.Generator, fps: int = 25, per_minute: float = 17.0,
                pauses: list[tuple[float, float]] | None = None) -> np.ndarray:
    """(num_frames,) eyelid closure 0..1: blinks about ``per_minute``, often at the start of a pause."""
    duration = num_frames / fps
    t = frame_times(num_frames, fps)
    onsets: list[float] = []
    for s, e in pauses or []:
        if e - s > 0.25 and rng.random() < 0.5:
            onsets.append(s + 0.05)
    clock = rng.exponential(60.0 / per_minute) * rng.random()
    while clock < duration:
        onsets.append(clock)
        clock += max(1.0, rng.exponential(60.0 / per_minute))
    out = np.zeros(num_frames, np.float32)
    for o in onsets:
        close, reopen = rng.uniform(0.06, 0.09), rng.uniform(0.12, 0.2)
        shape = np.where(t < o, 0.0, np.where(t < o + close, (t - o) / close,
                                              np.clip(1.0 - (t - o - close) / reopen, 0.0, 1.0)))
        out = np.maximum(out, shape.astype(np.float32))
    return out


def upper_face(audio: np.ndarray, phones, starts, ends, num_frames: int, rng: np.random.Generator,
               fps: int = 25) -> np.ndarray:
    """(num_frames, 52) with brows and blinks set, zeros elsewhere."""
    out = np.zeros((num_frames, len(ARKIT_INDEX)), np.float32)
    brows = brow_curves(audio, phones, starts, ends, num_frames, fps)
    out[:, ARKIT_INDEX["browInnerUp"]] = brows[:, 0]
    out[:, ARKIT_INDEX["browOuterUpLeft"]] = brows[:, 1]
    out[:, ARKIT_INDEX["browOuterUpRight"]] = brows[:, 2]
    pauses = [(float(s), float(e)) for p, s, e in zip(phones, starts, ends) if p == "SIL"]
    blink = blink_curve(num_frames, rng, fps, pauses=pauses)
    out[:, ARKIT_INDEX["eyeBlinkLeft"]] = blink
    out[:, ARKIT_INDEX["eyeBlinkRight"]] = blink
    return out
