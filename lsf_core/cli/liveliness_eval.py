"""``lsf liveliness-eval``: our upper face, blinks and head motion vs real tracked talkers -> JSON (+ video)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lsf_core.evaluation.liveliness_eval import TrackError, evaluate, side_by_side
from lsf_core.runtime.liveliness import liveliness_config
from lsf_core.runtime.streaming import StreamConfig, StreamingAnimator


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid", default="data/grid_s1", help="folder with track/ (MediaPipe NPZ per clip), video/ "
                   "(GRID .mpg) and align/ (.align word timings)")
    p.add_argument("--model", default="realtime", help="preset with shipped weights or a .safetensors model")
    p.add_argument("--liveliness-config", default="", help="YAML of the layer's settings (default: its defaults)")
    p.add_argument("--max-clips", type=int, default=0, help="use the first N tracked clips (0 = all)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--video", default=None, help="also write a side-by-side MP4 (real | real weights on the avatar | "
                   "ours) of the clip given by --video-clip")
    p.add_argument("--video-clip", default=None, help="clip name for --video (default: the first held-out clip)")
    p.add_argument("--strip", default=None, help="PNG strip of five moments of the side-by-side video")


def run(args: argparse.Namespace) -> int:
    grid = Path(args.grid)
    dirs = {k: grid / k for k in ("track", "video", "align")}
    missing = [str(d) for d in dirs.values() if not d.is_dir()]
    if missing:
        print(f"lsf liveliness-eval: missing folder(s) {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        live = liveliness_config(args.liveliness_config)
    except ValueError as err:
        print(f"lsf liveliness-eval: {err}", file=sys.stderr)
        return 2
    animator = StreamingAnimator(StreamConfig(model=args.model, rate=25.0, liveliness=live))
    try:
        result = evaluate(animator, dirs["track"], dirs["video"], dirs["align"], args.max_clips)
        if args.video:
            clip = args.video_clip or result["per_clip"]["heldout"]["real"][0]["clip"]
            side_by_side(animator, clip, dirs["track"], dirs["video"], args.video, args.strip)
            result["video"] = {"clip": clip, "path": args.video, "strip": args.strip}
    except (TrackError, OSError) as err:
        print(f"lsf liveliness-eval: {err}", file=sys.stderr)
        return 1
    summary = {k: v for k, v in result.items() if k != "per_clip"}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1
