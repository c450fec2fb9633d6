"""Evaluation metrics for speech-driven face animation. No ROS here.

Vertex metrics follow the ProbTalk3D / LSF definitions (REFERENCE.md §2), on (T, V, 3) vertex arrays
in metres with region index lists (lip, upper face):
- MVE: mean over frames and vertices of the L2 vertex error;
- LVE: per frame the maximum over lip vertices of the squared L2 error, averaged over frames;
- MEE / CE: LVE of the mean / of the best of N samples;
- FDD: upper-face vertices; per vertex the std over time of the squared displacement from the
  template, averaged over vertices; ground truth minus prediction;
- diversity: mean per-vertex L2 distance between the two halves of N samples.

Also: blendshape error on shared ARKit names, lip-sync checks from phone labels, latency statistics,
and dropped / duplicated frames from stamps.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BILABIALS = frozenset({"p", "b", "m", "em"})
# ARPABET (pocketsphinx, CMUdict) and IPA / espeak spellings of open and open-mid vowels
OPEN_VOWELS = frozenset({"aa", "ae", "ah", "ao", "aw", "ay", "a", "a:", "ɑ", "ɑː", "æ", "ɒ", "ʌ", "aɪ", "aʊ",
                         "ai", "au"})
LATENCY_PERCENTILES = (50, 90, 95, 99)


def _vertices(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{name} must be (T, V, 3) vertices, got shape {a.shape}")
    return a


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _vertices("prediction", pred), _vertices("ground truth", gt)
    if pred.shape[1] != gt.shape[1]:
        raise ValueError(f"prediction has {pred.shape[1]} vertices, ground truth {gt.shape[1]}: "
                         "vertex metrics need the same topology")
    t = min(pred.shape[0], gt.shape[0])
    if t == 0:
        raise ValueError("vertex metrics need at least one frame")
    return pred[:t], gt[:t]


def _region(name: str, idx: np.ndarray | list[int], n_vertices: int) -> np.ndarray:
    idx = np.asarray(idx, np.int64).ravel()
    if idx.size == 0:
        raise ValueError(f"{name} region is empty")
    if idx.min() < 0 or idx.max() >= n_vertices:
        raise ValueError(f"{name} region indexes vertices {idx.min()}..{idx.max()}, mesh has {n_vertices}")
    return idx


def mve(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean vertex error: mean over frames and vertices of the L2 distance (metres)."""
    pred, gt = _pair(pred, gt)
    return float(np.linalg.norm(pred - gt, axis=2).mean())


def lve(pred: np.ndarray, gt: np.ndarray, lip: np.ndarray | list[int]) -> float:
    """Lip vertex error: per frame the max over lip vertices of the squared L2 error; mean over frames."""
    pred, gt = _pair(pred, gt)
    lip = _region("lip", lip, gt.shape[1])
    sq = np.sum((pred[:, lip] - gt[:, lip]) ** 2, axis=2)
    return float(sq.max(axis=1).mean())


def motion_std(vertices: np.ndarray, template: np.ndarray, upper: np.ndarray | list[int]) -> float:
    """Per upper-face vertex, std over time of the squared displacement from the template; mean."""
    v = _vertices("vertices", vertices)
    upper = _region("upper-face", upper, v.shape[1])
    disp = np.sum((v[:, upper] - np.asarray(template, np.float64)[upper]) ** 2, axis=2)
    return float(disp.std(axis=0).mean())


def fdd(pred: np.ndarray, gt: np.ndarray, template: np.ndarray, upper: np.ndarray | list[int]) -> float:
    """Upper-face dynamics deviation of one sequence: motion_std(gt) - motion_std(pred)."""
    pred, gt = _pair(pred, gt)
    template = np.asarray(template, np.float64)
    if template.shape != gt.shape[1:]:
        raise ValueError(f"template must be {gt.shape[1:]}, got {template.shape}")
    return motion_std(gt, template, upper) - motion_std(pred, template, upper)


def _samples(samples: np.ndarray) -> np.ndarray:
    s = np.asarray(samples, np.float64)
    if s.ndim != 4 or s.shape[3] != 3 or s.shape[0] < 1:
        raise ValueError(f"samples must be (N, T, V, 3), got shape {s.shape}")
    return s


def mee(samples: np.ndarray, gt: np.ndarray, lip: np.ndarray | list[int]) -> float:
    """LVE of the mean of N samples."""
    return lve(_samples(samples).mean(axis=0), gt, lip)


def ce(samples: np.ndarray, gt: np.ndarray, lip: np.ndarray | list[int]) -> float:
    """LVE of the best of N samples."""
    return min(lve(s, gt, lip) for s in _samples(samples))


def diversity(samples: np.ndarray) -> float:
    """Mean per-vertex L2 distance between the first and second half of N samples (paired)."""
    s = _samples(samples)
    half = s.shape[0] // 2
    if half == 0:
        raise ValueError("diversity needs at least 2 samples")
    return float(np.linalg.norm(s[:half] - s[half:2 * half], axis=3).mean())


