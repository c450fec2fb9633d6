"""``lsf infer``: animate an audio file offline and write the frames as NPZ."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lsf_core.runtime.infer import infer_file, infer_identity, load_identity, load_inference_model
from lsf_core.runtime.liveliness import GROUPS, LivelinessConfig, liveliness_config


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
    live = p.add_argument_group("liveliness (blinks, gaze, head motion, brows, idle motion; on by default; "
                                "docs/liveliness.md)")
    live.add_argument("--no-liveliness", action="store_true", help="exactly the model's output: no layer at all")
    for group in GROUPS:
        live.add_argument(f"--no-{group}", action="store_true", help=f"switch off the {group} group")
    live.add_argument("--liveliness-seed", type=int, default=None, help="seed of the layer's random draws "
                      "(default 0): same audio + seed = same face")
    live.add_argument("--head-scale", type=float, default=None, help="amplitude of speech head motion (1 = read "
                      "speech as measured on GRID; 2-3 = lively conversation)")
    live.add_argument("--liveliness-config", default="", help="YAML of the layer's settings (LivelinessConfig: rates, "
                      "timings, limits); the flags above override it")


def liveliness_from_args(args: argparse.Namespace) -> LivelinessConfig:
    """The layer's configuration from ``--liveliness-config`` and the flags."""
    groups = {g: False for g in GROUPS if getattr(args, f"no_{g}")}
    return liveliness_config(args.liveliness_config, False if args.no_liveliness else None, args.liveliness_seed,
                             args.head_scale, **groups)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.audio).with_suffix(".npz")
    sampling = {"sample_temperature": args.sample_temperature, "seed": args.seed}
    if args.identity and (args.rate != 25.0 or args.neutral_mesh):
        raise SystemExit("--identity gives 25 fps FLAME output and takes no --rate or --neutral-mesh")
    from lsf_core.face.rig import RigError

    try:
        live = liveliness_from_args(args)
    except ValueError as err:   # a bad --liveliness-config or value: one line, usage error
        print(f"lsf infer: {err}", file=sys.stderr)
        return 2
    try:
        net = load_inference_model(args.model, **sampling)
        as_released = net.output_kind == "flame" and args.rate == 25.0 and not args.neutral_mesh
        if args.identity or as_released:
            identity = load_identity(args.identity, net.identity_dim) if args.identity else None
            arrays = infer_identity(args.audio, net, identity, args.flame_model)
        else:
            arrays = infer_file(args.audio, net, args.neutral_mesh, args.rate, args.flame_model, liveliness=live)
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
