"""Fit the default avatar to a face mesh: its identity coefficients, then a non-rigid registration.

1. Identity (:func:`fit_identity`): the avatar's :data:`IDENTITY_PARAMS` are a small morphable model; with the
   mesh aligned by :mod:`lsf_core.face.landmarks`, the coefficients (and the similarity) are fitted by
   Gauss-Newton on closest-point pairs between the avatar's visible surface and the mesh (Jacobian by finite
   differences, a weak prior towards the mean face). This is the realtime model's identity input, as LSF
   feeds the speaker's FLAME shape.
2. Shape (:func:`register`): the fitted avatar is deformed onto the mesh by landmark-guided non-rigid ICP:
   per-vertex displacements with a membrane (graph Laplacian) prior whose stiffness is relaxed step by step,
   closest-point data terms on the avatar's visible surface (skin, eyes, ears) that pass a distance and a
   normal test, and the landmarks pulled to theirs. Inner parts (teeth, mouth cavity) have no data term and
   follow the face through links to their nearest skin vertices.
"""
from __future__ import annotations

import numpy as np

from lsf_core.face.avatar_shape import IDENTITY_DIM
from lsf_core.face.landmarks import FaceFrame, sample_surface

VISIBLE = ("head", "eye_left", "eye_right", "ear_left", "ear_right")


def _avatar_vertices(p: np.ndarray) -> np.ndarray:
    from lsf_core.face.avatar import make_avatar

    return make_avatar(np.asarray(p, np.float32)).vertices.astype(np.float64)


def _target(vertices: np.ndarray, faces: np.ndarray, frame: FaceFrame, n: int = 60000):
    from scipy.spatial import cKDTree

    pts, nrm, tri = sample_surface(np.asarray(vertices, np.float64), faces, n, seed=2)
    q = frame.to_avatar(pts)
    qn = nrm @ frame.rotation.T
    return q, qn, cKDTree(q), pts, tri


def _pairs(src: np.ndarray, src_n: np.ndarray, q: np.ndarray, qn: np.ndarray, tree, max_dist: float,
           src_part: np.ndarray | None = None, q_part: np.ndarray | None = None):
    """Closest target sample of each source point (of the same part, where parts are known), kept if near
    enough and facing the same way (the mesh's winding may be inside out: the majority decides)."""
    dist, j = tree.query(src, k=8)
    if src_part is not None and q_part is not None:
        same = (q_part[j] == src_part[:, None]) | (q_part[j] < 0)
        first = np.argmax(same, 1)
        pick = np.arange(len(src))
        dist, j = np.where(same.any(1), dist[pick, first], np.inf), j[pick, first]
    else:
        dist, j = dist[:, 0], j[:, 0]
    dots = np.einsum("ij,ij->i", src_n, qn[j])
    near = dist < max_dist
    flip = -1.0 if near.any() and np.median(dots[near]) < 0 else 1.0
    keep = near & (flip * dots > 0.3)
    return j, keep


