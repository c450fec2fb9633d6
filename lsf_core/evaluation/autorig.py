"""How well the automatic rig recovers true shapes: ``lsf rig --evaluate``.

Our avatar's other identities (``make_avatar(n)``) are exported as plain OBJ files with no shapes, turned to
Z-up and written in centimetres (so orientation and units must be found), once in their own topology and once
re-tessellated (every triangle split in four, vertices shuffled: no vertex-to-vertex shortcut). Each is rigged
through the real path (:func:`lsf_core.face.loader.open_rig` on the file, no cache) and every transferred shape
is compared with the identity's true shape: the error is ``|D_rig - D_true| / |D_true|`` over all vertices
(Frobenius norms), i.e. the vertex error relative to the shape's own motion. A baseline copies the default
avatar's shapes to the nearest point (same frame, no identity fit, registration or transfer).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

TO_Z_UP = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])   # +y up -> +z up, the face looking along +y
CM = 100.0


def _split(vertices: np.ndarray, faces: np.ndarray, deltas: np.ndarray, seed: int):
    """Each triangle into four at its edge midpoints (deltas interpolated alike), vertex order shuffled."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    edges, inv = np.unique(e, axis=0, return_inverse=True)
    n = len(vertices)
    mid = n + inv.reshape(3, -1).T                                   # (F, 3): midpoints of edges 01, 12, 20
    v = np.concatenate([vertices, vertices[edges].mean(1)])
    d = np.concatenate([deltas, deltas[:, edges].mean(2)], 1)
    a, b, c = faces.T
    m01, m12, m20 = mid.T
    f = np.concatenate([np.stack(x, 1) for x in ((a, m01, m20), (m01, b, m12), (m20, m12, c), (m01, m12, m20))])
    order = np.random.default_rng(seed).permutation(len(v))
    where = np.empty_like(order)
    where[order] = np.arange(len(v))
    return v[order], where[f], d[:, order]


def _errors(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(true.reshape(len(true), -1), axis=1)
    err = np.linalg.norm((pred - true).reshape(len(true), -1), axis=1)
    return np.where(norm > 0, err / np.maximum(norm, 1e-30), np.nan)


def _baseline(rig, true_frame_v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The default avatar's shapes copied to each vertex's closest avatar point, in the frame found for it."""
    from lsf_core.face.autorig import closest_on_mesh
    from lsf_core.face.avatar import default_rig
    from lsf_core.face.loader import locate

    base = default_rig()
    frame = locate(rig)
    face, bary, _ = closest_on_mesh(base.vertices, base.faces, frame.to_avatar(true_frame_v))
    moved = np.einsum("nc,kncd->knd", bary, base.deltas[:, base.faces[face]])
    return frame.vectors_from_avatar(moved.reshape(-1, 3)).reshape(moved.shape)


def evaluate_autorig(identities: list[int], json_path: str | Path | None = None) -> dict:
    from tqdm import tqdm

    from lsf_core.face.avatar import make_avatar
    from lsf_core.face.loader import open_rig
    from lsf_core.face.rig import RigError, write_obj

    cases, per_shape = [], {}
    names = None
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(n, kind) for n in identities for kind in ("same topology", "re-tessellated")]
        for n, kind in tqdm(jobs, desc="rig and compare", unit="mesh"):
            truth = make_avatar(n)
            v, f, d = truth.vertices.astype(np.float64), truth.faces, truth.deltas.astype(np.float64)
            if kind == "re-tessellated":
                v, f, d = _split(v, f, d, seed=n)
            v, d = v @ TO_Z_UP.T * CM, d @ TO_Z_UP.T * CM
            path = write_obj(Path(tmp) / f"id{n}_{kind.split()[0]}.obj", v, f)
            t0 = time.perf_counter()
            try:
                rig = open_rig(path, use_cache=False)
            except RigError as err:   # counted, not hidden: such a mesh needs picked landmarks
                cases.append({"identity": n, "mesh": kind, "vertices": len(v), "failed": str(err).split("; ")[0]})
                continue
            seconds = time.perf_counter() - t0
            names = rig.blendshape_names
            order = [truth.blendshape_names.index(x) for x in names]
            err = _errors(rig.deltas.astype(np.float64), d[order])
            base = _errors(_baseline(rig, v, f), d[order])
            identity_err = float(np.abs(rig.identity - truth.identity).mean())
            cases.append({"identity": n, "mesh": kind, "vertices": len(v), "seconds": round(seconds, 1),
                          "median_relative_error": round(float(np.nanmedian(err)), 4),
                          "mean_relative_error": round(float(np.nanmean(err)), 4),
                          "baseline_median_relative_error": round(float(np.nanmedian(base)), 4),
                          "identity_mean_abs_error": round(identity_err, 3)})
            for k, x in enumerate(names):
                if np.isfinite(err[k]):   # shapes that truly move nothing have no relative error
                    per_shape.setdefault(x, []).append(float(err[k]))
    all_err = np.array([e for v in per_shape.values() for e in v], np.float64)
    done = [c for c in cases if "failed" not in c]
    base_all = np.array([c["baseline_median_relative_error"] for c in done])
    summary = {
        "median_relative_error": round(float(np.nanmedian(all_err)), 4),
        "mean_relative_error": round(float(np.nanmean(all_err)), 4),
        "p90_relative_error": round(float(np.nanpercentile(all_err, 90)), 4),
        "baseline_median_relative_error_per_mesh": round(float(np.median(base_all)), 4),
        "median_seconds_per_mesh": float(np.median([c["seconds"] for c in done])),
        "meshes": len(cases), "failed": len(cases) - len(done),
    }
    shapes = {k: round(float(np.nanmedian(v)), 4) for k, v in sorted(per_shape.items(), key=lambda kv: np.nanmedian(
        kv[1]))}
    report = {"what": __doc__.split("\n\n")[1].replace("\n", " "), "identities": identities, "summary": summary,
              "cases": cases, "per_shape_median": shapes}
    report["summary_text"] = (
        f"automatic rig on {len(cases)} meshes ({len(cases) - len(done)} not rigged): transferred shapes differ "
        f"from the true ones by "
        f"{summary['median_relative_error']:.1%} of their motion (median over shapes and meshes; mean "
        f"{summary['mean_relative_error']:.1%}, 90th percentile {summary['p90_relative_error']:.1%}); copying the "
        f"default avatar's shapes: {summary['baseline_median_relative_error_per_mesh']:.1%}; "
        f"{summary['median_seconds_per_mesh']:.0f} s per mesh")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=1) + "\n")
    return report
