"""Audio-video offset of a real-motion source, from lip closures: before training on a source, check that its
picture and sound are in sync, so that a recording offset is not learned as behaviour.

Each clip's audio is force-aligned to its transcript (``lsf_core.data.align.Aligner``: pocketsphinx, phone level).
At every /p b m/ the lips are shut in the middle of the acoustic segment. In the tracked motion the lip aperture
(``jawOpen - mouthClose``, as in ``lsf_core.evaluation.metrics``) has its minimum near there: we take the lowest
aperture within +-``window`` s of the segment's middle (parabolic refinement between frames, measured frames
only). The offset is the median of (tracked closure - acoustic middle) over all bilabials: positive when the
picture comes later than the sound. Transcripts: ``<clip>.align`` (GRID word timings; ``sil``/``sp`` left out)
or ``<clip>.txt``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lsf_core.arkit import ARKIT_INDEX
from lsf_core.data.visemes import BILABIALS


def transcript(folder: str | Path, clip: str) -> str:
    """The words of ``clip`` from ``folder/<clip>.align`` (GRID) or ``folder/<clip>.txt``."""
    folder = Path(folder)
    align, txt = folder / f"{clip}.align", folder / f"{clip}.txt"
    if align.is_file():
        words = [p[2] for p in (line.split() for line in align.read_text().splitlines())
                 if len(p) == 3 and p[2] not in ("sil", "sp")]
        return " ".join(words)
    if txt.is_file():
        return txt.read_text().strip()
    raise FileNotFoundError(f"{folder}: no transcript for clip {clip} ({align.name} or {txt.name})")


def closure_offsets(weights: np.ndarray, mask: np.ndarray, fps: float, phones, starts, ends,
                    window: float = 0.15) -> list[float]:
    """Tracked closure time - acoustic middle (s) for every /p b m/ whose window has measured frames."""
    aperture = weights[:, ARKIT_INDEX["jawOpen"]] - weights[:, ARKIT_INDEX["mouthClose"]]
    ok = mask[:, ARKIT_INDEX["jawOpen"]] & mask[:, ARKIT_INDEX["mouthClose"]]
    t = np.arange(len(aperture)) / fps
    out = []
    for p, s, e in zip(phones, starts, ends):
        if p not in BILABIALS:
            continue
        mid = 0.5 * (s + e)
        idx = np.flatnonzero((np.abs(t - mid) <= window) & ok)
        if len(idx) < 3:
            continue
        k = idx[int(np.argmin(aperture[idx]))]
        if k == idx[0] or k == idx[-1]:
            continue                                   # minimum on the window's edge: no closure found inside
        a, b, c = aperture[k - 1], aperture[k], aperture[k + 1]
        den = a - 2 * b + c
        frac = 0.5 * (a - c) / den if ok[k - 1] and ok[k + 1] and den > 1e-9 else 0.0
        out.append(float((k + frac) / fps - mid))
    return out


def av_offset(track_dir: str | Path, text_dir: str | Path, max_clips: int = 0, progress: bool = True) -> dict:
    """Median closure offset over the clips in ``track_dir`` (NPZ from ``lsf data track``) -> report dict."""
    from tqdm import tqdm

    from lsf_core.data.align import Aligner, AlignmentError
    from lsf_core.data.track import load_track

    paths = sorted(Path(track_dir).glob("*.npz"))[: max_clips or None]
    aligner, offsets, skipped = Aligner(), [], []
    for path in tqdm(paths, desc="av-offset", unit="clip", disable=not progress):
        z = load_track(path)
        try:
            al = aligner.align(z["audio"], transcript(text_dir, path.stem))
        except (AlignmentError, FileNotFoundError) as err:
            skipped.append({"clip": path.stem, "reason": str(err)})
            continue
        offsets += closure_offsets(z["weights"], z["mask"], float(z["fps"]), al.phones, al.starts, al.ends)
    o = np.array(offsets) * 1000.0
    return {"clips": len(paths) - len(skipped), "bilabials": int(o.size),
            "offset_ms_median": float(np.median(o)) if o.size else None,
            "offset_ms_p25_p75": [float(np.percentile(o, 25)), float(np.percentile(o, 75))] if o.size else None,
            "skipped": skipped,
            "meaning": "tracked lip closure minus the middle of the aligned /p b m/; > 0: picture later than sound"}
