"""Where a face is in a mesh of unknown orientation, size and units: a similarity into the avatar's frame.

Found from the geometry alone: the left-right symmetry plane (reflective ICP of surface samples), candidate nose
tips (the points on that plane that stick out most from their surroundings: the nose, but also a chin or the cut
at the neck), for each tip and each way up the scale and a similarity ICP of the default avatar's face onto the
mesh, the closest fit winning; then landmarks refined on the mesh: the nose tip (most forward point near the
avatar's), the mouth slit (the deepest point of the midline between the lips) and the eyes. When that fails, a
file of a few picked vertex indices (:data:`LANDMARKS`: ``nose_tip: 1234`` ...; at least three) gives the
alignment instead.

The avatar's frame: metres, +y up, +z out of the face, +x towards the face's own left.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# landmarks and where they are on the default avatar (x, y on the face; z: the surface in front)
LANDMARKS: tuple[str, ...] = ("nose_tip", "eye_left", "eye_right", "mouth_left", "mouth_right", "mouth_centre",
                              "chin")
FRONT_BOX = ((-0.075, 0.075), (-0.115, 0.075))   # the avatar's face: x, y ranges used for alignment


class LandmarkError(ValueError):
    """The face could not be found in a mesh (or a landmark file is unusable)."""


@dataclass
class FaceFrame:
    """``avatar = scale * rotation @ mesh + translation``; landmarks in the mesh's coordinates."""
    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    residual: float = 0.0        # median distance of the avatar's face to the mesh after alignment (avatar metres)
    picked: bool = False
    units: str | None = None     # the mesh's length unit, when its face is human-sized in one

    def to_avatar(self, x: np.ndarray) -> np.ndarray:
        return (self.scale * np.asarray(x, np.float64) @ self.rotation.T + self.translation).astype(np.float64)

    def from_avatar(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.translation) @ self.rotation / self.scale

    def vectors_from_avatar(self, d: np.ndarray) -> np.ndarray:
        return np.asarray(d, np.float64) @ self.rotation / self.scale

    def describe(self) -> str:
        """Which way the face looks and which way is up, in the mesh's axes."""
        size = f"units: {self.units}" if self.units else f"not human-sized in any unit (x{self.scale:.3g})"
        look, up = _axis_name(self.rotation[2]), _axis_name(self.rotation[1])
        return f"the face looks along {look}, up is {up}, {size}"


def _axis_name(v: np.ndarray) -> str:
    k = int(np.argmax(np.abs(v)))
    name = ("-" if v[k] < 0 else "+") + "XYZ"[k]
    off = np.degrees(np.arccos(min(1.0, abs(float(v[k])) / max(np.linalg.norm(v), 1e-12))))
    return name if off < 5 else f"{name} ({off:.0f} deg off)"


def template_landmarks(vertices: np.ndarray, head: slice, eye_centres: list[np.ndarray] | None = None
                       ) -> dict[str, int]:
    """Landmark vertex indices on the avatar (found once on its neutral head; the topology is shared)."""
    from lsf_core.face import avatar_shape as S

    v = vertices[head]
    front = v[:, 2] > 0.02
    s = S.Shape.from_identity(np.zeros(S.IDENTITY_DIM))
    targets = {"nose_tip": (0.0, S.EYE_Y - 0.037 * s.nose_len), "mouth_centre": (0.0, S.MOUTH_Y),
               "mouth_left": (s.mouth_hw, S.MOUTH_Y), "mouth_right": (-s.mouth_hw, S.MOUTH_Y),
               "eye_left": (s.eye_x, S.EYE_Y + 0.009), "eye_right": (-s.eye_x, S.EYE_Y + 0.009),
               "chin": (0.0, -0.105)}
    out = {}
    for name, (x, y) in targets.items():
        d = (v[:, 0] - x) ** 2 + (v[:, 1] - y) ** 2 + 1e3 * ~front
        if name == "nose_tip":
            d = d - 0.3 * v[:, 2] ** 2 * (np.abs(v[:, 0]) < 0.004)   # the most forward point near there
        out[name] = head.start + int(np.argmin(d))
    return out


