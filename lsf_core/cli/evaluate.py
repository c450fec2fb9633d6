"""``lsf evaluate``: judge a model on held-out real human speech (jaw, lip closure, silence)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lsf_core.evaluation.heldout import evaluate, heldout_clips
from lsf_core.runtime.streaming import StreamConfig, StreamingAnimator


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="realtime", help="preset with shipped weights or a .safetensors model")
    p.add_argument("--max-prompts", type=int, default=0, help="evaluate on this many held-out prompts (0 = all)")
    p.add_argument("--json", default=None, help="write the results here")


def run(args: argparse.Namespace) -> int:
    animator = StreamingAnimator(StreamConfig(model=args.model, rate=25.0))
    result = evaluate(animator, heldout_clips(args.max_prompts))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if result["passed"] else 1
