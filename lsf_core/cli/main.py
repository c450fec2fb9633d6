"""The ``lsf`` command: one entry point, one sub-command per module of this package.

Each module listed in ``COMMANDS`` defines ``add_arguments(parser)`` and ``run(args) -> int``; ``HELP``
holds the one-line help. Modules are imported only when their command runs, so ``lsf --help`` stays fast.
Bad input (a ``ValueError`` or ``OSError``: unreadable files, invalid values) ends the command with one
line on stderr and exit code 1; ``LSF_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pickle
import sys

# sub-command -> module implementing it
COMMANDS: dict[str, str] = {
    "infer": "lsf_core.cli.infer",
    "bench": "lsf_core.cli.bench",
    "train": "lsf_core.cli.train",
    "train-paper": "lsf_core.cli.train_paper",
    "convert": "lsf_core.cli.convert",
    "render": "lsf_core.cli.render",
    "avatar": "lsf_core.cli.avatar",
    "rig": "lsf_core.cli.rig",
    "data": "lsf_core.cli.data",
    "evaluate": "lsf_core.cli.evaluate",
    "window-study": "lsf_core.cli.window_study",
    "liveliness-eval": "lsf_core.cli.liveliness_eval",
}

HELP: dict[str, str] = {
    "infer": "animate an audio file offline -> NPZ (blendshapes, vertex offsets, FLAME params)",
    "bench": "measure latency, real-time factor, memory and concurrent streams -> JSON",
    "train": "train the realtime preset on a corpus made by `lsf data make`",
    "train-paper": "train the paper preset (VQ-VAE prior, then predictor) on 3DMEAD-layout data",
    "convert": "convert released LSF-Animation checkpoints to one .safetensors file + config",
    "render": "render an NPZ of animation (with optional audio) to MP4 or PNG frames",
    "avatar": "build the default avatar (and its identities) and write meshes / preview renders",
    "rig": "make any face mesh animatable: rig a plain mesh (or check a rigged one) -> rig NPZ + before/after PNG",
    "data": "make the training corpus (synthetic and real speech, aligned, with ARKit targets); import real motion "
            "(track video, import-rig arrays / Live Link Face CSV, av-offset)",
    "evaluate": "judge a model on held-out real human speech (jaw correlation, lip closure, silence), or with --real "
                "against real captured motion beside a phone-recogniser baseline",
    "window-study": "sliding-window vs whole-clip output of a clip-based model (paper) -> JSON + figure",
    "liveliness-eval": "blinks, upper face and head motion vs real tracked talkers (GRID) -> JSON + video",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lsf", description="LSF-Animation: speech-driven 3D facial animation (no ROS needed).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in HELP.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name])
    sub = argparse.ArgumentParser(prog=f"lsf {name}", description=HELP[name],
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except (ValueError, OSError, pickle.UnpicklingError) as err:  # bad input: one clear line, no traceback
        if os.environ.get("LSF_DEBUG"):
            raise
        print(f"lsf {name}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
