"""``lsf evaluate --real HELDOUT --readout TRAIN``: how much of each real channel a plain read-out of the audio
predicts for this speaker, scored like any model, as a reference for what the audio carries.

Per ARKit channel, a ridge regression from a log-mel window (200 ms before the frame to 120 ms after it, the
look-ahead of the ``realtime`` model, every 20 ms, 80 bands: 1360 features standardised on TRAIN) is fitted on
TRAIN's measured frames and applied to the held-out clips. Its regularisation is chosen per channel by
cross-validation over TRAIN's clips, never on the held-out ones; TRAIN and the held-out folder must not share a
clip. The read-out is fitted on the speaker's own clips: an in-speaker linear reference, not a bound (a
nonlinear model can beat it; a model trained on many voices may not reach it).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from lsf_core.evaluation.real_motion import RealClip
from lsf_core.models.base import AUDIO_RATE
from lsf_core.models.realtime import RealtimeConfig

MEL = RealtimeConfig()                   # the realtime model's log-mel analysis (80 bands, 25 ms / 10 ms)
MEL_RATE = AUDIO_RATE / MEL.mel_hop      # log-mel frames per second
WINDOW = np.arange(-20, 13, 2)          # mel frames around the model frame: -200..+120 ms every 20 ms
LAMBDAS = (1e1, 1e2, 1e3, 1e4, 1e5)


@lru_cache(maxsize=1)
def _logmel():
    from lsf_core.models.features import LogMel

    return LogMel(MEL.n_mels, AUDIO_RATE, MEL.mel_win, MEL.mel_hop)


def window_features(audio: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """(n_frames, len(WINDOW) * n_mels) log-mel windows of 16 kHz ``audio`` around each model frame ``k / fps``."""
    with torch.no_grad():
        mel = _logmel()(torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None])[0].numpy()
    if len(mel) == 0:
        raise ValueError("audio shorter than one 25 ms analysis window")
    centre = np.round(np.arange(n_frames) / fps * MEL_RATE).astype(int)
    idx = np.clip(centre[:, None] + WINDOW[None], 0, len(mel) - 1)
    return mel[idx].reshape(n_frames, -1)


@dataclass
class Readout:
    mean: np.ndarray        # (F,) feature standardisation
    std: np.ndarray
    weights: np.ndarray     # (F, 52); 0 for channels TRAIN does not measure
    bias: np.ndarray        # (52,)
    lambdas: dict[str, float]   # the chosen regularisation per fitted channel

    def predict(self, clip: RealClip) -> np.ndarray:
        x = (window_features(clip.audio, len(clip.real), clip.fps) - self.mean) / self.std
        return (x @ self.weights + self.bias).astype(np.float32)


def _solve(gram: np.ndarray, xty: np.ndarray, lam: float) -> np.ndarray:
    return np.linalg.solve(gram + lam * np.eye(len(gram)), xty)


def _centred(stats: tuple) -> tuple:
    """(mean x, mean y, centred X'X, centred X'y) from the sums (n, sum x, sum y, X'X, X'y)."""
    n, sx, sy, gram, xty = stats
    return sx / n, sy / n, gram - np.outer(sx, sx) / n, xty - np.outer(sx, sy) / n


def fit_readout(clips: list[RealClip], folds: int = 4, lambdas=LAMBDAS) -> Readout:
    """Ridge read-out per channel from ``clips`` (the training clips), lambda by ``folds``-fold CV over clips."""
    from lsf_core.arkit import ARKIT_NAMES

    if len(clips) < folds:
        raise ValueError(f"readout: {len(clips)} training clips; at least {folds} needed for cross-validation")
    feats = [window_features(c.audio, len(c.real), c.fps) for c in clips]
    allx = np.concatenate(feats)
    mean, std = allx.mean(0), allx.std(0) + 1e-6
    xs = [(f - mean) / std for f in feats]
    fold_of = np.arange(len(clips)) % folds
    weights = np.zeros((allx.shape[1], len(ARKIT_NAMES)))
    bias = np.zeros(len(ARKIT_NAMES))
    chosen: dict[str, float] = {}
    # channels measured on the same frames share their Gram matrices
    groups: dict[bytes, list[int]] = {}
    for k in range(len(ARKIT_NAMES)):
        rows = np.concatenate([c.mask[:, k] for c in clips])
        if rows.sum() >= 10:
            groups.setdefault(np.packbits(rows).tobytes(), []).append(k)
    for chans in groups.values():
        k0 = chans[0]
        parts = []
        for f in range(folds):
            sel = [i for i in range(len(clips)) if fold_of[i] == f]
            x = np.concatenate([xs[i][clips[i].mask[:, k0]] for i in sel])
            y = np.concatenate([clips[i].real[clips[i].mask[:, k0]][:, chans] for i in sel])
            parts.append((x, y))
        sums = [(len(x), x.sum(0), y.sum(0), x.T @ x, x.T @ y) for x, y in parts]
        total = tuple(sum(s[i] for s in sums) for i in range(5))
        cv_err = np.zeros((len(lambdas), len(chans)))
        for f, (x_te, y_te) in enumerate(parts):
            mx, my, gram, xty = _centred(tuple(t - s for t, s in zip(total, sums[f])))   # the other folds
            for li, lam in enumerate(lambdas):
                pred = (x_te - mx) @ _solve(gram, xty, lam) + my
                cv_err[li] += ((pred - y_te) ** 2).sum(0)
        mx, my, gram, xty = _centred(total)
        best = cv_err.argmin(0)
        for li in np.unique(best):
            cols = [j for j in range(len(chans)) if best[j] == li]
            w = _solve(gram, xty[:, cols], lambdas[li])
            for j, col in zip(cols, w.T):
                k = chans[j]
                weights[:, k] = col
                bias[k] = my[j] - mx @ col
                chosen[ARKIT_NAMES[k]] = float(lambdas[li])
    return Readout(mean, std, weights, bias, chosen)