def read_landmark_file(path: str | Path, num_vertices: int) -> dict[str, int]:
    """``name: vertex index`` (YAML or JSON; 0-based indices into the mesh's vertices), at least three."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise LandmarkError(f"landmark file {path}: cannot be read ({err})") from err
    if not isinstance(data, dict):
        raise LandmarkError(f"landmark file {path}: expected 'name: vertex index' lines ({', '.join(LANDMARKS)})")
    out = {}
    for k, v in data.items():
        if k not in LANDMARKS:
            raise LandmarkError(f"landmark file {path}: unknown landmark {k!r} (use {', '.join(LANDMARKS)})")
        if not isinstance(v, int) or not 0 <= v < num_vertices:
            raise LandmarkError(f"landmark file {path}: {k} must be a vertex index 0..{num_vertices - 1}, got {v!r}")
        out[k] = v
    if len(out) < 3:
        raise LandmarkError(f"landmark file {path}: needs at least three landmarks, has {len(out)}")
    return out


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-weighted random points on the surface, the unit normals of their triangles and the triangles."""
    tri = vertices[faces].astype(np.float64)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    if area.sum() <= 0:
        raise LandmarkError("the mesh has no area")
    rng = np.random.default_rng(seed)
    f = rng.choice(len(faces), n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    flip = r1 + r2 > 1
    r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
    pts = tri[f, 0] + r1[:, None] * (tri[f, 1] - tri[f, 0]) + r2[:, None] * (tri[f, 2] - tri[f, 0])
    return pts, cross[f] / np.maximum(area[f, None], 1e-30), f


def _symmetry_plane(p: np.ndarray) -> tuple[np.ndarray, float]:
    """Normal and offset of the best mirror plane of a point set (PCA candidates, refined by reflective ICP)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(p)
    c = p.mean(0)
    axes = np.linalg.svd(p - c, full_matrices=False)[2]

    def mirror(n, d):
        return p - 2 * ((p @ n) - d)[:, None] * n

    best = min(((float(np.median(tree.query(mirror(n, c @ n))[0])), n, float(c @ n)) for n in axes),
               key=lambda t: t[0])
    _, n, d = best
    for _ in range(15):
        j = tree.query(mirror(n, d))[1]
        diff = p - p[j]                                 # p and its mirror partner: along the normal
        keep = np.linalg.norm(diff, axis=1) > 1e-9
        diff = diff[keep] * np.sign(diff[keep] @ n)[:, None]
        if len(diff) < 10:
            break
        n = diff.mean(0) / np.linalg.norm(diff.mean(0))
        d = float((((p[keep] + p[j][keep]) / 2) @ n).mean())
    return n, d


def _coarse_frames(p: np.ndarray, tips: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Candidate rotations mesh -> avatar axes, each with its nose tip: on the symmetry plane, the points that
    stick out most from their surroundings (the nose; but a chin or the cut at the neck can stick out as much
    on a short-nosed or coarse head), each way up. :func:`find_frame` aligns the avatar from each."""
    n, d = _symmetry_plane(p)
    c = p.mean(0)
    radius = float(np.sqrt(((p - c) ** 2).sum(1).mean()))
    u = np.linalg.svd(p - (p @ n)[:, None] * n, full_matrices=False)[2][0]
    u = u - (u @ n) * n
    u /= np.linalg.norm(u)
    w = np.cross(n, u)
    mid = p[np.abs(p @ n - d) < 0.04 * radius]
    if len(mid) < 20:
        raise LandmarkError("no symmetry plane with surface on it")
    r = 0.3 * radius
    found = []
    for th in np.radians(np.arange(0, 360, 5)):
        f = np.cos(th) * u + np.sin(th) * w
        tip = mid[np.argmax(mid @ f)]
        dist = np.linalg.norm(p - tip, axis=1)
        ring = p[(dist > r) & (dist < 1.25 * r)]
        if len(ring) >= 10:
            found.append((float(((tip - ring) @ f).mean()), f, tip))
    found.sort(key=lambda c: -c[0])
    chosen: list[tuple[np.ndarray, np.ndarray]] = []
    for _, f, tip in found:   # the direction in which each distinct tip sticks out most
        if len(chosen) < tips and all(np.linalg.norm(tip - t) > 0.5 * r for _, t in chosen):
            chosen.append((f, tip))
    if not chosen:
        raise LandmarkError("no nose found")
    out = []
    for f, tip in chosen:
        up = np.cross(f, n)
        up /= np.linalg.norm(up)
        out += [(np.stack([np.cross(g, f), g, f]), tip) for g in (up, -up)]
    return out


UNITS = {"m": 1.0, "dm": 10.0, "cm": 100.0, "inch": 39.37, "mm": 1000.0}   # mesh units per metre


def units_of(scale: float) -> str | None:
    """The unit a mesh is in when the scale that fits the avatar to it is within 40 % of a unit's."""
    name, per_m = min(UNITS.items(), key=lambda u: abs(np.log(scale * u[1])))
    return name if abs(np.log(scale * per_m)) < np.log(1.4) else None


def similarity(a: np.ndarray, b: np.ndarray, w: np.ndarray | None = None, scale: float | None = None
               ) -> tuple[float, np.ndarray, np.ndarray]:
    """s, R, t minimising sum w |s R a + t - b|^2 (Umeyama, no reflection); ``scale`` fixes s."""
    w = np.ones(len(a)) if w is None else w
    w = w / w.sum()
    ma, mb = w @ a, w @ b
    a0, b0 = a - ma, b - mb
    cov = (b0 * w[:, None]).T @ a0
    uu, sv, vt = np.linalg.svd(cov)
    dd = np.ones(3)
    dd[2] = np.sign(np.linalg.det(uu @ vt))
    rot = uu @ np.diag(dd) @ vt
    var = float(w @ (a0 ** 2).sum(1))
    s = float((sv * dd).sum() / max(var, 1e-30)) if scale is None else scale
    return s, rot, mb - s * rot @ ma


def find_frame(vertices: np.ndarray, faces: np.ndarray, template: np.ndarray, template_faces: np.ndarray,
               template_marks: dict[str, int], picked: dict[str, int] | None = None) -> FaceFrame:
    """The similarity that puts the mesh's face onto the avatar ``template`` (its vertices, faces and landmark
    vertex indices), with the mesh's landmarks. ``picked``: landmark -> vertex index of the mesh."""
    from scipy.spatial import cKDTree

    v = np.asarray(vertices, np.float64)
    p = sample_surface(v, faces, 30000)[0]
    tmpl = np.asarray(template, np.float64)
    ta, tn, _ = sample_surface(tmpl, template_faces, 6000, seed=1)
    (x0, x1), (y0, y1) = FRONT_BOX
    face_pts = ta[(ta[:, 0] > x0) & (ta[:, 0] < x1) & (ta[:, 1] > y0) & (ta[:, 1] < y1) & (tn[:, 2] > 0.3)]
    tree = cKDTree(p)
    pull = None
    if picked:
        names = list(picked)
        pull = (v[[picked[k] for k in names]], tmpl[[template_marks[k] for k in names]])
        starts = [similarity(*pull)]
    else:
        starts = []
        tip_t = tmpl[template_marks["nose_tip"]]
        sparse = face_pts[::3]
        for rot, tip in _coarse_frames(p):
            q = (p - tip) @ rot.T
            # scale: the one under which the avatar's face lies closest to the mesh, tips together
            guess = 0.09 / float(np.sqrt((q ** 2).sum(1).mean()))
            q_tree = cKDTree(q)
            # (distances beyond 2 cm at avatar scale are not looked for: far queries are slow and such a scale lost)
            scales = guess * np.geomspace(0.4, 2.5, 41)
            scores = [np.median(q_tree.query((sparse - tip_t) / k, distance_upper_bound=0.02 / k)[0]) * k
                      for k in scales]
            s = float(scales[int(np.argmin(scores))])
            starts.append((s, rot, tip_t - s * rot @ tip))
    # the avatar's face aligned from each start (a few steps), the closest fit to convergence
    tried = [_align(p, tree, face_pts, *start, pull, 8 if len(starts) > 1 else 30) for start in starts]
    residual, s, rot, t = _align(p, tree, face_pts, *min(tried, key=lambda a: a[0])[1:], pull, 30)
    frame = FaceFrame(s, rot, t, residual=residual, picked=bool(picked))
    frame.landmarks = _refine(frame, v, p, tmpl, template_marks, picked or {})
    return frame


def _align(p: np.ndarray, tree, face_pts: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray,
           pull: tuple[np.ndarray, np.ndarray] | None, steps: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Similarity ICP (at most ``steps``) of the avatar's face points onto the mesh samples ``p`` (``tree``) from
    ``s, rot, t``; ``pull``: picked mesh points and their avatar partners, which keep pulling. Returns the median
    distance of the face to the mesh (avatar metres) and the similarity."""
    for it in range(steps):
        inv = (face_pts - t) @ rot / s                   # avatar face points in mesh coordinates
        dist, j = tree.query(inv)
        keep = dist < max(2.5 * np.median(dist), 1e-12)
        if pull is None:
            s_new, rot_new, t_new = similarity(p[j[keep]], face_pts[keep])
        else:
            w = np.concatenate([np.ones(keep.sum()), np.full(len(pull[0]), keep.sum() / 20)])
            s_new, rot_new, t_new = similarity(np.concatenate([p[j[keep]], pull[0]]),
                                               np.concatenate([face_pts[keep], pull[1]]), w)
        done = abs(s_new / s - 1) < 1e-5 and np.abs(rot_new - rot).max() < 1e-5 and it > 3
        s, rot, t = s_new, rot_new, t_new
        if done:
            break
    return float(np.median(tree.query((face_pts - t) @ rot / s)[0]) * s), s, rot, t


def fit_residual(vertices: np.ndarray, faces: np.ndarray, frame: FaceFrame, template: np.ndarray,
                 template_faces: np.ndarray) -> float:
    """Median distance (avatar metres) from the face of ``template`` to the mesh placed by ``frame``."""
    from scipy.spatial import cKDTree

    q = frame.to_avatar(sample_surface(np.asarray(vertices, np.float64), faces, 30000)[0])
    ta, tn, _ = sample_surface(np.asarray(template, np.float64), template_faces, 6000, seed=1)
    (x0, x1), (y0, y1) = FRONT_BOX
    face_pts = ta[(ta[:, 0] > x0) & (ta[:, 0] < x1) & (ta[:, 1] > y0) & (ta[:, 1] < y1) & (tn[:, 2] > 0.3)]
    return float(np.median(cKDTree(q).query(face_pts)[0]))


def _refine(frame: FaceFrame, v: np.ndarray, p: np.ndarray, tmpl: np.ndarray, marks: dict[str, int],
            picked: dict[str, int]) -> dict[str, np.ndarray]:
    """Landmarks on the mesh: picked ones as given; the nose tip and the mouth slit found on the surface near
    the avatar's; the others at the closest surface point to the avatar's."""
    q = frame.to_avatar(p)
    out = {}
    for name, idx in marks.items():
        if name in picked:
            out[name] = v[picked[name]]
            continue
        want = tmpl[idx]
        near = np.linalg.norm(q - want, axis=1)
        if name == "nose_tip":
            cand = np.nonzero(near < 0.015)[0]
            best = cand[np.argmax(q[cand, 2])] if len(cand) else int(np.argmin(near))
        elif name == "mouth_centre":   # the slit: the deepest bin of the midline's outer profile between the lips
            cand = np.nonzero((np.abs(q[:, 0]) < 0.003) & (np.abs(q[:, 1] - want[1]) < 0.010)
                              & (np.abs(q[:, 2] - want[2]) < 0.015))[0]
            cand = cand[q[cand, 2] > q[cand, 2].max(initial=0) - 0.004]   # the lips, not the teeth behind
            bins = np.round((q[cand, 1] - want[1]) / 0.001).astype(int)
            outer = [cand[bins == b][np.argmax(q[cand[bins == b], 2])] for b in np.unique(bins)]
            best = min(outer, key=lambda i: q[i, 2]) if len(outer) >= 5 else int(np.argmin(near))
        else:
            best = int(np.argmin(near))
        out[name] = p[best]
    return out
