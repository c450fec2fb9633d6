"""Phones -> visemes -> ARKit mouth curves, with coarticulation by dominance functions.

Each phone segment pulls the face toward its viseme's target weights with a dominance that is
``alpha`` inside the segment and decays as ``exp(-d / tau)`` with the distance ``d`` (seconds) to the
segment outside it (Cohen & Massaro 1993, with distance to the segment instead of its centre so
long segments hold their target; a frame overlapping a segment counts as inside, so a 30 ms
closure is never lost between 40 ms frames). A frame's weights are the dominance-weighted mean of all targets.
Lip closures (/p b m/) dominate strongly and decay fast, so the lips shut even in fast speech;
tongue-only consonants (/t d k g n l h/) dominate weakly and borrow their shape from neighbours;
silence is a neutral target, so the face relaxes in pauses. Diphthongs glide between two targets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES
from lsf_core.data.align import SIL

FPS = 25


@dataclass(frozen=True)
class Viseme:
    weights: dict[str, float]  # ARKit name -> target weight (sides given once, mirrored)
    alpha: float               # dominance inside the segment
    tau: float                 # decay of dominance outside the segment, seconds


def _v(alpha: float, tau: float, **w: float) -> Viseme:
    return Viseme(w, alpha, tau)


# Targets per viseme class; names ending in "_" get both Left and Right.
VISEMES: dict[str, Viseme] = {
    "neutral": _v(1.0, 0.05),
    "bilabial": _v(9.0, 0.012, jawOpen=0.03, mouthClose=0.35, mouthPress_=0.45, mouthRollLower=0.15,
                   mouthRollUpper=0.10),
    "labiodental": _v(6.0, 0.02, jawOpen=0.08, mouthRollLower=0.55, mouthUpperUp_=0.15, mouthClose=0.10),
    "dental": _v(1.5, 0.04, jawOpen=0.12, tongueOut=0.25, mouthLowerDown_=0.10),
    "sibilant": _v(1.5, 0.04, jawOpen=0.06, mouthStretch_=0.25, mouthSmile_=0.10),
    "postalveolar": _v(3.0, 0.04, jawOpen=0.10, mouthFunnel=0.45, mouthPucker=0.20, mouthShrugUpper=0.15),
    "alveolar": _v(0.4, 0.05, jawOpen=0.14, mouthLowerDown_=0.08),
    "velar": _v(0.3, 0.05, jawOpen=0.16),
    "glottal": _v(0.2, 0.05, jawOpen=0.20),
    "r": _v(1.5, 0.05, jawOpen=0.10, mouthFunnel=0.25, mouthPucker=0.20),
    "w": _v(4.0, 0.05, jawOpen=0.05, mouthPucker=0.65, mouthFunnel=0.30),
    "y": _v(1.0, 0.05, jawOpen=0.10, mouthStretch_=0.20, mouthSmile_=0.15),
    "AA": _v(1.5, 0.045, jawOpen=0.60, mouthLowerDown_=0.30, mouthUpperUp_=0.10),
    "AE": _v(1.5, 0.045, jawOpen=0.50, mouthStretch_=0.30, mouthLowerDown_=0.25),
    "AH": _v(1.5, 0.045, jawOpen=0.40, mouthLowerDown_=0.15),
    "AO": _v(1.5, 0.045, jawOpen=0.50, mouthFunnel=0.35, mouthPucker=0.10),
    "EH": _v(1.0, 0.045, jawOpen=0.35, mouthStretch_=0.25, mouthLowerDown_=0.15),
    "ER": _v(1.0, 0.045, jawOpen=0.22, mouthFunnel=0.30, mouthPucker=0.15),
    "IH": _v(1.0, 0.045, jawOpen=0.22, mouthStretch_=0.25, mouthSmile_=0.15),
    "IY": _v(1.0, 0.045, jawOpen=0.15, mouthStretch_=0.35, mouthSmile_=0.30),
    "UH": _v(1.0, 0.045, jawOpen=0.20, mouthFunnel=0.30, mouthPucker=0.30),
    "UW": _v(1.5, 0.045, jawOpen=0.12, mouthPucker=0.70, mouthFunnel=0.40),
    "OW": _v(1.2, 0.045, jawOpen=0.35, mouthFunnel=0.50, mouthPucker=0.30),
}

# ARPAbet phone -> viseme class(es); two classes = a diphthong gliding over the segment.
PHONE_VISEMES: dict[str, tuple[str, ...]] = {
    SIL: ("neutral",),
    "P": ("bilabial",), "B": ("bilabial",), "M": ("bilabial",),
    "F": ("labiodental",), "V": ("labiodental",),
    "TH": ("dental",), "DH": ("dental",),
    "S": ("sibilant",), "Z": ("sibilant",),
    "SH": ("postalveolar",), "ZH": ("postalveolar",), "CH": ("postalveolar",), "JH": ("postalveolar",),
    "T": ("alveolar",), "D": ("alveolar",), "N": ("alveolar",), "L": ("alveolar",),
    "K": ("velar",), "G": ("velar",), "NG": ("velar",), "HH": ("glottal",),
    "R": ("r",), "W": ("w",), "Y": ("y",),
    "AA": ("AA",), "AE": ("AE",), "AH": ("AH",), "AO": ("AO",), "EH": ("EH",), "ER": ("ER",),
    "IH": ("IH",), "IY": ("IY",), "UH": ("UH",), "UW": ("UW",),
    "AW": ("AA", "UH"), "AY": ("AA", "IY"), "EY": ("EH", "IY"), "OW": ("OW", "UW"), "OY": ("AO", "IY"),
}
BILABIALS = frozenset({"P", "B", "M"})
OPEN_VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY"})
VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})


def _target_vector(v: Viseme) -> np.ndarray:
    out = np.zeros(len(ARKIT_NAMES), np.float32)
    for name, w in v.weights.items():
        names = (name[:-1] + "Left", name[:-1] + "Right") if name.endswith("_") else (name,)
        for n in names:
            out[ARKIT_INDEX[n]] = w
    return out


TARGETS: dict[str, np.ndarray] = {k: _target_vector(v) for k, v in VISEMES.items()}


def frame_times(num_frames: int, fps: int = FPS) -> np.ndarray:
    """Centre of each frame in seconds (frame i covers [i/fps, (i+1)/fps))."""
    return (np.arange(num_frames) + 0.5) / fps


def _segments(phones, starts, ends, gains):
    """Expand phones to (viseme, start, end, gain), diphthongs into two halves."""
    for p, s, e, g in zip(phones, starts, ends, gains):
        classes = PHONE_VISEMES.get(p)
        if classes is None:
            raise ValueError(f"phone {p!r} has no viseme (expected ARPAbet or {SIL!r})")
        n = len(classes)
        for i, c in enumerate(classes):
            yield c, s + (e - s) * i / n, s + (e - s) * (i + 1) / n, g


def mouth_curves(phones, starts, ends, num_frames: int, fps: int = FPS, gains=None) -> np.ndarray:
    """(num_frames, 52) ARKit weights in 0..1 for phone segments (seconds).

    ``gains`` (N,) optionally scales each phone's target (e.g. louder vowels open wider).
    """
    if not (len(phones) == len(starts) == len(ends)):
        raise ValueError("phones, starts and ends must have the same length")
    gains = np.ones(len(phones)) if gains is None else np.asarray(gains, np.float64)
    t = frame_times(num_frames, fps)[:, None]
    segs = list(_segments(phones, starts, ends, gains))
    if not segs:
        return np.zeros((num_frames, len(ARKIT_NAMES)), np.float32)
    s = np.array([x[1] for x in segs])[None, :]
    e = np.array([x[2] for x in segs])[None, :]
    alpha = np.array([VISEMES[x[0]].alpha for x in segs])[None, :]
    tau = np.array([VISEMES[x[0]].tau for x in segs])[None, :]
    half = 0.5 / fps                                                   # a frame spans t +- half:
    dist = np.maximum(np.maximum(s - (t + half), (t - half) - e), 0.0)  # 0 where segment and frame overlap
    dom = alpha * np.exp(-dist / tau) + 1e-9                           # (T, S)
    targets = np.stack([TARGETS[x[0]] * (x[3] if x[0] != "neutral" else 1.0) for x in segs])  # (S, 52)
    out = (dom @ targets) / dom.sum(axis=1, keepdims=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
