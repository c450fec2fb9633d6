"""FLAME head model (2020/2023 files supplied by the user): shape, expression and jaw -> vertices.

The pickled model files contain chumpy arrays and a scipy sparse joint regressor; they are read by
:mod:`lsf_core.safe_pickle` (no chumpy, no code execution). An ``.npz`` with the same keys also works.

Linear blend skinning as in FLAME: ``v_shaped = v_template + S beta + E psi``; joints regressed from
``v_shaped``; pose correctives from the rotation matrices of the non-root joints; the global rotation,
neck and eyes stay at rest, only the jaw (axis-angle) moves. Vertices are in metres.

Animation parameters follow the LSF-Animation output: 53 per frame = 50 expression coefficients + 3 jaw
axis-angle. :meth:`FlameModel.offsets` gives ``vertices(exp, jaw) - vertices(0, 0)`` for a given shape.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

N_SHAPE = 300
N_EXPRESSION = 50          # expression coefficients used by the animation parameters
JOINTS = ("global", "neck", "jaw", "eye_left", "eye_right")
_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights")


class FlameError(ValueError):
    """A FLAME model file that cannot be used; names the file and the problem."""


def rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) -> rotation matrices (..., 3, 3)."""
    r = np.asarray(axis_angle, np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)
    k = r / np.maximum(theta, 1e-12)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    K = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(*r.shape[:-1], 3, 3)
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * K + (1 - c) * (K @ K)


