"""Viseme-only rigs (Oculus / Ready Player Me ``viseme_*`` shapes) driven by ARKit weights.

Our models speak ARKit-52. A rig that only has the 15 Oculus visemes (``viseme_sil, PP, FF, TH, DD, kk, CH,
SS, nn, RR, aa, E, I, O, U``) is turned into an ARKit rig once, at load time: each viseme is described as an
ARKit mouth pose (:data:`OCULUS_POSES`, our own estimate of what each viseme does with the mouth), and
every ARKit shape gets the combination of viseme deltas that reproduces it in the least-squares sense,
``D_arkit = M^T (M M^T + lambda I)^-1 D_viseme`` (M: visemes x ARKit poses). Weights that are exactly a
viseme's pose then show that viseme's own sculpted shape; mixtures show mixtures.
"""
from __future__ import annotations

import numpy as np

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES

# viseme -> ARKit mouth pose ("_" = both sides). viseme_sil is the neutral face and drives nothing.
OCULUS_POSES: dict[str, dict[str, float]] = {
    "PP": {"jawOpen": 0.03, "mouthClose": 0.35, "mouthPress_": 0.45, "mouthRollLower": 0.15, "mouthRollUpper": 0.1},
    "FF": {"jawOpen": 0.08, "mouthRollLower": 0.55, "mouthUpperUp_": 0.15, "mouthClose": 0.1},
    "TH": {"jawOpen": 0.12, "tongueOut": 0.3, "mouthLowerDown_": 0.1},
    "DD": {"jawOpen": 0.15, "mouthLowerDown_": 0.1, "mouthShrugUpper": 0.05},
    "kk": {"jawOpen": 0.18, "mouthStretch_": 0.05},
    "CH": {"jawOpen": 0.1, "mouthFunnel": 0.45, "mouthPucker": 0.2, "mouthShrugUpper": 0.15},
    "SS": {"jawOpen": 0.05, "mouthStretch_": 0.25, "mouthSmile_": 0.1},
    "nn": {"jawOpen": 0.1, "mouthClose": 0.05, "mouthLowerDown_": 0.05},
    "RR": {"jawOpen": 0.1, "mouthFunnel": 0.25, "mouthPucker": 0.25},
    "aa": {"jawOpen": 0.6, "mouthLowerDown_": 0.3, "mouthUpperUp_": 0.1},
    "E": {"jawOpen": 0.35, "mouthStretch_": 0.25, "mouthLowerDown_": 0.15},
    "I": {"jawOpen": 0.15, "mouthStretch_": 0.35, "mouthSmile_": 0.3},
    "O": {"jawOpen": 0.35, "mouthFunnel": 0.5, "mouthPucker": 0.3},
    "U": {"jawOpen": 0.12, "mouthPucker": 0.7, "mouthFunnel": 0.4},
}
VISEME_NAMES: tuple[str, ...] = ("sil", *OCULUS_POSES)
_LOWER = {n.lower(): n for n in VISEME_NAMES}


def viseme_name(name: str) -> str | None:
    """The Oculus viseme a shape name stands for (``viseme_aa``, ``Viseme_AA``, ``v_aa``), or None."""
    n = name.strip()
    for prefix in ("viseme_", "viseme.", "v_"):
        if n.lower().startswith(prefix):
            return _LOWER.get(n[len(prefix):].lower())
    return None


def pose_matrix(visemes: list[str]) -> np.ndarray:
    """(len(visemes), 52) ARKit poses of the given visemes (zeros for sil)."""
    out = np.zeros((len(visemes), len(ARKIT_NAMES)), np.float64)
    for i, v in enumerate(visemes):
        for name, w in OCULUS_POSES.get(v, {}).items():
            for n in ((name[:-1] + "Left", name[:-1] + "Right") if name.endswith("_") else (name,)):
                out[i, ARKIT_INDEX[n]] = w
    return out


def arkit_from_visemes(names: list[str], deltas: np.ndarray, ridge: float = 0.02) -> tuple[list[str], np.ndarray]:
    """Viseme shapes (names as in the file, deltas (K, V, 3)) -> ARKit names and (J, V, 3) deltas for the ARKit
    shapes the visemes can express (those the poses touch)."""
    found = [(i, viseme_name(n)) for i, n in enumerate(names)]
    found = [(i, v) for i, v in found if v is not None and v != "sil"]
    if not found:
        return [], np.zeros((0, *deltas.shape[1:]), np.float32)
    m = pose_matrix([v for _, v in found])                              # (N, 52)
    gram = m @ m.T
    mix = m.T @ np.linalg.inv(gram + ridge * np.trace(gram) / len(gram) * np.eye(len(gram)))   # (52, N)
    used = np.nonzero(np.abs(m).sum(0) > 0)[0]
    d = np.asarray(deltas, np.float64)[[i for i, _ in found]].reshape(len(found), -1)
    out = (mix[used] @ d).reshape(len(used), *deltas.shape[1:]).astype(np.float32)
    return [ARKIT_NAMES[j] for j in used], out
