"""``lsf-ros``: the ROS side's command line: ``animate`` (the graph in one process), ``demo``, ``bench-latency``.

``lsf-ros animate audio_source:=file audio_file:=speech.wav rate:=30 --record out.npz`` runs the graph
of ``animate.launch.py`` without the launch package; ``lsf-ros demo`` is what ``make demo`` runs;
``lsf-ros bench-latency`` measures chunk-published -> frame-received latency.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lsf_ros import bench_latency, demo
from lsf_ros.graph import ARGUMENTS, parse_assignments
from lsf_ros.runner import run_graph


def _animate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="lsf-ros animate",
        description="Run the animate graph (same arguments and config/animate.yaml as animate.launch.py) in one "
                    "process. Arguments: " + "; ".join(f"{k}:= {h}" for k, (_, h) in ARGUMENTS.items()),
        epilog="example: lsf-ros animate audio_source:=file audio_file:=speech.wav rate:=30 --record out.npz")
    p.add_argument("assignments", nargs="*", metavar="name:=value", help="launch arguments")
    p.add_argument("--record", type=Path, default=None, help="write the received frames to this NPZ")
    p.add_argument("--preview", type=Path, default=None, help="render the received frames to this MP4")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    a = p.parse_args(argv)
    try:
        args = parse_assignments(a.assignments)
        summary = run_graph(args, a.duration, a.record, a.preview)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"lsf-ros animate: {err}", file=sys.stderr)
        return 1
    st = summary["stats"]
    print(f"  {summary['published_frames']} frames published; RTF {st['rtf']:.3f}, "
          f"dropped chunks {st['dropped_chunks']}, bad messages {summary['bad_messages']}")
    return 0


COMMANDS = {"demo": "animate the bundled clip with the default model and avatar through the ROS graph",
            "animate": "run the animate graph in one process (no launch package needed)",
            "bench-latency": "measure end-to-end latency, audio chunk published -> face frame received"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: lsf-ros COMMAND [args]\n\ncommands:")
        for name, text in COMMANDS.items():
            print(f"  {name:14s} {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "animate":
        return _animate(argv[1:])
    if argv[0] == "demo":
        return demo.main(argv[1:])
    return bench_latency.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
