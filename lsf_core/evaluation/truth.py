"""Ground truth for evaluating an animation: motion files and vertex region lists.

Ground-truth NPZ (per clip, all keys optional but one motion): ``fps`` or ``times`` (T,) s;
``blendshapes`` (T, K) + ``blendshape_names``; ``flame`` (T, 53); ``vertices`` (T, V, 3) metres, or
``vertex_offsets`` + ``neutral`` (the ``lsf infer`` layout); ``template`` (V, 3); ``lip_indices`` and
``upper_indices`` (vertex index lists); ``phone_times`` (N, 2) + ``phone_labels`` (N,).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsf_core.evaluation import metrics as M


@dataclass
class Truth:
    times: np.ndarray                              # (T,) s from the clip start
    blendshapes: np.ndarray | None = None          # (T, K)
    blendshape_names: list[str] = field(default_factory=list)
    flame: np.ndarray | None = None                # (T, 53)
    vertices: np.ndarray | None = None             # (T, V, 3) absolute, metres
    template: np.ndarray | None = None             # (V, 3)
    lip: np.ndarray | None = None
    upper: np.ndarray | None = None
    phones: list[M.Phone] = field(default_factory=list)


def load_truth_npz(path: str | Path) -> Truth:
    path = Path(path)
    try:
        z = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read ground-truth NPZ ({err})") from err
    vertices = z.get("vertices")
    template = z.get("template", z.get("neutral"))
    if vertices is None and "vertex_offsets" in z:
        if template is None:
            raise ValueError(f"{path}: 'vertex_offsets' needs 'neutral' (or 'template') to give vertices")
        vertices = z["vertex_offsets"] + template[None]
    motions = {k: z[k] for k in ("blendshapes", "flame") if k in z}
    if vertices is not None:
        motions["vertices"] = vertices
    if not motions:
        raise ValueError(f"{path}: ground truth needs 'blendshapes', 'flame', 'vertices' or 'vertex_offsets'")
    lengths = {k: v.shape[0] for k, v in motions.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{path}: motion arrays disagree on the frame count: {lengths}")
    n = next(iter(lengths.values()))
    if "times" in z:
        times = np.asarray(z["times"], np.float64)
    elif "fps" in z:
        times = np.arange(n) / float(z["fps"])
    else:
        raise ValueError(f"{path}: ground truth needs 'fps' or 'times'")
    if times.shape != (n,):
        raise ValueError(f"{path}: 'times' has {times.shape[0]} entries for {n} frames")
    if "blendshapes" in z and "blendshape_names" not in z:
        raise ValueError(f"{path}: 'blendshapes' needs 'blendshape_names'")
    phones = []
    if "phone_labels" in z:
        spans = np.asarray(z["phone_times"], np.float64).reshape(-1, 2)
        phones = [M.Phone(float(s), float(e), str(lab)) for (s, e), lab in zip(spans, z["phone_labels"])]
    return Truth(times, z.get("blendshapes"), [str(s) for s in z.get("blendshape_names", [])], z.get("flame"),
                 vertices, template, z.get("lip_indices"), z.get("upper_indices"), phones)


def load_indices(path: str | Path) -> np.ndarray:
    """Vertex index list from .npy, .json or whitespace/comma separated text."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            idx = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            idx = np.asarray(json.loads(path.read_text()))
        else:
            idx = np.asarray(path.read_text().replace(",", " ").split(), np.int64)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read a vertex index list ({err})") from err
    return np.asarray(idx, np.int64).ravel()
