"""``lsf train-paper``: both training stages of the ``paper`` preset on 3DMEAD-layout data."""
from __future__ import annotations

import argparse
import os

import torch

from lsf_core.config import load_config
from lsf_core.data.mead import write_synthetic
from lsf_core.runtime.device import pick_device
from lsf_core.training.paper import STAGES, TrainPaperConfig, train


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with TrainPaperConfig fields; flags below override it")
    p.add_argument("--data", help="3DMEAD-layout root (param/*.npy, wav/*.wav); see lsf_core/mead.py")
    p.add_argument("--out", help="run directory: checkpoint.safetensors/.pt, history.json, model.safetensors")
    p.add_argument("--stages", nargs="+", choices=STAGES, help="stages to run, in order")
    p.add_argument("--prior-steps", type=int, help="stage-1 (VQ-VAE) steps")
    p.add_argument("--predictor-steps", type=int, help="stage-2 (predictor) steps")
    p.add_argument("--batch", type=int, help="clips per step and process")
    p.add_argument("--seed", type=int)
    p.add_argument("--flame-model", help="FLAME model file: validation reports vertex metrics")
    p.add_argument("--lip-region", help="lip vertex indices (.txt/.npy) for LVE, MEE, CE")
    p.add_argument("--upper-region", help="upper-face vertex indices (.txt/.npy) for FDD")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (with torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT has a checkpoint")
    p.add_argument("--make-synthetic", metavar="DIR",
                   help="only write a tiny synthetic dataset in the 3DMEAD layout to DIR (for demos) and exit")


def run(args: argparse.Namespace) -> int:
    if args.make_synthetic:
        print(f"wrote a synthetic 3DMEAD-layout dataset to {write_synthetic(args.make_synthetic)}")
        return 0

    cfg = load_config(TrainPaperConfig, args.config)
    for key in ("data", "out", "stages", "prior_steps", "predictor_steps", "batch", "seed", "flame_model",
                "lip_region", "upper_region"):
        if getattr(args, key, None) is not None:
            setattr(cfg, key, getattr(args, key))
    device = pick_device(args.device)
    if device.startswith("cuda") and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(device)
    print(f"wrote {train(cfg, resume=not args.no_resume, device=device)}")
    return 0
