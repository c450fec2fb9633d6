"""``lsf render``: an animation NPZ (with optional audio) -> MP4 or PNG frames."""
from __future__ import annotations

import argparse
from pathlib import Path

from lsf_core.face.render import VIEWS, render_npz


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("npz", help="animation NPZ (fps, times, blendshapes, vertex_offsets, faces, optional neutral)")
    p.add_argument("-o", "--out", default="", help="output .mp4, or a folder for PNG frames (default: NPZ name .mp4)")
    p.add_argument("--audio", default=None, help="audio file to mux into the MP4")
    p.add_argument("--size", type=int, default=480, help="image width and height in pixels")
    p.add_argument("--view", default="front", choices=sorted(VIEWS), help="camera view")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.npz).with_suffix(".mp4")
    path = render_npz(args.npz, out, args.audio, args.size, args.view)
    print(f"wrote {path}")
    return 0
