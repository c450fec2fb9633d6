"""``lsf evaluate``: judge a model on held-out real human speech (jaw, lip closure, silence), or, with ``--real``,
against real captured facial motion beside a phone-recogniser baseline."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lsf_core.runtime.streaming import StreamConfig, StreamingAnimator


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="realtime", help="preset with shipped weights or a .safetensors model")
    p.add_argument("--max-prompts", type=int, default=0, help="evaluate on this many held-out prompts (0 = all)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--real", type=Path, default=None, help="instead: a folder of held-out real-motion clips (NPZ from "
                   "`lsf data track` / `import-rig`); per-channel r, best lag, motion range vs the real curves, ours "
                   "and the pocketsphinx-allphone + viseme-rules baseline side by side")
    p.add_argument("--max-clips", type=int, default=0, help="with --real: the first N clips (0 = all)")
    p.add_argument("--no-baseline", action="store_true", help="with --real: leave out the phone-recogniser baseline")
    p.add_argument("--figure", type=Path, default=None, help="with --real: PNG of real vs ours vs baseline curves; "
                   "one per clip for --figure-clips clips (<stem>_<clip>.png)")
    p.add_argument("--figure-clips", type=int, default=3, help="with --figure: how many clips to plot")
    p.add_argument("--pitch-shift", type=float, default=0.0, help="with --real: shift every clip's voice by this many "
                   "semitones (timing kept) before animating, to see how the model holds up for higher or lower voices "
                   "than the ones it learned from (e.g. 4 and -4)")
    p.add_argument("--readout", type=Path, default=None, help="with --real: also fit a plain linear read-out of the "
                   "audio (ridge on log-mel windows) on this folder of the same speaker's training clips and score it "
                   "on the held-out ones: what the audio carries of each channel, beside ours (no clip may be in both)")
    p.add_argument("--video", type=Path, default=None, help="with --real: a side-by-side MP4 of one clip, with its "
                   "audio: the real capture driving the default avatar | ours | the phone baseline")
    p.add_argument("--video-clip", default="", help="with --video: the clip's name (file stem; default: the first)")


def run(args: argparse.Namespace) -> int:
    animator = StreamingAnimator(StreamConfig(model=args.model, rate=25.0))
    if args.real is not None:
        return _run_real(args, animator)
    from lsf_core.evaluation.heldout import evaluate, heldout_clips

    result = evaluate(animator, heldout_clips(args.max_prompts))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if result["passed"] else 1


def _run_real(args: argparse.Namespace, animator) -> int:
    from lsf_core.evaluation.real_motion import evaluate_real, load_real_clips, plot_real, side_by_side_video

    clips = load_real_clips(args.real, args.max_clips)
    names = [c.name for c in clips]
    if args.pitch_shift:
        from lsf_core.data.augment import pitch_shift

        for clip in clips:
            clip.audio = pitch_shift(clip.audio, args.pitch_shift)
    if args.video_clip and args.video_clip not in names:
        print(f"lsf evaluate: --video-clip {args.video_clip!r} is not among the clips in {args.real} "
              f"({', '.join(names[:10])}{' ...' if len(names) > 10 else ''})", file=sys.stderr)
        return 2
    train = None
    if args.readout is not None:
        train = load_real_clips(args.readout)
        shared = sorted(set(names) & {c.name for c in train})
        if shared:
            print(f"lsf evaluate: --readout {args.readout} shares {len(shared)} clips with {args.real} "
                  f"({', '.join(shared[:5])}); the read-out must be fitted on other clips", file=sys.stderr)
            return 2
    baseline = None
    if not args.no_baseline:
        from lsf_core.evaluation.phone_baseline import PhoneBaseline

        baseline = PhoneBaseline()
    result = evaluate_real(animator, clips, baseline)
    curves = result.pop("_curves")
    if train is not None:
        from lsf_core.evaluation.readout import fit_readout
        from lsf_core.evaluation.real_motion import channel_scores, summarize

        readout = fit_readout(train)
        scores = channel_scores([readout.predict(c) for c in clips], clips)
        result["sources"]["readout"] = {"summary": summarize(scores), "channels": scores,
                                        "train": str(args.readout), "train_clips": len(train),
                                        "lambdas": readout.lambdas}
    result.update({"model": args.model, "real": str(args.real), "pitch_shift_semitones": args.pitch_shift,
                   "command": "lsf evaluate --real " + str(args.real) + f" --model {args.model}"
                              + (f" --pitch-shift {args.pitch_shift:g}" if args.pitch_shift else "")
                              + (f" --readout {args.readout}" if args.readout else "")})
    if args.figure:
        figs = []
        step = max(1, len(clips) // max(1, args.figure_clips))
        for i in range(0, len(clips), step)[:args.figure_clips]:
            path = args.figure.with_name(f"{args.figure.stem}_{clips[i].name}{args.figure.suffix or '.png'}")
            plot_real(path, clips[i], curves["ours"][i], curves["baseline"][i] if curves["baseline"] else None)
            figs.append(str(path))
        result["figures"] = figs
    if args.video:
        i = names.index(args.video_clip) if args.video_clip else 0
        result["video"] = str(side_by_side_video(args.video, clips[i], curves["ours"][i],
                                                 curves["baseline"][i] if curves["baseline"] else None))
    print(json.dumps({k: v for k, v in result.items() if k != "sources"} |
                     {s: v["summary"] for s, v in result["sources"].items()}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0
