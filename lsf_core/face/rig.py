"""Face rigs: a neutral mesh plus named blendshape deltas, loaded from NPZ, OBJ/PLY or glTF.

A :class:`Rig` turns blendshape weights into vertex offsets and back (bounded least squares), and
maps weights given under any ARKit spelling (``eyeBlinkLeft``/``eyeBlink_L``) onto its own shapes.

Files understood by :func:`load_rig`:

- ``.npz`` written by :func:`save_rig` (loads with ``allow_pickle=False``);
- ``.obj`` / ``.ply``: the neutral mesh; blendshapes are the OBJ/PLY files (same vertex count) in a
  folder ``<stem>_blendshapes/`` beside it, one per shape, named after the shape;
- a folder holding ``neutral.obj`` (or ``.ply``) and one file per blendshape;
- ``.glb`` / ``.gltf`` (read by :mod:`lsf_core.face.gltf`): the face is the mesh with the most ARKit-named
  morph targets (then the most vertices); every mesh with matching targets (teeth, tongue, eyes) is animated
  with it, meshes without targets that touch the face (hair, glasses) are carried rigidly, the rest (body,
  clothes) is left out. Viseme-only rigs are turned into ARKit shapes (:mod:`lsf_core.face.viseme_rig`).

A rig's ``notes`` and ``warnings`` say what loading found (which names matched, what was left out).
A mesh without shapes loads as a rig with no shapes; :mod:`lsf_core.face.loader` rigs it automatically.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsf_core.arkit import ARKIT_INDEX, canonical_name
from lsf_core.face.gltf import GltfError, GltfMesh, read_gltf
from lsf_core.face.viseme_rig import arkit_from_visemes, viseme_name


class RigError(ValueError):
    """A rig file that cannot be used; the message names the file and the problem."""


@dataclass
class Rig:
    name: str
    vertices: np.ndarray            # (V, 3) float32 neutral mesh, metres
    faces: np.ndarray               # (F, 3) int32 triangles
    blendshape_names: list[str]     # canonical ARKit spellings (custom names kept)
    deltas: np.ndarray              # (K, V, 3) float32 per-blendshape vertex deltas
    identity: np.ndarray            # (D,) float32 identity descriptor (zeros(0) if unknown)
    regions: dict[str, np.ndarray] = field(default_factory=dict)  # vertex index arrays ("lips", ...)
    colors: np.ndarray | None = None  # (V, 3) float32 albedo in 0..1 for previews, or None
    notes: list[str] = field(default_factory=list)     # what loading found and did, for the user
    warnings: list[str] = field(default_factory=list)  # what may disappoint (few names matched, ...)

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, np.float32)
        self.faces = np.ascontiguousarray(self.faces, np.int32)
        self.blendshape_names = [canonical_name(str(n)) for n in self.blendshape_names]
        self.deltas = np.ascontiguousarray(self.deltas, np.float32)
        self.identity = np.asarray(self.identity, np.float32).reshape(-1)
        self.regions = {str(k): np.asarray(v, np.int64).reshape(-1) for k, v in self.regions.items()}
        if self.colors is not None:
            self.colors = np.asarray(self.colors, np.float32)
        self._check()
        self._solver: tuple[np.ndarray, np.ndarray] | None = None

    def _check(self) -> None:
        v, f, d = self.vertices, self.faces, self.deltas
        where = f"rig {self.name!r}"
        if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
            raise RigError(f"{where}: vertices must be (V, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3:
            raise RigError(f"{where}: faces must be (F, 3) triangles, got {f.shape}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise RigError(f"{where}: face indices out of range 0..{len(v) - 1}")
        if d.shape != (len(self.blendshape_names), len(v), 3):
            raise RigError(f"{where}: deltas must be (K={len(self.blendshape_names)}, V={len(v)}, 3), got {d.shape}")
        if not np.isfinite(v).all() or not np.isfinite(d).all():
            raise RigError(f"{where}: vertices or deltas contain NaN/inf")
        for k, idx in self.regions.items():
            if idx.size and (idx.min() < 0 or idx.max() >= len(v)):
                raise RigError(f"{where}: region {k!r} has vertex indices out of range")
        if self.colors is not None and self.colors.shape != v.shape:
            raise RigError(f"{where}: colors must be (V, 3), got {self.colors.shape}")

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    def arkit_names(self) -> list[str]:
        """This rig's shapes that are ARKit shapes and move something."""
        moving = np.abs(self.deltas).reshape(len(self.deltas), -1).max(1, initial=0) > 0 if len(self.deltas) else []
        return [n for n, m in zip(self.blendshape_names, moving) if n in ARKIT_INDEX and m]

    def offsets(self, weights: np.ndarray) -> np.ndarray:
        """Blendshape weights (..., K) -> vertex offsets (..., V, 3) float32."""
        w = np.asarray(weights, np.float32)
        k = len(self.blendshape_names)
        if w.shape[-1:] != (k,):
            raise ValueError(f"rig {self.name!r}: weights must end in K={k}, got shape {w.shape}")
        out = w.reshape(-1, k) @ self.deltas.reshape(k, -1)
        return out.reshape(*w.shape[:-1], len(self.vertices), 3).astype(np.float32)

    def weights_from_offsets(self, offsets: np.ndarray) -> np.ndarray:
        """Vertex offsets (..., V, 3) -> weights (..., K) by least squares bounded to [0, 1]."""
        from scipy.optimize import lsq_linear

        o = np.asarray(offsets, np.float64)
        if o.shape[-2:] != self.vertices.shape:
            raise ValueError(f"rig {self.name!r}: offsets must end in (V={len(self.vertices)}, 3), got {o.shape}")
        chol, basis = self._normal_equations()
        k = len(self.blendshape_names)
        rhs = o.reshape(-1, o.shape[-2] * 3) @ basis.T                   # (N, K) = D o
        y = np.linalg.solve(chol, rhs.T).T                               # L^-1 D o
        free = np.linalg.solve(chol.T, y.T).T                            # unconstrained solution
        out = np.empty_like(free)
        for i in range(len(free)):
            if free[i].min() >= 0.0 and free[i].max() <= 1.0:
                out[i] = free[i]
            else:  # min ||L^T w - L^-1 D o||^2 == min ||D^T w - o||^2 up to a constant
                out[i] = lsq_linear(chol.T, y[i], bounds=(0.0, 1.0), method="bvls").x
        return out.reshape(*o.shape[:-2], k).astype(np.float32)

    def _normal_equations(self) -> tuple[np.ndarray, np.ndarray]:
        if self._solver is None:
            k = len(self.blendshape_names)
            basis = self.deltas.reshape(k, -1).astype(np.float64)
            gram = basis @ basis.T
            gram += np.eye(k) * (1e-9 * max(np.trace(gram) / max(k, 1), 1e-12))  # zero shapes -> weight 0
            self._solver = (np.linalg.cholesky(gram), basis)
        return self._solver

    def weights_from_named(self, names: list[str], values: np.ndarray) -> np.ndarray:
        """Weights under other names (..., len(names)) -> this rig's weights (..., K).

        Names are matched after ARKit canonicalisation; unknown names are ignored, missing shapes get 0.
        """
        v = np.asarray(values, np.float32)
        if v.shape[-1:] != (len(names),):
            raise ValueError(f"rig {self.name!r}: values must end in len(names)={len(names)}, got {v.shape}")
        index = {n: i for i, n in enumerate(self.blendshape_names)}
        out = np.zeros((*v.shape[:-1], len(self.blendshape_names)), np.float32)
        for j, n in enumerate(names):
            i = index.get(canonical_name(str(n)))
            if i is not None:
                out[..., i] = v[..., j]
        return out


