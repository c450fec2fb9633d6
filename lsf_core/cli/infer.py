"""``lsf infer``: animate an audio file offline and write the frames as NPZ."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lsf_core.runtime.infer import infer_file, infer_identity, load_identity, load_inference_model


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("audio", help="audio file (wav, flac, ogg, mp3, ...; any rate and channel count)")
    p.add_argument("-o", "--out", default=None, help="output NPZ (default: AUDIO with .npz)")
    p.add_argument("--model", default="realtime", help="preset with shipped weights, or a .safetensors model")
    p.add_argument("--neutral-mesh", default="", help="rig file (.npz/.obj/.ply/.glb); default: our avatar")
    p.add_argument("--flame-model", default="", help="FLAME model file, for models that output FLAME")
    p.add_argument("--rate", type=float, default=25.0, help="output frames per second (25..120)")
    p.add_argument("--identity", default="", help="FLAME shape (.npy, 300 values) to animate with a FLAME-output "
                   "model (paper); default: the mean identity. FLAME-output models run as released: whole clip at "
                   "25 fps, the model's own frames, no voice gate; vertices need --flame-model. With --rate other "
                   "than 25 or --neutral-mesh they run through the streaming engine (the node's code) instead")
    p.add_argument("--sample-temperature", type=float, default=None, metavar="T",
                   help="paper model: sample its codes at temperature T (the release's generation samples at 0.2) "
                   "instead of taking the nearest code (our default: deterministic)")
    p.add_argument("--seed", type=int, default=None,
                   help="with --sample-temperature: seed of each clip's draws (same seed, same output); "
                   "default: the model file's (0)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.audio).with_suffix(".npz")
    sampling = {"sample_temperature": args.sample_temperature, "seed": args.seed}
    if args.identity and (args.rate != 25.0 or args.neutral_mesh):
        raise SystemExit("--identity gives 25 fps FLAME output and takes no --rate or --neutral-mesh")
    from lsf_core.face.rig import RigError

    try:
        net = load_inference_model(args.model, **sampling)
        as_released = net.output_kind == "flame" and args.rate == 25.0 and not args.neutral_mesh
        if args.identity or as_released:
            identity = load_identity(args.identity, net.identity_dim) if args.identity else None
            arrays = infer_identity(args.audio, net, identity, args.flame_model)
        else:
            arrays = infer_file(args.audio, net, args.neutral_mesh, args.rate, args.flame_model)
    except RigError as err:   # a face that cannot be animated: one line, usage error
        print(f"lsf infer: error: --neutral-mesh: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad file, model, identity or option (AudioError, ConfigError, ModelFileError)
        print(f"lsf infer: error: {err}", file=sys.stderr)
        return 1
    np.savez_compressed(out, **arrays)
    t = arrays["blendshapes"].shape[0]
    print(f"wrote {out}: {t} frames at {args.rate:g} fps, {arrays['vertex_offsets'].shape[1]} vertices, "
          f"{len(arrays['blendshape_names'])} blendshapes")
    return 0
