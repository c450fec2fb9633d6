"""Audio augmentation for training on synthetic speech and testing on microphones.

Functions on float32 16 kHz mono arrays, each drawing its randomness from a numpy Generator, for
on-the-fly use by the trainer. Every function except ``speed`` keeps the length; ``speed`` changes
it and ``resample_frames`` stretches the matching target curves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsf_core.audio import MODEL_RATE, resample


def _check(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 1:
        raise ValueError(f"augmentation expects mono audio (samples,), got shape {x.shape}")
    return x


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Coloured noise (white to brown, random tilt) at ``snr_db`` below the speech power."""
    x = _check(x)
    n = rng.standard_normal(x.size)
    tilt = rng.uniform(0.0, 0.98)                    # one-pole low-pass: 0 white .. ~1 brown
    if tilt > 0:
        from scipy.signal import lfilter

        n = lfilter([1.0], [1.0, -tilt], n)
    p_sig = float(np.mean(x.astype(np.float64) ** 2)) + 1e-12
    p_noise = float(np.mean(n ** 2)) + 1e-12
    return (x + n * np.sqrt(p_sig / p_noise / 10 ** (snr_db / 10))).astype(np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator, rt60: float, wet: float = 0.5) -> np.ndarray:
    """Synthetic room: exponentially decaying noise impulse response with reverberation time ``rt60`` s."""
    from scipy.signal import fftconvolve

    x = _check(x)
    n = max(1, int(rt60 * MODEL_RATE))
    t = np.arange(n) / MODEL_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / max(rt60, 1e-3))
    ir[0] = 0.0
    ir /= np.sqrt(np.sum(ir ** 2)) + 1e-12
    tail = fftconvolve(x, ir)[: x.size]
    return ((1 - wet) * x + wet * tail * (np.std(x) / (np.std(tail) + 1e-12))).astype(np.float32)


def gain(x: np.ndarray, db: float) -> np.ndarray:
    """Level change by ``db`` (clipped to [-1, 1] like a real converter)."""
    return np.clip(_check(x) * 10 ** (db / 20), -1.0, 1.0).astype(np.float32)


def band_limit(x: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """Band-pass (4th-order Butterworth, zero phase): telephone, cheap microphones."""
    from scipy.signal import butter, sosfiltfilt

    x = _check(x)
    nyq = MODEL_RATE / 2
    if not 0 < low_hz < high_hz <= nyq:
        raise ValueError(f"band_limit needs 0 < low_hz < high_hz <= {nyq}, got {low_hz}, {high_hz}")
    if high_hz >= nyq * 0.99:
        sos = butter(4, low_hz / nyq, btype="highpass", output="sos")
    else:
        sos = butter(4, [low_hz / nyq, high_hz / nyq], btype="bandpass", output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch together); length becomes ~len/factor."""
    x = _check(x)
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"speed factor must be within [0.5, 2], got {factor}")
    if factor == 1:
        return x
    # read the samples as if recorded at rate*factor (in 50 Hz steps: short polyphase filters)
    return resample(x, int(round(MODEL_RATE * factor / 50.0)) * 50, MODEL_RATE)


def resample_frames(targets: np.ndarray, num_frames: int) -> np.ndarray:
    """Stretch (T, K) target curves to ``num_frames`` by linear interpolation (after ``speed``)."""
    t_old = np.linspace(0.0, 1.0, targets.shape[0])
    t_new = np.linspace(0.0, 1.0, num_frames)
    return np.stack([np.interp(t_new, t_old, targets[:, k]) for k in range(targets.shape[1])], 1).astype(
        np.float32)


def pitch_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    """Shift pitch by ``semitones`` keeping the length: resample, then overlap-add time stretch back."""
    x = _check(x)
    if semitones == 0:
        return x
    ratio = 2 ** (semitones / 12)
    shifted = speed(x, ratio)                       # higher pitch, shorter
    return _ola_stretch(shifted, x.size)


def _ola_stretch(x: np.ndarray, length: int, win: int = 640) -> np.ndarray:
    """Overlap-add time stretch of ``x`` to ``length`` samples (Hann windows, 50% output overlap,
    each grain aligned to the output by cross-correlation within +-5 ms: a small WSOLA)."""
    hop = win // 2
    window = np.hanning(win).astype(np.float32)
    n_out = length // hop + 2
    out = np.zeros(n_out * hop + win, np.float32)
    norm = np.zeros_like(out)
    src = np.concatenate([x, np.zeros(win * 2, np.float32)])
    scale = x.size / max(length, 1)
    tol = int(0.005 * MODEL_RATE)
    prev = None
    for i in range(n_out):
        pos = int(i * hop * scale)
        if prev is not None:
            lo, hi = max(0, pos - tol), min(src.size - win, pos + tol)
            if hi > lo:
                seg = src[lo: hi + hop]
                corr = np.correlate(seg, prev[:hop], mode="valid")[: hi - lo]
                pos = lo + int(np.argmax(corr)) if corr.size else pos
        grain = src[pos: pos + win]
        out[i * hop: i * hop + win] += grain * window
        norm[i * hop: i * hop + win] += window
        prev = src[pos + hop: pos + hop + win]
    return (out[:length] / np.maximum(norm[:length], 1e-3)).astype(np.float32)


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the length-keeping chain ``augment``."""

    p_noise: float = 0.5
    snr_db: tuple[float, float] = (5.0, 35.0)
    p_reverb: float = 0.3
    rt60: tuple[float, float] = (0.1, 0.7)
    p_pitch: float = 0.3
    semitones: tuple[float, float] = (-3.0, 3.0)
    p_band: float = 0.3
    low_hz: tuple[float, float] = (50.0, 400.0)
    high_hz: tuple[float, float] = (3000.0, 8000.0)
    p_gain: float = 0.7
    gain_db: tuple[float, float] = (-20.0, 6.0)


def augment(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> np.ndarray:
    """A random chain (pitch, reverb, band limit, noise, level), same length as ``x``, finite."""
    cfg = cfg or AugmentConfig()
    y = _check(x)
    if rng.random() < cfg.p_pitch:
        y = pitch_shift(y, float(rng.uniform(*cfg.semitones)))
    if rng.random() < cfg.p_reverb:
        y = reverb(y, rng, float(rng.uniform(*cfg.rt60)))
    if rng.random() < cfg.p_band:
        y = band_limit(y, float(rng.uniform(*cfg.low_hz)), float(rng.uniform(*cfg.high_hz)))
    if rng.random() < cfg.p_noise:
        y = add_noise(y, rng, float(rng.uniform(*cfg.snr_db)))
    if rng.random() < cfg.p_gain:
        y = gain(y, float(rng.uniform(*cfg.gain_db)))
    return np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
