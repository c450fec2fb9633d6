"""``lsf bench``: latency, real-time factor, memory and concurrent streams of a model, as JSON."""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from lsf_core.evaluation.bench import bench_stream, soak
from lsf_core.evaluation.bench_offline import bench_offline
from lsf_core.evaluation.resources import load_or_build
from lsf_core.runtime.device import pick_device


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="realtime", help="model preset (realtime, paper) or a .safetensors file")
    p.add_argument("--stream", action="store_true", help="streaming benchmark (the live code path)")
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                   help="with --stream: also feed this much audio faster than real time and report RSS growth")
    p.add_argument("--seconds", type=float, default=20.0, help="audio fed in the streaming benchmark")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--max-streams", type=int, default=256,
                   help="with --stream: the most concurrent streams to try in the batched-throughput search")
    p.add_argument("--json", default=None, help="write the results here (JSON); the other mode's section "
                   "(offline or stream) already in the file is kept")


def run(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    result: dict = {"machine": {"cpu": platform.processor() or platform.machine(),
                                "threads": torch.get_num_threads(), "torch": torch.__version__,
                                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
    if args.stream:
        result["stream"] = bench_stream(args.preset, args.seconds, device, args.max_streams)
        if args.soak:
            result["soak"] = soak(args.preset, args.soak, device)
    else:
        model, weights = load_or_build(args.preset)
        result["offline"] = {"preset": args.preset, "weights": weights, **bench_offline(model, device=device)}
    print(json.dumps(result, indent=2))
    if args.json:
        path = Path(args.json)
        try:  # keep the sections of the other mode (offline / stream) already in the file
            kept = json.loads(path.read_text()) if path.is_file() else {}
        except json.JSONDecodeError:
            kept = {}
        kept = kept if isinstance(kept, dict) else {}
        path.write_text(json.dumps({**kept, **result}, indent=2) + "\n")
    return 0
