"""``lsf data``: make the training corpus (speech made and aligned here, with ARKit targets)."""
from __future__ import annotations

import argparse
from pathlib import Path

from lsf_core.config import load_config
from lsf_core.data.dataset import DataConfig, make_dataset, quick_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    make = sub.add_parser("make", help="make the corpus (speech, phone timings, ARKit targets) in OUT",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    make.add_argument("-o", "--out", type=Path, default=Path("data/corpus"), help="output directory")
    make.add_argument("--config", type=Path, help="YAML recipe (fields of DataConfig); flags override it")
    make.add_argument("--quick", action="store_true", help="a few minutes of audio (tests, smoke runs)")
    make.add_argument("--seed", type=int, help="random seed (overrides the recipe's)")
    make.add_argument("--hours", type=float,
                      help="hours of synthetic speech (overrides the recipe's; default recipe 1.9)")
    make.add_argument("--workers", type=int, help="parallel processes (overrides the recipe's; default recipe 2)")
    make.add_argument("--no-asterisk", action="store_true", help="leave out the Asterisk real-speech prompts")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(DataConfig, args.config) if args.config else (quick_config() if args.quick else DataConfig())
    if args.quick and args.config:
        cfg.synthetic_hours, cfg.asterisk_max_prompts = 0.05, 24
    if args.seed is not None:
        cfg.seed = args.seed
    if args.hours is not None:
        cfg.synthetic_hours = args.hours
    if args.workers is not None:
        cfg.workers = args.workers
    if args.no_asterisk:
        cfg.asterisk = False
    m = make_dataset(cfg, args.out)
    total = sum(m["hours"].values())
    print(f"{args.out}: {sum(m['counts'].values())} clips, {total:.2f} h "
          f"(train {m['hours']['train']:.2f} h / val {m['hours']['val']:.2f} h / test {m['hours']['test']:.2f} h), "
          f"{m['failed']} failed, phone-level alignment {100 * m['phone_alignment_rate']:.0f}%, "
          f"{m['make_seconds']:.0f} s")
    return 0