def fit_identity(vertices: np.ndarray, faces: np.ndarray, frame: FaceFrame, template_faces: np.ndarray,
                 visible: np.ndarray, prior: float = 0.01, iterations: int = 12) -> tuple[np.ndarray, FaceFrame]:
    """Avatar identity coefficients of the mesh, and the frame re-fitted with them. ``visible``: avatar vertex
    indices with data terms."""
    from scipy.spatial import cKDTree

    from lsf_core.face.landmarks import UNITS, similarity, units_of
    from lsf_core.face.render import vertex_normals

    q, qn, tree, pts, _ = _target(vertices, faces, frame)
    p = np.zeros(IDENTITY_DIM)
    base = _avatar_vertices(p)
    jac = np.stack([(_avatar_vertices(np.eye(IDENTITY_DIM)[k] * 0.5) - base) / 0.5 for k in range(IDENTITY_DIM)], -1)
    sub = visible[:: max(1, len(visible) // 3000)]
    # in known units the size of the face is an identity trait (face width, length); else scale absorbs it
    unit = units_of(frame.scale)
    fixed = 1.0 / UNITS[unit] if unit else None
    s, rot, t = frame.scale, frame.rotation, frame.translation
    for it in range(iterations):
        cur = base + jac @ p
        nrm = vertex_normals(cur, template_faces)[sub]
        j, keep = _pairs(cur[sub], nrm, q, qn, tree, 0.012 if it < 3 else 0.006)
        if keep.sum() < 50:
            break
        # point-to-plane: slide along the surface freely, so the shape (not the sampling) decides
        nk = nrm[keep]
        a = np.einsum("nc,nck->nk", nk, jac[sub][keep])
        r = np.einsum("nc,nc->n", nk, q[j[keep]] - base[sub][keep])
        gram = a.T @ a
        lam = prior * np.trace(gram) / IDENTITY_DIM
        p = np.clip(np.linalg.solve(gram + lam * np.eye(IDENTITY_DIM), a.T @ r), -2.5, 2.5)
        # the frame again, with the fitted face: mesh points -> their avatar partners
        s_new, rot_new, t_new = similarity(pts[j[keep]], (base + jac @ p)[sub][keep], scale=fixed)
        s, rot, t = s_new, rot_new, t_new
        new = FaceFrame(s, rot, t, frame.landmarks, frame.residual, frame.picked, unit)
        q, qn = new.to_avatar(pts), qn @ frame.rotation @ new.rotation.T
        tree = cKDTree(q)
        frame = new
    return p.astype(np.float32), frame


def _graph(template: np.ndarray, faces: np.ndarray, inner: np.ndarray, skin: np.ndarray):
    """Edges of the mesh plus links from each inner-part vertex to its three nearest skin vertices."""
    from scipy.spatial import cKDTree

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    if len(inner):
        _, j = cKDTree(template[skin]).query(template[inner], k=3)
        e = np.concatenate([e, np.stack([np.repeat(inner, 3), skin[j.reshape(-1)]], 1)])
    e = np.unique(np.sort(e, 1), axis=0)
    return e[e[:, 0] != e[:, 1]]


def register(template: np.ndarray, template_faces: np.ndarray, visible: np.ndarray, inner: np.ndarray,
             vertices: np.ndarray, faces: np.ndarray, frame: FaceFrame, landmark_index: dict[str, int],
             template_part: np.ndarray, face_part: np.ndarray,
             stiffness: tuple[float, ...] = (30.0, 10.0, 3.0, 1.0, 0.5), steps: int = 3) -> np.ndarray:
    """The avatar ``template`` (avatar frame) deformed onto the mesh (given in its own frame, aligned by
    ``frame``) -> registered template vertices in the avatar frame. ``template_part``: part number of each
    template vertex; ``face_part``: the part each triangle of the mesh belongs to (-1: unknown)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    from lsf_core.face.render import vertex_normals

    q, qn, tree, _, tri = _target(vertices, faces, frame)
    q_part = face_part[tri]
    n = len(template)
    edges = _graph(template, template_faces, inner, visible)
    m = len(edges)
    inc = sp.csr_matrix((np.r_[np.ones(m), -np.ones(m)], (np.r_[np.arange(m), np.arange(m)], edges.T.reshape(-1))),
                        shape=(m, n))
    lap = (inc.T @ inc).tocsc()
    marks = [(landmark_index[k], frame.to_avatar(frame.landmarks[k][None])[0]) for k in landmark_index
             if k in frame.landmarks]
    disp = np.zeros((n, 3))
    for level, alpha in enumerate(stiffness):
        for _ in range(steps):
            cur = template + disp
            nrm = vertex_normals(cur, template_faces)[visible]
            j, keep = _pairs(cur[visible], nrm, q, qn, tree, 0.010 if level < 2 else 0.005,
                             template_part[visible], q_part)
            w = np.zeros(n)
            rhs = np.zeros((n, 3))
            w[visible[keep]] = 1.0
            rhs[visible[keep]] = q[j[keep]] - template[visible[keep]]
            lw = 5.0 if level < len(stiffness) - 1 else 1.0
            for idx, pos in marks:
                w[idx] += lw
                rhs[idx] += lw * (pos - template[idx])
            a = (sp.diags(w + 1e-6) + alpha * lap).tocsc()
            disp = splu(a).solve(rhs)
    return template + disp