def vertex_metrics(pred: np.ndarray, gt: np.ndarray, template: np.ndarray | None = None,
                   lip: np.ndarray | list[int] | None = None,
                   upper: np.ndarray | list[int] | None = None) -> dict[str, float | str]:
    """MVE always; LVE with a lip region; FDD with an upper-face region and a template."""
    out: dict[str, float | str] = {"mve": mve(pred, gt)}
    if lip is not None and len(lip):
        out["lve"] = lve(pred, gt, lip)
    else:
        out["lve_skipped"] = "no lip region"
    if upper is not None and len(upper) and template is not None:
        out["fdd"] = fdd(pred, gt, template, upper)
    else:
        out["fdd_skipped"] = "no upper-face region or template"
    return out


# ---- blendshapes ----------------------------------------------------------------------------------

def shared_columns(names: list[str], ref_names: list[str]) -> tuple[list[int], list[int], list[str]]:
    """Column indices of the blendshapes both name lists hold (ARKit spellings unified)."""
    from lsf_core.arkit import canonical_name

    ref = {canonical_name(n): i for i, n in enumerate(ref_names)}
    pairs = [(i, ref[c], c) for i, c in enumerate(canonical_name(n) for n in names) if c in ref]
    if not pairs:
        raise ValueError("the two blendshape sets share no names")
    a, b, shared = zip(*pairs)
    return list(a), list(b), list(shared)


def blendshape_error(pred: np.ndarray, pred_names: list[str], gt: np.ndarray,
                     gt_names: list[str]) -> dict[str, object]:
    """MAE / RMSE / worst names and mean Pearson correlation over the names both sides share."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    p_cols, g_cols, shared = shared_columns(pred_names, gt_names)
    t = min(pred.shape[0], gt.shape[0])
    if t == 0:
        raise ValueError("blendshape error needs at least one frame")
    p, g = pred[:t, p_cols], gt[:t, g_cols]
    err = p - g
    per = np.abs(err).mean(axis=0)
    corr = [c for c in (_pearson(p[:, k], g[:, k]) for k in range(len(shared))) if c is not None]
    return {
        "frames": int(t), "names": len(shared),
        "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
        "mean_correlation": float(np.mean(corr)) if corr else None,
        "worst": {shared[k]: float(per[k]) for k in np.argsort(per)[::-1][:5]},
    }


def best_lag(times: np.ndarray, values: np.ndarray, ref_times: np.ndarray, ref_values: np.ndarray,
             max_lag: float = 0.2, step: float = 0.005) -> float:
    """Shift (s) of a track against a reference with the same columns that minimises their mean absolute
    difference; positive when the track comes later than the reference."""
    lags = np.arange(-max_lag, max_lag + step / 2, step)
    times = np.asarray(times, np.float64)
    errs = [np.abs(values - resample_track(ref_times, ref_values, times - lag)).mean() for lag in lags]
    return float(lags[int(np.argmin(errs))])


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.std() < 1e-9 or b.std() < 1e-9:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def resample_track(times: np.ndarray, values: np.ndarray, new_times: np.ndarray) -> np.ndarray:
    """Linear interpolation of a (T, ...) track onto new times (held at the ends)."""
    times, values = np.asarray(times, np.float64), np.asarray(values)
    if times.shape[0] != values.shape[0] or times.shape[0] == 0:
        raise ValueError(f"track has {times.shape[0]} times and {values.shape[0]} values")
    flat = values.reshape(values.shape[0], -1).astype(np.float64)
    out = np.stack([np.interp(new_times, times, flat[:, k]) for k in range(flat.shape[1])], axis=1)
    return out.reshape((len(new_times),) + values.shape[1:])


# ---- lip sync from phone labels -------------------------------------------------------------------

@dataclass
class Phone:
    start: float
    end: float
    label: str


def load_phones(path: str | Path) -> list[Phone]:
    """Phone labels from a text file (``start end phone`` per line, seconds; Audacity label format)
    or JSON (a list of ``{"start", "end", "phone"}`` or ``[start, end, phone]``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"{path}: cannot read phone labels ({err})") from err
    rows: list = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        for item in data:
            rows.append((item["start"], item["end"], item["phone"]) if isinstance(item, dict) else tuple(item))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 3:
                raise ValueError(f"{path}:{n}: expected 'start end phone', got {line!r}")
            rows.append((parts[0], parts[1], parts[2]))
    phones = []
    for start, end, label in rows:
        try:
            s, e = float(start), float(end)
        except ValueError as err:
            raise ValueError(f"{path}: bad phone times {start!r} {end!r}") from err
        if e < s:
            raise ValueError(f"{path}: phone {label!r} ends ({e}) before it starts ({s})")
        phones.append(Phone(s, e, str(label)))
    return phones


