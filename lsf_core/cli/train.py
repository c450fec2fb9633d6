"""``lsf train``: train the ``realtime`` preset on a corpus made by ``lsf data make``."""
from __future__ import annotations

import argparse
import shutil

from lsf_core.config import load_config
from lsf_core.models.registry import WEIGHTS_DIR
from lsf_core.training.realtime import TrainConfig, train


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with TrainConfig fields; flags below override it")
    p.add_argument("--data", help="corpus directory made by `lsf data make`")
    p.add_argument("--out", help="run directory: checkpoint.pt, history.json, model.safetensors")
    p.add_argument("--steps", type=int, help="optimisation steps")
    p.add_argument("--batch", type=int, help="clips per step")
    p.add_argument("--seed", type=int)
    p.add_argument("--init", help="fine-tune: start from this model file (.safetensors) instead of fresh weights")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT has a checkpoint")
    p.add_argument("--install", action="store_true",
                   help="copy the trained model to lsf_core/weights/<preset>.safetensors (the shipped default)")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(TrainConfig, args.config)
    for key in ("data", "out", "steps", "batch", "seed", "init"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    path = train(cfg, resume=not args.no_resume)
    if args.install:
        dest = WEIGHTS_DIR / f"{cfg.preset}.safetensors"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        print(f"installed {dest}")
    return 0
