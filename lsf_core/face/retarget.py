"""Blendshape weights and head/eye angles -> robot face joint positions: a linear map with joint limits and a
speed limit.

A retarget map is YAML (``config/retarget_example.yaml``)::

    joints:
      - name: jaw            # joint name as the robot's controller knows it
        weights: {jawOpen: 0.6, mouthClose: -0.2}   # position = offset + sum(weight * blendshape)
        offset: 0.0
        min: 0.0             # joint limits (same unit as the joint: rad or m)
        max: 0.5
        max_velocity: 2.0    # units per second; 0 = no limit

      - name: neck_pan
        weights: {headYaw: 1.0}   # head and eye angles in radians (lsf_core.arkit.POSE_NAMES): headYaw,
        min: -0.6                 # headPitch, headRoll, eyeYaw, eyePitch; yaw > 0 turns to the face's left,
        max: 0.6                  # pitch > 0 looks down, roll > 0 tilts the top of the head to its right
        max_velocity: 1.5

Blendshape names may use ARKit spelling or the ``_L``/``_R`` suffixes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsf_core.arkit import POSE_NAMES, canonical_name
from lsf_core.config import ConfigError, load_config


@dataclass
class JointMap:
    name: str = ""
    weights: dict[str, float] = field(default_factory=dict)
    offset: float = 0.0
    min: float = -math.inf
    max: float = math.inf
    max_velocity: float = 0.0


@dataclass
class RetargetMap:
    joints: list[JointMap] = field(default_factory=list)


def load_retarget_map(path: str | Path) -> RetargetMap:
    """Read and check a retarget YAML; errors name the file and the offending joint."""
    rmap = load_config(RetargetMap, path)
    if not rmap.joints:
        raise ConfigError(f"{path}: the retarget map lists no joints")
    seen = set()
    for j in rmap.joints:
        where = f"{path}: joint {j.name!r}"
        if not j.name:
            raise ConfigError(f"{path}: a joint has no name")
        if j.name in seen:
            raise ConfigError(f"{where} is listed twice")
        seen.add(j.name)
        if not isinstance(j.weights, dict) or not j.weights:
            raise ConfigError(f"{where}: 'weights' must map blendshape names to numbers")
        for k, v in j.weights.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ConfigError(f"{where}: weight of {k!r} must be a finite number, got {v!r}")
        if not j.min <= j.max:
            raise ConfigError(f"{where}: min {j.min} is above max {j.max}")
        if j.max_velocity < 0:
            raise ConfigError(f"{where}: max_velocity must be >= 0, got {j.max_velocity}")
    return rmap


class Retargeter:
    """Stateful mapper: ``step(weights, t, pose)`` returns joint positions, speed-limited against the last call.
    Inputs are the blendshape weights followed by the pose angles (``POSE_NAMES``)."""

    def __init__(self, rmap: RetargetMap, blendshape_names: list[str], source: str = "retarget map"):
        self.input_names = list(blendshape_names) + list(POSE_NAMES)
        index = {canonical_name(n): i for i, n in enumerate(self.input_names)}
        self.joint_names = [j.name for j in rmap.joints]
        self.matrix = np.zeros((len(rmap.joints), len(self.input_names)), np.float64)
        for r, j in enumerate(rmap.joints):
            for name, w in j.weights.items():
                col = index.get(canonical_name(name))
                if col is None:
                    raise ConfigError(f"{source}: joint {j.name!r} uses input {name!r}, which the model does not "
                                      f"output; inputs are: {', '.join(self.input_names)}")
                self.matrix[r, col] += float(w)
        self.offset = np.array([j.offset for j in rmap.joints], np.float64)
        self.lower = np.array([j.min for j in rmap.joints], np.float64)
        self.upper = np.array([j.max for j in rmap.joints], np.float64)
        self.max_velocity = np.array([j.max_velocity if j.max_velocity > 0 else np.inf
                                      for j in rmap.joints], np.float64)
        self._last: tuple[float, np.ndarray] | None = None

    def reset(self) -> None:
        self._last = None

    def step(self, weights: np.ndarray, t: float, pose: np.ndarray | None = None) -> np.ndarray:
        """Joint positions for blendshape ``weights`` and ``pose`` angles (radians, ``POSE_NAMES``; None = 0)."""
        pose = np.zeros(len(POSE_NAMES)) if pose is None else np.asarray(pose, np.float64)
        inputs = np.concatenate([np.asarray(weights, np.float64), pose])
        target = np.clip(self.matrix @ inputs + self.offset, self.lower, self.upper)
        if self._last is not None:
            t0, prev = self._last
            dt = max(t - t0, 0.0)
            step = self.max_velocity * dt
            target = np.clip(target, prev - step, prev + step)
        self._last = (t, target)
        return target.copy()
