"""The default avatar's shape: identity parameters -> proportions, and the head surface's profiles.

An identity is :data:`IDENTITY_DIM` coefficients in about [-1, 1] (:data:`IDENTITY_PARAMS`);
:class:`Shape` turns them into landmarks and proportions in metres. The head is a lofted surface
(:func:`rows` heights, :func:`columns` angles, :func:`profile` half-widths and depths) with facial
features as displacements of its front (:func:`features`) and almond eye openings (:func:`eye_opening`).
:mod:`lsf_core.face.avatar` builds the mesh and its blendshapes from these.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IDENTITY_PARAMS: tuple[str, ...] = (
    "face_width", "face_length", "jaw_width", "chin", "nose_length", "nose_width", "lip_thickness",
    "mouth_width", "brow_height", "eye_spacing", "cheeks", "forehead",
)
IDENTITY_DIM: int = len(IDENTITY_PARAMS)

ROWS, COLS = 78, 84


def ss(e0: float, e1: float, x):
    """Smoothstep from 0 at e0 to 1 at e1 (either order)."""
    t = np.clip((np.asarray(x, np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def gauss(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


@dataclass
class Shape:
    """Landmarks and proportions of one identity (metres)."""
    width: float
    height: float
    jaw: float
    chin: float
    nose_len: float
    nose_w: float
    lip: float
    mouth_hw: float
    brow_y: float
    eye_x: float
    cheeks: float
    forehead: float

    @classmethod
    def from_identity(cls, p: np.ndarray) -> Shape:
        g = dict(zip(IDENTITY_PARAMS, p, strict=True))
        return cls(width=1 + 0.07 * g["face_width"], height=1 + 0.06 * g["face_length"],
                   jaw=1 + 0.10 * g["jaw_width"], chin=0.006 * g["chin"], nose_len=1 + 0.18 * g["nose_length"],
                   nose_w=1 + 0.20 * g["nose_width"], lip=1 + 0.30 * g["lip_thickness"],
                   mouth_hw=0.0245 * (1 + 0.12 * g["mouth_width"]), brow_y=0.034 + 0.004 * g["brow_height"],
                   eye_x=0.0315 * (1 + 0.07 * g["eye_spacing"]), cheeks=g["cheeks"], forehead=g["forehead"])


# profile knots: y, half-width, front depth, back depth, superellipse exponent
PROFILE = np.array([
    [0.1195, 0.010, 0.010, 0.012, 2.0],
    [0.1160, 0.030, 0.034, 0.040, 2.2],
    [0.1080, 0.050, 0.055, 0.066, 2.3],
    [0.0900, 0.066, 0.074, 0.090, 2.4],
    [0.0600, 0.074, 0.086, 0.102, 2.5],
    [0.0320, 0.075, 0.091, 0.104, 2.6],
    [0.0100, 0.074, 0.089, 0.102, 2.6],
    [-0.0150, 0.072, 0.092, 0.098, 2.5],
    [-0.0400, 0.068, 0.093, 0.090, 2.4],
    [-0.0600, 0.062, 0.094, 0.080, 2.2],
    [-0.0800, 0.051, 0.091, 0.068, 2.0],
    [-0.0960, 0.039, 0.084, 0.058, 1.8],
    [-0.1080, 0.036, 0.070, 0.052, 1.9],
    [-0.1180, 0.040, 0.045, 0.050, 2.1],
    [-0.1350, 0.047, 0.040, 0.050, 2.2],
    [-0.1550, 0.051, 0.044, 0.053, 2.2],
    [-0.1700, 0.052, 0.045, 0.054, 2.2],
])
MOUTH_Y = -0.060
EYE_Y = 0.012


def profile(y: np.ndarray, s: Shape) -> tuple[np.ndarray, ...]:
    from scipy.interpolate import PchipInterpolator

    k = PROFILE
    ys = k[::-1, 0]
    w, df, db, ex = (PchipInterpolator(ys, k[::-1, i])(y) for i in range(1, 5))
    lower = ss(-0.02, -0.09, y)                          # jaw width applies to the lower face
    w = w * s.width * (1 + (s.jaw - 1) * lower)
    df = df + s.chin * ss(-0.07, -0.10, y) * ss(-0.125, -0.105, y)
    return w, df, db, ex


def rows(s: Shape) -> np.ndarray:
    """Row heights: spaced by arc length of the side profile, denser at the eyes and the mouth."""
    y = np.linspace(PROFILE[-1, 0], PROFILE[0, 0], 4000)
    w, df, _, _ = profile(y, s)
    ds = np.hypot(np.gradient(y), np.hypot(np.gradient(w), np.gradient(df)))
    dens = 1 + 3.0 * gauss(0, y, 0, MOUTH_Y, 1, 0.016) + 1.6 * gauss(0, y, 0, EYE_Y, 1, 0.014) \
        + 0.8 * ss(-0.13, -0.10, y) * ss(0.09, 0.06, y)
    cum = np.concatenate([[0], np.cumsum((ds * dens)[1:])])
    rows = np.interp(np.linspace(0, cum[-1], ROWS), cum, y)[::-1]
    rows[np.argmin(np.abs(rows - MOUTH_Y))] = MOUTH_Y   # one row exactly on the lip line
    return rows


def corner_angle(s: Shape) -> float:
    """Column angle at which the lip line reaches the mouth corner (inverse of the superellipse)."""
    w, _, _, ex = profile(np.array([MOUTH_Y]), s)
    return float(np.arcsin(min(s.mouth_hw / w[0], 0.99) ** (ex[0] / 2)))


def columns(s: Shape) -> tuple[np.ndarray, int]:
    """Column angles (0 = front), denser over the face, and the index of the mouth-corner column.

    The same columns serve every identity; only their angles are warped so that the corner column
    lands on the identity's mouth corner (the lip slit always spans the same columns: one topology).
    """
    t = np.linspace(-np.pi, np.pi, 4001)
    dens = 1 + 2.8 * np.exp(-0.5 * (t / 0.55) ** 2)
    cum = np.concatenate([[0], np.cumsum(dens[1:])])
    th = np.interp(np.linspace(0, cum[-1], COLS + 1)[:-1], cum, t)
    corner = int(np.argmin(np.abs(th - corner_angle(Shape.from_identity(np.zeros(IDENTITY_DIM))))))
    k = corner_angle(s) / th[corner]
    reach = np.exp(-((np.maximum(np.abs(th) - th[corner], 0) / 0.5) ** 2))
    return th * (1 + (k - 1) * reach), corner


def features(x: np.ndarray, y: np.ndarray, s: Shape) -> np.ndarray:
    """Forward displacement of the face (metres) at base-surface points (x, y)."""
    ax = np.abs(x)
    hw = s.mouth_hw
    # brow ridge and forehead
    dz = 0.0045 * gauss(ax, y, 0.028, s.brow_y - 0.001, 0.022, 0.007) + 0.003 * s.forehead * ss(0.04, 0.09, y)
    dz -= 0.003 * gauss(x, y, 0, s.brow_y - 0.012, 0.008, 0.006)          # nasion dip
    # cheekbones, cheeks, nasolabial fold
    dz += (0.006 + 0.002 * s.cheeks) * gauss(ax, y, 0.046, -0.012, 0.016, 0.014)
    dz += 0.003 * (1 + s.cheeks) * gauss(ax, y, 0.040, -0.045, 0.014, 0.014)
    fold = np.abs(ax - (0.022 + 0.35 * (-0.03 - y)))                       # slants from the nose wing down-out
    dz -= 0.0018 * np.exp(-0.5 * (fold / 0.003) ** 2) * ss(-0.02, -0.03, y) * ss(-0.075, -0.06, y)
    # nose: bridge rising to the tip, wings, columella
    nl = s.nose_len
    tip_y = EYE_Y - 0.037 * nl
    t = np.clip((EYE_Y + 0.010 - y) / (EYE_Y + 0.010 - tip_y), 0, 1)    # 0 at the root, 1 at the tip
    height = (0.004 + 0.017 * t ** 1.2) * nl * ss(tip_y - 0.013, tip_y - 0.002, y)
    width = (0.0065 + 0.006 * t ** 2) * s.nose_w
    dz += height * np.exp(-0.5 * (x / width) ** 2)
    dz += 0.004 * nl * gauss(x, y, 0, tip_y - 0.002, 0.008 * s.nose_w, 0.006)  # rounded tip
    dz += 0.0065 * gauss(ax, y, 0.0135 * s.nose_w, tip_y - 0.004, 0.0055, 0.0055)  # wings
    # lips (vermilion bulges) around the lip line, with a slight inward roll at the line itself
    u = np.clip(ax / hw, 0, 1.5)
    across = ss(1.15, 0.55, u)
    up_h = (0.0085 - 0.0015 * np.exp(-0.5 * (x / 0.004) ** 2) + 0.0012 * gauss(ax, 0, 0.006, 0, 0.004, 1)) * s.lip
    lo_h = 0.0105 * s.lip
    yu = (y - MOUTH_Y) / up_h
    yl = (MOUTH_Y - y) / lo_h
    upper = np.where(y >= MOUTH_Y, np.sin(np.pi * np.clip(yu, 0, 1) ** 0.8), 0)
    lower = np.where(y < MOUTH_Y, np.sin(np.pi * np.clip(yl, 0, 1) ** 0.9), 0)
    dz += across * (0.0048 * s.lip * upper + 0.0045 * s.lip * lower)
    dz += 0.0030 * gauss(x, y, 0, MOUTH_Y + up_h + 0.006, 0.007, 0.006) * ss(0.9, 0.3, u)  # philtrum area
    dz -= 0.0030 * np.exp(-0.5 * ((ax - hw) / 0.004) ** 2) * np.exp(-0.5 * ((y - MOUTH_Y) / 0.005) ** 2)  # corners
    dz -= 0.0025 * gauss(x, y, 0, MOUTH_Y - lo_h - 0.007, 0.016, 0.004)  # under the lower lip
    dz += 0.0045 * gauss(x, y, 0, -0.097, 0.013, 0.008)                    # chin
    return dz


def eye_frame(s: Shape, side: float) -> tuple[float, float]:
    return side * s.eye_x, EYE_Y


def eye_opening(x, y, s: Shape, side: float):
    """Normalised almond: q < 1 inside the opening; also the vertical position within it (0 top .. 1 bottom)."""
    cx, cy = eye_frame(s, side)
    ax, ay = 0.0135, 0.0056
    u = (x - cx) / ax
    tilt = 0.0015 * side * (x - cx) / ax                     # outer corners slightly higher
    v = (y - cy - tilt) / (ay * (1 - 0.25 * side * u))     # fuller towards the nose
    q = u ** 2 + v ** 2
    return q, np.clip(0.5 - 0.5 * v, 0, 1)
