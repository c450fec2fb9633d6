"""Rig a plain neutral mesh (an OBJ head, a scanned face: no blendshapes) with the 52 ARKit shapes.

The default avatar (:mod:`lsf_core.face.avatar`) is fitted to the mesh and its shapes are carried over:

1. :func:`lsf_core.face.landmarks.find_frame`: where the face is (symmetry plane, nose tip, up, scale;
   or a file of picked landmark vertices);
2. :func:`lsf_core.face.register.fit_identity`: the avatar identity closest to the mesh (also the realtime
   model's identity input);
3. :func:`lsf_core.face.register.register`: the avatar with that identity deformed onto the mesh;
4. :func:`deformation_transfer` (Sumner & Popovic 2004): every ARKit shape of the avatar becomes the same
   per-triangle deformation of the registered avatar;
5. each vertex of the mesh takes the motion of its closest point on the registered avatar (barycentric),
   turned back into the mesh's axes and units.

``lsf rig MESH -o rig.npz`` runs it once (with a before/after render); :mod:`lsf_core.face.loader` runs it on
the fly, with a cache, for ``neutral_mesh:=head.obj``.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lsf_core.arkit import ARKIT_NAMES
from lsf_core.face.landmarks import FaceFrame, LandmarkError, find_frame, fit_residual, template_landmarks
from lsf_core.face.rig import Rig

MAX_RESIDUAL = 0.003   # m (avatar scale): median distance of the fitted face to the mesh above which we give up


def deformation_transfer(source: np.ndarray, faces: np.ndarray, deltas: np.ndarray, target: np.ndarray,
                         anchor: float = 1e-2) -> np.ndarray:
    """Shapes ``deltas`` (K, V, 3) of ``source`` carried to ``target`` (same topology) as per-triangle
    deformation gradients (Sumner & Popovic's frames with the scaled normal as third edge), solved for the
    target's vertices in the least-squares sense; a weak pull towards ``target + deltas`` fixes what gradients
    cannot (where each separate part sits)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    def frames(v):
        e1, e2 = v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]]
        n = np.cross(e1, e2)
        n = n / np.sqrt(np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30))
        return np.stack([e1, e2, n], -1)

    src, tgt = np.asarray(source, np.float64), np.asarray(target, np.float64)
    s_frames = frames(src)
    det = np.linalg.det(s_frames)
    ok = np.abs(det) > 1e-18
    s_inv = np.zeros_like(s_frames)
    s_inv[ok] = np.linalg.inv(s_frames[ok])
    f, n = len(faces), len(src)
    rows = np.arange(2 * f)
    g = sp.csr_matrix((np.r_[np.ones(2 * f), -np.ones(2 * f)],
                       (np.r_[rows, rows], np.r_[faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0]])),
                      shape=(2 * f, n))
    solve = splu((g.T @ g + anchor * sp.eye(n)).tocsc()).solve
    t_edges = np.stack([tgt[faces[:, 1]] - tgt[faces[:, 0]], tgt[faces[:, 2]] - tgt[faces[:, 0]]], 0)  # (2, F, 3)
    out = np.zeros((len(deltas), n, 3), np.float32)
    for k, d in enumerate(np.asarray(deltas, np.float64)):
        if not np.any(d):
            continue
        q = np.einsum("fij,fjk->fik", frames(src + d), s_inv)
        q[~ok] = np.eye(3)
        b = np.einsum("fij,efj->efi", q, t_edges).reshape(2 * f, 3)
        out[k] = solve(g.T @ b + anchor * (tgt + d)) - tgt
    return out


