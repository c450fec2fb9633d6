"""``lsf rig``: make any face mesh animatable -> our rig NPZ, with a before/after render.

``lsf rig head.obj -o rig.npz`` rigs a plain neutral mesh with the 52 ARKit shapes (the default avatar fitted to
it; see :mod:`lsf_core.face.autorig`); for a rigged file (glTF with morph targets, OBJ + shape folder) it says
which meshes and ARKit names it found and fits the identity. ``lsf rig --evaluate`` measures the automatic
rig on our avatar's other identities exported as plain meshes (JSON).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lsf_core.face.rig import RigError

SHOWN = {"jaw open": {"jawOpen": 0.7}, "smile": {"mouthSmileLeft": 0.9, "mouthSmileRight": 0.9},
         "oo": {"mouthFunnel": 0.6, "mouthPucker": 0.6, "jawOpen": 0.2},
         "blink, brows up": {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0, "browInnerUp": 0.9}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mesh", nargs="?", help="face mesh: .obj/.ply (plain or with a <stem>_blendshapes folder), "
                   ".glb/.gltf, .npz or a folder")
    p.add_argument("-o", "--out", default=None, help="output rig NPZ (default: MESH with .rig.npz)")
    p.add_argument("--landmarks", default=None, help="YAML of picked vertex indices (nose_tip, eye_left, eye_right, "
                   "mouth_left, mouth_right, mouth_centre, chin; 0-based, the face's own left), for meshes whose "
                   "face is not found automatically; default: MESH.landmarks.yaml when it exists")
    p.add_argument("--render", default=None, help="before/after PNG (default: OUT with .png); 'none' = no render")
    p.add_argument("--no-cache", action="store_true", help="rig again even if the cache has this mesh")
    p.add_argument("--evaluate", action="store_true", help="measure the automatic rig on our avatar's identities "
                   "exported as plain OBJs (no shapes) instead of rigging MESH")
    p.add_argument("--identities", type=int, nargs="*", default=[1, 2, 3, 4, 5, 6], help="with --evaluate")
    p.add_argument("--json", default=None, help="with --evaluate: write the figures here")


def run(args: argparse.Namespace) -> int:
    if args.evaluate:
        from lsf_core.evaluation.autorig import evaluate_autorig

        report = evaluate_autorig(args.identities, args.json)
        print(report["summary_text"])
        return 0
    if not args.mesh:
        print("lsf rig: error: give a MESH (or --evaluate)", file=sys.stderr)
        return 2
    from lsf_core.face.loader import open_rig
    from lsf_core.face.rig import save_rig

    mesh = Path(args.mesh)
    out = Path(args.out) if args.out else mesh.with_name(mesh.stem + ".rig.npz")
    try:
        rig = open_rig(mesh, args.landmarks, use_cache=not args.no_cache, progress=lambda m: print(f"  {m} ..."))
    except RigError as err:
        print(f"lsf rig: error: {err}", file=sys.stderr)
        return 2
    for note in rig.notes:
        print(f"  {note}")
    for warning in rig.warnings:
        print(f"  warning: {warning}")
    save_rig(rig, out)
    moving = rig.arkit_names()
    print(f"wrote {out}: {rig.num_vertices} vertices, {len(moving)} ARKit shapes that move, identity "
          f"{np.round(rig.identity, 2).tolist() if rig.identity.size else 'none'}")
    if args.render != "none":
        png = Path(args.render) if args.render else out.with_suffix("").with_suffix(".png")
        print(f"wrote {render_before_after(rig, png)}")
    return 0


def render_before_after(rig, png: Path, size: int = 360) -> Path:
    """The neutral mesh as given (grey) beside the rig showing a few expressions, all seen from the front."""
    import imageio.v3 as iio

    from lsf_core.face.landmarks import LandmarkError
    from lsf_core.face.loader import locate
    from lsf_core.face.render import frame_bounds, render_mesh

    try:
        place = locate(rig).to_avatar
    except LandmarkError:   # face not found: render in the file's own axes
        def place(x):
            return np.asarray(x, np.float64)
    poses = [rig.vertices + rig.offsets(rig.weights_from_named(list(w), np.array(list(w.values()), np.float32)))
             for w in SHOWN.values()]
    bounds = frame_bounds(place(rig.vertices))
    images = [render_mesh(place(rig.vertices), rig.faces, size, "front", None, bounds)]
    images += [render_mesh(place(v), rig.faces, size, "front", rig.colors, bounds) for v in poses]
    png.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(png, np.concatenate(images, 1))
    return png
