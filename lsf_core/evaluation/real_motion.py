"""``lsf evaluate --real DIR``: our model's ARKit curves against real captured motion, beside a phone-recogniser
baseline, on the same clips.

Clips are the NPZ files of ``lsf data track`` / ``lsf data import-rig`` (held-out ones: nothing in DIR should
have been trained on). Every clip's audio runs through our model (the live code path,
``StreamingAnimator.animate``) and through the baseline (``lsf_core.evaluation.phone_baseline``); all three are
on one clock: frame k shows the audio at ``k / fps`` s.

Per ARKit channel, pooled over the clips' frames where the reference measures it (``mask``):

- ``r``: Pearson correlation at zero lag (our stamps are the audio time shown, so zero lag is the honest test);
- ``best_lag_ms`` and ``r_best``: the lag within +-``max_lag`` (``step`` ms steps, the reference linearly
  interpolated between its frames, only where both neighbours are measured) with the highest r; positive when
  the curve *leads* the reference (``curve(t)`` matches ``real(t + lag)``);
- ``std_ratio``: the curve's standard deviation over those frames / the reference's (motion range).

A channel counts only where the reference moves (std >= ``min_std``); a curve that does not move there has r and
best lag None (the baseline's upper face). Summary per source: jawOpen r (and its best lag), the mean r over the
moving mouth (``jaw*``, ``mouth*``) channels (a constant curve counts as no r), the median best lag over them, the
mean std ratio over them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES

MOUTH_NAMES = [n for n in ARKIT_NAMES if n.startswith(("jaw", "mouth"))]


@dataclass
class RealClip:
    name: str
    audio: np.ndarray       # 16 kHz
    fps: float
    real: np.ndarray        # (T, 52) ARKit order
    mask: np.ndarray        # (T, 52) bool


def load_real_clips(folder: str | Path, max_clips: int = 0) -> list[RealClip]:
    """The clip NPZ files in ``folder`` (sorted; the first ``max_clips`` if > 0), columns in ARKit order."""
    from lsf_core.data.real_corpus import arkit_targets
    from lsf_core.data.track import TrackError, load_track

    paths = sorted(Path(folder).glob("*.npz"))
    if max_clips:
        paths = paths[:max_clips]
    if not paths:
        raise TrackError(f"{folder}: no real-motion clips (*.npz from lsf data track / import-rig)")
    clips = []
    for p in paths:
        z = load_track(p)
        if int(z["sample_rate"]) != 16000:
            raise TrackError(f"{p}: audio at {int(z['sample_rate'])} Hz, 16000 expected")
        real, mask = arkit_targets(z)   # the clip's channels in ARKit order, as training reads them
        clips.append(RealClip(p.stem, z["audio"].astype(np.float32), float(z["fps"]), real, mask > 0))
    return clips


def shifted(values: np.ndarray, mask: np.ndarray, shift_frames: float) -> tuple[np.ndarray, np.ndarray]:
    """``values(t + shift)`` per column of a (T, C) track, linearly interpolated, and where it is measured (both
    neighbouring frames measured and inside the clip)."""
    t = np.arange(len(values)) + shift_frames
    lo = np.floor(t + 1e-9).astype(int)
    a = t - lo
    hi = np.where(a > 1e-9, lo + 1, lo)
    inside = (lo >= 0) & (hi < len(values))
    lo_c, hi_c = np.clip(lo, 0, len(values) - 1), np.clip(hi, 0, len(values) - 1)
    out = (1 - a)[:, None] * values[lo_c] + a[:, None] * values[hi_c]
    ok = inside[:, None] & mask[lo_c] & mask[hi_c]
    return out, ok


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or x.std() < 1e-9 or y.std() < 1e-9:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _pooled(curves: list[np.ndarray], clips: list[RealClip], shift_frames: float):
    """Per channel: (curve values, shifted reference values) over the frames where the shifted reference is
    measured, all clips pooled."""
    xs, ys, oks = [], [], []
    for curve, clip in zip(curves, clips):
        n = min(len(curve), len(clip.real))
        ref, ok = shifted(clip.real[:n], clip.mask[:n], shift_frames)
        xs.append(curve[:n])
        ys.append(ref)
        oks.append(ok)
    x, y, ok = np.concatenate(xs), np.concatenate(ys), np.concatenate(oks)
    return [(x[ok[:, c], c], y[ok[:, c], c]) for c in range(x.shape[1])]


def channel_scores(curves: list[np.ndarray], clips: list[RealClip], max_lag: float = 0.25, step: float = 0.005,
                   min_std: float = 0.01) -> dict[str, dict]:
    """Per ARKit channel the reference moves in: r at zero lag, best lag (ms) and its r, std ratio (module doc)."""
    fps = clips[0].fps
    out: dict[str, dict] = {}
    for c, (x, y) in enumerate(_pooled(curves, clips, 0.0)):
        if len(y) >= 3 and y.std() >= min_std:
            out[ARKIT_NAMES[c]] = {"r": _pearson(x, y), "frames": int(len(y)), "std_real": float(y.std()),
                                   "std_ours": float(x.std()), "std_ratio": float(x.std() / y.std())}
    lags = np.round(np.arange(-max_lag, max_lag + step / 2, step), 6)
    r_by_lag = np.full((len(lags), len(ARKIT_NAMES)), -np.inf)
    for k, lag in enumerate(lags):
        for c, (x, y) in enumerate(_pooled(curves, clips, lag * fps)):
            if ARKIT_NAMES[c] in out:
                r = _pearson(x, y)
                r_by_lag[k, c] = -np.inf if r is None else r
    for name, s in out.items():
        col = r_by_lag[:, ARKIT_INDEX[name]]
        k = int(np.argmax(col))
        found = bool(np.isfinite(col[k]))              # a curve that never moves has no best lag
        s["best_lag_ms"] = round(float(lags[k]) * 1000.0, 1) if found else None
        s["r_best"] = float(col[k]) if found else None
    return out


def summarize(scores: dict[str, dict]) -> dict:
    mouth = [scores[n] for n in MOUTH_NAMES if n in scores]
    rs = [s["r"] for s in mouth if s["r"] is not None]
    lags = [s["best_lag_ms"] for s in mouth if s["best_lag_ms"] is not None]
    jaw = scores.get("jawOpen", {})
    return {"jawOpen_r": jaw.get("r"), "jawOpen_best_lag_ms": jaw.get("best_lag_ms"),
            "jawOpen_r_best": jaw.get("r_best"), "jawOpen_std_ratio": jaw.get("std_ratio"),
            "mouth_channels": len(mouth), "mouth_mean_r": float(np.mean(rs)) if rs else None,
            "mouth_median_best_lag_ms": float(np.median(lags)) if lags else None,
            "mouth_mean_std_ratio": float(np.mean([s["std_ratio"] for s in mouth])) if mouth else None}


def on_grid(frames, n: int, fps: float) -> np.ndarray:
    """Streaming frames (stamps from 0) -> (n, 52) at ``k / fps`` (linear between stamps, held at the ends)."""
    stamps = np.array([f.stamp for f in frames])
    w = np.stack([f.blendshapes for f in frames])
    t = np.arange(n) / fps
    return np.stack([np.interp(t, stamps, w[:, c]) for c in range(w.shape[1])], 1).astype(np.float32)


def evaluate_real(animator, clips: list[RealClip], baseline=None, progress: bool = True) -> dict:
    """Scores of our model (and the baseline, unless None) against the clips; curves kept for the figure."""
    from tqdm import tqdm

    ours, base = [], []
    for clip in tqdm(clips, desc="real-motion eval", unit="clip", disable=not progress):
        n = len(clip.real)
        ours.append(on_grid(animator.animate(clip.audio, 16000), n, clip.fps))
        if baseline is not None:
            base.append(baseline.animate(clip.audio, clip.fps)[:n])
    result = {"clips": len(clips), "seconds": round(sum(c.audio.size for c in clips) / 16000, 1),
              "fps": clips[0].fps, "sources": {}}
    for label, curves in (("ours", ours), ("baseline", base)):
        if curves:
            scores = channel_scores(curves, clips)
            result["sources"][label] = {"summary": summarize(scores), "channels": scores}
    if base:
        so, sb = result["sources"]["ours"]["summary"], result["sources"]["baseline"]["summary"]
        result["jawOpen_r_gain_over_baseline"] = None if so["jawOpen_r"] is None or sb["jawOpen_r"] is None \
            else so["jawOpen_r"] - sb["jawOpen_r"]
    result["_curves"] = {"ours": ours, "baseline": base}
    return result


def plot_real(path: str | Path, clip: RealClip, ours: np.ndarray, base: np.ndarray | None,
              keys: tuple[str, ...] = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLowerDownLeft",
                                       "mouthUpperUpLeft")) -> Path:
    """Real (gaps where masked) vs ours vs baseline curves of one clip under its waveform."""
    from lsf_core.evaluation.report import Curves, plot_clip

    t = np.arange(len(clip.real)) / clip.fps
    names = list(ARKIT_NAMES)
    real = np.where(clip.mask, clip.real, np.nan)
    curves = [Curves("real", t, names, real), Curves("ours", t, names, ours[:len(t)])]
    if base is not None:
        curves.append(Curves("phone baseline", t, names, base[:len(t)], "--"))
    return plot_clip(path, clip.audio, 16000, curves, title=f"{clip.name}: real vs ours vs baseline", keys=keys)


def side_by_side_video(path: str | Path, clip: RealClip, ours: np.ndarray, base: np.ndarray | None = None,
                       size: int = 320) -> Path:
    """An MP4 of one clip with its audio: the real capture driving the default avatar | our model driving it | the
    phone baseline (when given), all through the same rig. Channels or frames the capture did not measure are
    neutral on the real side."""
    import tempfile

    import soundfile as sf

    from lsf_core.face.avatar import default_rig
    from lsf_core.face.render import render_side_by_side

    rig = default_rig()
    n = len(clip.real)

    def on_rig(weights: np.ndarray) -> np.ndarray:
        return rig.vertices[None] + rig.offsets(rig.weights_from_named(list(ARKIT_NAMES), weights[:n]))

    panels = [("real capture", on_rig(np.where(clip.mask, clip.real, 0.0))), ("ours", on_rig(ours))]
    if base is not None:
        panels.append(("phone baseline", on_rig(base)))
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / f"{clip.name}.wav"
        sf.write(str(wav), clip.audio, 16000)
        return render_side_by_side(panels, rig.faces, clip.fps, path, wav, size, rig.colors)