def closest_on_mesh(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, k: int = 16
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest surface point of each query: triangle index, barycentric weights (P, 3), distance."""
    from scipy.spatial import cKDTree
    from trimesh.triangles import closest_point, points_to_barycentric

    tri = np.asarray(vertices, np.float64)[faces]
    k = min(k, len(faces))
    _, cand = cKDTree(tri.mean(1)).query(points, k=k)
    cand = cand.reshape(len(points), k)
    cp = closest_point(tri[cand.reshape(-1)], np.repeat(points, k, axis=0)).reshape(len(points), k, 3)
    dist = np.linalg.norm(cp - points[:, None], axis=2)
    best = np.argmin(dist, 1)
    face = cand[np.arange(len(points)), best]
    with np.errstate(invalid="ignore", divide="ignore"):
        bary = points_to_barycentric(tri[face], cp[np.arange(len(points)), best])
    bary = np.clip(np.nan_to_num(bary, nan=1 / 3), 0, 1)           # degenerate triangles: their centre
    return face, bary / bary.sum(1, keepdims=True), dist[np.arange(len(points)), best]


def _nudged(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Each vertex moved a quarter of the way to the mean of its triangles' centroids, so that where two
    surfaces touch (the lips of a closed mouth) it finds its own side's surface."""
    cen = vertices[faces].mean(1)
    acc = np.zeros_like(vertices)
    cnt = np.zeros(len(vertices))
    for c in range(3):
        np.add.at(acc, faces[:, c], cen)
        np.add.at(cnt, faces[:, c], 1)
    has = cnt > 0
    out = vertices.copy()
    out[has] += 0.25 * (acc[has] / cnt[has, None] - vertices[has])
    return out


def _component_parts(points: np.ndarray, faces: np.ndarray, template: np.ndarray, part: np.ndarray) -> np.ndarray:
    """For each triangle of the mesh, the avatar part its connected piece matches (most of its vertices are
    closest to that part), or -1 for pieces that span several parts (a head fused with its eyes)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(points)
    adj = sp.coo_matrix((np.ones(2 * len(faces)), (np.r_[faces[:, 0], faces[:, 1]], np.r_[faces[:, 1], faces[:, 2]])),
                        shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    near = part[cKDTree(template).query(points)[1]]
    out = np.full(n, -1, np.int64)
    for c in np.unique(comp):
        idx = np.nonzero(comp == c)[0]
        counts = np.bincount(near[idx], minlength=part.max() + 1)
        if counts.max() >= 0.9 * len(idx):
            out[idx] = np.argmax(counts)
    return out[faces[:, 0]]


def _map_parts(reg: np.ndarray, reg_faces: np.ndarray, part: np.ndarray, points: np.ndarray, faces: np.ndarray,
               face_part: np.ndarray):
    """Closest point on the registered avatar for each mesh vertex, within its piece's part where known."""
    vert_part = np.full(len(points), -1, np.int64)
    vert_part[faces.reshape(-1)] = np.repeat(face_part, 3)
    tri_part = part[reg_faces[:, 0]]
    face, bary, dist = closest_on_mesh(reg, reg_faces, points)
    for k in np.unique(vert_part[vert_part >= 0]):
        sel, own = np.nonzero(vert_part == k)[0], np.nonzero(tri_part == k)[0]
        f, b, d = closest_on_mesh(reg, reg_faces[own], points[sel])
        face[sel], bary[sel], dist[sel] = own[f], b, d
    return face, bary, dist


def autorig(vertices: np.ndarray, faces: np.ndarray, name: str = "mesh", picked: dict[str, int] | None = None,
            progress: Callable[[str], None] | None = None) -> tuple[Rig, FaceFrame]:
    """A plain mesh -> a rig with the 52 ARKit shapes, its identity fitted; and the frame found for it.
    Raises :class:`LandmarkError` when the face cannot be found or the fit is poor."""
    from lsf_core.face.avatar import default_rig, make_avatar, part_slices
    from lsf_core.face.register import VISIBLE, fit_identity, register

    say = progress or (lambda _msg: None)
    v = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    if len(faces) < 100:
        raise LandmarkError(f"{len(faces)} triangles are too few for a face")
    base, parts = default_rig(), part_slices()
    marks = template_landmarks(base.vertices, parts["head"])
    visible = np.concatenate([np.arange(parts[p].start, parts[p].stop) for p in VISIBLE])
    inner = np.setdiff1d(np.arange(base.num_vertices), visible)
    say("finding the face (symmetry, nose, scale)" if not picked else "aligning the picked landmarks")
    frame = find_frame(v, faces, base.vertices, base.faces, marks, picked)
    say("fitting the avatar's identity")
    identity, frame = fit_identity(v, faces, frame, base.faces, visible)
    source = make_avatar(identity)
    frame.residual = fit_residual(v, faces, frame, source.vertices, base.faces)
    if frame.residual > MAX_RESIDUAL:
        raise LandmarkError(f"no face found: the best fit leaves the avatar's face {frame.residual * 1e3:.1f} mm "
                            f"(avatar scale) from the mesh (limit {MAX_RESIDUAL * 1e3:.0f} mm)")
    part = np.zeros(base.num_vertices, np.int64)
    for k, sl in enumerate(parts.values()):
        part[sl] = k
    face_part = _component_parts(frame.to_avatar(v), faces, source.vertices, part)
    say("registering the avatar to the mesh")
    reg = register(source.vertices.astype(np.float64), base.faces, visible, inner, v, faces, frame, marks,
                   part, face_part)
    say("transferring the 52 shapes")
    shapes = deformation_transfer(source.vertices, base.faces, source.deltas, reg)
    face, bary, dist = _map_parts(reg, base.faces, part, _nudged(frame.to_avatar(v), faces), faces, face_part)
    corner = base.faces[face]                                                   # (N, 3) avatar vertices
    moved = np.einsum("nc,kncd->knd", bary, shapes[:, corner])
    deltas = frame.vectors_from_avatar(moved.reshape(-1, 3)).reshape(moved.shape)
    colors = np.einsum("nc,ncd->nd", bary, source.colors[corner])
    nearest = corner[np.arange(len(v)), np.argmax(bary, 1)]
    regions = {k: np.nonzero(np.isin(nearest, idx))[0] for k, idx in source.regions.items()}
    rig = Rig(name, v, faces, list(ARKIT_NAMES), deltas, identity, regions, colors)
    rig.notes.append(f"rigged automatically from the default avatar: identity {np.round(identity, 2).tolist()}, "
                     f"{'picked' if picked else 'automatic'} landmarks, fit {frame.residual * 1e3:.1f} mm "
                     f"(avatar scale), {frame.describe()}")
    far = float(np.median(dist))
    if far > 0.003:
        rig.warnings.append(f"the mesh lies {far * 1e3:.1f} mm (median, avatar scale) from the fitted avatar: "
                            f"shapes may be rough")
    return rig, frame