def phone_key(label: str) -> str:
    """Lower-case label without stress digits (ARPABET 'AA1' -> 'aa')."""
    return re.sub(r"[0-9]+$", "", label.strip()).lower()


def lip_sync_checks(times: np.ndarray, blendshapes: np.ndarray, names: list[str], phones: list[Phone],
                    closed_fraction: float = 0.5) -> dict[str, object]:
    """Checks from phone labels on a blendshape track (times on the labels' clock).

    Lip aperture = jawOpen - mouthClose (ARKit: mouthClose brings the lips together over an open jaw).
    - bilabial closure rate: share of /p b m/ mid-frames whose aperture is below ``closed_fraction`` of
      the mean aperture at open-vowel mid-frames;
    - open-vowel jaw > bilabial jaw: mean jawOpen at open-vowel mid-frames vs. at /p b m/ mid-frames.
    """
    from lsf_core.arkit import canonical_name

    idx = {canonical_name(n): i for i, n in enumerate(names)}
    if "jawOpen" not in idx:
        raise ValueError("lip-sync checks need a jawOpen blendshape")
    b = np.asarray(blendshapes, np.float64)
    mids_bil = np.array([0.5 * (p.start + p.end) for p in phones if phone_key(p.label) in BILABIALS])
    mids_open = np.array([0.5 * (p.start + p.end) for p in phones if phone_key(p.label) in OPEN_VOWELS])
    out: dict[str, object] = {"bilabials": int(mids_bil.size), "open_vowels": int(mids_open.size)}
    if mids_bil.size == 0 or mids_open.size == 0:
        out["skipped"] = "labels need both bilabials (p b m) and open vowels"
        return out
    aperture = b[:, idx["jawOpen"]] - (b[:, idx["mouthClose"]] if "mouthClose" in idx else 0.0)
    jaw = b[:, idx["jawOpen"]]

    def at(track: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.interp(t, times, track)

    open_aperture = float(at(aperture, mids_open).mean())
    bil_aperture = at(aperture, mids_bil)
    jaw_open, jaw_bil = float(at(jaw, mids_open).mean()), float(at(jaw, mids_bil).mean())
    out.update({
        # no open mouth at the open vowels: "closed" has no reference, the rate would mean nothing
        "bilabial_closure_rate": (float(np.mean(bil_aperture < closed_fraction * open_aperture))
                                  if open_aperture > 0 else None),
        "aperture_open_vowels": open_aperture,
        "aperture_bilabials": float(bil_aperture.mean()),
        "jaw_open_vowels": jaw_open,
        "jaw_bilabials": jaw_bil,
        "open_vowel_jaw_gt_bilabial": bool(jaw_open > jaw_bil),
    })
    return out


# ---- timing ---------------------------------------------------------------------------------------

def latency_stats(latency_s: np.ndarray) -> dict[str, float | int]:
    """Distribution of latencies (receive time - stamp), reported in milliseconds."""
    ms = 1000.0 * np.asarray(latency_s, np.float64).ravel()
    if ms.size == 0:
        return {"count": 0}
    out: dict[str, float | int] = {"count": int(ms.size), "mean_ms": float(ms.mean()), "std_ms": float(ms.std()),
                                   "min_ms": float(ms.min()), "max_ms": float(ms.max())}
    for q in LATENCY_PERCENTILES:
        out[f"p{q}_ms"] = float(np.percentile(ms, q))
    return out


def frame_counts(stamps: np.ndarray, rate: float, start: float | None = None,
                 end: float | None = None) -> dict[str, float | int]:
    """Dropped and duplicated frames of a stream meant to run at ``rate`` Hz.

    duplicated: frames whose stamp repeats the previous one (within a tenth of a period);
    dropped: missing periods inside gaps longer than 1.5 periods, plus frames missing before the first
    and after the last stamp when the expected interval [start, end) is given.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    s = np.sort(np.asarray(stamps, np.float64).ravel())
    period = 1.0 / rate
    out: dict[str, float | int] = {"frames": int(s.size), "rate": float(rate)}
    if start is not None and end is not None:
        out["expected"] = int(round((end - start) * rate))
    if s.size == 0:
        out.update(duplicated=0, dropped=out.get("expected", 0))
        return out
    d = np.diff(s)
    out["duplicated"] = int(np.sum(d < 0.1 * period))
    gaps = d[d > 1.5 * period]
    dropped = int(np.sum(np.round(gaps / period) - 1))
    if start is not None:
        dropped += max(0, int(np.floor((s[0] - start) / period + 0.5)))
    if end is not None:
        dropped += max(0, int(np.floor((end - s[-1]) / period - 0.5)))
    out["dropped"] = dropped
    out["max_gap_ms"] = float(d.max() * 1000.0) if d.size else 0.0
    return out
