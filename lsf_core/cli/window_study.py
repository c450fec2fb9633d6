"""``lsf window-study``: sliding-window vs whole-clip output of a clip-based model -> JSON + figure."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lsf_core import DEMO_CLIP
from lsf_core.audio import MODEL_RATE, load_audio
from lsf_core.evaluation.resources import load_or_build
from lsf_core.evaluation.window_study import WindowSetting, plot, window_study


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="paper", help="clip-based preset or .safetensors model file")
    p.add_argument("--audio", nargs="*", default=None, help="audio files (default: the packaged demo clip)")
    p.add_argument("--settings", default="1:0.08,2:0.08,2:0.24,4:0.24,4:0.48",
                   help="comma-separated WINDOW:LOOKAHEAD pairs in seconds")
    p.add_argument("--hop", type=float, default=0.2, help="s between window evaluations")
    p.add_argument("--max-seconds", type=float, default=10.0, help="use at most this much of each clip")
    p.add_argument("--flame-model", default="", help="FLAME model file: compare vertices instead of parameters")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--plot", default=None, help="write a PNG figure here")


def run(args: argparse.Namespace) -> int:
    settings = [WindowSetting.parse(s) for s in args.settings.split(",") if s.strip()]
    paths = args.audio or [str(DEMO_CLIP)]
    clips = [load_audio(p, MODEL_RATE)[: int(args.max_seconds * MODEL_RATE)] for p in paths]
    model, weights = load_or_build(args.model)
    if hasattr(model, "forward_stream"):
        print(f"note: {args.model} streams natively; its sliding-window path is not used live")
    rows = window_study(model.eval(), clips, settings, hop=args.hop, flame_model=args.flame_model,
                        device=args.device)
    result = {"model": args.model, "weights": weights, "audio": paths, "rows": rows}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    if args.plot:
        plot(rows, args.plot, f"{args.model} ({weights}): sliding window vs whole clip")
    return 0