def save_rig(rig: Rig, path: str | Path) -> Path:
    """Write ``rig`` as our NPZ format (loadable with ``allow_pickle=False``)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "name": np.array(rig.name),
        "vertices": rig.vertices,
        "faces": rig.faces,
        "blendshape_names": np.array(rig.blendshape_names, dtype=str).reshape(-1),
        "deltas": rig.deltas,
        "identity": rig.identity,
        "notes": np.array(rig.notes, dtype=str).reshape(-1),
        "warnings": np.array(rig.warnings, dtype=str).reshape(-1),
    }
    arrays.update({f"region_{k}": v for k, v in rig.regions.items()})
    if rig.colors is not None:
        arrays["colors"] = rig.colors
    np.savez_compressed(path, **arrays)
    return path


def load_rig(path: str | Path) -> Rig:
    """Load a rig from ``.npz``, ``.obj``/``.ply`` (+ blendshape meshes), ``.glb``/``.gltf`` or a folder."""
    path = Path(path)
    if not path.exists():
        raise RigError(f"rig file {path}: does not exist")
    try:
        if path.is_dir():
            return _load_folder(path)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return _from_visemes(_load_npz(path))
        if suffix in (".obj", ".ply"):
            vertices, faces = _read_mesh(path)
            names, deltas = _read_shape_meshes(path.with_name(path.stem + "_blendshapes"), vertices, exclude=None)
            return _from_visemes(Rig(path.stem, vertices, faces, names, deltas, np.zeros(0, np.float32)))
        if suffix in (".glb", ".gltf"):
            return _load_gltf(path)
    except RigError:
        raise
    except GltfError as e:
        raise RigError(str(e)) from e
    except (OSError, ValueError, KeyError, IndexError, TypeError, struct.error, json.JSONDecodeError) as e:
        raise RigError(f"rig file {path}: cannot be read ({type(e).__name__}: {e})") from e
    raise RigError(f"rig file {path}: unknown format {path.suffix!r} (use .npz, .obj, .ply, .glb or .gltf)")


def _load_npz(path: Path) -> Rig:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, EOFError, pickle refusal, ...
        raise RigError(f"rig file {path}: not a readable NPZ ({type(e).__name__}: {e})") from e
    missing = [k for k in ("vertices", "faces") if k not in data]
    if missing:
        raise RigError(f"rig file {path}: missing arrays {missing}")
    v = data["vertices"]
    names = [str(n) for n in data.get("blendshape_names", np.zeros(0, str)).reshape(-1)]
    deltas = data.get("deltas", np.zeros((len(names), *np.shape(v)), np.float32))
    regions = {k[len("region_"):]: data[k] for k in data if k.startswith("region_")}
    try:
        return Rig(str(data.get("name", path.stem)), v, data["faces"], names, deltas,
                   data.get("identity", np.zeros(0, np.float32)), regions, data.get("colors"),
                   [str(n) for n in data.get("notes", [])], [str(n) for n in data.get("warnings", [])])
    except RigError as e:
        raise RigError(f"rig file {path}: {e}") from e


def _load_folder(folder: Path) -> Rig:
    neutral = next((folder / n for n in ("neutral.obj", "neutral.ply") if (folder / n).is_file()), None)
    if neutral is None:
        raise RigError(f"rig folder {folder}: needs neutral.obj or neutral.ply")
    vertices, faces = _read_mesh(neutral)
    names, deltas = _read_shape_meshes(folder, vertices, exclude=neutral)
    return _from_visemes(Rig(folder.name, vertices, faces, names, deltas, np.zeros(0, np.float32)))


def _read_shape_meshes(folder: Path, vertices: np.ndarray, exclude: Path | None) -> tuple[list[str], np.ndarray]:
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".obj", ".ply") and p != exclude) \
        if folder.is_dir() else []
    names, deltas = [], []
    for p in files:
        v, _ = _read_mesh(p)
        if v.shape != vertices.shape:
            raise RigError(f"blendshape file {p}: {len(v)} vertices, the neutral mesh has {len(vertices)}")
        names.append(p.stem)
        deltas.append(v - vertices)
    arr = np.stack(deltas) if deltas else np.zeros((0, *vertices.shape), np.float32)
    return names, arr


def _read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles in file order (OBJ by our own reader so vertex order is never changed)."""
    if path.suffix.lower() == ".obj":
        return _read_obj(path)
    import trimesh

    mesh = trimesh.load(str(path), process=False, force="mesh")
    if len(mesh.vertices) == 0:
        raise RigError(f"mesh file {path}: no vertices")
    return np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int32)


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    verts, faces = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                if parts[0] == "v":
                    verts.append([float(x) for x in parts[1:4]])
                elif parts[0] == "f":
                    idx = [int(p.split("/")[0]) for p in parts[1:]]
                    idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
                    faces.extend([idx[0], idx[j], idx[j + 1]] for j in range(1, len(idx) - 1))
            except ValueError as e:
                raise RigError(f"mesh file {path}: line {lineno} is malformed: {line.strip()!r}") from e
    if not verts:
        raise RigError(f"mesh file {path}: no vertices")
    v = np.asarray(verts, np.float32)
    if v.ndim != 2 or v.shape[1] != 3:
        raise RigError(f"mesh file {path}: vertex lines need 3 coordinates")
    f = np.asarray(faces, np.int32).reshape(-1, 3)
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise RigError(f"mesh file {path}: face indices out of range 1..{len(v)}")
    return v, f


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray, decimals: int = 6) -> Path:
    """Write a triangle mesh as OBJ (vertex order kept; coordinates with ``decimals`` decimals)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"v {x:.{decimals}f} {y:.{decimals}f} {z:.{decimals}f}" for x, y, z in np.asarray(vertices, np.float64)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces, np.int64)]
    path.write_text("\n".join(lines) + "\n")
    return path




# --- rigs from glTF scenes and viseme shapes ----------------------------------------------------------

def _from_visemes(rig: Rig) -> Rig:
    """A rig without ARKit shapes but with Oculus visemes -> the ARKit shapes its visemes can express."""
    if rig.arkit_names() or not any(viseme_name(n) for n in rig.blendshape_names):
        return rig
    visemes = [n for n in rig.blendshape_names if viseme_name(n)]
    names, deltas = arkit_from_visemes(rig.blendshape_names, rig.deltas)
    rig.notes.append(f"viseme-only rig: {len(visemes)} visemes ({', '.join(visemes)}) drive {len(names)} ARKit "
                     f"mouth shapes through the viseme mapping (lsf_core.face.viseme_rig)")
    rig.warnings.append("no ARKit shapes: only the mouth moves (visemes have no eyes, brows or cheeks)")
    return Rig(rig.name, rig.vertices, rig.faces, names, deltas, rig.identity, rig.regions, rig.colors,
               rig.notes, rig.warnings)


def _matches(m: GltfMesh) -> tuple[list[str], list[str]]:
    """ARKit and viseme names among a mesh's morph targets."""
    arkit = [canonical_name(n) for n in m.target_names if canonical_name(n) in ARKIT_INDEX]
    return list(dict.fromkeys(arkit)), [n for n in m.target_names if viseme_name(n)]


