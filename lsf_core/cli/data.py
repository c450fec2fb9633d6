"""``lsf data``: make the training corpus (speech made and aligned here, with ARKit targets); bring in real motion
(``track``: talking-face video -> ARKit weights; ``import-rig``: rig-channel arrays and Live Link Face CSV takes)."""
from __future__ import annotations

import argparse
from pathlib import Path

from lsf_core.config import load_config
from lsf_core.data.dataset import DataConfig, make_dataset, quick_config
from lsf_core.data.track import TRACK_FIELDS


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
    track = sub.add_parser("track", help="talking-face videos (with sound) -> one NPZ each: 16 kHz audio, ARKit-52 "
                           "weights, mask and head pose at the model rate (MediaPipe Face Landmarker)",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="fields of each NPZ (np.load(..., allow_pickle=False); docs/real_motion.md):\n"
                           + "\n".join(f"  {k}: {v}" for k, v in TRACK_FIELDS.items()))
    track.add_argument("videos", nargs="+", type=Path, help="video files (any ffmpeg reads), or folders of them")
    track.add_argument("-o", "--out", type=Path, required=True, help="output directory (NPZ per clip + "
                       "track_report.json)")
    track.add_argument("--speaker", default="", help="one speaker id for all videos (default: each video's folder "
                       "name); the calibration is fitted per speaker")
    track.add_argument("--config", type=Path, help="YAML of TrackConfig fields (thresholds, calibration, "
                       "target_ranges)")
    track.add_argument("--provenance", default="", help="where the videos come from (repository @ commit, path), "
                       "stored in each NPZ")
    track.add_argument("--licence", default="", help="the videos' licence, stored in each NPZ")
    track.add_argument("--limit", type=int, default=0, help="track only the first N videos (sorted; 0 = all)")
    offset = sub.add_parser("av-offset", help="audio-video offset of tracked clips from /p b m/ lip closures "
                            "(check a source before training on it)",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    offset.add_argument("tracks", type=Path, help="folder of clip NPZ from `lsf data track`")
    offset.add_argument("--text", type=Path, required=True, help="folder of transcripts: <clip>.align (GRID word "
                        "timings) or <clip>.txt")
    offset.add_argument("--max-clips", type=int, default=0, help="the first N clips (0 = all)")
    offset.add_argument("--json", type=Path, default=None, help="write the report here")
    from lsf_core.cli.data_import import add_import_arguments

    add_import_arguments(sub)


def run(args: argparse.Namespace) -> int:
    if args.action == "track":
        return _track(args)
    if args.action == "av-offset":
        import json

        from lsf_core.evaluation.av_offset import av_offset

        report = av_offset(args.tracks, args.text, args.max_clips)
        print(json.dumps({k: v for k, v in report.items() if k != "skipped"}, indent=2))
        for s in report["skipped"]:
            print(f"skipped {s['clip']}: {s['reason']}")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return 0 if report["bilabials"] else 1
    if args.action == "import-rig":
        from lsf_core.cli.data_import import run_import

        return run_import(args)
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


VIDEO_SUFFIXES = (".mpg", ".mpeg", ".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


def _track(args: argparse.Namespace) -> int:
    from lsf_core.data.track import TrackConfig, track_videos

    videos: list[Path] = []
    for v in args.videos:
        videos += sorted(p for p in v.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES) if v.is_dir() else [v]
    if args.limit:
        videos = videos[:args.limit]
    if not videos:
        raise ValueError(f"no videos in {', '.join(map(str, args.videos))}")
    cfg = load_config(TrackConfig, args.config) if args.config else TrackConfig()
    report = track_videos(videos, args.out, cfg, args.speaker, args.provenance, args.licence)
    for s in report["skipped"]:
        print(f"skipped {s['file']}: {s['reason']}")
    masked = sum(w["masked_frames"] for w in report["written"])
    frames = sum(w["frames"] for w in report["written"])
    print(f"{args.out}: {len(report['written'])} clips tracked ({frames} frames, {masked} masked), "
          f"{len(report['skipped'])} skipped; report in {args.out / 'track_report.json'}")
    return 0 if report["written"] else 1
