"""``lsf avatar``: build the default avatar (and other identities): rig NPZ, OBJ and preview renders."""
from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from tqdm import tqdm

from lsf_core.face.avatar import EXPRESSIONS, make_avatar
from lsf_core.face.render import render_mesh
from lsf_core.face.rig import save_rig, write_obj


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", default="avatar", help="output folder")
    p.add_argument("--identities", type=int, nargs="*", default=[0, 1, 2, 3],
                   help="identities to build (0 = the default face, n = seeded random identity)")
    p.add_argument("--expressions", nargs="*", default=list(EXPRESSIONS), choices=list(EXPRESSIONS),
                   help="expressions rendered for the first identity")
    p.add_argument("--size", type=int, default=480, help="render size in pixels")
    p.add_argument("--no-render", action="store_true", help="only write the rig NPZ and the OBJ")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for k, ident in enumerate(args.identities):
        rig = make_avatar(ident)
        tag = f"id{ident}"
        npz = save_rig(rig, out / f"avatar_{tag}.npz")
        obj = write_obj(out / f"avatar_{tag}.obj", rig.vertices, rig.faces)
        print(f"{tag}: {npz}, {obj} ({rig.num_vertices} vertices, {len(rig.faces)} triangles)")
        exprs = args.expressions if k == 0 else ["neutral"]
        jobs += [(rig, tag, e, view) for e in exprs for view in ("front", "three_quarter")]
    if args.no_render:
        return 0
    for rig, tag, expr, view in tqdm(jobs, desc="render", unit="image"):
        names = list(EXPRESSIONS[expr])
        w = rig.weights_from_named(names, np.array([EXPRESSIONS[expr][n] for n in names], np.float32))
        img = render_mesh(rig.vertices + rig.offsets(w), rig.faces, args.size, view, rig.colors)
        iio.imwrite(out / f"{tag}_{expr}_{view}.png", img)
    print(f"wrote {len(jobs)} renders to {out}")
    return 0