def _load_gltf(path: Path) -> Rig:
    meshes = read_gltf(path)
    found = [_matches(m) for m in meshes]
    best = max(range(len(meshes)), key=lambda i: (len(found[i][0]), len(found[i][1]), len(meshes[i].vertices)))
    face, (face_arkit, face_vis) = meshes[best], found[best]
    use = 0 if face_arkit else (1 if face_vis else None)   # animate by ARKit names, else by visemes
    animated = [i for i in range(len(meshes)) if use is not None and found[i][use]]
    lo, hi = face.vertices.min(0), face.vertices.max(0)
    pad = 0.25 * (hi - lo).max()
    carried, left_out = [], []
    for i, m in enumerate(meshes):
        if i in animated or i == best:
            continue
        touches = (m.vertices.min(0) <= hi + pad).all() and (m.vertices.max(0) >= lo - pad).all()
        (carried if touches or use is None else left_out).append(i)
    parts = sorted({best, *animated, *carried})
    names = list(dict.fromkeys(n for i in animated for n in (found[i][0] if use == 0 else meshes[i].target_names)
                               if use == 1 or canonical_name(n) in ARKIT_INDEX))
    index = {n: k for k, n in enumerate(names)}
    sizes = [len(meshes[i].vertices) for i in parts]
    deltas = np.zeros((len(names), sum(sizes), 3), np.float32)
    start = np.concatenate([[0], np.cumsum(sizes)])
    for j, i in enumerate(parts):
        if i not in animated:
            continue
        for k, n in enumerate(meshes[i].target_names):
            key = canonical_name(n) if use == 0 else n
            if key in index:
                deltas[index[key], start[j]:start[j + 1]] = meshes[i].deltas[k]
    rig = Rig(face.name, np.concatenate([meshes[i].vertices for i in parts]),
              np.concatenate([meshes[i].faces + start[j] for j, i in enumerate(parts)]), names, deltas,
              np.zeros(0, np.float32), colors=np.concatenate([meshes[i].colors for i in parts]))
    label = ", ".join
    if use is None:
        rig.notes.append(f"no ARKit or viseme morph targets in {len(meshes)} meshes: a plain mesh")
        return rig
    rig.notes.append(f"face mesh {face.name!r} ({len(face.vertices)} vertices); animated meshes: "
                     f"{label(repr(meshes[i].name) for i in animated)}")
    if carried:
        rig.notes.append(f"carried rigidly: {label(repr(meshes[i].name) for i in carried)}")
    if left_out:
        rig.notes.append(f"left out (away from the face): {label(repr(meshes[i].name) for i in left_out)}")
    if any(meshes[i].skinned for i in parts):
        rig.notes.append("skinned meshes are placed in their rest pose")
    if use == 0:
        arkit = [n for n in ARKIT_INDEX if n in index]
        rig.notes.append(f"ARKit names matched: {len(arkit)} of 52" + (f" ({label(arkit)})" if len(arkit) < 52 else ""))
        missing = [n for n in ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker") if n not in index]
        if len(arkit) < 20 or missing:
            rig.warnings.append(f"only {len(arkit)} of the 52 ARKit names matched" + (
                f"; no {label(missing)}: speech will barely move the mouth" if missing else ""))
    return _from_visemes(rig)
