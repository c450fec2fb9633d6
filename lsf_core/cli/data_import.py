"""``lsf data import-rig``: rig-channel arrays (with a mapping file) or Live Link Face CSV takes, with their audio,
-> one real-motion clip NPZ each (the fields of ``lsf data track``). A batch keeps going past bad files and lists
what it skipped and why."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lsf_core.audio import AudioError


def add_import_arguments(sub) -> None:
    p = sub.add_parser("import-rig", help="rig-channel arrays (.npy + --mapping YAML) or Live Link Face CSV takes, "
                       "with their audio -> one NPZ each (fields as `track`)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("motion", nargs="+", type=Path, help=".npy rig arrays (frames x channels) or Live Link Face .csv")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory (NPZ per take + import_report.json)")
    audio = p.add_mutually_exclusive_group(required=True)
    audio.add_argument("--audio", nargs="+", type=Path, help="one audio (or video) file per motion file, same order")
    audio.add_argument("--audio-dir", type=Path, help="find each take's audio here: the file whose name ends the "
                       "motion file's name (bs_value_1114_2_01.npy -> 1114_2_01.wav)")
    p.add_argument("--mapping", type=Path, help="rig -> ARKit mapping YAML for .npy arrays "
                   "(e.g. config/rig_maps/facegood_arkit.yaml)")
    p.add_argument("--fps", type=float, default=None, help="motion frame rate (default: the mapping's rig_fps; "
                   "required for CSV takes)")
    p.add_argument("--offset", type=float, default=0.0, help="seconds the motion starts after the audio")
    p.add_argument("--speaker", default="", help="speaker id stored in each NPZ")
    p.add_argument("--provenance", default="", help="where the takes come from (repository @ commit, path)")
    p.add_argument("--licence", default="", help="the takes' licence")


def run_import(args: argparse.Namespace) -> int:
    from lsf_core.data.rig_import import (
        RigImportError,
        import_live_link,
        import_rig_array,
        load_mapping,
        pair_audio,
        save_import,
    )

    if args.audio and len(args.audio) != len(args.motion):
        raise ValueError(f"{len(args.motion)} motion files but {len(args.audio)} audio files")
    mapping = load_mapping(args.mapping) if args.mapping else None
    written, skipped = [], []
    for i, motion in enumerate(args.motion):
        try:
            audio = args.audio[i] if args.audio else pair_audio(motion, args.audio_dir)
            if motion.suffix.lower() == ".csv":
                if not args.fps:
                    raise RigImportError(f"{motion}: give the take's frame rate (--fps) for a Live Link Face CSV")
                fields = import_live_link(motion, audio, args.fps, offset=args.offset)
            elif motion.suffix.lower() == ".npy":
                if mapping is None:
                    raise RigImportError(f"{motion}: a rig array needs --mapping (rig channels -> ARKit)")
                fields = import_rig_array(motion, audio, mapping, args.fps, offset=args.offset)
            else:
                raise RigImportError(f"{motion}: unknown motion file type (.npy rig array or .csv Live Link Face)")
            out = save_import(args.out / f"{motion.stem}.npz", fields, f"{motion} + {audio}", args.speaker,
                              args.provenance, args.licence)
            written.append({"motion": str(motion), "audio": str(audio), "npz": str(out),
                            "frames": int(len(fields["weights"]))})
        except (RigImportError, AudioError, OSError) as err:
            skipped.append({"file": str(motion), "reason": str(err)})
            print(f"skipped {motion}: {err}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "import_report.json").write_text(json.dumps({"written": written, "skipped": skipped}, indent=1) + "\n")
    print(f"{args.out}: {len(written)} takes imported, {len(skipped)} skipped")
    return 0 if written else 1
