"""``lsf convert``: the authors' released checkpoints -> one ``paper`` .safetensors model file."""
from __future__ import annotations

import argparse

from lsf_core.config import ConfigError, load_config
from lsf_core.models.lsf_paper import LSFPaperConfig
from lsf_core.models.release import ConvertError, convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage1", help="stage-1 Lightning checkpoint (the VQ-VAE motion prior)")
    parser.add_argument("stage2", help="stage-2 Lightning checkpoint (encoders, identity MLP, HIFB predictor)")
    parser.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    parser.add_argument("--config", help="YAML LSFPaperConfig for sizes the checkpoints cannot tell (encoders, heads); "
                        "default: the released sizes")
    parser.add_argument("--scaler", nargs=2, metavar=("EXP_PKL", "JAW_PKL"),
                        help="the training's pickled sklearn MinMaxScalers for expression (50) and jaw (3), "
                        "e.g. datasets/scaler_exp.pkl datasets/scaler_jaw.pkl; default: the release's fixed "
                        "ranges [-3, 3] and [-0.1, 0.5]")


def run(args: argparse.Namespace) -> int:
    base = load_config(LSFPaperConfig, args.config) if args.config else None
    try:
        convert(args.stage1, args.stage2, args.output, base, tuple(args.scaler) if args.scaler else None)
    except (ConvertError, ConfigError) as err:
        print(f"lsf convert: {err}")
        return 1
    print(f"wrote {args.output}")
    return 0
