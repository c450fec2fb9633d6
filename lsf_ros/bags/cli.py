"""``lsf-bag``: evaluate a face animation node with rosbag2 bags (no ros2 CLI needed).

  lsf-bag make CLIP... -o BAG      audio files (+ ground truth, phone labels) -> an evaluation bag
  lsf-bag replay BAG -o OUT_BAG    publish a bag's audio into the running graph, record the face topics
  lsf-bag eval OUT_BAG -o DIR      metrics JSON + Markdown report with plots and an MP4

Ground-truth NPZ and phone label formats: :mod:`lsf_core.evaluation.truth`.
"""
from __future__ import annotations

import argparse
import sys

from lsf_ros.audio_adapters import ADAPTERS, DEFAULT_AUDIO_TYPE
from lsf_ros.bags import io as B
from lsf_ros.bags.evaluate import evaluate
from lsf_ros.bags.make import make_bag
from lsf_ros.bags.replay import replay_bag


def build_parser() -> argparse.ArgumentParser:

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(
        prog="lsf-bag", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a face animation node with rosbag2 bags (no ros2 CLI needed): make a bag from audio "
                    "clips, replay it into the running graph while recording the face topics, evaluate the "
                    "recording.",
        epilog="Processes default to ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; set ROS_DOMAIN_ID to the animator's.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    m = sub.add_parser("make", help="audio clips (+ ground truth, phone labels) -> rosbag2 bag", formatter_class=fmt)
    m.add_argument("clips", nargs="+", help="audio files (wav, flac, ogg, mp3, ...)")
    m.add_argument("-o", "--out", required=True, help="output bag directory (must not exist)")
    m.add_argument("--truth", nargs="+", help="ground-truth NPZ per clip (format: lsf_core/evaluation/truth.py)")
    m.add_argument("--phones", nargs="+", help="phone label file per clip ('start end phone' lines, or JSON)")
    m.add_argument("--audio-type", default=DEFAULT_AUDIO_TYPE, choices=list(ADAPTERS), help="audio message type")
    m.add_argument("--topic", default="/audio", help="audio topic")
    m.add_argument("--info-topic", default="/audio_info", help="AudioInfo topic (ros-drivers audio_common types)")
    m.add_argument("--chunk", type=float, default=0.032, help="seconds of audio per message")
    m.add_argument("--sample-rate", type=int, default=16000, help="audio is resampled to this rate")
    m.add_argument("--storage", default="mcap", choices=list(B.STORAGES), help="rosbag2 storage plugin")
    m.add_argument("--gap", type=float, default=1.0, help="seconds without audio between clips")
    m.add_argument("--start", type=float, default=None, help="bag start time (s since epoch; default: now)")

    r = sub.add_parser("replay", help="publish a bag's audio into the graph, record the face topics",
                       formatter_class=fmt)
    r.add_argument("bag", help="input bag: a rosbag2 directory (lsf-bag make, ros2 bag record), a bare .mcap or "
                               ".db3 file, or a folder holding one")
    r.add_argument("-o", "--out", required=True, help="output bag directory (must not exist)")
    r.add_argument("--rate-factor", type=float, default=1.0,
                   help="playback speed (1 = real time; latency figures are only meaningful at 1)")
    r.add_argument("--tail", type=float, default=1.5, help="seconds to keep recording after the last audio")
    r.add_argument("--audio-topic", default=None, help="audio topic in the bag (default: the one audio topic)")
    r.add_argument("--publish-topic", default=None, help="publish the audio here (default: its bag topic)")
    r.add_argument("--info-topic", default="/audio_info", help="publish the bag's AudioInfo here")
    r.add_argument("--face-ns", default="/face", help="namespace of the face topics to record")
    r.add_argument("--record", nargs="*", default=["/diagnostics"], help="further topics to record")
    r.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the animator")
    r.add_argument("--keep-stamps", action="store_true",
                   help="publish stamped audio with its recorded stamps (default: shifted to now)")
    r.add_argument("--storage", default="mcap", choices=list(B.STORAGES), help="rosbag2 storage plugin")

    e = sub.add_parser("eval", help="output bag -> metrics JSON + report (plots, video)", formatter_class=fmt)
    e.add_argument("bag", help="bag recorded by lsf-bag replay (or any bag with audio and face topics: a rosbag2 "
                               "directory, a bare .mcap or .db3 file, or a folder holding one)")
    e.add_argument("-o", "--out", required=True, help="report directory")
    e.add_argument("--truth", default=None, help="ground truth: a bag from lsf-bag make, or an NPZ (one clip); "
                                                 "default: the replayed bag when it exists")
    e.add_argument("--audio", default=None, help="audio file of the (first) clip for the offline result")
    e.add_argument("--offline", default=None, help="offline result NPZ (lsf infer) of the first clip")
    e.add_argument("--no-offline", action="store_true", help="do not run the offline model for agreement")
    e.add_argument("--phones", default=None, help="phone labels of the first clip")
    e.add_argument("--model", default="realtime", help="model of the offline result (as the node ran)")
    e.add_argument("--neutral-mesh", default="", help="rig of the node (as the node ran); default avatar")
    e.add_argument("--lip-indices", default=None, help="lip-region vertex indices (.npy/.json/.txt)")
    e.add_argument("--upper-indices", default=None, help="upper-face vertex indices (.npy/.json/.txt)")
    e.add_argument("--face-ns", default="/face", help="namespace of the face topics")
    e.add_argument("--audio-topic", default=None, help="audio topic in the bag")
    e.add_argument("--sample-rate", type=int, default=16000, help="rate of audio messages that carry none")
    e.add_argument("--channels", type=int, default=1, help="channels of audio messages that carry none")
    e.add_argument("--no-video", action="store_true", help="skip the MP4")
    e.add_argument("--video-size", type=int, default=480, help="video width and height in pixels")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "make":
            s = make_bag(args.clips, args.out, args.truth, args.phones, args.audio_type, args.topic, args.info_topic,
                         args.chunk, args.sample_rate, args.storage, args.gap, args.start)
            print(f"wrote {s['bag']}: {len(s['clips'])} clips, {sum(c['chunks'] for c in s['clips'])} "
                  f"{s['audio_type']} messages on {s['topic']}")
        elif args.command == "replay":
            s = replay_bag(args.bag, args.out, args.rate_factor, args.tail, args.audio_topic, args.publish_topic,
                           args.info_topic, args.face_ns, tuple(args.record), args.wait, not args.keep_stamps,
                           args.storage)
            print(f"wrote {args.out}: published {s['published']} audio messages; received "
                  + ", ".join(f"{n} on {t}" for t, n in s["received"].items()))
        else:
            res = evaluate(args.bag, args.out, args.truth, args.audio, args.offline, not args.no_offline,
                           args.phones, args.model, args.neutral_mesh, args.lip_indices, args.upper_indices,
                           args.face_ns, args.audio_topic, args.sample_rate, args.channels, not args.no_video,
                           args.video_size)
            s = res["summary"]
            lat = s["latency"]
            print(f"wrote {args.out}/metrics.json and report.md: {s['frames']} frames "
                  f"({s['expected_frames']} expected) at {s['rate_hz']:.1f} Hz, dropped {s['dropped_frames']}, "
                  f"duplicated {s['duplicated_frames']}, latency p50 {lat.get('p50_ms', float('nan')):.0f} ms "
                  f"p95 {lat.get('p95_ms', float('nan')):.0f} ms")
    except (ValueError, FileExistsError, TimeoutError, OSError) as err:
        print(f"lsf-bag {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
