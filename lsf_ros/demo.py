"""``lsf-ros demo``: the main job on the embedded default, as ``make demo`` runs it.

Runs the ROS 2 animator graph (file source -> animator -> recorder, one process, loopback only, its own
ROS domain) on the bundled clip with the shipped ``realtime`` model and the default avatar, and writes
what the graph published: ``frames.npz`` (the ``lsf infer`` layout), a rendered ``preview.mp4`` with
the audio, and ``curves.png`` (waveform with the key blendshape curves). Where rclpy is not importable
it says so and runs the same model offline instead.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

import numpy as np

from lsf_core import DEMO_CLIP
from lsf_core.runtime.infer import infer_file
from lsf_ros.domain import default_ros_env
from lsf_ros.runner import run_graph


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", default="demo_out", help="output folder")
    p.add_argument("--audio", default=str(DEMO_CLIP), help="audio file to animate (default: the bundled clip)")
    p.add_argument("--model", default="realtime", help="model preset or .safetensors file")
    p.add_argument("--rate", type=float, default=30.0, help="output frames per second")
    p.add_argument("--offline", action="store_true", help="skip ROS: animate the file offline")
    p.add_argument("--no-video", action="store_true", help="do not render preview.mp4")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    npz = out / "frames.npz"
    t0 = time.time()
    via = "offline"
    if not args.offline:
        if importlib.util.find_spec("rclpy") is None:
            print("rclpy is not importable: animating offline instead (scripts/setup.sh installs ROS 2 wheels)")
        else:
            default_ros_env()
            # a file, not a live source: every second of it is animated even when a loaded machine's animator
            # falls behind (the live default, max_queue 2 s, drops the oldest audio to stay real time) and no
            # message is lost in transport (best effort, the live default, loses some when the CPU is starved)
            summary = run_graph({"audio_source": "file", "audio_file": str(args.audio), "model": args.model,
                                 "rate": str(args.rate)}, duration_limit=120.0, record_npz=npz,
                                params={"animator": {"max_queue": 30.0, "audio_reliability": "reliable"}})
            loss = summary["losses"]
            via = (f"ROS 2 graph (domain {os.environ['ROS_DOMAIN_ID']}, {summary['published_frames']} published, "
                   f"{summary['frames']} received; audio dropped {loss['dropped_s']:.2f} s, lost in transport "
                   f"{loss['lost_s']:.2f} s; {summary['stats']['clock_resets'] + loss['restarts']} stream restarts)")
    if via == "offline":
        np.savez_compressed(npz, **infer_file(args.audio, args.model, rate=args.rate))
    data = dict(np.load(npz, allow_pickle=False))
    print(f"animated {args.audio} via {via} in {time.time() - t0:.1f} s")
    print(f"  frames:  {npz} ({data['blendshapes'].shape[0]} frames, {data['vertex_offsets'].shape[1]} vertices)")
    from lsf_core.audio import load_audio
    from lsf_core.evaluation.report import Curves, plot_clip

    times = data["times"] - data["times"][0]
    curves = Curves("lsf_ros", times, [str(n) for n in data["blendshape_names"]], data["blendshapes"])
    png = plot_clip(out / "curves.png", load_audio(args.audio), 16000, [curves], title=Path(args.audio).name)
    print(f"  curves:  {png}")
    if not args.no_video:
        from lsf_core.face.render import render_npz

        mp4 = render_npz(npz, out / "preview.mp4", audio_path=args.audio)
        print(f"  video:   {mp4}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lsf-ros demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))
