"""Head pose geometry: head angles -> rotation of the face about a neck pivot, as a ROS transform and on meshes.

Two frames (``docs/liveliness.md``):

- the **face frame** (``frame_id`` of every face output, the mesh's own axes): x to the face's left, y up,
  z out of the face (forward), metres;
- the **head parent frame** (ROS REP-103 axes: x forward, y left, z up), which coincides with the face frame
  at rest (same origin) and stays fixed while the head turns. TF ``parent -> face`` carries the head pose.

Angles (``lsf_core.arkit.POSE_NAMES``) turn the face about its own axes through the pivot:
``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)`` in face axes, so yaw > 0 turns to the face's left, pitch > 0 nods
down and roll > 0 tilts the top of the head to its right.
"""
from __future__ import annotations

import numpy as np

# columns: the face frame's x (left), y (up), z (forward) in the parent frame's REP-103 axes
FACE_TO_PARENT = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) rotation of the face in face axes."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return ry @ rx @ rz


def head_pivot(vertices: np.ndarray) -> np.ndarray:
    """A neck pivot for a head mesh in the face frame: centred left-right, at 30 % of its height from the
    bottom and 40 % of its depth from the back (about the top of the spine for a head-and-neck mesh)."""
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    lo, hi = v.min(0), v.max(0)
    return np.array([(lo[0] + hi[0]) / 2, lo[1] + 0.3 * (hi[1] - lo[1]), lo[2] + 0.4 * (hi[2] - lo[2])])


def quaternion(m: np.ndarray) -> np.ndarray:
    """(x, y, z, w) unit quaternion of a rotation matrix, w >= 0."""
    w = np.sqrt(max(0.0, 1.0 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    q = np.array([x, y, z, w])
    return q / np.linalg.norm(q)


def parent_transform(yaw: float, pitch: float, roll: float, pivot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pose of the face frame in the head parent frame: translation (3,) metres and quaternion (x, y, z, w).
    A point p in the face frame lies at ``FACE_TO_PARENT @ (pivot + R @ (p - pivot))`` in the parent frame."""
    r = rotation(yaw, pitch, roll)
    pivot = np.asarray(pivot, np.float64)
    return FACE_TO_PARENT @ (pivot - r @ pivot), quaternion(FACE_TO_PARENT @ r)


def parent_to_face(point: np.ndarray) -> np.ndarray:
    """A point given in the head parent frame -> the face frame at rest."""
    return FACE_TO_PARENT.T @ np.asarray(point, np.float64)


def posed_vertices(vertices: np.ndarray, angles: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """Vertices (T, V, 3) turned by per-frame head angles (T, 3: yaw, pitch, roll) about ``pivot``, in the
    face frame at rest (what a camera fixed to the parent frame sees)."""
    v = np.asarray(vertices, np.float32)
    a = np.asarray(angles, np.float64).reshape(len(v), 3)
    rots = np.stack([rotation(*row) for row in a]).astype(np.float32)
    pivot = np.asarray(pivot, np.float32)
    return np.einsum("tij,tvj->tvi", rots, v - pivot) + pivot


def eye_centre(vertices: np.ndarray, regions: dict[str, np.ndarray]) -> np.ndarray:
    """The point between the eyes in the face frame: the centre of the rig's ``eyes`` region, or for rigs
    without one, a guess from the mesh's bounds (centred, 60 % up, at the front)."""
    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    idx = regions.get("eyes")
    if idx is not None and len(idx):
        return v[np.asarray(idx)].mean(0)
    lo, hi = v.min(0), v.max(0)
    return np.array([(lo[0] + hi[0]) / 2, lo[1] + 0.6 * (hi[1] - lo[1]), lo[2] + 0.85 * (hi[2] - lo[2])])
