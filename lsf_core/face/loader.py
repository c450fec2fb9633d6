"""The face a user names (``neutral_mesh``), ready to animate, or one clear error at start-up.

:func:`open_rig` loads the file (:func:`lsf_core.face.rig.load_rig`); a mesh without usable shapes is rigged
automatically (:mod:`lsf_core.face.autorig`), once: the result is cached under ``$LSF_CACHE`` (default
``~/.cache/lsf_ros/rigs``), keyed by the file's bytes and its landmark file. A rig that has shapes but no
identity gets its identity fitted from its neutral mesh (the realtime model's identity input; also cached).
Landmarks picked by hand are read from ``--landmarks FILE`` or, beside the mesh, ``<mesh>.landmarks.yaml``.
:func:`check_animatable` rejects a rig whose shapes the model cannot drive.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lsf_core.face.landmarks import FaceFrame, LandmarkError, read_landmark_file
from lsf_core.face.rig import Rig, RigError, load_rig, save_rig

CACHE_VERSION = "autorig-1"   # bump when the automatic rig changes, so stale cached rigs are not reused


def cache_dir() -> Path:
    return Path(os.environ.get("LSF_CACHE") or Path.home() / ".cache" / "lsf_ros") / "rigs"


def landmark_file(mesh: Path, given: str | Path | None = None) -> Path | None:
    if given:
        return Path(given)
    side = mesh.with_name(mesh.name + ".landmarks.yaml")
    return side if side.is_file() else None


def _key(path: Path, marks: Path | None) -> str:
    h = hashlib.sha256(CACHE_VERSION.encode())
    for p in (path, marks):
        if p is not None:
            h.update(p.read_bytes() if p.is_file() else str(sorted(p.rglob("*"))).encode())
    return h.hexdigest()[:20]


def open_rig(path: str | Path, landmarks: str | Path | None = None, use_cache: bool = True,
             progress: Callable[[str], None] | None = None) -> Rig:
    """The rig of a face file: loaded, rigged automatically when it has no shapes, its identity fitted."""
    path = Path(path)
    rig = load_rig(path)
    marks = landmark_file(path, landmarks)
    if marks is not None and not marks.is_file():
        raise RigError(f"landmark file {marks}: does not exist")
    cached = cache_dir() / f"{path.stem}-{_key(path, marks)}.npz"
    if use_cache and cached.is_file():
        try:
            done = load_rig(cached)
        except RigError:
            done = None   # a damaged cache entry is rebuilt
        if done is not None and done.num_vertices == rig.num_vertices:
            done.notes.append(f"from the cache {cached}")
            return done
    try:
        picked = read_landmark_file(marks, rig.num_vertices) if marks else None
    except LandmarkError as err:
        raise RigError(str(err)) from err
    if not rig.arkit_names():
        rig = _rig_plain(path, rig, picked, marks, progress)
    elif rig.identity.size == 0:
        _fit_identity(rig, picked)
    if use_cache:
        try:
            save_rig(rig, cached)
        except OSError as err:
            rig.warnings.append(f"could not cache the rig in {cached} ({err})")
    return rig


def _rig_plain(path: Path, rig: Rig, picked, marks: Path | None, progress) -> Rig:
    from lsf_core.face.autorig import autorig

    try:
        done, _ = autorig(rig.vertices, rig.faces, rig.name, picked, progress)
    except LandmarkError as err:
        hint = f"fix the landmarks in {marks}" if marks else (
            f"pick a few vertices in {path.with_name(path.name + '.landmarks.yaml')} "
            f"(nose_tip: INDEX, eye_left: ..., eye_right: ..., mouth_left: ..., mouth_right: ..., chin: ...)")
        raise RigError(f"rig file {path}: has no ARKit or viseme blendshapes and could not be rigged automatically "
                       f"({err}); {hint}, or give a rigged file") from err
    done.notes = [*rig.notes, *done.notes]
    done.warnings = [*rig.warnings, *done.warnings]
    return done


def locate(rig: Rig, picked: dict[str, int] | None = None) -> FaceFrame:
    """Where the face of a rig's neutral mesh is (mesh -> avatar frame); :class:`LandmarkError` if not found."""
    from lsf_core.face.avatar import default_rig, part_slices
    from lsf_core.face.landmarks import find_frame, template_landmarks

    base = default_rig()
    marks = template_landmarks(base.vertices, part_slices()["head"])
    return find_frame(rig.vertices, rig.faces, base.vertices, base.faces, marks, picked)


def _fit_identity(rig: Rig, picked) -> None:
    """The avatar identity of a rigged mesh's neutral face (zeros, with a warning, when no face is found)."""
    from lsf_core.face.avatar import default_rig, part_slices
    from lsf_core.face.register import VISIBLE, fit_identity

    base, parts = default_rig(), part_slices()
    visible = np.concatenate([np.arange(parts[p].start, parts[p].stop) for p in VISIBLE])
    try:
        frame = locate(rig, picked)
        rig.identity, frame = fit_identity(rig.vertices, rig.faces, frame, base.faces, visible)
        rig.notes.append(f"identity fitted from the neutral mesh: {np.round(rig.identity, 2).tolist()}; "
                         f"{frame.describe()}")
    except (LandmarkError, np.linalg.LinAlgError, ValueError) as err:
        rig.identity = np.zeros(0, np.float32)
        rig.warnings.append(f"no identity could be fitted from the neutral mesh ({err}): "
                            f"animating the mean face's style")


def check_animatable(rig: Rig, names: list[str], where: str) -> None:
    """A rig none of whose shapes the model drives cannot be animated: say so now, not at every step."""
    if not set(rig.blendshape_names) & set(names) or not np.any(rig.deltas):
        shown = ", ".join(rig.blendshape_names[:6]) + ("..." if len(rig.blendshape_names) > 6 else "")
        raise RigError(f"{where}: none of its {len(rig.blendshape_names)} shapes ({shown or 'none'}) is one the "
                       f"model drives (ARKit names such as jawOpen, or Oculus visemes): nothing would move")