class FlameModel:
    def __init__(self, data: dict, source: str = "<dict>"):
        self.source = source
        missing = [k for k in _KEYS if k not in data]
        if missing:
            raise FlameError(f"FLAME model {source}: missing {missing} (a FLAME model has {list(_KEYS)})")
        import scipy.sparse as sp

        try:
            self.v_template = np.asarray(data["v_template"], np.float64)
            self.faces = np.asarray(data["f"], np.int64).astype(np.int32)
            shapedirs = np.asarray(data["shapedirs"], np.float64)
            self.posedirs = np.asarray(data["posedirs"], np.float64)
            jr = data["J_regressor"]
            self.J_regressor = (jr.toarray() if sp.issparse(jr) else np.asarray(jr)).astype(np.float64)
            self.parents = np.asarray(data["kintree_table"], np.int64)[0].copy()
            self.weights = np.asarray(data["weights"], np.float64)
        except (TypeError, ValueError) as e:
            raise FlameError(f"FLAME model {source}: unreadable arrays ({e})") from e
        v = len(self.v_template)
        n_j = len(self.parents)
        checks = [
            (self.v_template.shape == (v, 3), f"v_template {self.v_template.shape} is not (V, 3)"),
            (shapedirs.ndim == 3 and shapedirs.shape[:2] == (v, 3) and shapedirs.shape[2] > N_SHAPE,
             f"shapedirs {shapedirs.shape} is not (V, 3, {N_SHAPE} + expressions)"),
            (self.posedirs.shape == (v, 3, 9 * (n_j - 1)), f"posedirs {self.posedirs.shape} is not (V, 3, 9*(J-1))"),
            (self.J_regressor.shape == (n_j, v), f"J_regressor {self.J_regressor.shape} is not (J={n_j}, V={v})"),
            (self.weights.shape == (v, n_j), f"weights {self.weights.shape} is not (V, J={n_j})"),
            (self.faces.ndim == 2 and self.faces.shape[1] == 3 and self.faces.max(initial=0) < v,
             f"f {self.faces.shape} is not (F, 3) indices into V={v}"),
            (n_j == len(JOINTS), f"kintree_table has {n_j} joints, FLAME has {len(JOINTS)}"),
        ]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise FlameError(f"FLAME model {source}: " + "; ".join(bad))
        self.parents[0] = -1
        if any(not 0 <= p < i for i, p in enumerate(self.parents) if i):
            raise FlameError(f"FLAME model {source}: kintree_table parents {self.parents.tolist()} are not a tree")
        self.shapedirs = shapedirs[:, :, :N_SHAPE]
        self.exprdirs = shapedirs[:, :, N_SHAPE:]
        self.n_expression = self.exprdirs.shape[2]
        self._fit = None

    @classmethod
    def load(cls, path: str | Path) -> FlameModel:
        """Read a FLAME ``.pkl`` (restricted unpickler) or an ``.npz`` with the same keys."""
        path = Path(path)
        if not path.is_file():
            raise FlameError(f"FLAME model {path}: file does not exist")
        if path.suffix.lower() == ".npz":
            try:
                with np.load(path, allow_pickle=False) as z:
                    data = {k: z[k] for k in z.files}
            except Exception as e:
                raise FlameError(f"FLAME model {path}: not a readable NPZ ({type(e).__name__}: {e})") from e
        else:
            from lsf_core.safe_pickle import UnsafePickleError, load

            try:
                data = load(path)
            except UnsafePickleError as e:
                raise FlameError(f"FLAME model {e}") from e
            if not isinstance(data, dict):
                raise FlameError(f"FLAME model {path}: the pickle holds a {type(data).__name__}, not a dict")
        return cls(data, str(path))

    @property
    def num_vertices(self) -> int:
        return len(self.v_template)

    def _coeffs(self, values, n: int, what: str, batch: tuple[int, ...]) -> np.ndarray:
        if values is None:
            return np.zeros((*batch, n))
        a = np.asarray(values, np.float64)
        if a.shape[-1] > n:
            raise FlameError(f"FLAME model {self.source}: {what} has {a.shape[-1]} coefficients, the model has {n}")
        if a.shape[-1] < n:  # fewer coefficients than the model: the rest are zero
            a = np.concatenate([a, np.zeros((*a.shape[:-1], n - a.shape[-1]))], -1)
        return a

    def vertices(self, shape=None, expression=None, jaw=None) -> np.ndarray:
        """Posed vertices (..., V, 3) float32 for shape (..., <=300), expression (..., <=n_exp), jaw (..., 3)."""
        batch = np.broadcast_shapes(*[np.shape(a)[:-1] for a in (shape, expression, jaw) if a is not None])
        beta = self._coeffs(shape, N_SHAPE, "shape", batch)
        psi = self._coeffs(expression, self.n_expression, "expression", batch)
        jaw = np.zeros((*batch, 3)) if jaw is None else np.asarray(jaw, np.float64)
        if jaw.shape[-1] != 3:
            raise FlameError(f"jaw must be axis-angle (..., 3), got {jaw.shape}")
        beta = np.broadcast_to(beta, (*batch, N_SHAPE))
        psi = np.broadcast_to(psi, (*batch, self.n_expression))
        jaw = np.broadcast_to(jaw, (*batch, 3))
        v_shaped = self.v_template + np.einsum("vcs,...s->...vc", self.shapedirs, beta) \
            + np.einsum("vce,...e->...vc", self.exprdirs, psi)
        joints = np.einsum("jv,...vc->...jc", self.J_regressor, v_shaped)
        pose = np.zeros((*batch, len(JOINTS), 3))
        pose[..., JOINTS.index("jaw"), :] = jaw
        rot = rodrigues(pose)                                                   # (..., J, 3, 3)
        pose_feature = (rot[..., 1:, :, :] - np.eye(3)).reshape(*batch, -1)
        v_posed = v_shaped + np.einsum("vcp,...p->...vc", self.posedirs, pose_feature)
        # world transforms along the kinematic tree
        world_r = [rot[..., 0, :, :]]
        world_t = [joints[..., 0, :]]
        for i in range(1, len(JOINTS)):
            p = self.parents[i]
            world_r.append(world_r[p] @ rot[..., i, :, :])
            local = joints[..., i, :] - joints[..., p, :]
            world_t.append(world_t[p] + np.einsum("...ij,...j->...i", world_r[p], local))
        R = np.stack(world_r, -3)                                               # (..., J, 3, 3)
        t = np.stack(world_t, -2) - np.einsum("...jik,...jk->...ji", R, joints)  # remove the rest pose
        blend_r = np.einsum("vj,...jik->...vik", self.weights, R)
        blend_t = np.einsum("vj,...ji->...vi", self.weights, t)
        return (np.einsum("...vik,...vk->...vi", blend_r, v_posed) + blend_t).astype(np.float32)

    def offsets(self, params: np.ndarray, shape: np.ndarray | None = None) -> np.ndarray:
        """Animation parameters (..., 53) = 50 expression + 3 jaw -> vertex offsets (..., V, 3) from the
        neutral face of ``shape`` (None or empty: the template)."""
        p = np.asarray(params, np.float64)
        if p.shape[-1] != N_EXPRESSION + 3:
            raise FlameError(f"FLAME parameters must end in {N_EXPRESSION + 3} (50 expression + 3 jaw), got {p.shape}")
        beta = None if shape is None or np.size(shape) == 0 else np.asarray(shape, np.float64).reshape(-1)
        neutral = self.vertices(shape=beta)
        exp = p[..., :N_EXPRESSION]
        if beta is not None:
            beta = np.broadcast_to(beta, (*p.shape[:-1], len(beta)))
        return (self.vertices(beta, exp, p[..., N_EXPRESSION:]) - neutral).astype(np.float32)

    def fit_shape(self, neutral_vertices: np.ndarray, regularization: float = 0.0) -> np.ndarray:
        """Least-squares 300-d shape vector whose neutral face best matches ``neutral_vertices`` (V, 3)."""
        v = np.asarray(neutral_vertices, np.float64)
        if v.shape != self.v_template.shape:
            raise FlameError(f"neutral mesh {v.shape} is not in FLAME topology {self.v_template.shape}")
        a = self.shapedirs.reshape(-1, N_SHAPE)
        b = (v - self.v_template).reshape(-1)
        if regularization > 0:
            return np.linalg.solve(a.T @ a + regularization * np.eye(N_SHAPE), a.T @ b).astype(np.float32)
        return np.linalg.lstsq(a, b, rcond=None)[0].astype(np.float32)

    def rig(self, shape: np.ndarray | None = None):
        """A :class:`~lsf_core.face.rig.Rig` of this identity: the neutral face and the 50 linear expression
        shapes (``exp0``..``exp49``); the jaw, being a rotation, is only in :meth:`offsets`."""
        from lsf_core.face.rig import Rig

        beta = np.zeros(N_SHAPE) if shape is None or np.size(shape) == 0 else self._coeffs(shape, N_SHAPE, "shape", ())
        neutral = self.vertices(shape=beta)
        n = min(N_EXPRESSION, self.n_expression)
        deltas = np.moveaxis(self.exprdirs[:, :, :n], 2, 0)
        return Rig("flame", neutral, self.faces, [f"exp{i}" for i in range(n)], deltas, beta.astype(np.float32))
